//! `AuthChainLayer` in process, no sockets: the axum app of the `load`
//! harness's http group (`authchain_benches::app`, one catch-all GET route
//! answering "hello") called with `tower::ServiceExt::oneshot`, without and
//! with the layer running the harness's 3-step chain (Gloo's RequiredHeader
//! plugin, a header mutation, a state write). Reports the heap allocations
//! per request (a counting global allocator) and the time per request
//! (criterion); the difference between the two apps is what the layer adds.
//!
//! ```text
//! cargo bench -p authchain-benches --bench layer
//! ```
//!
//! With `AUTHCHAIN_LAYER_LOOP=N` (and optionally `AUTHCHAIN_LAYER_APP=plain`
//! or `layered`, default `layered`) the binary only sends N requests and
//! exits: a fixed workload to profile, e.g. with
//! `valgrind --tool=callgrind target/release/deps/layer-*`.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use authchain_benches::{profile_loop, runtime, time_runs};
use authchain_core::Chain;
use authchain_http::AuthChainLayer;
use axum::Router;
use axum::body::Body;
use criterion::{Criterion, criterion_group};
use http::{Request, StatusCode};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;

/// Counts every allocation of the process.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

async fn chain() -> Arc<Chain> {
    let engine = authchain_benches::engine().await.unwrap();
    engine.current().chain("bench").unwrap().clone()
}

/// A request as wrk sends it in the harness.
fn request() -> Request<Body> {
    Request::get("/api/x")
        .header("host", "127.0.0.1:8080")
        .header("my-header", "foo")
        .body(Body::empty())
        .unwrap()
}

async fn call(app: &Router) {
    let response = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    black_box(response);
}

fn apps(rt: &tokio::runtime::Runtime) -> [(&'static str, Router); 2] {
    let chain = rt.block_on(chain());
    [
        ("axum app", authchain_benches::app()),
        (
            "axum app + AuthChainLayer (3 steps)",
            authchain_benches::app().layer(AuthChainLayer::new(chain)),
        ),
    ]
}

/// Allocations per request, counting the request's construction too.
fn allocations_per_request(rt: &tokio::runtime::Runtime, app: &Router, runs: u64) -> f64 {
    rt.block_on(async {
        call(app).await;
        let region = Region::new(GLOBAL);
        for _ in 0..runs {
            call(app).await;
        }
        let change = region.change();
        (change.allocations + change.reallocations) as f64 / runs as f64
    })
}

fn report_allocations() {
    let rt = runtime();
    let [plain, layered] = apps(&rt);
    let without = allocations_per_request(&rt, &plain.1, 10_000);
    let with = allocations_per_request(&rt, &layered.1, 10_000);
    println!("allocations per request, {}: {without:.2}", plain.0);
    println!("allocations per request, {}: {with:.2}", layered.0);
    println!("  the layer adds: {:.2}", with - without);
}

fn bench_layer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("layer");
    for (name, app) in apps(&rt) {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| time_runs(&rt, iters, || call(&app)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench_layer
}

fn main() {
    if let Some(n) = profile_loop("AUTHCHAIN_LAYER_LOOP") {
        let rt = runtime();
        let [plain, layered] = apps(&rt);
        let app = match std::env::var("AUTHCHAIN_LAYER_APP").as_deref() {
            Ok("plain") => plain.1,
            _ => layered.1,
        };
        time_runs(&rt, n, || call(&app));
        return;
    }
    report_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
