//! The step trait, its lifecycle, and closures as steps.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use futures::future::BoxFuture;
use http::HeaderName;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::{Allow, Attribute, AuthorizationRequest, Decision, Deny, Error};

/// One auth step: what Gloo calls an `AuthService`.
///
/// A service is built by its [`ExtAuthPlugin`](crate::ExtAuthPlugin) from a
/// config, started once per config generation, then asked to authorize
/// requests, concurrently, until its generation is replaced.
///
/// [`authorize`](Self::authorize) is the one method a step must write. It
/// answers at once ([`Answer::Ready`], no future and no allocation: a
/// header check, a key lookup, a policy in memory) or with a future to
/// wait for ([`Answer::wait`]: a call to a remote):
///
/// ```
/// use authchain_core::{Answer, AuthService, AuthorizationRequest, Decision};
///
/// struct DenyDeletes;
///
/// impl AuthService for DenyDeletes {
///     fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
///         if req.method == http::Method::DELETE {
///             return Decision::unauthorized().into();
///         }
///         Decision::authorized().into()
///     }
/// }
///
/// struct AsksAFriend;
///
/// impl AuthService for AsksAFriend {
///     fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
///         Answer::wait(async move {
///             // ... an HTTP call that reads `req` ...
///             # let _ = req;
///             Ok(Decision::authorized())
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait AuthService: Send + Sync + 'static {
    /// Decides on one request: `Ok(Decision::Deny(..))` is a deny;
    /// `Err(..)` is a failure of the step, which the chain turns into a
    /// deny with its `statusOnError` unless the step is configured to fail
    /// open. The request carries what the steps before changed; a step's
    /// timeout bounds only a future it waits for, so keep ready answers
    /// quick. A step that denies (or fails) must leave the request as it
    /// found it: a `booleanExpr` undoes the changes of branches that turned
    /// out false by what their steps' allows and writes were, and counts on
    /// a deny having made none.
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a>;

    /// Called once when the service's config generation starts, before it
    /// serves. Spawn background work here (key refresh, ...) and stop it
    /// when [`Lifecycle::cancelled`] fires: that happens when the
    /// generation is replaced or the engine shuts down. After an error the
    /// step fails every request, and `start` is called again later (1 s,
    /// then twice as long each time up to 30 s) until it succeeds: spawn
    /// background work only once it does.
    async fn start(&self, lifecycle: Lifecycle) -> Result<(), Error> {
        let _ = lifecycle;
        Ok(())
    }

    /// The upstream headers this service may set to carry identity
    /// (`x-user-id`, ...). The chain strips client-sent copies of them
    /// before it runs and on the way upstream, so a client cannot forge
    /// them. Called once, after the service is built.
    fn identity_headers(&self) -> Vec<HeaderName> {
        Vec::new()
    }

    /// The request attributes this service decides on, so that a
    /// [decision cache](crate::cache) can check that its key holds them.
    /// `None` (the default) says "anything": a chain with such a step is
    /// cached only when the cache config sets `trustKey: true`. Attributes
    /// are what the client sends; `state` from earlier steps is derived
    /// from theirs.
    fn reads(&self) -> Option<Vec<Attribute>> {
        None
    }

    /// Why `failureModeAllow` must not let this service's failures
    /// through, if it must not: a step that calls no server fails only on
    /// what the request holds or on a fault, so letting its failures
    /// through lets in what it could not check. A chain with the setting
    /// on such a step is a config error, built in code or from a file.
    /// `None` (the default): its failures may be an outage of a server it
    /// calls, which the setting may ride out.
    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        None
    }
}

/// What [`AuthService::refuses_failure_mode_allow`] says of a step that
/// calls no server.
pub const CALLS_NO_SERVER: &str =
    "on a step that calls no server would let through a request it fails on";

/// The config error of `failureModeAllow` on `service`, if it refuses it.
pub(crate) fn fail_open_refusal(
    service: &dyn AuthService,
    failure_mode_allow: bool,
) -> Option<Error> {
    let why = service
        .refuses_failure_mode_allow()
        .filter(|_| failure_mode_allow)?;
    Some(Error::config(format!(
        "`failureModeAllow` {why}; remove it"
    )))
}

/// What [`AuthService::authorize`] gives: the answer, or a future of it.
///
/// `.await` it to get the answer either way.
#[must_use = "an answer decides nothing until the chain reads it"]
pub enum Answer<'a> {
    /// Decided without waiting.
    Ready(Result<Decision, Error>),
    /// Decides when the future completes (under the step's timeout).
    Wait(BoxFuture<'a, Result<Decision, Error>>),
}

impl<'a> Answer<'a> {
    /// An answer to wait for.
    pub fn wait(future: impl Future<Output = Result<Decision, Error>> + Send + 'a) -> Self {
        Answer::Wait(Box::pin(future))
    }
}

impl fmt::Debug for Answer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Ready(answer) => f.debug_tuple("Ready").field(answer).finish(),
            Answer::Wait(_) => f.debug_tuple("Wait").finish_non_exhaustive(),
        }
    }
}

impl From<Result<Decision, Error>> for Answer<'_> {
    fn from(answer: Result<Decision, Error>) -> Self {
        Answer::Ready(answer)
    }
}

impl From<Decision> for Answer<'_> {
    fn from(decision: Decision) -> Self {
        Answer::Ready(Ok(decision))
    }
}

impl From<Allow> for Answer<'_> {
    fn from(allow: Allow) -> Self {
        Answer::Ready(Ok(Decision::Allow(allow)))
    }
}

impl From<Deny> for Answer<'_> {
    fn from(deny: Deny) -> Self {
        Answer::Ready(Ok(Decision::Deny(deny)))
    }
}

impl From<Error> for Answer<'_> {
    fn from(error: Error) -> Self {
        Answer::Ready(Err(error))
    }
}

impl<'a> IntoFuture for Answer<'a> {
    type Output = Result<Decision, Error>;
    type IntoFuture = futures::future::Either<
        std::future::Ready<Result<Decision, Error>>,
        BoxFuture<'a, Result<Decision, Error>>,
    >;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Answer::Ready(answer) => futures::future::Either::Left(std::future::ready(answer)),
            Answer::Wait(future) => futures::future::Either::Right(future),
        }
    }
}

/// The lifecycle of one config generation, handed to
/// [`AuthService::start`].
#[derive(Debug, Clone)]
pub struct Lifecycle {
    generation: u64,
    token: CancellationToken,
}

impl Lifecycle {
    /// A lifecycle for generation `generation`, cancelled with `token`.
    pub fn new(generation: u64, token: CancellationToken) -> Self {
        Lifecycle { generation, token }
    }

    /// The generation number (1 for the first config loaded).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Completes when the generation is replaced or shut down.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Whether the generation was replaced or shut down.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The underlying token, to hand to spawned tasks.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// A step made from a closure that decides at once; see [`decide_fn`].
#[derive(Clone)]
pub struct DecideFn<F> {
    f: F,
}

impl<F> fmt::Debug for DecideFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecideFn").finish_non_exhaustive()
    }
}

/// Makes a step from a closure that decides without waiting (an
/// [`Answer::Ready`] every time).
///
/// ```
/// use authchain_core::{decide_fn, Decision};
///
/// let only_get = decide_fn(|req| {
///     Ok(if req.method == http::Method::GET {
///         Decision::authorized()
///     } else {
///         Decision::unauthorized()
///     })
/// });
/// # let _ = only_get;
/// ```
pub fn decide_fn<F>(f: F) -> DecideFn<F>
where
    F: Fn(&mut AuthorizationRequest) -> Result<Decision, Error> + Send + Sync + 'static,
{
    DecideFn { f }
}

impl<F> AuthService for DecideFn<F>
where
    F: Fn(&mut AuthorizationRequest) -> Result<Decision, Error> + Send + Sync + 'static,
{
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::Ready((self.f)(request))
    }
}

/// A step made from a closure; see [`service_fn`].
#[derive(Clone)]
pub struct ServiceFn<F> {
    f: F,
}

impl<F> fmt::Debug for ServiceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFn").finish_non_exhaustive()
    }
}

/// Makes a step from a closure that returns a boxed future, so that a step
/// needs no struct of its own (as `axum::middleware::from_fn` does for
/// middleware).
///
/// ```
/// use authchain_core::{service_fn, Decision};
///
/// let only_get = service_fn(|req| {
///     Box::pin(async move {
///         if req.method == http::Method::GET {
///             Ok(Decision::authorized())
///         } else {
///             Ok(Decision::unauthorized())
///         }
///     })
/// });
/// # let _ = only_get;
/// ```
pub fn service_fn<F>(f: F) -> ServiceFn<F>
where
    F: for<'a> Fn(&'a mut AuthorizationRequest) -> BoxFuture<'a, Result<Decision, Error>>
        + Send
        + Sync
        + 'static,
{
    ServiceFn { f }
}

impl<F> AuthService for ServiceFn<F>
where
    F: for<'a> Fn(&'a mut AuthorizationRequest) -> BoxFuture<'a, Result<Decision, Error>>
        + Send
        + Sync
        + 'static,
{
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::Wait((self.f)(request))
    }
}
