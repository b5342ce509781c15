//! The chain executor.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, StatusCode};
use metrics::{Counter, Histogram};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::cache::{Attribute, CacheSettings, DecisionCache};
use crate::decision_log::{ChainLog, DecisionLog, Entry, Sampling, StepRecord, Trace, Transport};
use crate::expr::{self, Next, Op};
use crate::merge::{add_removals, merge, same_folded, spellings, strip_headers};
use crate::path::{self, AmbiguousPaths};
use crate::shadow::{Answered, Shadow};
use crate::{
    Allow, Answer, AuthService, AuthorizationRequest, Decision, Deny, Error, Lifecycle,
    MAX_DURATION,
};

/// The header that marks a request let through because a step failed open,
/// as Envoy marks one let through by its own `failure_mode_allow`.
pub const FAILURE_MODE_ALLOWED_HEADER: HeaderName =
    HeaderName::from_static("x-envoy-auth-failure-mode-allowed");

/// Whether `name` is [`FAILURE_MODE_ALLOWED_HEADER`] in any case, or in a
/// spelling an app folds to it (`x_envoy_auth_failure_mode_allowed`): that
/// mark is the chain's alone, and no step's answer sets it.
pub fn is_failure_mark(name: &str) -> bool {
    same_folded(name, FAILURE_MODE_ALLOWED_HEADER.as_str())
}

/// The chain deadline when a config sets none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The most steps a `booleanExpr` can combine.
pub const MAX_EXPR_STEPS: usize = 64;

/// A built AuthConfig: steps run in order over a request, and the answer.
///
/// The rules, as DESIGN.md states them:
///
/// 1. Steps run in order; the first deny stops the chain and is the answer.
/// 2. Allow mutations accumulate: each step sees the request as mutated by
///    the steps before it, and the final allow carries the merged
///    mutations (see below).
/// 3. [`state`](AuthorizationRequest::state) written by a step is visible
///    to every later step.
/// 4. With a `booleanExpr`, named steps combine with `&&`, `||`, `!` and
///    parentheses (a mix of `&&` and `||` needs them, since Gloo's docs
///    read left to right where precedence reads `&&` first),
///    short-circuiting: steps not needed are not run. Only the
///    branches that decided contribute: what the steps of an operand that
///    turned out false wrote (header and query changes, state, the user)
///    is undone, as in `(key && opa) || public` with `opa` denying, and a
///    step named again after such an operand runs again. The answer is the
///    allow of the steps that remain, or the deny of the last step that
///    denied (403 when the expression is false and no step denied, as in
///    `!a` with `a` allowing).
/// 5. A step error (a panic in a step included) fails closed: a deny
///    with `statusOnError` (403 by default), counted and logged, even
///    inside a `booleanExpr`. A step with `failureModeAllow` passes
///    instead, counted, and the request is marked with
///    `x-envoy-auth-failure-mode-allowed: true`; not when it panicked,
///    since it checked nothing (a client that can make it panic would
///    have a way in), nor when it turned the request away at a limit of
///    its own ([`Error::overloaded`]), nor when the chain's deadline or
///    the caller's passed (rule 6: its own `timeout` is what it rides
///    out).
/// 6. Every step has a timeout and the chain a deadline (no later than
///    the caller's [`AnswerBy`](crate::transport::AnswerBy)); overrunning
///    either is an error (rule 5), never an allow.
/// 7. Identity headers the steps declare, and those the config lists in
///    `stripClientHeaders`, are removed from the client's request before
///    the first step and on the way upstream, unless listed in
///    `trustClientHeaders`. They are removed in every spelling an upstream
///    may fold into the same name (`x_user_id` for `x-user-id`, as WSGI,
///    PHP and Rack do, and `x.user.id`, as PHP does): the final allow
///    lists every such spelling in `headers_to_remove` (for a long name,
///    some, and any the client sent), but for the one a step sets, whose
///    value replaces the client's (a proxy removes after it sets).
/// 8. Steps see one canonical path ([`crate::path`]): unreserved
///    characters percent-decoded, slashes merged. A path whose meaning
///    differs between servers (a `.` or `..` segment, which a router
///    matching the raw path reads as text; an encoded `/`, `\` or control
///    byte) is denied with 400 before any step runs, unless the config
///    allows ambiguous paths (then dot segments are resolved). So is a
///    request whose method servers read differently: a standard method in
///    another case (`delete`), or another method named in
///    `X-HTTP-Method-Override`, `X-HTTP-Method` or `X-Method-Override`;
///    and one whose `X-Forwarded-Host` or `Forwarded` names another host.
/// 9. A deny is never a success: a deny whose status is not a redirect
///    (301, 302, 303, 307, 308), 4xx or 5xx (a remote's 204 or 304, say)
///    is answered with 403, counted in
///    `authchain_deny_status_replaced_total` and logged.
/// 10. A step that cannot start (its key server is down) does not keep
///     the rest from serving: it fails every request closed, with
///     `statusOnError` whatever its `failureModeAllow`, and tries to start
///     again, waiting 1 s, then twice as long each time up to 30 s,
///     until it starts or its generation ends. Steps start side by side,
///     and a try that takes over 30 s counts as failed. [`waiting`](Chain::waiting)
///     says which steps wait and why.
///
/// The merge of header mutations keeps, per header name, either one
/// `OverwriteIfExistsOrAdd` (first) followed by appends, or only adding
/// entries (`AppendIfExistsOrAdd`, `AddIfAbsent`), or a removal: what the
/// upstream must see whatever order a proxy applies sets and appends in.
/// `OverwriteIfExists` and `AddIfAbsent` are resolved against the request
/// as the chain sees it; a proxy that did not forward a header to the auth
/// server keeps it out of the chain's view. A [decision cache](crate::cache)
/// whose key does not hold that header never keeps such an allow.
pub struct Chain {
    name: Arc<str>,
    steps: Vec<Step>,
    program: Option<Vec<Op>>,
    status_on_error: StatusCode,
    deadline: Duration,
    strip: Vec<HeaderName>,
    /// Every spelling of every stripped header, and every other spelling
    /// of every header a step reads, for the allow's removals.
    removals: Vec<HeaderName>,
    ambiguous_paths: AmbiguousPaths,
    /// Where an allow names its user upstream (Gloo's `userIdHeader`).
    user_id_header: Option<HeaderName>,
    metrics: ChainMetrics,
    cache: Option<DecisionCache>,
    /// The config's own `decisionLog`, checked.
    log_sampling: Option<(Sampling, Vec<HeaderName>)>,
    /// Where its decisions are logged, once its generation says.
    log: Option<ChainLog>,
    /// The AuthConfig named as its shadow and where, and (once its
    /// generation is built) that shadow.
    shadow_name: Option<(String, String)>,
    shadow: Option<Arc<Shadow>>,
}

struct Step {
    name: String,
    service: Arc<dyn AuthService>,
    timeout: Option<Duration>,
    failure_mode_allow: bool,
    metrics: StepMetrics,
    readiness: Arc<Readiness>,
}

/// Whether a step has started; while it has not, the cause, and the step
/// fails every request (rule 10).
#[derive(Default)]
struct Readiness {
    waiting: AtomicBool,
    cause: std::sync::Mutex<String>,
}

impl Readiness {
    fn wait(&self, cause: String) {
        *self.cause.lock().unwrap_or_else(|e| e.into_inner()) = cause;
        self.waiting.store(true, Ordering::Release);
    }

    fn ready(&self) {
        self.waiting.store(false, Ordering::Release);
    }

    /// What the step waits for, unless it has started.
    fn waiting(&self) -> Option<String> {
        if !self.waiting.load(Ordering::Acquire) {
            return None;
        }
        Some(self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The first wait before a step that could not start tries again; each
/// failure doubles it, up to [`START_RETRY_MAX`].
const START_RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two tries to start a step.
const START_RETRY_MAX: Duration = Duration::from_secs(30);

/// The longest one try to start a step may take: a key server that does
/// not answer holds up no generation longer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `service`'s start, or an error once it has taken [`START_TIMEOUT`].
async fn start_within(service: &Arc<dyn AuthService>, lifecycle: &Lifecycle) -> Result<(), Error> {
    tokio::time::timeout(START_TIMEOUT, service.start(lifecycle.clone()))
        .await
        .unwrap_or_else(|_| {
            Err(Error::start(format!(
                "did not start within {} s",
                START_TIMEOUT.as_secs()
            )))
        })
}

impl Step {
    /// The span a step runs in.
    fn span(&self) -> tracing::Span {
        tracing::debug_span!("authchain.step", step = %self.name)
    }
}

struct StepMetrics {
    ok: Counter,
    denied: Counter,
    error: Counter,
    failure_mode_allowed: Counter,
}

struct ChainMetrics {
    ok: Counter,
    denied: Counter,
    error: Counter,
    deny_status_replaced: Counter,
    duration: Histogram,
}

impl StepMetrics {
    fn register(config: &str, step: &str) -> Self {
        let counter = |result: &'static str| {
            metrics::counter!(
                "authchain_step_decisions_total",
                "config" => config.to_owned(),
                "step" => step.to_owned(),
                "result" => result
            )
        };
        StepMetrics {
            ok: counter("ok"),
            denied: counter("denied"),
            error: counter("error"),
            failure_mode_allowed: counter("failure_mode_allowed"),
        }
    }
}

impl ChainMetrics {
    fn register(config: &str) -> Self {
        let counter = |result: &'static str| {
            metrics::counter!(
                "authchain_chain_decisions_total",
                "config" => config.to_owned(),
                "result" => result
            )
        };
        ChainMetrics {
            ok: counter("ok"),
            denied: counter("denied"),
            error: counter("error"),
            deny_status_replaced: metrics::counter!(
                "authchain_deny_status_replaced_total",
                "config" => config.to_owned()
            ),
            duration: metrics::histogram!(
                "authchain_chain_duration_seconds",
                "config" => config.to_owned()
            ),
        }
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("name", &self.name)
            .field("steps", &self.step_names().collect::<Vec<_>>())
            .field("boolean_expr", &self.program.is_some())
            .field("status_on_error", &self.status_on_error)
            .field("deadline", &self.deadline)
            .field("strip", &self.strip)
            .field("cache", &self.cache)
            .finish()
    }
}

/// How a chain run ended, before errors become denies. An allow is the
/// run's accumulated allow, moved out of the run when it concludes.
enum Ended {
    Allowed,
    Denied(Deny),
    Failed,
}

/// What one step gave, after timeouts and fail-open are applied. An allow
/// is already merged into the run's accumulated allow.
enum StepResult {
    Allowed,
    Denied(Deny),
    Failed,
}

impl Chain {
    /// Starts building a chain named `name` in code (configs build theirs
    /// from the document, see [`Generation`](crate::Generation)).
    pub fn builder(name: impl Into<String>) -> ChainBuilder {
        ChainBuilder {
            name: name.into(),
            steps: Vec::new(),
            boolean_expr: None,
            status_on_error: StatusCode::FORBIDDEN,
            deadline: DEFAULT_DEADLINE,
            strip: Vec::new(),
            trust: Vec::new(),
            ambiguous_paths: AmbiguousPaths::Reject,
            user_id_header: None,
            cache: None,
            decision_log: None,
            shadow: None,
        }
    }

    /// The AuthConfig's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The AuthConfig's name, shared.
    pub fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    /// The steps' names, in order.
    pub fn step_names(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.name.as_str())
    }

    /// The status of the deny a failing step causes (`statusOnError`);
    /// adapters use it too when a decision cannot be carried by their
    /// transport.
    pub fn status_on_error(&self) -> StatusCode {
        self.status_on_error
    }

    /// The client headers the chain strips (rule 7): an adapter whose proxy
    /// cannot remove headers should say so to its user.
    pub fn stripped_headers(&self) -> &[HeaderName] {
        &self.strip
    }

    /// Starts every step's service with `lifecycle`, side by side. A step
    /// that cannot start (or has not within 30 s) waits, and tries again
    /// in the background until it starts or the lifecycle ends (rule 10).
    pub async fn start(&self, lifecycle: &Lifecycle) {
        futures::future::join_all(
            self.steps
                .iter()
                .map(|step| self.start_step(step, lifecycle)),
        )
        .await;
    }

    /// Starts `step`, or has it wait and try again (rule 10).
    async fn start_step(&self, step: &Step, lifecycle: &Lifecycle) {
        let Err(e) = start_within(&step.service, lifecycle).await else {
            return;
        };
        let cause = e.to_string();
        tracing::warn!(
            config = %self.name, step = %step.name, error = %cause,
            "a step cannot start; it fails every request until it starts, trying again"
        );
        step.readiness.wait(cause);
        // Weak: a chain dropped while its step waits ends the retries.
        let (service, readiness) = (step.service.clone(), Arc::downgrade(&step.readiness));
        let (config, name) = (self.name.clone(), step.name.clone());
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move {
            let mut delay = START_RETRY_FIRST;
            loop {
                tokio::select! {
                    () = lifecycle.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                let started = tokio::select! {
                    () = lifecycle.cancelled() => return,
                    started = start_within(&service, &lifecycle) => started,
                };
                let Some(readiness) = readiness.upgrade() else {
                    return;
                };
                match started {
                    Ok(()) => {
                        readiness.ready();
                        tracing::info!(config = %config, step = %name, "the step started");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(config = %config, step = %name, error = %e, "the step still cannot start");
                        readiness.wait(e.to_string());
                        delay = (delay * 2).min(START_RETRY_MAX);
                    }
                }
            }
        });
    }

    /// The steps that have not started (rule 10), each with why.
    pub fn waiting(&self) -> Vec<(&str, String)> {
        self.steps
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.readiness.waiting()?)))
            .collect()
    }

    /// The number of answers in the chain's decision cache (0 without
    /// one), expired answers not yet evicted included.
    pub fn cached_entries(&self) -> u64 {
        self.cache.as_ref().map_or(0, DecisionCache::entry_count)
    }

    /// Runs the chain over `request` and answers, by the rules above.
    /// Never fails: errors are denies with the chain's `statusOnError`
    /// (rule 5). The request comes back as the upstream should see it
    /// (the allow's header and query changes applied), with the final
    /// `state`; the allow also lists those changes, for a proxy that
    /// forwards the original request.
    ///
    /// With a [decision cache](crate::cache), a remembered answer is
    /// replayed instead: the same decision, state and header changes.
    pub async fn authorize(&self, request: &mut AuthorizationRequest) -> Decision {
        self.answer(request, false, Transport::InProcess).await
    }

    /// Logs the chain's decisions to `log`, as its own `decisionLog` or
    /// else `log`'s sampling says, as those of generation `generation`.
    pub(crate) fn attach_log(&mut self, log: &DecisionLog, generation: u64) {
        let own = self.log_sampling.as_ref().map(|(s, h)| (s, h.as_slice()));
        self.log = ChainLog::new(log, own, generation);
    }

    /// The headers its log names.
    pub(crate) fn logged_headers(&self) -> &[HeaderName] {
        self.log.as_ref().map_or(&[], ChainLog::named_headers)
    }

    /// Its log leaves out `headers`.
    pub(crate) fn unlog(&mut self, headers: &[HeaderName]) {
        if let Some(log) = &mut self.log {
            log.retain_headers(|h| !headers.contains(h));
        }
    }

    /// The name of a step of it that reads `header`, if one says it does.
    pub(crate) fn reader_of(&self, header: &HeaderName) -> Option<&str> {
        reader(
            self.steps.iter().map(|s| (s.name.as_str(), &s.service)),
            header,
        )
    }

    /// Whether its config asks for a decision log.
    pub(crate) fn wants_log(&self) -> bool {
        self.log_sampling.is_some()
    }

    /// The AuthConfig named as this one's shadow.
    pub(crate) fn shadow_name(&self) -> Option<&str> {
        self.shadow_name.as_ref().map(|(name, _)| name.as_str())
    }

    /// Where its config names its shadow (`shadow`, or a passthrough's
    /// `mirror`).
    pub(crate) fn shadow_place(&self) -> &str {
        self.shadow_name
            .as_ref()
            .map_or("shadow", |(_, place)| place)
    }

    /// Runs each request through `shadow` too.
    pub(crate) fn attach_shadow(&mut self, shadow: Arc<Chain>) {
        self.shadow = Some(Arc::new(Shadow::new(&self.name, shadow)));
    }

    /// [`answer`](Self::answer), with the decision's record when it is
    /// sampled (`logged`: its number), and the request run through the
    /// shadow after.
    async fn answer_observed(
        &self,
        request: &mut AuthorizationRequest,
        forwarded: bool,
        transport: Transport,
        logged: Option<u64>,
    ) -> Decision {
        // The request as the client sent it, before the chain changes it;
        // a place for its run is taken once the answer is made.
        let copy = self.shadow.as_ref().map(|_| request.clone());
        let decision = match (&self.log, logged) {
            (Some(log), Some(number)) => {
                self.answer_logged(log, number, request, forwarded, transport)
                    .await
            }
            _ => self.answer_unlogged(request, forwarded).await,
        };
        if let (Some(shadow), Some(copy)) = (&self.shadow, copy) {
            shadow.run(self.name.clone(), copy, Answered::of(&decision));
        }
        decision
    }

    /// [`answer`](Self::answer), and decision `number`'s record.
    async fn answer_logged(
        &self,
        log: &ChainLog,
        number: u64,
        request: &mut AuthorizationRequest,
        forwarded: bool,
        transport: Transport,
    ) -> Decision {
        let (at, started) = (SystemTime::now(), std::time::Instant::now());
        // The named headers as the client sent them, before a step sets one.
        let headers = log.headers(request);
        request.extensions.insert(Trace::default());
        let decision = self.answer_unlogged(request, forwarded).await;
        let trace = request.extensions.remove::<Trace>();
        let names: Vec<&str> = self.step_names().collect();
        log.write(Entry {
            number,
            at,
            started,
            config: &self.name,
            transport,
            request,
            headers,
            decision: &decision,
            trace: trace.as_ref(),
            step_names: &names,
        });
        decision
    }

    /// The answer: the path refused, the cache's (a remembered answer is
    /// replayed whole), or a run; `forwarded` as for
    /// [`authorize_uncached`](Self::authorize_uncached).
    pub(crate) async fn answer(
        &self,
        request: &mut AuthorizationRequest,
        forwarded: bool,
        transport: Transport,
    ) -> Decision {
        let logged = self.log.as_ref().and_then(ChainLog::sampled);
        if logged.is_none() && self.shadow.is_none() {
            return self.answer_unlogged(request, forwarded).await;
        }
        Box::pin(self.answer_observed(request, forwarded, transport, logged)).await
    }

    async fn answer_unlogged(
        &self,
        request: &mut AuthorizationRequest,
        forwarded: bool,
    ) -> Decision {
        if let Some(deny) = self.refuse_ambiguous(request) {
            self.metrics.denied.increment(1);
            if self.log.is_some()
                && let Some(trace) = request.extensions.get_mut::<Trace>()
            {
                trace.refused = true;
            }
            return Decision::Deny(deny);
        }
        // A shadow run neither reads nor fills the cache: its answers go
        // nowhere, and a shadow that also serves would give them out.
        let cache = self
            .cache
            .as_ref()
            .filter(|_| !crate::shadow::is_shadow_run(request));
        let Some(cache) = cache else {
            return self.authorize_uncached(request, forwarded).await.0;
        };
        // Before the cache: a remembered answer is replayed onto this
        // request, which must not keep the client's copies.
        let unlisted = self.strip(request);
        let mut decision = cache.authorize(self, request).await;
        // A remembered allow lists what its first request carried.
        if let Decision::Allow(allow) = &mut decision {
            add_removals(&mut allow.headers_to_remove, unlisted);
        }
        decision
    }

    /// The chain's answer without its cache, and what it says of other
    /// requests with the cache's key. `forwarded`: the allow need not list
    /// the request's changes.
    pub(crate) async fn authorize_uncached(
        &self,
        request: &mut AuthorizationRequest,
        forwarded: bool,
    ) -> (Decision, Reuse) {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let caller = crate::transport::AnswerBy::of(request).filter(|by| *by < deadline);
        let mut run = Run {
            forwarded,
            acc: Allow::default(),
            deadline: caller.unwrap_or(deadline),
            caller_deadline: caller.is_some(),
            timer: None,
            cursor: self.cursor(),
            failed: false,
            unkeyed: false,
            trace: match &self.log {
                None => None,
                Some(_) => request.extensions.remove::<Trace>().map(Box::new),
            },
            step_started: None,
        };
        self.begin(&mut run, request);
        let span = tracing::debug_span!("authchain.chain", config = %self.name);
        let ended = match self.run(&mut run, request).instrument(span).await {
            // A step's own work (a policy's evaluation, a plugin's first
            // poll) may take the run past its deadline before any timer
            // runs: an allow then is late (a deny stands), whatever the
            // steps' failureModeAllow.
            Ended::Allowed if Instant::now() > run.deadline => {
                run.failed = true;
                let late = self.late(&run);
                tracing::warn!(config = %self.name, error = %late, "the allow came too late; denying");
                if let Some(trace) = &mut run.trace {
                    trace.late = Some(late.to_string());
                }
                Ended::Failed
            }
            Ended::Allowed => self.name_user(&mut run, request),
            ended => ended,
        };
        let failed = run.failed || matches!(ended, Ended::Failed);
        let unkeyed = run.unkeyed && matches!(ended, Ended::Allowed);
        if let Some(mut trace) = run.trace.take() {
            trace.ran = true;
            trace.failed = matches!(ended, Ended::Failed);
            request.extensions.insert(*trace);
        }
        let decision = match self.conclude(started, ended) {
            None => Decision::Allow(run.acc),
            Some(deny) => Decision::Deny(deny),
        };
        let reuse = if unkeyed {
            Reuse::Alone
        } else if failed {
            Reuse::Share
        } else {
            Reuse::Remember
        };
        (decision, reuse)
    }

    /// An allowed run's user, named upstream in the `user_id_header` as a
    /// step's header change would be; a user id that cannot be a header
    /// value fails the run, as does one with spaces or tabs around it (the
    /// app's HTTP parser strips them: it would read another user).
    fn name_user(&self, run: &mut Run, request: &mut AuthorizationRequest) -> Ended {
        let (Some(header), Some(user)) = (&self.user_id_header, &run.acc.user_info) else {
            return Ended::Allowed;
        };
        let id = user.user_id.as_str();
        let value = HeaderValue::try_from(id)
            .ok()
            .filter(|_| id.trim_matches([' ', '\t']) == id);
        let Some(value) = value else {
            tracing::warn!(
                config = %self.name, header = %header,
                "the allowed user's id cannot be a header value; denying"
            );
            run.failed = true;
            return Ended::Failed;
        };
        let mut named = Allow::new().set_header(header.clone(), value);
        merge(&mut run.acc, &mut named, request, run.forwarded);
        Ended::Allowed
    }

    /// Runs the steps until the run ends.
    async fn run(&self, run: &mut Run, request: &mut AuthorizationRequest) -> Ended {
        loop {
            let index = match self.next_step(run, request) {
                Ok(index) => index,
                Err(allowed) => return Self::end(run, allowed),
            };
            let step = &self.steps[index];
            // A step that has not started fails closed, whatever its
            // failureModeAllow: it never checked anything (rule 10).
            if let Some(cause) = step.readiness.waiting() {
                run.failed = true;
                step.metrics.error.increment(1);
                if let Some(trace) = &mut run.trace {
                    trace.steps.push(StepRecord {
                        index,
                        result: "error",
                        status: None,
                        error: Some(format!("not started: {cause}")),
                        nanos: 0,
                    });
                }
                tracing::debug!(
                    config = %self.name, step = %step.name, error = %cause,
                    "the step has not started; denying"
                );
                return Ended::Failed;
            }
            if run.trace.is_some() {
                run.step_started = Some(Instant::now());
            }
            let mut answer = 'answer: {
                // The wait is out of the match, so that the run's future
                // keeps no room for an answer while it waits.
                let future = match Self::ask(step, request) {
                    Ok(answer) => break 'answer answer,
                    Err(future) => future,
                };
                // Boxed: most steps answer at once, and the run's future
                // stays small without the wait's.
                Box::pin(self.wait(step, future, run)).await
            };
            let result = self.settle(step, &mut answer, request, run);
            if let Some(trace) = &mut run.trace {
                trace
                    .steps
                    .push(step_record(index, &answer, &result, run.step_started));
            }
            if let Some(ended) = self.record(run, index, result) {
                return ended;
            }
        }
    }

    /// What `step` answers at once, or the future to wait for. A panic is
    /// the step's error.
    #[allow(clippy::type_complexity)]
    fn ask<'a>(
        step: &'a Step,
        request: &'a mut AuthorizationRequest,
    ) -> Result<Result<Decision, Error>, BoxFuture<'a, Result<Decision, Error>>> {
        match step
            .span()
            .in_scope(|| unwound(|| step.service.authorize(request)))
        {
            Ok(Answer::Ready(answer)) => Ok(answer),
            Ok(Answer::Wait(future)) => Err(future),
            Err(panic) => Ok(Err(panic)),
        }
    }

    /// What a step's future gives, within the step's timeout and the
    /// chain's deadline (rule 6); a panic in it is the step's error.
    async fn wait(
        &self,
        step: &Step,
        mut future: BoxFuture<'_, Result<Decision, Error>>,
        run: &mut Run,
    ) -> Result<Decision, Error> {
        let limit = match step.timeout {
            Some(timeout) => run.deadline.min(Instant::now() + timeout),
            None => run.deadline,
        };
        // The timer is armed only once the step is pending; one timer
        // serves the whole run, reset to each pending step's limit.
        let mut armed = false;
        let timer = &mut run.timer;
        let outcome = std::future::poll_fn(|cx| {
            match unwound(|| future.as_mut().poll(cx)) {
                Ok(Poll::Ready(result)) => return Poll::Ready(Some(result)),
                Err(panic) => return Poll::Ready(Some(Err(panic))),
                Ok(Poll::Pending) => {}
            }
            let Some(sleep) = arm(&mut *timer, limit, &mut armed) else {
                return Poll::Pending;
            };
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .instrument(step.span())
        .await;
        outcome.unwrap_or_else(|| {
            Err(match step.timeout {
                Some(timeout) if limit < run.deadline => {
                    Error::timeout(format!("step timed out after {timeout:?}"))
                }
                _ => self.late(run),
            })
        })
    }

    /// The error of a step whose answer came after the run's deadline.
    fn late(&self, run: &Run) -> Error {
        if run.caller_deadline {
            Error::deadline_passed("the caller's deadline passed (its timeout, less a margin)")
        } else {
            Error::deadline_passed(format!("chain deadline of {:?} exceeded", self.deadline))
        }
    }

    /// Counts and times a run that ended: the answer of one that did not
    /// allow (a failure turned into a deny), or `None` for an allow, whose
    /// answer is the run's accumulated allow, which the caller moves out.
    #[inline]
    fn conclude(&self, started: Instant, ended: Ended) -> Option<Deny> {
        self.metrics.duration.record(Since(started));
        match ended {
            Ended::Allowed => {
                self.metrics.ok.increment(1);
                None
            }
            Ended::Denied(mut deny) => {
                self.metrics.denied.increment(1);
                if !Deny::is_deny_status(deny.status) {
                    self.metrics.deny_status_replaced.increment(1);
                    tracing::warn!(
                        config = %self.name, status = deny.status.as_u16(),
                        "a step denied with a status that is not a deny's; answering 403"
                    );
                    deny.status = StatusCode::FORBIDDEN;
                }
                Some(deny)
            }
            Ended::Failed => {
                self.metrics.error.increment(1);
                Some(Deny::new(self.status_on_error))
            }
        }
    }

    /// Where a run starts: the first step, or the start of the
    /// `booleanExpr`'s program.
    fn cursor(&self) -> Cursor {
        match self.program {
            None => Cursor::InOrder(0),
            Some(_) => Cursor::Expr {
                pc: 0,
                register: false,
                ran: 0,
                allowed: 0,
                last_deny: None,
                saved: Vec::new(),
            },
        }
    }

    /// Puts the request's path in canonical form (rule 8); the deny of a
    /// path that cannot be, or of a method or host servers read
    /// differently.
    fn refuse_ambiguous(&self, request: &mut AuthorizationRequest) -> Option<Deny> {
        if self.ambiguous_paths == AmbiguousPaths::Reject
            && let Some(why) = ambiguous_method(request).or_else(|| ambiguous_host(request))
        {
            tracing::info!(config = %self.name, error = %why, "refusing the request");
            return Some(Deny::new(StatusCode::BAD_REQUEST).body(why));
        }
        match path::canonicalize(&request.path, self.ambiguous_paths) {
            Ok(None) => None,
            Ok(Some(canonical)) => {
                request.path = canonical;
                None
            }
            Err(e) => {
                tracing::info!(config = %self.name, error = %e, "refusing the request's path");
                Some(Deny::new(StatusCode::BAD_REQUEST).body(e.to_string()))
            }
        }
    }

    /// A run before its first step: the client's copies of the stripped
    /// headers are gone, in every spelling, and listed for removal (rule 7).
    #[inline]
    fn begin(&self, run: &mut Run, request: &mut AuthorizationRequest) {
        let unlisted = self.strip(request);
        if !run.forwarded && !self.removals.is_empty() {
            let removals = &mut run.acc.headers_to_remove;
            removals.extend(self.removals.iter().cloned());
            add_removals(removals, unlisted);
        }
    }

    /// Removes the client's copies of the stripped headers, in every
    /// spelling; the names removed that the removals listed ahead lack (a
    /// long name's, a `.` spelling's).
    fn strip(&self, request: &mut AuthorizationRequest) -> Vec<HeaderName> {
        if self.strip.is_empty() {
            return Vec::new();
        }
        let mut stripped = strip_headers(&mut request.headers, &self.strip);
        stripped.retain(|name| !self.removals.contains(name));
        stripped
    }

    /// Whether a header change of `allow` depends on the request's own
    /// copy of a header that the cache's key does not hold: one made only
    /// when the header is present, or absent, on a name the chain neither
    /// strips (in any spelling) nor changed before (`acc`).
    fn unkeyed(&self, cache: &DecisionCache, acc: &Allow, allow: &Allow) -> bool {
        allow.headers.iter().any(|m| {
            m.action.depends_on_presence()
                && !cache.holds_header(&m.name)
                && !self
                    .strip
                    .iter()
                    .any(|s| same_folded(s.as_str(), m.name.as_str()))
                && !acc.headers.iter().any(|h| h.name == m.name)
        })
    }

    /// The step to run next, or (`Err`) whether the run ended allowed.
    /// Saves and settles a `booleanExpr`'s undoable operands on the way.
    fn next_step(&self, run: &mut Run, request: &mut AuthorizationRequest) -> Result<usize, bool> {
        let Run {
            acc,
            cursor,
            unkeyed,
            ..
        } = run;
        match cursor {
            Cursor::InOrder(next) => match self.steps.get(*next) {
                Some(_) => Ok(*next),
                None => Err(true),
            },
            Cursor::Expr {
                pc,
                register,
                ran,
                allowed,
                saved,
                ..
            } => {
                let program = self.program.as_deref().unwrap_or_default();
                loop {
                    match expr::advance(program, *pc, *register) {
                        Next::Run { step, resume } => {
                            *pc = resume;
                            let bit = 1u64 << step;
                            // A step named twice in the expression runs
                            // once; the bit sets remember what it answered.
                            if *ran & bit == 0 {
                                return Ok(step);
                            }
                            *register = *allowed & bit != 0;
                        }
                        Next::Save {
                            resume,
                            register: r,
                        } => {
                            (*pc, *register) = (resume, r);
                            saved.push(Saved {
                                request: request.clone(),
                                acc: acc.clone(),
                                unkeyed: *unkeyed,
                                ran: *ran,
                                allowed: *allowed,
                            });
                        }
                        Next::Settle {
                            resume,
                            register: r,
                        } => {
                            (*pc, *register) = (resume, r);
                            let save = saved.pop();
                            // A false operand's steps never ran, as far as
                            // the request, the allow and a later mention of
                            // them know.
                            if let Some(save) = save.filter(|_| !*register) {
                                *request = save.request;
                                *acc = save.acc;
                                *unkeyed = save.unkeyed;
                                (*ran, *allowed) = (save.ran, save.allowed);
                            }
                        }
                        Next::Done(value) => return Err(value),
                    }
                }
            }
        }
    }

    /// The end of a run that ran out of steps: allowed (with the
    /// accumulated allow), or the deny of the last step that denied (403
    /// when none did, as in `!a` with `a` allowing).
    fn end(run: &mut Run, allowed: bool) -> Ended {
        if allowed {
            return Ended::Allowed;
        }
        let last_deny = match &mut run.cursor {
            Cursor::Expr { last_deny, .. } => last_deny.take(),
            Cursor::InOrder(_) => None,
        };
        let deny = last_deny.map_or_else(|| Deny::new(StatusCode::FORBIDDEN), |d| *d);
        Ended::Denied(deny)
    }

    /// Records what step `index` gave; `Some` when that ends the run.
    #[inline]
    fn record(&self, run: &mut Run, index: usize, result: StepResult) -> Option<Ended> {
        match &mut run.cursor {
            Cursor::InOrder(next) => match result {
                StepResult::Allowed => {
                    *next = index + 1;
                    None
                }
                StepResult::Denied(deny) => Some(Ended::Denied(deny)),
                StepResult::Failed => Some(Ended::Failed),
            },
            Cursor::Expr {
                register,
                ran,
                allowed,
                last_deny,
                ..
            } => {
                let bit = 1u64 << index;
                *ran |= bit;
                *register = false;
                match result {
                    StepResult::Allowed => {
                        *allowed |= bit;
                        *register = true;
                    }
                    StepResult::Denied(deny) => *last_deny = Some(Box::new(deny)),
                    StepResult::Failed => return Some(Ended::Failed),
                }
                None
            }
        }
    }

    /// What a step's answer means for the run: an allow is merged into
    /// `acc` and applied to the request, an error (a timeout included)
    /// fails closed or, with `failureModeAllow`, passes marked. Takes what
    /// it keeps out of `answer`, which stays where the step left it: a
    /// decision is large to move.
    #[inline]
    fn settle(
        &self,
        step: &Step,
        answer: &mut Result<Decision, Error>,
        request: &mut AuthorizationRequest,
        run: &mut Run,
    ) -> StepResult {
        if let Ok(decision) = answer {
            drop_framing(decision, &self.name, &step.name);
        }
        if let Ok(Decision::Allow(allow)) = answer
            && let Some(problem) = allow.query_problem()
        {
            *answer = Err(Error::invalid_answer(problem));
        }
        // The mark of `failureModeAllow` is the chain's alone, in every
        // spelling an app may read as it.
        if let Ok(Decision::Allow(allow)) = answer
            && allow
                .headers
                .iter()
                .any(|m| is_failure_mark(m.name.as_str()))
        {
            *answer = Err(Error::invalid_answer(format!(
                "a step may not set {FAILURE_MODE_ALLOWED_HEADER} upstream"
            )));
        }
        // Room for the run's own headers after it (the user's, the mark
        // of `failureModeAllow`), and for an answer that lists every
        // change: a header map that holds no more panics.
        if let Ok(Decision::Allow(allow)) = answer
            && (request.headers.keys_len() + allow.headers.len() > 2 * MAX_HEADER_NAMES
                || run.acc.headers.len()
                    + run.acc.response_headers.len()
                    + allow.headers.len()
                    + allow.response_headers.len()
                    > 2 * MAX_HEADER_NAMES)
        {
            *answer = Err(Error::invalid_answer(
                "more headers than a request or a response holds",
            ));
        }
        let error = match answer {
            Ok(Decision::Allow(allow)) => {
                step.metrics.ok.increment(1);
                if let Some(cache) = &self.cache {
                    run.unkeyed |= self.unkeyed(cache, &run.acc, allow);
                }
                merge(&mut run.acc, allow, request, run.forwarded);
                return StepResult::Allowed;
            }
            Ok(Decision::Deny(deny)) => {
                step.metrics.denied.increment(1);
                return StepResult::Denied(mem::replace(deny, Deny::new(StatusCode::FORBIDDEN)));
            }
            Err(error) => error,
        };
        run.failed = true;
        // A panic checked nothing, as a step that never started (rule 5);
        // a step's own limit is clients' to fill; the request's time
        // running out is not the step's failure.
        if step.failure_mode_allow && !error.fails_closed() {
            step.metrics.failure_mode_allowed.increment(1);
            tracing::warn!(
                config = %self.name, step = %step.name, error = %error,
                "step failed; allowing because of failureModeAllow"
            );
            let mut mark = Allow::new().set_header(
                FAILURE_MODE_ALLOWED_HEADER,
                HeaderValue::from_static("true"),
            );
            merge(&mut run.acc, &mut mark, request, run.forwarded);
            StepResult::Allowed
        } else {
            step.metrics.error.increment(1);
            tracing::warn!(
                config = %self.name, step = %step.name, error = %error,
                "step failed; denying"
            );
            StepResult::Failed
        }
    }
}

/// The most header names a request to authorize holds as it arrives (an
/// adapter refuses more); an allow's changes to the request and the
/// response are at most twice as many: an `http::HeaderMap` holds 24,576
/// names, and more panics.
pub const MAX_HEADER_NAMES: usize = 8192;

/// Leaves out of a step's answer the headers no decision sets or removes
/// ([`is_framing`](crate::transport::is_framing)), with a warning.
fn drop_framing(decision: &mut Decision, config: &str, step: &str) {
    use crate::decision::{FRAMING, is_framing};
    let framing = |m: &crate::HeaderMutation| is_framing(&m.name);
    let dropped = match decision {
        Decision::Allow(allow) => {
            let found = allow.headers.iter().any(framing)
                || allow.response_headers.iter().any(framing)
                || allow.headers_to_remove.iter().any(is_framing);
            if found {
                allow.headers.retain(|m| !framing(m));
                allow.response_headers.retain(|m| !framing(m));
                allow.headers_to_remove.retain(|name| !is_framing(name));
            }
            found
        }
        Decision::Deny(deny) => {
            let found = deny.headers.keys().any(is_framing);
            if found {
                for name in &FRAMING {
                    deny.headers.remove(name);
                }
            }
            found
        }
    };
    if dropped {
        tracing::warn!(
            config,
            step,
            "a step answer's connection or framing headers are left out"
        );
    }
}

/// What a logged run keeps of one step's answer.
fn step_record(
    index: usize,
    answer: &Result<Decision, Error>,
    result: &StepResult,
    started: Option<Instant>,
) -> StepRecord {
    let (result, status, error) = match (answer, result) {
        (Err(e), StepResult::Allowed) => ("failure_mode_allowed", None, Some(e.to_string())),
        (Err(e), _) => ("error", None, Some(e.to_string())),
        (Ok(_), StepResult::Denied(deny)) => ("deny", Some(deny.status.as_u16()), None),
        (Ok(_), _) => ("allow", None, None),
    };
    StepRecord {
        index,
        result,
        status,
        error,
        nanos: started.map_or(0, |t| t.elapsed().as_nanos() as u64),
    }
}

/// Runs `f`, a call into a step, turning a panic into that step's error:
/// a user's plugin that panics fails its step (rule 5), never the
/// connection (a proxy with `failure_mode_allow` would let the request
/// through) or the server. The panic's message may hold anything the step
/// had: it is not kept.
fn unwound<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| Error::panicked())
}

/// The time since a run started, as a histogram records it: read only when
/// the histogram has a recorder (without one, metrics' handles never
/// convert the value), so a chain whose metrics go nowhere does not pay
/// for the clock twice.
struct Since(Instant);

impl metrics::IntoF64 for Since {
    fn into_f64(self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// What a run's answer says of other requests with the cache's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// It may be remembered.
    Remember,
    /// Nothing: a step failed (a failure's deny, or a fail-open allow,
    /// says nothing of the next request). The requests waiting on the run
    /// may share it.
    Share,
    /// It is for its own request alone: an allow with a step's header
    /// change that depends on a header the key does not hold.
    Alone,
}

/// Where a chain run stands: the allow accumulated so far (with the
/// request's changes, unless the caller forwards the request itself), the
/// deadline and its timer, and the next step.
struct Run {
    forwarded: bool,
    acc: Allow,
    deadline: Instant,
    /// Whether the deadline is the caller's ([`AnswerBy`]), sooner than
    /// the chain's.
    ///
    /// [`AnswerBy`]: crate::transport::AnswerBy
    caller_deadline: bool,
    // Boxed when first needed: most runs never wait.
    timer: Option<Pin<Box<Sleep>>>,
    cursor: Cursor,
    /// Whether a step failed (fail-open included).
    failed: bool,
    /// Whether a step's header change depends on a header the cache's key
    /// does not hold: the answer is for this request alone.
    unkeyed: bool,
    /// The steps so far, when the decision is logged.
    trace: Option<Box<Trace>>,
    /// When the step running began, when the decision is logged.
    step_started: Option<Instant>,
}

enum Cursor {
    /// Steps in order: the next one.
    InOrder(usize),
    /// A `booleanExpr`: where the program resumes with its register, and
    /// (as bit sets, at most MAX_EXPR_STEPS steps) the steps that ran and
    /// those that allowed, the last deny, and the run as it was at the
    /// start of each undoable operand being run.
    Expr {
        pc: usize,
        register: bool,
        ran: u64,
        allowed: u64,
        last_deny: Option<Box<Deny>>,
        saved: Vec<Saved>,
    },
}

/// A run as it was where a `booleanExpr` operand started, to go back to if
/// the operand turns out false.
struct Saved {
    request: AuthorizationRequest,
    acc: Allow,
    unkeyed: bool,
    ran: u64,
    allowed: u64,
}

/// Sets the chain run's timer to `limit` the first time a step is pending
/// (creating it for the first such step of the run); later polls of the
/// same step find it `armed` and leave it as it is.
fn arm<'a>(
    slot: &'a mut Option<Pin<Box<Sleep>>>,
    limit: Instant,
    armed: &mut bool,
) -> Option<&'a mut Pin<Box<Sleep>>> {
    if slot.is_none() {
        *slot = Some(Box::pin(tokio::time::sleep_until(limit)));
        *armed = true;
    }
    let sleep = slot.as_mut()?;
    if !*armed {
        sleep.as_mut().reset(limit);
        *armed = true;
    }
    Some(sleep)
}

/// One step of a chain being built in code.
pub struct ChainStep {
    name: String,
    service: Arc<dyn AuthService>,
    timeout: Option<Duration>,
    failure_mode_allow: bool,
}

impl fmt::Debug for ChainStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainStep")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("failure_mode_allow", &self.failure_mode_allow)
            .finish_non_exhaustive()
    }
}

impl ChainStep {
    /// A step named `name` that runs `service`, with no timeout of its own
    /// (the chain deadline applies) and failing closed.
    pub fn new(name: impl Into<String>, service: Arc<dyn AuthService>) -> Self {
        ChainStep {
            name: name.into(),
            service,
            timeout: None,
            failure_mode_allow: false,
        }
    }

    /// Sets the step's own timeout. A step that bounds its own waits and
    /// calls by its [`BuildContext`](crate::BuildContext) (the built-in
    /// ones) should be built with
    /// [`with_timeout`](crate::BuildContext::with_timeout) of the same, so
    /// that it answers before this timer, whose error `failureModeAllow`
    /// lets through.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Lets requests pass when the step fails (counted and marked), but
    /// for the errors that always fail closed. [`ChainBuilder::build`]
    /// refuses it on a step whose
    /// [`refuses_failure_mode_allow`](crate::AuthService::refuses_failure_mode_allow)
    /// says why not.
    pub fn failure_mode_allow(mut self, allow: bool) -> Self {
        self.failure_mode_allow = allow;
        self
    }
}

/// Builds a [`Chain`] in code.
#[derive(Debug)]
pub struct ChainBuilder {
    name: String,
    steps: Vec<ChainStep>,
    boolean_expr: Option<String>,
    status_on_error: StatusCode,
    deadline: Duration,
    strip: Vec<HeaderName>,
    trust: Vec<HeaderName>,
    ambiguous_paths: AmbiguousPaths,
    user_id_header: Option<HeaderName>,
    cache: Option<CacheSettings>,
    decision_log: Option<Sampling>,
    /// The shadow's name, and where it was named (`shadow`).
    shadow: Option<(String, String)>,
}

impl ChainBuilder {
    /// Logs the chain's decisions so (when its engine has a
    /// [`DecisionLog`](crate::decision_log::DecisionLog)).
    pub fn decision_log(mut self, sampling: Sampling) -> Self {
        self.decision_log = Some(sampling);
        self
    }

    /// Runs each request through the AuthConfig `name` of the same
    /// generation too, as a [shadow](crate::shadow).
    pub fn shadow(mut self, name: impl Into<String>) -> Self {
        self.shadow = Some((name.into(), "shadow".to_owned()));
        self
    }

    /// [`shadow`](Self::shadow), named at `place` of the AuthConfig (a
    /// passthrough's `mirror`), where an error about it points.
    pub(crate) fn shadow_at(mut self, name: String, place: String) -> Self {
        self.shadow = Some((name, place));
        self
    }

    /// Appends a step.
    pub fn step(mut self, step: ChainStep) -> Self {
        self.steps.push(step);
        self
    }

    /// Combines the steps with a boolean expression over their names.
    pub fn boolean_expr(mut self, expr: impl Into<String>) -> Self {
        self.boolean_expr = Some(expr.into());
        self
    }

    /// The status of the deny that a failing step causes (default 403).
    pub fn status_on_error(mut self, status: StatusCode) -> Self {
        self.status_on_error = status;
        self
    }

    /// The time the whole chain may take (default 10 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Strips this client header too, though no step declares it.
    pub fn strip_client_header(mut self, name: HeaderName) -> Self {
        self.strip.push(name);
        self
    }

    /// Names an allowed request's user (its [`UserInfo`](crate::UserInfo)
    /// id) upstream in this header, as Gloo's `userIdHeader` does; the
    /// client's copies are always stripped, whatever the outcome.
    pub fn user_id_header(mut self, name: HeaderName) -> Self {
        self.user_id_header = Some(name);
        self
    }

    /// Lets this client header through though a step declares it.
    pub fn trust_client_header(mut self, name: HeaderName) -> Self {
        self.trust.push(name);
        self
    }

    /// What to do with a path whose meaning differs between servers (rule
    /// 8): deny it with 400 (the default), or let the steps see it with
    /// its dot segments resolved (a climb above the root stopped at the
    /// root) and its encoded `/`, `\` and control bytes still encoded.
    pub fn ambiguous_paths(mut self, ambiguous: AmbiguousPaths) -> Self {
        self.ambiguous_paths = ambiguous;
        self
    }

    /// Caches the chain's answers (see [the cache](crate::cache)); the
    /// build checks that the key holds what the steps read.
    pub fn cache(mut self, settings: CacheSettings) -> Self {
        self.cache = Some(settings);
        self
    }

    /// Checks and builds the chain. Metrics handles are registered here,
    /// with the recorder installed at this moment.
    pub fn build(self) -> Result<Chain, Error> {
        if self.steps.is_empty() {
            return Err(Error::config(
                "expected at least one step: a chain of none would allow every request",
            )
            .at("configs"));
        }
        if self.deadline > MAX_DURATION {
            return Err(Error::config("at most 365 days").at("deadline"));
        }
        if let Some(step) = self
            .steps
            .iter()
            .find(|s| s.timeout.is_some_and(|t| t > MAX_DURATION))
        {
            return Err(
                Error::config("at most 365 days").at(format!("step '{}' timeout", step.name))
            );
        }
        for step in &self.steps {
            if let Some(e) =
                crate::service::fail_open_refusal(&*step.service, step.failure_mode_allow)
            {
                return Err(e.at(format!("step '{}'", step.name)));
            }
        }
        if !Deny::is_error_status(self.status_on_error) {
            return Err(Error::config(format!(
                "{} is not an error's deny status: expected 400 to 599 (a proxy lets a request through on a 2xx, a browser may keep a redirect without a Location, and serves its kept copy on a 304)",
                self.status_on_error.as_u16()
            ))
            .at("statusOnError"));
        }
        let log_sampling = match self.decision_log {
            None => None,
            Some(sampling) => {
                let headers = sampling.check().map_err(|e| e.at("decisionLog"))?;
                // An API key's or a token's header is a credential too.
                for (i, name) in headers.iter().enumerate() {
                    let steps = self.steps.iter().map(|s| (s.name.as_str(), &s.service));
                    if let Some(step) = reader(steps, name) {
                        return Err(Error::config(format!(
                            "the step '{step}' reads `{name}`, which may carry a credential: it is never logged"
                        ))
                        .at(format!("decisionLog.headers[{i}]")));
                    }
                }
                Some((sampling, headers))
            }
        };
        let mut names: Vec<String> = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            if names.contains(&step.name) {
                return Err(Error::config(format!(
                    "two steps are named '{}'; step names must be unique",
                    step.name
                )));
            }
            names.push(step.name.clone());
        }
        let program = match &self.boolean_expr {
            None => None,
            Some(src) => {
                if self.steps.len() > MAX_EXPR_STEPS {
                    return Err(Error::config(format!(
                        "a booleanExpr combines at most {MAX_EXPR_STEPS} steps"
                    ))
                    .at("booleanExpr"));
                }
                Some(expr::compile_expr(src, &names).map_err(|e| e.at("booleanExpr"))?)
            }
        };
        let cache = match self.cache {
            None => None,
            Some(settings) => {
                settings.check(
                    self.steps
                        .iter()
                        .map(|s| (s.name.as_str(), s.service.reads())),
                )?;
                Some(DecisionCache::new(&self.name, settings))
            }
        };
        if let Some(header) = self.strip.iter().find(|h| self.trust.contains(h)) {
            return Err(Error::config(format!(
                "`{header}` is both stripped and trusted: a client's copy cannot be both"
            ))
            .at("trustClientHeaders"));
        }
        let framing = self
            .strip
            .iter()
            .map(|h| (h, "stripClientHeaders"))
            .chain(self.user_id_header.iter().map(|h| (h, "userIdHeader")))
            .find(|(h, _)| crate::decision::is_framing(h));
        if let Some((header, place)) = framing {
            return Err(Error::config(format!(
                "`{header}` is a connection or framing header, which no decision sets or removes"
            ))
            .at(place));
        }
        if let Some(header) = &self.user_id_header
            && self.trust.contains(header)
        {
            return Err(Error::config(format!(
                "`{header}` names the user upstream (userIdHeader): a client's copy cannot be trusted"
            ))
            .at("trustClientHeaders"));
        }
        let mut strip = self.strip;
        strip.extend(self.user_id_header.clone());
        for step in &self.steps {
            let identity = step.service.identity_headers();
            if let Some(header) = identity.iter().find(|h| crate::decision::is_framing(h)) {
                return Err(Error::config(format!(
                    "step '{}' sets `{header}`, a connection or framing header, which no decision sets",
                    step.name
                )));
            }
            for header in identity.iter().filter(|h| !self.trust.contains(h)) {
                let steps = self.steps.iter().map(|s| (s.name.as_str(), &s.service));
                if let Some(reading) = reader(steps, header) {
                    tracing::warn!(
                        config = %self.name,
                        step = %reading,
                        setter = %step.name,
                        header = %header,
                        "a step reads a header that a step sets upstream: the client's copy is removed before any step runs, so the step sees only what a step before it sets (list the header in trustClientHeaders if clients send it)"
                    );
                }
            }
            strip.extend(identity);
            if step.failure_mode_allow {
                strip.push(FAILURE_MODE_ALLOWED_HEADER);
            }
        }
        strip.retain(|h| !self.trust.contains(h));
        strip.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        strip.dedup();
        let mut removals: Vec<HeaderName> = strip.iter().flat_map(spellings).collect();
        // A credential under another spelling (`api_key` for `api-key`),
        // which an app that folds names may read: a step refuses it where
        // it sees it, but Envoy's HTTP service passes only its
        // `allowed_headers` to the check.
        let read: Vec<HeaderName> = self
            .steps
            .iter()
            .flat_map(|s| s.service.reads().unwrap_or_default())
            .filter_map(|read| match read {
                Attribute::Header(name) => Some(name),
                _ => None,
            })
            .collect();
        removals.extend(
            read.iter()
                .flat_map(spellings)
                .filter(|n| !read.contains(n) && !self.trust.contains(n)),
        );
        removals.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        removals.dedup();
        let steps = self
            .steps
            .into_iter()
            .map(|s| Step {
                metrics: StepMetrics::register(&self.name, &s.name),
                name: s.name,
                service: s.service,
                timeout: s.timeout,
                failure_mode_allow: s.failure_mode_allow,
                readiness: Arc::default(),
            })
            .collect();
        Ok(Chain {
            metrics: ChainMetrics::register(&self.name),
            name: self.name.into(),
            steps,
            program,
            status_on_error: self.status_on_error,
            deadline: self.deadline,
            strip,
            removals,
            ambiguous_paths: self.ambiguous_paths,
            user_id_header: self.user_id_header,
            cache,
            log_sampling,
            log: None,
            shadow_name: self.shadow,
            shadow: None,
        })
    }
}

/// The name in authority `host` (RFC 3986 §3.2: a name or a bracketed
/// IP literal, then `:` and digits; empty for an IP literal), or what
/// makes it none. A rule matches the name before a port of digits alone,
/// while Go's proxies (Traefik, Caddy) take `admin.example:x` as
/// `admin.example`, and so do apps that cut at `:`.
fn authority_name(host: &str) -> Result<&str, &'static str> {
    let (name, port) = match host.strip_prefix('[') {
        Some(literal) => {
            let Some((address, rest)) = literal.split_once(']') else {
                return Err("an IP literal without its `]`");
            };
            // An IPv6 address, with a zone (RFC 6874) if any: Envoy and
            // Traefik route a name in brackets to no virtual host of the
            // name, and the rules would take it for the name.
            let ip = address.split_once("%25").map_or(address, |(ip, _)| ip);
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("an IP literal that is no IPv6 address");
            }
            match rest.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None if rest.is_empty() => ("", None),
                None => return Err("more after an IP literal than a port"),
            }
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    // An empty one too: Envoy routes `app.example:` to another virtual
    // host, Go's proxies as `app.example`.
    match port {
        Some("") => return Err("an empty port"),
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err("a port that is not digits alone");
        }
        _ => {}
    }
    // RFC 3986's unreserved characters: a reg-name's sub-delims and `%`
    // are in no DNS name, and `,` splits a forwarded host in two.
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    if !name.bytes().all(unreserved) {
        return Err("a character a host name cannot have");
    }
    Ok(name)
}

/// The name of the first of `steps` that says it reads `header`.
fn reader<'a>(
    mut steps: impl Iterator<Item = (&'a str, &'a Arc<dyn AuthService>)>,
    header: &HeaderName,
) -> Option<&'a str> {
    let read = Attribute::header(header.clone());
    steps
        .find(|(_, service)| service.reads().is_some_and(|r| r.contains(&read)))
        .map(|(name, _)| name)
}

/// Why an app may read another host than the one judged, if it may: a
/// host with DNS's root dot, or an `X-Forwarded-Host` or a `Forwarded`
/// `host=` that names another (axum's `Host` extractor, Django, Rails and
/// Express behind a trusted proxy read them first).
fn ambiguous_host(request: &AuthorizationRequest) -> Option<String> {
    // `x@admin.example` is `admin.example` to an app that parses it as a
    // URL's authority (http's `Uri::host`), and neither to a rule.
    if request.host.contains('@') {
        return Some("ambiguous host: userinfo (`@`) in the authority".to_owned());
    }
    let name = match authority_name(&request.host) {
        Ok(name) => name,
        Err(why) => return Some(format!("ambiguous host: {why}")),
    };
    // `example.com.` is `example.com` to nginx, Traefik and DNS; Envoy
    // routes it to another virtual host (`*`) unless it strips the dot.
    if name.ends_with('.') {
        return Some("ambiguous host: a trailing dot, which proxies route differently".to_owned());
    }
    let differs = |host: &[u8]| {
        let host = host.trim_ascii();
        let host = host
            .strip_prefix(b"\"")
            .and_then(|h| h.strip_suffix(b"\""))
            .unwrap_or(host);
        !host.eq_ignore_ascii_case(request.host.as_bytes())
    };
    // In every spelling an app may fold into the name (`X_Forwarded_Host`
    // is Rack's, WSGI's and PHP's `HTTP_X_FORWARDED_HOST`).
    for (name, value) in &request.headers {
        let name = name.as_str();
        if same_folded(name, "x-forwarded-host") {
            if value.as_bytes().split(|&b| b == b',').any(differs) {
                return Some("ambiguous host: X-Forwarded-Host names another".to_owned());
            }
            continue;
        }
        if !same_folded(name, "forwarded") {
            continue;
        }
        let named = value
            .as_bytes()
            .split(|&b| b == b',' || b == b';')
            .filter_map(|pair| {
                let pair = pair.trim_ascii();
                let (name, host) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                name.eq_ignore_ascii_case(b"host").then(|| &host[1..])
            });
        if named.into_iter().any(differs) {
            return Some("ambiguous host: Forwarded names another".to_owned());
        }
    }
    None
}

/// Whether an `X-Original-URL` or `X-Rewrite-URL` of `value` names
/// another path than the request's, `own` ([`override_path`] of it,
/// computed once for all the request's overrides): IIS's URL Rewrite,
/// older Symfony and Laminas route on them, and every proxy forwards a
/// client's copy.
fn names_another_path(own: &Option<String>, value: &http::HeaderValue) -> bool {
    let named = value.to_str().ok().and_then(override_path);
    named.is_none() || named != *own
}

/// The path of `target` (a path, or the absolute form ingress-nginx
/// writes, `$scheme://$http_host$request_uri`, whose path is what counts)
/// in its canonical form, so that a spelling of the same path is not
/// another; none when it has none.
fn override_path(target: &str) -> Option<String> {
    let target = match target.parse::<http::Uri>() {
        Ok(uri) if uri.scheme().is_some() => uri.path().to_owned(),
        _ => target.to_owned(),
    };
    let path = target.split('?').next().unwrap_or_default();
    // As the request's own path is read: a `..` in an override is
    // another path to a router that reads it as written.
    match path::canonicalize(path, AmbiguousPaths::Reject) {
        Ok(None) => Some(path.to_owned()),
        Ok(Some(canonical)) => Some(canonical),
        Err(_) => None,
    }
}

/// Why servers may read the request's method (or path) differently, if
/// they may: a standard method in another case (Go servers pass `delete`
/// on, many frameworks upper-case it), or a method override naming
/// another method
/// (which some frameworks obey): a header, in any spelling a CGI, WSGI,
/// PHP or Rack server folds into the same name, or `_method` in the query
/// (Symfony and Laravel read it; one in a form body is not seen here); or
/// in the same pass over the headers, a path override naming another path
/// ([`names_another_path`]).
fn ambiguous_method(request: &AuthorizationRequest) -> Option<String> {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    const OVERRIDES: [&str; 3] = [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ];
    let method = request.method.as_str();
    if !STANDARD.contains(&method) && STANDARD.iter().any(|m| m.eq_ignore_ascii_case(method)) {
        return Some(format!(
            "ambiguous method: `{}` is a standard method in another case",
            method.escape_debug()
        ));
    }
    let other = |value: &[u8]| !value.trim_ascii().eq_ignore_ascii_case(method.as_bytes());
    const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];
    // The request's own path, canonical, once: a request may carry a
    // hundred overrides of a path of thousands of segments.
    let mut own: Option<Option<String>> = None;
    for (name, value) in &request.headers {
        let name = name.as_str();
        let is_override = OVERRIDES.iter().any(|o| same_folded(name, o));
        if is_override && other(value.as_bytes()) {
            return Some("ambiguous method: an override header names another method".to_owned());
        }
        let is_path_override = PATH_OVERRIDES.iter().any(|o| same_folded(name, o));
        if is_path_override
            && names_another_path(
                own.get_or_insert_with(|| override_path(&request.path)),
                value,
            )
        {
            return Some("ambiguous path: an override header names another path".to_owned());
        }
    }
    if let Some(query) = request.query() {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = path::percent_decode(key, true);
            if key.contains("method")
                && crate::request::php_key(&key) == "_method"
                && other(path::percent_decode(value, true).as_bytes())
            {
                return Some("ambiguous method: `_method` names another method".to_owned());
            }
        }
    }
    None
}
