//! [`AuthChainLayer`]: a chain in front of any tower service.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use authchain_core::{
    AuthorizationRequest, BoxError, Chain, Decision, Deny, Engine, HeaderMutation, State, UserInfo,
};
use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use serde_json::{Map, Value};
use tower_layer::Layer;
use tower_service::Service;

use crate::head::{
    DEFAULT_READ_TIMEOUT, X_REQUEST_ID, empty_request, give_back, plain, protocol, read_body,
};

/// What the chain established about a request it allowed, put into the
/// request's extensions for the inner service (and, with the `axum`
/// feature, an axum extractor).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct AuthContext {
    /// The AuthConfig that allowed the request.
    pub config: Arc<str>,
    /// The authenticated user, if a step established one.
    pub user: Option<UserInfo>,
    /// The chain's final state.
    pub state: State,
    /// The dynamic metadata the steps produced.
    pub metadata: Map<String, Value>,
}

/// Where the layer finds its chain.
#[derive(Clone)]
enum Source {
    /// A fixed chain.
    Chain(Arc<Chain>),
    /// The chain named `config` in the engine's current generation, looked
    /// up per request so that reloads apply.
    Engine { engine: Arc<Engine>, config: String },
}

/// What every clone of a layer (and of the services it made) shares: one
/// reference count to bump per request, whatever the source.
#[derive(Clone)]
struct Shared {
    source: Source,
    body_limit: Option<usize>,
    body_timeout: std::time::Duration,
}

impl Shared {
    /// The chain to run now; `None` (logged) while the engine's current
    /// generation lacks the config.
    fn chain(&self) -> Option<Cow<'_, Arc<Chain>>> {
        match &self.source {
            Source::Chain(chain) => Some(Cow::Borrowed(chain)),
            Source::Engine { engine, config } => match engine.current().chain(config) {
                Some(chain) => Some(Cow::Owned(chain.clone())),
                None => {
                    tracing::error!(
                        layer = ?self,
                        "the current generation has no such AuthConfig; denying"
                    );
                    None
                }
            },
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AuthChainLayer");
        match &self.source {
            Source::Chain(chain) => d.field("chain", &chain.name()),
            Source::Engine { config, .. } => d.field("engine_config", config),
        };
        d.field("body_limit", &self.body_limit)
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

/// A tower [`Layer`] that runs an authchain [`Chain`] before the inner
/// service: an allow goes on to the inner service with the chain's
/// mutations applied to the request (headers, query) and an
/// [`AuthContext`] in its extensions, plus the chain's client response
/// headers on the way back; a deny is answered directly, and the inner
/// service never sees the request.
///
/// The response future runs the chain, then calls (a clone of) the inner
/// service, as tower middleware that waits before calling does.
///
/// The inner service gets the path the chain judged, in canonical form
/// ([`authchain_core::path`]). Added with axum's `Router::layer`, the
/// layer runs after the router picked the route by the path as sent;
/// the two differ only in escapes and repeated slashes, since a path
/// with a dot segment is refused (unless the AuthConfig allows ambiguous
/// paths: then wrap the whole router, `layer.layer(router)`).
///
/// ```no_run
/// use std::sync::Arc;
/// use authchain_core::{Chain, ChainStep, Decision, service_fn};
/// use authchain_http::{AuthChainLayer, AuthContext};
/// use axum::{routing::get, Router};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let chain = Chain::builder("app")
///     .step(ChainStep::new("key", Arc::new(service_fn(|req| {
///         let ok = req.header_str("api-key") == Some("let-me-in");
///         Box::pin(async move { Ok(if ok { Decision::authorized() } else { Decision::unauthenticated() }) })
///     }))))
///     .build()?;
/// let app = Router::new()
///     .route("/", get(|auth: AuthContext| async move { format!("hello via {}", auth.config) }))
///     .layer(AuthChainLayer::new(Arc::new(chain)));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// axum::serve(listener, app).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuthChainLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for AuthChainLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl AuthChainLayer {
    /// Runs `chain` on every request.
    pub fn new(chain: Arc<Chain>) -> Self {
        AuthChainLayer {
            shared: Arc::new(Shared {
                source: Source::Chain(chain),
                body_limit: None,
                body_timeout: DEFAULT_READ_TIMEOUT,
            }),
        }
    }

    /// Runs the AuthConfig named `config` of the engine's current
    /// generation, so that reloads apply to the next request. A request that
    /// arrives while the generation lacks `config` is denied with 403 (and
    /// logged).
    pub fn from_engine(engine: Arc<Engine>, config: impl Into<String>) -> Self {
        AuthChainLayer {
            shared: Arc::new(Shared {
                source: Source::Engine {
                    engine,
                    config: config.into(),
                },
                body_limit: None,
                body_timeout: DEFAULT_READ_TIMEOUT,
            }),
        }
    }

    /// Buffers request bodies of up to `limit` bytes so that the steps see
    /// them ([`AuthorizationRequest::body`]); the inner service gets the
    /// same bytes (trailers are not kept). A larger body is answered with
    /// 413 before any step runs (at once when its length says so), and one
    /// that takes longer than its [`body_timeout`](Self::body_timeout) to
    /// arrive with 408. Without this, bodies are not read and steps see
    /// none.
    pub fn buffer_body(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.shared).body_limit = Some(limit);
        self
    }

    /// How long a buffered body may take to arrive
    /// ([`DEFAULT_READ_TIMEOUT`]): a client that sends less is answered
    /// with 408, and holds nothing longer. Zero takes only a body already
    /// received in full.
    pub fn body_timeout(mut self, timeout: std::time::Duration) -> Self {
        Arc::make_mut(&mut self.shared).body_timeout = timeout;
        self
    }
}

impl<S> Layer<S> for AuthChainLayer {
    type Service = AuthChain<S>;

    fn layer(&self, inner: S) -> AuthChain<S> {
        AuthChain {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthChainLayer`] makes.
#[derive(Clone, Debug)]
pub struct AuthChain<S> {
    inner: S,
    layer: AuthChainLayer,
}

impl<S> AuthChain<S> {
    /// Wraps `inner` with `layer`'s chain.
    pub fn new(inner: S, layer: AuthChainLayer) -> Self {
        AuthChain { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// The response future of [`AuthChain`].
pub struct ResponseFuture<ResBody, E> {
    kind: Kind<ResBody, E>,
}

enum Kind<ResBody, E> {
    /// Refused before the chain ran: the answer.
    Answered(Option<Response<ResBody>>),
    /// The chain, then the inner service's call.
    Running(BoxFuture<Response<ResBody>, E>),
}

impl<ResBody, E> fmt::Debug for ResponseFuture<ResBody, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Answered(_) => "answered",
            Kind::Running(_) => "running",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

// Nothing in it is ever pinned: the response is moved out, the future is
// pinned in its box.
impl<ResBody, E> Unpin for ResponseFuture<ResBody, E> {}

impl<ResBody, E> Future for ResponseFuture<ResBody, E> {
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().kind {
            Kind::Answered(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after it completed"),
            },
            Kind::Running(future) => future.as_mut().poll(cx),
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for AuthChain<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: http_body::Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if ambiguous_host(&request) {
            let response = plain(StatusCode::BAD_REQUEST, "ambiguous host");
            return ResponseFuture {
                kind: Kind::Answered(Some(response)),
            };
        }
        // The clone is not ready: keep the one that is (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let shared = self.layer.shared.clone();
        let future = Box::pin(async move {
            let response_headers = match authorize(&shared, &mut request).await {
                Ok(response_headers) => response_headers,
                Err(response) => return Ok(response),
            };
            let mut response = inner.call(request).await?;
            apply_response_headers(&response_headers, response.headers_mut());
            Ok(response)
        });
        ResponseFuture {
            kind: Kind::Running(future),
        }
    }
}

/// Runs the chain over `request` (its body read first, up to the limit,
/// with `buffer_body`) and leaves it as the inner service should get it:
/// `Ok` with the allow's response headers, or the answer for the client.
async fn authorize<B, ResBody>(
    shared: &Shared,
    request: &mut Request<B>,
) -> Result<Vec<HeaderMutation>, Response<ResBody>>
where
    B: http_body::Body + From<Bytes>,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes>,
{
    let body = match shared.body_limit {
        None => None,
        Some(limit) => {
            let body = mem::replace(request.body_mut(), B::from(Bytes::new()));
            let (bytes, _) = read_body(body, limit, shared.body_timeout, None)
                .await
                .map_err(|(status, reason)| plain(status, reason))?;
            *request.body_mut() = B::from(bytes.clone());
            Some(bytes)
        }
    };
    let Some(chain) = shared.chain() else {
        return Err(plain(StatusCode::FORBIDDEN, ""));
    };
    let mut auth = read(request, body);
    let decision = authchain_core::transport::authorize_forwarded(&chain, &mut auth).await;
    decided(&chain, decision, auth, request)
}

/// The chain's view of `request`, read into this thread's spare (given
/// back by [`decided`]). The headers and extensions move into it, to come
/// back for the inner service.
fn read<B>(request: &mut Request<B>, body: Option<Bytes>) -> Box<AuthorizationRequest> {
    let mut auth = empty_request();
    auth.method = request.method().clone();
    auth.path.push_str(path_of(request.uri()));
    if let Some(scheme) = request.uri().scheme_str() {
        auth.scheme.push_str(scheme);
    }
    let (host, id) = (
        request.headers().get(HOST),
        request.headers().get(&X_REQUEST_ID),
    );
    auth.host.push_str(host_of(request.uri(), host));
    auth.protocol.push_str(protocol(request.version()));
    if let Some(id) = id.and_then(|v| v.to_str().ok()) {
        auth.id.push_str(id);
    }
    auth.body = body;
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        auth.source = authchain_core::Peer::from_address(info.0);
    }
    // Swapped, not taken: the spare's empty map and extensions go back
    // with it.
    mem::swap(&mut auth.headers, request.headers_mut());
    mem::swap(&mut auth.extensions, request.extensions_mut());
    auth
}

/// What the chain's `decision` makes of `request`: for an allow, the
/// request as the chain left it (headers, extensions, path and query, and
/// an [`AuthContext`]) and the allow's response headers; for a deny (or
/// a path that is not one), the answer. Gives `auth` back.
fn decided<B, ResBody: From<Bytes>>(
    chain: &Chain,
    decision: Decision,
    mut auth: Box<AuthorizationRequest>,
    request: &mut Request<B>,
) -> Result<Vec<HeaderMutation>, Response<ResBody>> {
    let allow = match decision {
        Decision::Allow(allow) => allow,
        Decision::Deny(deny) => {
            give_back(auth);
            return Err(deny_response(deny));
        }
    };
    mem::swap(request.headers_mut(), &mut auth.headers);
    mem::swap(request.extensions_mut(), &mut auth.extensions);
    let state = mem::take(&mut auth.state);
    let path = (auth.path != path_of(request.uri())).then(|| mem::take(&mut auth.path));
    give_back(auth);
    if let Some(path) = path {
        match with_path(request.uri(), path) {
            Some(uri) => *request.uri_mut() = uri,
            None => {
                tracing::warn!(
                    config = chain.name(),
                    "a step produced an invalid path or query; denying"
                );
                return Err(plain(StatusCode::FORBIDDEN, ""));
            }
        }
    }
    request.extensions_mut().insert(AuthContext {
        config: chain.shared_name(),
        user: allow.user_info,
        state,
        metadata: allow.dynamic_metadata,
    });
    Ok(allow.response_headers)
}

/// The request target's path and query: `/` for an absolute-form target
/// without a path, nothing for an authority-form one (CONNECT), which the
/// chain then refuses.
fn path_of(uri: &Uri) -> &str {
    match uri.path_and_query() {
        Some(path) => path.as_str(),
        None if uri.scheme().is_some() => "/",
        None => "",
    }
}

/// Whether the request names its host twice, or two ways that differ: two
/// `Host` lines, a `Host` beside a different authority (an absolute-form
/// target, HTTP/2's `:authority`), or a `Host` the chain cannot read. The
/// chain would judge one host and the app might read the other, so such a
/// request is a 400 (RFC 9112 §3.2, RFC 9113 §8.3.1).
fn ambiguous_host<B>(request: &Request<B>) -> bool {
    let mut hosts = request.headers().get_all(HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    // A `Host` that is not visible ASCII would be judged as no host.
    if second.is_some() || first.is_some_and(|h| h.to_str().is_err()) {
        return true;
    }
    match (request.uri().authority(), first) {
        (Some(authority), Some(host)) => !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes()),
        _ => false,
    }
}

/// The request's host: its URI's authority, else its `Host` header.
fn host_of<'a>(uri: &'a Uri, header: Option<&'a HeaderValue>) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| header?.to_str().ok())
        .unwrap_or_default()
}

fn with_path(uri: &Uri, path: String) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path).ok()?);
    Uri::from_parts(parts).ok()
}

/// The response a client gets for a deny: its status, headers and body.
pub fn deny_response<ResBody: From<Bytes>>(deny: Deny) -> Response<ResBody> {
    let mut response = Response::new(ResBody::from(deny.body));
    *response.status_mut() = deny.status;
    *response.headers_mut() = deny.headers;
    response
}

/// Applies response header mutations (for callers that build their own
/// responses).
pub fn apply_response_headers(mutations: &[HeaderMutation], headers: &mut HeaderMap) {
    for m in mutations {
        m.apply(headers);
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::FromRequestParts;
    use http::StatusCode;
    use http::request::Parts;

    use super::AuthContext;

    /// Takes the [`AuthContext`] that [`AuthChainLayer`](super::AuthChainLayer)
    /// put in the request. Without the layer it is a 500: a handler that
    /// asks for it must never run unauthorized. Use `Option<AuthContext>`
    /// where the layer is optional.
    impl<S: Send + Sync> FromRequestParts<S> for AuthContext {
        type Rejection = (StatusCode, &'static str);

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts.extensions.get::<AuthContext>().cloned().ok_or((
                StatusCode::INTERNAL_SERVER_ERROR,
                "no AuthContext: is AuthChainLayer installed on this route?",
            ))
        }
    }

    impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for AuthContext {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<AuthContext>().cloned())
        }
    }
}
