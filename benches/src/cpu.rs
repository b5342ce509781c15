//! CPU time per process, read from `/proc/<pid>/stat`: what a load run
//! cost the machine, whatever a burst of other work did to the wall
//! clock.

use std::error::Error;

/// CPU seconds (user + system) of process `pid` (`"self"` for this one),
/// with those of the children it has waited for (wrk, in the harness)
/// when `children`, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str, children: bool) -> Result<f64, Box<dyn Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) and its `)`:
    // state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let fields = stat
        .rsplit_once(')')
        .ok_or_else(|| format!("unreadable /proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .skip(11);
    let count = if children { 4 } else { 2 };
    let ticks: Vec<f64> = fields
        .take(count)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if ticks.len() < count {
        return Err(format!("short /proc/{pid}/stat").into());
    }
    // Linux reports these in USER_HZ ticks, 100 per second on every
    // architecture it exports them for.
    Ok(ticks.iter().sum::<f64>() / 100.0)
}

/// The CPU seconds so far of this process (and of its waited-for
/// children) and of each of some other processes.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    harness: f64,
    processes: Vec<(u32, f64)>,
}

impl CpuSnapshot {
    /// Reads this process and `pids` (the servers and proxies of a
    /// harness).
    pub fn take(pids: &[u32]) -> Result<Self, Box<dyn Error>> {
        Ok(CpuSnapshot {
            harness: cpu_seconds("self", true)?,
            processes: pids
                .iter()
                .map(|&pid| Ok((pid, cpu_seconds(&pid.to_string(), false)?)))
                .collect::<Result<_, Box<dyn Error>>>()?,
        })
    }

    /// The CPU µs per request spent from `self` to `later`, a snapshot of
    /// the same processes, over `requests` requests.
    pub fn per_request(&self, later: &CpuSnapshot, requests: u64) -> CpuSpent {
        let per = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
        let processes: Vec<(u32, f64)> = self
            .processes
            .iter()
            .zip(&later.processes)
            .map(|(&(pid, before), &(_, after))| (pid, per(after - before)))
            .collect();
        CpuSpent {
            all: per(later.harness - self.harness) + processes.iter().map(|(_, s)| s).sum::<f64>(),
            processes,
        }
    }
}

/// CPU µs per request spent between two snapshots.
#[derive(Debug, Clone)]
pub struct CpuSpent {
    /// By every process: the harness, its waited-for children and the
    /// processes read.
    pub all: f64,
    processes: Vec<(u32, f64)>,
}

impl CpuSpent {
    /// By process `pid` (0 for `None` or a process not read).
    pub fn of(&self, pid: Option<u32>) -> f64 {
        self.processes
            .iter()
            .find(|(p, _)| Some(*p) == pid)
            .map_or(0.0, |(_, s)| *s)
    }
}
