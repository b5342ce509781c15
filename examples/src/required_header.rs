//! Gloo's `RequiredHeader` example plugin, in Rust.
//!
//! Its config is Gloo's, unchanged:
//!
//! ```yaml
//! pluginAuth:
//!   name: RequiredHeader
//!   config:
//!     RequiredHeader: my-header
//!     AllowedValues: [foo, bar]
//! ```
//!
//! A request whose `my-header` has an allowed value is allowed, and the
//! upstream request gets `matched-allowed-headers: true`. A missing header
//! or another value is a 403.

use std::sync::Arc;

use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, BuildContext, Decision, Error, ExtAuthPlugin,
};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// The header the plugin adds upstream on a match.
pub const MATCHED_HEADER: HeaderName = HeaderName::from_static("matched-allowed-headers");

/// The plugin's config, with Gloo's field names.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Config {
    /// The header that must be present.
    pub required_header: String,
    /// The values it may have.
    pub allowed_values: Vec<String>,
}

/// The plugin: register it with `PluginRegistry::register(RequiredHeaderPlugin)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequiredHeaderPlugin;

impl ExtAuthPlugin for RequiredHeaderPlugin {
    type Config = Config;

    fn name(&self) -> &str {
        "RequiredHeader"
    }

    fn build(&self, config: Config, _: &BuildContext<'_>) -> Result<Arc<dyn AuthService>, Error> {
        let header = HeaderName::try_from(config.required_header)
            .map_err(|_| Error::config("not a valid header name").at("RequiredHeader"))?;
        if config.allowed_values.is_empty() {
            return Err(Error::config("expected at least one value").at("AllowedValues"));
        }
        Ok(Arc::new(RequiredHeader {
            header,
            allowed: config.allowed_values,
        }))
    }
}

/// The service the plugin builds.
#[derive(Debug)]
pub struct RequiredHeader {
    header: HeaderName,
    // A few values: a scan is quicker than hashing.
    allowed: Vec<String>,
}

impl AuthService for RequiredHeader {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        // Bytes against bytes, as Gloo's Go plugin compares its strings: a
        // value is allowed when it is exactly one of the configured ones.
        let matched = request
            .headers
            .get_all(&self.header)
            .iter()
            .any(|v| self.allowed.iter().any(|a| v == a.as_str()));
        if !matched {
            return Decision::unauthorized().into();
        }
        Allow::new()
            .set_header(MATCHED_HEADER, HeaderValue::from_static("true"))
            .into()
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        // Upstream trusts this header, so a client must not send it.
        vec![MATCHED_HEADER]
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        // It calls no server: a failure of it is no outage to ride out.
        Some(authchain_core::CALLS_NO_SERVER)
    }
}
