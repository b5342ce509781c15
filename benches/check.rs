//! authchain-http's check server in process, no sockets: what one nginx
//! `auth_request` check costs inside `CheckServer::check` (reading the
//! forwarded request, running the harness's 3-step chain, writing the
//! answer), against a handler that allows everything (the floor of the
//! hop, as the load harness's bare hyper server).
//!
//! ```text
//! cargo bench -p authchain-benches --bench check
//! ```
//!
//! With `AUTHCHAIN_CHECK_LOOP=N` the binary only runs N checks and exits: a
//! fixed workload to profile, e.g. with
//! `valgrind --tool=callgrind target/release/deps/check-*`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use authchain_benches::{profile_loop, runtime, time_runs};

use authchain_http::{CheckConfig, CheckServer, ForwardedHeaders};
use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::Request;
use http_body_util::Empty;

/// A check as nginx's `auth_request` sends it in the load harness.
fn request() -> Request<Empty<Bytes>> {
    Request::get("/check:bench")
        .header("host", "auth")
        .header("x-original-uri", "/api/x")
        .header("x-original-method", "GET")
        .header("user-agent", "wrk")
        .header("my-header", "foo")
        .body(Empty::new())
        .unwrap()
}

fn server(rt: &tokio::runtime::Runtime) -> CheckServer {
    let engine = rt.block_on(authchain_benches::engine()).unwrap();
    CheckServer::new(
        engine,
        CheckConfig::default().trust(
            ["127.0.0.0/8".parse().unwrap()],
            ForwardedHeaders::XOriginal,
        ),
    )
}

const PEER: Option<SocketAddr> = Some(SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    40000,
));

async fn check(server: &CheckServer) {
    let response = server.check(request(), PEER).await;
    assert_eq!(response.status(), 200);
    black_box(response);
}

/// The floor: the request is built and dropped, the answer is an empty 200.
async fn allow_all() {
    let request = black_box(request());
    drop(request);
    black_box(http::Response::new(Bytes::new()));
}

fn bench_check(c: &mut Criterion) {
    let rt = runtime();
    let server = server(&rt);
    let mut group = c.benchmark_group("check");
    group.bench_function("allow-all handler", |b| {
        b.iter_custom(|iters| time_runs(&rt, iters, allow_all))
    });
    group.bench_function("CheckServer::check, 3-step chain", |b| {
        b.iter_custom(|iters| time_runs(&rt, iters, || check(&server)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench_check
}

fn main() {
    if let Some(n) = profile_loop("AUTHCHAIN_CHECK_LOOP") {
        let rt = runtime();
        let server = server(&rt);
        time_runs(&rt, n, || check(&server));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
