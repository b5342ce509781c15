//! Load and memory harness for the `authchain` server binary.
//!
//! Part 1, Envoy ext_authz (gRPC) load, side by side in one run, each
//! scenario alone on the machine, driven by `wrk` (HTTP/1.1 into Envoy with
//! one worker). Every scenario is started and warmed up (2 s) first, then
//! they run in rounds (40 short rounds of 2 s by default), every other
//! round in reverse order, so that b runs before c as often as after it
//! and drift on a noisy machine spreads over all of them. Many short
//! rounds rather than a few long ones: on a small shared machine a burst
//! of someone else's work can halve one 10 s run, so one round's c/b
//! ranges from 0.7 to 1.6, and only the median of many rounds settles:
//!
//! - (a) Envoy with no auth filter (for context);
//! - (b) Envoy + a bare allow-all tonic `Check` server (this binary again,
//!   as a child process with a multi-thread runtime, like the `authchain`
//!   binary): the limit, the cost of the hop itself;
//! - (c) Envoy + the `authchain` binary (`authchain serve --config <file>`,
//!   a child process on ports chosen at run time) serving a 3-step chain of
//!   built-in steps: `apiKeyAuth` (one key, sent by wrk in the `api-key`
//!   header), `rules` (allow GET), `opaAuth` (a Rego policy allowing GET),
//!   with the decision cache on (`key: [{header: api-key}]`, `trustKey:
//!   true` since `opaAuth` does not declare what it reads) and warm;
//! - (c') the same chain without the cache.
//!
//! It reports the median rps, p50 and p99 of each over the rounds, the
//! cache's hits and misses in (c) from the server's `/metrics`, and the
//! ratio c/b: the median of the rounds' c/b (each round's b and c run
//! back to back), every round's ratio, and a distribution-free 95%
//! interval of that median; the target is c/b >= 0.97.
//!
//! Beside the rps, every run reads the CPU time (user + system, from
//! `/proc/<pid>/stat`) that it cost each process: this harness (the
//! upstream echo server) and the wrk it waited for, Envoy, and the auth
//! servers. Per request, that gives each scenario's whole cost, its auth
//! server's and Envoy's, and b/c of the whole cost per request: the rps
//! ratio a CPU-bound machine would show, which bursts of other work on
//! the machine sway much less than the rps.
//!
//! Part 2, memory: the `authchain` binary with a chain that allows every
//! request (`rules` allowing GET, then `opaAuth` allowing and setting an
//! upstream header from the key) and a cache keyed on the `x-user` header
//! (`maxEntries: 200000`, `ttl: 1h`) gets 100 000 checks with distinct
//! `x-user` values straight on its gRPC port (one tonic channel, 32 in
//! flight). It reports VmRSS (and VmHWM, the peak) from `/proc/<pid>/status`
//! before and after, checks from `/metrics` that the cache counted 100 000
//! misses, then sends the same 100 000 checks again and checks they are all
//! hits (the cache holds every entry). For comparison it does the same to a
//! server whose chain has no cache. The target is RSS < 64 MB after 100k
//! keys.
//!
//! The harness does not build the server: it runs
//! `<target dir>/release/authchain`, the target dir being
//! `$CARGO_TARGET_DIR` or else `<workspace>/target` (then, failing that, the
//! directory this harness runs from), and stops with a hint when it is
//! missing; `$AUTHCHAIN_BIN` overrides the path. It warns when a source file
//! of the workspace is newer than the binary.
//!
//! ```text
//! ./scripts/install-peers.sh            # Envoy, wrk
//! cargo build --release -p authchain-server && \
//!   cargo run --release -p authchain-benches --bin load-server -- [seconds=2] [connections=32] [rounds=40]
//! ```
//!
//! (with the same `CARGO_TARGET_DIR`, if any, for both commands).

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use authchain_benches::child::{ChildServer, child_args, serve_child};
use authchain_benches::{
    checked_envoy, measured_run, median, median_interval, median_run, verdict, warm_up,
};
use authchain_core::AuthorizationRequest;
use authchain_grpc::envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use authchain_testkit::envoy::Envoy;
use authchain_testkit::load::{Load, LoadResult};
use authchain_testkit::{
    ChildPeer, EchoServer, ScratchDir, client, free_port, render, workspace_root,
};

/// The API key wrk sends in (c) and (c').
const KEY: &str = "bench-4p1-k3y-6f1c2d9e0b7a4c35";

/// The server settings every config here starts with.
const LISTENERS: &str = "\
grpc: { address: '127.0.0.1:{{grpc_port}}' }
admin: { address: '127.0.0.1:{{admin_port}}' }
defaultConfig: bench
watch: false
log: { format: text, level: info }
";

/// (c) and (c'): API key, then GET only, then a Rego policy.
const CHAIN: &str = r#"authConfigs:
- name: bench
  configs:
  - name: key
    apiKeyAuth:
      headerName: api-key
      keys: [{ key: "{{key}}", metadata: { user-id: bench } }]
      headersFromMetadataEntry: { x-user-id: { name: user-id, required: true } }
  - name: get-only
    rules:
      defaultAction: deny
      rules: [{ action: allow, methods: [GET] }]
  - name: policy
    opaAuth:
      query: data.bench.authz.allow
      modules:
        bench.rego: |
          package bench.authz

          default allow := false

          allow if input.attributes.request.http.method == "GET"
"#;

/// The cache block of (c).
const CHAIN_CACHE: &str = "  cache:
    key: [{ header: api-key }]
    ttl: 10m
    maxEntries: 1000
    trustKey: true
";

/// Part 2: allows every GET, with an upstream header from `x-user`.
const ALLOW_ALL_CHAIN: &str = r#"authConfigs:
- name: bench
  configs:
  - name: get-only
    rules:
      defaultAction: deny
      rules: [{ action: allow, methods: [GET] }]
  - name: policy
    opaAuth:
      query: data.bench.authz.result
      allowedUpstreamHeaders: [x-bench-user]
      modules:
        bench.rego: |
          package bench.authz

          default result := {"allowed": false}

          result := {"allowed": true, "headers": {"x-bench-user": user}} if {
          	input.attributes.request.http.method == "GET"
          	user := input.attributes.request.http.headers["x-user"]
          }
"#;

/// The cache block of part 2.
const ALLOW_ALL_CACHE: &str = "  cache:
    key: [{ header: x-user }]
    ttl: 1h
    maxEntries: 200000
    trustKey: true
";

/// Distinct keys in part 2.
const KEYS: u64 = 100_000;

/// Checks in flight in part 2.
const IN_FLIGHT: usize = 32;

/// The RSS target after [`KEYS`] keys, in bytes.
const RSS_TARGET: u64 = 64 * 1024 * 1024;

/// The `authchain` binary: `$AUTHCHAIN_BIN`, else
/// `<target dir>/release/authchain`, else next to this harness.
fn authchain_binary() -> Result<PathBuf, Box<dyn Error>> {
    if let Some(path) = std::env::var_os("AUTHCHAIN_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(format!("AUTHCHAIN_BIN={} is not a file", path.display()).into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let mut tried = vec![target.join("release").join("authchain")];
    if let Some(dir) = std::env::current_exe()?.parent() {
        let beside = dir.join("authchain");
        if !tried.contains(&beside) {
            tried.push(beside);
        }
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(format!(
        "the authchain server binary is not built (tried {}).\n\
         Build it first, with the same CARGO_TARGET_DIR as this run:\n  \
         cargo build --release -p authchain-server\n\
         or point AUTHCHAIN_BIN at it.",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
    .into())
}

/// The newest modification time of the workspace's sources, to tell a
/// stale binary.
fn newest_source(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let name = entry.file_name();
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                newest_source(&path, newest);
            }
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "toml" || e == "yaml" || e == "lock")
            && let Ok(modified) = meta.modified()
            && newest.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            *newest = Some((modified, path));
        }
    }
}

fn warn_if_stale(binary: &Path) {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let root = workspace_root();
    let mut newest = None;
    newest_source(&root.join("crates"), &mut newest);
    let lock = root.join("Cargo.lock");
    if let Ok(modified) = lock.metadata().and_then(|m| m.modified())
        && newest.as_ref().is_none_or(|(t, _)| modified > *t)
    {
        newest = Some((modified, lock));
    }
    if let Some((modified, path)) = newest
        && modified > built
    {
        eprintln!(
            "warning: {} is newer than {}; rebuild with `cargo build --release -p authchain-server`",
            path.display(),
            binary.display()
        );
    }
}

/// A running `authchain serve`, killed on drop.
#[derive(Debug)]
struct Authchain {
    peer: ChildPeer,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl Authchain {
    /// Serves [`LISTENERS`] + `auth_configs` (`{{key}}` filled in) and
    /// waits until `/readyz` answers 200.
    async fn start(binary: &Path, auth_configs: &str) -> Result<Authchain, Box<dyn Error>> {
        let dir = ScratchDir::new("load-server")?;
        let (grpc_port, admin_port) = (free_port()?, free_port()?);
        let text = render(
            &format!("{LISTENERS}{auth_configs}"),
            &[
                ("grpc_port", grpc_port.to_string()),
                ("admin_port", admin_port.to_string()),
                ("key", KEY.to_owned()),
            ],
        )?;
        let config = dir.write("authchain.yaml", &text)?;
        let mut command = Command::new(binary);
        command.arg("serve").arg("--config").arg(&config);
        let mut peer = ChildPeer::spawn("authchain", command, dir)?;
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        peer.wait_until(Duration::from_secs(20), || async move {
            let reply = client::get(admin, "/readyz", &[]).await.ok()?;
            (reply.status == 200).then_some(())
        })
        .await?;
        Ok(Authchain {
            peer,
            grpc: ([127, 0, 0, 1], grpc_port).into(),
            admin,
        })
    }

    /// `authchain_cache_lookups_total{config="bench",result=...}` as
    /// (hits, misses).
    async fn cache_lookups(&self) -> Result<(u64, u64), Box<dyn Error>> {
        let reply = client::get(self.admin, "/metrics", &[]).await?;
        if reply.status != 200 {
            return Err(self
                .peer
                .failure(format!("/metrics answered {}", reply.status))
                .into());
        }
        let text = reply.text();
        let count = |result: &str| -> u64 {
            let labels = [
                "config=\"bench\"".to_owned(),
                format!("result=\"{result}\""),
            ];
            text.lines()
                .filter(|line| {
                    line.starts_with("authchain_cache_lookups_total{")
                        && labels.iter().all(|l| line.contains(l.as_str()))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Ok((count("hit"), count("miss")))
    }

    /// (VmRSS, VmHWM) in bytes.
    fn memory(&self) -> Result<(u64, u64), Box<dyn Error>> {
        let pid = self.peer.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kb| kb * 1024)
                .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

/// A scenario of part 1: an Envoy in front of `upstream`, with `authz` as
/// its ext_authz server, checked and warmed up.
struct Scenario {
    name: &'static str,
    envoy: Envoy,
    /// The auth server's process id: its CPU per request is reported.
    auth: Option<u32>,
    runs: Vec<LoadResult>,
    /// Per run, CPU µs per request.
    cpu: Vec<Cpu>,
}

/// CPU time of a run, in seconds or per request.
#[derive(Clone, Copy)]
struct Cpu {
    /// Every process of the harness: itself (the echo upstream), the wrk
    /// it waited for, Envoy and the auth servers.
    all: f64,
    /// The scenario's auth server.
    auth: f64,
    /// The scenario's Envoy.
    envoy: f64,
}

/// The flag that makes this binary the allow-all server of (b), on the
/// port that follows it: a bare allow-all tonic `Check` server in a
/// process of its own, so that its CPU is measured apart and it runs, like
/// the `authchain` binary, on a multi-thread runtime of its own.
const ALLOW_ALL_FLAG: &str = "--serve-allow-all";

impl Scenario {
    async fn start(
        name: &'static str,
        upstream: SocketAddr,
        server: Option<(SocketAddr, u32)>,
        load: &Load,
        must_deny_keyless: bool,
    ) -> Result<Scenario, Box<dyn Error>> {
        let envoy = checked_envoy(name, upstream, server.map(|s| s.0), &[("api-key", KEY)]).await?;
        let ingress = envoy.listener("ingress")?;
        if must_deny_keyless {
            let reply = client::get(ingress, "/", &[]).await?;
            if reply.status == 200 {
                return Err(format!("{name}: a request without the API key got 200").into());
            }
        }
        warm_up(load, ingress, "/").await?;
        Ok(Scenario {
            name,
            envoy,
            auth: server.map(|s| s.1),
            runs: Vec::new(),
            cpu: Vec::new(),
        })
    }

    /// One timed run, kept, with the CPU it cost every process of the
    /// harness (`servers` are the auth server children).
    async fn run(&mut self, load: &Load, servers: &[u32]) -> Result<LoadResult, Box<dyn Error>> {
        let ingress = self.envoy.listener("ingress")?;
        let envoy = self.envoy.peer().pid();
        let pids: Vec<u32> = servers.iter().copied().chain([envoy]).collect();
        let (result, spent) = measured_run(load, ingress, "/", &pids).await?;
        let cpu = Cpu {
            all: spent.all,
            auth: spent.of(self.auth),
            envoy: spent.of(Some(envoy)),
        };
        eprintln!(
            "{}: {:.0} rps, p50 {:?}, p99 {:?}, {} errors, CPU per request {:.0} µs \
             (auth server {:.1} µs, Envoy {:.1} µs)",
            self.name,
            result.rps,
            result.p50,
            result.p99,
            result.errors,
            cpu.all,
            cpu.auth,
            cpu.envoy,
        );
        self.runs.push(result);
        self.cpu.push(cpu);
        Ok(result)
    }

    /// The run with the median rps.
    fn median(&self) -> LoadResult {
        median_run(&self.runs)
    }
}

fn keyed_check(i: u64) -> Result<CheckRequest, http::header::InvalidHeaderValue> {
    let mut request = AuthorizationRequest::new(http::Method::GET, "/").with_host("bench.local");
    request.headers.insert(
        http::HeaderName::from_static("x-user"),
        http::HeaderValue::from_str(&format!("user-{i:06}"))?,
    );
    Ok(authchain_grpc::convert::to_check_request(
        &request,
        &serde_json::Map::new(),
    ))
}

fn allowed(response: &CheckResponse) -> bool {
    response.status.as_ref().map_or(0, |s| s.code) == 0
        && matches!(response.http_response, Some(HttpResponse::OkResponse(_)))
}

/// Sends checks for keys `0..n` to `grpc`, [`IN_FLIGHT`] at a time; gives
/// the time taken and how many were not allowed.
async fn send_keyed_checks(grpc: SocketAddr, n: u64) -> Result<(Duration, u64), Box<dyn Error>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let mut client = AuthorizationClient::new(channel.clone());
        let next = next.clone();
        tasks.spawn(async move {
            let mut denied = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, String>(denied);
                }
                let check = keyed_check(i).map_err(|e| e.to_string())?;
                let response = client
                    .check(check)
                    .await
                    .map_err(|e| format!("check {i}: {e}"))?
                    .into_inner();
                if !allowed(&response) {
                    denied += 1;
                }
            }
        });
    }
    let mut denied = 0;
    while let Some(result) = tasks.join_next().await {
        denied += result??;
    }
    Ok((started.elapsed(), denied))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Part 1.
async fn envoy_load(
    binary: &Path,
    seconds: u64,
    connections: u32,
    rounds: usize,
) -> Result<(), Box<dyn Error>> {
    let load = Load {
        connections,
        threads: 1,
        duration: Duration::from_secs(seconds),
        headers: vec![format!("api-key: {KEY}")],
    };
    let upstream = EchoServer::start().await?;
    let bare = ChildServer::start(ALLOW_ALL_FLAG).await?;
    let cached = Authchain::start(binary, &format!("{CHAIN}{CHAIN_CACHE}")).await?;
    let uncached = Authchain::start(binary, CHAIN).await?;
    let up = upstream.addr();
    // (name, auth server and its pid, whether a keyless request must be denied)
    let plan = [
        ("(a) envoy, no auth", None, false),
        (
            "(b) envoy + bare tonic",
            Some((bare.addr(), bare.pid())),
            false,
        ),
        (
            "(c) envoy + authchain, 3 steps, cached",
            Some((cached.grpc, cached.peer.pid())),
            true,
        ),
        (
            "(c') envoy + authchain, 3 steps, no cache",
            Some((uncached.grpc, uncached.peer.pid())),
            true,
        ),
    ];
    let mut started = Vec::with_capacity(plan.len());
    for (name, server, must_deny_keyless) in plan {
        started.push(Scenario::start(name, up, server, &load, must_deny_keyless).await?);
    }
    let mut scenarios: [Scenario; 4] = started
        .try_into()
        .map_err(|_| "four scenarios were planned")?;
    let servers: Vec<u32> = scenarios.iter().filter_map(|s| s.auth).collect();
    // Each round runs b and c back to back (in either order), so that
    // their ratio compares the same stretch of the machine's weather.
    let mut ratios = Vec::with_capacity(rounds);
    let mut cpu_ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for i in order {
            scenarios[i].run(&load, &servers).await?;
        }
        let rps = |i: usize| scenarios[i].runs.last().map_or(f64::NAN, |r| r.rps);
        let cpu = |i: usize| scenarios[i].cpu.last().map_or(f64::NAN, |c| c.all);
        ratios.push(rps(2) / rps(1));
        cpu_ratios.push(cpu(1) / cpu(2));
    }
    let (hits, misses) = cached.cache_lookups().await?;
    drop(cached);
    drop(uncached);

    println!(
        "load-server part 1: {rounds} rounds of wrk -t1 -c{connections} -d{seconds}s --latency \
         (after a 2 s warm-up each), Envoy 1 worker, HTTP/1.1 GET / with an api-key header; \
         medians of the rounds"
    );
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>7} {:>11} {:>11} {:>11}",
        "scenario", "rps", "p50 ms", "p99 ms", "errors", "CPU µs/req", "auth", "Envoy"
    );
    let [a, b, c, c_uncached] = scenarios.each_ref().map(Scenario::median);
    for (scenario, r) in scenarios.iter().zip([a, b, c, c_uncached]) {
        let all: Vec<f64> = scenario.cpu.iter().map(|c| c.all).collect();
        let auth: Vec<f64> = scenario.cpu.iter().map(|c| c.auth).collect();
        let envoy: Vec<f64> = scenario.cpu.iter().map(|c| c.envoy).collect();
        println!(
            "{:<40} {:>8.0} {:>8.3} {:>8.3} {:>7} {:>11.1} {:>11.1} {:>11.1}",
            scenario.name,
            r.rps,
            ms(r.p50),
            ms(r.p99),
            r.errors,
            median(&all),
            median(&auth),
            median(&envoy),
        );
    }
    println!(
        "(c) cache lookups (warm-up and sanity requests included): {hits} hits, {misses} misses"
    );
    let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let ratio = median(&ratios);
    let (low, high) = median_interval(&ratios);
    println!(
        "c/b rps = {ratio:.3}, median of the rounds' [{}]; 95% interval of that median \
         [{low:.3}, {high:.3}] (target >= 0.97: {}), \
         p99(c)/p99(b) = {:.3}, c'/b rps = {:.3}, b/a rps = {:.3}, c/a rps = {:.3}",
        per_round.join(", "),
        verdict(ratio, low, 0.97),
        ms(c.p99) / ms(b.p99),
        c_uncached.rps / b.rps,
        b.rps / a.rps,
        c.rps / a.rps,
    );
    let (low, high) = median_interval(&cpu_ratios);
    println!(
        "CPU per request, all processes (wrk, Envoy, auth servers, this harness): b/c = {:.3}, \
         median of the rounds, 95% interval [{low:.3}, {high:.3}]: the rps ratio a CPU-bound \
         machine would give, less swayed by the machine's weather than the rps themselves",
        median(&cpu_ratios)
    );
    Ok(())
}

/// Part 2.
async fn rss(binary: &Path) -> Result<(), Box<dyn Error>> {
    let server = Authchain::start(binary, &format!("{ALLOW_ALL_CHAIN}{ALLOW_ALL_CACHE}")).await?;
    let (rss_start, _) = server.memory()?;
    let (first, denied) = send_keyed_checks(server.grpc, KEYS).await?;
    if denied > 0 {
        return Err(server
            .peer
            .failure(format!("{denied} of {KEYS} checks were not allowed"))
            .into());
    }
    let (rss_loaded, hwm_loaded) = server.memory()?;
    let (hits_first, misses_first) = server.cache_lookups().await?;
    let (second, denied_again) = send_keyed_checks(server.grpc, KEYS).await?;
    let (rss_again, hwm_again) = server.memory()?;
    let (hits_total, misses_total) = server.cache_lookups().await?;
    drop(server);

    let control = Authchain::start(binary, ALLOW_ALL_CHAIN).await?;
    let (control_start, _) = control.memory()?;
    let (control_time, _) = send_keyed_checks(control.grpc, KEYS).await?;
    let (control_loaded, control_hwm) = control.memory()?;
    drop(control);

    let rate = |d: Duration| KEYS as f64 / d.as_secs_f64();
    println!(
        "load-server part 2: {KEYS} checks with distinct x-user values, gRPC straight to \
         authchain, {IN_FLIGHT} in flight on one channel"
    );
    println!(
        "cached:   RSS at start {:.1} MiB; after {KEYS} keys {:.1} MiB (peak {:.1} MiB), \
         {:.0} checks/s; cache: {hits_first} hits, {misses_first} misses",
        mib(rss_start),
        mib(rss_loaded),
        mib(hwm_loaded),
        rate(first),
    );
    println!(
        "          same {KEYS} keys again: {:.0} checks/s, {denied_again} not allowed, \
         +{} hits, +{} misses; RSS {:.1} MiB (peak {:.1} MiB)",
        rate(second),
        hits_total.saturating_sub(hits_first),
        misses_total.saturating_sub(misses_first),
        mib(rss_again),
        mib(hwm_again),
    );
    println!(
        "no cache: RSS at start {:.1} MiB; after {KEYS} keys {:.1} MiB (peak {:.1} MiB), \
         {:.0} checks/s",
        mib(control_start),
        mib(control_loaded),
        mib(control_hwm),
        rate(control_time),
    );
    let held = misses_first == KEYS && hits_total.saturating_sub(hits_first) == KEYS;
    println!(
        "RSS after {KEYS} keys = {:.1} MiB (target < {:.0} MiB: {}); cache holds every key: {}; \
         cache's share ~ {:.1} MiB ({:.0} bytes/key)",
        mib(rss_loaded),
        mib(RSS_TARGET),
        if rss_loaded < RSS_TARGET {
            "met"
        } else {
            "MISSED"
        },
        if held { "yes" } else { "NO" },
        mib(rss_loaded.saturating_sub(control_loaded)),
        rss_loaded.saturating_sub(control_loaded) as f64 / KEYS as f64,
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    if let Some((_, port)) = child_args(&[ALLOW_ALL_FLAG])? {
        return serve_child(port, authchain_benches::allow_all_on);
    }
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(2), |s| s.parse())?;
    let connections: u32 = args.next().map_or(Ok(32), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(40), |s| s.parse())?;
    if rounds == 0 {
        return Err("rounds must be at least 1".into());
    }
    let binary = authchain_binary()?;
    warn_if_stale(&binary);
    eprintln!("server: {}", binary.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        envoy_load(&binary, seconds, connections, rounds).await?;
        rss(&binary).await
    })
}
