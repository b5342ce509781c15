//! The admin listener: Prometheus metrics, liveness and readiness.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use authchain_core::Engine;
use authchain_core::transport::{ConcurrencyLimit, Connection};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Latency buckets, in seconds: from a cache hit to a slow remote step.
const BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder as the process's `metrics` recorder.
/// `None` when the program installed one of its own first: `/metrics`
/// then says so, and the program's recorder gets the metrics.
pub(crate) fn install_recorder() -> Option<PrometheusHandle> {
    let recorder = match PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
    {
        Ok(builder) => builder.build_recorder(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set histogram buckets; using summaries");
            PrometheusBuilder::new().build_recorder()
        }
    };
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        }
        Err(_) => {
            tracing::warn!("a metrics recorder is already installed; /metrics will not serve");
            None
        }
    }
}

#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) ready: tokio::sync::watch::Receiver<bool>,
    pub(crate) engine: Arc<Engine>,
}

impl Admin {
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self);
        let places = ConcurrencyLimit::new(ADMIN_CONNECTIONS);
        // hyper with a timer, which `axum::serve` does not set: a request
        // whose headers are not whole in time closes its connection.
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(ADMIN_READ_TIMEOUT);
        let graceful = GracefulShutdown::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            // At the most connections, none is accepted until one closes.
            let place = tokio::select! {
                place = places.acquire() => place,
                () = &mut stop => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept an admin connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let io = Connection::new(stream, ADMIN_IDLE, place);
            let service = TowerToHyperService::new(app.clone());
            let connection = builder.serve_connection(TokioIo::new(io), service);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
        graceful.shutdown().await;
    }
}

/// The most connections the admin listener keeps open: probes and
/// scrapes are few; the rest wait in the kernel's backlog.
pub(crate) const ADMIN_CONNECTIONS: usize = 64;

/// How long an admin connection may sit idle: a probe or a scrape is one
/// quick request, and the next one connects again.
const ADMIN_IDLE: Duration = Duration::from_secs(10);

/// How long a request's headers may take to arrive (and a kept-alive
/// connection may wait for its next request).
const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(5);

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    match &admin.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            "the program installed its own metrics recorder\n".to_owned(),
        ),
    }
}

/// Ready once the first generation has started, until shutdown begins.
async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let current = admin.engine.current();
    let generation = current.number();
    if *admin.ready.borrow() {
        // Steps that cannot start yet fail their own requests only: the
        // server answers, and says what waits.
        let mut text = format!("ready: generation {generation}\n");
        for (config, step, why) in current.waiting() {
            text.push_str(&format!(
                "waiting: AuthConfig '{config}' step '{step}': {why}\n"
            ));
        }
        (StatusCode::OK, text)
    } else if generation == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first generation has not started\n".to_owned(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_owned(),
        )
    }
}
