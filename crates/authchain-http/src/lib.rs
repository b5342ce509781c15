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
//! | `server` | yes | [`CheckServer`] and [`check`]: a hyper server |
//! | `passthrough` | yes | [`HttpPassthroughPlugin`]: a hyper client with rustls |
//!
//! Without the defaults the crate is the layer alone, with no server, no
//! client and no TLS: `authchain-http = { version = "0.1",
//! default-features = false, features = ["axum"] }`.

#[cfg(feature = "server")]
pub mod check;
mod head;
mod layer;
#[cfg(feature = "passthrough")]
pub mod passthrough;
#[cfg(feature = "server")]
mod server;

#[cfg(feature = "server")]
#[doc(inline)]
pub use check::{CheckConfig, ForwardedHeaders, HEADERS_TO_REMOVE, Refused, TrustedProxy};
#[cfg(feature = "passthrough")]
#[doc(inline)]
pub use passthrough::HttpPassthroughPlugin;
#[cfg(feature = "server")]
#[doc(inline)]
pub use server::{CheckServer, DEFAULT_BODY_LIMIT};

#[doc(inline)]
pub use head::DEFAULT_READ_TIMEOUT;

/// Registers this crate's step kinds (`passThroughAuth.http`).
#[cfg(feature = "passthrough")]
pub fn register(registry: &mut authchain_core::PluginRegistry) {
    registry.register_kind(HttpPassthroughPlugin);
}

#[doc(inline)]
pub use layer::{
    AuthChain, AuthChainLayer, AuthContext, ResponseFuture, apply_response_headers, deny_response,
};
