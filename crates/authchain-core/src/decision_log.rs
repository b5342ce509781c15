//! Decision logs: one JSON object per decision, for the AuthConfigs that
//! ask for it (or all), sampled.
//!
//! An engine logs when it is given a [`DecisionLog`] (where the records
//! go, and whether every AuthConfig logs); an AuthConfig opts in with
//!
//! ```yaml
//! decisionLog:
//!   sample: 0.1              # the share of decisions logged (1: all, the default)
//!   headers: [x-request-id]  # request headers logged by value (none by default)
//! ```
//!
//! A record names its fields as OPA's decision logs do where they overlap
//! (`decision_id`, `timestamp`, `labels`, `input`, `result`, `metrics`,
//! `requested_by`):
//!
//! ```json
//! {"decision_id":"5d3c…-1f","timestamp":"2026-12-06T08:01:02.345Z",
//!  "labels":{"app":"authchain","version":"0.1.0"},
//!  "config":"gloo-system.ldap","generation":3,"transport":"grpc",
//!  "request_id":"…","requested_by":"10.0.0.7:51234",
//!  "input":{"method":"GET","path":"/echo","host":"app.example","headers":{"x-request-id":"…"}},
//!  "steps":[{"name":"config_0","result":"deny","status":403,"duration_ns":81234}],
//!  "result":{"allowed":false,"status":403},"cached":false,"user_id":null,
//!  "metrics":{"timer_authchain_decision_ns":93012}}
//! ```
//!
//! `input.path` is the canonical path without its query or a segment's
//! `;` parameters (`;jsessionid=`), and each header value is cut at its
//! first `?` (a URL's query, in `X-Forwarded-Uri` or `Referer`, may hold
//! a credential), one that is a URL or a path without its segments' `;`
//! parameters too; the path, the host, the request id
//! and each header value are cut at [`MAX_FIELD_LEN`] bytes, and at most
//! 8 values of a header are kept. `input.headers` are
//! the named headers as the client sent them; `x-auth`, and a header whose
//! name holds `authorization`, `authentication`, `authn`, `bearer`,
//! `cookie`, `key`, `token`, `secret`, `passw`, `session`, `signature`,
//! `credential` or `jwt`, cannot be named (`authorization`,
//! `x-api-key`), nor in a chain's own log a header one of its steps reads; a
//! header that a step of any chain of the generation reads (a credential
//! there, which a client may send on every route) is left out of every
//! chain's records, with a warning. A
//! shadow's runs have `transport: shadow`. A step's
//! `result` is `allow`, `deny` (with `status`), `error` (with `error`, the
//! step's error text, which never holds a secret) or
//! `failure_mode_allowed`; `result.error` is true when the answer is a
//! failure's deny, and `result.cause` the failing step's error. An answer
//! the chain did not run for (the decision cache's, remembered or shared
//! with a request that was running) has `cached: true` and no steps. Nothing else of the request is logged: no
//! credential, cookie, query, body or header the config does not name.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{AuthorizationRequest, Decision, Error};

/// Where decision records go: each is one JSON object, without a newline.
/// A sink must not block for long: it is called on the request's task,
/// after the answer.
pub trait DecisionSink: Send + Sync + 'static {
    /// Takes one record.
    fn write(&self, record: String);
}

impl<F: Fn(String) + Send + Sync + 'static> DecisionSink for F {
    fn write(&self, record: String) {
        self(record);
    }
}

/// An engine's decision log: the sink, and the sampling of the
/// AuthConfigs that do not say.
#[derive(Clone)]
pub struct DecisionLog {
    sink: Arc<dyn DecisionSink>,
    /// The sampling of the AuthConfigs that do not say, and its header
    /// names, checked.
    every_config: Option<(Sampling, Vec<HeaderName>)>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("every_config", &self.every_config)
            .finish_non_exhaustive()
    }
}

impl DecisionLog {
    /// Records go to `sink`; only the AuthConfigs with a `decisionLog`
    /// log.
    pub fn new(sink: impl DecisionSink) -> Self {
        DecisionLog {
            sink: Arc::new(sink),
            every_config: None,
        }
    }

    /// Every AuthConfig logs as `sampling` says, unless its own
    /// `decisionLog` says otherwise.
    ///
    /// # Errors
    ///
    /// A share outside 0 to 1 or a header name that is none, placed under
    /// `sample` or `headers[i]`.
    pub fn every_config(mut self, sampling: Sampling) -> Result<Self, Error> {
        let headers = sampling.check()?;
        self.every_config = Some((sampling, headers));
        Ok(self)
    }
}

/// How an AuthConfig's decisions are logged (`decisionLog`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Sampling {
    /// The share of decisions logged, from 0 to 1 (1).
    #[serde(default = "one")]
    pub sample: f64,
    /// Request headers logged by value.
    #[serde(default)]
    pub headers: Vec<String>,
}

fn one() -> f64 {
    1.0
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            sample: 1.0,
            headers: Vec::new(),
        }
    }
}

impl Sampling {
    /// Logs this share of decisions (from 0 to 1).
    pub fn sample(mut self, share: f64) -> Self {
        self.sample = share;
        self
    }

    /// Logs this request header by value.
    pub fn header(mut self, name: impl Into<String>) -> Self {
        self.headers.push(name.into());
        self
    }

    /// Checks the share and the header names, as an engine does; errors
    /// are placed under the block (`sample`, `headers[1]`).
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map(drop)
    }

    /// [`validate`](Self::validate), giving the header names.
    pub(crate) fn check(&self) -> Result<Vec<HeaderName>, Error> {
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(Error::config("expected a share from 0 to 1").at("sample"));
        }
        self.headers
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let at = format!("headers[{i}]");
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|_| Error::config("not a valid header name").at(&at))?;
                if carries_credentials(&name) {
                    return Err(Error::config(
                        "a header whose name says it carries credentials is never logged",
                    )
                    .at(&at));
                }
                Ok(name)
            })
            .collect()
    }
}

/// Whether `name` says its header carries credentials (`authorization`,
/// `cookie`, `x-api-key`, `x-auth-token`, ...): never loggable, whatever
/// the steps say they read (a passthrough or a policy may read any). An
/// identity a proxy sends on (`x-auth-request-user`) is no credential.
fn carries_credentials(name: &HeaderName) -> bool {
    const PARTS: [&str; 13] = [
        "authorization",
        "authentication",
        "authn",
        "bearer",
        "cookie",
        "key",
        "token",
        "secret",
        "passw",
        "session",
        "signature",
        "credential",
        "jwt",
    ];
    name.as_str() == "x-auth" || PARTS.iter().any(|part| name.as_str().contains(part))
}

/// The longest text of a logged field (path, host, request id, header
/// value); a longer one is cut and ends with `…`.
pub const MAX_FIELD_LEN: usize = 1024;

/// The most values of one logged header.
const MAX_HEADER_VALUES: usize = 8;

/// `path` as a log shows it: without its query, nor a segment's `;`
/// parameters (`/app;jsessionid=...`, kept with `allowAmbiguousPaths`),
/// either of which may hold a credential. A URL (`https://host/path`)
/// is cut so too.
pub(crate) fn logged_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    if !path.contains(';') {
        return path.to_owned();
    }
    let segments = path
        .split('/')
        .map(|s| s.split(';').next().unwrap_or_default());
    segments.collect::<Vec<_>>().join("/")
}

/// `text`, cut to [`MAX_FIELD_LEN`] bytes (at a character boundary).
fn capped(text: &str) -> String {
    if text.len() <= MAX_FIELD_LEN {
        return text.to_owned();
    }
    let mut end = MAX_FIELD_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How the check came: the adapter that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// `Chain::authorize` called in code.
    #[default]
    InProcess,
    /// Envoy's ext_authz over gRPC.
    Grpc,
    /// The HTTP check server (Envoy's HTTP service, nginx, Traefik, Caddy).
    Http,
    /// The tower layer.
    Layer,
    /// A shadow run ([`crate::shadow`]): not an answer anyone got.
    Shadow,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::InProcess => "in_process",
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::Layer => "layer",
            Transport::Shadow => "shadow",
        }
    }
}

/// One chain's log: its sink, its sampling, its generation.
pub(crate) struct ChainLog {
    sink: Arc<dyn DecisionSink>,
    /// A decision is logged when a hash of its number is below this.
    threshold: u64,
    headers: Vec<HeaderName>,
    generation: u64,
}

/// The process's own prefix of decision ids, and the hasher of sampling.
static IDS: std::sync::LazyLock<(u64, std::collections::hash_map::RandomState)> =
    std::sync::LazyLock::new(|| {
        let state = std::collections::hash_map::RandomState::new();
        let mut hasher = state.build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        (hasher.finish(), state)
    });

/// Decisions counted, for their ids.
static DECISIONS: AtomicU64 = AtomicU64::new(0);

impl ChainLog {
    /// The log of a chain with its own `sampling` (else `log`'s), in
    /// generation `generation`; `None` when it does not log.
    pub(crate) fn new(
        log: &DecisionLog,
        own: Option<(&Sampling, &[HeaderName])>,
        generation: u64,
    ) -> Option<ChainLog> {
        let (sample, headers) = match own {
            Some((sampling, headers)) => (sampling.sample, headers.to_vec()),
            None => {
                let (sampling, headers) = log.every_config.as_ref()?;
                (sampling.sample, headers.clone())
            }
        };
        if sample <= 0.0 {
            return None;
        }
        // u64::MAX as f64 rounds up: a share of 1 is every decision.
        let threshold = if sample >= 1.0 {
            u64::MAX
        } else {
            (sample * u64::MAX as f64) as u64
        };
        Some(ChainLog {
            sink: log.sink.clone(),
            threshold,
            headers,
            generation,
        })
    }

    /// The headers it logs.
    pub(crate) fn named_headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// Keeps the logged headers `keep` says.
    pub(crate) fn retain_headers(&mut self, keep: impl Fn(&HeaderName) -> bool) {
        self.headers.retain(|h| keep(h));
    }

    /// Whether this decision is logged; its number when it is.
    pub(crate) fn sampled(&self) -> Option<u64> {
        let number = DECISIONS.fetch_add(1, Ordering::Relaxed);
        if self.threshold == u64::MAX {
            return Some(number);
        }
        let mut hasher = IDS.1.build_hasher();
        hasher.write_u64(number);
        (hasher.finish() < self.threshold).then_some(number)
    }

    /// The named headers of `request`, as a record holds them.
    pub(crate) fn headers(&self, request: &AuthorizationRequest) -> Map<String, Value> {
        let mut headers = Map::new();
        for name in &self.headers {
            let mut values: Vec<Value> = request
                .headers
                .get_all(name)
                .iter()
                .take(MAX_HEADER_VALUES)
                .map(|v| {
                    // A URL's query may hold a credential (`X-Forwarded-Uri`,
                    // `Referer`: `?access_token=`, a login's `code`), and so
                    // may its path's parameters (`;jsessionid=`).
                    let text = String::from_utf8_lossy(v.as_bytes());
                    let text = text.split('?').next().unwrap_or_default();
                    let url = text.starts_with('/') || text.contains("://");
                    Value::String(capped(&match url {
                        true => logged_path(text),
                        false => text.to_owned(),
                    }))
                })
                .collect();
            match values.len() {
                0 => {}
                1 => {
                    headers.insert(name.as_str().to_owned(), values.remove(0));
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::Array(values));
                }
            }
        }
        headers
    }

    /// Writes the record of one decision.
    pub(crate) fn write(&self, entry: Entry<'_>) {
        let request = entry.request;
        let path = capped(&logged_path(&request.path));
        let steps: Vec<Value> = entry
            .trace
            .iter()
            .flat_map(|t| &t.steps)
            .map(|s| {
                let mut step = json!({
                    "name": entry.step_names.get(s.index).copied().unwrap_or_default(),
                    "result": s.result,
                    "duration_ns": s.nanos,
                });
                if let Some(status) = s.status {
                    step["status"] = json!(status);
                }
                if let Some(error) = &s.error {
                    step["error"] = json!(error);
                }
                step
            })
            .collect();
        let (allowed, status, user) = match entry.decision {
            Decision::Allow(allow) => (
                true,
                200,
                allow.user_info.as_ref().map(|u| u.user_id.as_str()),
            ),
            Decision::Deny(deny) => (false, deny.status.as_u16(), None),
        };
        let failed = entry.trace.is_some_and(|t| t.failed);
        let mut result = json!({ "allowed": allowed, "status": status });
        if failed && !allowed {
            result["error"] = json!(true);
            let late = entry.trace.and_then(|t| t.late.as_deref());
            let cause = late.or_else(|| {
                entry
                    .trace
                    .iter()
                    .flat_map(|t| t.steps.iter().rev())
                    .find_map(|s| {
                        (s.result == "error")
                            .then_some(s.error.as_deref())
                            .flatten()
                    })
            });
            if let Some(cause) = cause {
                result["cause"] = json!(cause);
            }
        }
        let source = match request.source.address {
            Some(address) => Value::String(address.to_string()),
            None => Value::Null,
        };
        let record = json!({
            "decision_id": format!("{:016x}-{:x}", IDS.0, entry.number),
            "timestamp": rfc3339(entry.at),
            "labels": { "app": "authchain", "version": env!("CARGO_PKG_VERSION") },
            "config": entry.config,
            "generation": self.generation,
            "transport": entry.transport.as_str(),
            "request_id": if request.id.is_empty() { Value::Null } else { json!(capped(&request.id)) },
            "requested_by": source,
            "input": {
                "method": request.method.as_str(),
                "path": path,
                "host": capped(&request.host),
                "headers": entry.headers,
            },
            "steps": steps,
            "result": result,
            "cached": !entry.trace.is_some_and(|t| t.ran || t.refused),
            "user_id": user,
            "metrics": { "timer_authchain_decision_ns": entry.started.elapsed().as_nanos() as u64 },
        });
        self.sink.write(record.to_string());
    }
}

/// What a logged decision is written from.
pub(crate) struct Entry<'a> {
    pub(crate) number: u64,
    pub(crate) at: SystemTime,
    pub(crate) started: Instant,
    pub(crate) config: &'a str,
    pub(crate) transport: Transport,
    pub(crate) request: &'a AuthorizationRequest,
    /// The named headers, taken before the chain ran.
    pub(crate) headers: Map<String, Value>,
    pub(crate) decision: &'a Decision,
    pub(crate) trace: Option<&'a Trace>,
    pub(crate) step_names: &'a [&'a str],
}

/// The steps of one logged run, as they ran.
#[derive(Debug, Default, Clone)]
pub(crate) struct Trace {
    /// Whether the chain ran (else the cache answered, or the path was
    /// refused).
    pub(crate) ran: bool,
    /// Whether a step failed.
    pub(crate) failed: bool,
    /// Whether the path was refused before any step.
    pub(crate) refused: bool,
    pub(crate) steps: Vec<StepRecord>,
    /// Why an allowing run failed after its steps (its allow came past
    /// the deadline).
    pub(crate) late: Option<String>,
}

/// One step of a logged run.
#[derive(Debug, Clone)]
pub(crate) struct StepRecord {
    pub(crate) index: usize,
    pub(crate) result: &'static str,
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) nanos: u64,
}

/// `at` as RFC 3339 in UTC with milliseconds.
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, "2000-02-29T00:00:00.000Z"),
            (1_796_545_262, "2026-12-06T08:21:02.000Z"),
        ] {
            assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), text);
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_500)),
            "1970-01-01T00:00:01.500Z"
        );
    }

    #[test]
    fn a_share_samples_about_that_share() {
        let log = DecisionLog::new(|_: String| {});
        let chain = ChainLog::new(&log, Some((&Sampling::default().sample(0.25), &[])), 1).unwrap();
        let logged = (0..20_000).filter(|_| chain.sampled().is_some()).count();
        assert!((4_000..6_000).contains(&logged), "{logged}");
        let none = ChainLog::new(&log, Some((&Sampling::default().sample(0.0), &[])), 1);
        assert!(none.is_none());
        let all = ChainLog::new(&log, Some((&Sampling::default(), &[])), 1).unwrap();
        assert!((0..1_000).all(|_| all.sampled().is_some()));
        assert!(
            ChainLog::new(&log, None, 1).is_none(),
            "no opt-in, no every_config"
        );
    }
}
