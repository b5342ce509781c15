//! The `authchain` binary as a user runs it: a child process with a config
//! file, driven over its gRPC, HTTP and admin listeners and by signals.

#![allow(clippy::unwrap_used)]

mod check;
mod decision_log;
mod lifecycle;
mod reference;
mod reload;
mod slow;
mod support;
