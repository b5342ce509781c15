//! `jwt`: a request must carry a JWT signed by a key of a JWKS.
//!
//! ```yaml
//! jwt:
//!   issuer: https://issuer.example.com      # the `iss` a token must have (optional)
//!   audiences: [ratings]                    # one of these in `aud` (optional)
//!   algorithms: [RS256, ES256]              # accepted `alg`s (default: any the keys support)
//!   leeway: 60s                             # clock skew allowed for exp / nbf (60s, at most 1h)
//!   jwks:
//!     local:                                # a JWKS document, inline or from a file
//!       key: '{"keys": [{"kty": "RSA", "kid": "k1", "n": "...", "e": "AQAB"}]}'
//!       # file: /etc/authchain/jwks.json
//!     remote:                               # and/or fetched over HTTPS
//!       url: https://keys.internal/.well-known/jwks.json
//!       # allowInsecureHttp: true             # to accept an http:// URL
//!       refreshInterval: 5m                 # scheduled refresh (5m)
//!       minRefreshInterval: 30s             # bound on refreshes for an unknown `kid` (30s)
//!       timeout: 5s                         # per fetch, connect included (5s)
//!   tokenSource:                            # where the token is (default: Authorization: Bearer)
//!     headers: [{ header: authorization, prefix: "Bearer " }]
//!     cookies: [access_token]
//!   claimsToHeaders:                        # claims copied to upstream headers
//!   - { claim: sub, header: x-user-id }
//!   - { claim: org.id, header: x-org }      # a dotted path reaches into objects
//!   userIdClaim: sub                        # the claim naming the user (sub)
//!   dynamicMetadataFromClaims:              # Gloo's: metadata key <- claim, to Envoy's
//!     email: email                          # dynamic metadata (envoy.filters.http.ext_authz)
//!   realm: ratings                          # in `WWW-Authenticate: Bearer realm="..."`
//! ```
//!
//! `jwt: {}`, an empty block, is Gloo's placeholder for Envoy's
//! `jwt_authn` filter, which verified the token before ext_authz: the step
//! allows when the CheckRequest's `metadata_context` holds the verified
//! payload (namespace `envoy.filters.http.jwt_authn`, key `principal`, as
//! Gloo configures the filter; ext_authz must list the namespace in
//! `metadata_context_namespaces`) and is a 401 without it. The payload
//! goes where a verified token's claims go (`state.jwt`, the user from
//! `sub`, the answer kept no longer than `exp`). Only Envoy's gRPC
//! ext_authz sends filter metadata: over the HTTP transports the step
//! always denies. What it trusts is whatever wrote that namespace in
//! Envoy: `jwt_authn` (any of its providers: they are not told apart),
//! and any filter or listener rule configured to write there
//! (`header_to_metadata`, Lua, `set_metadata`, proxy protocol TLVs), at
//! request or connection level. Its answer depends on that metadata,
//! which a decision cache cannot key on: a cache over it needs
//! `trustKey` and a key that tells apart what Envoy verified (host and
//! path, besides the token).
//!
//! A missing token is a 401 with `WWW-Authenticate: Bearer realm="..."`,
//! and so is a source header of another scheme alone (`Basic ...` where
//! the prefix is `Bearer `, RFC 6750 3.1); a malformed, unverifiable,
//! expired or otherwise invalid one a 401 with `error="invalid_token"`
//! added, as is a token beside such a header (the app may read that).
//! On success the claims go into `state.jwt` for later steps (an
//! `opaAuth` policy reads them as `input.state.jwt`), the user into
//! `UserInfo`, and the chosen claims into their headers (declared as
//! identity headers, so the chain strips client-sent copies). A claim
//! that makes no header value (a control character, or spaces or tabs
//! around it, which the app's HTTP parser would strip: ` admin` would
//! reach it as `admin`) sets no header.
//!
//! A token is checked with the keys that carry its `kid` and those that
//! carry none (as Envoy's `jwt_authn` does: a key from a PEM has none); a
//! token without a `kid`, with every key of its algorithm. `leeway` is at
//! most 1h.
//! Without `issuer` and `audiences`, any token the keys sign passes: with
//! keys that sign for others too (Google's, an IdP's for all its
//! clients), set both, or any of their users' tokens for any app gets in.
//!
//! A remote JWKS is fetched when the step starts (on a failure the config
//! goes live with the step waiting: it fails its requests with
//! `statusOnError`, `/readyz` names it, and it tries again), refreshed
//! every `refreshInterval`, and
//! refreshed early when a token names a `kid` the step does not know, at
//! most once per `minRefreshInterval` (1s at least), and never waited for
//! by another such token while one is under way (that token is a 401: a
//! client retries; a key rotated in is found by the refresh under way or
//! the next). That 401, and a token's not yet valid (`nbf`), say
//! `Cache-Control: no-store`: no decision cache keeps what may pass in a
//! while. `https://` URLs are verified
//! against the system's roots (Mozilla's where the system has none); an
//! `http://` one is a config error unless `allowInsecureHttp` says so.
//! Without `algorithms`, a remote JWKS's symmetric (`oct`) keys are not
//! used: HMAC keys that travel are secrets others have seen, and only a
//! config that lists `HS256` (or `HS384`, `HS512`) accepts them. An `oct`
//! key shorter than the hash (32 bytes for HS256, 48 for HS384, 64 for
//! HS512; RFC 7518 3.2) verifies nothing under that algorithm: an empty
//! one would let anyone sign.
//!
//! A token's `iss` must be a string, and no object in its claims may name
//! a member twice (a service reading the token after the step might take
//! the first of `{"scope": "read", "scope": "admin"}`, where the step
//! took the last).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use authchain_core::{
    Allow, Answer, Attribute, AuthService, AuthorizationRequest, BuildContext, ConfigDuration,
    Decision, Deny, Error, ExtAuthPlugin, Lifecycle, UserInfo, async_trait,
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::util;

/// The step kind this module registers.
pub const KIND: &str = "jwt";

/// The key under which the step writes the token's claims into `state`.
pub const STATE_KEY: &str = "jwt";

/// The largest `leeway`: an expired token passes for as long.
pub const MAX_LEEWAY: Duration = Duration::from_secs(3600);

/// Where Envoy's `jwt_authn` filter puts a verified payload: its metadata
/// namespace, and the key Gloo names in `payload_in_metadata`.
pub const ENVOY_PAYLOAD: (&str, &str) = ("envoy.filters.http.jwt_authn", "principal");

/// The largest JWKS document a remote fetch accepts.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The `jwt` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` tokens must have.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted algorithms (default: any the keys support).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf` (60s).
    #[serde(default)]
    pub leeway: Option<ConfigDuration>,
    /// Where the keys come from.
    pub jwks: JwksConfig,
    /// Where the token comes from.
    #[serde(default)]
    pub token_source: Option<TokenSourceConfig>,
    /// Claims copied to upstream headers.
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// The claim naming the user (`sub`).
    #[serde(default)]
    pub user_id_claim: Option<String>,
    /// Gloo's `dynamicMetadataFromClaims`: metadata key to claim; each
    /// claim present goes, as it is, into the allow's dynamic metadata
    /// (Envoy's, under `envoy.filters.http.ext_authz`).
    #[serde(default)]
    pub dynamic_metadata_from_claims: BTreeMap<String, String>,
    /// The realm of `WWW-Authenticate` (`authchain`).
    #[serde(default)]
    pub realm: Option<String>,
}

/// `jwks`: local and/or remote keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwksConfig {
    /// A JWKS in the config or a file.
    #[serde(default)]
    pub local: Option<LocalJwks>,
    /// A JWKS fetched over HTTP.
    #[serde(default)]
    pub remote: Option<RemoteJwks>,
}

/// `jwks.local`: exactly one of `key` and `file`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalJwks {
    /// The JWKS document (JSON text).
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the JWKS document.
    #[serde(default)]
    pub file: Option<String>,
}

impl std::fmt::Debug for LocalJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A JWKS may hold HMAC secrets (`kty: oct`).
        f.debug_struct("LocalJwks")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .finish()
    }
}

/// `jwks.remote`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwks {
    /// The `http://` or `https://` URL of the JWKS document.
    pub url: String,
    /// Scheduled refresh period (5m).
    #[serde(default)]
    pub refresh_interval: Option<ConfigDuration>,
    /// Least time between refreshes caused by unknown `kid`s (30s).
    #[serde(default)]
    pub min_refresh_interval: Option<ConfigDuration>,
    /// Time limit of one fetch (5s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// An authchain addition: accept an `http://` URL, whose keys anyone
    /// on the way could replace (false: `https://` only).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// `tokenSource`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSourceConfig {
    /// Headers, tried in order.
    #[serde(default)]
    pub headers: Vec<HeaderSource>,
    /// Cookies, tried after the headers.
    #[serde(default)]
    pub cookies: Vec<String>,
}

/// A header that carries the token.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderSource {
    /// The header name.
    pub header: String,
    /// A prefix before the token (`Bearer `), compared case-insensitively.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// One entry of `claimsToHeaders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The claim (a dotted path for nested objects).
    pub claim: String,
    /// The upstream header.
    pub header: String,
}

/// The plugin for step kind `jwt`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JwtPlugin;

impl ExtAuthPlugin for JwtPlugin {
    /// A [`JwtConfig`], or an empty block for [`VerifiedByEnvoy`].
    type Config = Value;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: Value,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        // Only `{}` is Gloo's placeholder: an empty value (a template that
        // rendered nothing, say) must not turn a step that checks tokens
        // into one that trusts Envoy's verdict.
        match &config {
            Value::Object(block) if block.is_empty() => {
                return Ok(Arc::new(VerifiedByEnvoy));
            }
            Value::Object(_) => {}
            _ => {
                return Err(Error::config(
                    "expected a mapping: the step's settings, or `{}` for Envoy's jwt_authn verdict",
                ));
            }
        }
        let config: JwtConfig = authchain_core::deserialize_config(config)?;
        Ok(Arc::new(JwtAuth::read(config, context)?))
    }
}

/// `jwt: {}`: the payload Envoy's `jwt_authn` filter verified, read from
/// the request's filter metadata ([`ENVOY_PAYLOAD`]).
#[derive(Debug, Clone, Copy)]
pub struct VerifiedByEnvoy;

impl AuthService for VerifiedByEnvoy {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        let (namespace, key) = ENVOY_PAYLOAD;
        let payload = request
            .metadata
            .get(namespace)
            .and_then(|n| n.get(key))
            .and_then(Value::as_object);
        match payload {
            Some(claims) => {
                let claims = claims.clone();
                allow_claims(request, claims, "sub", &[], &[]).into()
            }
            None => {
                tracing::debug!("jwt: no payload verified by Envoy's jwt_authn");
                Decision::from(Deny::new(StatusCode::UNAUTHORIZED).header(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                ))
                .into()
            }
        }
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        Some(authchain_core::CALLS_NO_SERVER)
    }
}

/// A verification key and the algorithms it may be used with.
struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<String, Vec<usize>>,
}

impl KeySet {
    fn new(keys: Vec<Key>) -> Self {
        let mut by_kid: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                by_kid.entry(kid.clone()).or_default().push(i);
            }
        }
        KeySet { keys, by_kid }
    }

    /// Keys for a token's `kid` and `alg`: those with the `kid`, then
    /// those without one (as Envoy's `jwt_authn` tries them: a key from a
    /// PEM has none), or every key when the token names none.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&Key> {
        let usable = |k: &&Key| k.algorithms.contains(&alg);
        match kid {
            Some(kid) => {
                let named = self.by_kid.get(kid).into_iter().flatten();
                let unnamed = self.keys.iter().filter(|k| k.kid.is_none());
                named
                    .map(|i| &self.keys[*i])
                    .chain(unnamed)
                    .filter(usable)
                    .collect()
            }
            None => self.keys.iter().filter(usable).collect(),
        }
    }
}

/// The algorithms a JWK can verify, limited to `allowed`.
fn key_algorithms(jwk: &Jwk, allowed: &[Algorithm]) -> Vec<Algorithm> {
    use Algorithm::*;
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![EdDSA],
            _ => vec![],
        },
        // RFC 7518 3.2: a key at least as long as the hash (an empty
        // one, a secret rendered from nothing, would let anyone sign).
        AlgorithmParameters::OctetKey(p) => {
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &p.value)
                    .map_or(0, |k| k.len());
            [(HS256, 32), (HS384, 48), (HS512, 64)]
                .into_iter()
                .filter(|(_, least)| bytes >= *least)
                .map(|(alg, _)| alg)
                .collect()
        }
        _ => vec![],
    };
    // A key declared for another use (an encryption algorithm such as
    // `RSA-OAEP`, or one unknown here) verifies nothing.
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(a) => match Algorithm::from_str(&a.to_string()) {
            Ok(a) => Some(a),
            Err(_) => return Vec::new(),
        },
    };
    by_type
        .into_iter()
        .filter(|a| declared.is_none_or(|d| d == *a))
        .filter(|a| allowed.contains(a))
        .collect()
}

/// Parses a JWKS document into keys. Keys of unknown types, for
/// another use than verifying (`use`, `key_ops`, an `alg` that is no
/// signing algorithm), outside `allowed`, or `oct` keys shorter than their
/// hash, are skipped. The error says what is wrong without quoting the
/// document.
fn parse_jwks(text: &[u8], allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<Value>,
    }
    let doc: Doc = serde_json::from_slice(text).map_err(|e| {
        format!(
            "not a JWKS document (line {} column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut keys = Vec::new();
    let total = doc.keys.len();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        // RFC 7517 4.2, 4.3: a key for another use than verifying.
        let signs = jwk
            .common
            .public_key_use
            .as_ref()
            .is_none_or(|u| matches!(u, PublicKeyUse::Signature));
        let verifies = jwk
            .common
            .key_operations
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| matches!(o, KeyOperations::Verify)));
        if !signs || !verifies {
            continue;
        }
        let algorithms = key_algorithms(&jwk, allowed);
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable key among the {total} keys of the JWKS (an `oct` key takes 32 bytes for \
             HS256, 48 for HS384, 64 for HS512)"
        ));
    }
    Ok(keys)
}

/// Where a token is read from.
#[derive(Debug, Clone)]
enum Source {
    Header(HeaderName, String),
    Cookie(String),
}

/// A remote JWKS and its client.
struct Remote {
    uri: Uri,
    refresh: Duration,
    min_refresh: Duration,
    timeout: Duration,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Empty<Bytes>,
    >,
    /// When the last fetch started; held during a fetch so that concurrent
    /// refreshes coalesce.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Remote {
    async fn fetch(&self, allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
        let work = async {
            let response = self
                .client
                .get(self.uri.clone())
                .await
                .map_err(|e| format!("cannot fetch the JWKS: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("the JWKS URL answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("cannot read the JWKS: {e}"))?
                .to_bytes();
            parse_jwks(&body, allowed)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "fetching the JWKS took more than {:?}",
                self.timeout
            )),
        }
    }
}

struct Shared {
    local: Vec<Arc<Key>>,
    remote: Option<Remote>,
    keys: ArcSwap<KeySet>,
    allowed: Vec<Algorithm>,
    /// What a remote JWKS's keys may verify: `allowed`, less HMAC unless
    /// the config lists it.
    remote_allowed: Vec<Algorithm>,
}

impl Shared {
    /// Fetches the remote JWKS and makes it current with the local keys.
    async fn refresh(&self, remote: &Remote) -> Result<(), String> {
        let fetched = remote.fetch(&self.remote_allowed).await?;
        let mut keys: Vec<Key> = self
            .local
            .iter()
            .map(|k| Key {
                kid: k.kid.clone(),
                algorithms: k.algorithms.clone(),
                key: k.key.clone(),
            })
            .collect();
        keys.extend(fetched);
        self.keys.store(Arc::new(KeySet::new(keys)));
        Ok(())
    }

    /// A refresh, unless one started less than `min` ago (`None`: always,
    /// after the one under way). With a `min`, a refresh under way is
    /// not waited for: a flood of made-up `kid`s does not queue behind it.
    async fn refresh_bounded(&self, min: Option<Duration>) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut last = match min {
            None => remote.last_fetch.lock().await,
            Some(_) => match remote.last_fetch.try_lock() {
                Ok(last) => last,
                Err(_) => return,
            },
        };
        if let (Some(min), Some(at)) = (min, *last)
            && at.elapsed() < min
        {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh(remote).await {
            tracing::warn!(error = %e, "jwt: JWKS refresh failed; keeping the keys we have");
        }
    }
}

/// Verifies JWTs against a key set: the `jwt` step's, and the `oauth2`
/// step's for access and ID tokens.
pub(crate) struct Verifier {
    shared: Arc<Shared>,
    /// One validation per key family: jsonwebtoken wants every algorithm
    /// of a validation to fit the key.
    validations: Vec<(AlgorithmFamily, Validation)>,
    /// How long a token with an unknown `kid` waits for the refresh it
    /// starts (`None`: until it ends), so that a made-up `kid` is a 401,
    /// never a timeout that `failureModeAllow` lets through
    /// ([`BuildContext::wait_limit`]).
    unknown_key_wait: Option<Duration>,
}

/// What a token is, by the keys at hand.
pub(crate) enum Checked {
    /// Verified: its claims.
    Valid(Map<String, Value>),
    /// Rejected, and why (in words that quote nothing of it).
    Invalid(&'static str),
    /// Signed with a `kid` no key has, while a remote key set may have
    /// rotated: worth a refresh.
    UnknownKey,
}

/// The `jwt` step.
pub struct JwtAuth {
    verifier: Verifier,
    sources: Vec<Source>,
    claims_to_headers: Vec<(Vec<String>, HeaderName)>,
    user_id_claim: String,
    metadata_from_claims: Vec<(String, String)>,
    challenge: HeaderValue,
    invalid: HeaderValue,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("keys", &self.verifier.shared.keys.load().keys.len())
            .field("algorithms", &self.verifier.shared.allowed)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// A token's claims, each member of each object of which is named once
/// (RFC 7519 4: a parser may refuse a repeated name, or take its last
/// value, as serde_json does: a service that reads the forwarded token
/// and takes the first would see a claim other than the one checked,
/// `{"scope": "read", "scope": "admin"}`).
struct Claims(Map<String, Value>);

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Unique::deserialize(d)?.0 {
            Value::Object(claims) => Ok(Claims(claims)),
            _ => Err(serde::de::Error::custom("the claims are not an object")),
        }
    }
}

/// A JSON value whose objects name each member once.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(Unique(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut members = Map::new();
                while let Some(name) = map.next_key::<String>()? {
                    let Unique(value) = map.next_value()?;
                    if members.insert(name, value).is_some() {
                        return Err(A::Error::custom("a member named twice"));
                    }
                }
                Ok(Value::Object(members))
            }
        }
        d.deserialize_any(Values).map(Unique)
    }
}

/// The reason of a token not yet valid, whose refusal no cache keeps.
const NOT_YET_VALID: &str = "not yet valid (nbf)";

/// Why a token was rejected, in words that quote nothing of it.
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "bad signature",
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => NOT_YET_VALID,
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::MissingRequiredClaim(_) => "missing a required claim",
        K::InvalidAlgorithm => "algorithm does not fit the key",
        _ => "malformed token or key",
    }
}

impl Verifier {
    /// Whether it fetches keys from a server (a remote JWKS).
    pub(crate) fn calls_a_server(&self) -> bool {
        self.shared.remote.is_some()
    }

    /// The keys and checks of `config` (its `issuer`, `audiences`,
    /// `algorithms`, `leeway` and `jwks`); reads a local JWKS file. A
    /// remote JWKS is fetched by [`start`](Self::start).
    pub(crate) fn new(config: &JwtConfig, context: &BuildContext<'_>) -> Result<Self, Error> {
        use Algorithm::*;
        let allowed: Vec<Algorithm> = if config.algorithms.is_empty() {
            vec![
                RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512,
            ]
        } else {
            let mut out = Vec::new();
            for (i, a) in config.algorithms.iter().enumerate() {
                out.push(Algorithm::from_str(a).map_err(|_| {
                    Error::config("unknown algorithm (expected RS256, ES256, EdDSA, HS256, ...)")
                        .at(format!("algorithms[{i}]"))
                })?);
            }
            out
        };
        let remote_allowed: Vec<Algorithm> = match config.algorithms.is_empty() {
            true => allowed
                .iter()
                .copied()
                .filter(|a| !matches!(a, HS256 | HS384 | HS512))
                .collect(),
            false => allowed.clone(),
        };
        let mut local = Vec::new();
        if let Some(l) = &config.jwks.local {
            let (text, at) = match (&l.key, &l.file) {
                (Some(k), None) => (k.clone(), "jwks.local.key"),
                (None, Some(f)) => {
                    let text = context
                        .read_to_string(f)
                        .map_err(|e| e.at("jwks.local.file"))?;
                    (text, "jwks.local.file")
                }
                _ => {
                    return Err(
                        Error::config("expected exactly one of `key` and `file`").at("jwks.local")
                    );
                }
            };
            local = parse_jwks(text.as_bytes(), &allowed)
                .map_err(|m| Error::config(m).at(at))?
                .into_iter()
                .map(Arc::new)
                .collect();
        }
        let remote = match &config.jwks.remote {
            None => None,
            Some(r) => {
                let uri: Uri = r
                    .url
                    .parse()
                    .map_err(|_| Error::config("not a valid URL").at("jwks.remote.url"))?;
                match uri.scheme_str() {
                    Some("http") if uri.host().is_some() && !r.allow_insecure_http => {
                        return Err(Error::config(
                            "an http:// JWKS can be replaced on the way: use https://, or set allowInsecureHttp: true",
                        )
                        .at("jwks.remote.url"));
                    }
                    Some("http" | "https") if uri.host().is_some() => {}
                    _ => {
                        return Err(
                            Error::config("expected an absolute http:// or https:// URL")
                                .at("jwks.remote.url"),
                        );
                    }
                }
                let timeout = r.timeout.map_or(Duration::from_secs(5), |d| d.0);
                if timeout.is_zero() {
                    return Err(
                        Error::config("expected a positive duration").at("jwks.remote.timeout")
                    );
                }
                let refresh = r.refresh_interval.map_or(Duration::from_secs(300), |d| d.0);
                if refresh < Duration::from_secs(1) {
                    return Err(
                        Error::config("expected at least 1s").at("jwks.remote.refreshInterval")
                    );
                }
                let min_refresh = r
                    .min_refresh_interval
                    .map_or(Duration::from_secs(30), |d| d.0);
                if min_refresh < Duration::from_secs(1) {
                    return Err(Error::config(
                        "expected at least 1s: a token with a made-up kid may fetch the key set this often",
                    )
                    .at("jwks.remote.minRefreshInterval"));
                }
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build(util::https_connector(timeout)?);
                Some(Remote {
                    uri,
                    refresh,
                    min_refresh,
                    timeout,
                    client,
                    last_fetch: tokio::sync::Mutex::new(None),
                })
            }
        };
        if local.is_empty() && remote.is_none() {
            return Err(Error::config("expected `local` or `remote` keys").at("jwks"));
        }

        let leeway = config.leeway.map_or(Duration::from_secs(60), |d| d.0);
        if leeway > MAX_LEEWAY {
            return Err(
                Error::config("at most 1h: an expired token passes for that long").at("leeway"),
            );
        }
        let mut validation = Validation::new(allowed[0]);
        validation.algorithms = allowed.clone();
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let validations = [
            AlgorithmFamily::Rsa,
            AlgorithmFamily::Ec,
            AlgorithmFamily::Ed,
            AlgorithmFamily::Hmac,
        ]
        .into_iter()
        .filter_map(|family| {
            let algorithms: Vec<Algorithm> = allowed
                .iter()
                .copied()
                .filter(|a| a.family() == family)
                .collect();
            (!algorithms.is_empty()).then(|| {
                let mut v = validation.clone();
                v.algorithms = algorithms;
                (family, v)
            })
        })
        .collect();

        let keys = KeySet::new(
            local
                .iter()
                .map(|k| Key {
                    kid: k.kid.clone(),
                    algorithms: k.algorithms.clone(),
                    key: k.key.clone(),
                })
                .collect(),
        );
        Ok(Verifier {
            shared: Arc::new(Shared {
                local,
                remote,
                keys: ArcSwap::from_pointee(keys),
                remote_allowed,
                allowed,
            }),
            validations,
            unknown_key_wait: context.wait_limit(),
        })
    }
}

impl Verifier {
    /// Checks `token` with the keys at hand.
    pub(crate) fn check_now(&self, token: &str) -> Checked {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Checked::Invalid("malformed token");
        };
        if !self.shared.allowed.contains(&header.alg) {
            return Checked::Invalid("algorithm not accepted");
        }
        // An extension the token says must be understood, and none is (RFC
        // 7515 4.1.11); jsonwebtoken reads `crit` but does not act on it.
        if header.crit.is_some() {
            return Checked::Invalid("a crit header");
        }
        let kid = header.kid.as_deref();
        let keys = self.shared.keys.load();
        // A key we have, asked for with an algorithm it does not do: a
        // refusal, not a reason to fetch the keys again.
        if let Some(kid) = kid
            && keys.by_kid.contains_key(kid)
            && keys.candidates(Some(kid), header.alg).is_empty()
        {
            return Checked::Invalid("algorithm does not fit the key");
        }
        let mut last = None;
        for key in keys.candidates(kid, header.alg) {
            let family = key.key.family();
            let Some((_, validation)) = self.validations.iter().find(|(f, _)| *f == family) else {
                continue;
            };
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                // RFC 7519 4.1.1: one issuer, a string (jsonwebtoken takes
                // an array if any of it is the issuer).
                Ok(data) if data.claims.0.get("iss").is_some_and(|i| !i.is_string()) => {
                    return Checked::Invalid("iss is not a string");
                }
                Ok(data) => return Checked::Valid(data.claims.0),
                Err(e) => last = Some(reason(e.kind())),
            }
        }
        // A kid no key has, under a remote key set: it may have rotated.
        let unknown = kid.is_some_and(|kid| !keys.by_kid.contains_key(kid));
        match last {
            _ if unknown && self.shared.remote.is_some() => Checked::UnknownKey,
            Some(reason) => Checked::Invalid(reason),
            None => Checked::Invalid("no key for the token's kid and alg"),
        }
    }

    /// Checks `token`, refreshing a remote key set first (at most once per
    /// `minRefreshInterval`) when the token names a `kid` no key has.
    pub(crate) async fn check(&self, token: &str) -> Result<Map<String, Value>, &'static str> {
        let checked = match self.check_now(token) {
            Checked::UnknownKey => {
                self.refresh_for_unknown_key().await;
                self.check_now(token)
            }
            checked => checked,
        };
        match checked {
            Checked::Valid(claims) => Ok(claims),
            Checked::Invalid(reason) => Err(reason),
            Checked::UnknownKey => Err("no key for the token's kid and alg"),
        }
    }

    /// A refresh for a token with an unknown `kid`, bounded by
    /// `minRefreshInterval`. It runs on its own task, which a request
    /// that stops waiting (or times out) does not cut short.
    async fn refresh_for_unknown_key(&self) {
        let Some(min) = self.shared.remote.as_ref().map(|r| r.min_refresh) else {
            return;
        };
        let shared = self.shared.clone();
        let refresh = tokio::spawn(async move { shared.refresh_bounded(Some(min)).await });
        match self.unknown_key_wait {
            Some(wait) => drop(tokio::time::timeout(wait, refresh).await),
            None => drop(refresh.await),
        }
    }

    /// Fetches a remote key set (an error stops the config from going
    /// live) and keeps it fresh until `lifecycle` ends.
    pub(crate) async fn start(&self, lifecycle: Lifecycle) -> Result<(), Error> {
        let Some(remote) = &self.shared.remote else {
            return Ok(());
        };
        {
            // Held so that no refresh runs beside this fetch; not counted
            // in `minRefreshInterval`, so that a key added since is
            // fetched for its first token.
            let _last = remote.last_fetch.lock().await;
            self.shared
                .refresh(remote)
                .await
                .map_err(|m| Error::start(m).at("jwks.remote"))?;
        }
        let shared = self.shared.clone();
        let period = remote.refresh;
        tokio::spawn(async move {
            let token = lifecycle.token().clone();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(period) => shared.refresh_bounded(None).await,
                }
            }
        });
        Ok(())
    }
}

impl JwtAuth {
    /// Builds the step from its config; reads a local JWKS file. A remote
    /// JWKS is fetched by [`AuthService::start`].
    pub fn new(config: JwtConfig) -> Result<Self, Error> {
        Self::read(config, &BuildContext::new("", "", ""))
    }

    /// [`new`](Self::new), reading a local JWKS file through `context`.
    fn read(config: JwtConfig, context: &BuildContext<'_>) -> Result<Self, Error> {
        let verifier = Verifier::new(&config, context)?;
        let sources = match config.token_source {
            None => vec![Source::Header(
                http::header::AUTHORIZATION,
                "Bearer ".to_owned(),
            )],
            Some(ts) => {
                let mut out = Vec::new();
                for (i, h) in ts.headers.iter().enumerate() {
                    let name =
                        util::header_name(&h.header, &format!("tokenSource.headers[{i}].header"))?;
                    out.push(Source::Header(name, h.prefix.clone().unwrap_or_default()));
                }
                out.extend(ts.cookies.into_iter().map(Source::Cookie));
                if out.is_empty() {
                    return Err(
                        Error::config("expected at least one header or cookie").at("tokenSource")
                    );
                }
                out
            }
        };
        let mut metadata_from_claims = Vec::new();
        for (key, claim) in config.dynamic_metadata_from_claims {
            let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if claim.is_empty() || !claim.chars().all(name) {
                return Err(
                    Error::config("expected a claim name of letters, digits, `-` and `_`")
                        .at(format!("dynamicMetadataFromClaims.{key}")),
                );
            }
            metadata_from_claims.push((key, claim));
        }
        let mut claims_to_headers = Vec::new();
        for (i, c) in config.claims_to_headers.iter().enumerate() {
            let header = util::header_name(&c.header, &format!("claimsToHeaders[{i}].header"))?;
            if c.claim.is_empty() {
                return Err(Error::config("expected a claim name")
                    .at(format!("claimsToHeaders[{i}].claim")));
            }
            claims_to_headers.push((c.claim.split('.').map(str::to_owned).collect(), header));
        }
        let realm = config.realm.as_deref().unwrap_or("authchain");
        if realm.contains(['"', '\\']) {
            return Err(Error::config("a realm cannot contain `\"` or `\\`").at("realm"));
        }
        let challenge = util::header_value(&format!("Bearer realm=\"{realm}\""), "realm")?;
        let invalid = util::header_value(
            &format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
            "realm",
        )?;
        Ok(JwtAuth {
            verifier,
            sources,
            claims_to_headers,
            user_id_claim: config.user_id_claim.unwrap_or_else(|| "sub".to_owned()),
            metadata_from_claims,
            challenge,
            invalid,
        })
    }

    fn deny(&self, invalid: bool) -> Decision {
        let value = if invalid {
            &self.invalid
        } else {
            &self.challenge
        };
        Deny::new(StatusCode::UNAUTHORIZED)
            .header(http::header::WWW_AUTHENTICATE, value.clone())
            .into()
    }

    /// The refusal of a token that may pass in a while (one not yet valid,
    /// one whose key a refresh may bring): no decision cache keeps it.
    fn deny_for_now(&self) -> Decision {
        Deny::new(StatusCode::UNAUTHORIZED)
            .header(http::header::WWW_AUTHENTICATE, self.invalid.clone())
            .header(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            )
            .into()
    }

    /// The token, from the sources present. `Err(())`: a source is
    /// present but unusable, or two carry different tokens (the app
    /// behind may read the one not checked), or a token comes beside a
    /// source header of another scheme (which an app may read as one).
    /// That header alone is no token (RFC 6750 3.1).
    fn token<'a>(&self, request: &'a AuthorizationRequest) -> Result<Option<&'a str>, ()> {
        let (mut token, mut other_scheme) = (None, false);
        for source in &self.sources {
            let found = match source {
                Source::Header(name, prefix) => {
                    match util::scheme_credential(request, name, prefix) {
                        Err(()) if util::other_scheme(request, name, prefix) => {
                            other_scheme = true;
                            None
                        }
                        found => found?,
                    }
                }
                Source::Cookie(name) => util::credential_cookie(request, name)?,
            };
            match (found, token) {
                (None, _) => {}
                (Some(t), _) if t.is_empty() || t.len() > util::MAX_CREDENTIAL_LEN => {
                    return Err(());
                }
                (Some(t), None) => token = Some(t),
                (Some(t), Some(first)) if t != first => return Err(()),
                (Some(_), Some(_)) => {}
            }
        }
        match (token, other_scheme) {
            (Some(_), true) => Err(()),
            _ => Ok(token),
        }
    }

    /// The decision with the keys at hand; `None`, when `may_wait`, for a
    /// token whose kid no key has while a remote key set may have rotated
    /// (the request is then unchanged).
    fn judge(&self, request: &mut AuthorizationRequest, may_wait: bool) -> Option<Decision> {
        let token = match self.token(request) {
            Ok(Some(t)) => t,
            Ok(None) => return Some(self.deny(false)),
            Err(()) => return Some(self.deny(true)),
        };
        match self.verifier.check_now(token) {
            Checked::Valid(claims) => Some(self.allow(request, claims)),
            Checked::UnknownKey if may_wait => None,
            Checked::UnknownKey => {
                tracing::debug!("jwt: no key for the token's kid and alg");
                Some(self.deny_for_now())
            }
            Checked::Invalid(reason) => {
                tracing::debug!(reason, "jwt: token rejected");
                Some(match reason == NOT_YET_VALID {
                    true => self.deny_for_now(),
                    false => self.deny(true),
                })
            }
        }
    }

    fn allow(&self, request: &mut AuthorizationRequest, claims: Map<String, Value>) -> Decision {
        allow_claims(
            request,
            claims,
            &self.user_id_claim,
            &self.claims_to_headers,
            &self.metadata_from_claims,
        )
    }
}

/// The allow of a verified token's `claims`: the chosen claims in their
/// upstream headers and the dynamic metadata (key, claim), the user from
/// `user_id_claim`, kept no longer than `exp`, the claims in `state.jwt`.
fn allow_claims(
    request: &mut AuthorizationRequest,
    claims: Map<String, Value>,
    user_id_claim: &str,
    claims_to_headers: &[(Vec<String>, HeaderName)],
    metadata_from_claims: &[(String, String)],
) -> Decision {
    let mut allow = Allow::new();
    for (key, claim) in metadata_from_claims {
        if let Some(value) = claims.get(claim) {
            allow.dynamic_metadata.insert(key.clone(), value.clone());
        }
    }
    for (path, header) in claims_to_headers {
        let mut value = claims.get(&path[0]);
        for part in &path[1..] {
            value = value.and_then(|v| v.get(part));
        }
        if let Some(v) = value.and_then(util::json_header_value) {
            allow = allow.set_header(header.clone(), v);
        }
    }
    if let Some(Value::String(user)) = claims.get(user_id_claim) {
        // The claims themselves are in `state.jwt`; not copied again here.
        allow = allow.user(UserInfo::new(user.clone()));
    }
    // A remembered allow is not kept past the token's `exp`.
    let exp = claims.get("exp").and_then(Value::as_f64);
    if let Some(at) = exp
        .and_then(|e| Duration::try_from_secs_f64(e).ok())
        .and_then(|e| std::time::UNIX_EPOCH.checked_add(e))
    {
        allow = allow.expires_at(at);
    }
    request.state.insert(STATE_KEY, Value::Object(claims));
    allow.into()
}

#[async_trait]
impl AuthService for JwtAuth {
    async fn start(&self, lifecycle: Lifecycle) -> Result<(), Error> {
        self.verifier.start(lifecycle).await
    }

    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        if let Some(decision) = self.judge(request, true) {
            return decision.into();
        }
        // An unknown kid and a remote key set: the keys may have rotated.
        Answer::wait(async move {
            self.verifier.refresh_for_unknown_key().await;
            Ok(self
                .judge(request, false)
                .unwrap_or_else(|| self.deny(true)))
        })
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        self.claims_to_headers
            .iter()
            .map(|(_, h)| h.clone())
            .collect()
    }
    fn reads(&self) -> Option<Vec<Attribute>> {
        let reads = self.sources.iter().map(|source| match source {
            Source::Header(name, _) => Attribute::header(name.clone()),
            Source::Cookie(name) => Attribute::cookie(name.clone()),
        });
        Some(reads.collect())
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        (!self.verifier.calls_a_server()).then_some(authchain_core::CALLS_NO_SERVER)
    }
}
