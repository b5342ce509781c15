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
//!   service mode (`path_prefix: /check:bench`, `my-header` sent to the
//!   auth server, the chain's two headers copied upstream). Same target.
//! - axum: the same app served without and with `AuthChainLayer` (the same
//!   3-step chain) on its Router (`Router::layer`). Target: rps(with) /
//!   rps(without) ≥ 0.90. Beside it, for comparison, the layer around the
//!   whole Router (`AuthChain::new(router, layer)`), which runs before
//!   routing and so without axum's cost of a layered route (a boxed
//!   clone of the route per request and its wrapping futures).
//!
//!   Beside them, the floor: the app with a layer written by hand for the
//!   bench chain, which does only its work (a header check, two headers
//!   set, an [`AuthContext`] in the extensions) without a chain, on the
//!   Router. What the layer costs above it is what authchain's generality
//!   costs; what it costs above the app alone, any layer doing the work
//!   pays (axum's layered route included).
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
//! With `--rounds-out FILE` (a new file) every round's figures go to
//! FILE as they come, unrounded, one JSON line a round after a header line with the
//! build (its git commit) and the scenarios. `--pool` reads such files,
//! of one build, and prints the end-of-run ratios and verdicts of each
//! file and of all their rounds together, from the same code as a run's.
//!
//! ```text
//! cargo run --release -p authchain-benches --bin load-http [-- SECONDS_PER_RUN [ROUNDS]] [--rounds-out FILE]
//! cargo run --release -p authchain-benches --bin load-http -- --pool FILE...
//! ```

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use authchain_benches::child::{ChildServer, child_args, serve_child};
use authchain_benches::rounds::{
    Comparison, Cpu, Figure, Figures, Header, Round, RoundsWriter, Run, build_identity, errors,
    pool, ratios,
};
use authchain_benches::{measured_run, median, median_run, warm_up};
use authchain_http::{AuthChainLayer, AuthContext, CheckConfig, CheckServer, ForwardedHeaders};
use authchain_testkit::EchoServer;
use authchain_testkit::envoy::{Bootstrap, Envoy, HttpService};
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
/// This binary as the axum app with [`FloorLayer`] on the Router.
const FLOOR_APP: &str = "--serve-floor-app";

/// The path wrk asks for.
const PATH: &str = "/api/x";

/// The scenarios, by group: nginx's (a), (b), (c); Envoy's; the axum app
/// without the layer, with it on the Router, with it around the Router,
/// and with [`FloorLayer`] on the Router.
const SCENARIOS: [&[&str]; 3] = [
    &[
        "(a) nginx, no auth",
        "(b) nginx + allow-all hyper server",
        "(c) nginx + authchain-http, 3-step chain",
    ],
    &[
        "(a) envoy, no auth",
        "(b) envoy + allow-all hyper server",
        "(c) envoy + authchain-http, 3-step chain",
    ],
    &[
        "axum app",
        "axum app + AuthChainLayer (3 steps)",
        "AuthChainLayer around the axum app",
        "axum app + hand-written floor layer",
    ],
];

/// The ratios every run reports, by group of [`SCENARIOS`]: a proxy's c
/// against its b; the app with the layer on the Router, wrapped whole,
/// and with the floor layer, against the app alone.
const COMPARISONS: [&[Comparison]; 3] = {
    use Figure::{Cpu, Rps};
    let [nginx, envoy, axum] = SCENARIOS;
    [
        &[
            Comparison::new("nginx c/b rps", nginx[2], nginx[1], Rps, 0.95),
            Comparison::new("nginx CPU per request b/c", nginx[2], nginx[1], Cpu, 0.95),
        ],
        &[
            Comparison::new("envoy c/b rps", envoy[2], envoy[1], Rps, 0.95),
            Comparison::new("envoy CPU per request b/c", envoy[2], envoy[1], Cpu, 0.95),
        ],
        &[
            Comparison::new("axum with/without layer rps", axum[1], axum[0], Rps, 0.90),
            Comparison::new(
                "axum CPU per request without/with",
                axum[1],
                axum[0],
                Cpu,
                0.90,
            ),
            Comparison::new(
                "axum wrapped whole/without layer rps",
                axum[2],
                axum[0],
                Rps,
                0.90,
            ),
            Comparison::new(
                "axum floor layer/without layer rps",
                axum[3],
                axum[0],
                Rps,
                0.90,
            ),
        ],
    ]
};

/// The upstream headers of the bench chain's allow (the SetHeader step's
/// and the RequiredHeader plugin's), which the proxies copy upstream.
const ANSWER: [(&str, &str); 2] = [("x-chain", "checked"), ("matched-allowed-headers", "true")];

/// [`ANSWER`] as a header map takes it, made at compile time: the servers
/// that answer or forward it do not parse its names on every request (as
/// the chain's steps do not).
const ANSWER_HEADERS: [(http::HeaderName, http::HeaderValue); 2] = [
    (
        http::HeaderName::from_static(ANSWER[0].0),
        http::HeaderValue::from_static(ANSWER[0].1),
    ),
    (
        http::HeaderName::from_static(ANSWER[1].0),
        http::HeaderValue::from_static(ANSWER[1].1),
    ),
];

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
                for (name, value) in ANSWER_HEADERS {
                    response.headers_mut().insert(name, value);
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
        CheckConfig::default().trust(["127.0.0.0/8".parse()?], ForwardedHeaders::XOriginal),
    );
    server.serve(listener, std::future::pending()).await?;
    Ok(())
}

/// The axum app: without the layer, with it on the Router (`flag` is
/// [`LAYERED_APP`]), with it around the Router ([`WRAPPED_APP`]), or with
/// [`FloorLayer`] on the Router ([`FLOOR_APP`]).
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
    let config = chain.shared_name();
    let layer = AuthChainLayer::new(chain);
    if flag == FLOOR_APP {
        axum::serve(listener, app.layer(FloorLayer { config })).await?;
    } else if flag == LAYERED_APP {
        axum::serve(listener, app.layer(layer)).await?;
    } else {
        let wrapped = authchain_http::AuthChain::new(app, layer);
        let wrapped =
            axum::ServiceExt::<http::Request<axum::body::Body>>::into_make_service(wrapped);
        axum::serve(listener, wrapped).await?;
    }
    Ok(())
}

/// The least a layer must do on the bench chain's allow, written by hand
/// for this one chain: read `my-header` and compare it with the allowed
/// values, set the chain's two upstream headers, and put an
/// [`AuthContext`] with the chain's state into the request, then call the
/// route, with no future of its own. The layered app's cost above this
/// one's is what authchain's generality costs (the chain, its request, its
/// answer); this one's above the plain app's is what any layer doing the
/// work pays, axum's layered route included. It never denies (a request
/// without the header goes on, marked in the context's state): it is a
/// measure, not an auth layer.
#[derive(Clone)]
struct FloorLayer {
    /// The chain's name, for the context.
    config: std::sync::Arc<str>,
}

impl<S> tower_layer::Layer<S> for FloorLayer {
    type Service = Floor<S>;

    fn layer(&self, inner: S) -> Floor<S> {
        Floor {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`FloorLayer`].
#[derive(Clone)]
struct Floor<S> {
    inner: S,
    config: std::sync::Arc<str>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Floor<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        static MY_HEADER: http::HeaderName = http::HeaderName::from_static("my-header");
        let matched = request
            .headers()
            .get_all(&MY_HEADER)
            .iter()
            .any(|v| v == "foo" || v == "bar");
        let headers = request.headers_mut();
        for (name, value) in ANSWER_HEADERS {
            headers.insert(name, value);
        }
        let mut context = AuthContext::default();
        context.config = self.config.clone();
        context.state.insert("checked", serde_json::json!(matched));
        request.extensions_mut().insert(context);
        self.inner.call(request)
    }
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
    /// all the servers and proxies); its figures for the round.
    async fn run(&mut self, load: &Load, pids: &[u32]) -> Result<Figures, Box<dyn Error>> {
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
        Ok(Figures {
            name: self.name.into(),
            rps: result.rps,
            cpu,
            errors: result.errors,
        })
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

/// Prints each of `comparisons` over `rounds`: its median, its 95%
/// interval and whether it meets its target.
fn print_ratios(comparisons: &[Comparison], rounds: &[Round]) -> Result<(), Box<dyn Error>> {
    for ratio in ratios(comparisons, rounds)? {
        println!("  {ratio}");
    }
    Ok(())
}

/// Warns of the errors in `rounds`, if any.
fn print_errors(rounds: &[Round]) {
    let count = errors(rounds);
    if count > 0 {
        println!("  WARNING: {count} errors (non-2xx or socket errors) in the runs above");
    }
}

/// Runs every scenario in `count` rounds of `seconds` each, writing
/// each round to `out` when given, and prints the table and ratios.
async fn load_http(
    seconds: u64,
    count: usize,
    mut out: Option<RoundsWriter>,
) -> Result<(), Box<dyn Error>> {
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
    let floor = ChildServer::start(FLOOR_APP).await?;
    let nginx = [
        Nginx::start(&nginx_config(upstream.addr(), None)).await?,
        Nginx::start(&nginx_config(upstream.addr(), Some((bare.addr(), "/")))).await?,
        Nginx::start(&nginx_config(
            upstream.addr(),
            Some((checker.addr(), "/check:bench")),
        ))
        .await?,
    ];
    let answer_names = ANSWER.map(|(name, _)| name);
    let envoy_with = |addr| {
        Bootstrap::new(upstream.addr())
            .http(HttpService {
                addr,
                path_prefix: "/check:bench",
                allowed_headers: &["my-header"],
                upstream_headers: &answer_names,
                upstream_headers_to_append: &[],
                client_headers: &[],
            })
            .yaml()
    };
    let envoy = [
        Envoy::start(&Bootstrap::new(upstream.addr()).yaml()).await?,
        Envoy::start(&envoy_with(bare.addr())).await?,
        Envoy::start(&envoy_with(checker.addr())).await?,
    ];
    let proxy = |name, target, server: Option<&ChildServer>, pid| {
        Scenario::new(name, target, server.map(ChildServer::pid), Some(pid))
    };
    let mut groups = [
        vec![
            proxy(SCENARIOS[0][0], nginx[0].addr(), None, nginx[0].pid()),
            proxy(
                SCENARIOS[0][1],
                nginx[1].addr(),
                Some(&bare),
                nginx[1].pid(),
            ),
            proxy(
                SCENARIOS[0][2],
                nginx[2].addr(),
                Some(&checker),
                nginx[2].pid(),
            ),
        ],
        vec![
            proxy(
                SCENARIOS[1][0],
                envoy[0].listener("ingress")?,
                None,
                envoy[0].peer().pid(),
            ),
            proxy(
                SCENARIOS[1][1],
                envoy[1].listener("ingress")?,
                Some(&bare),
                envoy[1].peer().pid(),
            ),
            proxy(
                SCENARIOS[1][2],
                envoy[2].listener("ingress")?,
                Some(&checker),
                envoy[2].peer().pid(),
            ),
        ],
        [&plain, &layered, &wrapped, &floor]
            .into_iter()
            .zip(SCENARIOS[2])
            .map(|(app, name)| Scenario::new(name, app.addr(), Some(app.pid()), None))
            .collect(),
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
    let pids: Vec<u32> = [&bare, &checker, &plain, &layered, &wrapped, &floor]
        .iter()
        .map(|s| s.pid())
        .chain(nginx.iter().map(Nginx::pid))
        .chain(envoy.iter().map(|e| e.peer().pid()))
        .collect();
    for scenario in groups.iter().flatten() {
        scenario.warm_up(&load).await?;
    }

    let mut rounds = Vec::with_capacity(count);
    for round in 1..=count {
        // Every other round runs each group in reverse, so that no
        // scenario always runs first, or right after another.
        let mut scenarios = Vec::with_capacity(SCENARIOS.iter().map(|g| g.len()).sum());
        for group in &mut groups {
            let mut order: Vec<&mut Scenario> = group.iter_mut().collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for scenario in order {
                scenarios.push(scenario.run(&load, &pids).await?);
            }
        }
        let round = Round { round, scenarios };
        if let Some(out) = &mut out {
            out.write(&round)?;
        }
        rounds.push(round);
    }

    println!(
        "load-http: {count} rounds of wrk -t1 -c32 -d{seconds}s (after a 2 s warm-up each), \
         GET {PATH} with my-header; medians of the rounds; CPU per request of every process \
         (this harness and wrk, the proxies, the servers), of the scenario's server and of \
         its proxy"
    );
    for (group, comparisons) in groups.iter().zip(COMPARISONS) {
        print_table(group);
        print_ratios(comparisons, &rounds)?;
    }
    print_errors(&rounds);
    Ok(())
}

/// Prints the ratios and verdicts of each run read from `paths`, and of
/// all their rounds together, once every file has been read and checked.
fn pool_runs(paths: &[PathBuf]) -> Result<(), Box<dyn Error>> {
    let runs = paths
        .iter()
        .map(|path| Run::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let paired: Vec<&str> = COMPARISONS
        .iter()
        .flat_map(|group| group.iter())
        .flat_map(|c| [c.with, c.base])
        .collect();
    for run in &runs {
        run.require(&paired)?;
    }
    let pooled = pool(&runs)?;
    for run in &runs {
        let Header { build, seconds, .. } = &run.header;
        println!(
            "{}: {} rounds of {seconds} s, build {build}",
            run.path.display(),
            run.rounds.len()
        );
        print_verdicts(&run.rounds)?;
    }
    if runs.len() > 1 {
        println!(
            "all {} runs: {} rounds, build {}",
            runs.len(),
            pooled.len(),
            runs[0].header.build
        );
        print_verdicts(&pooled)?;
    }
    Ok(())
}

/// Prints every ratio of [`COMPARISONS`] over `rounds`, and their errors.
fn print_verdicts(rounds: &[Round]) -> Result<(), Box<dyn Error>> {
    for comparisons in COMPARISONS {
        print_ratios(comparisons, rounds)?;
    }
    print_errors(rounds);
    Ok(())
}

/// The number `arg` gives, `what` it is, or `default` without it.
fn number<T: std::str::FromStr>(arg: Option<&String>, what: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    arg.map_or(Ok(default), |s| {
        s.parse().map_err(|e| format!("{what} {s:?}: {e}\n{USAGE}"))
    })
}

/// How to call this binary.
const USAGE: &str = "usage: load-http [SECONDS_PER_RUN [ROUNDS]] [--rounds-out FILE]\n       \
                     load-http --pool FILE...";

/// What the command line asks for.
#[derive(Debug)]
enum Mode {
    /// A run: `seconds` per run, `rounds` rounds, written to `out` when
    /// given.
    Run {
        seconds: u64,
        rounds: usize,
        out: Option<PathBuf>,
    },
    /// The pooling of these rounds files.
    Pool(Vec<PathBuf>),
}

/// Reads the command line after the binary's name: `[SECONDS_PER_RUN
/// [ROUNDS]] [--rounds-out FILE]` (2 s and 40 rounds by default), or
/// `--pool FILE...`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Mode, String> {
    let mut args = args.into_iter();
    let mut positional = Vec::new();
    let mut out = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pool" if positional.is_empty() && out.is_none() => {
                let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
                if files.is_empty() {
                    return Err(format!("--pool needs at least one file\n{USAGE}"));
                }
                return Ok(Mode::Pool(files));
            }
            "--rounds-out" => {
                let file = args
                    .next()
                    .ok_or(format!("--rounds-out needs a file\n{USAGE}"))?;
                out = Some(PathBuf::from(file));
            }
            _ if arg.starts_with("--") => return Err(format!("unexpected {arg}\n{USAGE}")),
            _ => positional.push(arg),
        }
    }
    if let Some(extra) = positional.get(2) {
        return Err(format!("unexpected {extra}\n{USAGE}"));
    }
    let seconds = number(positional.first(), "SECONDS_PER_RUN", 2)?;
    let rounds = number(positional.get(1), "ROUNDS", 40)?;
    if rounds == 0 {
        return Err("rounds must be at least 1".into());
    }
    Ok(Mode::Run {
        seconds,
        rounds,
        out,
    })
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
    if let Some((flag, port)) =
        child_args(&[ALLOW_ALL, CHECK, APP, LAYERED_APP, WRAPPED_APP, FLOOR_APP])?
    {
        return serve_child(port, |listener| async move {
            match flag {
                ALLOW_ALL => allow_all(listener).await.map_err(Into::into),
                CHECK => check(listener).await,
                _ => app(listener, flag).await,
            }
        });
    }
    let (seconds, rounds, out) = match parse_args(std::env::args().skip(1))? {
        Mode::Pool(paths) => return pool_runs(&paths),
        Mode::Run {
            seconds,
            rounds,
            out,
        } => (seconds, rounds, out),
    };
    // The file is made before the run, so that a bad path costs nothing.
    let out = match out {
        Some(path) => {
            let header = Header {
                build: build_identity(),
                seconds,
                scenarios: SCENARIOS
                    .iter()
                    .flat_map(|group| group.iter())
                    .map(|s| s.to_string())
                    .collect(),
            };
            Some(RoundsWriter::create(&path, &header)?)
        }
        None => None,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(load_http(seconds, rounds, out))
}
