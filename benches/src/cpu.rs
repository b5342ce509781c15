//! CPU time per process, read from `/proc/<pid>/stat`: what a load run
//! cost the machine, whatever a burst of other work did to the wall
//! clock.

use std::error::Error;

/// CPU time in seconds (user + system) of process `pid` (`"self"` for
/// this one), and of its children that it has waited for (wrk, in the
/// harnesses), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Result<(f64, f64), Box<dyn Error>> {
    // Linux reports these in USER_HZ ticks, 100 per second on every
    // architecture it exports them for.
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) and its `)`:
    // state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .ok_or_else(|| format!("unreadable /proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<f64>().map(|t| t / TICKS))
        .collect::<Result<_, _>>()?;
    match fields[..] {
        [utime, stime, cutime, cstime] => Ok((utime + stime, cutime + cstime)),
        _ => Err(format!("short /proc/{pid}/stat").into()),
    }
}

/// The CPU seconds so far of this process (and of its waited-for
/// children) and of each of some other processes.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    harness: (f64, f64),
    processes: Vec<(u32, f64)>,
}

impl CpuSnapshot {
    /// Reads this process and `pids` (the servers and proxies of a
    /// harness).
    pub fn take(pids: &[u32]) -> Result<Self, Box<dyn Error>> {
        Ok(CpuSnapshot {
            harness: cpu_seconds("self")?,
            processes: pids
                .iter()
                .map(|&pid| Ok((pid, cpu_seconds(&pid.to_string())?.0)))
                .collect::<Result<_, Box<dyn Error>>>()?,
        })
    }

    /// The CPU seconds spent from `self` to `later`, a snapshot of the
    /// same processes.
    pub fn since(&self, later: &CpuSnapshot) -> CpuSpent {
        let processes: Vec<(u32, f64)> = self
            .processes
            .iter()
            .zip(&later.processes)
            .map(|(&(pid, before), &(_, after))| (pid, after - before))
            .collect();
        let harness = (later.harness.0 - self.harness.0) + (later.harness.1 - self.harness.1);
        CpuSpent {
            all: harness + processes.iter().map(|(_, s)| s).sum::<f64>(),
            processes,
        }
    }
}

/// CPU time spent between two snapshots: seconds, or µs per request
/// after [`per_request`](Self::per_request).
#[derive(Debug, Clone)]
pub struct CpuSpent {
    /// By every process: the harness, its waited-for children and the
    /// processes read.
    pub all: f64,
    processes: Vec<(u32, f64)>,
}

impl CpuSpent {
    /// The same spent over `requests` requests, in µs per request.
    pub fn per_request(self, requests: u64) -> CpuSpent {
        let per = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
        CpuSpent {
            all: per(self.all),
            processes: self
                .processes
                .into_iter()
                .map(|(p, s)| (p, per(s)))
                .collect(),
        }
    }

    /// By process `pid` (0 for `None` or a process not read).
    pub fn of(&self, pid: Option<u32>) -> f64 {
        self.processes
            .iter()
            .find(|(p, _)| Some(*p) == pid)
            .map_or(0.0, |(_, s)| *s)
    }
}
