//! Built-in authchain steps, configured in Gloo's camelCase shape:
//!
//! | step kind | module | what it checks |
//! |---|---|---|
//! | `rules` | [`rules`] | method, path (exact, prefix, glob, regex) and host; first match wins |
//! | `apiKeyAuth` | [`api_key`] | an API key from a header or `Authorization: Bearer` |
//! | `basicAuth` | [`basic`] | HTTP Basic against htpasswd users (bcrypt, SHA-crypt, APR1) |
//! | `hmacAuth` | [`hmac`] | a request signed with a user's shared secret (HMAC), as Gloo's |
//! | `jwt` | [`jwt`] | a JWT verified with a local or remote JWKS |
//! | `ldap` | [`ldap`] | HTTP Basic checked by an LDAP bind, and the user's groups |
//! | `oauth2` | [`oauth2`] | Gloo's OAuth2: an access token (JWT or introspection), or an OpenID Connect login and its session |
//! | `opaAuth` | [`opa`] | a Rego policy, evaluated in process with regorus |
//!
//! # With the decision cache
//!
//! A cached AuthConfig's key must hold what its steps read (see
//! `authchain_core::cache`). `apiKeyAuth` reads its header (and
//! `authorization` when `allowBearer: true`), `basicAuth` reads
//! `authorization`, `rules` reads the method, host and path, `jwt` its
//! token's headers and cookies (an allow is never kept past the token's
//! `exp`), an `oauth2` login (`oidcAuthorizationCode`) its session
//! cookie's parts, the path and the host (a request to the callback or
//! the logout is no request to the app; an allow is never kept past the
//! session's end). `hmacAuth`, `opaAuth` and `oauth2`'s
//! `accessTokenValidation` do not declare: a signature's answer changes
//! with its `Date` and with the headers the client chose to sign, a
//! policy may read anything, and an access token's answer depends on the
//! IdP; caching them needs `trustKey: true` (for `hmacAuth`: a key with
//! every header signed, and a TTL well below `clockSkew`).
//!
//! [`register`] puts them all in a registry. Each module's docs show
//! its config; the same examples live in `examples-config/` and a test
//! loads each of them.
//!
//! ```
//! use authchain_core::{AuthConfig, AuthorizationRequest, Engine, Format, PluginRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), authchain_core::Error> {
//! let mut registry = PluginRegistry::new();
//! authchain_steps::register(&mut registry);
//!
//! let yaml = r#"
//! name: ratings
//! configs:
//! - rules:
//!     rules:
//!     - { action: allow, methods: [GET], path: { exact: /ratings/1 } }
//! "#;
//! let engine = Engine::new(registry);
//! engine.load(&AuthConfig::parse("inline", yaml, Format::Yaml)?).await?;
//! let generation = engine.current();
//! let chain = generation.chain("ratings").expect("loaded");
//! let mut req = AuthorizationRequest::new(http::Method::GET, "/ratings/1");
//! assert!(chain.authorize(&mut req).await.is_allow());
//! let mut req = AuthorizationRequest::new(http::Method::GET, "/ratings/2");
//! assert!(!chain.authorize(&mut req).await.is_allow());
//! # Ok(())
//! # }
//! ```
//!
//! What each step leaves for later steps and for the upstream:
//!
//! | step kind | `state` key | `UserInfo.user_id` | upstream headers (declared as identity headers) |
//! |---|---|---|---|
//! | `apiKeyAuth` | `apiKey`: the key's metadata; as Gloo's, each `headersFromMetadataEntry` value under its header's name and the key under `api_key_value` | `userIdMetadata` entry | `headersFromMetadataEntry` |
//! | `basicAuth` | `basicAuth.user` | the user | `userIdHeader` |
//! | `hmacAuth` | `hmacAuth.user` | the user | — |
//! | `jwt` | `jwt`: the claims | `userIdClaim` (`sub`) | `claimsToHeaders` |
//! | `ldap` | `ldap`: `user`, `dn`, `groups` | the user | — |
//! | `oauth2` (`oidcAuthorizationCode`) | `jwt`: the ID token (Gloo's; `io.jwt.decode` it in Rego) | `sub` | `headers`, `identityToken`/`accessToken.claimsToHeaders` |
//! | `oauth2` (`accessTokenValidation`) | `jwtAccessToken` (a JWT's claims), `tokenIntrospection` (the introspection answer), `introspection` (userinfo) | `sub` / `userIdAttributeName` | `claimsToHeaders` |
//! | `opaAuth` | — | — | `allowedUpstreamHeaders` |
//!
//! Every step answers bad input (a malformed token, a header that is not
//! text, a huge header) with a deny: 401 for missing or bad credentials,
//! 403 for a forbidden request. No secret (key, password, token) is ever
//! written to a log or an error.

pub mod api_key;
pub mod basic;
pub mod hmac;
pub mod jwt;
pub mod ldap;
pub mod oauth2;
pub mod opa;
pub mod rules;
mod util;

use authchain_core::PluginRegistry;

#[doc(inline)]
pub use api_key::{ApiKeyAuth, ApiKeyPlugin};
#[doc(inline)]
pub use basic::{BasicAuth, BasicPlugin};
#[doc(inline)]
pub use hmac::{HmacAuth, HmacPlugin};
#[doc(inline)]
pub use jwt::{JwtAuth, JwtPlugin, VerifiedByEnvoy};
#[doc(inline)]
pub use ldap::{LdapAuth, LdapPlugin};
#[doc(inline)]
pub use oauth2::OAuth2Plugin;
#[doc(inline)]
pub use opa::{OpaAuth, OpaPlugin};
#[doc(inline)]
pub use rules::{Rules, RulesPlugin};

/// Registers this crate's step kinds: `rules`, `apiKeyAuth`, `basicAuth`,
/// `hmacAuth`, `jwt`, `ldap`, `oauth2` and `opaAuth` (every crate that brings steps
/// has a `register`).
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register_kind(RulesPlugin)
        .register_kind(ApiKeyPlugin)
        .register_kind(BasicPlugin)
        .register_kind(HmacPlugin)
        .register_kind(JwtPlugin)
        .register_kind(LdapPlugin::new())
        .register_kind(OAuth2Plugin)
        .register_kind(OpaPlugin);
}
