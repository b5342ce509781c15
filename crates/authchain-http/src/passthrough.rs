//! The HTTP passthrough step (`passThroughAuth.http`): asks another HTTP
//! auth server, as Gloo's "Http Passthrough Auth" does.
//!
//! ```yaml
//! configs:
//! - passThroughAuth:
//!     http:
//!       url: http://auth.internal:9001/auth    # POSTed to; its path is kept
//!       connectionTimeout: 5s                  # the whole call (default 5s)
//!       responseHeaderTimeout: 1s              # from the call written to the answer's head
//!       connectionPool: { maxConns: 100, idleTimeout: 30s }   # Gloo's defaults: 100, none
//!       tlsConfig:                             # Gloo's (https only): see authchain_core::tls
//!         secretRef: { name: passthrough-mtls, namespace: gloo-system }
//!         sslParams: { minimumProtocolVersion: TLSv1_3 }
//!       # or authchain's `tls: { caFile: /etc/authchain/ca.pem }` (or caPem), not both
//!       request:
//!         allowedHeaders: [authorization]      # copied from the client request
//!         headersToAdd: { x-caller: gateway }  # set on the call
//!         passThroughState: true               # JSON body {"state": ...}
//!         passThroughFilterMetadata: true      #           {"filterMetadata": ...}
//!         passThroughBody: true                #           {"body": "..."}
//!                                              # and the step's config: {"config": ...}
//!       response:
//!         allowedUpstreamHeaders: [x-auth-user]          # appended upstream
//!         allowedUpstreamHeadersToOverwrite: [x-user-id] # set upstream
//!         allowedClientHeadersOnDenied: [www-authenticate]
//!         allowedClientHeadersOnSuccess: [x-ratelimit-remaining]   # to the client on a 200
//!         readStateFromResponse: true          # {"state": {...}} merged into the state
//!     config: { tenant: acme }                 # in the JSON body, as Gloo sends it
//!     failureModeAllow: true                   # outages pass (counted): see below
//! ```
//!
//! A 200 allows; any other status below 500 denies with that status, the
//! listed client headers and the body. An outage (a 502, 503 or 504, a
//! timeout, a connection that cannot be made) is a step error, which the
//! chain turns into a deny unless `failureModeAllow` (then counted in
//! `http_passthrough_bypass_failure` too). Another 5xx, or a connection
//! the auth server closes with no answer once it has the request, is a
//! handler failing on the request, which a client can bring about: it
//! fails closed whatever `failureModeAllow` says. So does a timeout, a
//! 502, 503 or 504, or a connection that cannot be made, while the auth
//! server answered another call (any step's, of any AuthConfig, to its
//! scheme, host and port) within
//! the call's time (`connectionTimeout`, at most nine tenths of the step's
//! `timeout`), and a body that does not come in time after its head: the
//! server is up, and a client can make its own call slow past the
//! server's or a gateway's time, queue it behind a flood, or trip a rate
//! limit in front of it. A header listed for
//! upstream or for the client but absent from the answer adds nothing.
//! The upstream headers are identity headers: the chain strips
//! client-sent copies. The client headers on success overwrite the
//! client's response's. No list names a connection or
//! framing header, and `allowedHeaders` does not name `host`: the call's
//! host is the URL's (a client's would pick the virtual host at the auth
//! server).
//!
//! A state body that does not parse is a deny. A returned state may carry
//! the names it was sent with the values they hold (a server that sends
//! the whole state back, as Gloo's examples do), and new names; one that
//! changes a name a step before wrote (`{"state": {"jwt": {"sub":
//! "admin"}}}` after a `jwt` step) fails closed whatever
//! `failureModeAllow` says: a later step, such as `opaAuth`, would judge
//! it.
//!
//! `connectionTimeout` bounds the whole call: waiting for a pool slot,
//! connecting, the TLS handshake, and reading the answer. With
//! `responseHeaderTimeout` too, the answer's head must also come within it
//! once the call is written; whichever limit is hit first fails the call.
//! `connectionPool.maxConns` bounds the calls in flight (HTTP/1.1: one per
//! connection) and the idle connections kept; a call beyond it waits for a
//! slot within `connectionTimeout`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use authchain_core::tls::{ClientTls, TlsConfig, rustls_config};
use authchain_core::transport::{LastAnswer, is_gateway_failure};
use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, BuildContext, ConfigDuration, Decision, Deny,
    Error, ExtAuthPlugin, HeaderAction, HeaderMutation, async_trait,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore};

/// The default time limit of a call (Gloo's `connectionTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer body read (for `readStateFromResponse` and denies).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The calls in flight when `connectionPool.maxConns` is not set (Gloo's).
pub const DEFAULT_MAX_CONNS: u32 = 100;

/// `passThroughAuth` with `http`, as Gloo writes it. Its `Debug` shows
/// the config's keys, not its values (which may be tokens).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassThroughHttp {
    /// The call.
    pub http: HttpSpec,
    /// Sent to the server in the JSON body's `config`, as Gloo's does.
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
}

impl std::fmt::Debug for PassThroughHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassThroughHttp")
            .field("http", &self.http)
            .field(
                "config",
                &self.config.as_ref().map(|c| c.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// Where and how to call. Its `Debug` shows the URL without the user,
/// password or query it may carry.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSpec {
    /// The URL to POST to.
    pub url: String,
    /// The call's time limit (default 5 s).
    #[serde(default)]
    pub connection_timeout: Option<ConfigDuration>,
    /// How long the answer's head may take once the call is written
    /// (`0s` or none: only `connectionTimeout` applies).
    #[serde(default)]
    pub response_header_timeout: Option<ConfigDuration>,
    /// The connection pool to the server.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    /// Gloo's TLS for `https` URLs: a Secret and protocol parameters.
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
    /// authchain's trust for `https` URLs (not with `tlsConfig`).
    #[serde(default)]
    pub tls: Option<TlsSpec>,
    /// What the call carries.
    #[serde(default)]
    pub request: RequestSpec,
    /// What is taken from the answer.
    #[serde(default)]
    pub response: ResponseSpec,
}

impl std::fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpec")
            .field(
                "url",
                &self
                    .url
                    .parse()
                    .map_or_else(|_| "<not a URL>".to_owned(), |u| shown_url(&u)),
            )
            .field("connection_timeout", &self.connection_timeout)
            .field("response_header_timeout", &self.response_header_timeout)
            .field("connection_pool", &self.connection_pool)
            .field("tls_config", &self.tls_config)
            .field("tls", &self.tls)
            .field("request", &self.request)
            .field("response", &self.response)
            .finish()
    }
}

/// A URL as logs and `Debug` show it: scheme, host, port and path, without
/// the user, password or query it may carry.
fn shown_url(uri: &Uri) -> String {
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{}{port}{}",
        uri.scheme_str().unwrap_or_default(),
        uri.host().unwrap_or_default(),
        uri.path()
    )
}

/// Gloo's `connectionPool`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    /// The most calls in flight, and idle connections kept (`0` or none:
    /// 100).
    #[serde(default)]
    pub max_conns: Option<u32>,
    /// How long an idle connection is kept (`0s` or none: no limit).
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
}

/// The CA that signs the auth server's certificate (else the web PKI roots).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSpec {
    /// A PEM file of CA certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM CA certificates, inline.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// `request`. Its `Debug` leaves out the values of `headersToAdd` (a
/// call's own credentials).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestSpec {
    /// Client headers copied onto the call.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Headers set on the call.
    #[serde(default)]
    pub headers_to_add: BTreeMap<String, String>,
    /// Send the chain state.
    #[serde(default)]
    pub pass_through_state: bool,
    /// Send the proxy's filter metadata.
    #[serde(default)]
    pub pass_through_filter_metadata: bool,
    /// Send the request body.
    #[serde(default)]
    pub pass_through_body: bool,
}

impl std::fmt::Debug for RequestSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSpec")
            .field("allowed_headers", &self.allowed_headers)
            .field(
                "headers_to_add",
                &self.headers_to_add.keys().collect::<Vec<_>>(),
            )
            .field("pass_through_state", &self.pass_through_state)
            .field(
                "pass_through_filter_metadata",
                &self.pass_through_filter_metadata,
            )
            .field("pass_through_body", &self.pass_through_body)
            .finish()
    }
}

/// `response`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseSpec {
    /// Answer headers appended to the upstream request.
    #[serde(default)]
    pub allowed_upstream_headers: Vec<String>,
    /// Answer headers that overwrite the upstream request's.
    #[serde(default)]
    pub allowed_upstream_headers_to_overwrite: Vec<String>,
    /// Answer headers a denied client gets.
    #[serde(default)]
    pub allowed_client_headers_on_denied: Vec<String>,
    /// Answer headers an allowed client gets on its response.
    #[serde(default)]
    pub allowed_client_headers_on_success: Vec<String>,
    /// Merge `{"state": {...}}` from a 200 body into the chain state.
    #[serde(default)]
    pub read_state_from_response: bool,
}

/// The plugin for the step kind `passThroughAuth.http`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpPassthroughPlugin;

impl ExtAuthPlugin for HttpPassthroughPlugin {
    type Config = PassThroughHttp;

    fn name(&self) -> &str {
        "passThroughAuth.http"
    }

    fn build(
        &self,
        config: PassThroughHttp,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        let spec = config.http;
        let url: Uri = spec
            .url
            .parse()
            .map_err(|_| Error::config("not a valid URL").at("http.url"))?;
        let https = match url.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(Error::config("expected an http:// or https:// URL").at("http.url")),
        };
        let Some(host) = url.host() else {
            return Err(Error::config("the URL has no host").at("http.url"));
        };
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let origin = format!(
            "{}://{}:{port}",
            if https { "https" } else { "http" },
            host.trim_end_matches('.').to_ascii_lowercase()
        );
        let timeout = match spec.connection_timeout {
            Some(ConfigDuration(d)) if d.is_zero() => {
                return Err(
                    Error::config("expected a duration above zero").at("http.connectionTimeout")
                );
            }
            Some(ConfigDuration(d)) => d,
            None => DEFAULT_TIMEOUT,
        };
        let timeout = context.call_limit().map_or(timeout, |l| timeout.min(l));
        // No list passes a connection or framing header either way: each
        // message has its own.
        let names = |list: &[String], place: &str| -> Result<Vec<HeaderName>, Error> {
            list.iter()
                .enumerate()
                .map(|(i, n)| {
                    let at = || format!("{place}[{i}]");
                    let name = HeaderName::try_from(n.as_str())
                        .map_err(|_| Error::config("not a valid header name").at(at()))?;
                    if authchain_core::transport::is_framing(&name) {
                        return Err(Error::config(
                            "a connection or framing header cannot be passed on",
                        )
                        .at(at()));
                    }
                    Ok(name)
                })
                .collect()
        };
        let allowed_headers = names(&spec.request.allowed_headers, "http.request.allowedHeaders")?;
        // The call's host is the URL's: a client's would pick the virtual
        // host at the auth server (the client keeps a Host it is given).
        if let Some(i) = allowed_headers.iter().position(|n| n == http::header::HOST) {
            return Err(Error::config(
                "the call's host is the URL's; a client's cannot be passed on",
            )
            .at(format!("http.request.allowedHeaders[{i}]")));
        }
        let append = names(
            &spec.response.allowed_upstream_headers,
            "http.response.allowedUpstreamHeaders",
        )?;
        let overwrite = names(
            &spec.response.allowed_upstream_headers_to_overwrite,
            "http.response.allowedUpstreamHeadersToOverwrite",
        )?;
        // The client's virtual host, and the chain's mark of a failure it
        // let through, are not the remote's to set.
        for (list, at) in [
            (&append, "allowedUpstreamHeaders"),
            (&overwrite, "allowedUpstreamHeadersToOverwrite"),
        ] {
            let refused = |n: &HeaderName| {
                n == http::header::HOST || authchain_core::is_failure_mark(n.as_str())
            };
            if let Some(i) = list.iter().position(refused) {
                return Err(
                    Error::config(format!("a remote may not set {} upstream", list[i]))
                        .at(format!("http.response.{at}[{i}]")),
                );
            }
        }
        if let Some(i) = overwrite.iter().position(|n| append.contains(n)) {
            return Err(Error::config(
                "a header may be in allowedUpstreamHeaders or allowedUpstreamHeadersToOverwrite, not both",
            )
            .at(format!("http.response.allowedUpstreamHeadersToOverwrite[{i}]")));
        }
        let on_denied = names(
            &spec.response.allowed_client_headers_on_denied,
            "http.response.allowedClientHeadersOnDenied",
        )?;
        let on_success = names(
            &spec.response.allowed_client_headers_on_success,
            "http.response.allowedClientHeadersOnSuccess",
        )?;
        let mut headers_to_add = HeaderMap::new();
        for (k, v) in &spec.request.headers_to_add {
            let place = format!("http.request.headersToAdd.{k}");
            let name = HeaderName::try_from(k.as_str())
                .map_err(|_| Error::config("not a valid header name").at(&place))?;
            if authchain_core::transport::is_framing(&name) {
                return Err(
                    Error::config("a connection or framing header cannot be passed on").at(&place),
                );
            }
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| Error::config("not a valid header value").at(&place))?;
            headers_to_add.insert(name, value);
        }
        let response_header_timeout = spec
            .response_header_timeout
            .map(|d| d.0)
            .filter(|d| !d.is_zero());
        let pool = spec.connection_pool.unwrap_or_default();
        let max_conns = pool
            .max_conns
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_CONNS);
        let idle_timeout = pool.idle_timeout.map(|d| d.0).filter(|d| !d.is_zero());
        let (tls, tls_at) = match (spec.tls_config, spec.tls) {
            (Some(_), Some(_)) => {
                return Err(
                    Error::config("set Gloo's `tlsConfig` or authchain's `tls`, not both")
                        .at("http.tlsConfig"),
                );
            }
            (Some(gloo), None) => (
                Some(gloo.resolve(context).map_err(|e| e.at("http.tlsConfig"))?),
                "http.tlsConfig",
            ),
            (None, Some(own)) => (
                Some(own.client_tls(context).map_err(|e| e.at("http.tls"))?),
                "http.tls",
            ),
            (None, None) => (None, "http.tls"),
        };
        if tls.is_some() && !https {
            return Err(Error::config("needs an https:// URL").at(tls_at));
        }
        let tls = rustls_config(&tls.unwrap_or_default()).map_err(|e| e.at(tls_at))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if https {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let connector = builder.enable_http1().wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(max_conns as usize)
            .build(connector);
        Ok(Arc::new(HttpPassthrough {
            url,
            timeout,
            response_header_timeout,
            slots: Arc::new(Semaphore::new(max_conns as usize)),
            answers: LastAnswer::of(&origin),
            // Within the call's own time too, whose end is an error.
            slot_wait: context
                .wait_limit()
                .map_or(timeout / 2, |w| w.min(timeout / 2)),
            client,
            allowed_headers,
            headers_to_add,
            pass_state: spec.request.pass_through_state,
            pass_metadata: spec.request.pass_through_filter_metadata,
            pass_body: spec.request.pass_through_body,
            config: config.config.map(Value::Object),
            append,
            overwrite,
            on_denied,
            on_success,
            read_state: spec.response.read_state_from_response,
            bypass: context.failure_mode_allow.then(|| {
                metrics::counter!(
                    "http_passthrough_bypass_failure",
                    "config" => context.config_name.to_owned(),
                    "step" => context.step_name.to_owned()
                )
            }),
        }))
    }
}

impl TlsSpec {
    fn client_tls(&self, context: &BuildContext<'_>) -> Result<ClientTls, Error> {
        ClientTls::from_ca(context, self.ca_file.as_deref(), self.ca_pem.as_deref())
    }
}

/// The call's body. Once hyper has taken all of it (and dropped it), the
/// call is written and the wait for the answer's head begins.
struct CallBody {
    data: Option<Bytes>,
    written: Arc<Notify>,
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        self.written.notify_one();
    }
}

/// The service [`HttpPassthroughPlugin`] builds.
pub struct HttpPassthrough {
    url: Uri,
    timeout: Duration,
    response_header_timeout: Option<Duration>,
    /// One permit per call in flight (`connectionPool.maxConns`).
    slots: Arc<Semaphore>,
    /// When the auth server last answered a call.
    answers: Arc<LastAnswer>,
    /// The longest wait for a slot ([`BuildContext::wait_limit`], and half
    /// the call's time).
    slot_wait: Duration,
    client: Client<HttpsConnector<HttpConnector>, CallBody>,
    allowed_headers: Vec<HeaderName>,
    headers_to_add: HeaderMap,
    pass_state: bool,
    pass_metadata: bool,
    pass_body: bool,
    /// The step's `config`, sent in the body's `config`.
    config: Option<Value>,
    append: Vec<HeaderName>,
    overwrite: Vec<HeaderName>,
    on_denied: Vec<HeaderName>,
    on_success: Vec<HeaderName>,
    read_state: bool,
    bypass: Option<metrics::Counter>,
}

impl std::fmt::Debug for HttpPassthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPassthrough")
            .field("url", &shown_url(&self.url))
            .field("timeout", &self.timeout)
            .field("response_header_timeout", &self.response_header_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpPassthrough {
    fn call_request(
        &self,
        request: &AuthorizationRequest,
        written: Arc<Notify>,
    ) -> Result<Request<CallBody>, Error> {
        let mut call = Request::post(self.url.clone());
        let headers = call
            .headers_mut()
            .ok_or_else(|| Error::step("cannot build the call"))?;
        for name in &self.allowed_headers {
            for value in request.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.headers_to_add {
            headers.insert(name.clone(), value.clone());
        }
        let body =
            if self.pass_state || self.pass_metadata || self.pass_body || self.config.is_some() {
                let mut doc = Map::new();
                if let Some(config) = &self.config {
                    doc.insert("config".into(), config.clone());
                }
                if self.pass_state {
                    doc.insert("state".into(), request.state.to_json());
                }
                if self.pass_metadata {
                    doc.insert(
                        "filterMetadata".into(),
                        Value::Object(request.metadata.clone()),
                    );
                }
                if self.pass_body {
                    let body = request.body.as_deref().unwrap_or_default();
                    doc.insert("body".into(), json!(String::from_utf8_lossy(body)));
                }
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Some(Bytes::from(serde_json::to_vec(&doc).map_err(Error::step)?))
            } else {
                None
            };
        call.body(CallBody {
            data: body,
            written,
        })
        .map_err(Error::step)
    }

    /// Calls the auth server: its answer's head, and its body, read whole
    /// for a 200 (whose state and headers count), not read for a 5xx, and
    /// read as far as it comes within the timeout and the size limit for
    /// a deny: a deny's body never turns it into an error, which
    /// `failureModeAllow` would let through.
    async fn call(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<(http::response::Parts, Bytes), Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let late = || {
            self.unanswered(format!(
                "the auth server did not answer within {:?}",
                self.timeout
            ))
        };
        let written = Arc::new(Notify::new());
        let call = self.call_request(request, written.clone())?;
        let head = async {
            // A slot: a flood can take them all, so one not had in time is
            // no outage of the auth server that `failureModeAllow` rides
            // out.
            let slot = tokio::time::timeout(self.slot_wait, self.slots.acquire())
                .await
                .map_err(|_| Error::overloaded("every connection to the auth server is in use"))?
                .map_err(|_| Error::step("the connection pool is closed"))?;
            let answer = self.client.request(call);
            let answer = match self.response_header_timeout {
                None => answer.await,
                Some(limit) => tokio::select! {
                    answer = answer => answer,
                    () = async {
                        written.notified().await;
                        tokio::time::sleep(limit).await;
                    } => {
                        return Err(self.unanswered(format!(
                            "the auth server sent no answer within {limit:?} of the call (responseHeaderTimeout)"
                        )));
                    }
                },
            };
            // Only a connection that cannot be made is an outage (unless
            // the server answers others: a flood fills its backlog): one
            // the auth server closes with no answer once it has the
            // request is a handler failing on it (a panic, a crash).
            let response = answer.map_err(|e| {
                if e.is_connect() {
                    self.unanswered(format!("cannot reach the auth server: {}", error_chain(&e)))
                } else {
                    Error::step_fail_closed(format!(
                        "the auth server gave no answer: {}",
                        error_chain(&e)
                    ))
                }
            })?;
            self.answers.answered(response.status());
            Ok((slot, response))
        };
        let (_slot, response) = tokio::time::timeout_at(deadline, head)
            .await
            .map_err(|_| late())??;
        let (parts, body) = response.into_parts();
        let body = if parts.status == StatusCode::OK && self.read_state {
            // The state must be whole: one too long or cut short is none,
            // and its allow a deny.
            let whole = Limited::new(body, MAX_RESPONSE_BYTES).collect();
            tokio::time::timeout_at(deadline, whole)
                .await
                .map_err(|_| {
                    // Its head came: the server is up.
                    Error::step_fail_closed(format!(
                        "the auth server sent no whole answer within {:?}",
                        self.timeout
                    ))
                })?
                .map_or_else(|_| Bytes::new(), |whole| whole.to_bytes())
        } else if parts.status == StatusCode::OK || parts.status.is_server_error() {
            // Nothing of it is read: its status says it all.
            Bytes::new()
        } else {
            read_some(body, deadline).await
        };
        Ok((parts, body))
    }

    /// A call that got no answer of the auth server's (a timeout, a
    /// gateway's 502, 503 or 504), by [`LastAnswer::unanswered`] over the
    /// call's time.
    fn unanswered(&self, what: String) -> Error {
        self.answers.unanswered(self.timeout, what)
    }

    fn failed(&self, error: Error) -> Result<Decision, Error> {
        // A request turned away at the pool's limit, or refused, is not
        // let through.
        if let Some(bypass) = self.bypass.as_ref().filter(|_| !error.fails_closed()) {
            bypass.increment(1);
        }
        Err(error)
    }
}

/// The first [`MAX_RESPONSE_BYTES`] of a deny's `body`, or what came of
/// them by `deadline`; never an error.
async fn read_some(mut body: hyper::body::Incoming, deadline: tokio::time::Instant) -> Bytes {
    let mut read = bytes::BytesMut::new();
    while read.len() < MAX_RESPONSE_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_RESPONSE_BYTES - read.len();
                    read.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    read.freeze()
}

/// `e: cause: cause`, for an error that hides its causes in `source()`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl AuthService for HttpPassthrough {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            let (parts, body) = match self.call(request).await {
                Ok(answer) => answer,
                Err(e) => return self.failed(e),
            };
            // An outage of the auth server (a gateway's answers for it)
            // is a failure `failureModeAllow` may ride out; any other 5xx
            // is a handler failing on the request, which a client can
            // bring about.
            if is_gateway_failure(parts.status) {
                return self
                    .failed(self.unanswered(format!("the auth server answered {}", parts.status)));
            }
            if parts.status.is_server_error() {
                return self.failed(Error::step_fail_closed(format!(
                    "the auth server answered {}",
                    parts.status
                )));
            }
            if parts.status != StatusCode::OK {
                let mut deny = Deny::new(parts.status).body(body);
                for name in &self.on_denied {
                    for value in parts.headers.get_all(name) {
                        deny.headers.append(name.clone(), value.clone());
                    }
                }
                return Ok(deny.into());
            }
            if self.read_state {
                let state =
                    serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|mut doc| match doc.get_mut("state").map(Value::take) {
                            Some(Value::Object(state)) => Some(state),
                            _ => None,
                        });
                let Some(state) = state else {
                    tracing::warn!(url = %shown_url(&self.url), "the auth server's 200 has no {{\"state\": {{...}}}} body; denying");
                    return Ok(Decision::unauthorized());
                };
                // A name a step before wrote keeps its value: a later step
                // (an `opaAuth` policy) judges what that step found.
                if let Err(name) = request.state.take_returned(state) {
                    return self.failed(Error::step_fail_closed(format!(
                        "HTTP passthrough to {}: the answer changes the state's '{name}', which a step before wrote",
                        shown_url(&self.url)
                    )));
                }
            }
            let mut allow = Allow::new();
            for name in &self.on_success {
                let mut values = parts.headers.get_all(name).iter();
                if let Some(first) = values.next() {
                    allow.response_headers.push(HeaderMutation::new(
                        name.clone(),
                        first.clone(),
                        HeaderAction::OverwriteIfExistsOrAdd,
                    ));
                    for value in values {
                        allow = allow.response_header(name.clone(), value.clone());
                    }
                }
            }
            for name in &self.append {
                for value in parts.headers.get_all(name) {
                    allow = allow.append_header(name.clone(), value.clone());
                }
            }
            for name in &self.overwrite {
                let mut values = parts.headers.get_all(name).iter();
                if let Some(first) = values.next() {
                    allow = allow.set_header(name.clone(), first.clone());
                    for value in values {
                        allow = allow.append_header(name.clone(), value.clone());
                    }
                }
            }
            Ok(allow.into())
        })
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        self.append.iter().chain(&self.overwrite).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_logs_show_no_credential() {
        let config: PassThroughHttp = serde_json::from_value(serde_json::json!({
            "http": {
                "url": "https://user:pw-s3cret@auth.example:8443/check?token=q-s3cret",
                "request": { "headersToAdd": { "authorization": "Bearer h-s3cret" } },
                "tlsConfig": { "secretRef": { "name": "passthrough-mtls" } },
                "connectionPool": { "maxConns": 2 }
            }
        }))
        .unwrap();
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(shown.contains("passthrough-mtls"), "{shown}");
        let uri: Uri = config.http.url.parse().unwrap();
        assert_eq!(shown_url(&uri), "https://auth.example:8443/check");
        let spec = HttpSpec {
            url: "not a url at all".to_owned(),
            ..serde_json::from_value(serde_json::json!({ "url": "x" })).unwrap()
        };
        assert!(format!("{spec:?}").contains("<not a URL>"));
    }
}
