//! Gloo AuthConfigs as Gloo users write them, run by the real `authchain`
//! binary behind the real proxy. `manifests/` holds the manifests, each
//! retyped from Gloo's API and guides; the tests read them unchanged.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../server/support.rs"]
mod support;

mod api_key;
mod basic;
mod check;
mod dynamic_metadata;
mod jwt;
mod opa;
mod user_id_header;

/// Where a manifest of `manifests/` is.
pub(crate) fn manifest_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/gloo/manifests")
        .join(name)
}
