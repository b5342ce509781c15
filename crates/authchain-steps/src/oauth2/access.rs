//! `oauth2.accessTokenValidation`: a request's access token, checked as a
//! JWT against a JWKS, or by the IdP's RFC 7662 introspection endpoint.
//!
//! ```yaml
//! oauth2:
//!   accessTokenValidation:
//!     # exactly one of `jwt`, `introspection`, and the deprecated `introspectionUrl`
//!     jwt:
//!       remoteJwks:                                   # or localJwks: { inlineString: '{"keys": [...]}' }
//!         url: https://idp.example.com/jwks
//!         refreshInterval: 5m                         # (5m)
//!       issuer: https://idp.example.com/              # the `iss` tokens must have (optional)
//!       audiences: [ratings]                          # one of these in `aud` (optional)
//!     # introspection:
//!     #   introspectionUrl: https://idp.example.com/token/introspection
//!     #   clientId: ratings                           # the client the endpoint authenticates
//!     #   clientSecretRef: { name: ratings-oauth, namespace: gloo-system }
//!     #   # disableClientSecret: true                 # a client id without a secret
//!     #   userIdAttributeName: sub                    # the answer's attribute naming the user
//!     # introspectionUrl: https://idp.example.com/introspect   # deprecated: no client auth
//!     userinfoUrl: https://idp.example.com/me         # optional: the OIDC userinfo answer to state
//!     cacheTimeout: 10m                               # introspection and userinfo answers (10m; 0: none)
//!     requiredScopes: { scope: [ratings.read] }       # all of them, or 403
//!     claimsToHeaders:
//!     - { claim: sub, header: x-user-id }
//!     dynamicMetadataFromClaims: { email: email }
//!     timeout: 5s                                     # authchain's: each call to the IdP (5s)
//! ```
//!
//! The token is read from `Authorization: Bearer` only (RFC 6750; the
//! scheme in any case): never from the query or a form body, where RFC
//! 6750 also allows it (a token in a URL ends up in logs). No header, or
//! one of another scheme (RFC 6750 3.1): a 401 with
//! `WWW-Authenticate: Bearer realm="authchain"`. A token in the header
//! and an `access_token` query parameter (in any spelling) beside it: a
//! 400 with `error="invalid_request"` (RFC 6750 2: one way per request;
//! the app behind may read the one in the query). Two
//! `Authorization` headers (the app may read the other), a header that is
//! not one RFC 6750 `b64token` within 8 KiB (letters, digits, `-._~+/`,
//! then `=`s: no comma, quote or space, so nothing a proxy joined), a JWT
//! with a `crit` header (RFC 7515: an extension this step does not
//! understand), or a token that is malformed, badly signed, expired,
//! inactive, or refused by the userinfo endpoint: a 401 with
//! `error="invalid_token"` added. A valid token without every
//! `requiredScopes` scope: a 403 with `error="insufficient_scope"` and
//! the `scope="..."` required (scopes match whole and case-sensitively:
//! `read:all` is not `read`). Scopes are
//! read from the `scope` claim (or introspection member), a space-separated
//! string (RFC 7662, RFC 9068), or, when there is none, from `scp` (Okta
//! and Entra write it, as a list or a string); a list is accepted in
//! either.
//!
//! - `jwt`: the token's signature, `exp` and `nbf` (60 s of leeway), and
//!   `iss` and `aud` when set, are checked by the same code as the `jwt`
//!   step, with the same key handling: a `remoteJwks` is fetched when the
//!   step starts (a failure leaves the step waiting: it fails its
//!   requests with `statusOnError` and tries again) and every
//!   `refreshInterval`, and early (at most every 30 s) for an unknown
//!   `kid`; its `oct` (HMAC) keys are never used. An `http://` JWKS URL is
//!   accepted, as Gloo does, with a warning off loopback. A token whose
//!   claims say it is an ID or a refresh token (`token_use: id`, as
//!   Cognito's ID tokens, which its access tokens share a key with and
//!   carry no `aud` to tell apart; `typ: ID`, as Keycloak's; the same
//!   members as for introspection below) is a 401. The claims go to
//!   `state.jwtAccessToken` (Gloo's key), the `sub` claim to `UserInfo`.
//! - `introspection`: the endpoint is asked about each token not in the
//!   cache (`token=...&token_type_hint=access_token`, with the client's id and secret in HTTP Basic as
//!   RFC 6749 2.3.1 encodes them; a client id without a secret goes in the
//!   body; the deprecated `introspectionUrl` sends no client). As Gloo
//!   requires: with a `clientId`, a `clientSecretRef` or
//!   `disableClientSecret: true` (which then wins: no secret is read);
//!   without one, no `clientSecretRef`. `active: false`, an `exp` past,
//!   or an answer that says the token is a refresh or an ID token
//!   (`token_type`, Hydra's `token_use`, Keycloak's `typ`: many IdPs
//!   answer `active` for those too) is a 401; an answer that is not RFC 7662 JSON (`active` not a
//!   boolean, `scope` not a string, `exp` not a number, beyond 1 MiB or
//!   128 levels deep) is the step's error. The answer goes to
//!   `state.tokenIntrospection` (an authchain key: Gloo documents none for
//!   it); with `userIdAttributeName`, that attribute's value, a non-empty
//!   string, is the user in `UserInfo`, and an answer without one is a
//!   401.
//! - `userinfoUrl`: once the token is valid, the endpoint is asked with it
//!   as a bearer token; its JSON answer goes to `state.introspection`, the
//!   key Gloo documents for it. The endpoint's 401 makes the request a 401
//!   (the IdP no longer takes the token); any other failure is the step's
//!   error, a deny with the chain's `statusOnError`. The answer's `sub` is
//!   not compared with the token's: OpenID Connect Core 5.3.2 compares it
//!   with the ID token's, which this step does not see, and an access
//!   token's `sub` may name the user otherwise (Okta's is the login, its
//!   userinfo's the user id).
//! - `claimsToHeaders` and `dynamicMetadataFromClaims` read a JWT's claims,
//!   or, for an opaque token, the introspection answer's members (Gloo
//!   documents `claimsToHeaders` as JWT-only; authchain gives it the only
//!   claims an opaque token has rather than refuse a config Gloo
//!   accepts). A claim that is not a string is written as JSON. The
//!   headers are declared as identity headers, so the chain strips
//!   client-sent copies.
//!
//! # What is kept, and for how long
//!
//! Introspection and userinfo answers are kept per token in memory (at
//! most 10 000 tokens and 32 MiB of answers, as JSON), under a keyed PRF
//! of the token (128 bits of SipHash with a random key per step), never
//! the token itself, for `cacheTimeout` (10 min by default; `0s`: not
//! kept) but never past the token's `exp`. Concurrent requests with one
//! token that is not kept make one call and share its answer; if the
//! request that makes the call goes away, one of the others makes it
//! again. At most 64 calls to the IdP are under way at once per step: a
//! flood of distinct tokens waits for its turn (at most `timeout`, then
//! the step's error) rather than open a connection each, and past 256
//! distinct tokens waiting, a new one is the step's error at once. Only valid
//! tokens are kept (a token without a required scope is valid, and its
//! 403 kept): an IdP's failure is
//! never remembered (the next request asks again), and neither is an
//! inactive or refused token, because tokens an attacker makes up never
//! repeat, so remembering them would protect the IdP from nothing while
//! pushing valid tokens out of the cache.
//!
//! A failure of the IdP is the step's error, a deny with the chain's
//! `statusOnError`, which `failureModeAllow` lets through only when the
//! IdP gave no answer of its own (no connection, none in time, a
//! gateway's 502, 503 or 504 for it) and answered no other call within a
//! call's time (any step's, of any AuthConfig, to its introspection
//! endpoint's origin: else it is up, and a client made its own call
//! slow). An
//! answer of its own that judges nothing fails closed whatever
//! `failureModeAllow` says: a client can bring it about (a 429 from a
//! flood of made-up tokens, another 5xx or an answer that is no RFC 7662
//! JSON from a handler that fails on a token, a userinfo 403 for a token
//! without `openid`). A request's calls and waits on the IdP have nine
//! tenths of the step's `timeout` in all (and each call at most
//! `timeout`), so that the step judges a late IdP itself before its timer
//! ends the request with an error `failureModeAllow` lets through.
//!
//! An allow carries the token's `exp` as its expiry, and, when it rests on
//! a kept answer, no later than that answer may be kept: a decision cache
//! in front of the chain never remembers the allow longer. The step does
//! not declare what it reads (the decision cache's `reads`): its answer
//! depends on the IdP, not only on `Authorization`; a cached AuthConfig
//! with it needs `trustKey: true` and `authorization` in its key.
//!
//! Gloo's `azure` (Entra distributed claims) is refused; `default` is
//! accepted. Building the step reaches nothing on the network (`authchain
//! check` checks a config offline); the step never logs or returns a
//! token, a secret or the IdP's words: failures are logged at debug level
//! with the reason alone (an IdP's error code only if RFC 6749 defines
//! it, a bad answer's place only if RFC 7662 names it).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use authchain_core::transport::{LastAnswer, is_gateway_failure};
use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, BuildContext, ConfigDuration, Decision, Deny,
    Error, Lifecycle, UserInfo, async_trait,
};
use http::{HeaderName, HeaderValue, StatusCode};
use oauth2::basic::{BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenResponse};
use oauth2::{
    EndpointNotSet, EndpointSet, StandardRevocableToken, StandardTokenIntrospectionResponse,
    TokenIntrospectionResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::{AccessTokenValidation, IntrospectionValidation, JwtValidation};
use super::flight::Flights;
use super::idp::{self, CallError, Http};
use super::{ClaimHeaders, ClaimMetadata, set};
use crate::jwt::{Checked, JwksConfig, JwtConfig, LocalJwks, RemoteJwks, Verifier};
use crate::util;

/// Where a verified JWT's claims go in `state` (Gloo's key).
pub const JWT_STATE_KEY: &str = "jwtAccessToken";

/// Where an introspection answer goes in `state` (authchain's key).
pub const INTROSPECTION_STATE_KEY: &str = "tokenIntrospection";

/// Where the userinfo answer goes in `state` (Gloo's key for it).
pub const USERINFO_STATE_KEY: &str = "introspection";

/// The time limit of each call to the IdP when the config sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long answers are kept when the config sets no `cacheTimeout`.
const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_secs(600);

/// The most tokens whose answers are kept.
const CACHE_ENTRIES: u64 = 10_000;

/// The most bytes of answers kept: each token's answers weigh what they
/// take in memory (about: [`weight_of`]), and at least
/// `CACHE_BYTES / CACHE_ENTRIES`, so that both bounds hold.
const CACHE_BYTES: u64 = 32 << 20;

/// The most calls to the IdP under way at once for one step: a flood of
/// distinct tokens waits for its turn (at most `timeout`) rather than
/// open a connection each.
const MAX_CALLS: usize = 64;

/// The `accessTokenValidation` step.
pub struct AccessToken {
    asker: Arc<Asker>,
    /// The longest a request waits on the IdP, all its calls and waits
    /// together ([`BuildContext::call_limit`]): past the step's own time,
    /// its timer would end the request with an error `failureModeAllow`
    /// lets through.
    budget: Option<Duration>,
    prf: util::Prf,
    required_scopes: Vec<String>,
    claim_headers: ClaimHeaders,
    claim_metadata: ClaimMetadata,
    /// `WWW-Authenticate` of a 401 without a token, with a bad one, and of
    /// a 403 for scopes.
    challenge: HeaderValue,
    invalid: HeaderValue,
    insufficient: HeaderValue,
    /// `WWW-Authenticate` of a 400 for a token sent two ways.
    twice: HeaderValue,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs, ids and settings; never a secret or a token.
        let mut d = f.debug_struct("AccessToken");
        match &self.asker.check {
            Check::Jwt(_) => d.field("check", &"jwt"),
            Check::Introspection(i) => d
                .field("check", &"introspection")
                .field("introspection_url", &i.client.introspection_url().as_str())
                .field("client_id", &i.client_id)
                .field("client_secret", &i.has_secret),
        };
        d.field(
            "userinfo_url",
            &self.asker.userinfo.as_ref().map(url::Url::as_str),
        )
        .field("cache_timeout", &self.asker.answers.keep)
        .field("required_scopes", &self.required_scopes)
        .field("http", &self.asker.http)
        .finish_non_exhaustive()
    }
}

/// How tokens are checked, and what asks the IdP about them (shared
/// with the lookups under way).
struct Asker {
    check: Check,
    userinfo: Option<url::Url>,
    /// The client for the introspection and userinfo endpoints.
    http: Http,
    answers: Answers,
    /// Permits for calls to the IdP ([`MAX_CALLS`]).
    calls: tokio::sync::Semaphore,
    /// The longest wait for a permit ([`BuildContext::wait_limit`]).
    queue_wait: Duration,
    /// When the IdP last answered a call of its own ([`LastAnswer::of`]
    /// its introspection endpoint's origin, else its userinfo endpoint's).
    heard: Arc<LastAnswer>,
}

/// How a token is checked.
enum Check {
    Jwt(Verifier),
    Introspection(Box<Introspection>),
}

/// The members of an introspection answer besides RFC 7662's, kept so
/// that `userIdAttributeName`, `claimsToHeaders` and `state` can name any.
#[derive(Debug, Serialize, Deserialize)]
struct Members {
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl oauth2::ExtraTokenFields for Members {}

type IntrospectionAnswer =
    StandardTokenIntrospectionResponse<Members, oauth2::basic::BasicTokenType>;

type Introspector = oauth2::Client<
    BasicErrorResponse,
    BasicTokenResponse,
    IntrospectionAnswer,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
>;

struct Introspection {
    client: Introspector,
    /// The client id, when there is one (none: the deprecated
    /// `introspectionUrl`, or `introspection` without `clientId`).
    client_id: Option<String>,
    has_secret: bool,
    user_id_attribute: Option<String>,
}

/// What the IdP said about one token: kept per token while it may be.
struct Remote {
    /// The introspection answer (a JSON object).
    introspection: Option<Arc<Value>>,
    /// The userinfo answer.
    userinfo: Option<Arc<Value>>,
    /// The token's `exp`.
    exp: Option<SystemTime>,
    /// Until when it may be kept (and an allow built on it remembered):
    /// `cacheTimeout` from the answer, or the token's `exp` if sooner.
    keep_until: Instant,
    trusted_until: SystemTime,
    /// What it weighs in the cache (see [`CACHE_BYTES`]).
    weight: u32,
}

/// A lookup's outcome: the token is valid with this, or rejected (a 401)
/// for this reason.
#[derive(Clone)]
enum Lookup {
    Valid(Arc<Remote>),
    Rejected(&'static str),
    /// Not asked: every call to the IdP this step makes at once is under
    /// way, a limit clients can fill.
    Busy,
}

/// A lookup, or why the IdP could not judge the token (shared by the
/// requests that waited for one call).
type Looked = Result<Lookup, Unjudged>;

/// Why the IdP could not judge a token, in words that quote nothing of it.
#[derive(Debug, Clone)]
struct Unjudged {
    why: Arc<str>,
    /// Whether the IdP gave no answer of its own (no connection, none in
    /// time, a gateway's 502, 503 or 504 for it): an outage
    /// `failureModeAllow` may ride out, unless the IdP answered other
    /// calls meanwhile (a client can make its own call slow). Any answer
    /// of its own that judges nothing (a 429, another 5xx, one that is no
    /// RFC 7662 JSON, a userinfo 403) may be the client's doing: a token
    /// its handler fails on, a flood that trips its rate limit.
    outage: bool,
}

impl From<&str> for Unjudged {
    fn from(why: &str) -> Self {
        Unjudged {
            why: why.into(),
            outage: false,
        }
    }
}

impl From<String> for Unjudged {
    fn from(why: String) -> Self {
        Unjudged {
            why: why.into(),
            outage: false,
        }
    }
}

/// Answers kept per token, and the calls under way.
struct Answers {
    cache: Option<util::Kept<Arc<Remote>>>,
    keep: Duration,
    /// The lookups under way: the requests that miss together wait for
    /// one call.
    inflight: Flights<Looked>,
}

impl Answers {
    fn new(keep: Duration) -> Self {
        let cache = (!keep.is_zero()).then(|| {
            util::Kept::weighed(CACHE_ENTRIES, CACHE_BYTES, |remote: &Arc<Remote>| {
                u64::from(remote.weight)
            })
        });
        Answers {
            cache,
            keep,
            inflight: Flights::new(4 * MAX_CALLS),
        }
    }

    fn get(&self, key: u128) -> Option<Arc<Remote>> {
        self.cache.as_ref()?.get(key)
    }

    fn put(&self, key: u128, remote: &Arc<Remote>) {
        if let Some(cache) = &self.cache {
            let keep = remote.keep_until.saturating_duration_since(Instant::now());
            cache.insert(key, remote.clone(), keep);
        }
    }

    /// The answers about a token, kept for `keep` but never past `exp`.
    fn remote(
        &self,
        introspection: Option<Arc<Value>>,
        userinfo: Option<Arc<Value>>,
        exp: Option<SystemTime>,
    ) -> Remote {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut keep = self.keep;
        if let Some(exp) = exp {
            keep = keep.min(exp.duration_since(wall).unwrap_or_default());
        }
        let bytes = [&introspection, &userinfo]
            .into_iter()
            .flatten()
            .map(|v| weight_of(v))
            .sum::<u64>();
        let weight = bytes.max(CACHE_BYTES / CACHE_ENTRIES);
        Remote {
            introspection,
            userinfo,
            exp,
            keep_until: now + keep,
            trusted_until: wall + keep,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }
}

/// About what `value` takes in memory: a `Value` per node, and the bytes
/// of its strings and keys. Its JSON's length would undercount a parsed
/// `[0,0,...]` some sixteen times.
fn weight_of(value: &Value) -> u64 {
    const NODE: u64 = std::mem::size_of::<Value>() as u64;
    NODE + match value {
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(weight_of).sum(),
        Value::Object(members) => members
            .iter()
            .map(|(name, value)| NODE + name.len() as u64 + weight_of(value))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// A place in the `jwt` step's config, as this block names it.
fn relocate(e: Error) -> Error {
    const PLACES: [(&str, &str); 4] = [
        ("jwks.local.key", "jwt.localJwks.inlineString"),
        ("jwks.remote.url", "jwt.remoteJwks.url"),
        (
            "jwks.remote.refreshInterval",
            "jwt.remoteJwks.refreshInterval",
        ),
        ("jwks.remote.timeout", "timeout"),
    ];
    let Some(place) = e.place().map(str::to_owned) else {
        return e.at("jwt");
    };
    match PLACES.iter().find(|(from, _)| *from == place) {
        Some((from, to)) if e.is_config() => {
            let text = e.to_string();
            let message = text.strip_prefix(&format!("{from}: ")).unwrap_or(&text);
            Error::config(message).at(to)
        }
        _ => e.at("jwt"),
    }
}

/// A `b64token` (RFC 6750 2.1), the only token syntax of
/// `Authorization: Bearer`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
/// "+" / "/" ) *"="`. No comma (a proxy joins repeated headers with one),
/// quote, space or `;`.
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// A scope-token (RFC 6749 3.3): visible ASCII but `"` and `\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Whether `claims` grant every scope of `required`: `scope`, else `scp`,
/// each a space-separated string or a list of strings.
fn has_scopes(claims: &Map<String, Value>, required: &[String]) -> bool {
    if required.is_empty() {
        return true;
    }
    let granted = claims.get("scope").or_else(|| claims.get("scp"));
    required.iter().all(|r| match granted {
        Some(Value::String(s)) => s.split(' ').any(|g| g == r),
        Some(Value::Array(list)) => list.iter().any(|g| g.as_str() == Some(r)),
        _ => false,
    })
}

/// A claim holding seconds since the epoch, as a time; one before the
/// epoch is the epoch (long past), not none.
fn epoch_claim(claims: &Map<String, Value>, name: &str) -> Option<SystemTime> {
    let secs = claims.get(name)?.as_f64()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs.max(0.0)).ok()?)
}

/// Whether an active introspection answer says the token is a refresh or
/// an ID token (`token_type`, Hydra's `token_use`, Keycloak's `typ`):
/// many IdPs answer `active` for those too, whatever `token_type_hint`.
fn another_kind_of_token(members: &Map<String, Value>) -> bool {
    const OTHER: [&str; 6] = [
        "refresh_token",
        "refresh",
        "offline",
        "id",
        "id_token",
        "urn:ietf:params:oauth:token-type:refresh_token",
    ];
    ["token_type", "token_use", "typ"].iter().any(|name| {
        members
            .get(*name)
            .and_then(Value::as_str)
            .is_some_and(|kind| OTHER.iter().any(|o| kind.eq_ignore_ascii_case(o)))
    })
}

impl AccessToken {
    /// Builds the step; reads a client secret, reaches nothing. A remote
    /// JWKS is fetched by [`AuthService::start`].
    pub fn new(config: AccessTokenValidation, context: &BuildContext<'_>) -> Result<Self, Error> {
        super::unsupported(&config.azure, "azure", "Entra distributed claims (`azure`)")?;
        let timeout = config.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(Error::config("expected a positive duration").at("timeout"));
        }
        let keep = config.cache_timeout.map_or(DEFAULT_CACHE_TIMEOUT, |d| d.0);
        let check = match (
            &config.jwt,
            &config.introspection,
            set(&config.introspection_url),
        ) {
            (Some(jwt), None, None) => Check::Jwt(jwt_verifier(jwt, timeout, context)?),
            (None, Some(i), None) => Check::Introspection(Box::new(
                introspection(i, context).map_err(|e| e.at("introspection"))?,
            )),
            (None, None, Some(url)) => {
                let url = idp::check_url(url, "introspectionUrl")?;
                Check::Introspection(Box::new(Introspection {
                    client: introspector(url, None, None),
                    client_id: None,
                    has_secret: false,
                    user_id_attribute: None,
                }))
            }
            _ => {
                return Err(Error::config(
                    "expected exactly one of `jwt`, `introspection` and `introspectionUrl`",
                ));
            }
        };
        let userinfo = set(&config.userinfo_url)
            .map(|u| idp::check_url(u, "userinfoUrl"))
            .transpose()?;
        let endpoint = config
            .introspection
            .as_ref()
            .map(|i| i.introspection_url.as_str())
            .or(set(&config.introspection_url))
            .and_then(|u| url::Url::parse(u).ok())
            .or_else(|| userinfo.clone());
        let origin = endpoint.map_or_else(String::new, |u| u.origin().ascii_serialization());
        let required_scopes = config.required_scopes.map(|s| s.scope).unwrap_or_default();
        for (i, scope) in required_scopes.iter().enumerate() {
            if !is_scope_token(scope) {
                return Err(Error::config(
                    "expected a scope: visible ASCII without spaces, `\"` or `\\`",
                )
                .at(format!("requiredScopes.scope[{i}]")));
            }
        }
        let realm = "Bearer realm=\"authchain\"";
        let insufficient = match required_scopes.is_empty() {
            true => format!("{realm}, error=\"insufficient_scope\""),
            false => format!(
                "{realm}, error=\"insufficient_scope\", scope=\"{}\"",
                required_scopes.join(" ")
            ),
        };
        Ok(AccessToken {
            asker: Arc::new(Asker {
                check,
                userinfo,
                http: Http::new(context.call_limit().map_or(timeout, |l| timeout.min(l)))?,
                answers: Answers::new(keep),
                calls: tokio::sync::Semaphore::new(MAX_CALLS),
                queue_wait: context.wait_limit().map_or(timeout, |w| w.min(timeout)),
                heard: LastAnswer::of(&origin),
            }),
            budget: context.call_limit(),
            prf: util::Prf::new(),
            claim_headers: ClaimHeaders::new(&config.claims_to_headers, "claimsToHeaders")?,
            claim_metadata: ClaimMetadata::new(
                &config.dynamic_metadata_from_claims,
                "dynamicMetadataFromClaims",
            )?,
            required_scopes,
            challenge: HeaderValue::from_static("Bearer realm=\"authchain\""),
            invalid: HeaderValue::from_static(
                "Bearer realm=\"authchain\", error=\"invalid_token\"",
            ),
            insufficient: util::header_value(&insufficient, "requiredScopes")?,
            twice: HeaderValue::from_static(
                "Bearer realm=\"authchain\", error=\"invalid_request\"",
            ),
        })
    }
}

/// The `jwt` block as the `jwt` step's keys and checks, for the step
/// `context` builds (a made-up `kid`'s key refresh keeps within its time).
fn jwt_verifier(
    jwt: &JwtValidation,
    timeout: Duration,
    context: &BuildContext<'_>,
) -> Result<Verifier, Error> {
    let (local, remote) = match (&jwt.local_jwks, &jwt.remote_jwks) {
        (Some(local), None) => (
            Some(LocalJwks {
                key: Some(local.inline_string.clone()),
                file: None,
            }),
            None,
        ),
        (None, Some(remote)) => {
            idp::check_url(&remote.url, "jwt.remoteJwks.url")?;
            (
                None,
                Some(RemoteJwks {
                    url: remote.url.clone(),
                    refresh_interval: remote.refresh_interval,
                    min_refresh_interval: None,
                    timeout: Some(ConfigDuration(timeout)),
                    // check_url judged it: Gloo takes http://, with a warning.
                    allow_insecure_http: true,
                }),
            )
        }
        _ => {
            return Err(
                Error::config("expected exactly one of `remoteJwks` and `localJwks`").at("jwt"),
            );
        }
    };
    let config = JwtConfig {
        issuer: set(&jwt.issuer).map(str::to_owned),
        audiences: jwt.audiences.clone(),
        algorithms: Vec::new(),
        leeway: None,
        jwks: JwksConfig { local, remote },
        token_source: None,
        claims_to_headers: Vec::new(),
        user_id_claim: None,
        dynamic_metadata_from_claims: Default::default(),
        realm: None,
    };
    let mut within = BuildContext::new("", "", "");
    if let Some(time) = context.timeout {
        within = within.with_timeout(time);
    }
    Verifier::new(&config, &within).map_err(relocate)
}

/// The `introspection` block: its URL, and its client as Gloo allows.
fn introspection(
    config: &IntrospectionValidation,
    context: &BuildContext<'_>,
) -> Result<Introspection, Error> {
    if config.introspection_url.is_empty() {
        return Err(Error::config("expected a URL").at("introspectionUrl"));
    }
    let url = idp::check_url(&config.introspection_url, "introspectionUrl")?;
    let disabled = config.disable_client_secret == Some(true);
    let secret = match (set(&config.client_id), &config.client_secret_ref) {
        (Some(_), _) if disabled => {
            if config.client_secret_ref.is_some() {
                tracing::warn!(
                    "oauth2: disableClientSecret is true: the clientSecretRef is not read"
                );
            }
            None
        }
        (Some(_), Some(reference)) => {
            Some(idp::client_secret(context, reference, "clientSecretRef")?)
        }
        (Some(_), None) => {
            return Err(Error::config(
                "a clientId needs a clientSecretRef, or disableClientSecret: true",
            )
            .at("clientSecretRef"));
        }
        (None, Some(_)) => {
            return Err(Error::config("a clientSecretRef needs a clientId").at("clientSecretRef"));
        }
        (None, None) => None,
    };
    let client_id = set(&config.client_id).map(str::to_owned);
    Ok(Introspection {
        client: introspector(url, client_id.as_deref(), secret),
        has_secret: client_id.is_some() && !disabled,
        client_id,
        user_id_attribute: set(&config.user_id_attribute_name).map(str::to_owned),
    })
}

/// An RFC 7662 client of `url`; with a secret, the client authenticates
/// with HTTP Basic.
fn introspector(url: url::Url, client_id: Option<&str>, secret: Option<String>) -> Introspector {
    let client = oauth2::Client::new(oauth2::ClientId::new(
        client_id.unwrap_or_default().to_owned(),
    ))
    .set_introspection_url(oauth2::IntrospectionUrl::from_url(url))
    .set_auth_type(oauth2::AuthType::BasicAuth);
    match secret {
        Some(secret) => client.set_client_secret(oauth2::ClientSecret::new(secret)),
        None => client,
    }
}

/// The reason of an introspection failure, in words that quote nothing of
/// the answer.
fn introspection_error(e: oauth2::RequestTokenError<CallError, BasicErrorResponse>) -> Unjudged {
    use oauth2::RequestTokenError as E;
    /// RFC 7662's members: the only names of the answer an error quotes.
    const MEMBERS: [&str; 12] = [
        "active",
        "scope",
        "client_id",
        "username",
        "token_type",
        "exp",
        "iat",
        "nbf",
        "sub",
        "aud",
        "iss",
        "jti",
    ];
    let text = match e {
        E::Request(e) => {
            return Unjudged {
                why: format!("introspection: {e}").into(),
                outage: e.outage,
            };
        }
        E::ServerResponse(e) => format!(
            "the introspection endpoint answered {}",
            super::error_words(e.error())
        ),
        // The path's first name, if it is RFC 7662's: the others are the
        // IdP's (and a name may be anything).
        E::Parse(e, _) => match e.path().to_string().split('.').next() {
            Some(member) if MEMBERS.contains(&member) => {
                format!("the introspection answer is not RFC 7662 JSON (at `{member}`)")
            }
            _ => "the introspection answer is not RFC 7662 JSON".to_owned(),
        },
        // The crate's own words, one of which quotes the Content-Type.
        E::Other(e) if e.starts_with("unexpected response Content-Type") => {
            "the introspection answer is not JSON (its Content-Type)".to_owned()
        }
        E::Other(e) if e.contains("empty") => {
            "the introspection endpoint answered with an empty body".to_owned()
        }
        E::Other(_) => "the introspection answer is not usable".to_owned(),
    };
    text.into()
}

impl AccessToken {
    fn unauthorized(&self, invalid: bool) -> Decision {
        let challenge = if invalid {
            &self.invalid
        } else {
            &self.challenge
        };
        Deny::new(StatusCode::UNAUTHORIZED)
            .header(http::header::WWW_AUTHENTICATE, challenge.clone())
            .into()
    }

    fn rejected(&self, reason: &'static str) -> Decision {
        tracing::debug!(reason, "oauth2: access token rejected");
        self.unauthorized(true)
    }

    /// The bearer token; `Err(invalid)`: none (`false`: no header, or one
    /// of another scheme, RFC 6750 3.1), or not one (`true`), a 401
    /// either way.
    fn token<'r>(&self, request: &'r AuthorizationRequest) -> Result<&'r str, bool> {
        match util::scheme_credential(request, &http::header::AUTHORIZATION, "Bearer ") {
            Ok(None) => Err(false),
            Ok(Some(token)) if token.len() <= util::MAX_CREDENTIAL_LEN && is_b64token(token) => {
                Ok(token)
            }
            _ => Err(!util::other_scheme(
                request,
                &http::header::AUTHORIZATION,
                "Bearer ",
            )),
        }
    }

    /// The allow for a valid token: `claims`, a JWT's (else the
    /// introspection answer's), checked for scopes and the user, then
    /// copied where the config says. A deny changes nothing.
    fn allow(
        &self,
        request: &mut AuthorizationRequest,
        jwt: Option<Map<String, Value>>,
        remote: Option<&Remote>,
    ) -> Decision {
        let introspected = remote
            .and_then(|r| r.introspection.as_deref())
            .and_then(Value::as_object);
        let Some(claims) = jwt.as_ref().or(introspected) else {
            return self.rejected("no claims");
        };
        // An ID token (Cognito's `token_use: id`, Keycloak's `typ: ID`) or
        // a refresh token, signed by the same key: not for this API.
        if jwt.as_ref().is_some_and(another_kind_of_token) {
            return self.rejected("not an access token");
        }
        let user = match &self.asker.check {
            Check::Introspection(i) => match &i.user_id_attribute {
                Some(name) => match claims.get(name) {
                    Some(Value::String(user)) if !user.is_empty() => Some(user.clone()),
                    _ => return self.rejected("no userIdAttributeName attribute"),
                },
                None => None,
            },
            Check::Jwt(_) => claims.get("sub").and_then(Value::as_str).map(str::to_owned),
        };
        if !has_scopes(claims, &self.required_scopes) {
            tracing::debug!("oauth2: access token lacks a required scope");
            return Deny::new(StatusCode::FORBIDDEN)
                .header(http::header::WWW_AUTHENTICATE, self.insufficient.clone())
                .into();
        }
        let mut allow = self.claim_headers.apply(claims, Allow::new());
        allow = self.claim_metadata.apply(claims, allow);
        if let Some(user) = user {
            allow = allow.user(UserInfo::new(user));
        }
        let mut expires = epoch_claim(claims, "exp");
        if let Some(remote) = remote {
            expires = Some(expires.map_or(remote.trusted_until, |e| e.min(remote.trusted_until)));
        }
        if let Some(at) = expires {
            allow = allow.expires_at(at);
        }
        if let Some(remote) = remote {
            if let Some(answer) = &remote.introspection {
                request
                    .state
                    .insert(INTROSPECTION_STATE_KEY, answer.clone());
            }
            if let Some(answer) = &remote.userinfo {
                request.state.insert(USERINFO_STATE_KEY, answer.clone());
            }
        }
        if let Some(claims) = jwt {
            request.state.insert(JWT_STATE_KEY, Value::Object(claims));
        }
        allow.into()
    }

    /// The decision for a lookup's outcome.
    fn judge(
        &self,
        request: &mut AuthorizationRequest,
        jwt: Option<Map<String, Value>>,
        looked: Looked,
    ) -> Result<Decision, Error> {
        match looked {
            Ok(Lookup::Valid(remote)) => {
                if remote.exp.is_some_and(|exp| exp <= SystemTime::now()) {
                    return Ok(self.rejected("expired"));
                }
                Ok(self.allow(request, jwt, Some(&remote)))
            }
            Ok(Lookup::Rejected(reason)) => Ok(self.rejected(reason)),
            Ok(Lookup::Busy) => Err(Error::overloaded("too many calls to the IdP under way")),
            Err(Unjudged { why, outage }) => {
                tracing::debug!(reason = &*why, "oauth2: the IdP did not judge a token");
                Err(match outage {
                    true => self
                        .asker
                        .heard
                        .unanswered(self.asker.http.timeout(), why.to_string()),
                    false => Error::step_fail_closed(CallError::new(why.to_string())),
                })
            }
        }
    }

    /// Whether a valid JWT still needs the IdP (the userinfo answer).
    fn needs_remote(&self) -> bool {
        match self.asker.check {
            Check::Jwt(_) => self.asker.userinfo.is_some(),
            Check::Introspection(_) => true,
        }
    }

    /// What the IdP says about `token`: kept, or asked once for all the
    /// requests that want it now, within the step's budget from `started`
    /// (when the request came).
    async fn lookup(
        &self,
        key: u128,
        token: &str,
        exp: Option<SystemTime>,
        started: tokio::time::Instant,
    ) -> Result<Looked, Error> {
        if let Some(hit) = self.asker.answers.get(key) {
            return Ok(Ok(Lookup::Valid(hit)));
        }
        let asker = Arc::clone(&self.asker);
        let token = token.to_owned();
        let by = self.budget.map(|b| started + b);
        let looked = self.asker.answers.inflight.run(key, move || async move {
            // A call that ended between the miss and joining this one.
            if let Some(hit) = asker.answers.get(key) {
                return Ok(Lookup::Valid(hit));
            }
            let looked = asker.ask(&token, exp).await;
            if let Ok(Lookup::Valid(remote)) = &looked {
                asker.answers.put(key, remote);
            }
            looked
        });
        let Some(by) = by else {
            return looked.await;
        };
        // Past it, the token is with the IdP, or with the call another
        // request made.
        let late = || {
            Ok(Err(Unjudged {
                why: "the IdP did not judge the token within the step's time".into(),
                outage: true,
            }))
        };
        tokio::time::timeout_at(by, looked)
            .await
            .unwrap_or_else(|_| late())
    }

    /// The decision for a verified JWT's `claims` that needs the userinfo
    /// answer: kept, or asked for.
    async fn with_userinfo(
        &self,
        request: &mut AuthorizationRequest,
        key: u128,
        token: &str,
        claims: Map<String, Value>,
        started: tokio::time::Instant,
    ) -> Result<Decision, Error> {
        let exp = epoch_claim(&claims, "exp");
        let looked = self.lookup(key, token, exp, started).await?;
        self.judge(request, Some(claims), looked)
    }
}

impl Asker {
    /// Asks the IdP about `token`: introspection, then userinfo.
    async fn ask(&self, token: &str, mut exp: Option<SystemTime>) -> Looked {
        let Ok(Ok(_permit)) = tokio::time::timeout(self.queue_wait, self.calls.acquire()).await
        else {
            return Ok(Lookup::Busy);
        };
        let mut introspection = None;
        if let Check::Introspection(i) = &self.check {
            let call = match i.client_id {
                Some(_) => self.http.oauth(),
                None => self.http.oauth_anonymous(),
            };
            let token = oauth2::AccessToken::new(token.to_owned());
            let answer = i
                .client
                .introspect(&token)
                .set_token_type_hint("access_token")
                .request_async(&call)
                .await;
            // Any answer of the IdP's own says it is up.
            if !matches!(&answer, Err(oauth2::RequestTokenError::Request(e)) if e.outage) {
                self.heard.heard();
            }
            let answer = match answer {
                Ok(answer) => answer,
                // RFC 7662 asks for `active: false`; some IdPs answer a
                // token they cannot read with 400 `invalid_request`, which
                // a client brings about, and so is a refusal, not an
                // outage.
                Err(oauth2::RequestTokenError::ServerResponse(e))
                    if *e.error() == oauth2::basic::BasicErrorResponseType::InvalidRequest =>
                {
                    return Ok(Lookup::Rejected("refused by the introspection endpoint"));
                }
                Err(e) => return Err(introspection_error(e)),
            };
            if !answer.active() {
                return Ok(Lookup::Rejected("inactive"));
            }
            let Ok(Value::Object(members)) = serde_json::to_value(&answer) else {
                return Err("the introspection answer is not a JSON object".into());
            };
            if another_kind_of_token(&members) {
                return Ok(Lookup::Rejected("not an access token"));
            }
            exp = epoch_claim(&members, "exp");
            if exp.is_some_and(|exp| exp <= SystemTime::now()) {
                return Ok(Lookup::Rejected("expired"));
            }
            introspection = Some(Arc::new(Value::Object(members)));
        }
        let mut userinfo = None;
        if let Some(url) = &self.userinfo {
            match self.userinfo(url, token).await? {
                Some(answer) => userinfo = Some(Arc::new(answer)),
                None => return Ok(Lookup::Rejected("refused by the userinfo endpoint")),
            }
        }
        Ok(Lookup::Valid(Arc::new(self.answers.remote(
            introspection,
            userinfo,
            exp,
        ))))
    }

    /// The userinfo answer for `token`; `None` when the endpoint refuses
    /// the token (401).
    async fn userinfo(&self, url: &url::Url, token: &str) -> Result<Option<Value>, Unjudged> {
        let response = self
            .http
            .get(url.as_str(), Some(token), "userinfo")
            .await
            .map_err(|e| Unjudged {
                why: format!("userinfo: {e}").into(),
                outage: e.outage,
            })?;
        let status = response.status();
        self.heard.answered(status);
        match status {
            StatusCode::UNAUTHORIZED => return Ok(None),
            s if !s.is_success() => {
                return Err(Unjudged {
                    why: format!("the userinfo endpoint answered {s}").into(),
                    outage: is_gateway_failure(s),
                });
            }
            _ => {}
        }
        match serde_json::from_slice(response.body()) {
            Ok(Value::Object(answer)) => Ok(Some(Value::Object(answer))),
            _ => Err("the userinfo answer is not a JSON object".into()),
        }
    }
}

#[async_trait]
impl AuthService for AccessToken {
    async fn start(&self, lifecycle: Lifecycle) -> Result<(), Error> {
        match &self.asker.check {
            Check::Jwt(verifier) => verifier.start(lifecycle).await.map_err(|e| {
                let why =
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                Error::start(CallError::new(why)).at("jwt.remoteJwks")
            }),
            Check::Introspection(_) => Ok(()),
        }
    }

    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        let token = match self.token(request) {
            Ok(token) => token,
            Err(false) => {
                tracing::debug!("oauth2: no access token");
                return self.unauthorized(false).into();
            }
            Err(true) => return self.rejected("not a bearer token").into(),
        };
        // RFC 6750 2: one way per request; the app behind may read the
        // token in the query, which nothing here checked.
        if request.has_query_parameter("access_token") {
            tracing::debug!("oauth2: a bearer token and an access_token query parameter");
            return Deny::new(StatusCode::BAD_REQUEST)
                .header(http::header::WWW_AUTHENTICATE, self.twice.clone())
                .into();
        }
        match &self.asker.check {
            Check::Jwt(verifier) => match verifier.check_now(token) {
                Checked::Valid(claims) if !self.needs_remote() => {
                    self.allow(request, Some(claims), None).into()
                }
                Checked::Valid(claims) => {
                    let key = self.prf.hash(&[token.as_bytes()]);
                    if let Some(hit) = self.asker.answers.get(key) {
                        return self
                            .judge(request, Some(claims), Ok(Lookup::Valid(hit)))
                            .into();
                    }
                    let token = token.to_owned();
                    let started = tokio::time::Instant::now();
                    Answer::wait(async move {
                        self.with_userinfo(request, key, &token, claims, started)
                            .await
                    })
                }
                Checked::Invalid(reason) => self.rejected(reason).into(),
                // A remote key set may have rotated: refresh, then check.
                Checked::UnknownKey => {
                    let token = token.to_owned();
                    let started = tokio::time::Instant::now();
                    Answer::wait(async move {
                        match verifier.check(&token).await {
                            Ok(claims) if !self.needs_remote() => {
                                Ok(self.allow(request, Some(claims), None))
                            }
                            Ok(claims) => {
                                let key = self.prf.hash(&[token.as_bytes()]);
                                self.with_userinfo(request, key, &token, claims, started)
                                    .await
                            }
                            Err(reason) => Ok(self.rejected(reason)),
                        }
                    })
                }
            },
            Check::Introspection(_) => {
                let key = self.prf.hash(&[token.as_bytes()]);
                if let Some(hit) = self.asker.answers.get(key) {
                    return self.judge(request, None, Ok(Lookup::Valid(hit))).into();
                }
                let token = token.to_owned();
                let started = tokio::time::Instant::now();
                Answer::wait(async move {
                    let looked = self.lookup(key, &token, None, started).await?;
                    self.judge(request, None, looked)
                })
            }
        }
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        self.claim_headers.headers().collect()
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        let calls = match &self.asker.check {
            Check::Jwt(verifier) => verifier.calls_a_server() || self.asker.userinfo.is_some(),
            Check::Introspection(_) => true,
        };
        (!calls).then_some(authchain_core::CALLS_NO_SERVER)
    }

    // `reads` is left at its default (`None`, "anything"): the answer
    // depends on the time (`exp`) and on the IdP (a revoked token, a
    // changed userinfo), not on `Authorization` alone, as for `jwt`.
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An answer weighs what it takes parsed: a `Value` per node, not a
    /// byte or two of JSON.
    #[test]
    fn an_answer_weighs_its_nodes() {
        let node = std::mem::size_of::<Value>() as u64;
        let zeros = Value::Array(vec![json!(0); 1000]);
        assert!(weight_of(&zeros) > 1000 * node);
        assert!(weight_of(&zeros) > 16 * serde_json::to_vec(&zeros).unwrap().len() as u64);
        assert_eq!(weight_of(&json!("abc")), node + 3);
        assert_eq!(weight_of(&json!({ "ab": null })), 3 * node + 2);
    }
}
