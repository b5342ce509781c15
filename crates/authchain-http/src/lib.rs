//! authchain over HTTP.
//!
//! - [`AuthChainLayer`]: a tower layer that runs an authchain chain in
//!   front of any `tower::Service<http::Request<B>>` (an axum `Router`
//!   included).
//! - [`CheckServer`]: the HTTP check server behind Envoy's HTTP-service
//!   ext_authz, nginx `auth_request`, Traefik ForwardAuth and Caddy
//!   `forward_auth`; [`check`] says what it reads and answers.
//! - [`HttpPassthroughPlugin`]: the `passThroughAuth.http` step, Gloo's
//!   "Http Passthrough Auth"; [`register`] adds it to a registry.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `axum` | yes | [`AuthContext`] as an axum extractor; the peer address from axum's `ConnectInfo` |

pub mod check;
mod head;
mod layer;
pub mod passthrough;
mod server;

#[doc(inline)]
pub use check::{CheckConfig, ForwardedHeaders, HEADERS_TO_REMOVE, Refused, TrustedProxy};
#[doc(inline)]
pub use passthrough::HttpPassthroughPlugin;
#[doc(inline)]
pub use server::{CheckServer, DEFAULT_BODY_LIMIT, DEFAULT_READ_TIMEOUT};

/// Registers this crate's step kinds (`passThroughAuth.http`).
pub fn register(registry: &mut authchain_core::PluginRegistry) {
    registry.register_kind(HttpPassthroughPlugin);
}

#[doc(inline)]
pub use layer::{
    AuthChain, AuthChainLayer, AuthContext, ResponseFuture, apply_response_headers, deny_response,
};
