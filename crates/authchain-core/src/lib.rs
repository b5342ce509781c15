//! The authchain engine: the request and decision model, pluggable auth
//! steps, the chain executor and hot-swappable config generations. No
//! sockets: the adapter crates (`authchain-grpc`, `authchain-http`) carry
//! requests in and decisions out.
//!
//! A request to authorize ([`AuthorizationRequest`]) runs through a
//! [`Chain`] of steps ([`AuthService`]s). Steps share a `state` map and
//! mutate headers; the chain answers a [`Decision`]: allow with the merged
//! mutations, or deny with a status, headers and body. Steps come from
//! plugins ([`ExtAuthPlugin`]) with typed configs, found by name in a
//! [`PluginRegistry`]; configs are Gloo `AuthConfig`s in YAML or JSON
//! ([`AuthConfig`]), built into a [`Generation`] that an [`Engine`] swaps
//! atomically on reload.
//!
//! ```
//! use authchain_core::{decide_fn, plugin_fn, AuthConfig, AuthorizationRequest, Decision,
//!     Engine, Format, PluginRegistry};
//! use std::sync::Arc;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { path: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), authchain_core::Error> {
//! let mut registry = PluginRegistry::new();
//! registry.register(plugin_fn("OnlyPath", |c: Config, _| {
//!     Ok(Arc::new(decide_fn(move |req| {
//!         Ok(if req.path_only() == c.path { Decision::authorized() } else { Decision::unauthorized() })
//!     })))
//! }));
//!
//! let yaml = r#"
//! name: ratings
//! configs:
//! - pluginAuth: { name: OnlyPath, config: { path: /ratings/1 } }
//! "#;
//! let engine = Engine::new(registry);
//! engine.load(&AuthConfig::parse("inline", yaml, Format::Yaml)?).await?;
//!
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
//! One verb runs a chain, [`Chain::authorize`], and one method makes a
//! step, [`AuthService::authorize`]. The executor needs a Tokio runtime
//! with its timer enabled (step timeouts, the chain deadline and the
//! bound on a step's start are Tokio timers). What the adapter crates need beyond that is in [`transport`].
//!
//! # Metrics
//!
//! Through the `metrics` facade, registered when a chain is built (install
//! a recorder before loading configs):
//!
//! | name | labels |
//! |---|---|
//! | `authchain_step_decisions_total` | `config`, `step`, `result` = `ok`, `denied`, `error`, `failure_mode_allowed` |
//! | `authchain_chain_decisions_total` | `config`, `result` = `ok`, `denied`, `error` |
//! | `authchain_chain_duration_seconds` | `config` (histogram) |
//! | `authchain_deny_status_replaced_total` | `config`: denies whose status was no redirect, 4xx or 5xx, answered 403 |
//! | `authchain_shadow_disagreements_total` | `config`, `shadow`, `kind` = `allow_deny`, `deny_allow`, `status`, `identity` ([`shadow`]) |
//! | `authchain_shadow_dropped_total` | `config`, `shadow`: requests not shadowed, every place taken |

pub mod cache;
mod chain;
pub mod config;
mod decision;
pub mod decision_log;
mod error;
mod expr;
mod generation;
mod limit;
mod merge;
pub mod path;
mod plugin;
mod request;
pub mod resources;
mod service;
pub mod shadow;
pub mod state;
pub mod tls;
pub mod transport;

#[doc(no_inline)]
pub use async_trait::async_trait;

#[doc(inline)]
pub use cache::{Attribute, CacheSettings};
#[doc(inline)]
pub use chain::{
    Chain, ChainBuilder, ChainStep, DEFAULT_DEADLINE, FAILURE_MODE_ALLOWED_HEADER, MAX_EXPR_STEPS,
    is_failure_mark,
};
#[doc(inline)]
pub use config::{AuthConfig, ConfigDuration, Documents, Format, MAX_DURATION};
#[doc(inline)]
pub use decision::{Allow, Decision, Deny, HeaderAction, HeaderMutation, UserInfo};
#[doc(inline)]
pub use error::{BoxError, Error};
#[doc(inline)]
pub use generation::{Engine, Generation};
#[doc(inline)]
pub use path::AmbiguousPaths;
#[doc(inline)]
pub use plugin::{
    BuildContext, ExtAuthPlugin, PluginFn, PluginRegistry, deserialize_config, plugin_fn,
};
#[doc(inline)]
pub use request::{AuthorizationRequest, Peer};
#[doc(inline)]
pub use service::{
    Answer, AuthService, CALLS_NO_SERVER, DecideFn, Lifecycle, ServiceFn, decide_fn, service_fn,
};
pub use state::State;
