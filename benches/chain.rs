//! The chain executor, in process, no sockets.
//!
//! A chain of three trivial allow steps, one of which sets a header and one
//! of which writes state: the time per chain run (criterion), and the heap
//! allocations per run (a counting global allocator), split into what the
//! steps allocate themselves and what the executor adds.
//!
//! ```text
//! cargo bench -p authchain-benches --bench chain
//! ```

#![allow(clippy::unwrap_used, missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authchain_benches::runtime;
use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, Chain, ChainStep, Decision,
};
use criterion::{Criterion, criterion_group};
use http::{HeaderName, HeaderValue, Method};
use serde_json::Value;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts every allocation of the process.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations plus reallocations since `region` began.
fn allocations(region: &Region<'_, System>) -> u64 {
    let change = region.change();
    (change.allocations + change.reallocations) as u64
}

struct SetsHeader;

impl AuthService for SetsHeader {
    fn authorize<'a>(&'a self, _: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            Ok(Allow::new()
                .set_header(
                    HeaderName::from_static("x-chain"),
                    HeaderValue::from_static("checked"),
                )
                .into())
        })
    }
}

struct WritesState;

impl AuthService for WritesState {
    fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            req.state.insert("checked", Value::Bool(true));
            Ok(Decision::authorized())
        })
    }
}

struct Allows;

impl AuthService for Allows {
    fn authorize<'a>(&'a self, _: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move { Ok(Decision::authorized()) })
    }
}

fn three_steps() -> (Chain, Vec<Arc<dyn AuthService>>) {
    let services: Vec<Arc<dyn AuthService>> = vec![
        Arc::new(SetsHeader),
        Arc::new(WritesState),
        Arc::new(Allows),
    ];
    let mut builder = Chain::builder("bench");
    for (i, s) in services.iter().enumerate() {
        builder = builder.step(ChainStep::new(format!("step{i}"), s.clone()));
    }
    (builder.build().unwrap(), services)
}

fn bare_steps() -> Chain {
    let mut builder = Chain::builder("bare");
    for i in 0..3 {
        builder = builder.step(ChainStep::new(format!("step{i}"), Arc::new(Allows)));
    }
    builder.build().unwrap()
}

fn request() -> AuthorizationRequest {
    let mut req = AuthorizationRequest::new(Method::GET, "/api/orders?limit=10").with_host("shop");
    for (k, v) in [
        ("user-agent", "bench"),
        ("accept", "*/*"),
        ("authorization", "Bearer abc"),
        ("x-request-id", "0123456789"),
    ] {
        req.headers
            .insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    req
}

/// Allocations per run of `run` over fresh requests, counting only the run.
fn allocations_per_run<F>(rt: &tokio::runtime::Runtime, runs: u64, mut run: F) -> f64
where
    F: AsyncFnMut(&mut AuthorizationRequest),
{
    rt.block_on(async {
        let mut requests: Vec<_> = (0..runs).map(|_| request()).collect();
        // Warm up lazily initialised runtime and timer state.
        run(&mut request()).await;
        let mut counted = 0;
        for req in &mut requests {
            let region = Region::new(GLOBAL);
            run(req).await;
            counted += allocations(&region);
        }
        counted as f64 / runs as f64
    })
}

fn report_allocations() {
    let rt = runtime();
    let (chain, services) = three_steps();
    let chain_total = allocations_per_run(&rt, 10_000, async |req| {
        black_box(chain.authorize(req).await);
    });
    let steps_alone = allocations_per_run(&rt, 10_000, async |req| {
        for s in &services {
            black_box(s.authorize(req).await.unwrap());
        }
    });
    let bare = bare_steps();
    let bare_total = allocations_per_run(&rt, 10_000, async |req| {
        black_box(bare.authorize(req).await);
    });
    println!(
        "allocations per chain run (3 steps, 1 header mutation, 1 state write): {chain_total:.2}"
    );
    println!(
        "  of which the steps themselves, run alone (incl. their 3 boxed futures): {steps_alone:.2}"
    );
    println!("  executor overhead: {:.2}", chain_total - steps_alone);
    println!(
        "allocations per chain run (3 bare allow steps): {bare_total:.2} (3 = one boxed future per step)"
    );
}

fn bench_chain(c: &mut Criterion) {
    let rt = runtime();
    let (chain, _) = three_steps();
    let bare = bare_steps();
    let mut group = c.benchmark_group("chain");
    for (name, chain) in [
        ("3 steps, header + state", &chain),
        ("3 bare allow steps", &bare),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let batch = left.min(1024);
                        let mut requests: Vec<_> = (0..batch).map(|_| request()).collect();
                        let start = Instant::now();
                        for req in &mut requests {
                            black_box(chain.authorize(req).await);
                        }
                        total += start.elapsed();
                        left -= batch;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_chain);

fn main() {
    report_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
