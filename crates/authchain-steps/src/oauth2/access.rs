//! `oauth2.accessTokenValidation`: a request's access token, checked.

use authchain_core::{Answer, AuthService, AuthorizationRequest, BuildContext, Error};

use super::config::AccessTokenValidation;

/// The `accessTokenValidation` step.
#[derive(Debug)]
pub struct AccessToken {}

impl AccessToken {
    /// Builds the step; reaches nothing.
    pub fn new(config: AccessTokenValidation, context: &BuildContext<'_>) -> Result<Self, Error> {
        let _ = (config, context);
        Err(Error::config("accessTokenValidation is being built"))
    }
}

impl AuthService for AccessToken {
    fn authorize<'a>(&'a self, _: &'a mut AuthorizationRequest) -> Answer<'a> {
        Err(Error::step("unreachable")).into()
    }
}
