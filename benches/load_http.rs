//! Side-by-side load runs for authchain-http, whole processes on loopback,
//! reported as ratios of one run:
//!
//! - nginx: (a) proxying with no auth; (b) with `auth_request` to a bare
//!   allow-all hyper server (the limit of the extra hop); (c) with
//!   `auth_request` to authchain-http's check server running a 3-step
//!   chain (Gloo's RequiredHeader plugin, a header mutation, a state
//!   write). Target: rps(c) / rps(b) ≥ 0.95.
//! - axum: the same app served without and with `AuthChainLayer` (the same
//!   3-step chain). Target: rps(with) / rps(without) ≥ 0.90.
//!
//! Every configuration is warmed up first with a 1 s run that is not
//! counted. Configurations are then run in alternating rounds (every other
//! round in reverse order) so that drift on a noisy machine spreads over
//! all of them; each figure is the median of its rounds.
//!
//! ```text
//! cargo run --release -p authchain-benches --bin load-http [-- SECONDS_PER_RUN ROUNDS]
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authchain_benches::median_run;
use authchain_core::{Chain, Engine};
use authchain_http::{AuthChainLayer, CheckConfig, CheckServer};
use authchain_testkit::EchoServer;
use authchain_testkit::load::{Load, LoadResult};
use authchain_testkit::nginx::Nginx;

async fn chain() -> (Arc<Engine>, Arc<Chain>) {
    let engine = authchain_benches::engine().await.unwrap();
    let chain = engine.current().chain("bench").unwrap().clone();
    (engine, chain)
}

/// A hyper server that allows everything: the limit of an auth hop.
async fn allow_all() -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, Infallible>(http::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The body of nginx's `http {}` block: keep-alive pools to the upstream
/// and, when given, to an auth server called with `auth_request`.
fn nginx_config(upstream: SocketAddr, auth: Option<(SocketAddr, &str)>) -> String {
    let keepalive = "proxy_http_version 1.1; proxy_set_header Connection \"\";";
    let mut config = format!("upstream app {{ server {upstream}; keepalive 64; }}\n");
    let mut location = String::new();
    let mut auth_location = String::new();
    if let Some((addr, path)) = auth {
        config.push_str(&format!(
            "upstream auth {{ server {addr}; keepalive 64; }}\n"
        ));
        location.push_str("auth_request /_authz;");
        auth_location = format!(
            "location = /_authz {{ internal; proxy_pass http://auth{path}; {keepalive} \
             proxy_pass_request_body off; proxy_set_header Content-Length \"\"; \
             proxy_set_header X-Original-URI $request_uri; \
             proxy_set_header X-Original-Method $request_method; }}"
        );
    }
    config.push_str(&format!(
        "server {{\n listen 127.0.0.1:{{{{port}}}};\n \
         location / {{ {location} proxy_pass http://app; {keepalive} }}\n \
         {auth_location}\n}}\n"
    ));
    config
}

fn print(name: &str, r: &LoadResult) {
    println!(
        "  {name:<44} {:>9.0} rps   p50 {:>8.1?}   p99 {:>8.1?}   errors {}",
        r.rps, r.p50, r.p99, r.errors
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let load = Load {
        connections: 32,
        threads: 1,
        duration: Duration::from_secs(seconds),
        headers: vec!["my-header: foo".into()],
    };

    let upstream = EchoServer::start().await.unwrap();
    let bare = allow_all().await;
    let (engine, chain) = chain().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authchain = listener.local_addr().unwrap();
    let server = CheckServer::new(
        engine,
        CheckConfig::default().trust(["127.0.0.0/8".parse().unwrap()]),
    );
    tokio::spawn(server.serve(listener, std::future::pending()));

    let proxies = [
        (
            "(a) nginx, no auth",
            Nginx::start(&nginx_config(upstream.addr(), None))
                .await
                .unwrap(),
        ),
        (
            "(b) nginx + allow-all hyper server",
            Nginx::start(&nginx_config(upstream.addr(), Some((bare, "/"))))
                .await
                .unwrap(),
        ),
        (
            "(c) nginx + authchain-http, 3-step chain",
            Nginx::start(&nginx_config(
                upstream.addr(),
                Some((authchain, "/check/bench")),
            ))
            .await
            .unwrap(),
        ),
    ];

    // The axum app, without and with the layer.
    let app = authchain_benches::app;
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(plain, app()).await });
    let layered = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let layered_addr = layered.local_addr().unwrap();
    let with_layer = app().layer(AuthChainLayer::new(chain));
    tokio::spawn(async move { axum::serve(layered, with_layer).await });
    let apps = [
        ("axum app", plain_addr),
        ("axum app + AuthChainLayer (3 steps)", layered_addr),
    ];

    // Warm every configuration up (connections, nginx's keep-alive pools,
    // allocator and caches) with a short run that is not counted.
    let warmup = Load {
        duration: Duration::from_secs(1),
        ..load.clone()
    };
    let targets: Vec<SocketAddr> = proxies
        .iter()
        .map(|(_, nginx)| nginx.addr())
        .chain(apps.iter().map(|(_, addr)| *addr))
        .collect();
    for addr in targets {
        let warmup = warmup.clone();
        tokio::task::spawn_blocking(move || warmup.run(addr, "/api/x"))
            .await
            .unwrap()
            .unwrap();
    }

    let mut proxy_runs: Vec<Vec<LoadResult>> = vec![Vec::new(); proxies.len()];
    let mut app_runs: Vec<Vec<LoadResult>> = vec![Vec::new(); apps.len()];
    for round in 0..rounds {
        // Every other round runs each group in reverse, so that no
        // configuration always runs first (or right after another).
        let order = |n: usize| -> Vec<usize> {
            if round % 2 == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            }
        };
        for i in order(proxies.len()) {
            let load = load.clone();
            let addr = proxies[i].1.addr();
            proxy_runs[i].push(
                tokio::task::spawn_blocking(move || load.run(addr, "/api/x"))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        for i in order(apps.len()) {
            let load = load.clone();
            let addr = apps[i].1;
            app_runs[i].push(
                tokio::task::spawn_blocking(move || load.run(addr, "/api/x"))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
    }

    println!("load-http: {rounds} rounds of {seconds}s each, wrk -t1 -c32, median of rounds");
    let proxy: Vec<LoadResult> = proxy_runs.iter().map(|r| median_run(r)).collect();
    for ((name, _), r) in proxies.iter().zip(&proxy) {
        print(name, r);
    }
    println!(
        "  ratio c/b = {:.3} (target >= 0.95); p99 c/b = {:.2}",
        proxy[2].rps / proxy[1].rps,
        proxy[2].p99.as_secs_f64() / proxy[1].p99.as_secs_f64()
    );
    let apps_result: Vec<LoadResult> = app_runs.iter().map(|r| median_run(r)).collect();
    for ((name, _), r) in apps.iter().zip(&apps_result) {
        print(name, r);
    }
    println!(
        "  ratio with/without layer = {:.3} (target >= 0.90)",
        apps_result[1].rps / apps_result[0].rps
    );
    let errors: u64 = proxy.iter().chain(&apps_result).map(|r| r.errors).sum();
    if errors > 0 {
        println!("  WARNING: {errors} errors (non-2xx or socket errors) in the runs above");
    }
}
