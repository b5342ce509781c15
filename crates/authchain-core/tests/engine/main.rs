//! Integration tests of the engine: the chain rules, config documents and
//! generations, through the public API only.

#![allow(clippy::unwrap_used)]

mod cache;
mod chain;
mod config;
mod decision_log;
mod generation;
mod security;
mod shadow;
mod support;
