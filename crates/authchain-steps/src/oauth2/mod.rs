//! `oauth2`: Gloo's OAuth2 step, in its two kinds.
//!
//! - `accessTokenValidation`: a request carries an access token
//!   (`Authorization: Bearer`), checked as a JWT against a JWKS or by RFC
//!   7662 introspection, with the OIDC userinfo answer beside it (see
//!   [`access`]).
//! - `oidcAuthorizationCode`: users log in through an OpenID Connect
//!   provider (the authorization code flow with PKCE, `state` and
//!   `nonce`), and a session, in an encrypted cookie or in Redis, lets
//!   their next requests through (see [`oidc`]).
//!
//! ```yaml
//! oauth2:
//!   oidcAuthorizationCode:
//!     clientId: app
//!     clientSecretRef: { name: app-oidc, namespace: gloo-system }
//!     issuerUrl: https://idp.example.com/
//!     appUrl: https://app.example.com
//!     callbackPath: /callback
//!     logoutPath: /logout
//!     scopes: [email]
//!     session:
//!       cookieOptions: { maxAge: 3600 }
//!       redis: { options: { host: redis:6379 } }
//! ```
//!
//! Every `*SecretRef` names a Kubernetes `Secret` read beside the
//! AuthConfig, of Gloo's type `extauth.solo.io/oauth` (entry
//! `client-secret`, or the older `oauth` entry holding `clientSecret: ...`
//! YAML); authchain also takes `{file: /path}` or `{env: VAR}` instead.
//!
//! Building the step reaches nothing: `authchain check` checks such a
//! config where the IdP and Redis are out of reach. Discovery (and the
//! JWKS, and Redis) are reached when the step starts; until then it fails
//! its requests and the server's readiness probe names it.

pub mod access;
pub mod config;
mod flight;
mod idp;
pub mod oidc;
mod session;

use std::sync::Arc;

use authchain_core::{Allow, AuthService, BuildContext, Error, ExtAuthPlugin};
use http::HeaderName;
use serde_json::{Map, Value};

pub use config::OAuth2Config;
pub use idp::OAUTH_SECRET_TYPE;

use crate::util;

/// The step kind this module registers.
pub const KIND: &str = "oauth2";

/// The plugin for step kind `oauth2`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OAuth2Plugin;

impl ExtAuthPlugin for OAuth2Plugin {
    type Config = OAuth2Config;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: OAuth2Config,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        match (
            config.oidc_authorization_code,
            config.access_token_validation,
            config.oauth2,
        ) {
            (Some(oidc), None, None) => Ok(Arc::new(
                oidc::Oidc::new(oidc, context).map_err(|e| e.at("oidcAuthorizationCode"))?,
            )),
            (None, Some(access), None) => Ok(Arc::new(
                access::AccessToken::new(access, context)
                    .map_err(|e| e.at("accessTokenValidation"))?,
            )),
            (None, None, Some(_)) => Err(Error::config(
                "Gloo's plain OAuth2 login is not supported: use oidcAuthorizationCode",
            )
            .at("oauth2")),
            _ => Err(Error::config(
                "expected exactly one of `oidcAuthorizationCode` and `accessTokenValidation`",
            )),
        }
    }
}

/// `value`, unless it is empty (proto3's unset string).
pub(crate) fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// An IdP's OAuth 2.0 error in words a log or an error may show: RFC
/// 6749's code, never the IdP's own text (which may be anything, a line
/// break that forges a log line included).
pub(crate) fn error_words(code: &oauth2::basic::BasicErrorResponseType) -> String {
    match code {
        oauth2::basic::BasicErrorResponseType::Extension(_) => "an error of its own".to_owned(),
        code => format!("the error `{}`", code.as_ref()),
    }
}

/// A header value that carries a secret (a token, a client's
/// credentials, a session): `Debug` (of a decision an embedding app logs)
/// shows it as `Sensitive`, and HTTP/2 never indexes it.
pub(crate) fn secret_value(text: &str) -> Option<http::HeaderValue> {
    let mut value = http::HeaderValue::try_from(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Refuses a Gloo field authchain does not implement, naming it.
pub(crate) fn unsupported<T>(value: &Option<T>, place: &str, what: &str) -> Result<(), Error> {
    match value {
        Some(_) => Err(Error::config(format!("{what} is not supported by authchain")).at(place)),
        None => Ok(()),
    }
}

/// `claimsToHeaders`: claims copied to upstream headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimHeaders(Vec<(String, HeaderName, bool)>);

impl ClaimHeaders {
    pub(crate) fn new(entries: &[config::ClaimToHeader], place: &str) -> Result<Self, Error> {
        let mut out = Vec::new();
        for (i, c) in entries.iter().enumerate() {
            let header = util::header_name(&c.header, &format!("{place}[{i}].header"))?;
            if c.claim.is_empty() {
                return Err(
                    Error::config("expected a claim name").at(format!("{place}[{i}].claim"))
                );
            }
            out.push((c.claim.clone(), header, c.append));
        }
        Ok(ClaimHeaders(out))
    }

    /// The claims of `claims` present, in their headers.
    pub(crate) fn apply(&self, claims: &Map<String, Value>, mut allow: Allow) -> Allow {
        for (claim, header, append) in &self.0 {
            if let Some(value) = claims.get(claim).and_then(util::json_header_value) {
                allow = match append {
                    true => allow.append_header(header.clone(), value),
                    false => allow.set_header(header.clone(), value),
                };
            }
        }
        allow
    }

    /// Whether it copies no claim.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers, which the chain strips from what clients send.
    pub(crate) fn headers(&self) -> impl Iterator<Item = HeaderName> + '_ {
        self.0.iter().map(|(_, h, _)| h.clone())
    }
}

/// `dynamicMetadataFromClaims`: metadata key to claim.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimMetadata(Vec<(String, String)>);

impl ClaimMetadata {
    pub(crate) fn new(
        entries: &std::collections::BTreeMap<String, String>,
        place: &str,
    ) -> Result<Self, Error> {
        let mut out = Vec::new();
        for (key, claim) in entries {
            let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if claim.is_empty() || !claim.chars().all(name) {
                return Err(
                    Error::config("expected a claim name of letters, digits, `-` and `_`")
                        .at(format!("{place}.{key}")),
                );
            }
            out.push((key.clone(), claim.clone()));
        }
        Ok(ClaimMetadata(out))
    }

    /// The claims of `claims` present, in the allow's dynamic metadata.
    pub(crate) fn apply(&self, claims: &Map<String, Value>, mut allow: Allow) -> Allow {
        for (key, claim) in &self.0 {
            if let Some(value) = claims.get(claim) {
                allow.dynamic_metadata.insert(key.clone(), value.clone());
            }
        }
        allow
    }
}
