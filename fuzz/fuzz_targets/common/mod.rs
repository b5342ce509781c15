//! What the check targets share: a runtime and an engine serving the
//! project's example AuthConfigs, built once per fuzzing process.

#![allow(dead_code)] // each target uses its part

use std::sync::{Arc, OnceLock};

use authchain_core::{Documents, Engine, Format};

/// The AuthConfigs a check may select, by name; none reaches the network.
pub const CONFIGS: &[&str] = &[
    "api-keys",
    "basic-auth",
    "hmac-auth",
    "jwt",
    "ratings",
    "opa-istio",
    "ratings-rules",
    "oauth-jwt-validation",
    "no-such-config",
];

const FILES: &[&str] = &[
    include_str!("../../../crates/authchain-steps/examples-config/api-key.yaml"),
    include_str!("../../../crates/authchain-steps/examples-config/basic.yaml"),
    include_str!("../../../crates/authchain-steps/examples-config/hmac.yaml"),
    include_str!("../../../crates/authchain-steps/examples-config/jwt.yaml"),
    include_str!("../../../crates/authchain-steps/examples-config/jwt-then-opa.yaml"),
    include_str!("../../../crates/authchain-steps/examples-config/opa.yaml"),
    include_str!("../../../crates/authchain-steps/examples-config/rules.yaml"),
    include_str!(
        "../../../crates/authchain-server/tests/gloo/manifests/oauth2-jwt-local-jwks.yaml"
    ),
];

/// The runtime checks run on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The engine, serving every AuthConfig of [`FILES`].
pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut documents = Documents::default();
            for (i, text) in FILES.iter().enumerate() {
                let read = Documents::parse(&format!("file {i}"), text, Format::Yaml)
                    .unwrap_or_else(|e| panic!("file {i}: {e}"));
                documents
                    .extend(read)
                    .unwrap_or_else(|e| panic!("file {i}: {e}"));
            }
            let configs = documents.into_configs();
            let engine = Arc::new(Engine::new(authchain_server::default_registry()));
            runtime()
                .block_on(engine.load(&configs))
                .unwrap_or_else(|e| panic!("loading the configs: {e}"));
            engine
        })
        .clone()
}

/// The config name `pick` selects.
pub fn config(pick: u8) -> &'static str {
    CONFIGS[usize::from(pick) % CONFIGS.len()]
}
