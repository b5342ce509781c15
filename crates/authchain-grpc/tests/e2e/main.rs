//! End-to-end tests: real Envoy 1.40 → authchain-grpc → an upstream.
//!
//! Envoy comes from `./scripts/install-peers.sh` (or `AUTHCHAIN_ENVOY`);
//! without it every test here fails and says how to install it.

mod bad_input;
mod common;
mod envoy_facts;
mod envoy_grpc;
mod header_actions;
mod passthrough;
