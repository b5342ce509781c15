//! The `authchain` server: one config file, Envoy ext_authz over gRPC and
//! the HTTP check server (Envoy HTTP service, nginx `auth_request`,
//! Traefik ForwardAuth, Caddy `forward_auth`), hot reload, Prometheus
//! metrics, a decision cache, load shedding and graceful shutdown.
//!
//! ```sh
//! authchain serve --config authchain.yaml   # or no --config: the embedded default
//! authchain check --config authchain.yaml   # build everything, serve nothing
//! authchain default-config                  # the documented default, to copy
//! ```
//!
//! The config file is described in [`settings`]; its AuthConfigs are
//! Gloo's (see `authchain-core`), with an optional `cache` block (see
//! [`authchain_core::cache`]).
//!
//! # Reload
//!
//! When the config file or an AuthConfig file it names changes (it watches
//! their directories, so an editor's rename-save and a Kubernetes ConfigMap
//! swap count), and on SIGHUP, the server reads everything again and builds
//! and starts a new generation. On any error the serving generation stays,
//! every problem is logged with its place, and
//! `authchain_reloads_total{result="error"}` counts it; on success the log
//! says `got new config` with the generation number. Checks in flight
//! finish on the generation they began with; none fails because of a
//! reload. Listener, limit and log settings take effect at the next start.
//! SIGHUP also reopens the decision log's file (after a log rotation). A
//! SIGHUP while the server starts is such a reload once it serves.
//!
//! # Admin endpoints
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text: the metrics below, and the transports' own |
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 once the first generation serves (and a line per step that could not start yet: it fails its own requests and keeps trying), 503 before and while shutting down |
//!
//! | metric | labels |
//! |---|---|
//! | `authchain_step_decisions_total` | `config`, `step`, `result` = `ok`, `denied`, `error`, `failure_mode_allowed` |
//! | `authchain_chain_decisions_total` | `config`, `result` = `ok`, `denied`, `error` |
//! | `authchain_chain_duration_seconds` | `config` (histogram) |
//! | `authchain_cache_lookups_total` | `config`, `result` = `hit`, `miss`, `pass` (the chain runs for the request: its key's last answer was for its request alone, or a concurrent one set a cookie) |
//! | `authchain_reloads_total` | `result` = `ok`, `error` |
//! | `authchain_config_generation` | the generation serving (gauge) |
//! | `authchain_shed_total` | `transport` = `grpc`, `http` |
//!
//! # Load shedding and shutdown
//!
//! At most `maxConcurrentChecks` checks run at once on each listener;
//! one more is answered at once with a deny: over gRPC 503 with
//! `RESOURCE_EXHAUSTED` in the `CheckResponse`, which Envoy passes on as
//! 503 whatever its `failure_mode_allow`; over HTTP 429, which no proxy
//! takes for a failure of the auth server. SIGTERM or SIGINT: `/readyz` turns 503, the
//! check listeners go on accepting for `shutdownDelay` (0 s) and then
//! stop, checks in flight finish within `shutdownGrace`, and the process
//! exits 0.
//!
//! # Your own server
//!
//! A `main` of yours registers its plugins and runs this same server and
//! command line with [`main_with`], or just the server with [`Server`]
//! (`examples/custom_server.rs`).

mod admin;
mod cli;
mod decision_log;
mod logging;
mod server;
pub mod settings;

use authchain_core::PluginRegistry;

#[doc(inline)]
pub use cli::main_with;
#[doc(inline)]
pub use server::{ServeError, Server};
#[doc(inline)]
pub use settings::{DEFAULT_CONFIG, Loaded, Settings};

/// A registry with every built-in step kind: `apiKeyAuth`, `basicAuth`,
/// `hmacAuth`, `jwt`, `ldap`, `oauth2`, `opaAuth`, `rules`, and
/// `passThroughAuth` over gRPC and HTTP.
pub fn default_registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    authchain_steps::register(&mut registry);
    authchain_http::register(&mut registry);
    authchain_grpc::register(&mut registry);
    registry
}
