//! The HTTP check server: forward auth and Envoy's HTTP service mode.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use authchain_core::transport::{
    AnswerBy, ByteBudget, ConcurrencyLimit, Connection, ConnectionLimits,
};
use authchain_core::{Decision, Engine, Peer};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::check::{CheckConfig, login_as_401, respond, wants_login_as_401};
use crate::head::{DEFAULT_READ_TIMEOUT, empty_request, give_back, plain, read_body};

/// The default limit of a check's body (Envoy's `max_request_bytes` is
/// where a proxy sets what it sends).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Answers checks over HTTP from an engine's current generation; see
/// [`crate::check`] for what it reads and answers.
#[derive(Debug, Clone)]
pub struct CheckServer {
    engine: Arc<Engine>,
    /// Shared by the clones: [`reconfigure`](Self::reconfigure) on one
    /// reaches the one serving.
    config: Arc<ArcSwap<CheckConfig>>,
    body_limit: usize,
    read_timeout: std::time::Duration,
    limit: Option<ConcurrencyLimit>,
    connections: ConnectionLimits,
    budget: ByteBudget,
}

impl CheckServer {
    /// A server over `engine`, reading checks as `config` says.
    pub fn new(engine: Arc<Engine>, config: CheckConfig) -> Self {
        CheckServer {
            engine,
            config: Arc::new(ArcSwap::from_pointee(config)),
            body_limit: DEFAULT_BODY_LIMIT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            limit: None,
            connections: ConnectionLimits::default(),
            budget: ConnectionLimits::default().byte_budget(DEFAULT_BODY_LIMIT, "http"),
        }
    }

    /// Reads the checks that come after this as `config` says, on this
    /// server and on every clone of it (the one [`serve`](Self::serve)
    /// took): a reload's trusted proxies apply at once, a trust taken away
    /// included.
    pub fn reconfigure(&self, config: CheckConfig) {
        self.config.store(Arc::new(config));
    }

    /// How many connections [`serve`](Self::serve) keeps open, and for how
    /// long an idle one; and the bytes of the checks read and answered at
    /// once (a check past them is answered with 429).
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connections = limits;
        self.budget = self.connections.byte_budget(self.body_limit, "http");
        self
    }

    /// Sheds checks beyond `limit`: they are answered at once with
    /// `429 Too Many Requests`, a deny on every proxy. (Not a 5xx, which
    /// Envoy's HTTP service passes under `failure_mode_allow`; nginx turns
    /// any status but 401 and 403 into a 500 for its client.)
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
        self.budget = self.connections.byte_budget(self.body_limit, "http");
        self
    }

    /// Answers one check from `peer`.
    pub async fn check<B>(&self, request: Request<B>, peer: Option<SocketAddr>) -> Response<Bytes>
    where
        B: http_body::Body,
        B::Error: Into<authchain_core::BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        // Envoy's HTTP service says how long it waits from now: past that,
        // its `failure_mode_allow` would pass the request whatever the
        // steps. The header is the hop's, not the client's: steps do not
        // see it.
        let envoy_waits = parts
            .headers
            .remove(&ENVOY_TIMEOUT)
            .and_then(|value| envoy_timeout(&value))
            .and_then(|t| AnswerBy::within(std::time::Instant::now(), t));
        let peer = peer.map(Peer::from_address).unwrap_or_default();
        // Most checks carry no body (nginx, Traefik and Caddy never send
        // one). A check whose body is still coming holds no permit yet: a
        // slow client must not hold one another check needs.
        let (body, _held) = if body.is_end_stream() {
            (None, None)
        } else {
            match read_body(body, self.body_limit, self.read_timeout, Some(&self.budget)).await {
                Ok((body, held)) => (Some(body), Some(held)),
                Err((status, _)) => return plain(status, ""),
            }
        };
        let _permit = match self.limit.as_ref().map(|l| l.try_acquire("http")) {
            Some(None) => {
                return plain(StatusCode::TOO_MANY_REQUESTS, "too many checks in flight");
            }
            permit => permit.flatten(),
        };
        let mut request = empty_request();
        let check_config = self.config.load_full();
        let (config, proxy) = match check_config.read_into(&mut parts, body, peer, &mut request) {
            Ok(read) => read,
            Err(refused) => {
                give_back(request);
                metrics::counter!("authchain_http_checks_refused_total", "status" => refused.status.as_str().to_owned())
                    .increment(1);
                tracing::info!(status = refused.status.as_u16(), reason = %refused.reason, "refusing a check");
                return plain(refused.status, refused.reason);
            }
        };
        let forward_auth = proxy.is_some();
        let generation = self.engine.current();
        if generation.number() == 0 {
            // Not a 503: Envoy's HTTP service passes a 5xx under
            // `failure_mode_allow`.
            metrics::counter!("authchain_http_checks_refused_total", "status" => "403")
                .increment(1);
            return plain(StatusCode::FORBIDDEN, "no config serves yet");
        }
        let Some(chain) = config.and_then(|c| generation.chain(c)) else {
            metrics::counter!("authchain_unknown_config_total", "transport" => "http").increment(1);
            // The name is the client's: quoted, and cut.
            let name = config.map(|c| c.chars().take(64).collect::<String>());
            tracing::warn!(config = ?name, "check for an unknown AuthConfig; denying");
            return plain(StatusCode::FORBIDDEN, "unknown AuthConfig");
        };
        // A forward-auth proxy sends the app the client's headers, and
        // replaces those its config copies from the allow, by their own
        // name, and no other: another spelling of an identity header is
        // refused here, and the name itself once the allow shows that it
        // sets none (a `stripClientHeaders` entry). Not the headers the
        // proxy writes into every check itself.
        let mut carried: Vec<http::HeaderName> = Vec::new();
        if let Some(proxy) = proxy {
            for name in request.headers.keys() {
                if !proxy.written().contains(name) && authchain_core::transport::strips(chain, name)
                {
                    carried.push(name.clone());
                }
            }
            if let Some(other) = carried
                .iter()
                .find(|name| !chain.stripped_headers().contains(name))
            {
                let refused = refuse_identity(other, "spells an identity header otherwise");
                give_back(request);
                return refused;
            }
        }
        if !forward_auth && let Some(by) = envoy_waits {
            request.extensions.insert(by);
        }
        let as_401 = wants_login_as_401(&request.headers);
        let mut decision = authchain_core::transport::authorize_via(
            chain,
            &mut request,
            authchain_core::transport::Transport::Http,
        )
        .await;
        if let Decision::Allow(allow) = &decision
            && let Some(name) = carried
                .iter()
                .find(|name| !allow.headers.iter().any(|m| m.name == **name))
        {
            let refused =
                refuse_identity(name, "names an identity header that the allow does not set");
            give_back(request);
            return refused;
        }
        if as_401 {
            login_as_401(&mut decision);
        }
        // The allow's headers for the client share its answer with those
        // for the app, and a proxy copies to the app the names its config
        // lists (Traefik's authResponseHeaders, nginx's auth_request_set,
        // Envoy's allowed_upstream_headers): one named as an identity
        // header (an opaAuth policy's) would reach the app as one.
        if let Decision::Allow(allow) = &mut decision {
            allow
                .response_headers
                .retain(|m| !authchain_core::transport::strips(chain, &m.name));
        }
        // A forward-auth proxy removes no header (the client's identity
        // headers the allow does not replace are refused above): the
        // list, which grows with every spelling, would only fill its
        // buffer for the answer's head.
        if forward_auth && let Decision::Allow(allow) = &mut decision {
            allow.headers_to_remove.clear();
        }
        let mut response = respond(decision, std::mem::take(&mut request.headers));
        give_back(request);
        // Envoy's HTTP service (no forward-auth proxy) lets a request
        // through on a 5xx under `failure_mode_allow`: a deny is never
        // one there (Envoy answers the client 403 for it otherwise).
        if !forward_auth && response.status().is_server_error() {
            *response.status_mut() = StatusCode::FORBIDDEN;
        }
        response
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
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let server = server.clone();
                async move {
                    let response = server.check(request, Some(peer)).await;
                    Ok::<_, Infallible>(response.map(Full::new))
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
        // Closed now, not when the checks in flight are done: a proxy
        // that connects meanwhile is refused, and tries another server.
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// Where Envoy's HTTP service says how long it waits for the answer.
const ENVOY_TIMEOUT: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");

/// How long Envoy waits for a check's answer, as its
/// `x-envoy-expected-rq-timeout-ms` says (milliseconds, at most 10
/// digits); none for a malformed one, or 0 (no limit).
fn envoy_timeout(value: &http::HeaderValue) -> Option<std::time::Duration> {
    let value = value.as_bytes();
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}

/// The refusal of a forward-auth check whose client sends header `name`,
/// which the proxy would pass to the app: a 400 (nginx answers its client
/// 500).
fn refuse_identity(name: &http::HeaderName, why: &str) -> Response<Bytes> {
    tracing::info!(header = %name, "refusing a check: a client header {why}, which a forward-auth proxy would pass to the app");
    metrics::counter!("authchain_http_checks_refused_total", "status" => "400").increment(1);
    plain(
        StatusCode::BAD_REQUEST,
        "the request carries an identity header",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_as_401_sets_its_own_cookie_alone() {
        use http::HeaderValue;
        let login = authchain_core::Deny::new(StatusCode::FOUND)
            .header(
                http::header::LOCATION,
                HeaderValue::from_static("https://idp/auth"),
            )
            .header(
                http::header::SET_COOKIE,
                HeaderValue::from_static("login_3=x"),
            )
            .header(
                http::header::SET_COOKIE,
                HeaderValue::from_static("login_1=; Max-Age=0"),
            )
            .header(
                http::header::SET_COOKIE,
                HeaderValue::from_static("login_2=; Max-Age=0"),
            );
        let mut decision = Decision::Deny(login);
        login_as_401(&mut decision);
        let Decision::Deny(deny) = decision else {
            panic!("a deny stays one");
        };
        assert_eq!(deny.status, StatusCode::UNAUTHORIZED);
        let cookies: Vec<_> = deny
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .collect();
        assert_eq!(cookies, ["login_3=x"]);
        assert_eq!(deny.headers[http::header::LOCATION], "https://idp/auth");
    }

    #[test]
    fn envoy_s_timeout_is_read_when_well_formed() {
        let of = |value: &str| envoy_timeout(&http::HeaderValue::from_str(value).unwrap());
        assert_eq!(of("1500"), Some(std::time::Duration::from_millis(1500)));
        for bad in ["", "0", "-1", "1.5", "+1", "99999999999", " 1", "1s"] {
            assert_eq!(of(bad), None, "{bad:?}");
        }
    }
}
