//! What the benchmarks share: the 3-step chain they measure, the axum app
//! of the layer comparisons, and the allow-all gRPC server that is the
//! limit of an Envoy ext_authz hop; servers run as child processes, the
//! CPU time of processes, and the rounds of a load run kept in a file and
//! pooled.

pub mod child;
pub mod cpu;
pub mod rounds;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authchain_core::{
    Allow, AuthConfig, Decision, Engine, Error, Format, PluginRegistry, decide_fn, plugin_fn,
};
use authchain_examples::required_header::RequiredHeaderPlugin;
use authchain_grpc::envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use authchain_grpc::envoy_types::pb::google::rpc;
use authchain_testkit::client;

use authchain_testkit::envoy::{Bootstrap, Envoy};
use authchain_testkit::load::{Load, LoadResult};
use http::{HeaderName, HeaderValue};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::cpu::{CpuSnapshot, CpuSpent};

/// The AuthConfig every in-process harness measures, named `bench`: Gloo's
/// RequiredHeader plugin (`my-header: foo`), a header mutation, a state
/// write.
pub const CHAIN: &str = r#"
name: bench
configs:
- name: required
  pluginAuth:
    name: RequiredHeader
    config: { RequiredHeader: my-header, AllowedValues: [foo, bar] }
- name: mutate
  pluginAuth: { name: SetHeader }
- name: state
  pluginAuth: { name: WriteState }
"#;

/// The header the SetHeader step sets, made at compile time (a plugin
/// that parsed it on every request would be measured, not the chain).
const X_CHAIN: (HeaderName, HeaderValue) = (
    HeaderName::from_static("x-chain"),
    HeaderValue::from_static("checked"),
);

/// The plugins [`CHAIN`] names.
pub fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(RequiredHeaderPlugin);
    registry.register(plugin_fn("SetHeader", |_: serde_json::Value, _| {
        Ok(Arc::new(decide_fn(|_| {
            let (name, value) = X_CHAIN;
            Ok(Allow::new().set_header(name, value).into())
        })))
    }));
    registry.register(plugin_fn("WriteState", |_: serde_json::Value, _| {
        Ok(Arc::new(decide_fn(|req| {
            req.state.insert("checked", json!(true));
            Ok(Decision::authorized())
        })))
    }));
    registry
}

/// An engine with [`CHAIN`] loaded.
pub async fn engine() -> Result<Arc<Engine>, Error> {
    let engine = Engine::new(registry());
    engine
        .load(&AuthConfig::parse("bench.yaml", CHAIN, Format::Yaml)?)
        .await?;
    Ok(Arc::new(engine))
}

/// The app the layer comparisons serve: one catch-all GET route.
pub fn app() -> axum::Router {
    axum::Router::new().route("/{*rest}", axum::routing::get(|| async { "hello" }))
}

/// A bare `Check` server that allows everything, written only for the
/// benchmarks: the limit of an ext_authz hop.
#[derive(Debug, Clone, Copy)]
pub struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            dynamic_metadata: None,
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
        }))
    }
}

/// Serves [`AllowAll`] on a loopback port, until the process ends.
pub async fn serve_allow_all() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(allow_all_on(listener));
    Ok(addr)
}

/// Serves [`AllowAll`] on `listener` until the listener fails, with
/// `TCP_NODELAY` on every connection as authchain-grpc's servers set it
/// (a limit server that let Nagle batch its replies would save system
/// calls and packets that a latency-minded ext_authz server must spend).
pub async fn allow_all_on(listener: TcpListener) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt as _;
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(stream) = &stream {
            let _ = stream.set_nodelay(true);
        }
        stream
    });
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve_with_incoming(incoming)
        .await
}

/// The runtime of the in-process benches: current-thread, with timers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

/// Runs `f` `iters` times in turn on `rt` and returns how long that took:
/// the body of criterion's `iter_custom` for an async routine.
pub fn time_runs<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            f().await;
        }
        start.elapsed()
    })
}

/// The N of a fixed profiling workload, from the environment variable
/// `var` (`AUTHCHAIN_LAYER_LOOP=N`, ...): a bench binary given one runs
/// its routine N times and exits, so that instruction counts (callgrind)
/// can be compared between builds whatever the machine's noise.
pub fn profile_loop(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|n| n.parse().ok())
}

/// An Envoy (one worker) in front of `upstream`, with `authz` as its
/// ext_authz gRPC server, once a request with `headers` got a 200 through
/// it: the start of every Envoy scenario of the load harnesses.
pub async fn checked_envoy(
    name: &str,
    upstream: SocketAddr,
    authz: Option<SocketAddr>,
    headers: &[(&str, &str)],
) -> Result<Envoy, Box<dyn std::error::Error>> {
    let mut bootstrap = Bootstrap::new(upstream);
    if let Some(authz) = authz {
        bootstrap = bootstrap.grpc(authz);
    }
    let envoy = Envoy::start(&bootstrap.yaml()).await?;
    let reply = client::get(envoy.listener("ingress")?, "/", headers).await?;
    if reply.status != 200 {
        return Err(format!(
            "{name}: sanity request got {}: {}",
            reply.status,
            reply.text()
        )
        .into());
    }
    Ok(envoy)
}

/// One wrk run of `load` against `http://addr{path}`, on a blocking thread
/// (wrk is a child process to wait for).
pub async fn run_load(
    load: &Load,
    addr: SocketAddr,
    path: &'static str,
) -> Result<LoadResult, Box<dyn std::error::Error>> {
    let load = load.clone();
    Ok(tokio::task::spawn_blocking(move || load.run(addr, path)).await??)
}

/// A 2 s run of `load` that is not kept: connections, a proxy's
/// keep-alive pools, allocators and caches warm up before the runs that
/// count.
pub async fn warm_up(
    load: &Load,
    addr: SocketAddr,
    path: &'static str,
) -> Result<(), Box<dyn std::error::Error>> {
    let warm = Load {
        duration: Duration::from_secs(2),
        ..load.clone()
    };
    run_load(&warm, addr, path).await.map(drop)
}

/// A kept run, with the CPU it cost this process (and its wrk) and each
/// of `pids`, in µs per request.
pub async fn measured_run(
    load: &Load,
    addr: SocketAddr,
    path: &'static str,
    pids: &[u32],
) -> Result<(LoadResult, CpuSpent), Box<dyn std::error::Error>> {
    let before = CpuSnapshot::take(pids)?;
    let result = run_load(load, addr, path).await?;
    let spent = before.since(&CpuSnapshot::take(pids)?);
    Ok((result, spent.per_request(result.requests)))
}

/// Whether a ratio's `median`, and the `low` end of its interval, meet
/// `target`.
pub fn verdict(median: f64, low: f64, target: f64) -> &'static str {
    match (median >= target, low >= target) {
        (true, true) => "met, whole interval",
        (true, false) => "met by the median, not by the whole interval",
        _ => "MISSED",
    }
}

/// The run with the median rps (the upper one of an even count).
pub fn median_run(runs: &[LoadResult]) -> LoadResult {
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    runs[runs.len() / 2]
}

/// The median of `values` (not empty): the middle one, or the mean of the
/// middle two.
pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// A distribution-free 95% confidence interval of the median of `values`
/// (not empty): the order statistics whose ranks bound the binomial
/// (n, 1/2) count of values below the median, by the normal
/// approximation (`n/2 ∓ 1.96·√n/2`). It assumes nothing about the
/// shape of the noise, only that the rounds are independent; with few
/// values it is the whole range.
pub fn median_interval(values: &[f64]) -> (f64, f64) {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let half_width = 1.96 * n.sqrt() / 2.0;
    // 1-based ranks, clamped to the values there are.
    let low = ((n / 2.0 - half_width).ceil() as usize).clamp(1, values.len());
    let high = ((n / 2.0 + 1.0 + half_width).floor() as usize).clamp(1, values.len());
    (values[low - 1], values[high - 1])
}
