//! Talking to the identity provider: an HTTP client with a time limit on
//! every call and a bound on every answer, OIDC discovery, and the
//! client's secret.

use std::future::Future;
use std::time::Duration;

use authchain_core::{BuildContext, Error, Format};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::config::{DiscoveryOverride, SecretRef};
use crate::util;

/// The largest answer read from an IdP.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The Secret type `glooctl create secret oauth` writes.
pub const OAUTH_SECRET_TYPE: &str = "extauth.solo.io/oauth";

/// Why a call to the IdP failed, in words that quote none of its answer.
#[derive(Debug)]
pub(crate) struct CallError {
    text: String,
    /// Whether the IdP gave no answer of its own: no connection, none in
    /// time, or a gateway's 502, 503 or 504 for it.
    pub(crate) outage: bool,
}

impl CallError {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        CallError {
            text: text.into(),
            outage: false,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for CallError {}

/// One call of [`Http::oauth`].
type OauthCall<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, CallError>> + Send + 'a>>;

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An HTTP(S) client for one IdP: each call, connect to last byte, under
/// `timeout`; answers beyond 1 MiB are errors; redirects are not followed.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client,
    timeout: Duration,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Result<Self, Error> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(util::https_connector(timeout)?);
        Ok(Http { client, timeout })
    }

    /// The time limit of each call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` and reads the whole answer.
    pub(crate) async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, CallError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let work = async {
            let response = self.client.request(request).await.map_err(|e| CallError {
                text: format!("cannot reach the IdP: {e}"),
                outage: e.is_connect(),
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::new(format!("cannot read the IdP's answer: {e}")))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(answer) => answer,
            Err(_) => Err(CallError {
                text: format!("the IdP did not answer within {:?}", self.timeout),
                outage: true,
            }),
        }
    }

    /// The client as the `oauth2` crate calls it
    /// (`request_async(&http.oauth())`).
    pub(crate) fn oauth(&self) -> Oauth<'_> {
        Oauth {
            http: self,
            anonymous: false,
        }
    }

    /// [`oauth`](Self::oauth) for a client without an id: its requests
    /// lose the empty `client_id` parameter the `oauth2` crate always
    /// sends.
    pub(crate) fn oauth_anonymous(&self) -> Oauth<'_> {
        Oauth {
            http: self,
            anonymous: true,
        }
    }

    /// GETs `url`, asking for JSON, with `Authorization: Bearer` when
    /// `bearer` is given (marked sensitive).
    pub(crate) async fn get(
        &self,
        url: &str,
        bearer: Option<&str>,
        what: &str,
    ) -> Result<http::Response<Vec<u8>>, CallError> {
        let mut request = http::Request::get(url).header(http::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            let value = super::secret_value(&format!("Bearer {token}"))
                .ok_or_else(|| CallError::new("the token cannot travel in a header".to_owned()))?;
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Vec::new())
            .map_err(|_| CallError::new(format!("the {what} URL is not usable")))?;
        self.send(request).await
    }

    /// GETs `url` and reads a JSON answer; a non-2xx status is an error
    /// naming it.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, CallError> {
        let response = self.get(url, None, what).await?;
        if !response.status().is_success() {
            return Err(CallError::new(format!(
                "the {what} endpoint answered {}",
                response.status()
            )));
        }
        // serde_json's message quotes the value it did not expect: only
        // where it is, and what kind of error.
        serde_json::from_slice(response.body()).map_err(|e| {
            let kind = match e.classify() {
                serde_json::error::Category::Data => "a member of the wrong type",
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Eof => "cut short",
                serde_json::error::Category::Io => "unreadable",
            };
            CallError::new(format!(
                "the {what} answer is not the JSON expected ({kind}, line {} column {})",
                e.line(),
                e.column()
            ))
        })
    }
}

/// The IdP client as the `oauth2` crate calls it ([`Http::oauth`]).
pub(crate) struct Oauth<'h> {
    http: &'h Http,
    anonymous: bool,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Oauth<'_> {
    type Error = CallError;
    type Future = OauthCall<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        let request = match self.anonymous {
            true => without_client_id(request),
            false => request,
        };
        Box::pin(async move {
            let response = self.http.send(request).await?;
            // An IdP that fails (5xx) or sheds load (429) has refused
            // nothing, whatever error its body names: the answer is no
            // OAuth error of the grant's or the token's.
            let status = response.status();
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                return Err(CallError {
                    text: format!("the IdP answered {status}"),
                    outage: authchain_core::transport::is_gateway_failure(status),
                });
            }
            Ok(response)
        })
    }
}

/// The request without its empty `client_id` parameter.
fn without_client_id(request: oauth2::HttpRequest) -> oauth2::HttpRequest {
    let (parts, body) = request.into_parts();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            url::form_urlencoded::parse(&body).filter(|(k, v)| !(k == "client_id" && v.is_empty())),
        )
        .finish();
    http::Request::from_parts(parts, body.into_bytes())
}

/// Checks a URL from the config: absolute `http://` or `https://` with a
/// host. A clear-text URL off loopback is accepted, as Gloo does, with a
/// warning: what travels on it (tokens, keys) can be read or replaced.
pub(crate) fn check_url(url: &str, place: &str) -> Result<url::Url, Error> {
    let parsed = url::Url::parse(url).map_err(|_| Error::config("not a valid URL").at(place))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                tracing::warn!(
                    place,
                    "oauth2: a clear-text http:// URL off loopback; tokens and keys on it can be read or replaced"
                );
            }
        }
        _ => return Err(Error::config("expected an http:// or https:// URL").at(place)),
    }
    if parsed.host().is_none() {
        return Err(Error::config("expected a URL with a host").at(place));
    }
    // Gloo's Go client would send them as HTTP Basic; authchain names
    // its clients' credentials only in `clientId` and `*SecretRef`.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::config(
            "credentials in a URL are not sent: use clientId and clientSecretRef",
        )
        .at(place));
    }
    Ok(parsed)
}

/// The provider metadata authchain uses (OpenID Connect Discovery 1.0).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Provider {
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) authorization_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) token_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) jwks_uri: Option<String>,
    #[serde(default)]
    pub(crate) revocation_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) end_session_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) id_token_signing_alg_values_supported: Vec<String>,
}

impl Provider {
    /// `override_`'s values over these.
    fn overridden(mut self, o: &DiscoveryOverride) -> Self {
        let set = |slot: &mut Option<String>, value: &Option<String>| {
            if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                *slot = Some(v.clone());
            }
        };
        set(&mut self.authorization_endpoint, &o.auth_endpoint);
        set(&mut self.token_endpoint, &o.token_endpoint);
        set(&mut self.jwks_uri, &o.jwks_uri);
        set(&mut self.revocation_endpoint, &o.revocation_endpoint);
        set(&mut self.end_session_endpoint, &o.end_session_endpoint);
        if !o.id_token_algs.is_empty() {
            self.id_token_signing_alg_values_supported = o.id_token_algs.clone();
        }
        self
    }
}

/// Runs discovery for `issuer` (OpenID Connect Discovery 1.0 section 4):
/// the document's `issuer` must be the one asked for (one trailing `/`
/// aside), and the endpoints a login needs must be there, after
/// `override_` is applied. Every endpoint named, the optional ones too,
/// must be an `http://` or `https://` URL, on any host (Gloo trusts
/// discovery, and IdPs serve keys from other hosts; `http://` off
/// loopback is warned about, as in a config): `end_session_endpoint`
/// becomes a browser's redirect carrying the ID token, and the
/// revocation endpoint is sent tokens.
pub(crate) async fn discover(
    http: &Http,
    issuer: &str,
    override_: Option<&DiscoveryOverride>,
) -> Result<Provider, CallError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let provider: Provider = http.get_json(&url, "discovery").await?;
    let one_slash = |s: &str| s.strip_suffix('/').unwrap_or(s).to_owned();
    if one_slash(&provider.issuer) != one_slash(issuer) {
        return Err(CallError::new(
            "the discovery document names another issuer".to_owned(),
        ));
    }
    let provider = match override_ {
        Some(o) => provider.overridden(o),
        None => provider,
    };
    for (what, value) in [
        ("authorization_endpoint", &provider.authorization_endpoint),
        ("token_endpoint", &provider.token_endpoint),
        ("jwks_uri", &provider.jwks_uri),
    ] {
        let Some(url) = value else {
            return Err(CallError::new(format!(
                "the discovery document has no {what}"
            )));
        };
        check_url(url, what).map_err(|e| CallError::new(format!("{what}: {e}")))?;
    }
    for (what, value) in [
        ("revocation_endpoint", &provider.revocation_endpoint),
        ("end_session_endpoint", &provider.end_session_endpoint),
    ] {
        if let Some(url) = value {
            check_url(url, what).map_err(|e| CallError::new(format!("{what}: {e}")))?;
        }
    }
    Ok(provider)
}

/// The client secret `reference` names: from a Kubernetes Secret of
/// Gloo's type `extauth.solo.io/oauth` (its `client-secret` entry, or the
/// older `oauth` entry holding `clientSecret: ...` YAML, which older
/// Glooctl wrote in an `Opaque` Secret), a file, or an environment
/// variable. An error names the reference, never a value.
pub(crate) fn client_secret(
    context: &BuildContext<'_>,
    reference: &SecretRef,
    place: &str,
) -> Result<String, Error> {
    let secret = match (reference.resource(), &reference.file, &reference.env) {
        (Some(resource), None, None) => {
            // Gloo's current type, or the older Opaque Secret with `oauth`.
            let secret = context
                .resources
                .secret_ref(&resource, context.namespace)
                .map_err(|e| e.at(place))?;
            let legacy = secret.kind == "Opaque" && secret.data.contains_key("oauth");
            if secret.kind != OAUTH_SECRET_TYPE && !legacy {
                return Err(Error::config(format!(
                    "expected a Secret of type `{OAUTH_SECRET_TYPE}`"
                ))
                .at(place));
            }
            if secret.data.contains_key("client-secret") {
                util::secret_text(secret, "client-secret").map_err(|e| e.at(place))?
            } else if secret.data.contains_key("oauth") {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Oauth {
                    client_secret: String,
                }
                let text = util::secret_text(secret, "oauth").map_err(|e| e.at(place))?;
                Format::Yaml
                    .documents(place, &text)
                    .ok()
                    .and_then(|_| serde_yaml_ng::from_str::<Oauth>(&text).ok())
                    .ok_or_else(|| {
                        Error::config(format!(
                            "the Secret {}/{}: `oauth` is not `clientSecret: ...` YAML",
                            secret.namespace, secret.name
                        ))
                        .at(place)
                    })?
                    .client_secret
            } else {
                return Err(Error::config(format!(
                    "the Secret {}/{} has neither `client-secret` nor `oauth`",
                    secret.namespace, secret.name
                ))
                .at(place));
            }
        }
        (None, Some(file), None) => {
            let text = context
                .read_to_string(file)
                .map_err(|e| e.at(format!("{place}.file")))?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, None, Some(var)) => std::env::var(var).map_err(|_| {
            Error::config(format!("the environment variable `{var}` is not set"))
                .at(format!("{place}.env"))
        })?,
        _ => {
            return Err(Error::config(
                "expected exactly one of `name` (a Secret), `file` and `env`",
            )
            .at(place));
        }
    };
    if secret.is_empty() {
        return Err(Error::config("the client secret is empty").at(place));
    }
    Ok(secret)
}
