//! What the benchmarks share: the 3-step chain they measure and the axum
//! app of the layer comparisons; for the `load` harness, servers run as
//! child processes, the CPU time of processes, and the rounds of a load
//! run kept in a file and pooled.

pub mod child;
pub mod cpu;
pub mod rounds;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authchain_core::{
    Allow, AuthConfig, Decision, Engine, Error, Format, PluginRegistry, decide_fn, plugin_fn,
};
use authchain_examples::required_header::RequiredHeaderPlugin;
use http::{HeaderName, HeaderValue};
use serde_json::json;

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
