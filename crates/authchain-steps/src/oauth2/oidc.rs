//! `oauth2.oidcAuthorizationCode`: users log in through an OpenID Connect
//! provider, and their session lets their next requests through.
//!
//! A request runs one of four ways:
//!
//! - **With a valid session** (the session cookie opens, or names a
//!   session Redis has, and its ID token has not expired): allowed, with
//!   the tokens in the headers `headers` names and the chosen claims in
//!   theirs; the ID token goes to `state.jwt` (as Gloo's: a policy decodes it
//!   with `io.jwt.decode`), its `sub` is the
//!   user. An expired session is refreshed with its refresh token when
//!   `allowRefreshing` says so (the new ID token checked as at login, for
//!   the same `sub`; the cookie store sends the new cookie with the
//!   allow), else the user logs in again. The requests that carry one
//!   session at once, or for 30 s after its refresh (sent before the
//!   browser had the new cookie), share one refresh in a replica, which
//!   ends even when they all give up, and a Redis session is refreshed by
//!   one replica at a time (a lock in Redis): an IdP that rotates refresh tokens
//!   takes each once, and may revoke the grant when a spent one comes
//!   back. A refresh never brings back a Redis session a logout removed.
//!   A refresh that brings no new ID token keeps the session for the
//!   access token's lifetime, and the expired ID token is no longer
//!   forwarded in `idTokenHeader`.
//! - **Without one**: a deny that is a `302` to the IdP's authorization
//!   endpoint (`response_type=code`, `scope=openid ...`, `state`, `nonce`,
//!   PKCE `S256`, `redirect_uri` = `appUrl` + `callbackPath`), with a
//!   login cookie that remembers `state`, `nonce`, the PKCE verifier and
//!   the path asked for, for 10 minutes. The login cookie is `__Host-`
//!   where the cookies are `Secure` without a `Domain` (the default), so
//!   that no other subdomain nor plain-HTTP page can plant one of its own
//!   login for a login CSRF, and then `Path=/`; else it is sent only to
//!   the callback (`Path` = `callbackPath`). It is `SameSite=Lax` even
//!   where `cookieOptions` asks for `Strict`, which the IdP's redirect
//!   back would not carry. Each login has its own
//!   (`[__Host-]{cookie}_login_{a hash of state}`), so that logins started
//!   in several tabs each come back; a login started beside four others
//!   removes their cookies, so that a browser that reopens many tabs at
//!   once sends no more than a proxy takes in a header. A request the
//!   browser marks as no navigation (`Sec-Fetch-Mode` other than
//!   `navigate`: a `fetch`, an image) gets a `401` and starts no login.
//!   The path asked for is kept only as a path on `appUrl`'s origin of at
//!   most 512 bytes of visible ASCII; else its path alone, else `/`: a
//!   login cookie stays near 1 KB, so that the callback's `Cookie` header
//!   holds several (nginx's default buffer is 8 KB). A page that makes a
//!   browser start many logins within their 10 minutes can still fill it.
//! - **At `callbackPath`**: `state` must match the login cookie's (one
//!   use: with Redis, the login is marked spent there; with cookies, the
//!   IdP refuses a code twice); the code is exchanged (with the PKCE
//!   verifier and the client's secret); the ID token must verify against
//!   the IdP's JWKS, with the issuer, this client as audience and the
//!   login's `nonce`; then a session is made and the answer is a `302`
//!   back to the path first
//!   asked for, on `appUrl`'s origin: only ever there, whatever the
//!   request said, so a callback cannot redirect anywhere else.
//! - **At `logoutPath`**: the session is removed (and its cookie), and the
//!   answer is a `302` to the IdP's `end_session_endpoint` (with
//!   `id_token_hint`, `client_id` and `post_logout_redirect_uri` =
//!   `afterLogoutUrl`) when discovery names one, else to `afterLogoutUrl`.
//!   A browser's prefetch of the logout (`Sec-Purpose: prefetch`), or
//!   another site's link or form to it (`Sec-Fetch-Site: cross-site`, and
//!   `same-site` unless the session cookie has a `Domain`), is a 403 that
//!   logs no one out.
//!   A session in Redis is gone for whoever holds its id; when Redis
//!   cannot remove it the logout fails (a step error) and keeps the
//!   cookie, so that it can be tried again. A sealed cookie cannot be
//!   revoked: a copy of it opens until its ID token expires. The logout
//!   revokes the session's refresh token at the IdP's
//!   `revocation_endpoint` (RFC 7009) when discovery names one, so that
//!   no copy refreshes past it.
//!
//! A forged, replayed or expired `state`, a code the IdP refuses, an ID
//! token signed by another key or with another `alg`, `iss`, `aud` or
//! `nonce`: a 401, never a session. So is an ID token that does not show
//! what `authEndpointQueryParams` asked of the IdP, since the request to
//! it goes through the browser, where a user can take a parameter out:
//! with `acr_values`, its `acr` is one of them; with `max_age`, its
//! `auth_time` is no older (60 s of leeway); with `prompt=login`, its
//! `auth_time` is no earlier than the login; with Auth0's
//! `organization`, its `org_id` is it (or, for a name, its `org_name`,
//! in any case); with Google's `hd`, its `hd` is that domain (`*`: any).
//! A session cookie that was changed, or made for another client, IdP, or
//! login settings, does not open: a new login. Tokens are
//! never logged.
//!
//! # Sessions
//!
//! - `session.cookie` (the default): the tokens are sealed in the cookie
//!   (AES-256-GCM, bound to the client, the issuer, the scopes and the
//!   `authEndpointQueryParams`, so that AuthConfigs that log in alike
//!   share sessions, as Gloo's do, and no other opens them), in
//!   `__session`, or `{keyPrefix}___session` (split over `.1`, `.2`, ... past 3,800
//!   bytes), prefixed with `__Host-` where the cookies are `Secure`, at `/`
//!   and without a `Domain` (as by default: `__Host-__session`), so that
//!   no other subdomain plants a session of its own; a browser's cookies
//!   under the name without the prefix are cleared at a login and a
//!   logout. The key is `cipherConfig.keyRef`'s (a Secret of type
//!   `gloo.solo.io.EncryptionKeySecret`, entry `key`, 32 bytes); without
//!   one, a random key per process, so sessions do not survive a restart
//!   or cross replicas (a warning says so).
//! - `session.redis`: the cookie (`cookieName`, else `__session`, prefixed
//!   as above) holds a
//!   random id; Redis holds the session under `keyPrefix` and the id's
//!   SHA-256, sealed with a key derived from the id and bound like the
//!   cookie's (so what Redis holds gives neither a session nor a token,
//!   and another client's AuthConfig on the same Redis opens none of it;
//!   with `cipherConfig.keyRef`, the key is an HMAC of the id with its key,
//!   so that whoever can write to Redis cannot make a session: without
//!   one, they can, and a warning says so), for as
//!   long as the cookie
//!   lives, so that replicas behind one proxy share it. A login in
//!   progress is sealed in its cookie, with `cipherConfig.keyRef`'s key
//!   or else with one the replicas share through Redis (an HMAC of the
//!   client's secret with it, where there is one), and Redis only marks
//!   it spent at its callback: a request with no session writes nothing
//!   to Redis. Each replica
//!   keeps the sessions it opened (2 s at most), and Redis tells it at
//!   once of a change to one (a refresh, a logout anywhere: RESP3
//!   client-side caching, Redis 6.0 and later; an older Redis is read on
//!   every request). A
//!   failing Redis is a deny (a step error) when `failOnFetchFailure` is
//!   set, else a new login, which needs Redis too: while it is down that
//!   is a step error as well, never a session.
//!
//! Either way, a replica keeps each session it has opened, decrypted,
//! until the session expires (about 32 MiB of them at most), found by a
//! keyed hash of its cookie (with Redis, of the id and of what Redis holds
//! under it): a session's later requests skip its decryption. A cookie
//! that would not open is never kept, and what Redis no longer holds
//! (a logout) opens nothing.
//!
//! Cookies are `Path=/`, `HttpOnly`, `Secure`, `SameSite=Lax` and kept 30
//! days unless `cookieOptions` says otherwise.
//!
//! In a shadow AuthConfig's run ([`authchain_core::shadow`]) the step
//! opens sessions as it does for the answer, but exchanges no code,
//! refreshes, revokes and writes nothing: a callback or a logout is its
//! `302` alone, a session due for a refresh is allowed as the answer's
//! run refreshes it, and a Redis login start keeps nothing (it may make
//! the shared login key, once).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use authchain_core::{
    Allow, Answer, Attribute, AuthService, AuthorizationRequest, BuildContext, ConfigDuration,
    Decision, Deny, Error, Lifecycle, UserInfo, async_trait,
};
use http::{HeaderName, HeaderValue, StatusCode};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::config::{DiscoveryOverride, OidcAuthorizationCode, SecretRef};
use super::flight::Flights;
use super::idp::{self, CallError, Http, Provider};
use super::session::{self, CookieAttributes, Pending, Redis, Sealer, Session};
use super::{ClaimHeaders, ClaimMetadata, secret_value, set, unsupported};
use crate::jwt::{JwksConfig, JwtConfig, RemoteJwks, Verifier};
use crate::util;
use authchain_core::shadow::is_shadow_run;

/// The key under which the step writes the ID token's claims into `state`
/// (Gloo's): the ID token itself, as Gloo's OPA guide reads it with
/// `io.jwt.decode(input.state.jwt)`.
pub const STATE_KEY: &str = "jwt";

/// The Secret type of `cipherConfig.keyRef`.
pub const ENCRYPTION_KEY_SECRET_TYPE: &str = "gloo.solo.io.EncryptionKeySecret";

/// The token endpoint's answer: OAuth2's, and the ID token.
#[derive(Clone, Serialize, Deserialize)]
struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl std::fmt::Debug for IdTokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenField").finish_non_exhaustive()
    }
}

impl ExtraTokenFields for IdTokenField {}

type Tokens = StandardTokenResponse<IdTokenField, BasicTokenType>;

type Client = oauth2::Client<
    BasicErrorResponse,
    Tokens,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What discovery gave, ready for use.
struct Live {
    provider: Provider,
    client: Client,
    verifier: Arc<Verifier>,
    /// Ends the key set's refreshes when a new JWKS replaces it.
    keys: tokio_util::sync::CancellationToken,
}

/// The IdP, as discovery finds it.
struct Discovery {
    http: Http,
    issuer: String,
    discovery_override: Option<DiscoveryOverride>,
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    live: ArcSwapOption<Live>,
    /// Places for logouts' revocations in flight: a replayed logout cannot
    /// pile calls up on the IdP.
    revocations: Arc<tokio::sync::Semaphore>,
}

/// The logouts' revocations in flight at once, per step.
const MAX_REVOCATIONS: usize = 16;

impl Discovery {
    /// Revokes `refresh_token` at `endpoint` (RFC 7009), the client
    /// authenticated as at the token endpoint (HTTP Basic, or its id
    /// alone without a secret).
    async fn revoke(&self, endpoint: &str, refresh_token: &str) -> Result<(), CallError> {
        // Built apart: the form serializer is not `Send`.
        let request = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", refresh_token)
                .append_pair("token_type_hint", "refresh_token");
            let mut request = http::Request::post(endpoint).header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
            match &self.client_secret {
                Some(secret) => {
                    use base64::Engine as _;
                    let encode = |s: &str| {
                        url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                    };
                    let pair = format!("{}:{}", encode(&self.client_id), encode(secret));
                    let basic = base64::engine::general_purpose::STANDARD.encode(pair);
                    let value = secret_value(&format!("Basic {basic}")).ok_or_else(|| {
                        CallError::new("the client credentials are not a header value".to_owned())
                    })?;
                    request = request.header(http::header::AUTHORIZATION, value);
                }
                None => {
                    form.append_pair("client_id", &self.client_id);
                }
            }
            let body = form.finish().into_bytes();
            request
                .body(body)
                .map_err(|_| CallError::new("the revocation endpoint is not a URL".to_owned()))?
        };
        let answer = self.http.send(request).await?;
        match answer.status() {
            StatusCode::OK => Ok(()),
            status => Err(CallError::new(format!(
                "the revocation endpoint answered {status}"
            ))),
        }
    }

    /// A refreshed session, or `None` when the IdP will not refresh it.
    async fn refresh(&self, live: &Live, session: &Session) -> Result<Option<Session>, Error> {
        let Some(refresh) = &session.refresh_token else {
            return Ok(None);
        };
        let tokens = match live
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh.clone()))
            .request_async(&self.http.oauth())
            .await
        {
            Ok(t) => t,
            // A refusal (RFC 6749 5.2): a new login. The IdP's failure
            // (`temporarily_unavailable`, `server_error`), which a later
            // request may get past, or a refusal of this client, which a
            // login cannot mend, is an error.
            Err(oauth2::RequestTokenError::ServerResponse(e)) => {
                use oauth2::basic::BasicErrorResponseType as Code;
                let words = super::error_words(e.error());
                match e.error() {
                    Code::InvalidClient => {
                        tracing::warn!("oauth2: the IdP refuses this client's credentials");
                    }
                    Code::Extension(code)
                        if code == "temporarily_unavailable" || code == "server_error" => {}
                    _ => {
                        tracing::debug!(error = %words, "oauth2: the IdP refused the refresh");
                        return Ok(None);
                    }
                }
                return Err(Error::step(format!("the token endpoint answered {words}")));
            }
            Err(e) => return Err(Error::step(format!("the token endpoint: {e}"))),
        };
        let (id_token, expires_at) = match tokens.extra_fields().id_token.clone() {
            Some(id_token) => match live.verifier.check(&id_token).await {
                // OIDC Core 12.2: the same `sub` (`iss` and `aud` are
                // checked by the verifier).
                Ok(claims)
                    if claims.get("sub").is_none()
                        || claims.get("sub")
                            != payload(&session.id_token).unwrap_or_default().get("sub") =>
                {
                    tracing::debug!("oauth2: refreshed ID token is for another subject");
                    return Ok(None);
                }
                Ok(claims) if !issued_to(&claims, &self.client_id) => {
                    tracing::debug!("oauth2: refreshed ID token was issued to another client");
                    return Ok(None);
                }
                Ok(claims) => {
                    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
                    (id_token, exp)
                }
                Err(reason) => {
                    tracing::debug!(reason, "oauth2: refreshed ID token rejected");
                    return Ok(None);
                }
            },
            None => {
                let lifetime = tokens.expires_in().unwrap_or(Duration::from_secs(300));
                (
                    session.id_token.clone(),
                    session::now().saturating_add(lifetime.as_secs()),
                )
            }
        };
        Ok(Some(Session {
            id_token,
            access_token: tokens.access_token().secret().clone(),
            refresh_token: tokens
                .refresh_token()
                .map(|r| r.secret().clone())
                .or_else(|| session.refresh_token.clone()),
            expires_at,
        }))
    }

    /// Runs discovery and fetches the JWKS.
    async fn discover(
        &self,
        lifecycle: &Lifecycle,
        current: Option<&Live>,
    ) -> Result<Live, CallError> {
        let provider =
            idp::discover(&self.http, &self.issuer, self.discovery_override.as_ref()).await?;
        // Discovery checked that these are there and are URLs.
        let auth = AuthUrl::new(provider.authorization_endpoint.clone().unwrap_or_default())
            .map_err(|_| CallError::new("the authorization endpoint is not a URL".to_owned()))?;
        let token = TokenUrl::new(provider.token_endpoint.clone().unwrap_or_default())
            .map_err(|_| CallError::new("the token endpoint is not a URL".to_owned()))?;
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|_| CallError::new("the redirect URI is not a URL".to_owned()))?;
        let mut client: Client = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(redirect);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        // The same JWKS keeps its key set (and its refresh task).
        if let Some(current) = current
            && current.provider.jwks_uri == provider.jwks_uri
            && current.provider.issuer == provider.issuer
        {
            return Ok(Live {
                provider,
                client,
                verifier: current.verifier.clone(),
                keys: current.keys.clone(),
            });
        }
        let algorithms: Vec<String> = provider
            .id_token_signing_alg_values_supported
            .iter()
            .filter(|a| !a.starts_with("HS") && a.as_str() != "none")
            // One the JWT library does not know (Keycloak lists ES512)
            // signs no token this client can take; it must not keep the
            // others from being taken.
            .filter(|a| a.parse::<jsonwebtoken::Algorithm>().is_ok())
            .cloned()
            .collect();
        let jwt = JwtConfig {
            issuer: Some(provider.issuer.clone()),
            audiences: vec![self.client_id.clone()],
            algorithms: match algorithms.is_empty() {
                true => vec!["RS256".to_owned()],
                false => algorithms,
            },
            leeway: None,
            jwks: JwksConfig {
                local: None,
                remote: Some(RemoteJwks {
                    url: provider.jwks_uri.clone().unwrap_or_default(),
                    refresh_interval: None,
                    min_refresh_interval: None,
                    timeout: Some(ConfigDuration(self.http.timeout())),
                    allow_insecure_http: true,
                }),
            },
            token_source: None,
            claims_to_headers: Vec::new(),
            user_id_claim: None,
            dynamic_metadata_from_claims: Default::default(),
            realm: None,
        };
        let verifier = Verifier::new(&jwt, &BuildContext::new("", "", ""))
            .map_err(|e| CallError::new(format!("the JWKS: {e}")))?;
        let keys = lifecycle.token().child_token();
        verifier
            .start(Lifecycle::new(lifecycle.generation(), keys.clone()))
            .await
            .map_err(|e| CallError::new(e.to_string()))?;
        Ok(Live {
            provider,
            client,
            verifier: Arc::new(verifier),
            keys,
        })
    }

    /// Makes `live` current; a key set it replaces stops its refreshes.
    fn install(&self, live: Live) {
        let live = Arc::new(live);
        if let Some(old) = self.live.swap(Some(live.clone()))
            && !Arc::ptr_eq(&old.verifier, &live.verifier)
        {
            old.keys.cancel();
        }
    }

    /// Runs discovery again every `poll` until the lifecycle ends; a
    /// failure keeps what the last one found.
    fn poll(self: Arc<Self>, lifecycle: Lifecycle, poll: Duration) {
        tokio::spawn(async move {
            let token = lifecycle.token().clone();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(poll) => {}
                }
                let current = self.live.load_full();
                match self.discover(&lifecycle, current.as_deref()).await {
                    Ok(live) => self.install(live),
                    Err(e) => {
                        tracing::warn!(error = %e, "oauth2: discovery failed; keeping what the last one found")
                    }
                }
            }
        });
    }
}

/// Where sessions live.
enum Store {
    Cookie,
    Redis(Arc<Redis>),
}

/// The `oidcAuthorizationCode` step.
pub struct Oidc {
    client_id: String,
    app_origin: String,
    callback_path: String,
    logout_path: Option<String>,
    after_logout_url: String,
    scopes: Vec<String>,
    auth_params: Vec<(String, String)>,
    /// What of `auth_params` the ID token must show.
    asked: Asked,
    token_params: Vec<(String, String)>,
    id_token_header: Option<HeaderName>,
    access_token_header: Option<HeaderName>,
    bearer: bool,
    id_claims: ClaimHeaders,
    access_claims: ClaimHeaders,
    metadata: ClaimMetadata,
    poll: Duration,
    /// Whether discovery's poll runs (started once, by the first start).
    polling: std::sync::atomic::AtomicBool,
    idp: Arc<Discovery>,
    store: Store,
    sealer: Arc<Sealer>,
    /// Whether logins in progress are sealed with a key the replicas
    /// share through Redis (Redis, no `cipherConfig` key), not `sealer`.
    /// A login is sealed in its cookie whatever the store, so that a
    /// request with no session writes nothing to Redis (it took a key of
    /// its own there for 10 minutes).
    login_key_in_redis: bool,
    cookie_name: String,
    /// The name the session cookie had before it took `__Host-`, whose
    /// cookies a browser may still send: cleared at a login and a logout.
    legacy_cookie_name: Option<String>,
    cookies: CookieAttributes,
    /// The start of each login cookie's name.
    login_cookie_name: String,
    /// The login cookie's: sent only to the callback (unless `__Host-`),
    /// and `SameSite=Lax` at most, so that the IdP's redirect back (a
    /// cross-site navigation) carries it.
    login_cookies: CookieAttributes,
    /// The AuthConfig's `failOnRedirect`: a login is a plain 401.
    fail_on_redirect: bool,
    allow_refreshing: bool,
    pre_expiry: Duration,
    fail_on_fetch_failure: bool,
    target_domain: Option<String>,
    refreshes: Arc<Refreshes>,
    opened: Opens,
}

/// A session as its requests use it: opened, and its tokens read, once.
struct Opened {
    session: Session,
    /// The ID token's claims.
    claims: Map<String, Value>,
    /// The access token's, when `accessToken.claimsToHeaders` wants them.
    access_claims: Option<Map<String, Value>>,
    /// The `idTokenHeader`'s value, and the `accessTokenHeader`'s.
    id_token: Option<HeaderValue>,
    access_token: Option<HeaderValue>,
}

/// The sessions opened lately, by the PRF of what they were opened from
/// (the cookie; for Redis, the id and what Redis holds), each until it
/// expires: a session's later requests skip its decryption and parsing.
/// Whatever opens a session here opens it without the cache too.
struct Opens {
    prf: util::Prf,
    cache: util::Kept<Arc<Opened>>,
}

/// How much the opened sessions may take, in bytes of their tokens.
const OPENED_BYTES: u64 = 32 << 20;

impl Opens {
    fn new() -> Self {
        Opens {
            prf: util::Prf::new(),
            cache: util::Kept::weighed(OPENED_BYTES >> 14, OPENED_BYTES, |opened| {
                let s = &opened.session;
                let bytes = s.id_token.len()
                    + s.access_token.len()
                    + s.refresh_token.as_ref().map_or(0, String::len);
                // The tokens, the headers made of them, and their claims
                // as JSON values (several times their text).
                8 * bytes as u64
            }),
        }
    }

    /// The session `parts` open to, opened by `open` unless it is kept.
    fn get(&self, parts: &[&[u8]], open: impl FnOnce() -> Option<Opened>) -> Option<Arc<Opened>> {
        let key = self.prf.hash(parts);
        if let Some(opened) = self.cache.get(key) {
            return Some(opened);
        }
        let opened = Arc::new(open()?);
        let left = opened.session.expires_at.saturating_sub(session::now());
        self.cache
            .insert(key, opened.clone(), Duration::from_secs(left));
        Some(opened)
    }
}

/// How long a refreshed session is kept for the requests that still carry
/// the session it replaced (sent before the browser had the new one), and
/// a refresh that brought none (the IdP refused it) is remembered.
const REFRESH_GRACE: Duration = Duration::from_secs(30);
/// How many refreshes are kept so.
const REFRESHED: u64 = 4096;
/// How many revoked refresh tokens, and tokens of ended sessions, are
/// remembered.
const REVOKED: u64 = 4096;
/// How long a revoked refresh token is remembered.
const REVOKED_FOR: Duration = Duration::from_secs(3600);
/// How long a session a logout ended is remembered: past the refreshes
/// kept for the cookies it replaced, those under way at the logout, and a
/// revocation the IdP failed or has no endpoint for.
const ENDED_FOR: Duration = Duration::from_secs(24 * 3600);
/// How many refreshes may be under way at once.
const REFRESHING: usize = 1024;

/// A refresh's outcome, shared by the requests that waited for it.
type Refreshed = Result<Option<Arc<Session>>, Failed>;

/// Why a refresh failed, for each request that waited for it.
#[derive(Clone)]
struct Failed {
    place: Option<String>,
    why: String,
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed {
            place: e.place().map(str::to_owned),
            why: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        }
    }
}

impl Failed {
    fn error(&self) -> Error {
        let e = Error::step(CallError::new(self.why.clone()));
        match &self.place {
            Some(place) => e.at(place),
            None => e,
        }
    }
}

/// Refreshes under way and just done, by the PRF of the refresh token
/// they spent: the requests that carry one session together, or until the
/// browser has its replacement, share one refresh. An IdP that rotates
/// refresh tokens takes each once, and may revoke the whole grant when a
/// spent one comes back. A refresh that brought no session (`None`: the
/// IdP refused the token, or Redis no longer holds the session) is not
/// asked again meanwhile: a session whose refresh token is dead would
/// cost a call to the IdP on each request. A session a logout ended is
/// `ended`, in this replica.
struct Refreshes {
    prf: util::Prf,
    under_way: Flights<Refreshed>,
    done: util::Kept<Option<Arc<Session>>>,
    /// The refresh tokens revoked lately, or being revoked: a logout
    /// replayed with one cookie (which opens until it expires) revokes its
    /// token once, and its replays take no place another's revocation
    /// needs.
    revoked: util::Kept<()>,
    /// The refresh tokens of sessions a logout ended lately: a copy of a
    /// cookie that the session replaced, and a refresh under way at the
    /// logout, bring it back no more.
    ended: util::Kept<()>,
}

impl Refreshes {
    fn new() -> Self {
        Refreshes {
            prf: util::Prf::new(),
            under_way: Flights::new(REFRESHING),
            done: util::Kept::new(REFRESHED),
            revoked: util::Kept::new(REVOKED),
            ended: util::Kept::new(REVOKED),
        }
    }

    /// Where `done` keeps the refresh that spent refresh token `token`.
    fn key(&self, token: &str) -> u128 {
        self.prf.hash(&[token.as_bytes()])
    }

    /// Where `ended` marks the session whose refresh token is `token`.
    fn ended_key(&self, token: &str) -> u128 {
        self.prf.hash(&[b"ended", token.as_bytes()])
    }

    /// Marks ended (a logout) the session whose refresh token is `token`,
    /// and the one a refresh of it brought meanwhile (the logout came
    /// with the cookie that refresh replaced): their refresh tokens, to
    /// revoke.
    fn end(&self, token: String) -> Vec<String> {
        let mut ended = Vec::with_capacity(2);
        if let Some(Some(next)) = self.done.get(self.key(&token))
            && let Some(next) = next.refresh_token.clone()
            && next != token
        {
            ended.push(next);
        }
        ended.push(token);
        for token in &ended {
            self.ended.insert(self.ended_key(token), (), ENDED_FOR);
        }
        ended
    }

    /// Whether a logout ended the session whose refresh token is `token`.
    fn ended(&self, token: Option<&str>) -> bool {
        token.is_some_and(|token| self.ended.get(self.ended_key(token)).is_some())
    }

    /// The refresh kept under `key`: a session that lasts past `limit`
    /// and that no logout ended, or none (a refresh that brought none, or
    /// whose session ended).
    fn kept(&self, key: u128, limit: u64) -> Option<Option<Arc<Session>>> {
        match self.done.get(key)? {
            Some(fresh) if self.ended(fresh.refresh_token.as_deref()) => Some(None),
            Some(fresh) => (fresh.expires_at > limit).then_some(Some(fresh)),
            None => Some(None),
        }
    }
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("client_id", &self.client_id)
            .field("issuer", &self.idp.issuer)
            .field("app_origin", &self.app_origin)
            .field("callback_path", &self.callback_path)
            .field("logout_path", &self.logout_path)
            .field("cookie_name", &self.cookie_name)
            .finish_non_exhaustive()
    }
}

/// A path from the config: absolute, no query, no fragment.
fn config_path(path: &str, place: &str) -> Result<String, Error> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) || path.starts_with("//") {
        return Err(Error::config("expected an absolute path such as /callback").at(place));
    }
    Ok(path.to_owned())
}

/// A cookie's `Path` from the config: an absolute path that cannot end
/// the attribute (RFC 6265 `path-value`: no `;`, no control character).
fn cookie_path(path: &str, place: &str) -> Result<String, Error> {
    let path = config_path(path, place)?;
    if path
        .bytes()
        .any(|b| b == b';' || b == b',' || !b.is_ascii_graphic())
    {
        return Err(Error::config(
            "expected a cookie path without `;`, `,`, spaces or control characters",
        )
        .at(place));
    }
    Ok(path)
}

/// The path a cookie set without one has, set at `path` (RFC 6265 5.1.4).
fn default_cookie_path(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}

/// Whether a browser sends a cookie of path `cookie` to `path` (RFC 6265
/// 5.1.4).
fn path_matches(path: &str, cookie: &str) -> bool {
    path.strip_prefix(cookie)
        .is_some_and(|rest| rest.is_empty() || cookie.ends_with('/') || rest.starts_with('/'))
}

/// The most logins in progress a browser keeps: a login started beside as
/// many removes their cookies.
const MAX_LOGINS_AT_ONCE: usize = 4;

/// The bytes of a state's SHA-256 a login cookie's name ends with, in hex.
const LOGIN_HASH_BYTES: usize = 6;

/// The longest path (and query) a login remembers to come back to; a
/// longer one is cut to its path, or to `/`, so that the login cookie
/// stays within what browsers keep.
const MAX_RETURN_PATH: usize = 512;

/// A cookie name or prefix: an RFC 6265 token.
fn cookie_token(name: &str, place: &str) -> Result<(), Error> {
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !ok {
        return Err(Error::config("not a valid cookie name").at(place));
    }
    Ok(())
}

impl Oidc {
    /// Builds the step; reaches nothing (discovery, the JWKS and Redis
    /// are reached when it starts).
    pub fn new(config: OidcAuthorizationCode, context: &BuildContext<'_>) -> Result<Self, Error> {
        unsupported(&config.azure, "azure", "Microsoft Entra distributed claims")?;
        unsupported(
            &config.front_channel_logout,
            "frontChannelLogout",
            "front-channel logout",
        )?;
        unsupported(
            &config.auto_map_from_metadata,
            "autoMapFromMetadata",
            "autoMapFromMetadata",
        )?;
        unsupported(
            &config.session_id_header_name,
            "sessionIdHeaderName",
            "sending the session id to the token endpoint",
        )?;
        if config.parse_callback_path_as_regex == Some(true) {
            return Err(
                Error::config("a callbackPath regex is not supported by authchain")
                    .at("parseCallbackPathAsRegex"),
            );
        }
        if let Some(p) = &config.end_session_properties
            && p.method_type.as_deref().is_some_and(|m| m != "GetMethod")
        {
            return Err(Error::config(
                "only GetMethod is supported: the browser is sent to the end-session endpoint",
            )
            .at("endSessionProperties.methodType"));
        }
        if config.client_id.is_empty() {
            return Err(Error::config("expected the client id").at("clientId"));
        }
        idp::check_url(&config.issuer_url, "issuerUrl")?;
        let app = idp::check_url(&config.app_url, "appUrl")?;
        let app_origin = app.origin().ascii_serialization();
        let callback_path = config_path(&config.callback_path, "callbackPath")?;
        let app_base = config.app_url.trim_end_matches('/');
        let redirect_uri = format!("{app_base}{callback_path}");
        let callback_path = url::Url::parse(&redirect_uri)
            .map_err(|_| Error::config("appUrl + callbackPath is not a URL").at("callbackPath"))?
            .path()
            .to_owned();
        let logout_path = match set(&config.logout_path) {
            Some(p) => Some(config_path(p, "logoutPath")?),
            None => None,
        };
        if logout_path.as_deref() == Some(callback_path.as_str()) {
            return Err(Error::config("the logout path is the callback path").at("logoutPath"));
        }
        let after_logout_url = match set(&config.after_logout_url) {
            Some(u) => {
                idp::check_url(u, "afterLogoutUrl")?;
                u.to_owned()
            }
            None => config.app_url.clone(),
        };

        // The client's secret: Gloo's `clientAuthentication.clientSecret`
        // or the older top-level fields.
        let (secret_ref, disable): (Option<&SecretRef>, bool) = match &config.client_authentication
        {
            Some(auth) => {
                unsupported(
                    &auth.private_key_jwt,
                    "clientAuthentication.privateKeyJwt",
                    "private_key_jwt client authentication",
                )?;
                if config.client_secret_ref.is_some() || config.disable_client_secret.is_some() {
                    return Err(Error::config(
                        "with clientAuthentication, clientSecretRef and disableClientSecret go inside it",
                    ));
                }
                let Some(cs) = &auth.client_secret else {
                    return Err(Error::config("expected clientSecret").at("clientAuthentication"));
                };
                (
                    cs.client_secret_ref.as_ref(),
                    cs.disable_client_secret.unwrap_or(false),
                )
            }
            None => (
                config.client_secret_ref.as_ref(),
                config.disable_client_secret.unwrap_or(false),
            ),
        };
        let client_secret = match (secret_ref, disable) {
            (Some(r), false) => Some(idp::client_secret(context, r, "clientSecretRef")?),
            (None, true) => None,
            (Some(_), true) => {
                return Err(
                    Error::config("disableClientSecret is set: remove clientSecretRef")
                        .at("clientSecretRef"),
                );
            }
            (None, false) => {
                return Err(Error::config(
                    "expected clientSecretRef, or disableClientSecret: true",
                )
                .at("clientSecretRef"));
            }
        };

        let headers = config.headers.clone().unwrap_or_default();
        let header = |name: &Option<String>, place: &str| -> Result<Option<HeaderName>, Error> {
            set(name).map(|n| util::header_name(n, place)).transpose()
        };
        let id_token_header = header(&headers.id_token_header, "headers.idTokenHeader")?;
        let access_token_header =
            header(&headers.access_token_header, "headers.accessTokenHeader")?;

        let session = config.session.clone().unwrap_or_default();
        let options = session.cookie_options.clone().unwrap_or_default();
        let same_site = match options.same_site.as_deref() {
            None | Some("LaxMode") => Some("Lax"),
            Some("DefaultMode") => None,
            Some("StrictMode") => Some("Strict"),
            Some("NoneMode") if options.not_secure => {
                return Err(
                    Error::config("SameSite=None needs a Secure cookie: unset notSecure")
                        .at("session.cookieOptions.sameSite"),
                );
            }
            Some("NoneMode") => Some("None"),
            Some(_) => {
                return Err(
                    Error::config("expected LaxMode, StrictMode, NoneMode or DefaultMode")
                        .at("session.cookieOptions.sameSite"),
                );
            }
        };
        let path = match options.path.as_deref() {
            None => "/".to_owned(),
            // No `Path` (as Gloo writes `""`) is the callback's directory
            // where the cookie is first set, but the directory of whatever
            // path a refresh sets it again on: a second cookie there, which
            // the logout would not clear. It is written out.
            Some("") => cookie_path(&default_cookie_path(&callback_path), "callbackPath")?,
            Some(p) => cookie_path(p, "session.cookieOptions.path")?,
        };
        let domain = match options.domain.as_deref() {
            None | Some("") => None,
            Some(d) => {
                cookie_token(d, "session.cookieOptions.domain")?;
                Some(d.to_owned())
            }
        };
        let cookies = CookieAttributes {
            max_age: match options.max_age {
                None => Some(30 * 24 * 3600),
                Some(0) => None,
                Some(n) => Some(n),
            },
            secure: !options.not_secure,
            http_only: options.http_only.unwrap_or(true),
            path,
            domain,
            same_site,
        };
        let mut login_cookies = CookieAttributes {
            path: cookie_path(&callback_path, "callbackPath").unwrap_or_else(|_| "/".to_owned()),
            same_site: match same_site {
                Some("Strict") => Some("Lax"),
                other => other,
            },
            ..cookies.clone()
        };

        let timeout = config.timeout.map_or(Duration::from_secs(5), |d| d.0);
        if timeout.is_zero() {
            return Err(Error::config("expected a positive duration").at("timeout"));
        }

        // What a session is sealed to, in either store: the client, the
        // IdP and what the login asked of it (scopes, `acr_values`,
        // `organization`, ...), so that no login of lesser standing opens.
        // AuthConfigs that log in alike share sessions, as Gloo's do (a
        // UI's, and an API's with failOnRedirect).
        let binding = {
            let mut scopes = config.scopes.clone();
            scopes.sort();
            scopes.dedup();
            // Each pair as JSON: no `&` or `=` in a value makes another list.
            let params = |params: &std::collections::BTreeMap<String, String>| {
                serde_json::to_string(params).unwrap_or_default()
            };
            format!(
                "{}\0{}\0{}\0{}\0{}",
                config.client_id,
                config.issuer_url,
                scopes.join(" "),
                params(&config.auth_endpoint_query_params),
                params(&config.token_endpoint_query_params),
            )
        };
        let cipher_key = session
            .cipher_config
            .as_ref()
            .and_then(|c| c.key_ref.as_ref())
            .map(|r| encryption_key(context, r))
            .transpose()?;
        let (store, mut cookie_name, named, allow_refreshing, pre_expiry, target_domain) = match (
            &session.cookie,
            &session.redis,
        ) {
            (Some(_), Some(_)) => {
                return Err(Error::config("expected one of `cookie` and `redis`").at("session"));
            }
            (_, Some(redis)) => {
                unsupported(&redis.header_name, "session.redis.headerName", "headerName")?;
                let options = redis.options.clone().unwrap_or_default();
                unsupported(
                    &options.tls_cert_mount_path,
                    "session.redis.options.tlsCertMountPath",
                    "Redis over TLS",
                )?;
                if options.socket_type.as_deref().is_some_and(|t| t != "TCP") {
                    return Err(Error::config("only TCP is supported")
                        .at("session.redis.options.socketType"));
                }
                let Some(host) = set(&options.host) else {
                    return Err(
                        Error::config("expected host:port").at("session.redis.options.host")
                    );
                };
                if host.contains(['/', '@', ' ', '?', '#']) {
                    return Err(
                        Error::config("expected host:port").at("session.redis.options.host")
                    );
                }
                let db = options.db.unwrap_or(0);
                if !(0..=1_000_000).contains(&db) {
                    return Err(
                        Error::config("expected a database number").at("session.redis.options.db")
                    );
                }
                let prefix = redis.key_prefix.clone().unwrap_or_default();
                if cipher_key.is_none() {
                    tracing::warn!(
                        config = context.config_name,
                        "oauth2: no session.cipherConfig.keyRef: whoever can write to this Redis can make a session for any user; with a key, only who holds it can"
                    );
                }
                let store = Redis::new(
                    host,
                    db,
                    prefix,
                    binding.clone(),
                    cipher_key.as_deref(),
                    timeout,
                )
                .ok_or_else(|| {
                    Error::config("not a usable Redis address").at("session.redis.options.host")
                })?;
                let name = set(&redis.cookie_name).unwrap_or("__session").to_owned();
                cookie_token(&name, "session.redis.cookieName")?;
                (
                    Store::Redis(Arc::new(store)),
                    name,
                    set(&redis.cookie_name).is_some(),
                    redis.allow_refreshing.unwrap_or(true),
                    redis
                        .pre_expiry_buffer
                        .map_or(Duration::from_secs(2), |d| d.0),
                    redis.target_domain.clone(),
                )
            }
            (cookie, None) => {
                let cookie = cookie.clone().unwrap_or_default();
                let prefix = cookie.key_prefix.clone().unwrap_or_default();
                let name = match prefix.is_empty() {
                    true => "__session".to_owned(),
                    false => format!("{prefix}___session"),
                };
                cookie_token(&name, "session.cookie.keyPrefix")?;
                (
                    Store::Cookie,
                    name,
                    false,
                    cookie.allow_refreshing.unwrap_or(false),
                    Duration::ZERO,
                    cookie.target_domain.clone(),
                )
            }
        };

        // A browser drops a cookie whose name's prefix (in any case) its
        // attributes break (RFC 6265bis 4.1.3): every login would fail,
        // silently.
        let prefixed = |prefix: &str| {
            cookie_name
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        };
        if prefixed("__Host-") {
            if cookies.domain.is_some() || cookies.path != "/" {
                return Err(Error::config(
                    "a `__Host-` cookie has no domain and path `/`: unset cookieOptions.domain and path",
                )
                .at("session.cookieOptions"));
            }
            // Its login cookie too: `Path=/`, not the callback's.
            login_cookies.path = "/".to_owned();
        }
        if (prefixed("__Host-") || prefixed("__Secure-")) && !cookies.secure {
            return Err(Error::config(
                "a `__Host-` or `__Secure-` cookie is Secure: unset notSecure",
            )
            .at("session.cookieOptions.notSecure"));
        }
        // A cookie another subdomain or a plain-HTTP page could plant
        // (its own session, or one of its own logins, whose code then
        // logs the victim in as the planter) cannot be `__Host-`: the
        // names this step chooses are, where the cookies are `Secure`
        // without a `Domain` (and at `/`, for the session's). The name
        // without the prefix, which it chose before, is cleared at a login
        // and a logout.
        let hostable = !prefixed("__Host-") && cookies.secure && cookies.domain.is_none();
        if !cookies.secure && app_origin.starts_with("https://") {
            tracing::warn!(
                config = context.config_name,
                "oauth2: session.cookieOptions.notSecure with an https appUrl: the session cookie goes over plain HTTP too, and a plain-HTTP page can plant a session under its name (logging the user in as itself)"
            );
        }
        let mut legacy_cookie_name = None;
        if hostable && !prefixed("__Secure-") && cookies.path == "/" {
            if named {
                tracing::warn!(
                    config = context.config_name,
                    "oauth2: session.redis.cookieName is a name another subdomain or a plain-HTTP page can plant a session under (logging the user in as itself): prefix it with `__Host-`"
                );
            } else {
                let prefixed = format!("__Host-{cookie_name}");
                legacy_cookie_name = Some(std::mem::replace(&mut cookie_name, prefixed));
            }
        } else if hostable && !prefixed("__Secure-") {
            tracing::warn!(
                config = context.config_name,
                path = %cookies.path,
                "oauth2: the session cookie is not at `/`, so it cannot be `__Host-`: another subdomain or a plain-HTTP page can plant a session under its name (logging the user in as itself); set session.cookieOptions.path to `/`"
            );
        }
        let mut login_cookie_name = format!("{cookie_name}_login_");
        if hostable {
            login_cookies.path = "/".to_owned();
            if legacy_cookie_name.is_none() {
                login_cookie_name.insert_str(0, "__Host-");
            }
        }

        // A browser sends the session cookie only under its path: a logout
        // elsewhere would clear a cookie it is not sent and end no session.
        if let Some(logout) = logout_path.as_deref()
            && !path_matches(logout, &cookies.path)
        {
            return Err(Error::config(format!(
                "the session cookie (path `{}`) is not sent to the logout path, whose logout would end no session",
                cookies.path
            ))
            .at("logoutPath"));
        }
        let sealer = match &cipher_key {
            Some(key) => Sealer::new(key, &binding).ok_or_else(|| {
                Error::config("expected a 32-byte key").at("session.cipherConfig.keyRef")
            })?,
            None => {
                if matches!(store, Store::Cookie) {
                    tracing::warn!(
                        config = context.config_name,
                        "oauth2: no session.cipherConfig.keyRef: cookie sessions are sealed with a key of this process's, lost on restart and not shared with replicas"
                    );
                }
                Sealer::random(&binding)
            }
        };

        let mut scopes = vec!["openid".to_owned()];
        for s in &config.scopes {
            if s.is_empty() || s.contains(' ') {
                return Err(Error::config("a scope is one word").at("scopes"));
            }
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        const RESERVED: &[&str] = &[
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "code",
            "code_verifier",
            "grant_type",
            "client_secret",
        ];
        let params = |map: &std::collections::BTreeMap<String, String>,
                      place: &str|
         -> Result<Vec<(String, String)>, Error> {
            for key in map.keys() {
                if RESERVED.contains(&key.as_str()) {
                    return Err(Error::config(
                        "authchain sets this parameter itself (state, nonce and PKCE included)",
                    )
                    .at(format!("{place}.{key}")));
                }
            }
            Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        };

        Ok(Oidc {
            auth_params: params(
                &config.auth_endpoint_query_params,
                "authEndpointQueryParams",
            )?,
            asked: Asked::new(&config.auth_endpoint_query_params)?,
            token_params: params(
                &config.token_endpoint_query_params,
                "tokenEndpointQueryParams",
            )?,
            id_claims: ClaimHeaders::new(
                &config
                    .identity_token
                    .as_ref()
                    .map(|t| t.claims_to_headers.clone())
                    .unwrap_or_default(),
                "identityToken.claimsToHeaders",
            )?,
            access_claims: ClaimHeaders::new(
                &config
                    .access_token
                    .as_ref()
                    .map(|t| t.claims_to_headers.clone())
                    .unwrap_or_default(),
                "accessToken.claimsToHeaders",
            )?,
            metadata: ClaimMetadata::new(
                &config.dynamic_metadata_from_claims,
                "dynamicMetadataFromClaims",
            )?,
            poll: config
                .discovery_poll_interval
                .map_or(Duration::from_secs(1800), |d| d.0)
                .max(Duration::from_secs(10)),
            polling: std::sync::atomic::AtomicBool::new(false),
            idp: Arc::new(Discovery {
                http: Http::new(timeout)?,
                issuer: config.issuer_url,
                discovery_override: config.discovery_override,
                client_id: config.client_id.clone(),
                client_secret,
                redirect_uri,
                live: ArcSwapOption::empty(),
                revocations: Arc::new(tokio::sync::Semaphore::new(MAX_REVOCATIONS)),
            }),
            client_id: config.client_id,
            app_origin,
            callback_path,
            logout_path,
            after_logout_url,
            scopes,
            id_token_header,
            access_token_header,
            bearer: headers.use_bearer_schema_for_authorization.unwrap_or(true),
            login_key_in_redis: matches!(store, Store::Redis(_)) && cipher_key.is_none(),
            store,
            sealer: Arc::new(sealer),
            cookie_name,
            legacy_cookie_name,
            login_cookie_name,
            cookies,
            login_cookies,
            fail_on_redirect: context.fail_on_redirect,
            allow_refreshing,
            pre_expiry,
            fail_on_fetch_failure: session.fail_on_fetch_failure,
            target_domain,
            refreshes: Arc::new(Refreshes::new()),
            opened: Opens::new(),
        })
    }

    fn deny(status: StatusCode, why: &'static str) -> Decision {
        tracing::debug!(why, "oauth2: login refused");
        Deny::new(status)
            .header(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            )
            .body(why)
            .into()
    }

    /// A `302` to `location`, kept by no cache.
    fn redirect(location: HeaderValue) -> Deny {
        Deny::new(StatusCode::FOUND)
            .header(http::header::LOCATION, location)
            .header(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            )
    }

    /// The session cookie's value, joined from its parts; `Err(())` when a
    /// part comes twice with different values (see [`util::cookie`]) or
    /// the `Cookie` header is too long.
    fn session_cookie<'a>(
        &self,
        request: &'a AuthorizationRequest,
    ) -> Result<Option<Cow<'a, str>>, ()> {
        session::joined_cookie(request, &self.cookie_name)
    }

    /// The deny of a request whose session cookie [`Self::session_cookie`]
    /// cannot read.
    fn two_sessions() -> Decision {
        Self::deny(
            StatusCode::BAD_REQUEST,
            "the session cookie comes twice with different values, or the Cookie header is too \
             long: clear this site's cookies",
        )
    }

    /// The cookie of the login whose `state` is given: one per login, so
    /// that logins started in several tabs each come back.
    fn login_cookie_name(&self, state: &str) -> String {
        let digest = Sha256::digest(state.as_bytes());
        format!(
            "{}{}",
            self.login_cookie_name,
            util::hex(&digest[..LOGIN_HASH_BYTES])
        )
    }

    /// `deny` with `Set-Cookie`s that remove the request's cookies under
    /// the session cookie's former name.
    fn clear_legacy(&self, request: &AuthorizationRequest, mut deny: Deny) -> Deny {
        let Some(old) = &self.legacy_cookie_name else {
            return deny;
        };
        for name in session::chunk_names(old) {
            if request.cookies(&name).next().is_some() {
                let clear = self.cookies.set_cookie(&name, "", Some(0));
                deny = deny.header(http::header::SET_COOKIE, clear);
            }
        }
        deny
    }

    /// `Set-Cookie`s that remove the session cookie and its parts.
    fn clear_session(&self, deny: Deny) -> Deny {
        let mut deny = deny;
        for name in session::chunk_names(&self.cookie_name) {
            deny = deny.header(
                http::header::SET_COOKIE,
                self.cookies.set_cookie(&name, "", Some(0)),
            );
        }
        deny
    }

    /// The `Set-Cookie`s of a session cookie with `value`.
    fn session_set_cookies(&self, value: &str) -> Option<Vec<HeaderValue>> {
        let parts = session::chunks(&self.cookie_name, value)?;
        let used = parts.len();
        let mut out: Vec<HeaderValue> = parts
            .iter()
            .map(|(name, part)| self.cookies.set_cookie(name, part, self.cookies.max_age))
            .collect();
        // Parts a longer earlier session left behind.
        for name in session::chunk_names(&self.cookie_name).skip(used) {
            out.push(self.cookies.set_cookie(&name, "", Some(0)));
        }
        Some(out)
    }

    /// The request's host matches `targetDomain` (RFC 6265 5.1.3).
    fn host_allowed(&self, request: &AuthorizationRequest) -> bool {
        let Some(domain) = &self.target_domain else {
            return true;
        };
        let host = util::strip_port(&request.host).to_ascii_lowercase();
        let domain = domain.trim_start_matches('.').to_ascii_lowercase();
        host == domain || host.ends_with(&format!(".{domain}"))
    }

    /// `session` with its tokens read, for [`allow`](Self::allow).
    fn opened(&self, session: Session) -> Opened {
        let id_token = self
            .id_token_header
            .as_ref()
            .and_then(|_| secret_value(&session.id_token));
        let access_token = self.access_token_header.as_ref().and_then(|h| {
            // Gloo adds the scheme only where it means something.
            let value = match self.bearer && h == http::header::AUTHORIZATION {
                true => format!("Bearer {}", session.access_token),
                false => session.access_token.clone(),
            };
            secret_value(&value)
        });
        Opened {
            claims: payload(&session.id_token).unwrap_or_default(),
            access_claims: (!self.access_claims.is_empty())
                .then(|| payload(&session.access_token))
                .flatten(),
            id_token,
            access_token,
            session,
        }
    }

    /// The session the cookie store's `cookie` holds, if it opens.
    fn open_cookie(&self, cookie: &str) -> Option<Arc<Opened>> {
        self.opened.get(&[b"cookie", cookie.as_bytes()], || {
            let session = self.sealer.open::<Session>("session", cookie)?;
            Some(self.opened(session))
        })
    }

    /// The allow of a valid session.
    fn allow(
        &self,
        request: &mut AuthorizationRequest,
        opened: &Opened,
        set_cookies: Vec<HeaderValue>,
    ) -> Decision {
        let (session, claims) = (&opened.session, &opened.claims);
        let mut allow = Allow::new();
        // A refresh may bring no new ID token: the old one, expired, is
        // not forwarded (a service that verifies it would refuse it).
        let id_exp = claims.get("exp").and_then(Value::as_u64);
        let expired = id_exp.is_none_or(|exp| exp <= session::now());
        if let (Some(h), Some(v)) = (&self.id_token_header, &opened.id_token)
            && !expired
        {
            allow = allow.set_header(h.clone(), v.clone());
        }
        if let (Some(h), Some(v)) = (&self.access_token_header, &opened.access_token) {
            allow = allow.set_header(h.clone(), v.clone());
        }
        allow = self.id_claims.apply(claims, allow);
        if let Some(access) = &opened.access_claims {
            allow = self.access_claims.apply(access, allow);
        }
        allow = self.metadata.apply(claims, allow);
        for cookie in set_cookies {
            allow = allow.response_header(http::header::SET_COOKIE, cookie);
        }
        if let Some(Value::String(sub)) = claims.get("sub") {
            allow = allow.user(UserInfo::new(sub.clone()));
        }
        // A remembered allow must not forward the ID token past its `exp`.
        let until = match (&self.id_token_header, id_exp) {
            (Some(_), Some(exp)) if !expired => session.expires_at.min(exp),
            _ => session.expires_at,
        };
        // An `exp` past what a SystemTime holds (an IdP's, unchecked) is
        // no limit.
        if let Some(at) = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(until)) {
            allow = allow.expires_at(at);
        }
        request
            .state
            .insert(STATE_KEY, Value::String(session.id_token.clone()));
        allow.into()
    }

    /// The deny that sends the browser to the IdP to log in; a request
    /// that a browser says is not a navigation (a `fetch`, an image) gets
    /// a `401` instead: it could not follow the IdP's pages, and its login
    /// cookies would pile up. So does every request under the AuthConfig's
    /// `failOnRedirect`.
    async fn login(&self, live: &Live, request: &AuthorizationRequest) -> Result<Decision, Error> {
        if self.fail_on_redirect {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "no session (failOnRedirect: no login here)",
            ));
        }
        if request
            .headers
            .get("sec-fetch-mode")
            .is_some_and(|mode| mode != "navigate")
        {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "no session: a login starts on a page navigation",
            ));
        }
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let pending = Pending {
            state: session::random_token(32),
            nonce: session::random_token(32),
            verifier: verifier.secret().clone(),
            return_to: return_path(&request.path),
            expires_at: session::now() + session::LOGIN_TTL.as_secs(),
        };
        let state = pending.state.clone();
        let mut authorize = live
            .client
            .authorize_url(|| CsrfToken::new(state))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", pending.nonce.clone());
        for (k, v) in &self.auth_params {
            authorize = authorize.add_extra_param(k.clone(), v.clone());
        }
        let (url, _) = authorize.url();
        let cookie = self.login_sealer().await?.seal("login", &pending);
        let location = HeaderValue::try_from(url.as_str())
            .map_err(|_| Error::step("the authorization URL is not a header value"))?;
        let mut deny = Self::redirect(location).header(
            http::header::SET_COOKIE,
            self.login_cookies.set_cookie(
                &self.login_cookie_name(&pending.state),
                &cookie,
                Some(session::LOGIN_TTL.as_secs() as u32),
            ),
        );
        // Logins started in many tabs at once (a browser that reopens
        // them): past a few, the earlier ones' cookies go, which every
        // request carries (a `Path=/` one) and which would soon pass what
        // a proxy takes in a header. A few at a time: a client may send
        // thousands of such names.
        let is_login = |name: &str| {
            name.strip_prefix(self.login_cookie_name.as_str())
                .is_some_and(|hash| {
                    hash.len() == 2 * LOGIN_HASH_BYTES
                        && hash.bytes().all(|b| b.is_ascii_hexdigit())
                })
        };
        let earlier = util::cookie_names(request, is_login, 2 * MAX_LOGINS_AT_ONCE);
        if earlier.len() >= MAX_LOGINS_AT_ONCE {
            for name in earlier {
                deny = deny.header(
                    http::header::SET_COOKIE,
                    self.login_cookies.set_cookie(name, "", Some(0)),
                );
            }
        }
        Ok(deny.into())
    }

    /// The sealer of logins in progress: the sessions' (a `cipherConfig`
    /// key's, or the process's with the cookie store), or with Redis and
    /// no key, one with the key the replicas share through Redis.
    async fn login_sealer(&self) -> Result<Arc<Sealer>, Error> {
        match &self.store {
            Store::Redis(redis) if self.login_key_in_redis => redis
                .login_sealer(self.idp.client_secret.as_deref())
                .await
                .map(Arc::new)
                .map_err(|e| Error::step(e).at("session.redis")),
            _ => Ok(Arc::clone(&self.sealer)),
        }
    }

    /// The login in progress the callback's cookie names with this
    /// `state`, sealed in the cookie.
    async fn take_pending(
        &self,
        request: &AuthorizationRequest,
        state: &str,
    ) -> Result<Option<Pending>, Error> {
        let Ok(Some(cookie)) = util::cookie(request, &self.login_cookie_name(state)) else {
            return Ok(None);
        };
        if cookie.is_empty() || cookie.len() > 4096 {
            return Ok(None);
        }
        let pending: Option<Pending> = self.login_sealer().await?.open("login", cookie);
        Ok(pending.filter(|p| p.expires_at >= session::now()))
    }

    async fn callback(
        &self,
        live: &Live,
        request: &AuthorizationRequest,
    ) -> Result<Decision, Error> {
        // The authorization response's parameters, decoded (a code may
        // hold `/`, sent as `%2F`); the first of each counts.
        let (mut code, mut state, mut error) = (None, None, false);
        for (k, v) in url::form_urlencoded::parse(request.query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "code" if code.is_none() => code = Some(v),
                "state" if state.is_none() => state = Some(v),
                "error" => error = true,
                _ => {}
            }
        }
        if error {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "the IdP refused the login",
            ));
        }
        let (Some(code), Some(state)) = (
            code.filter(|c| !c.is_empty() && c.len() <= util::MAX_CREDENTIAL_LEN),
            state.filter(|s| !s.is_empty() && s.len() <= 512),
        ) else {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "a callback without code and state",
            ));
        };
        if is_shadow_run(request) {
            // The login is the answer's: its code is spent once.
            let home = HeaderValue::try_from(format!("{}/", self.app_origin))
                .map_err(|_| Error::step("appUrl is not a header value"))?;
            return Ok(Self::redirect(home).into());
        }
        let Some(pending) = self.take_pending(request, &state).await? else {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "no login in progress (or it expired)",
            ));
        };
        if !util::ct_eq(pending.state.as_bytes(), state.as_bytes()) {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "the state does not match the login's",
            ));
        }
        // A login sealed in its cookie, with Redis beside: one use all the
        // same, marked spent where every replica sees it (a replay never
        // sends the IdP a spent code, which may revoke what it gave).
        if let Store::Redis(redis) = &self.store {
            // Kept while the login could still come back, no longer.
            let left = pending.expires_at.saturating_sub(session::now()).max(1);
            let first = redis
                .lock("spent:", &pending.state, "1", Duration::from_secs(left))
                .await
                .map_err(|e| Error::step(e).at("session.redis"))?;
            if !first {
                return Ok(Self::deny(
                    StatusCode::UNAUTHORIZED,
                    "the login was used already",
                ));
            }
        }
        let mut exchange = live
            .client
            .exchange_code(AuthorizationCode::new(code.into_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()));
        for (k, v) in &self.token_params {
            exchange = exchange.add_extra_param(k.clone(), v.clone());
        }
        let tokens = match exchange.request_async(&self.idp.http.oauth()).await {
            Ok(t) => t,
            Err(oauth2::RequestTokenError::ServerResponse(e)) => {
                tracing::debug!(error = %super::error_words(e.error()), "oauth2: the token endpoint refused the code");
                return Ok(Self::deny(
                    StatusCode::UNAUTHORIZED,
                    "the IdP refused the code",
                ));
            }
            Err(e) => return Err(Error::step(format!("the token endpoint: {e}"))),
        };
        let Some(id_token) = tokens.extra_fields().id_token.clone() else {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "the IdP sent no ID token",
            ));
        };
        let claims = match live.verifier.check(&id_token).await {
            Ok(c) => c,
            Err(reason) => {
                tracing::debug!(reason, "oauth2: ID token rejected");
                return Ok(Self::deny(
                    StatusCode::UNAUTHORIZED,
                    "the ID token is not valid",
                ));
            }
        };
        let nonce_ok = claims
            .get("nonce")
            .and_then(Value::as_str)
            .is_some_and(|n| util::ct_eq(n.as_bytes(), pending.nonce.as_bytes()));
        if !nonce_ok {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "the ID token's nonce is not the login's",
            ));
        }
        if !issued_to(&claims, &self.client_id) {
            return Ok(Self::deny(
                StatusCode::UNAUTHORIZED,
                "the ID token was issued to another client",
            ));
        }
        let started = pending
            .expires_at
            .saturating_sub(session::LOGIN_TTL.as_secs());
        if let Some(unmet) = self.asked.unmet(&claims, started, session::now()) {
            return Ok(Self::deny(StatusCode::UNAUTHORIZED, unmet));
        }
        let session = Session {
            expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
            id_token,
            access_token: tokens.access_token().secret().clone(),
            refresh_token: tokens.refresh_token().map(|r| r.secret().clone()),
        };
        let set_cookies = self.save(&session).await?;
        // Checked again: a Redis writer, without a key, may have made it.
        let location = format!("{}{}", self.app_origin, return_path(&pending.return_to));
        let location =
            HeaderValue::try_from(location).map_err(|_| Error::step("bad return path"))?;
        let mut deny = Self::redirect(location).header(
            http::header::SET_COOKIE,
            self.login_cookies
                .set_cookie(&self.login_cookie_name(&state), "", Some(0)),
        );
        for cookie in set_cookies {
            deny = deny.header(http::header::SET_COOKIE, cookie);
        }
        Ok(self.clear_legacy(request, deny).into())
    }

    /// Stores a new `session` and gives the `Set-Cookie`s of its cookie:
    /// the session sealed, or the id Redis keeps it under.
    async fn save(&self, session: &Session) -> Result<Vec<HeaderValue>, Error> {
        let value = match &self.store {
            Store::Cookie => self.sealer.seal("session", session),
            Store::Redis(redis) => {
                let id = session::random_token(32);
                redis
                    .put("session:", &id, session, redis_ttl(session, self.keep()))
                    .await
                    .map_err(|e| Error::step(e).at("session.redis"))?;
                id
            }
        };
        self.session_set_cookies(&value).ok_or_else(|| {
            Error::step("the session does not fit in 4 cookies: store sessions in Redis")
        })
    }

    /// How long a refreshable session is kept: its cookie's `maxAge`.
    fn keep(&self) -> Option<u32> {
        self.allow_refreshing
            .then_some(self.cookies.max_age)
            .flatten()
    }

    /// The session the request's cookie names; `Ok(None)`: none (or not
    /// valid); an error only when Redis fails and `failOnFetchFailure`.
    async fn load(&self, cookie: &str) -> Result<Option<Arc<Opened>>, Error> {
        match &self.store {
            Store::Cookie => Ok(self.open_cookie(cookie)),
            Store::Redis(redis) => match redis
                .get_with("session:", cookie, false, |data| {
                    self.opened
                        .get(&[b"redis", cookie.as_bytes(), data.as_bytes()], || {
                            let session = redis.open::<Session>("session:", cookie, data)?;
                            Some(self.opened(session))
                        })
                })
                .await
            {
                Ok(s) => Ok(s),
                Err(e) if self.fail_on_fetch_failure => Err(Error::step(e).at("session.redis")),
                Err(e) => {
                    tracing::warn!(error = %e, "oauth2: cannot read the session; starting a new login");
                    Ok(None)
                }
            },
        }
    }

    async fn logout(&self, live: &Live, request: &AuthorizationRequest) -> Result<Decision, Error> {
        // A browser's prefetch of a "Log out" link (speculation rules) is
        // no logout: it would end the session, and the IdP's, unasked.
        let prefetch = ["sec-purpose", "purpose", "x-moz", "x-purpose"]
            .iter()
            .any(|name| {
                request
                    .headers
                    .get_all(*name)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.contains("prefetch")))
            });
        if prefetch {
            return Ok(Self::deny(
                StatusCode::FORBIDDEN,
                "a prefetch does not log out",
            ));
        }
        // Nor does another site's link (a browser says so), which would
        // end the session, and the IdP's, for whoever follows it; nor
        // another subdomain's (`same-site`), unless the session is theirs
        // too (a cookie `Domain`).
        let foreign = |v: &HeaderValue| {
            v.as_bytes().eq_ignore_ascii_case(b"cross-site")
                || (self.cookies.domain.is_none()
                    && v.as_bytes().eq_ignore_ascii_case(b"same-site"))
        };
        if request
            .headers
            .get_all("sec-fetch-site")
            .iter()
            .any(foreign)
        {
            return Ok(Self::deny(
                StatusCode::FORBIDDEN,
                "another site's request does not log out",
            ));
        }
        if is_shadow_run(request) {
            let target = HeaderValue::try_from(self.after_logout_url.as_str())
                .map_err(|_| Error::step("bad logout target"))?;
            return Ok(Self::redirect(target).into());
        }
        let cookie = match self.session_cookie(request) {
            Ok(cookie) => cookie,
            Err(()) => return Ok(Self::two_sessions()),
        };
        // And the session a cookie under the former name holds, which
        // the logout clears: it ends too.
        let legacy = self
            .legacy_cookie_name
            .as_deref()
            .and_then(|old| session::joined_cookie(request, old).ok().flatten());
        // The former first: a failure to end it then ends nothing, and a
        // logout tried again still has the session and its ID token.
        let legacy = legacy.filter(|old| cookie.as_ref() != Some(old));
        let mut id_token = None;
        for cookie in [legacy, cookie].into_iter().flatten() {
            let session = match &self.store {
                Store::Cookie => self.sealer.open::<Session>("session", &cookie),
                // A session Redis cannot remove would outlive the logout
                // for whoever holds its id: fail, keeping the cookie, so
                // that the user can log out again.
                Store::Redis(redis) => redis
                    .get::<Session>("session:", &cookie, true)
                    .await
                    .map_err(|e| Error::step(e).at("session.redis"))?,
            };
            let Some(session) = session else {
                continue;
            };
            id_token = Some(session.id_token);
            if let Some(refresh) = session.refresh_token {
                for token in self.refreshes.end(refresh) {
                    revoke(&self.idp, &self.refreshes, live, token);
                }
            }
        }
        let target = match (&live.provider.end_session_endpoint, id_token) {
            (Some(end), Some(hint)) => {
                let mut url =
                    url::Url::parse(end).map_err(|_| Error::step("bad end_session_endpoint"))?;
                url.query_pairs_mut()
                    .append_pair("id_token_hint", &hint)
                    .append_pair("client_id", &self.client_id)
                    .append_pair("post_logout_redirect_uri", &self.after_logout_url);
                url.to_string()
            }
            _ => self.after_logout_url.clone(),
        };
        // With `id_token_hint`.
        let target = secret_value(&target).ok_or_else(|| Error::step("bad logout target"))?;
        let deny = self.clear_session(Self::redirect(target));
        Ok(self.clear_legacy(request, deny).into())
    }

    /// Every request that is not a callback or a logout.
    async fn with_session(
        &self,
        live: &Arc<Live>,
        request: &mut AuthorizationRequest,
        cookie: Option<String>,
    ) -> Result<Decision, Error> {
        let Some(cookie) = cookie else {
            return self.login(live, request).await;
        };
        let Some(opened) = self.load(&cookie).await? else {
            return self.login(live, request).await;
        };
        if opened.session.expires_at > session::now().saturating_add(self.pre_expiry.as_secs()) {
            return Ok(self.allow(request, &opened, Vec::new()));
        }
        if !self.allow_refreshing {
            return self.login(live, request).await;
        }
        if is_shadow_run(request) {
            // The answer's run refreshes it (once: an IdP may revoke a
            // grant whose refresh token comes twice), and allows.
            return Ok(self.allow(request, &opened, Vec::new()));
        }
        match self.refreshed(live, &opened.session, &cookie).await? {
            Some(fresh) => {
                // The refresh saved a Redis session under its id.
                let set_cookies = match self.store {
                    Store::Cookie => self.save(&fresh).await?,
                    Store::Redis(_) => Vec::new(),
                };
                let fresh = self.opened(Arc::unwrap_or_clone(fresh));
                Ok(self.allow(request, &fresh, set_cookies))
            }
            None => self.login(live, request).await,
        }
    }

    /// `session` refreshed, once for all the requests that carry it (see
    /// [`Refreshes`]); a Redis session is saved under `id`, the cookie's,
    /// unless a logout removed it meanwhile.
    async fn refreshed(
        &self,
        live: &Arc<Live>,
        session: &Session,
        id: &str,
    ) -> Result<Option<Arc<Session>>, Error> {
        let Some(token) = &session.refresh_token else {
            return Ok(None);
        };
        // A session a logout ended refreshes no more: a new login.
        if self.refreshes.ended(Some(token)) {
            return Ok(None);
        }
        let key = self.refreshes.key(token);
        let limit = session::now().saturating_add(self.pre_expiry.as_secs());
        if let Some(fresh) = self.refreshes.kept(key, limit) {
            return Ok(fresh);
        }
        let (idp, live, session, refreshes) = (
            Arc::clone(&self.idp),
            Arc::clone(live),
            session.clone(),
            Arc::clone(&self.refreshes),
        );
        let redis = match &self.store {
            Store::Cookie => None,
            Store::Redis(redis) => Some((Arc::clone(redis), id.to_owned())),
        };
        let keep = self.keep();
        let refreshed = self.refreshes.under_way.run(key, move || async move {
            // One that ended between the miss and joining this one.
            if let Some(fresh) = refreshes.kept(key, limit) {
                return Ok(fresh);
            }
            let (fresh, remember) = match redis {
                None => (idp.refresh(&live, &session).await?, true),
                Some((redis, id)) => {
                    refresh_in_redis(&idp, &live, &session, &redis, &id, keep, limit).await?
                }
            };
            // A logout while the IdP refreshed: the session stays ended,
            // and the refresh token the IdP gave for it is revoked.
            if refreshes.ended(session.refresh_token.as_deref()) {
                if let Some(token) = fresh.and_then(|f| f.refresh_token)
                    && session.refresh_token.as_deref() != Some(token.as_str())
                {
                    revoke(&idp, &refreshes, &live, token);
                }
                return Ok(None);
            }
            let fresh = fresh.map(Arc::new);
            if fresh.is_some() || remember {
                refreshes.done.insert(key, fresh.clone(), REFRESH_GRACE);
            }
            Ok(fresh)
        });
        match refreshed.await? {
            Ok(fresh) => Ok(fresh),
            Err(failed) => Err(failed.error()),
        }
    }
}

/// Revokes `refresh` at the IdP (RFC 7009), when it has an endpoint for
/// it, once: a copy of a sealed cookie, or a refresh token kept
/// elsewhere, would otherwise refresh its way past the logout. Off the
/// caller's path: a slow IdP must not hold the user's logout.
fn revoke(idp: &Arc<Discovery>, refreshes: &Arc<Refreshes>, live: &Live, refresh: String) {
    let Some(endpoint) = live.provider.revocation_endpoint.clone() else {
        return;
    };
    let key = refreshes.prf.hash(&[b"revoked", refresh.as_bytes()]);
    if refreshes.revoked.get(key).is_some() {
        return;
    }
    match idp.revocations.clone().try_acquire_owned() {
        Ok(place) => {
            refreshes.revoked.insert(key, (), REVOKED_FOR);
            let (idp, refreshes) = (Arc::clone(idp), Arc::clone(refreshes));
            tokio::spawn(async move {
                if let Err(e) = idp.revoke(&endpoint, &refresh).await {
                    // Not revoked: a logout with a copy of the cookie tries
                    // again.
                    refreshes.revoked.remove(key);
                    tracing::warn!(error = %e, "oauth2: the IdP did not revoke the refresh token at logout");
                }
                drop(place);
            });
        }
        Err(_) => tracing::warn!(
            "oauth2: {MAX_REVOCATIONS} revocations in flight; this logout's refresh token is not revoked"
        ),
    }
}

/// `session`, kept in Redis under `id`, refreshed by one replica at a
/// time: the one that takes the refresh's lock refreshes it and saves it
/// (unless a logout removed it, or another replica refreshed it since it
/// was read); the others wait for what it saves, and start a new login
/// when it saved nothing. With whether a session-less outcome is to be
/// remembered: not a waiter's (the refresh it waited for may have
/// failed, and the next may not).
async fn refresh_in_redis(
    idp: &Discovery,
    live: &Live,
    session: &Session,
    redis: &Redis,
    id: &str,
    keep: Option<u32>,
    fresh_after: u64,
) -> Result<(Option<Session>, bool), Error> {
    let at = |e: CallError| Error::step(e).at("session.redis");
    let fresh = |now: Session| (now.expires_at > fresh_after).then_some(now);
    // The IdP's token call, a key set fetch, and the Redis calls around
    // them: each bounded by `timeout`, the one setting both use, and all
    // of them within a timeout less than the lock's hold, so that no other
    // replica takes the lock (and spends the same refresh token) while
    // this one may still refresh.
    let hold = redis.timeout() * 6;
    let work = redis.timeout() * 5;
    let holder = session::random_token(16);
    if redis
        .lock("refresh:", id, &holder, hold)
        .await
        .map_err(at)?
    {
        let refreshed = async {
            match redis
                .get::<Session>("session:", id, false)
                .await
                .map_err(at)?
            {
                None => return Ok(None),
                Some(now) if refreshed_since(&now, session) => return Ok(fresh(now)),
                Some(_) => {}
            }
            let Some(new) = idp.refresh(live, session).await? else {
                return Ok(None);
            };
            let ttl = redis_ttl(&new, keep);
            if !redis.replace("session:", id, &new, ttl).await.map_err(at)? {
                tracing::debug!("oauth2: the session was logged out during its refresh");
                return Ok(None);
            }
            Ok(Some(new))
        };
        let refreshed = match tokio::time::timeout(work, refreshed).await {
            Ok(refreshed) => refreshed,
            Err(_) => Err(Error::step("the refresh outlasted its lock").at("session.redis")),
        };
        // Else it goes when `hold` ends.
        let _ = redis.unlock("refresh:", id, &holder).await;
        return refreshed.map(|fresh| (fresh, true));
    }
    let deadline = tokio::time::Instant::now() + hold;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(REFRESH_POLL).await;
        // The lock first: a refresh that ended saved its session before.
        let held = redis.locked("refresh:", id).await.map_err(at)?;
        match redis
            .get::<Session>("session:", id, false)
            .await
            .map_err(at)?
        {
            Some(now) if refreshed_since(&now, session) => return Ok((fresh(now), true)),
            Some(_) if held => {}
            _ => return Ok((None, false)),
        }
    }
    Err(Error::step("another replica's refresh of this session did not end").at("session.redis"))
}

/// Whether `now` is `then` refreshed (a refresh may keep the access
/// token, never its lifetime).
fn refreshed_since(now: &Session, then: &Session) -> bool {
    now.access_token != then.access_token || now.expires_at != then.expires_at
}

/// How often a replica looks for the session another one refreshes.
const REFRESH_POLL: Duration = Duration::from_millis(50);

/// How long Redis keeps `session`: `keep` (the cookie's `maxAge`) when
/// it can be refreshed, else until its ID token expires.
fn redis_ttl(session: &Session, keep: Option<u32>) -> Duration {
    match (session.refresh_token.is_some(), keep) {
        (true, Some(age)) => Duration::from_secs(u64::from(age)),
        _ => Duration::from_secs(session.expires_at.saturating_sub(session::now()).max(1)),
    }
}

/// The Secret `cipherConfig.keyRef` names: its `key` entry, 32 bytes.
fn encryption_key(context: &BuildContext<'_>, reference: &SecretRef) -> Result<Vec<u8>, Error> {
    let place = "session.cipherConfig.keyRef";
    let key = match (reference.resource(), &reference.file, &reference.env) {
        (Some(r), None, None) => {
            let secret = util::typed_secret(context, &r, ENCRYPTION_KEY_SECRET_TYPE, place)?;
            util::secret_bytes(secret, "key")
                .map_err(|e| e.at(place))?
                .to_vec()
        }
        _ => idp::client_secret(context, reference, place)?.into_bytes(),
    };
    if key.len() != 32 {
        return Err(Error::config("expected a 32-byte key").at(place));
    }
    Ok(key)
}

/// The path (and query) to come back to after a login: the request's
/// canonical path, which the chain made absolute. Only a path that makes
/// a `Location` on `appUrl`'s origin is kept: one that starts with a
/// single `/`, of visible ASCII (no control character can split the
/// header), within [`MAX_RETURN_PATH`]; else its path alone, else `/`.
fn return_path(path: &str) -> String {
    let usable = |p: &str| {
        p.starts_with('/')
            && !p.starts_with("//")
            && p.len() <= MAX_RETURN_PATH
            && p.bytes().all(|b| b.is_ascii_graphic())
    };
    if usable(path) {
        return path.to_owned();
    }
    let path_only = path.split('?').next().unwrap_or_default();
    if usable(path_only) {
        return path_only.to_owned();
    }
    "/".to_owned()
}

/// What a login asks of the IdP in `authEndpointQueryParams` that its ID
/// token must show (OpenID Connect Core 3.1.3.7, 12 and 13): the request
/// to the IdP goes through the browser, where a user can take a
/// parameter out or change it.
#[derive(Debug)]
struct Asked {
    /// `acr_values`: the token's `acr` is one of them.
    acr: Vec<String>,
    /// `max_age`: the token's `auth_time` is no older, in seconds.
    max_age: Option<u64>,
    /// `prompt` holds `login`: the token's `auth_time` is no earlier than
    /// the login's start.
    fresh: bool,
    /// `organization` (Auth0's): the token's `org_id` for an `org_` id,
    /// else its `org_name` (which Auth0 writes in lowercase).
    organization: Option<String>,
    /// `hd` (Google's): the token's `hd` is this domain (`*`: any).
    hosted_domain: Option<String>,
}

/// How far an `auth_time` may be off `max_age` or the login's start: the
/// clocks' skew, as for an ID token's `nbf`.
const AUTH_TIME_LEEWAY: u64 = 60;

impl Asked {
    fn new(params: &std::collections::BTreeMap<String, String>) -> Result<Asked, Error> {
        let max_age = params
            .get("max_age")
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Error::config("expected a number of seconds")
                        .at("authEndpointQueryParams.max_age")
                })
            })
            .transpose()?;
        let set = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
        Ok(Asked {
            acr: params
                .get("acr_values")
                .map(|v| {
                    v.split(' ')
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            max_age,
            fresh: params
                .get("prompt")
                .is_some_and(|p| p.split(' ').any(|p| p == "login")),
            organization: set("organization"),
            hosted_domain: set("hd"),
        })
    }

    /// Why the ID token's `claims` do not show what the login `started`
    /// then asked, at `now`; `None` when they do.
    fn unmet(&self, claims: &Map<String, Value>, started: u64, now: u64) -> Option<&'static str> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let auth_time = claims
            .get("auth_time")
            .and_then(Value::as_f64)
            .filter(|at| *at >= 0.0)
            .map(|at| (at as u64).saturating_add(AUTH_TIME_LEEWAY));
        if !self.acr.is_empty() && !text("acr").is_some_and(|acr| self.acr.iter().any(|a| a == acr))
        {
            return Some("the ID token's acr is not one of the login's acr_values");
        }
        if let Some(max_age) = self.max_age
            && auth_time.is_none_or(|at| at.saturating_add(max_age) < now)
        {
            return Some("the ID token's auth_time is missing or older than the login's max_age");
        }
        if self.fresh && auth_time.is_none_or(|at| at < started) {
            return Some("the ID token's auth_time is missing or before the login (prompt=login)");
        }
        if let Some(organization) = &self.organization {
            let same = match organization.starts_with("org_") {
                true => text("org_id") == Some(organization.as_str()),
                false => text("org_name").is_some_and(|n| n.eq_ignore_ascii_case(organization)),
            };
            if !same {
                return Some("the ID token's organization is not the login's");
            }
        }
        if let Some(domain) = &self.hosted_domain {
            let same = text("hd").is_some_and(|hd| {
                !hd.is_empty() && (domain == "*" || hd.eq_ignore_ascii_case(domain))
            });
            if !same {
                return Some("the ID token's hd is not the login's");
            }
        }
        None
    }
}

/// Whether an ID token whose `aud` holds `client_id` (as the verifier
/// checked) was issued to it (OIDC Core 3.1.3.7): its `azp`, when it has
/// one, is `client_id`; without one, `client_id` is its only audience.
fn issued_to(claims: &Map<String, Value>, client_id: &str) -> bool {
    match claims.get("azp") {
        Some(azp) => azp.as_str() == Some(client_id),
        None => match claims.get("aud") {
            Some(Value::Array(audiences)) => audiences.len() == 1,
            _ => true,
        },
    }
}

/// A JWT's claims, read without checking: for tokens this step verified
/// (the ID token) or had from the IdP directly (the access token).
fn payload(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_, body, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[async_trait]
impl AuthService for Oidc {
    async fn start(&self, lifecycle: Lifecycle) -> Result<(), Error> {
        // The chain calls this again after a failure: Redis first, so
        // that a failing Redis leaves nothing behind, and whatever an
        // earlier attempt found is reused, never doubled (one key set,
        // one poll).
        if let Store::Redis(redis) = &self.store {
            redis
                .ping()
                .await
                .map_err(|e| Error::start(e).at("session.redis"))?;
        }
        let current = self.idp.live.load_full();
        let live = self
            .idp
            .discover(&lifecycle, current.as_deref())
            .await
            .map_err(|e| Error::start(e).at("issuerUrl"))?;
        self.idp.install(live);
        if !self.polling.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.idp.clone().poll(lifecycle.clone(), self.poll);
        }
        Ok(())
    }

    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        let Some(live) = self.idp.live.load_full() else {
            return Err(Error::step("the IdP has not been discovered yet")).into();
        };
        if !self.host_allowed(request) {
            return Self::deny(
                StatusCode::FORBIDDEN,
                "the host is not the session's domain",
            )
            .into();
        }
        let path = request.path_only();
        if path == self.callback_path {
            return Answer::wait(async move { self.callback(&live, request).await });
        }
        if self.logout_path.as_deref() == Some(path) {
            return Answer::wait(async move { self.logout(&live, request).await });
        }
        let cookie = match self.session_cookie(request) {
            Ok(cookie) => cookie,
            Err(()) => return Self::two_sessions().into(),
        };
        // The cookie store's valid session needs no wait.
        if let (Store::Cookie, Some(c)) = (&self.store, &cookie)
            && let Some(opened) = self.open_cookie(c)
            && opened.session.expires_at > session::now().saturating_add(self.pre_expiry.as_secs())
        {
            return self.allow(request, &opened, Vec::new()).into();
        }
        let cookie = cookie.map(Cow::into_owned);
        Answer::wait(async move { self.with_session(&live, request, cookie).await })
    }

    /// The session cookie's parts, and the path and host: a request to
    /// the callback or the logout with a session cookie is no request to
    /// the app with it, and the session's domain is the host's. (A login,
    /// a callback and a logout answer with `Set-Cookie` or `no-store`,
    /// which no cache keeps.)
    fn reads(&self) -> Option<Vec<Attribute>> {
        let mut reads: Vec<Attribute> = session::chunk_names(&self.cookie_name)
            .map(Attribute::cookie)
            .collect();
        reads.extend([Attribute::Path, Attribute::Host]);
        Some(reads)
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        self.id_token_header
            .iter()
            .chain(self.access_token_header.iter())
            .cloned()
            .chain(self.id_claims.headers())
            .chain(self.access_claims.headers())
            .collect()
    }

    // A request it fails on has no session: letting it through lets in
    // whom it could not log in, and a client can make a login fail (by
    // filling the store its logins are kept in).
    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        Some(
            "on a login would let through a request with no session when the login cannot start (the IdP or Redis down or full)",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn opened(expires_at: u64) -> Opened {
        Opened {
            session: Session {
                id_token: "h.e.s".to_owned(),
                access_token: "access".to_owned(),
                refresh_token: None,
                expires_at,
            },
            claims: Map::new(),
            access_claims: None,
            id_token: None,
            access_token: None,
        }
    }

    #[test]
    fn a_session_is_opened_once_until_it_expires_and_a_failure_is_not_kept() {
        let opens = Opens::new();
        let calls = Cell::new(0);
        let open = |opened: Option<Opened>| {
            calls.set(calls.get() + 1);
            opened
        };
        let live = session::now() + 60;
        for parts in [[&b"a"[..], b"b"], [b"a", b"b"], [b"ab", b""]] {
            let got = opens.get(&parts, || open(Some(opened(live))));
            assert_eq!(got.map(|o| o.session.expires_at), Some(live));
        }
        assert_eq!(calls.get(), 2, "(a, b) twice is one open, (ab, '') another");

        calls.set(0);
        for _ in 0..2 {
            assert!(opens.get(&[b"forged"], || open(None)).is_none());
            let past = session::now() - 1;
            assert!(
                opens
                    .get(&[b"expired"], || open(Some(opened(past))))
                    .is_some()
            );
        }
        assert_eq!(
            calls.get(),
            4,
            "neither a failure nor an expired session is kept"
        );
    }
}
