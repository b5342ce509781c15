//! Envoy's ext_authz v3 gRPC protocol for authchain.
//!
//! - [`ExtAuthzService`]: `envoy.service.auth.v3.Authorization/Check` over
//!   an authchain-core [`Engine`](authchain_core::Engine). Add it to a
//!   tonic server of your own with [`ExtAuthzService::into_server`], or run
//!   [`serve`] / [`serve_with_shutdown`], which add the gRPC health service
//!   (`grpc.health.v1`) and shut down gracefully.
//! - [`GrpcPassthroughPlugin`]: the `passThroughAuth.grpc` step, which asks
//!   another ext_authz gRPC server (see [`passthrough`]).
//! - [`convert`]: the translation both use, exposed for other transports
//!   and tests.
//!
//! This crate only translates: all policy is in the chain.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `tls` | on | TLS (rustls with aws-lc-rs) from the passthrough step to its server (`passThroughAuth.grpc.tlsConfig`, `tls`) |
//!
//! ```no_run
//! use std::sync::Arc;
//! use authchain_core::{AuthConfig, Engine, Format, PluginRegistry};
//! use authchain_grpc::{ExtAuthzService, GrpcPassthroughPlugin};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), authchain_core::BoxError> {
//! let mut registry = PluginRegistry::new();
//! authchain_grpc::register(&mut registry);
//! let engine = Arc::new(Engine::new(registry));
//! engine
//!     .load(&AuthConfig::parse(
//!         "auth.yaml",
//!         "name: default\nconfigs:\n- passThroughAuth: {grpc: {address: '127.0.0.1:9001'}}\n",
//!         Format::Yaml,
//!     )?)
//!     .await?;
//! let service = ExtAuthzService::new(engine).default_config("default");
//! authchain_grpc::serve_with_shutdown("127.0.0.1:9000".parse()?, service, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What Envoy 1.40 does with the answer
//!
//! Pinned by this crate's end-to-end tests against the real Envoy:
//!
//! - `ok_response.headers` reads only the deprecated `append` flag: unset
//!   sets the header (every client copy replaced), `true` comma-appends to
//!   an existing header and drops the entry when the header is absent;
//!   `append_action` is ignored. The four core actions are encoded
//!   accordingly (see [`convert`]).
//! - `response_headers_to_add` honours `append_action` when `append` is
//!   unset.
//! - `denied_response.headers` entries with `append` unset each add a
//!   header line (two values of one name give two lines).

pub mod convert;
pub mod passthrough;
mod server;

#[doc(inline)]
pub use convert::{EnvoyAttributes, InvalidDecision, InvalidRequest};
#[doc(inline)]
pub use passthrough::GrpcPassthroughPlugin;
#[doc(inline)]
pub use server::{
    CONFIG_ID_KEY, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_READ_TIMEOUT,
    ExtAuthzServer, ExtAuthzService, MAX_STREAMS_PER_CONNECTION, RefusedAsDeny, serve,
    serve_listener_with_shutdown, serve_with_shutdown,
};

/// Registers this crate's step kinds (`passThroughAuth.grpc`).
pub fn register(registry: &mut authchain_core::PluginRegistry) {
    registry.register_kind(GrpcPassthroughPlugin::new());
}

/// The generated Envoy types this crate speaks, re-exported so that users
/// need not name `envoy-types` themselves.
pub use envoy_types;
