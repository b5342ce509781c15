//! `oauth2.oidcAuthorizationCode`: logging users in.

use authchain_core::{Answer, AuthService, AuthorizationRequest, BuildContext, Error};

use super::config::OidcAuthorizationCode;

/// The `oidcAuthorizationCode` step.
#[derive(Debug)]
pub struct Oidc {}

impl Oidc {
    /// Builds the step; reaches nothing.
    pub fn new(config: OidcAuthorizationCode, context: &BuildContext<'_>) -> Result<Self, Error> {
        let _ = (config, context);
        Err(Error::config("oidcAuthorizationCode is being built"))
    }
}

impl AuthService for Oidc {
    fn authorize<'a>(&'a self, _: &'a mut AuthorizationRequest) -> Answer<'a> {
        Err(Error::step("unreachable")).into()
    }
}
