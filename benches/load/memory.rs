//! The `memory` group: the `authchain` binary's RSS after 100 000 cached
//! keys, against the same server without a cache.

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authchain_benches::cpu::CpuSnapshot;
use authchain_benches::rounds::{Comparison, Cpu, Figures, Measure, Memory, Target, mib};
use authchain_core::AuthorizationRequest;
use authchain_grpc::envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

use crate::server::{Authchain, cache};
use crate::{Group, How, Kind, Scenario};

/// Allows every GET, with an upstream header from `x-user`.
const CHAIN: &str = r#"authConfigs:
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

/// Distinct keys.
const KEYS: u64 = 100_000;

/// Checks in flight.
const IN_FLIGHT: usize = 32;

const SCENARIOS: [&str; 2] = ["authchain, cache on x-user", "authchain, no cache"];

pub(crate) const KIND: Kind = Kind {
    name: "memory",
    about: "100000 checks with distinct x-user values, gRPC straight to a fresh authchain \
            each round, 32 in flight on one channel; checks/s and CPU per check of these",
    scenarios: &SCENARIOS,
    comparisons: &[Comparison::new(
        "RSS after 100000 keys with the cache, MiB",
        Measure::Rss(SCENARIOS[0]),
        Target::Below(64.0),
    )],
};

/// The group: with the cache, and without; nothing to start before a
/// round.
pub(crate) fn group(binary: PathBuf) -> Group {
    let scenarios = SCENARIOS
        .into_iter()
        .zip([true, false])
        .map(|(name, cached)| {
            let config = match cached {
                true => CHAIN.to_owned() + &cache("x-user", 200_000),
                false => CHAIN.to_owned(),
            };
            let how = How::Keys {
                binary: binary.clone(),
                config,
                cached,
            };
            Scenario::new(name, how)
        })
        .collect();
    Group {
        kind: &KIND,
        scenarios,
        pids: Vec::new(),
        cache: None,
        _processes: Vec::new(),
    }
}

/// One round of scenario `name`: a fresh `binary` serving `config` gets
/// [`KEYS`] checks and, when `cached`, the same again, which must all be
/// cache hits.
pub(crate) async fn run(
    name: &str,
    binary: &Path,
    config: &str,
    cached: bool,
) -> Result<Figures, Box<dyn Error>> {
    let server = Authchain::start(binary, config).await?;
    let pid = server.pid();
    let (start, _) = server.memory()?;
    let before = CpuSnapshot::take(&[pid])?;
    let (took, mut errors) = send_keyed_checks(server.grpc(), KEYS).await?;
    let spent = before.per_request(&CpuSnapshot::take(&[pid])?, KEYS);
    let (after, peak) = server.memory()?;
    let rate = |d: Duration| KEYS as f64 / d.as_secs_f64();
    let cpu = Cpu {
        all: spent.all,
        server: spent.of(Some(pid)),
        proxy: 0.0,
    };
    let mut line = format!(
        "{name}: RSS at start {:.1} MiB; after {KEYS} keys {:.1} MiB (peak {:.1} MiB), \
         {:.0} checks/s, CPU per check {:.1} µs (server {:.1} µs), {errors} not allowed",
        mib(start),
        mib(after),
        mib(peak),
        rate(took),
        cpu.all,
        cpu.server,
    );
    if cached {
        let (hits, misses) = server.cache_lookups().await?;
        let (again, denied) = send_keyed_checks(server.grpc(), KEYS).await?;
        let (rss, peak) = server.memory()?;
        let (all_hits, all_misses) = server.cache_lookups().await?;
        let (new_hits, new_misses) = (
            all_hits.saturating_sub(hits),
            all_misses.saturating_sub(misses),
        );
        // A cache that holds every key misses each once, then hits each.
        errors += denied + KEYS.abs_diff(misses) + hits + KEYS.abs_diff(new_hits) + new_misses;
        line += &format!(
            "; cache: {hits} hits, {misses} misses; the same keys again: {:.0} checks/s, \
             {denied} not allowed, +{new_hits} hits, +{new_misses} misses, RSS {:.1} MiB \
             (peak {:.1} MiB)",
            rate(again),
            mib(rss),
            mib(peak),
        );
    }
    eprintln!("{line}");
    Ok(Figures {
        name: name.into(),
        rps: rate(took),
        cpu,
        errors,
        memory: Some(Memory { start, after, peak }),
    })
}

/// The check of key `i`: GET / with `x-user: user-<i>`.
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

/// The group's table: each scenario's medians, and the cache's share of
/// the RSS.
pub(crate) fn print_table(scenarios: &[Scenario]) {
    println!(
        "  {:<28} {:>9} {:>7} {:>12} {:>8} {:>10} {:>10} {:>10}",
        "scenario",
        "checks/s",
        "errors",
        "CPU µs/check",
        "server",
        "RSS start",
        "RSS after",
        "peak"
    );
    let rss = |s: &Scenario, of: fn(&Memory) -> u64| {
        s.median(|f| f.memory.as_ref().map_or(f64::NAN, |m| mib(of(m))))
    };
    for s in scenarios {
        println!(
            "  {:<28} {:>9.0} {:>7} {:>12.1} {:>8.1} {:>6.1} MiB {:>6.1} MiB {:>6.1} MiB",
            s.name,
            s.median(|f| f.rps),
            s.figures.iter().map(|f| f.errors).sum::<u64>(),
            s.median(|f| f.cpu.all),
            s.median(|f| f.cpu.server),
            rss(s, |m| m.start),
            rss(s, |m| m.after),
            rss(s, |m| m.peak),
        );
    }
    if let [cached, uncached] = scenarios {
        let share = rss(cached, |m| m.after) - rss(uncached, |m| m.after);
        println!(
            "  the cache's share of the RSS ~ {share:.1} MiB ({:.0} bytes a key)",
            share * 1024.0 * 1024.0 / KEYS as f64
        );
    }
}
