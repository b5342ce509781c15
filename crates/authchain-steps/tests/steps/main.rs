//! Integration tests of the built-in steps, each through
//! `AuthConfig::parse` + `Engine::load`, as a user configures them.

#![allow(clippy::unwrap_used)]

mod api_key;
mod basic;
mod cache;
mod common;
mod examples;
mod hmac;
mod jwt;
mod ldap;
mod oauth2_access;
mod oauth2_oidc;
mod opa;
mod rules;
mod secrets;
