//! The HTTP passthrough step (`passThroughAuth.http`): asks another HTTP
//! auth server, as Gloo's "Http Passthrough Auth" does.
//!
//! ```yaml
//! configs:
//! - passThroughAuth:
//!     http:
//!       url: http://auth.internal:9001/auth    # POSTed to; its path is kept
//!       connectionTimeout: 5s                  # the whole call (default 5s)
//!       tls: { caFile: /etc/authchain/ca.pem } # or caPem: "-----BEGIN ..."; https only
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
//!         readStateFromResponse: true          # {"state": {...}} merged into the state
//!     config: { tenant: acme }                 # in the JSON body, as Gloo sends it
//!     failureModeAllow: true                   # 5xx, timeouts, refusals pass (counted)
//! ```
//!
//! A 200 allows; any other status below 500 denies with that status, the
//! listed client headers and the body; a 5xx, a timeout or a failed
//! connection is a step error, which the chain turns into a deny unless
//! `failureModeAllow` (then counted in `http_passthrough_bypass_failure`
//! too). A state body that does not parse is a deny. A header listed for
//! upstream but absent from the answer adds nothing. The upstream headers
//! are identity headers: the chain strips client-sent copies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, BuildContext, ConfigDuration, Decision, Deny,
    Error, ExtAuthPlugin, async_trait,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The default time limit of a call (Gloo's `connectionTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer body read (for `readStateFromResponse` and denies).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

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
    /// Trust for `https` URLs.
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
        if url.authority().is_none() {
            return Err(Error::config("the URL has no host").at("http.url"));
        }
        let timeout = match spec.connection_timeout {
            Some(ConfigDuration(d)) if d.is_zero() => {
                return Err(
                    Error::config("expected a duration above zero").at("http.connectionTimeout")
                );
            }
            Some(ConfigDuration(d)) => d,
            None => DEFAULT_TIMEOUT,
        };
        let names = |list: &[String], place: &str| -> Result<Vec<HeaderName>, Error> {
            list.iter()
                .enumerate()
                .map(|(i, n)| {
                    HeaderName::try_from(n.as_str()).map_err(|_| {
                        Error::config("not a valid header name").at(format!("{place}[{i}]"))
                    })
                })
                .collect()
        };
        let allowed_headers = names(&spec.request.allowed_headers, "http.request.allowedHeaders")?;
        let append = names(
            &spec.response.allowed_upstream_headers,
            "http.response.allowedUpstreamHeaders",
        )?;
        let overwrite = names(
            &spec.response.allowed_upstream_headers_to_overwrite,
            "http.response.allowedUpstreamHeadersToOverwrite",
        )?;
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
        let mut headers_to_add = HeaderMap::new();
        for (k, v) in &spec.request.headers_to_add {
            let place = format!("http.request.headersToAdd.{k}");
            let name = HeaderName::try_from(k.as_str())
                .map_err(|_| Error::config("not a valid header name").at(&place))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| Error::config("not a valid header value").at(&place))?;
            headers_to_add.insert(name, value);
        }
        if spec.tls.is_some() && !https {
            return Err(Error::config("tls needs an https:// URL").at("http.tls"));
        }
        let tls = client_tls(spec.tls.as_ref()).map_err(|e| e.at("http.tls"))?;
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
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Arc::new(HttpPassthrough {
            url,
            timeout,
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

fn client_tls(spec: Option<&TlsSpec>) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::build)?;
    let mut roots = rustls::RootCertStore::empty();
    let pem = match spec {
        Some(TlsSpec {
            ca_file: Some(path),
            ca_pem: None,
        }) => Some(std::fs::read(path).map_err(|e| {
            Error::config(format!("cannot read {}: {}", path.display(), e.kind())).at("caFile")
        })?),
        Some(TlsSpec {
            ca_file: None,
            ca_pem: Some(pem),
        }) => Some(pem.clone().into_bytes()),
        Some(TlsSpec {
            ca_file: None,
            ca_pem: None,
        })
        | None => None,
        Some(_) => return Err(Error::config("set caFile or caPem, not both")),
    };
    match pem {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|_| Error::config("not PEM certificates"))?;
                roots
                    .add(cert)
                    .map_err(|_| Error::config("not a usable CA certificate"))?;
            }
            if roots.is_empty() {
                return Err(Error::config("no certificate in the PEM"));
            }
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// The service [`HttpPassthroughPlugin`] builds.
pub struct HttpPassthrough {
    url: Uri,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
    read_state: bool,
    bypass: Option<metrics::Counter>,
}

impl std::fmt::Debug for HttpPassthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPassthrough")
            .field("url", &shown_url(&self.url))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpPassthrough {
    fn call_request(&self, request: &AuthorizationRequest) -> Result<Request<Full<Bytes>>, Error> {
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
                Bytes::from(serde_json::to_vec(&doc).map_err(Error::step)?)
            } else {
                Bytes::new()
            };
        call.body(Full::new(body)).map_err(Error::step)
    }

    async fn call(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<(http::response::Parts, Bytes), Error> {
        let call = self.call_request(request)?;
        let exchange = async {
            let response = self.client.request(call).await.map_err(|e| {
                Error::step(format!("cannot reach the auth server: {}", error_chain(&e)))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| Error::step(format!("cannot read the auth server's answer: {e}")))?;
            Ok((parts, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                Error::step(format!(
                    "the auth server did not answer within {:?}",
                    self.timeout
                ))
            })?
    }

    fn failed(&self, error: Error) -> Result<Decision, Error> {
        if let Some(bypass) = &self.bypass {
            bypass.increment(1);
        }
        Err(error)
    }
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
            if parts.status.is_server_error() {
                return self.failed(Error::step(format!(
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
                request.state.extend(state);
            }
            let mut allow = Allow::new();
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
                "request": { "headersToAdd": { "authorization": "Bearer h-s3cret" } }
            }
        }))
        .unwrap();
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
        let uri: Uri = config.http.url.parse().unwrap();
        assert_eq!(shown_url(&uri), "https://auth.example:8443/check");
        let spec = HttpSpec {
            url: "not a url at all".to_owned(),
            ..serde_json::from_value(serde_json::json!({ "url": "x" })).unwrap()
        };
        assert!(format!("{spec:?}").contains("<not a URL>"));
    }
}
