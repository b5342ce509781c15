//! Steps and helpers shared by the engine tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authchain_core::{
    Allow, AuthService, AuthorizationRequest, Chain, ChainBuilder, ChainStep, Decision, Error,
    service_fn,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

pub(crate) fn name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

pub(crate) fn value(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

pub(crate) fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A step that answers `decision` and counts its runs.
#[derive(Clone)]
pub(crate) struct Fixed {
    pub(crate) runs: Arc<AtomicUsize>,
    decision: Decision,
}

impl Fixed {
    pub(crate) fn new(decision: impl Into<Decision>) -> Self {
        Fixed {
            runs: Arc::new(AtomicUsize::new(0)),
            decision: decision.into(),
        }
    }

    pub(crate) fn allow() -> Self {
        Self::new(Allow::new())
    }

    pub(crate) fn deny() -> Self {
        Self::new(Decision::unauthorized())
    }

    pub(crate) fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    pub(crate) fn service(&self) -> Arc<dyn AuthService> {
        let this = self.clone();
        Arc::new(service_fn(move |_| {
            this.runs.fetch_add(1, Ordering::SeqCst);
            let decision = this.decision.clone();
            Box::pin(async move { Ok(decision) })
        }))
    }

    pub(crate) fn step(&self, name: &str) -> ChainStep {
        ChainStep::new(name, self.service())
    }
}

/// A step that fails.
pub(crate) fn failing() -> Arc<dyn AuthService> {
    Arc::new(service_fn(|_| {
        Box::pin(async { Err(Error::step("backend unavailable")) })
    }))
}

/// A step that sleeps, then allows.
pub(crate) fn sleeping(d: Duration) -> Arc<dyn AuthService> {
    Arc::new(service_fn(move |_| {
        Box::pin(async move {
            tokio::time::sleep(d).await;
            Ok(Decision::authorized())
        })
    }))
}

/// A step that allows with `allow`.
pub(crate) fn allowing(allow: Allow) -> Arc<dyn AuthService> {
    Arc::new(service_fn(move |_| {
        let allow = allow.clone();
        Box::pin(async move { Ok(Decision::Allow(allow)) })
    }))
}

/// Builds a chain with a debugging metrics recorder; returns the chain and
/// what reads the recorder.
pub(crate) fn build_with_metrics(builder: ChainBuilder) -> (Chain, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let chain = metrics::with_local_recorder(&recorder, || builder.build()).unwrap();
    (chain, snapshotter)
}

/// One snapshot of a debugging recorder's counters (a snapshot resets
/// them, so take one per check).
pub(crate) struct Counters(Vec<(metrics::Key, u64)>);

impl Counters {
    pub(crate) fn take(snapshotter: &Snapshotter) -> Self {
        Counters(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter_map(|(key, _, _, value)| match value {
                    DebugValue::Counter(n) => Some((key.key().clone(), n)),
                    _ => None,
                })
                .collect(),
        )
    }

    /// The sum of counter `metric` over the series whose labels include
    /// every `labels` pair.
    pub(crate) fn get(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|(key, _)| key.name() == metric)
            .filter(|(key, _)| {
                labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// The values histogram `metric` recorded since the last snapshot.
pub(crate) fn histogram(snapshotter: &Snapshotter, metric: &str) -> Vec<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == metric)
        .flat_map(|(.., value)| match value {
            DebugValue::Histogram(values) => values.into_iter().map(|v| v.0).collect(),
            _ => Vec::new(),
        })
        .collect()
}

pub(crate) fn get(path: &str) -> AuthorizationRequest {
    AuthorizationRequest::new(http::Method::GET, path)
}

/// Registers `PublicOnly`: allows paths under `/public/`, 401 else.
pub(crate) fn register_public_only(registry: &mut authchain_core::PluginRegistry) {
    registry.register(authchain_core::plugin_fn(
        "PublicOnly",
        |_: serde_json::Value, _| {
            Ok(Arc::new(authchain_core::decide_fn(|req| {
                Ok(if req.path.starts_with("/public/") {
                    Allow::new().into()
                } else {
                    Decision::unauthenticated()
                })
            })))
        },
    ));
}
