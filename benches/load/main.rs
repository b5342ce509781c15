//! The load harness: whole processes side by side on loopback, in one
//! run, reported as ratios. Four groups of scenarios, named on the
//! command line (all four by default):
//!
//! - `grpc`: Envoy (one worker) with its ext_authz filter over gRPC, in
//!   front of an echo upstream: (a) with no auth filter; (b) calling a bare
//!   allow-all tonic `Check` server, the limit, the cost of the hop itself;
//!   (c) calling the `authchain` binary (`authchain serve`) with a 3-step
//!   chain of built-in steps, `apiKeyAuth` (one key, which wrk sends in the
//!   `api-key` header), `rules` (allow GET) and `opaAuth` (a Rego policy
//!   allowing GET), with the decision cache on (`key: [{header:
//!   api-key}, method, host, path]`, `trustKey: true` since `opaAuth` does
//!   not declare what it reads) and warm; (c') the same chain without the cache. Target: rps
//!   c/b ≥ 0.97. The report adds (c)'s cache hits and misses, from the
//!   server's `/metrics`.
//! - `http`: nginx (one worker process) with `auth_request`, and Envoy with
//!   ext_authz in HTTP service mode (`path_prefix: /check:bench`,
//!   `my-header` sent to the auth server), each (a) with no auth, (b)
//!   calling a bare allow-all hyper server, (c) calling authchain-http's
//!   check server with the library's 3-step chain (Gloo's RequiredHeader
//!   plugin, a header mutation, a state write), which trusts loopback for
//!   nginx's `X-Original-*` headers, and no proxy for Envoy, which sends
//!   the original request as the check's own. Both auth servers answer
//!   with the chain's two upstream headers and the proxies copy them
//!   upstream: b and c differ only in how the answer is made. Target: c/b
//!   ≥ 0.95. Then an axum app alone, with `AuthChainLayer` (the same
//!   chain) on its Router (target: with/without ≥ 0.90), with the layer
//!   around the whole Router (`AuthChain::new(router, layer)`, which runs
//!   before routing and spares axum's per-request clone of a layered
//!   route), and with a floor layer on the Router: written by hand for the
//!   bench chain, it does only the chain's work (a header check, two
//!   headers set, an `AuthContext`), so that the layer's cost splits into
//!   what any layer doing that work pays and what authchain's generality
//!   adds.
//! - `memory`: a fresh `authchain` binary each round, with a chain that
//!   allows every GET (`rules`, then `opaAuth` setting an upstream header
//!   from `x-user`) and a cache keyed on `x-user` (`maxEntries: 200000`,
//!   `ttl: 1h`), gets 100 000 checks with distinct `x-user` values straight
//!   on its gRPC port (one tonic channel, 32 in flight), then the same
//!   checks again, which must all be cache hits; beside it, the same
//!   server without the cache. VmRSS before and after, and VmHWM (the
//!   peak), from `/proc/<pid>/status`. Target: RSS < 64 MiB after 100k
//!   keys.
//! - `login`: Envoy (one worker) with ext_authz over gRPC, as `grpc`, in
//!   front of a user logged in with `oauth2.oidcAuthorizationCode` at a
//!   real IdP (npm `oidc-provider`, client secret and session key in
//!   Secrets): the harness logs alice in once through the Envoy of each
//!   authchain (the IdP sends the code back to that Envoy's `/callback`),
//!   and wrk sends her session's `Cookie` on every request. (c) the
//!   `authchain` binary with the session sealed in the cookie, (c-redis)
//!   with it in a real Redis (the cookie holding its id), each against a
//!   bare allow-all tonic server (b), (b') sent the same cookie, whose
//!   allow sets the same upstream header as the login's (`x-user-email`,
//!   checked at the upstream before the rounds); (a) no auth. Target: c/b
//!   and c-redis/b' ≥ 0.95. wrk takes a 302 (the answer
//!   to a session that does not open) for a success: every round checks
//!   that the Envoys answered 2xx alone, and fails the run otherwise. Redis
//!   counts among the processes whose CPU is read.
//!
//! Every server runs in a process of its own, on a multi-thread runtime
//! as a server binary does: the allow-all servers, the check servers and
//! the apps are this binary again, started with a flag and a port
//! (`--serve-allow-all`, `--serve-check`, `--serve-check-envoy`,
//! `--serve-app`, `--serve-layered-app`, `--serve-wrapped-app`,
//! `--serve-floor-app`, `--serve-allow-all-grpc`); this process serves
//! only the proxies' upstream, an echo server.
//!
//! Every scenario is started and warmed up first (a 2 s run that is not
//! counted); then they run in rounds (40 rounds of 2 s runs of `wrk -t1
//! -c32` by default), every other round each group in reverse order, so
//! that b runs before c as often as after it and drift on a noisy machine
//! spreads over all of them. Many short rounds rather than a few long
//! ones: on a small shared machine a burst of someone else's work can
//! halve one 10 s run, one round's c/b ranges from 0.7 to 1.6, and only
//! the median of many rounds settles. Each round's c/b compares runs back
//! to back; the report gives the medians of the rounds, each ratio with a
//! distribution-free 95% interval and a verdict. A memory round is a fresh
//! server and its checks (about 15 s), whatever the length of a run; RSS
//! barely varies, so `load memory 2 5` is enough for it.
//!
//! Beside the rps, every run reads the CPU time (user + system, from
//! `/proc/<pid>/stat`) each process spent: this harness with its wrk, the
//! group's proxies and servers. Per request, that gives each scenario's
//! whole cost, its server's and its proxy's, and the ratio of the whole
//! costs: the rps ratio a CPU-bound machine would show, which bursts of
//! other work on the machine sway much less than the rps.
//!
//! With `--rounds-out FILE` (a new file) every round's figures go to FILE
//! as they come, unrounded, one JSON line a round after a header line with
//! the build (its git commit) and the scenarios. `--pool` reads such files
//! of one build and prints the ratios and verdicts of each file and of all
//! their rounds together, from the same code as a run's.
//!
//! Instructions per request, which do not drift with the machine's load:
//! `scripts/server-instructions.sh [FLAG] [PATH]` runs one of the http
//! group's child servers under callgrind while wrk drives it.
//!
//! The harness does not build the `authchain` binary the `grpc`, `login`
//! and `memory` groups run: it takes `$AUTHCHAIN_BIN`, else the one beside
//! itself (built with the same `CARGO_TARGET_DIR`), and warns when a source
//! file of the workspace's crates is newer.
//!
//! ```text
//! ./scripts/install-peers.sh            # Envoy, nginx, wrk, Redis, the IdP
//! cargo build --release -p authchain-server
//! cargo run --release -p authchain-benches --bin load -- [GROUP...] [SECONDS_PER_RUN [ROUNDS]] [--rounds-out FILE]
//! cargo run --release -p authchain-benches --bin load -- --pool FILE...
//! ```

mod grpc;
mod http;
mod login;
mod memory;
mod server;

use std::any::Any;
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authchain_benches::child::{child_args, serve_child};
use authchain_benches::cpu::CpuSnapshot;
use authchain_benches::rounds::{
    Comparison, Cpu, Figures, Header, Round, RoundsWriter, Run, build_identity, errors, median,
    pool, ratios,
};
use authchain_testkit::client;
use authchain_testkit::load::{Load, LoadResult};

/// A group of scenarios, as the command line names it.
#[derive(Debug)]
struct Kind {
    /// Its name on the command line.
    name: &'static str,
    /// What the heading of its report says.
    about: &'static str,
    /// Its scenarios, in the order they run.
    scenarios: &'static [&'static str],
    /// What its report compares.
    comparisons: &'static [Comparison],
}

/// Every group, in the order they run.
const KINDS: [&Kind; 4] = [&grpc::KIND, &http::KIND, &memory::KIND, &login::KIND];

/// A group's scenarios, started, and the processes they run against.
struct Group {
    kind: &'static Kind,
    scenarios: Vec<Scenario>,
    /// The processes whose CPU every run reads: the group's servers and
    /// proxies.
    pids: Vec<u32>,
    /// The server whose cache lookups the report gives ((c) of `grpc`).
    cache: Option<server::Authchain>,
    /// The group's other processes, killed when it is dropped.
    _processes: Vec<Box<dyn Any>>,
}

/// One configuration under load, and its figures so far.
struct Scenario {
    name: &'static str,
    how: How,
    /// Every kept run's figures.
    figures: Vec<Figures>,
    /// Every kept wrk run, for its latencies.
    runs: Vec<LoadResult>,
}

/// How a scenario runs.
enum How {
    /// wrk sends GET `path` with `header` to `target`; the CPU of `server`
    /// and of `proxy` is read apart.
    Wrk {
        target: SocketAddr,
        path: &'static str,
        header: (&'static str, &'static str),
        server: Option<u32>,
        proxy: Option<u32>,
    },
    /// The memory group's checks, to a fresh `binary` serving `config`
    /// with a decision cache or not.
    Keys {
        binary: PathBuf,
        config: String,
        cached: bool,
    },
}

impl Scenario {
    fn new(name: &'static str, how: How) -> Self {
        Scenario {
            name,
            how,
            figures: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// A wrk run that is not kept, after a request that must get a 200.
    async fn warm_up(&self) -> Result<(), Box<dyn Error>> {
        let How::Wrk {
            target,
            path,
            header,
            ..
        } = self.how
        else {
            return Ok(());
        };
        let reply = client::get(target, path, &[header]).await?;
        if reply.status != 200 {
            return Err(format!(
                "{}: sanity request got {}: {}",
                self.name,
                reply.status,
                reply.text()
            )
            .into());
        }
        wrk(header, Duration::from_secs(2), target, path)
            .await
            .map(drop)
    }

    /// One run, kept, with the CPU it cost every process of `pids`; its
    /// figures for the round.
    async fn run(&mut self, seconds: u64, pids: &[u32]) -> Result<Figures, Box<dyn Error>> {
        let figures = match &self.how {
            How::Wrk {
                target,
                path,
                header,
                server,
                proxy,
            } => {
                let before = CpuSnapshot::take(pids)?;
                let result = wrk(*header, Duration::from_secs(seconds), *target, path).await?;
                let spent = before.per_request(&CpuSnapshot::take(pids)?, result.requests);
                let cpu = Cpu {
                    all: spent.all,
                    server: spent.of(*server),
                    proxy: spent.of(*proxy),
                };
                eprintln!(
                    "{}: {:.0} rps, p50 {:?}, p99 {:?}, {} errors, CPU per request {:.1} µs \
                     (server {:.1} µs, proxy {:.1} µs)",
                    self.name,
                    result.rps,
                    result.p50,
                    result.p99,
                    result.errors,
                    cpu.all,
                    cpu.server,
                    cpu.proxy
                );
                self.runs.push(result);
                Figures {
                    name: self.name.into(),
                    rps: result.rps,
                    cpu,
                    errors: result.errors,
                    memory: None,
                }
            }
            How::Keys {
                binary,
                config,
                cached,
            } => memory::run(self.name, binary, config, *cached).await?,
        };
        self.figures.push(figures.clone());
        Ok(figures)
    }

    /// The median over its runs of `figure`.
    fn median(&self, figure: impl Fn(&Figures) -> f64) -> f64 {
        median(&self.figures.iter().map(figure).collect::<Vec<_>>())
    }
}

/// One wrk run (`-t1 -c32`) of `duration` sending GET `path` with
/// `header` to `target`, on a blocking thread.
async fn wrk(
    header: (&str, &str),
    duration: Duration,
    target: SocketAddr,
    path: &'static str,
) -> Result<LoadResult, Box<dyn Error>> {
    let load = Load {
        connections: 32,
        threads: 1,
        duration,
        headers: vec![format!("{}: {}", header.0, header.1)],
    };
    Ok(tokio::task::spawn_blocking(move || load.run(target, path)).await??)
}

/// The table of a wrk group: each scenario's median rps and that run's
/// latencies, and the median CPU per request.
fn print_table(scenarios: &[Scenario]) {
    println!(
        "  {:<46} {:>8} {:>8} {:>8} {:>7} {:>11} {:>9} {:>9}",
        "scenario", "rps", "p50 µs", "p99 µs", "errors", "CPU µs/req", "server", "proxy"
    );
    for s in scenarios {
        // The run with the median rps (the upper one of an even count).
        let mut runs = s.runs.clone();
        runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let r = runs[runs.len() / 2];
        println!(
            "  {:<46} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>11.1} {:>9.1} {:>9.1}",
            s.name,
            r.rps,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.errors,
            s.median(|f| f.cpu.all),
            s.median(|f| f.cpu.server),
            s.median(|f| f.cpu.proxy),
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
        println!(
            "  WARNING: {count} errors (non-2xx, socket errors, cache misses) in the runs above"
        );
    }
}

/// Starts `kinds`, runs their scenarios in `count` rounds of `seconds`
/// each, writing each round to `out` when given, and prints the report.
async fn load(
    kinds: &[&'static Kind],
    seconds: u64,
    count: usize,
    mut out: Option<RoundsWriter>,
) -> Result<(), Box<dyn Error>> {
    if kinds.iter().any(|k| k.name != "http") {
        let binary = server::binary()?;
        server::warn_if_stale(&binary);
        eprintln!("server: {}", binary.display());
    }
    let mut groups = Vec::with_capacity(kinds.len());
    let mut sessions = None;
    for kind in kinds {
        groups.push(match kind.name {
            "grpc" => grpc::start().await?,
            "http" => http::start().await?,
            "login" => {
                let (group, checked) = login::start().await?;
                sessions = Some(checked);
                group
            }
            _ => memory::group(server::binary()?),
        });
    }
    for scenario in groups.iter().flat_map(|g| &g.scenarios) {
        scenario.warm_up().await?;
    }

    let mut rounds = Vec::with_capacity(count);
    for round in 1..=count {
        let mut scenarios = Vec::new();
        for group in &mut groups {
            let mut order: Vec<&mut Scenario> = group.scenarios.iter_mut().collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for scenario in order {
                scenarios.push(scenario.run(seconds, &group.pids).await?);
            }
        }
        let round = Round { round, scenarios };
        if let Some(sessions) = &sessions {
            sessions.check(&round).await?;
        }
        if let Some(out) = &mut out {
            out.write(&round)?;
        }
        rounds.push(round);
    }

    println!(
        "load: {count} rounds; a wrk run is -t1 -c32 -d{seconds}s (after a 2 s warm-up each); \
         medians of the rounds; CPU per request of every process (this harness and wrk, the \
         group's proxies and servers), of the scenario's server and of its proxy"
    );
    for group in &groups {
        println!("{}: {}", group.kind.name, group.kind.about);
        if group.kind.name == "memory" {
            memory::print_table(&group.scenarios);
        } else {
            print_table(&group.scenarios);
        }
        if let Some(server) = &group.cache {
            let (hits, misses) = server.cache_lookups().await?;
            println!(
                "  (c) cache lookups (warm-up and sanity requests included): {hits} hits, \
                 {misses} misses"
            );
        }
        print_ratios(group.kind.comparisons, &rounds)?;
    }
    print_errors(&rounds);
    Ok(())
}

/// Prints the ratios and verdicts of each run read from `paths`, and of
/// all their rounds together, once every file has been read and checked:
/// those of every group whose scenarios the files hold.
fn pool_runs(paths: &[String]) -> Result<(), Box<dyn Error>> {
    let runs = paths
        .iter()
        .map(|path| Run::read(Path::new(path)))
        .collect::<Result<Vec<_>, _>>()?;
    let pooled = pool(&runs)?;
    let Some(first) = runs.first() else {
        return Err("--pool needs at least one file".into());
    };
    let kinds: Vec<&Kind> = KINDS
        .into_iter()
        .filter(|k| {
            let held = |name: &&str| first.header.scenarios.iter().any(|s| s == name);
            k.scenarios.iter().all(held)
        })
        .collect();
    if kinds.is_empty() {
        return Err(format!("{}: no group's scenarios", first.path.display()).into());
    }
    let print_verdicts = |rounds: &[Round]| -> Result<(), Box<dyn Error>> {
        for kind in &kinds {
            print_ratios(kind.comparisons, rounds)?;
        }
        print_errors(rounds);
        Ok(())
    };
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
            first.header.build
        );
        print_verdicts(&pooled)?;
    }
    Ok(())
}

/// How to call this binary.
const USAGE: &str = "\
usage: load [GROUP...] [SECONDS_PER_RUN [ROUNDS]] [--rounds-out FILE]
       load --pool FILE...";

/// What `--help` adds to [`USAGE`].
const HELP: &str = "\
GROUP is grpc, http, memory or login (all four without one); runs of 2 s in 40
rounds by default. --rounds-out writes every round's figures to FILE (a new
file); --pool prints the ratios of such files of one build, and of all
their rounds together.

grpc    Envoy ext_authz over gRPC: no auth, a bare allow-all tonic server, the
        authchain binary with and without its cache (target c/b >= 0.97)
http    nginx auth_request and Envoy's HTTP service (target c/b >= 0.95), and
        an axum app with AuthChainLayer (target with/without >= 0.90)
memory  RSS of the authchain binary after 100k cached keys (target < 64 MiB)
login   Envoy ext_authz over gRPC with an OIDC login's session cookie: a bare
        allow-all tonic server, the authchain binary with the session in the
        cookie and in Redis (target c/b >= 0.95)

grpc, memory and login run the authchain binary beside this one (cargo build
--release -p authchain-server, with the same CARGO_TARGET_DIR) or
$AUTHCHAIN_BIN. Instructions per request of one of the
servers this binary starts with --serve-*: scripts/server-instructions.sh.";

/// A run's groups, the length of a run, the rounds and the rounds file,
/// from the command line after the binary's name (without `--help` or
/// `--pool`).
type Args = (Vec<&'static Kind>, u64, usize, Option<PathBuf>);

/// Reads a run's command line: `[GROUP...] [SECONDS_PER_RUN [ROUNDS]]
/// [--rounds-out FILE]`.
fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut args = args.iter();
    let (mut names, mut numbers, mut out) = (Vec::new(), Vec::new(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds-out" => out = Some(args.next().ok_or("--rounds-out needs a file")?.into()),
            _ if KINDS.iter().any(|k| k.name == arg) => names.push(arg),
            _ if !arg.starts_with('-') && numbers.len() < 2 => numbers.push(
                arg.parse::<u64>()
                    .map_err(|e| format!("{arg:?}: not a group or a number: {e}"))?,
            ),
            _ => return Err(format!("unexpected {arg}")),
        }
    }
    let kinds = KINDS
        .into_iter()
        .filter(|k| names.is_empty() || names.iter().any(|n| n.as_str() == k.name))
        .collect();
    let seconds = numbers.first().copied().unwrap_or(2);
    let rounds = numbers.get(1).copied().unwrap_or(40) as usize;
    if seconds == 0 || rounds == 0 {
        return Err("runs of at least 1 s, and at least 1 round".into());
    }
    Ok((kinds, seconds, rounds, out))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let flags: Vec<&str> = (http::FLAGS.into_iter())
        .chain([grpc::ALLOW_ALL, grpc::ALLOW_ALL_LOGIN])
        .collect();
    if let Some((flag, port)) = child_args(&flags)? {
        return serve_child(port, |listener| async move {
            match flag {
                grpc::ALLOW_ALL => grpc::allow_all(listener, &[]).await.map_err(Into::into),
                grpc::ALLOW_ALL_LOGIN => {
                    (grpc::allow_all(listener, &login::UPSTREAM).await).map_err(Into::into)
                }
                _ => http::serve(flag, listener).await,
            }
        });
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}\n\n{HELP}");
        return Ok(());
    }
    if let Some(("--pool", files)) = args.split_first().map(|(a, rest)| (a.as_str(), rest)) {
        return pool_runs(files);
    }
    let (kinds, seconds, rounds, out) =
        parse_args(&args).map_err(|e| format!("{e}\n{USAGE}\n(load --help says more)"))?;
    // The file is made before the run, so that a bad path costs nothing.
    let out = out.as_deref().map(|path: &Path| {
        let header = Header {
            build: build_identity(),
            seconds,
            scenarios: kinds
                .iter()
                .flat_map(|k| k.scenarios)
                .map(ToString::to_string)
                .collect(),
        };
        RoundsWriter::create(path, &header)
    });
    let out = out.transpose()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(load(&kinds, seconds, rounds, out))
}
