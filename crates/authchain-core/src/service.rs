//! The step trait, its lifecycle, and closures as steps.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use futures::future::BoxFuture;
use http::HeaderName;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::{Attribute, AuthorizationRequest, Decision, Error};

/// One auth step: what Gloo calls an `AuthService`.
///
/// A service is built by its [`ExtAuthPlugin`](crate::ExtAuthPlugin) from a
/// config, started once per config generation, then asked to authorize
/// requests, concurrently, until its generation is replaced.
///
/// ```
/// use authchain_core::{async_trait, AuthService, AuthorizationRequest, Decision, Error};
///
/// struct DenyDeletes;
///
/// #[async_trait]
/// impl AuthService for DenyDeletes {
///     async fn authorize(&self, req: &mut AuthorizationRequest) -> Result<Decision, Error> {
///         if req.method == http::Method::DELETE {
///             return Ok(Decision::unauthorized());
///         }
///         Ok(Decision::authorized())
///     }
/// }
/// ```
#[async_trait]
pub trait AuthService: Send + Sync + 'static {
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

    /// Authorizes one request. `Ok(Decision::Deny(..))` is a deny;
    /// `Err(..)` is a failure of the step, which the chain turns into a deny
    /// with its `statusOnError` unless the step is configured to fail open.
    ///
    /// A step that never waits may implement
    /// [`decide_now`](Self::decide_now) instead; this method then answers
    /// with it.
    async fn authorize(&self, request: &mut AuthorizationRequest) -> Result<Decision, Error> {
        match self.decide_now(request) {
            Some(answer) => answer,
            None => Err(Error::step(
                "the step implements neither authorize nor decide_now",
            )),
        }
    }

    /// Decides at once, for a step that never waits (a header check, an API
    /// key lookup, a policy evaluated in memory): the chain calls this
    /// first, and [`authorize`](Self::authorize) only when it returns
    /// `None`. An answer here costs no future: no allocation, no poll.
    ///
    /// Return `None` (the default) without changing the request to be run
    /// through `authorize`, e.g. when a key set must be fetched first. A
    /// step's timeout cannot cut a decision made here short: keep it quick.
    ///
    /// ```
    /// use authchain_core::{AuthService, AuthorizationRequest, Decision, Error};
    ///
    /// struct GetOnly;
    ///
    /// impl AuthService for GetOnly {
    ///     fn decide_now(&self, req: &mut AuthorizationRequest) -> Option<Result<Decision, Error>> {
    ///         Some(Ok(if req.method == http::Method::GET {
    ///             Decision::authorized()
    ///         } else {
    ///             Decision::unauthorized()
    ///         }))
    ///     }
    /// }
    /// ```
    fn decide_now(&self, request: &mut AuthorizationRequest) -> Option<Result<Decision, Error>> {
        let _ = request;
        None
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

/// Makes a step from a closure that decides without waiting: the
/// [`decide_now`](AuthService::decide_now) of [`service_fn`].
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
    fn decide_now(&self, request: &mut AuthorizationRequest) -> Option<Result<Decision, Error>> {
        Some((self.f)(request))
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

// Written out by hand rather than with `#[async_trait]` so that the
// closure's boxed future is handed on as it is, not boxed a second time.
impl<F> AuthService for ServiceFn<F>
where
    F: for<'a> Fn(&'a mut AuthorizationRequest) -> BoxFuture<'a, Result<Decision, Error>>
        + Send
        + Sync
        + 'static,
{
    fn authorize<'life0, 'life1, 'async_trait>(
        &'life0 self,
        request: &'life1 mut AuthorizationRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Decision, Error>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        (self.f)(request)
    }
}
