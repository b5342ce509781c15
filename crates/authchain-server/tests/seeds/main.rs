//! The seed scenarios of `examples/seeds/`, run as a user runs them: the
//! real `authchain` binary with the scenario's `authchain.yaml`, the real
//! proxy with the scenario's proxy config, an echo server as the app and,
//! for the passthrough seeds, an independent auth server.
//!
//! The files are read at test time and changed in one documented way
//! only ([`seed::ports`]): the fixed ports they document (proxy 8080, app
//! 8081, authchain 9001/9002/9091, independent auth server 9100) become
//! ports chosen at run time, and the proxy's own port becomes what
//! testkit needs to pick it (Envoy `port_value: 0`, read back; nginx and
//! Caddy `{{port}}`). A missing proxy fails with its install hint.
//!
//! `readme.rs` checks that the top-level README shows every seed file
//! verbatim; `check.rs` that `authchain check` accepts every seed config.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../server/support.rs"]
mod support;

mod caddy;
mod check;
mod envoy_grpc;
mod envoy_http;
mod login;
mod nginx;
mod passthrough_grpc;
mod passthrough_http;
mod readme;
mod seed;
