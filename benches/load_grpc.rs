//! Envoy ext_authz (gRPC) load comparison, side by side in one run:
//!
//! - (a) Envoy with no auth filter;
//! - (b) Envoy + a bare allow-all tonic `Check` server written only for
//!   this benchmark: the cost of the extra hop itself;
//! - (c) Envoy + authchain-grpc with a 3-step chain (RequiredHeader, a
//!   header mutation, a state write).
//!
//! Each runs alone on the machine, driven by `wrk` (HTTP/1.1 into Envoy),
//! after a warm-up. Reports rps, p50, p99, and the ratios c/b (target
//! ≥ 0.95) and p99(c)/p99(b) (target ≤ 1.1).
//!
//! ```text
//! ./scripts/install-peers.sh            # Envoy, wrk
//! cargo run --release -p authchain-benches --bin load-grpc -- [seconds=10] [connections=32]
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use authchain_benches::{AllowAll, checked_envoy, run_load, serve_allow_all, warm_up};
use authchain_grpc::ExtAuthzService;
use authchain_grpc::envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest};
use authchain_testkit::EchoServer;
use authchain_testkit::load::{Load, LoadResult};
use tokio::net::TcpListener;

/// A CheckRequest like the ones Envoy sends in this benchmark.
fn sample_check() -> CheckRequest {
    use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Request,
    };
    let headers = [
        (":authority", "127.0.0.1:10000"),
        (":method", "GET"),
        (":path", "/"),
        (":scheme", "http"),
        ("my-header", "foo"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "2d2c4b3c-2c4c-4d2c-8c1e-0c7b0a9f1e11"),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "12345678901234567890".into(),
                    method: "GET".into(),
                    path: "/".into(),
                    host: "127.0.0.1:10000".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

async fn authchain_service() -> Result<ExtAuthzService, Box<dyn Error>> {
    Ok(ExtAuthzService::new(authchain_benches::engine().await?).default_config("bench"))
}

/// CPU per check in process (no transport): the chain and translation
/// cost that (c) adds over (b).
async fn in_process_cost() -> Result<(Duration, Duration), Box<dyn Error>> {
    let service = authchain_service().await?;
    let check = sample_check();
    let n = 100_000u32;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let response = AllowAll.check(tonic::Request::new(check.clone())).await?;
        std::hint::black_box(response);
    }
    let bare = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(service.check_request(check.clone()).await);
    }
    Ok((bare, started.elapsed() / n))
}

async fn serve_authchain() -> Result<SocketAddr, Box<dyn Error>> {
    let service = authchain_service().await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(authchain_grpc::serve_listener_with_shutdown(
        listener,
        service,
        std::future::pending(),
    ));
    Ok(addr)
}

async fn measure(
    name: &str,
    upstream: SocketAddr,
    authz: Option<SocketAddr>,
    load: &Load,
) -> Result<LoadResult, Box<dyn Error>> {
    let envoy = checked_envoy(name, upstream, authz, &[("my-header", "foo")]).await?;
    let ingress = envoy.listener("ingress")?;
    warm_up(load, ingress, "/").await?;
    let result = run_load(load, ingress, "/").await?;
    eprintln!(
        "{name}: {:.0} rps, p50 {:?}, p99 {:?}, {} errors",
        result.rps, result.p50, result.p99, result.errors
    );
    drop(envoy);
    Ok(result)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let connections: u32 = args.next().map_or(Ok(32), |s| s.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let load = Load {
            connections,
            threads: 1,
            duration: Duration::from_secs(seconds),
            headers: vec!["my-header: foo".into()],
        };
        let (bare_cost, chain_cost) = in_process_cost().await?;
        let upstream = EchoServer::start().await?;
        let bare = serve_allow_all().await?;
        let chain = serve_authchain().await?;
        let a = measure("a envoy only", upstream.addr(), None, &load).await?;
        let b = measure("b envoy + bare tonic", upstream.addr(), Some(bare), &load).await?;
        let c = measure("c envoy + authchain", upstream.addr(), Some(chain), &load).await?;

        println!(
            "load-grpc: wrk -t1 -c{connections} -d{seconds}s --latency, Envoy 1 worker, HTTP/1.1 GET /"
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>8}",
            "scenario", "rps", "p50 ms", "p99 ms", "errors"
        );
        for (name, r) in [
            ("(a) envoy, no auth", a),
            ("(b) envoy + bare tonic", b),
            ("(c) envoy + authchain", c),
        ] {
            println!(
                "{name:<28} {:>10.0} {:>10.3} {:>10.3} {:>8}",
                r.rps,
                ms(r.p50),
                ms(r.p99),
                r.errors
            );
        }
        println!(
            "in process, per check (CheckRequest clone included): bare {bare_cost:?}, authchain {chain_cost:?}"
        );
        let rps_ratio = c.rps / b.rps;
        let p99_ratio = ms(c.p99) / ms(b.p99);
        println!(
            "c/b rps = {rps_ratio:.3} (target >= 0.95: {}), p99(c)/p99(b) = {p99_ratio:.3} (target <= 1.10: {}), b/a rps = {:.3}, c/a rps = {:.3}",
            if rps_ratio >= 0.95 { "met" } else { "MISSED" },
            if p99_ratio <= 1.10 { "met" } else { "MISSED" },
            b.rps / a.rps,
            c.rps / a.rps,
        );
        Ok::<_, Box<dyn Error>>(())
    })
}
