//! The `oauth2` block, in Gloo's field names (`extauth.proto`: `OAuth2`,
//! `AccessTokenValidation`, `OidcAuthorizationCode`, `UserSession`, ...).
//!
//! Fields Gloo has and authchain does not implement are read, so that a
//! manifest that sets them is refused with an error that names them,
//! never run without them.

use std::collections::BTreeMap;

use authchain_core::ConfigDuration;
use authchain_core::resources::ResourceRef;
use serde::Deserialize;
use serde_json::Value;

/// The `oauth2` block: exactly one of its kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuth2Config {
    /// Log users in through an OpenID Connect provider.
    #[serde(default)]
    pub oidc_authorization_code: Option<OidcAuthorizationCode>,
    /// Check the access token a request carries.
    #[serde(default)]
    pub access_token_validation: Option<AccessTokenValidation>,
    /// Gloo's plain OAuth2 login (tech preview there): not supported.
    #[serde(default)]
    pub oauth2: Option<Value>,
}

/// A secret reference: Gloo's `{name, namespace}` naming a Kubernetes
/// `Secret` read beside the AuthConfig, or (authchain's additions) a
/// `file` or an `env` variable holding the secret itself.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The Secret's namespace (the AuthConfig's when none).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A file holding the secret (trailing newline removed).
    #[serde(default)]
    pub file: Option<String>,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names of where a secret is; never a secret.
        f.debug_struct("SecretRef")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("file", &self.file)
            .field("env", &self.env)
            .finish()
    }
}

impl SecretRef {
    /// The Kubernetes reference, when it is one.
    pub(crate) fn resource(&self) -> Option<ResourceRef> {
        self.name.as_ref().map(|name| ResourceRef {
            name: name.clone(),
            namespace: self.namespace.clone(),
        })
    }
}

/// `accessTokenValidation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenValidation {
    /// Deprecated in Gloo: introspection without client credentials.
    #[serde(default)]
    pub introspection_url: Option<String>,
    /// Tokens that are JWTs, checked with a JWKS.
    #[serde(default)]
    pub jwt: Option<JwtValidation>,
    /// Opaque tokens, checked by RFC 7662 introspection.
    #[serde(default)]
    pub introspection: Option<IntrospectionValidation>,
    /// The OIDC userinfo endpoint; its answer goes to `state.introspection`.
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// How long introspection and userinfo answers are kept (10m; 0: not
    /// kept), never past the token's `exp`.
    #[serde(default)]
    pub cache_timeout: Option<ConfigDuration>,
    /// Scopes the token must all have.
    #[serde(default)]
    pub required_scopes: Option<ScopeList>,
    /// Dynamic metadata key to claim.
    #[serde(default)]
    pub dynamic_metadata_from_claims: BTreeMap<String, String>,
    /// Claims copied to upstream headers.
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// Gloo's no-op provider marker.
    #[serde(default)]
    pub default: Option<Value>,
    /// Microsoft Entra distributed claims: not supported.
    #[serde(default)]
    pub azure: Option<Value>,
    /// An authchain addition: the time limit of each call to the IdP (5s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
}

/// `requiredScopes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeList {
    /// The scopes.
    #[serde(default)]
    pub scope: Vec<String>,
}

/// `accessTokenValidation.jwt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtValidation {
    /// A JWKS fetched over HTTP(S).
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    /// A JWKS in the config.
    #[serde(default)]
    pub local_jwks: Option<LocalJwks>,
    /// The `iss` tokens must have.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (any, when empty).
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// `remoteJwks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwks {
    /// The JWKS URL.
    pub url: String,
    /// How often it is fetched again (5m).
    #[serde(default)]
    pub refresh_interval: Option<ConfigDuration>,
}

/// `localJwks`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalJwks {
    /// The JWKS document.
    pub inline_string: String,
}

impl std::fmt::Debug for LocalJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJwks").finish_non_exhaustive()
    }
}

/// `accessTokenValidation.introspection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntrospectionValidation {
    /// The RFC 7662 endpoint.
    pub introspection_url: String,
    /// The client the endpoint authenticates.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The client's secret.
    #[serde(default)]
    pub client_secret_ref: Option<SecretRef>,
    /// The answer's attribute naming the user (`sub`, `username`); when
    /// set and missing, the request is denied.
    #[serde(default)]
    pub user_id_attribute_name: Option<String>,
    /// A client id without a secret.
    #[serde(default)]
    pub disable_client_secret: Option<bool>,
}

/// One claim copied to an upstream header.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The claim (`sub`).
    pub claim: String,
    /// The header (`x-sub`).
    pub header: String,
    /// Append to a header the request has, instead of overwriting it.
    #[serde(default)]
    pub append: bool,
}

/// `oidcAuthorizationCode`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcAuthorizationCode {
    /// The client id registered with the IdP.
    pub client_id: String,
    /// The client's secret (Gloo's deprecated place for it).
    #[serde(default)]
    pub client_secret_ref: Option<SecretRef>,
    /// The issuer: discovery at `{issuerUrl}/.well-known/openid-configuration`.
    pub issuer_url: String,
    /// Extra query parameters of the authorization request.
    #[serde(default)]
    pub auth_endpoint_query_params: BTreeMap<String, String>,
    /// Extra parameters of the token request.
    #[serde(default)]
    pub token_endpoint_query_params: BTreeMap<String, String>,
    /// The app's public URL; its origin is the only redirect target.
    pub app_url: String,
    /// The callback path, relative to `appUrl`.
    pub callback_path: String,
    /// The logout path; none: no logout.
    #[serde(default)]
    pub logout_path: Option<String>,
    /// Where logout ends (`appUrl`).
    #[serde(default)]
    pub after_logout_url: Option<String>,
    /// Scopes asked for besides `openid`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The user session.
    #[serde(default)]
    pub session: Option<UserSession>,
    /// Tokens sent upstream.
    #[serde(default)]
    pub headers: Option<HeaderConfiguration>,
    /// Discovery values that win over the IdP's.
    #[serde(default)]
    pub discovery_override: Option<DiscoveryOverride>,
    /// How often discovery runs again (30m).
    #[serde(default)]
    pub discovery_poll_interval: Option<ConfigDuration>,
    /// What to do with a token whose key is unknown (Gloo's policy; keys
    /// are refetched at most every 30s whatever it says).
    #[serde(default)]
    pub jwks_cache_refresh_policy: Option<Value>,
    /// Deprecated in Gloo: not supported.
    #[serde(default)]
    pub session_id_header_name: Option<String>,
    /// A callback path as a regex: not supported.
    #[serde(default)]
    pub parse_callback_path_as_regex: Option<bool>,
    /// Query parameters from dynamic metadata: not supported.
    #[serde(default)]
    pub auto_map_from_metadata: Option<Value>,
    /// How the end-session endpoint is called.
    #[serde(default)]
    pub end_session_properties: Option<EndSessionProperties>,
    /// Dynamic metadata key to ID token claim.
    #[serde(default)]
    pub dynamic_metadata_from_claims: BTreeMap<String, String>,
    /// A client id without a secret (PKCE alone).
    #[serde(default)]
    pub disable_client_secret: Option<bool>,
    /// Access token claims copied to upstream headers.
    #[serde(default)]
    pub access_token: Option<TokenClaims>,
    /// ID token claims copied to upstream headers.
    #[serde(default)]
    pub identity_token: Option<TokenClaims>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_authentication: Option<ClientAuthentication>,
    /// Gloo's no-op provider marker.
    #[serde(default)]
    pub default: Option<Value>,
    /// Microsoft Entra distributed claims: not supported.
    #[serde(default)]
    pub azure: Option<Value>,
    /// Front-channel logout: not supported.
    #[serde(default)]
    pub front_channel_logout: Option<Value>,
    /// An authchain addition: the time limit of each call to the IdP or
    /// to Redis (5s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
}

/// `endSessionProperties`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndSessionProperties {
    /// `GetMethod`, the default and the only one read (`PostMethod` is a
    /// config error).
    #[serde(default)]
    pub method_type: Option<String>,
}

/// `accessToken` / `identityToken`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenClaims {
    /// Claims copied to upstream headers.
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimToHeader>,
}

/// `clientAuthentication`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientAuthentication {
    /// A client secret.
    #[serde(default)]
    pub client_secret: Option<ClientSecret>,
    /// `private_key_jwt`: not supported.
    #[serde(default)]
    pub private_key_jwt: Option<Value>,
}

/// `clientAuthentication.clientSecret`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientSecret {
    /// The secret.
    #[serde(default)]
    pub client_secret_ref: Option<SecretRef>,
    /// No secret (PKCE alone).
    #[serde(default)]
    pub disable_client_secret: Option<bool>,
}

/// `headers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderConfiguration {
    /// The upstream header for the ID token.
    #[serde(default)]
    pub id_token_header: Option<String>,
    /// The upstream header for the access token.
    #[serde(default)]
    pub access_token_header: Option<String>,
    /// `Bearer ` before the access token.
    #[serde(default)]
    pub use_bearer_schema_for_authorization: Option<bool>,
}

/// `discoveryOverride`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoveryOverride {
    /// The authorization endpoint.
    #[serde(default)]
    pub auth_endpoint: Option<String>,
    /// The token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The JWKS.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Supported scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Supported response types.
    #[serde(default)]
    pub response_types: Vec<String>,
    /// Supported subject types.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// ID token signing algorithms.
    #[serde(default)]
    pub id_token_algs: Vec<String>,
    /// Token endpoint auth methods.
    #[serde(default)]
    pub auth_methods: Vec<String>,
    /// Claims.
    #[serde(default)]
    pub claims: Vec<String>,
    /// The revocation endpoint.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// The end-session endpoint.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// `session`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSession {
    /// A Redis failure to read a session is a step error (a deny with the
    /// chain's `statusOnError`) instead of a new login.
    #[serde(default)]
    pub fail_on_fetch_failure: bool,
    /// The session cookie's attributes.
    #[serde(default)]
    pub cookie_options: Option<CookieOptions>,
    /// Tokens in the cookie itself (encrypted).
    #[serde(default)]
    pub cookie: Option<CookieSession>,
    /// Tokens in Redis, a random id in the cookie.
    #[serde(default)]
    pub redis: Option<RedisSession>,
    /// The key that encrypts and signs session cookies.
    #[serde(default)]
    pub cipher_config: Option<CipherConfig>,
}

/// `cookieOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieOptions {
    /// Seconds (30 days; 0: a browser-session cookie).
    #[serde(default)]
    pub max_age: Option<u32>,
    /// No `Secure` attribute (for plain-HTTP tests only).
    #[serde(default)]
    pub not_secure: bool,
    /// `HttpOnly` (true).
    #[serde(default)]
    pub http_only: Option<bool>,
    /// `Path` (`/`; empty: the callback's directory, the path a browser
    /// gives a cookie set there without one, written out so that a
    /// refresh on another path sets the same cookie).
    #[serde(default)]
    pub path: Option<String>,
    /// `Domain`.
    #[serde(default)]
    pub domain: Option<String>,
    /// `LaxMode` (default), `StrictMode`, `NoneMode`, `DefaultMode`.
    #[serde(default)]
    pub same_site: Option<String>,
}

/// `session.cookie`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieSession {
    /// Use the refresh token when the ID token expires (false).
    #[serde(default)]
    pub allow_refreshing: Option<bool>,
    /// Prefix of the cookie names.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// The host must domain-match this (RFC 6265 5.1.3).
    #[serde(default)]
    pub target_domain: Option<String>,
}

/// `session.redis`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSession {
    /// The connection.
    #[serde(default)]
    pub options: Option<RedisOptions>,
    /// Prefix of the Redis keys.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// The cookie holding the session id (`__Host-__session`, or
    /// `__session` where the cookies cannot take `__Host-`).
    #[serde(default)]
    pub cookie_name: Option<String>,
    /// Use the refresh token when the ID token expires (true).
    #[serde(default)]
    pub allow_refreshing: Option<bool>,
    /// Refresh this long before expiry (2s).
    #[serde(default)]
    pub pre_expiry_buffer: Option<ConfigDuration>,
    /// The host must domain-match this (RFC 6265 5.1.3).
    #[serde(default)]
    pub target_domain: Option<String>,
    /// The session id sent to the token endpoint: not supported.
    #[serde(default)]
    pub header_name: Option<String>,
}

/// `redis.options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisOptions {
    /// `host:port`.
    #[serde(default)]
    pub host: Option<String>,
    /// The database number (0).
    #[serde(default)]
    pub db: Option<i64>,
    /// Connections (Gloo: 10 per CPU).
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// TLS certificates: not supported.
    #[serde(default)]
    pub tls_cert_mount_path: Option<String>,
    /// `TCP` (default) or `TLS` (not supported).
    #[serde(default)]
    pub socket_type: Option<String>,
}

/// `cipherConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CipherConfig {
    /// A Secret of type `gloo.solo.io.EncryptionKeySecret` holding a
    /// 32-byte key in its `key` entry.
    #[serde(default)]
    pub key_ref: Option<SecretRef>,
}
