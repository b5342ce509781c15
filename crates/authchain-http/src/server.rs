//! The HTTP check server: forward auth and Envoy's HTTP service mode.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use authchain_core::{
    AuthorizationRequest, Chain, ConcurrencyLimit, Connection, ConnectionLimits, Decision, Engine,
    Paused, Peer, Permit,
};
use bytes::Bytes;
use futures::future::Either;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::check::{CheckConfig, respond};
use crate::head::{empty_request, give_back, plain, read_body};

/// The default limit of a check's body (Envoy's `max_request_bytes` is
/// where a proxy sets what it sends).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How long a check's headers, and then its body, may take to arrive by
/// default: a client that sends less holds a connection, never a permit,
/// and not for longer than this.
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers checks over HTTP from an engine's current generation; see
/// [`crate::check`] for what it reads and answers.
#[derive(Debug, Clone)]
pub struct CheckServer {
    engine: Arc<Engine>,
    config: Arc<CheckConfig>,
    body_limit: usize,
    read_timeout: std::time::Duration,
    limit: Option<ConcurrencyLimit>,
    connections: ConnectionLimits,
}

impl CheckServer {
    /// A server over `engine`, reading checks as `config` says.
    pub fn new(engine: Arc<Engine>, config: CheckConfig) -> Self {
        CheckServer {
            engine,
            config: Arc::new(config),
            body_limit: DEFAULT_BODY_LIMIT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            limit: None,
            connections: ConnectionLimits::default(),
        }
    }

    /// How many connections [`serve`](Self::serve) keeps open, and for how
    /// long an idle one.
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connections = limits;
        self
    }

    /// Sheds checks beyond `limit`: they are answered at once with
    /// `503 Service Unavailable`. (nginx turns any
    /// status but 401 and 403 into a 500 for its client.)
    pub fn concurrency_limit(mut self, limit: ConcurrencyLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// How long a check's headers, and then its body, may take to arrive
    /// ([`DEFAULT_READ_TIMEOUT`]); a body later than that is answered with
    /// 408, headers later than that close the connection.
    pub fn read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The largest check body read; a larger one is answered with 413.
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// Answers one check from `peer`.
    pub async fn check<B>(&self, request: Request<B>, peer: Option<SocketAddr>) -> Response<Bytes>
    where
        B: http_body::Body,
        B::Error: Into<authchain_core::BoxError>,
    {
        match self.check_now(request, peer) {
            Ok(response) => response,
            Err(waiting) => waiting.finish(self).await,
        }
    }

    /// [`check`](Self::check) without a future, as far as it goes: the
    /// answer, unless the check has a body to read or a step of its chain
    /// must wait (then what is left, to finish).
    fn check_now<B>(
        &self,
        request: Request<B>,
        peer: Option<SocketAddr>,
    ) -> Result<Response<Bytes>, Waiting<B>>
    where
        B: http_body::Body,
    {
        let (parts, body) = request.into_parts();
        let peer = peer.map(Peer::from_address).unwrap_or_default();
        // Most checks carry no body (nginx, Traefik and Caddy never send
        // one): nothing to read then. A check whose body is still coming
        // holds no permit: a slow client must not hold one a check of
        // another transport needs.
        if !body.is_end_stream() {
            return Err(Waiting::Body(Box::new(Unread { parts, body, peer })));
        }
        self.decide(parts, None, peer).map_err(Waiting::Step)
    }

    /// Runs the chain the check selects, as far as it goes without
    /// waiting.
    fn decide(
        &self,
        mut parts: Parts,
        body: Option<Bytes>,
        peer: Peer,
    ) -> Result<Response<Bytes>, Box<Stepping>> {
        let permit = match self.limit.as_ref().map(|l| l.try_acquire("http")) {
            Some(None) => {
                return Ok(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many checks in flight",
                ));
            }
            permit => permit.flatten(),
        };
        let mut request = empty_request();
        let config = match self.config.read_into(&mut parts, body, peer, &mut request) {
            Ok(config) => config,
            Err(refused) => {
                give_back(request);
                metrics::counter!("authchain_http_checks_refused_total", "status" => refused.status.as_str().to_owned())
                    .increment(1);
                tracing::info!(status = refused.status.as_u16(), reason = %refused.reason, "refusing a check");
                return Ok(plain(refused.status, refused.reason));
            }
        };
        let generation = self.engine.current_ref();
        let Some(chain) = config.and_then(|c| generation.chain(c)) else {
            metrics::counter!("authchain_unknown_config_total", "transport" => "http").increment(1);
            tracing::warn!(config = ?config, "check for an unknown AuthConfig; denying");
            return Ok(plain(StatusCode::FORBIDDEN, "unknown AuthConfig"));
        };
        match chain.check_now(&mut request) {
            Ok(decision) => Ok(answer(decision, request)),
            Err(paused) => Err(Box::new(Stepping {
                chain: Arc::clone(chain),
                paused,
                request,
                _permit: permit,
            })),
        }
    }

    /// Serves checks on `listener` until `shutdown` completes, then stops
    /// accepting and waits for the checks in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.read_timeout);
        let places = ConcurrencyLimit::new(self.connections.max_connections);
        let idle = self.connections.idle_timeout;
        // One reference count to bump per check, not one per field.
        let this = Arc::new(self);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // At the most connections, none is accepted until one closes.
            let place = tokio::select! {
                place = places.acquire() => place,
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: back off instead
                        // of spinning on the error.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // A check is a small request and a small answer, and a proxy
            // waits for it: no Nagle delay on either.
            let _ = stream.set_nodelay(true);
            let server = this.clone();
            // A check that needs no waiting is answered in `call`: no
            // future of ours for hyper to hold, move and poll.
            let service =
                hyper::service::service_fn(move |request: Request<Incoming>| {
                    match server.check_now(request, Some(peer)) {
                        Ok(response) => {
                            Either::Left(std::future::ready(Ok(response.map(Full::new))))
                        }
                        Err(waiting) => {
                            let server = server.clone();
                            Either::Right(Box::pin(async move {
                                Ok::<_, Infallible>(waiting.finish(&server).await.map(Full::new))
                            }))
                        }
                    }
                });
            let stream = Connection::new(stream, idle, place);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "check connection ended with an error");
                }
            });
        }
        graceful.shutdown().await;
        Ok(())
    }
}

/// A check that must wait: for its body, or for a step of its chain.
enum Waiting<B> {
    Body(Box<Unread<B>>),
    Step(Box<Stepping>),
}

/// A check whose body is still to read.
struct Unread<B> {
    parts: Parts,
    body: B,
    peer: Peer,
}

/// The answer to a check that `decision` ends; `request` is given back.
fn answer(decision: Decision, mut request: Box<AuthorizationRequest>) -> Response<Bytes> {
    let headers = std::mem::take(&mut request.headers);
    give_back(request);
    respond(decision, headers)
}

/// A check whose chain paused at a step that must wait.
struct Stepping {
    chain: Arc<Chain>,
    paused: Paused,
    request: Box<AuthorizationRequest>,
    /// Held until the check is answered.
    _permit: Option<Permit>,
}

impl<B> Waiting<B>
where
    B: http_body::Body,
    B::Error: Into<authchain_core::BoxError>,
{
    async fn finish(self, server: &CheckServer) -> Response<Bytes> {
        let stepping = match self {
            Waiting::Step(stepping) => stepping,
            Waiting::Body(unread) => {
                let Unread { parts, body, peer } = *unread;
                let read = read_body(body, server.body_limit);
                let body = match tokio::time::timeout(server.read_timeout, read).await {
                    Ok(Ok(body)) => Some(body).filter(|b| !b.is_empty()),
                    Ok(Err((status, _))) => return plain(status, ""),
                    Err(_) => {
                        tracing::debug!("a check's body did not arrive in time");
                        return plain(StatusCode::REQUEST_TIMEOUT, "");
                    }
                };
                match server.decide(parts, body, peer) {
                    Ok(response) => return response,
                    Err(stepping) => stepping,
                }
            }
        };
        let Stepping {
            chain,
            paused,
            mut request,
            _permit,
        } = *stepping;
        let decision = chain.resume(paused, &mut request).await;
        answer(decision, request)
    }
}
