//! Side-by-side load runs for authchain-http, whole processes on loopback,
//! reported as ratios of one run:
//!
//! - nginx (one worker process): (a) proxying with no auth; (b) with
//!   `auth_request` to a bare allow-all hyper server (the limit of the
//!   extra hop); (c) with `auth_request` to authchain-http's check server
//!   running a 3-step chain (Gloo's RequiredHeader plugin, a header
//!   mutation, a state write). Target: rps(c) / rps(b) ≥ 0.95. The
//!   allow-all server answers as the chain does, with the chain's two
//!   upstream headers, and nginx copies them upstream from either
//!   (`auth_request_set`): b and c differ only in how the answer is made.
//! - Envoy (one worker), the same three with its ext_authz filter in HTTP
//!   service mode (`path_prefix: /check/bench`, `my-header` sent to the
//!   auth server, the chain's two headers copied upstream). Same target.
//! - axum: the same app served without and with `AuthChainLayer` (the same
//!   3-step chain) on its Router (`Router::layer`). Target: rps(with) /
//!   rps(without) ≥ 0.90. Beside it, for comparison, the layer around the
//!   whole Router (`AuthChain::new(router, layer)`), which runs before
//!   routing and so without axum's cost of a layered route (a boxed
//!   clone of the route per request and its wrapping futures).
//!
//! Every server (the allow-all server, the check server, the apps) runs
//! in a process of its own (this binary again, started with a flag and a
//! port) on a multi-thread runtime, as a server binary would; this
//! process serves only the proxies' upstream, an echo server. wrk drives each
//! scenario alone on the machine (`-t1 -c32`).
//!
//! Every scenario is warmed up first with a 2 s run that is not counted.
//! They then run in rounds (40 short rounds of 2 s by default), every
//! other round in reverse order, so that b runs before c as often as after
//! it and drift on a noisy machine spreads over all of them. Each round's
//! c/b and with/without compare runs back to back; the figures are the
//! medians of the rounds, with a distribution-free 95% interval.
//!
//! Beside the rps, every run reads the CPU time each process spent
//! (user + system, from `/proc/<pid>/stat`): this harness with its wrk,
//! the proxies, and the servers. Per request, that gives each scenario's
//! whole cost, its server's, and its proxy's, and the ratio of the whole
//! costs: the rps ratio a CPU-bound machine would show, which bursts of
//! other work on the machine sway much less than the rps.
//!
//! ```text
//! cargo run --release -p authchain-benches --bin load-http [-- SECONDS_PER_RUN ROUNDS]
//! ```

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use authchain_benches::child::{ChildServer, child_args, serve_child};
use authchain_benches::{measured_run, median, median_interval, median_run, verdict, warm_up};
use authchain_http::{AuthChainLayer, CheckConfig, CheckServer};
use authchain_testkit::EchoServer;
use authchain_testkit::envoy::{Envoy, HttpService, http_service_config};
use authchain_testkit::load::{Load, LoadResult};
use authchain_testkit::nginx::Nginx;
use tokio::net::TcpListener;

/// This binary as (b)'s bare allow-all hyper server.
const ALLOW_ALL: &str = "--serve-allow-all";
/// This binary as (c)'s authchain-http check server.
const CHECK: &str = "--serve-check";
/// This binary as the axum app without the layer.
const APP: &str = "--serve-app";
/// This binary as the axum app with `AuthChainLayer` on the Router
/// (`Router::layer`).
const LAYERED_APP: &str = "--serve-layered-app";
/// This binary as the axum app wrapped whole in `AuthChainLayer`.
const WRAPPED_APP: &str = "--serve-wrapped-app";

/// The path wrk asks for.
const PATH: &str = "/api/x";

/// The upstream headers of the bench chain's allow (the SetHeader step's
/// and the RequiredHeader plugin's), which the proxies copy upstream.
const ANSWER: [(&str, &str); 2] = [("x-chain", "checked"), ("matched-allowed-headers", "true")];

/// A hyper server that allows everything with the check server's answer
/// ([`ANSWER`]'s headers) and its connection settings (HTTP/1 or 2,
/// `TCP_NODELAY`): the limit of an auth hop, the proxy's work on the
/// answer included.
async fn allow_all(listener: TcpListener) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_| async {
                let mut response =
                    http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                for (name, value) in ANSWER {
                    response.headers_mut().insert(
                        http::HeaderName::from_static(name),
                        http::HeaderValue::from_static(value),
                    );
                }
                Ok::<_, Infallible>(response)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// authchain-http's check server with the bench chain, trusting nginx's
/// forwarded headers.
async fn check(listener: TcpListener) -> Result<(), Box<dyn Error>> {
    let engine = authchain_benches::engine().await?;
    let server = CheckServer::new(
        engine,
        CheckConfig::default().trust(["127.0.0.0/8".parse()?]),
    );
    server.serve(listener, std::future::pending()).await?;
    Ok(())
}

/// The axum app: without the layer, with it on the Router (`flag` is
/// [`LAYERED_APP`]), or with it around the Router ([`WRAPPED_APP`]).
async fn app(listener: TcpListener, flag: &str) -> Result<(), Box<dyn Error>> {
    let app = authchain_benches::app();
    if flag == APP {
        axum::serve(listener, app).await?;
        return Ok(());
    }
    let engine = authchain_benches::engine().await?;
    let chain = engine
        .current()
        .chain("bench")
        .ok_or("no bench chain")?
        .clone();
    let layer = AuthChainLayer::new(chain);
    if flag == LAYERED_APP {
        axum::serve(listener, app.layer(layer)).await?;
    } else {
        let wrapped = authchain_http::AuthChain::new(app, layer);
        let wrapped =
            axum::ServiceExt::<http::Request<axum::body::Body>>::into_make_service(wrapped);
        axum::serve(listener, wrapped).await?;
    }
    Ok(())
}

/// The body of nginx's `http {}` block: keep-alive pools to the upstream
/// and, when given, to an auth server called with `auth_request`, whose
/// [`ANSWER`] headers go upstream (`auth_request_set`).
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
        for (i, (name, _)) in ANSWER.iter().enumerate() {
            location.push_str(&format!(
                " auth_request_set $answer{i} $upstream_http_{}; proxy_set_header {name} $answer{i};",
                name.replace('-', "_")
            ));
        }
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

/// CPU µs per request of a run.
#[derive(Clone, Copy)]
struct Cpu {
    /// Every process: this harness (the echo upstream) and its wrk,
    /// the proxies, the servers.
    all: f64,
    /// The scenario's server: the auth server, or the app.
    server: f64,
    /// The scenario's proxy.
    proxy: f64,
}

/// One configuration under load.
struct Scenario {
    name: &'static str,
    /// Where wrk sends its requests.
    target: SocketAddr,
    server: Option<u32>,
    proxy: Option<u32>,
    runs: Vec<LoadResult>,
    cpu: Vec<Cpu>,
}

impl Scenario {
    fn new(
        name: &'static str,
        target: SocketAddr,
        server: Option<u32>,
        proxy: Option<u32>,
    ) -> Self {
        Scenario {
            name,
            target,
            server,
            proxy,
            runs: Vec::new(),
            cpu: Vec::new(),
        }
    }

    /// A run that is not kept, after a request that must get a 2xx.
    async fn warm_up(&self, load: &Load) -> Result<(), Box<dyn Error>> {
        let reply =
            authchain_testkit::client::get(self.target, PATH, &[("my-header", "foo")]).await?;
        if reply.status != 200 {
            return Err(format!("{}: sanity request got {}", self.name, reply.status).into());
        }
        warm_up(load, self.target, PATH).await
    }

    /// One timed run, kept, with the CPU it cost every process (`pids`:
    /// all the servers and proxies).
    async fn run(&mut self, load: &Load, pids: &[u32]) -> Result<(), Box<dyn Error>> {
        let (result, spent) = measured_run(load, self.target, PATH, pids).await?;
        let cpu = Cpu {
            all: spent.all,
            server: spent.of(self.server),
            proxy: spent.of(self.proxy),
        };
        eprintln!(
            "{}: {:.0} rps, p99 {:?}, {} errors, CPU per request {:.1} µs \
             (server {:.1} µs, proxy {:.1} µs)",
            self.name, result.rps, result.p99, result.errors, cpu.all, cpu.server, cpu.proxy
        );
        self.runs.push(result);
        self.cpu.push(cpu);
        Ok(())
    }

    fn last_rps(&self) -> f64 {
        self.runs.last().map_or(f64::NAN, |r| r.rps)
    }

    fn last_cpu(&self) -> f64 {
        self.cpu.last().map_or(f64::NAN, |c| c.all)
    }
}

fn print_table(scenarios: &[Scenario]) {
    println!(
        "  {:<44} {:>8} {:>8} {:>8} {:>7} {:>11} {:>9} {:>9}",
        "scenario", "rps", "p50 µs", "p99 µs", "errors", "CPU µs/req", "server", "proxy"
    );
    for s in scenarios {
        let r = median_run(&s.runs);
        let of = |f: fn(&Cpu) -> f64| median(&s.cpu.iter().map(f).collect::<Vec<_>>());
        println!(
            "  {:<44} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>11.1} {:>9.1} {:>9.1}",
            s.name,
            r.rps,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.errors,
            of(|c| c.all),
            of(|c| c.server),
            of(|c| c.proxy),
        );
    }
}

/// Prints a ratio of the rounds: its median, its 95% interval and
/// whether it meets `target`.
fn print_ratio(what: &str, ratios: &[f64], target: f64) {
    let ratio = median(ratios);
    let (low, high) = median_interval(ratios);
    println!(
        "  {what} = {ratio:.3}, median of {} rounds; 95% interval [{low:.3}, {high:.3}] \
         (target >= {target}: {})",
        ratios.len(),
        verdict(ratio, low, target),
    );
}

async fn load_http(seconds: u64, rounds: usize) -> Result<(), Box<dyn Error>> {
    let load = Load {
        connections: 32,
        threads: 1,
        duration: Duration::from_secs(seconds),
        headers: vec!["my-header: foo".into()],
    };

    let upstream = EchoServer::start().await?;
    let bare = ChildServer::start(ALLOW_ALL).await?;
    let checker = ChildServer::start(CHECK).await?;
    let plain = ChildServer::start(APP).await?;
    let layered = ChildServer::start(LAYERED_APP).await?;
    let wrapped = ChildServer::start(WRAPPED_APP).await?;
    let nginx = [
        Nginx::start(&nginx_config(upstream.addr(), None)).await?,
        Nginx::start(&nginx_config(upstream.addr(), Some((bare.addr(), "/")))).await?,
        Nginx::start(&nginx_config(
            upstream.addr(),
            Some((checker.addr(), "/check/bench")),
        ))
        .await?,
    ];
    let answer_names = ANSWER.map(|(name, _)| name);
    let envoy_with = |addr| {
        Some(HttpService {
            addr,
            path_prefix: "/check/bench",
            allowed_headers: &["my-header"],
            upstream_headers: &answer_names,
        })
    };
    let envoy = [
        Envoy::start(&http_service_config(upstream.addr(), None)).await?,
        Envoy::start(&http_service_config(
            upstream.addr(),
            envoy_with(bare.addr()),
        ))
        .await?,
        Envoy::start(&http_service_config(
            upstream.addr(),
            envoy_with(checker.addr()),
        ))
        .await?,
    ];
    let proxy = |name, target, server: Option<&ChildServer>, pid| {
        Scenario::new(name, target, server.map(ChildServer::pid), Some(pid))
    };
    let mut groups = [
        [
            proxy("(a) nginx, no auth", nginx[0].addr(), None, nginx[0].pid()),
            proxy(
                "(b) nginx + allow-all hyper server",
                nginx[1].addr(),
                Some(&bare),
                nginx[1].pid(),
            ),
            proxy(
                "(c) nginx + authchain-http, 3-step chain",
                nginx[2].addr(),
                Some(&checker),
                nginx[2].pid(),
            ),
        ],
        [
            proxy(
                "(a) envoy, no auth",
                envoy[0].listener("ingress")?,
                None,
                envoy[0].peer().pid(),
            ),
            proxy(
                "(b) envoy + allow-all hyper server",
                envoy[1].listener("ingress")?,
                Some(&bare),
                envoy[1].peer().pid(),
            ),
            proxy(
                "(c) envoy + authchain-http, 3-step chain",
                envoy[2].listener("ingress")?,
                Some(&checker),
                envoy[2].peer().pid(),
            ),
        ],
        [
            Scenario::new("axum app", plain.addr(), Some(plain.pid()), None),
            Scenario::new(
                "axum app + AuthChainLayer (3 steps)",
                layered.addr(),
                Some(layered.pid()),
                None,
            ),
            Scenario::new(
                "AuthChainLayer around the axum app",
                wrapped.addr(),
                Some(wrapped.pid()),
                None,
            ),
        ],
    ];
    // Both auth servers' answers reach the upstream through both proxies.
    for group in &groups[..2] {
        for scenario in &group[1..] {
            let reply =
                authchain_testkit::client::get(scenario.target, PATH, &[("my-header", "foo")])
                    .await?;
            let echoed = reply.echoed()?;
            if ANSWER.iter().any(|(n, v)| echoed.header(n) != Some(*v)) {
                return Err(
                    format!("{}: the upstream did not get {ANSWER:?}", scenario.name).into(),
                );
            }
        }
    }
    // A request without the header the chain requires must be denied.
    for target in [
        groups[0][2].target,
        groups[1][2].target,
        layered.addr(),
        wrapped.addr(),
    ] {
        let reply = authchain_testkit::client::get(target, PATH, &[]).await?;
        if reply.status == 200 {
            return Err(format!("{target}: a request without my-header got 200").into());
        }
    }
    let pids: Vec<u32> = [&bare, &checker, &plain, &layered, &wrapped]
        .iter()
        .map(|s| s.pid())
        .chain(nginx.iter().map(Nginx::pid))
        .chain(envoy.iter().map(|e| e.peer().pid()))
        .collect();
    for scenario in groups.iter().flatten() {
        scenario.warm_up(&load).await?;
    }

    // Per group, per round: the ratio of its second and third scenario's
    // rps to its baseline's (c/b for a proxy, with/without for the app),
    // and of their CPU per request the other way round.
    let mut ratios = [(); 3].map(|()| Vec::with_capacity(rounds));
    let mut cpu_ratios = [(); 3].map(|()| Vec::with_capacity(rounds));
    let mut wrapped_ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Every other round runs each group in reverse, so that no
        // scenario always runs first, or right after another.
        let order = if round % 2 == 1 { [2, 1, 0] } else { [0, 1, 2] };
        for group in &mut groups {
            for i in order {
                group[i].run(&load, &pids).await?;
            }
        }
        for (g, group) in groups.iter().enumerate() {
            // A proxy's c against its b; the app with the layer against
            // the app alone.
            let (with, base) = if g < 2 { (2, 1) } else { (1, 0) };
            ratios[g].push(group[with].last_rps() / group[base].last_rps());
            cpu_ratios[g].push(group[base].last_cpu() / group[with].last_cpu());
        }
        wrapped_ratios.push(groups[2][2].last_rps() / groups[2][0].last_rps());
    }

    println!(
        "load-http: {rounds} rounds of wrk -t1 -c32 -d{seconds}s (after a 2 s warm-up each), \
         GET {PATH} with my-header; medians of the rounds; CPU per request of every process \
         (this harness and wrk, the proxies, the servers), of the scenario's server and of \
         its proxy"
    );
    for (g, proxy) in ["nginx", "envoy"].into_iter().enumerate() {
        print_table(&groups[g]);
        print_ratio(&format!("{proxy} c/b rps"), &ratios[g], 0.95);
        print_ratio(
            &format!("{proxy} CPU per request b/c"),
            &cpu_ratios[g],
            0.95,
        );
    }
    print_table(&groups[2]);
    print_ratio("axum with/without layer rps", &ratios[2], 0.90);
    print_ratio("axum CPU per request without/with", &cpu_ratios[2], 0.90);
    print_ratio(
        "axum wrapped whole/without layer rps",
        &wrapped_ratios,
        0.90,
    );
    let errors: u64 = groups
        .iter()
        .flatten()
        .flat_map(|s| &s.runs)
        .map(|r| r.errors)
        .sum();
    if errors > 0 {
        println!("  WARNING: {errors} errors (non-2xx or socket errors) in the runs above");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-http: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    if let Some((flag, port)) = child_args(&[ALLOW_ALL, CHECK, APP, LAYERED_APP, WRAPPED_APP])? {
        return serve_child(port, |listener| async move {
            match flag {
                ALLOW_ALL => allow_all(listener).await.map_err(Into::into),
                CHECK => check(listener).await,
                _ => app(listener, flag).await,
            }
        });
    }
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(2), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(40), |s| s.parse())?;
    if rounds == 0 {
        return Err("rounds must be at least 1".into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(load_http(seconds, rounds))
}
