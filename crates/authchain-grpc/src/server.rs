//! The `envoy.service.auth.v3.Authorization` service and a ready server.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use authchain_core::transport::{
    AnswerBy, BodyRefused, ByteBudget, ConcurrencyLimit, Connection, ConnectionLimits,
    DEFAULT_MAX_CONNECTIONS, read_body,
};
use authchain_core::{Deny, Engine};
use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::convert::{self, code};

/// The context extension that selects the AuthConfig, by default.
pub const CONFIG_ID_KEY: &str = "config_id";

/// The largest `CheckRequest` accepted by default (4 MiB, tonic's default).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// How long a gRPC connection may sit idle by default: above the hour
/// after which Envoy closes an idle upstream connection itself, so that
/// Envoy closes first and never sends a check on a connection being
/// closed under it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// How long a `CheckRequest` may take to arrive by default: a stream that
/// sends less holds its bytes no longer than this.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most checks one connection carries at once (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`); Envoy opens another connection
/// beyond it.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Envoy's ext_authz `Check` over an authchain [`Engine`].
///
/// Each request runs the chain of one AuthConfig of the engine's current
/// generation: the one named by the route's context extension `config_id`
/// (the AuthConfig's name, or `namespace.name` for a Gloo manifest), else
/// the [default](Self::default_config). Envoy route config:
///
/// ```yaml
/// typed_per_filter_config:
///   envoy.filters.http.ext_authz:
///     "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
///     check_settings: { context_extensions: { config_id: gloo-system.plugin-auth } }
/// ```
///
/// Every answer is a `CheckResponse`, never a gRPC error, so that Envoy's
/// `failure_mode_allow` cannot turn a problem here into an allow:
///
/// | case | answer |
/// |---|---|
/// | the chain allows | OK with the mutations |
/// | the chain denies | the deny (401 → `UNAUTHENTICATED`, else `PERMISSION_DENIED`) |
/// | no config loaded yet (the engine serves generation 0: the server is starting) | 503, `UNAVAILABLE`, counted as `not_ready` |
/// | no AuthConfig by that name, or none named and no default | 403, `NOT_FOUND`, counted |
/// | a `CheckRequest` that cannot be translated | 400, `INVALID_ARGUMENT`, counted |
/// | more checks in flight than the [concurrency limit](Self::concurrency_limit) | 503, `RESOURCE_EXHAUSTED`, counted |
/// | an allow Envoy cannot carry (a non-UTF-8 header value, a query parameter that would break the URL) | the config's `statusOnError` (403), `INTERNAL`, counted |
///
/// | a `CheckRequest` larger than [`max_request_bytes`](Self::max_request_bytes) | 413, `INVALID_ARGUMENT`, counted as `too_large` |
/// | a `CheckRequest` not whole within [`read_timeout`](Self::read_timeout) | 408, `INVALID_ARGUMENT`, counted as `read_timeout` |
/// | a `CheckRequest` whose bytes would pass the [byte budget](ConnectionLimits::max_buffered_bytes) of the checks being read and answered | 503, `RESOURCE_EXHAUSTED`, counted as shed |
/// | a `CheckRequest` tonic cannot decode | 400, `INVALID_ARGUMENT`, counted as `invalid_request` |
///
/// # Metrics
///
/// `authchain_grpc_rejected_total` with label `reason` = `not_ready`,
/// `unknown_config`, `invalid_request`, `too_large`, `read_timeout` or
/// `invalid_decision` (no config name: for an unknown
/// one, that would be the request's to choose);
/// the chains count their own decisions (see `authchain-core`).
#[derive(Clone)]
pub struct ExtAuthzService {
    engine: Arc<Engine>,
    default_config: Option<Arc<str>>,
    config_key: Arc<str>,
    max_request_bytes: usize,
    read_timeout: Duration,
    limit: Option<ConcurrencyLimit>,
    connections: ConnectionLimits,
    readiness: watch::Receiver<bool>,
}

impl fmt::Debug for ExtAuthzService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtAuthzService")
            .field("default_config", &self.default_config)
            .field("config_key", &self.config_key)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("read_timeout", &self.read_timeout)
            .field("limit", &self.limit)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl ExtAuthzService {
    /// A service over `engine`, with no default AuthConfig.
    pub fn new(engine: Arc<Engine>) -> Self {
        ExtAuthzService {
            engine,
            default_config: None,
            config_key: Arc::from(CONFIG_ID_KEY),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            read_timeout: DEFAULT_READ_TIMEOUT,
            limit: None,
            connections: ConnectionLimits::new(DEFAULT_MAX_CONNECTIONS, DEFAULT_IDLE_TIMEOUT),
            // Ready, for good: its sender is gone.
            readiness: watch::channel(true).1,
        }
    }

    /// How many connections the `serve` functions keep open, and for how
    /// long an idle one (4096, [`DEFAULT_IDLE_TIMEOUT`]; a tonic server of
    /// your own sets its own); and the bytes of the checks read and
    /// answered at once, on any server (64 MiB).
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connections = limits;
        self
    }

    /// Sheds checks beyond `limit`: they are answered at once with 503 and `RESOURCE_EXHAUSTED`, which Envoy
    /// passes to the client as 503 whatever its `failure_mode_allow`.
    pub fn concurrency_limit(mut self, limit: ConcurrencyLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The AuthConfig for requests whose route names none.
    pub fn default_config(mut self, name: impl Into<String>) -> Self {
        self.default_config = Some(Arc::from(name.into()));
        self
    }

    /// The context extension that names the AuthConfig (default `config_id`).
    pub fn config_key(mut self, key: impl Into<String>) -> Self {
        self.config_key = Arc::from(key.into());
        self
    }

    /// The largest encoded `CheckRequest` read (default 4 MiB); a larger
    /// one is denied with 413 unread. Set it above Envoy's
    /// `with_request_body.max_request_bytes` plus headers.
    pub fn max_request_bytes(mut self, limit: usize) -> Self {
        self.max_request_bytes = limit;
        self
    }

    /// How long a `CheckRequest` may take to arrive once its stream opened
    /// (default [`DEFAULT_READ_TIMEOUT`]); a later one is denied with 408.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The health service of the `serve` functions (`grpc.health.v1`, for
    /// the server as a whole, `""`, and for the `Authorization` service)
    /// reports SERVING while `ready` is true, NOT_SERVING otherwise (a
    /// server starting, or draining before it stops). Without it, SERVING
    /// until the shutdown signal.
    pub fn readiness(mut self, ready: watch::Receiver<bool>) -> Self {
        self.readiness = ready;
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The tonic service, to add to a server of your own:
    /// `Server::builder().add_service(service.into_server())`.
    pub fn into_server(self) -> ExtAuthzServer {
        let (limit, read_timeout) = (self.max_request_bytes, self.read_timeout);
        // The gRPC frame's 5 bytes around the message.
        let max_body = limit.saturating_add(5);
        let budget = self.connections.byte_budget(max_body, "grpc");
        ExtAuthzServer {
            inner: AuthorizationServer::new(self).max_decoding_message_size(limit),
            max_body,
            read_timeout,
            budget,
        }
    }

    /// Answers one `CheckRequest` (what the gRPC method does, without the
    /// transport).
    pub async fn check_request(&self, check: CheckRequest) -> CheckResponse {
        self.check_by(check, None).await
    }

    /// [`check_request`](Self::check_request), answered by `answer_by` (a
    /// tenth before the caller's `grpc-timeout` ends) when given.
    async fn check_by(&self, check: CheckRequest, answer_by: Option<AnswerBy>) -> CheckResponse {
        let _permit = match self.limit.as_ref().map(|l| l.try_acquire("grpc")) {
            Some(None) => {
                return convert::denied(
                    code::RESOURCE_EXHAUSTED,
                    "too many checks in flight",
                    Deny::new(StatusCode::SERVICE_UNAVAILABLE),
                );
            }
            permit => permit.flatten(),
        };
        let (mut request, sent) = match convert::to_request(check) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(error = %e, "rejecting CheckRequest");
                rejected("invalid_request");
                return convert::denied(
                    code::INVALID_ARGUMENT,
                    &e.to_string(),
                    Deny::new(StatusCode::BAD_REQUEST),
                );
            }
        };
        let generation = self.engine.current();
        if generation.number() == 0 {
            rejected("not_ready");
            return convert::denied(
                code::UNAVAILABLE,
                "no config serves yet",
                Deny::new(StatusCode::SERVICE_UNAVAILABLE),
            );
        }
        let name = match request.context.get(&*self.config_key) {
            Some(name) => Some(name.as_str()),
            None => self.default_config.as_deref(),
        };
        let Some(chain) = name.and_then(|n| generation.chain(n)) else {
            let message = match name {
                Some(n) => format!(
                    "no AuthConfig named {:?} in generation {}",
                    convert::truncate(n),
                    generation.number()
                ),
                None => format!(
                    "the route sets no context extension '{}' and there is no default AuthConfig",
                    self.config_key
                ),
            };
            tracing::warn!(%message, "denying request");
            rejected("unknown_config");
            return convert::denied(code::NOT_FOUND, &message, Deny::new(StatusCode::FORBIDDEN));
        };
        if let Some(by) = answer_by {
            request.extensions.insert(by);
        }
        let decision = authchain_core::transport::authorize_via(
            chain,
            &mut request,
            authchain_core::transport::Transport::Grpc,
        )
        .await;
        match convert::to_check_response(decision, &sent) {
            Ok(response) => response,
            Err(e) => {
                tracing::error!(config = %chain.name(), error = %e, "denying: the chain's allow cannot be sent to Envoy");
                rejected("invalid_decision");
                convert::denied(
                    code::INTERNAL,
                    &e.to_string(),
                    Deny::new(chain.status_on_error()),
                )
            }
        }
    }
}

/// The gRPC service of an [`ExtAuthzService`]
/// ([`into_server`](ExtAuthzService::into_server)): tonic's, but for a
/// `CheckRequest` refused before any handler (over the size limit, late,
/// not decodable, compressed in a way tonic does not know). Envoy would
/// take such an error for a failed check, and pass the request under its
/// `failure_mode_allow`: it is a deny instead (413 for the size, 408 for
/// the time, 503 past the byte budget, else 400).
#[derive(Debug, Clone)]
pub struct ExtAuthzServer {
    inner: AuthorizationServer<ExtAuthzService>,
    max_body: usize,
    read_timeout: Duration,
    budget: ByteBudget,
}

impl NamedService for ExtAuthzServer {
    const NAME: &'static str = <AuthorizationServer<ExtAuthzService> as NamedService>::NAME;
}

impl<B> tower_service::Service<http::Request<B>> for ExtAuthzServer
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<authchain_core::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = RefusedAsDeny;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut inner = self.inner.clone();
        let (max_body, read_timeout) = (self.max_body, self.read_timeout);
        let budget = self.budget.clone();
        // The message is read whole, within the limits, before tonic
        // decodes it: a stream that stalls holds its bytes only so long.
        // The caller's time runs from here, while the message comes.
        let arrived = Arrived(std::time::Instant::now());
        RefusedAsDeny(Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(arrived);
            let (body, _held) = match read_body(body, max_body, read_timeout, Some(&budget)).await {
                Ok(read) => read,
                Err(BodyRefused::TooLarge) => {
                    return Ok(refused(Refusal::TooLarge, "over the limit"));
                }
                Err(BodyRefused::Late) => return Ok(refused(Refusal::Late, "not whole in time")),
                Err(BodyRefused::Shed) => {
                    return Ok(refused(Refusal::Shed, "over the byte budget"));
                }
                Err(e) => return Ok(refused(Refusal::Invalid, &format!("{e:?}"))),
            };
            let request = http::Request::from_parts(parts, http_body_util::Full::new(body));
            tower_service::Service::call(&mut inner, request).await
        }))
    }
}

/// When [`ExtAuthzServer`] took a call, before it read its message.
#[derive(Debug, Clone, Copy)]
struct Arrived(std::time::Instant);

/// The future of [`ExtAuthzServer`]: tonic's answer, with a refusal of a
/// `CheckRequest` before the handler turned into a deny.
pub struct RefusedAsDeny(BoxFuture<http::Response<Body>, Infallible>);

impl fmt::Debug for RefusedAsDeny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefusedAsDeny").finish_non_exhaustive()
    }
}

impl Future for RefusedAsDeny {
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = std::task::ready!(self.0.as_mut().poll(cx));
        // The handler answers every check with a CheckResponse: a status
        // here is tonic's, from before the handler (a message over the
        // limit, one that does not decode, an unknown compression).
        let Some(status) = response.extensions().get::<Status>() else {
            return Poll::Ready(Ok(response));
        };
        let refusal = match status.code() {
            tonic::Code::OutOfRange => Refusal::TooLarge,
            _ => Refusal::Invalid,
        };
        Poll::Ready(Ok(refused(refusal, status.message())))
    }
}

/// Why a `CheckRequest` was refused before the handler.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    TooLarge,
    Late,
    Invalid,
    /// Its bytes would pass the listener's byte budget.
    Shed,
}

/// The deny that answers a refused `CheckRequest`, logged (with `why`)
/// and counted.
fn refused(refusal: Refusal, why: &str) -> http::Response<Body> {
    let (reason, http_status, message) = match refusal {
        // Counted as shed by the budget, answered as a check beyond the
        // concurrency limit is.
        Refusal::Shed => {
            return unary_ok(&convert::denied(
                code::RESOURCE_EXHAUSTED,
                "too many bytes of checks in flight",
                Deny::new(StatusCode::SERVICE_UNAVAILABLE),
            ));
        }
        Refusal::TooLarge => (
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "the CheckRequest is larger than the server's maxRequestBytes",
        ),
        Refusal::Late => (
            "read_timeout",
            StatusCode::REQUEST_TIMEOUT,
            "the CheckRequest did not arrive within the server's readTimeout",
        ),
        Refusal::Invalid => (
            "invalid_request",
            StatusCode::BAD_REQUEST,
            "the CheckRequest cannot be read",
        ),
    };
    tracing::warn!(error = ?why, "denying a CheckRequest refused before the check");
    rejected(reason);
    let deny = convert::denied(code::INVALID_ARGUMENT, message, Deny::new(http_status));
    unary_ok(&deny)
}

/// A whole gRPC answer of one message with status OK.
fn unary_ok(message: &CheckResponse) -> http::Response<Body> {
    use http_body_util::BodyExt;
    let encoded = prost::Message::encode_to_vec(message);
    let mut framed = Vec::with_capacity(5 + encoded.len());
    framed.push(0); // not compressed
    // A deny's message is a few hundred bytes: the length fits.
    framed.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&encoded);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = http_body_util::Full::new(bytes::Bytes::from(framed))
        .with_trailers(async move { Some(Ok(trailers)) });
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Counts a rejected check by its reason alone: the name of an unknown
/// config comes from the request, and a label from there would let a
/// caller grow the metrics without bound.
fn rejected(reason: &'static str) {
    metrics::counter!("authchain_grpc_rejected_total", "reason" => reason).increment(1);
}

#[tonic::async_trait]
impl Authorization for ExtAuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // Envoy's `timeout` for the check, after which tonic drops this
        // answer and Envoy's `failure_mode_allow` may pass the request:
        // the chain answers a tenth before, counting from the call's
        // start (a large message takes a while to come).
        let arrived = request
            .extensions()
            .get::<Arrived>()
            .map_or_else(std::time::Instant::now, |a| a.0);
        let answer_by = grpc_timeout(request.metadata()).and_then(|t| AnswerBy::within(arrived, t));
        Ok(Response::new(
            self.check_by(request.into_inner(), answer_by).await,
        ))
    }
}

/// The `grpc-timeout` of a call (gRPC over HTTP/2: up to 8 digits and a
/// unit, `H`, `M`, `S`, `m`, `u` or `n`), if it has a valid one.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Serves `service` on `addr` with the gRPC health service
/// (`grpc.health.v1`), until the process ends.
pub async fn serve(
    addr: SocketAddr,
    service: ExtAuthzService,
) -> Result<(), authchain_core::BoxError> {
    serve_with_shutdown(addr, service, std::future::pending()).await
}

/// Serves `service` on `addr` with the health service until `signal`
/// completes, then reports NOT_SERVING, stops accepting and lets the
/// requests in flight finish.
pub async fn serve_with_shutdown<F>(
    addr: SocketAddr,
    service: ExtAuthzService,
    signal: F,
) -> Result<(), authchain_core::BoxError>
where
    F: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind(addr).await?;
    Ok(serve_listener_with_shutdown(listener, service, signal).await?)
}

/// As [`serve_with_shutdown`], on a listener already bound (tests bind
/// `127.0.0.1:0` and read the port back).
pub async fn serve_listener_with_shutdown<F>(
    listener: TcpListener,
    service: ExtAuthzService,
    signal: F,
) -> Result<(), tonic::transport::Error>
where
    F: Future<Output = ()> + Send,
{
    let limits = service.connections;
    let places = ConcurrencyLimit::new(limits.max_connections);
    // At the most connections, none is accepted until one closes.
    let incoming =
        futures::stream::unfold((listener, places), move |(listener, places)| async move {
            let place = places.acquire().await;
            let accepted = match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    Ok(Accepted(Connection::new(
                        stream,
                        limits.idle_timeout,
                        place,
                    )))
                }
                Err(e) => {
                    // Out of file descriptors, say: tonic would try again
                    // at once, and log nothing.
                    tracing::warn!(error = %e, "cannot accept a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(e)
                }
            };
            Some((accepted, (listener, places)))
        });
    let (reporter, health) = tonic_health::server::health_reporter();
    let follower = follow_readiness(reporter.clone(), service.readiness.clone()).await;
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // hyper's defaults, which tonic's `None`s would turn off.
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_pending_accept_reset_streams(Some(20))
        .add_service(health)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, async move {
            signal.await;
            follower.abort();
            set_health(&reporter, false).await;
        })
        .await
}

/// Reports what `ready` says, now and, from a task (returned, to stop at
/// shutdown), at each change.
async fn follow_readiness(
    reporter: HealthReporter,
    mut ready: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let now = *ready.borrow_and_update();
    set_health(&reporter, now).await;
    tokio::spawn(async move {
        while ready.changed().await.is_ok() {
            let serving = *ready.borrow_and_update();
            set_health(&reporter, serving).await;
        }
    })
}

/// Sets the server's health and the `Authorization` service's.
async fn set_health(reporter: &HealthReporter, serving: bool) {
    let status = match serving {
        true => ServingStatus::Serving,
        false => ServingStatus::NotServing,
    };
    for name in ["", <ExtAuthzServer as NamedService>::NAME] {
        reporter.set_service_status(name, status).await;
    }
}

/// A connection the gRPC listener accepted, as tonic takes it.
struct Accepted(Connection<TcpStream>);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().connect_info()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// The CheckResponse of a gRPC answer of one message.
    async fn check_response(response: http::Response<Body>) -> CheckResponse {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        prost::Message::decode(&body[5..]).unwrap()
    }

    /// The chain answers a tenth before the caller's `grpc-timeout`, which
    /// runs from the call's start, not from when its message has come.
    #[tokio::test]
    async fn the_caller_s_time_runs_from_the_call_s_start() {
        use authchain_core::{
            Allow, AuthConfig, Engine, Format, PluginRegistry, plugin_fn, service_fn,
        };
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
        let mut registry = PluginRegistry::new();
        registry.register(plugin_fn("Slow", |_: serde_json::Value, _| {
            Ok(Arc::new(service_fn(|_| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Allow::new().into())
                })
            })))
        }));
        let engine = Engine::new(registry);
        let yaml = "name: slow\nconfigs:\n- pluginAuth: {name: Slow}\n";
        engine
            .load(&AuthConfig::parse("t.yaml", yaml, Format::Yaml).unwrap())
            .await
            .unwrap();
        let server = ExtAuthzService::new(Arc::new(engine)).into_server();
        let check = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    time: None,
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/x".into(),
                        ..Default::default()
                    }),
                }),
                context_extensions: [("config_id".to_owned(), "slow".to_owned())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
        };
        let message = prost::Message::encode_to_vec(&check);
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&message);
        // The message comes 1.5 s into the caller's 3 s.
        let body = http_body_util::StreamBody::new(futures::stream::once(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(framed)))
        }));
        let request = http::Request::post("/envoy.service.auth.v3.Authorization/Check")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "3S")
            .body(body)
            .unwrap();
        let started = std::time::Instant::now();
        let mut server = server;
        let response = tower_service::Service::call(&mut server, request)
            .await
            .unwrap();
        let answer = check_response(response).await;
        let elapsed = started.elapsed();
        assert_ne!(answer.status.unwrap().code, code::OK);
        // A tenth before the 3 s (2.7 s); from the message, 4.2 s.
        assert!(elapsed < Duration::from_millis(3600), "{elapsed:?}");
    }

    #[test]
    fn grpc_timeouts_read_as_the_protocol_writes_them() {
        let read = |value: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&metadata)
        };
        assert_eq!(read("200m"), Some(Duration::from_millis(200)));
        assert_eq!(read("2S"), Some(Duration::from_secs(2)));
        assert_eq!(read("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(read("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "200", "200x", "123456789m", "-1S", "1.5S", "+1S"] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }

    #[tokio::test]
    async fn any_refusal_before_the_handler_is_a_deny() {
        for (status, http) in [
            (Status::out_of_range("too big"), 413),
            (Status::internal("failed to decode"), 400),
            (Status::unimplemented("unknown encoding"), 400),
        ] {
            let refused = RefusedAsDeny(Box::pin(async move { Ok(status.into_http()) }));
            let response = refused.await.unwrap();
            assert!(response.extensions().get::<Status>().is_none());
            let answer = check_response(response).await;
            assert_eq!(answer.status.unwrap().code, code::INVALID_ARGUMENT);
            let denied = match answer.http_response {
                Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(d)) => d,
                other => panic!("not a deny: {other:?}"),
            };
            assert_eq!(denied.status.unwrap().code, http);
        }
    }
}
