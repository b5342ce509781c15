//! The rounds of a load run, kept and pooled: each round's figures per
//! scenario (rps, CPU µs per request, errors, and a server's memory in
//! the memory group), written unrounded as one JSON line a round after a
//! header line that names the build, and read back; and the comparisons
//! over rounds (a ratio of two scenarios, or one scenario's RSS), with
//! their medians, 95% intervals and verdicts. A live run and the pooling
//! of several runs' files both compute them with [`ratios`].
//!
//! A file's first line is its [`Header`], every other line a [`Round`]
//! (here cut short):
//!
//! ```text
//! {"build":"3f1306e…","seconds":2,"scenarios":["axum app","axum app + AuthChainLayer (3 steps)"]}
//! {"round":1,"scenarios":[{"name":"axum app","rps":41000.5,"cpu":{"all":48.2,"server":20.1,"proxy":0.0},"errors":0},…]}
//! ```

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// CPU µs per request of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Every process: the harness and its wrk, the proxies, the servers.
    pub all: f64,
    /// The scenario's server: the auth server, or the app (0 without one).
    pub server: f64,
    /// The scenario's proxy (0 without one).
    pub proxy: f64,
}

/// A server's memory over a run of the memory group, in bytes, from
/// `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// VmRSS before the run.
    pub start: u64,
    /// VmRSS after it.
    pub after: u64,
    /// VmHWM after it: the peak.
    pub peak: u64,
}

/// One scenario's figures in one round, unrounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    /// The scenario.
    pub name: String,
    /// Requests per second.
    pub rps: f64,
    /// CPU µs per request.
    pub cpu: Cpu,
    /// Non-2xx answers and socket errors; in the memory group, checks
    /// not allowed and cache lookups that a cache holding every key
    /// would not give.
    pub errors: u64,
    /// The server's memory (the memory group only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// One round: the figures of every scenario, in the order they ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Round {
    /// Which round of its run, from 1.
    pub round: usize,
    /// Every scenario's figures.
    pub scenarios: Vec<Figures>,
}

impl Round {
    /// The figures of scenario `name`.
    pub fn get(&self, name: &str) -> Option<&Figures> {
        self.scenarios.iter().find(|f| f.name == name)
    }
}

/// The first line of a rounds file: what was measured, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The build measured, as [`build_identity`] gives it.
    pub build: String,
    /// The length of each run, in seconds.
    pub seconds: u64,
    /// The scenarios every round holds.
    pub scenarios: Vec<String>,
}

/// An error about line `line` (from 1) of rounds file `path`.
fn at(path: &Path, line: usize, message: impl fmt::Display) -> String {
    format!("{}:{line}: {message}", path.display())
}

/// An error about rounds file `path` as a whole.
fn of(path: &Path, message: impl fmt::Display) -> String {
    format!("{}: {message}", path.display())
}

/// What a run measures: the commit of the source tree this binary was
/// built from (`git rev-parse HEAD` there, read when the run starts),
/// with `-dirty` after it when tracked files have uncommitted changes,
/// or `unknown` without git or a checkout.
pub fn build_identity() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if changes.is_empty() => head,
        _ => format!("{head}-dirty"),
    }
}

/// Writes a run's rounds to a file as they come: its header first, then
/// a line a round, each flushed, so that a run cut short keeps the
/// rounds it finished.
#[derive(Debug)]
pub struct RoundsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RoundsWriter {
    /// Creates `path`, which must not exist yet, and writes `header`.
    pub fn create(path: &Path, header: &Header) -> Result<Self, String> {
        let file = File::create_new(path).map_err(|e| of(path, format!("cannot create: {e}")))?;
        let mut writer = RoundsWriter {
            path: path.to_owned(),
            out: BufWriter::new(file),
        };
        writer.line(header)?;
        Ok(writer)
    }

    /// Writes `round` as the next line.
    pub fn write(&mut self, round: &Round) -> Result<(), String> {
        self.line(round)
    }

    fn line(&mut self, value: &impl Serialize) -> Result<(), String> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush())
            .map_err(|e| of(&self.path, format!("cannot write: {e}")))
    }
}

/// A run read back from its rounds file.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The file.
    pub path: PathBuf,
    /// Its first line.
    pub header: Header,
    /// Its rounds, each holding every scenario of the header once.
    pub rounds: Vec<Round>,
}

impl Run {
    /// Reads the file at `path`: a header line, then at least one round
    /// (blank lines are passed over).
    pub fn read(path: &Path) -> Result<Run, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| of(path, format!("cannot read: {e}")))?;
        let mut lines = (1..)
            .zip(text.lines())
            .filter(|(_, line)| !line.trim().is_empty());
        let (number, line) = lines
            .next()
            .ok_or_else(|| of(path, "empty, with no header line"))?;
        let header: Header = parse(path, number, line, "a header")?;
        let rounds = lines
            .map(|(number, line)| {
                let round: Round = parse(path, number, line, "a round")?;
                check_round(&header, &round).map_err(|e| at(path, number, e))?;
                Ok(round)
            })
            .collect::<Result<Vec<_>, String>>()?;
        if rounds.is_empty() {
            return Err(of(path, "a header and no rounds"));
        }
        Ok(Run {
            path: path.to_owned(),
            header,
            rounds,
        })
    }
}

/// Line `number` of `path` as a `T`, `what` it should be.
fn parse<T: DeserializeOwned>(
    path: &Path,
    number: usize,
    line: &str,
    what: &str,
) -> Result<T, String> {
    serde_json::from_str(line).map_err(|e| at(path, number, format!("not {what}: {e}")))
}

/// Whether `round` holds every scenario of `header` once, and no other.
fn check_round(header: &Header, round: &Round) -> Result<(), String> {
    let mut seen = HashSet::new();
    for figures in &round.scenarios {
        if !header.scenarios.contains(&figures.name) {
            return Err(format!("scenario {:?} is not in the header", figures.name));
        }
        if !seen.insert(figures.name.as_str()) {
            return Err(format!("scenario {:?} twice", figures.name));
        }
    }
    match header
        .scenarios
        .iter()
        .find(|name| !seen.contains(name.as_str()))
    {
        Some(name) => Err(format!("round {} lacks scenario {name:?}", round.round)),
        None => Ok(()),
    }
}

/// The rounds of all `runs` in turn, once each run is of the first's
/// build and scenarios: rounds of different builds measure different
/// things. Runs of different lengths pool.
pub fn pool(runs: &[Run]) -> Result<Vec<Round>, String> {
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    let sorted = |header: &Header| {
        let mut names = header.scenarios.clone();
        names.sort();
        names
    };
    for run in &runs[1..] {
        let (ours, theirs) = (&run.header, &first.header);
        let message = if ours.build != theirs.build {
            format!(
                "build {}, but {} has build {}; pool only runs of one build",
                ours.build,
                first.path.display(),
                theirs.build
            )
        } else if sorted(ours) != sorted(theirs) {
            format!(
                "scenarios {:?}, but {} has {:?}; pool only runs of one set of scenarios",
                ours.scenarios,
                first.path.display(),
                theirs.scenarios
            )
        } else {
            continue;
        };
        return Err(at(&run.path, 1, message));
    }
    Ok(runs.iter().flat_map(|run| run.rounds.clone()).collect())
}

/// What a [`Comparison`] takes in every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `Rps(with, base)`: the requests per second of scenario `with` over
    /// those of `base`.
    Rps(&'static str, &'static str),
    /// `Cpu(with, base)`: the CPU µs per request of every process, the
    /// other way round: `base`'s over `with`'s, so that above 1 is better
    /// for `with` here too.
    Cpu(&'static str, &'static str),
    /// `Rss(of)`: the VmRSS after its run of memory-group scenario `of`,
    /// in MiB.
    Rss(&'static str),
}

/// What a comparison's median should reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At least this.
    AtLeast(f64),
    /// Less than this.
    Below(f64),
    /// None: a figure for context.
    Context,
}

/// A figure to take in every round, and its target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// What it is called where it is printed.
    pub what: &'static str,
    /// What it takes.
    pub measure: Measure,
    /// What its median should reach.
    pub target: Target,
}

impl Comparison {
    /// `what`: `measure`, whose median should reach `target`.
    pub const fn new(what: &'static str, measure: Measure, target: Target) -> Self {
        Comparison {
            what,
            measure,
            target,
        }
    }

    /// This comparison's value in `round`.
    pub fn of(&self, round: &Round) -> Result<f64, String> {
        let get = |name| {
            round
                .get(name)
                .ok_or_else(|| format!("round {} has no scenario {name:?}", round.round))
        };
        Ok(match self.measure {
            Measure::Rps(with, base) => get(with)?.rps / get(base)?.rps,
            Measure::Cpu(with, base) => get(base)?.cpu.all / get(with)?.cpu.all,
            Measure::Rss(of) => {
                let memory = get(of)?
                    .memory
                    .ok_or_else(|| format!("round {}: {of:?} has no memory", round.round))?;
                mib(memory.after)
            }
        })
    }
}

/// `bytes` in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A comparison's values over rounds, one a round.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// What it is called.
    pub what: &'static str,
    /// One a round.
    pub values: Vec<f64>,
    /// What the median should reach.
    pub target: Target,
}

impl fmt::Display for Ratio {
    /// Its median, its 95% interval and whether it meets its target.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let median = median(&self.values);
        let (low, high) = median_interval(&self.values);
        write!(
            f,
            "{} = {median:.3}, median of {} rounds; 95% interval [{low:.3}, {high:.3}]",
            self.what,
            self.values.len(),
        )?;
        let (target, by_median, by_interval) = match self.target {
            Target::AtLeast(t) => (format!(">= {t}"), median >= t, low >= t),
            Target::Below(t) => (format!("< {t}"), median < t, high < t),
            Target::Context => return write!(f, " (for context)"),
        };
        let verdict = match (by_median, by_interval) {
            (true, true) => "met, whole interval",
            (true, false) => "met by the median, not by the whole interval",
            _ => "MISSED",
        };
        write!(f, " (target {target}: {verdict})")
    }
}

/// Each of `comparisons` over `rounds` (at least one): what a live run
/// prints at its end, and the pooling of runs for each run and for all.
pub fn ratios(comparisons: &[Comparison], rounds: &[Round]) -> Result<Vec<Ratio>, String> {
    if rounds.is_empty() {
        return Err("no rounds to take ratios of".into());
    }
    comparisons
        .iter()
        .map(|c| {
            Ok(Ratio {
                what: c.what,
                values: rounds.iter().map(|r| c.of(r)).collect::<Result<_, _>>()?,
                target: c.target,
            })
        })
        .collect()
}

/// The median of `values` (not empty): the middle one, or the mean of the
/// middle two.
pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// A distribution-free 95% confidence interval of the median of `values`
/// (not empty): the order statistics whose ranks bound the binomial
/// (n, 1/2) count of values below the median, by the normal
/// approximation (`n/2 ∓ 1.96·√n/2`). It assumes nothing about the
/// shape of the noise, only that the rounds are independent; with few
/// values it is the whole range.
pub fn median_interval(values: &[f64]) -> (f64, f64) {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let half_width = 1.96 * n.sqrt() / 2.0;
    // 1-based ranks, clamped to the values there are.
    let low = ((n / 2.0 - half_width).ceil() as usize).clamp(1, values.len());
    let high = ((n / 2.0 + 1.0 + half_width).floor() as usize).clamp(1, values.len());
    (values[low - 1], values[high - 1])
}

/// The errors of every scenario in `rounds`.
pub fn errors(rounds: &[Round]) -> u64 {
    rounds
        .iter()
        .flat_map(|r| &r.scenarios)
        .map(|f| f.errors)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use authchain_testkit::ScratchDir;

    const NAMES: [&str; 3] = ["base", "with", "other"];

    const COMPARISONS: [Comparison; 3] = [
        Comparison::new(
            "with/base rps",
            Measure::Rps("with", "base"),
            Target::AtLeast(0.9),
        ),
        Comparison::new(
            "CPU base/with",
            Measure::Cpu("with", "base"),
            Target::Context,
        ),
        Comparison::new(
            "other's RSS, MiB",
            Measure::Rss("other"),
            Target::Below(1.0),
        ),
    ];

    fn header(build: &str) -> Header {
        Header {
            build: build.into(),
            seconds: 2,
            scenarios: NAMES.map(String::from).to_vec(),
        }
    }

    /// Round `n` with figures that differ from round to round and from
    /// scenario to scenario, and are not round numbers.
    fn round(n: usize) -> Round {
        let scenarios = (0..NAMES.len())
            .map(|i| {
                let x = (n * 7 + i * 3) as f64;
                Figures {
                    name: NAMES[i].into(),
                    rps: 1000.0 / 3.0 + x * 13.7,
                    cpu: Cpu {
                        all: 40.0 + x / 7.0,
                        server: 10.0 + x / 11.0,
                        proxy: 0.1 * x,
                    },
                    errors: (n + i) as u64 % 2,
                    memory: (i == 2).then_some(Memory {
                        start: 1000 + n as u64,
                        after: 3_000_000 + 17 * n as u64,
                        peak: 3_100_000,
                    }),
                }
            })
            .collect();
        Round {
            round: n,
            scenarios,
        }
    }

    fn write_run(dir: &ScratchDir, name: &str, build: &str, rounds: &[Round]) -> PathBuf {
        let path = dir.path().join(name);
        let mut writer = RoundsWriter::create(&path, &header(build)).unwrap();
        for r in rounds {
            writer.write(r).unwrap();
        }
        path
    }

    /// A file's lines: `header`'s, then `rounds`'.
    fn text(header: &Header, rounds: &[Round]) -> String {
        let mut lines = vec![serde_json::to_string(header).unwrap()];
        lines.extend(rounds.iter().map(|r| serde_json::to_string(r).unwrap()));
        lines.join("\n") + "\n"
    }

    #[test]
    fn round_trip_keeps_every_figure_unrounded() {
        let dir = ScratchDir::new("rounds").unwrap();
        let rounds: Vec<Round> = (1..=5).map(round).collect();
        let path = write_run(&dir, "a.jsonl", "abc", &rounds);
        let run = Run::read(&path).unwrap();
        assert_eq!(run.header, header("abc"));
        assert_eq!(run.rounds, rounds);
        assert_eq!(run.path, path);
    }

    #[test]
    fn writer_refuses_an_existing_file() {
        let dir = ScratchDir::new("rounds").unwrap();
        let path = write_run(&dir, "a.jsonl", "abc", &[round(1)]);
        let err = RoundsWriter::create(&path, &header("abc")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot create", path.display()))
        );
    }

    #[test]
    fn ratios_pair_with_against_base() {
        let r = round(1);
        let (base, with) = (r.get("base").unwrap(), r.get("with").unwrap());
        let ratios = ratios(&COMPARISONS, std::slice::from_ref(&r)).unwrap();
        let rss = mib(r.get("other").unwrap().memory.unwrap().after);
        assert_eq!(ratios[0].values, [with.rps / base.rps]);
        assert_eq!(ratios[1].values, [base.cpu.all / with.cpu.all]);
        assert_eq!(ratios[2].values, [rss]);
        let printed: Vec<String> = ratios.iter().map(Ratio::to_string).collect();
        assert_eq!(
            printed[0],
            format!(
                "with/base rps = {v:.3}, median of 1 rounds; 95% interval [{v:.3}, {v:.3}] \
                 (target >= 0.9: met, whole interval)",
                v = with.rps / base.rps
            )
        );
        assert!(printed[1].ends_with("] (for context)"), "{printed:?}");
        assert_eq!(
            printed[2],
            format!(
                "other's RSS, MiB = {rss:.3}, median of 1 rounds; 95% interval \
                 [{rss:.3}, {rss:.3}] (target < 1: MISSED)"
            )
        );
    }

    #[test]
    fn a_bound_is_met_by_the_interval_or_by_the_median_alone() {
        let ratio = |values: &[f64]| {
            let (what, target) = ("x", Target::Below(2.0));
            let values = values.to_vec();
            Ratio {
                what,
                values,
                target,
            }
            .to_string()
        };
        assert!(ratio(&[1.0, 1.5]).ends_with("met, whole interval)"));
        assert!(ratio(&[1.0, 1.5, 3.0]).ends_with("met by the median, not by the whole interval)"));
        assert!(ratio(&[2.0]).ends_with("MISSED)"));
    }

    #[test]
    fn pooled_ratios_are_the_ratios_of_the_concatenated_rounds() {
        let dir = ScratchDir::new("rounds").unwrap();
        let first: Vec<Round> = (1..=7).map(round).collect();
        let second: Vec<Round> = (8..=11).map(round).collect();
        let runs = [
            Run::read(&write_run(&dir, "a.jsonl", "abc", &first)).unwrap(),
            Run::read(&write_run(&dir, "b.jsonl", "abc", &second)).unwrap(),
        ];
        let pooled = pool(&runs).unwrap();
        let concatenated = [first, second].concat();
        assert_eq!(pooled, concatenated);
        let expected = ratios(&COMPARISONS, &concatenated).unwrap();
        assert_eq!(ratios(&COMPARISONS, &pooled).unwrap(), expected);
        assert_eq!(expected[0].values.len(), 11);
        let printed: Vec<String> = expected.iter().map(Ratio::to_string).collect();
        assert!(printed[0].contains("median of 11 rounds"), "{printed:?}");
    }

    #[test]
    fn pool_refuses_mixed_builds() {
        let dir = ScratchDir::new("rounds").unwrap();
        let a = Run::read(&write_run(&dir, "a.jsonl", "abc", &[round(1)])).unwrap();
        let b = Run::read(&write_run(&dir, "b.jsonl", "def", &[round(1)])).unwrap();
        let err = pool(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("b.jsonl:1: build def"), "{err}");
        assert!(err.contains("a.jsonl has build abc"), "{err}");
    }

    #[test]
    fn pool_refuses_mixed_scenario_sets() {
        let dir = ScratchDir::new("rounds").unwrap();
        let a = Run::read(&write_run(&dir, "a.jsonl", "abc", &[round(1)])).unwrap();
        let mut b = a.clone();
        b.path = dir.path().join("b.jsonl");
        b.header.scenarios.pop();
        let err = pool(&[a, b]).unwrap_err().to_string();
        assert!(
            err.contains("b.jsonl:1: scenarios [\"base\", \"with\"], but "),
            "{err}"
        );
        assert!(err.contains("one set of scenarios"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let dir = ScratchDir::new("rounds").unwrap();
        let path = dir.path().join("nowhere.jsonl");
        let err = Run::read(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: cannot read", path.display())),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_run_is_refused_with_its_name_and_line() {
        let dir = ScratchDir::new("rounds").unwrap();
        let head = header("abc");
        let renamed = |name: &str| {
            let mut odd = round(1);
            odd.scenarios[2].name = name.into();
            text(&head, &[odd])
        };
        let mut short = round(2);
        short.scenarios.remove(1);
        let cases = [
            (
                "a round cut short",
                text(&head, &[round(1)]) + "\n{\"round\": 2,\n",
                "run.jsonl:4: not a round: ",
            ),
            (
                "a round first",
                text(&head, &[round(1)])
                    .split_once('\n')
                    .unwrap()
                    .1
                    .to_owned(),
                "run.jsonl:1: not a header: ",
            ),
            (
                "a round lacks a scenario",
                text(&head, &[round(1), short]),
                "run.jsonl:3: round 2 lacks scenario \"with\"",
            ),
            (
                "an unknown scenario",
                renamed("stranger"),
                "run.jsonl:2: scenario \"stranger\" is not in the header",
            ),
            (
                "a scenario twice",
                renamed("base"),
                "run.jsonl:2: scenario \"base\" twice",
            ),
            (
                "empty",
                "\n".into(),
                "run.jsonl: empty, with no header line",
            ),
            (
                "a header alone",
                text(&head, &[]),
                "run.jsonl: a header and no rounds",
            ),
        ];
        for (case, text, refused) in cases {
            let path = dir.write("run.jsonl", &text).unwrap();
            let err = Run::read(&path).unwrap_err().to_string();
            assert!(err.contains(refused), "{case}: {err}");
        }
    }

    #[test]
    fn ratios_of_no_rounds_or_a_missing_scenario_are_errors() {
        assert!(ratios(&COMPARISONS, &[]).is_err());
        let mut r = round(3);
        r.scenarios.remove(0);
        assert_eq!(
            ratios(&COMPARISONS, &[r]).unwrap_err(),
            "round 3 has no scenario \"base\""
        );
    }

    #[test]
    fn errors_add_up_over_rounds() {
        let rounds: Vec<Round> = (1..=4).map(round).collect();
        let expected: u64 = rounds
            .iter()
            .map(|r| r.scenarios.iter().map(|f| f.errors).sum::<u64>())
            .sum();
        assert_eq!(errors(&rounds), expected);
        assert!(expected > 0);
    }
}
