//! Load generation with `wrk`, for side-by-side comparisons.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::{Locator, PeerError};

/// Where `wrk` comes from (Debian package `wrk`).
pub const WRK: Locator = Locator {
    name: "wrk",
    env_var: "AUTHCHAIN_WRK",
    python: None,
    venv_bin: None,
    path_names: &["wrk"],
    install_hint: "it apt-installs wrk and nghttp2-client",
};

/// One load run's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Responses that were not 2xx or 3xx, plus socket errors.
    pub errors: u64,
    /// Requests completed.
    pub requests: u64,
}

/// How to drive a run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Open connections.
    pub connections: u32,
    /// wrk threads.
    pub threads: u32,
    /// How long.
    pub duration: Duration,
    /// Request headers, `name: value`.
    pub headers: Vec<String>,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            connections: 32,
            threads: 1,
            duration: Duration::from_secs(10),
            headers: Vec::new(),
        }
    }
}

impl Load {
    /// Runs `wrk --latency` against `http://addr/path` and reads its report.
    pub fn run(&self, addr: SocketAddr, path: &str) -> Result<LoadResult, PeerError> {
        let wrk = WRK.locate()?;
        let mut command = Command::new(wrk);
        command
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.duration.as_secs().max(1)))
            .arg("--latency")
            .arg("--timeout")
            .arg("5s");
        for header in &self.headers {
            command.arg("-H").arg(header);
        }
        command.arg(format!("http://{addr}{path}"));
        let out = command
            .output()
            .map_err(|e| PeerError::new(format!("cannot run wrk: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(PeerError::new(format!(
                "wrk failed ({}):\n{text}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        parse_wrk(&text).ok_or_else(|| PeerError::new(format!("cannot read wrk's report:\n{text}")))
    }
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> Option<LoadResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = v.parse().ok(),
            (Some("50%"), Some(v)) => p50 = duration(v),
            (Some("99%"), Some(v)) => p99 = duration(v),
            (Some("Non-2xx"), _) => {
                errors += line
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            (Some("Socket"), Some("errors:")) => {
                errors += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            (Some(n), Some("requests")) => requests = n.parse().ok(),
            _ => {}
        }
    }
    Some(LoadResult {
        rps: rps?,
        p50: p50?,
        p99: p99?,
        errors,
        requests: requests?,
    })
}

fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   451.23us  100.00us   3.00ms   90.00%\n  Latency Distribution\n     50%  420.00us\n     75%  500.00us\n     90%  600.00us\n     99%    1.20ms\n  35000 requests in 2.00s, 3.00MB read\n  Socket errors: connect 0, read 1, write 0, timeout 2\n  Non-2xx or 3xx responses: 5\nRequests/sec:  17500.12\nTransfer/sec:      1.50MB\n";
        let r = parse_wrk(report).unwrap();
        assert!((r.rps - 17500.12).abs() < 1e-6);
        assert_eq!(r.p50, Duration::from_micros(420));
        assert_eq!(r.p99, Duration::from_micros(1200));
        assert_eq!(r.requests, 35000);
        assert_eq!(r.errors, 8);
    }
}
