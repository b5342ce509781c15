//! A config file's text, as YAML and as JSON: read as AuthConfigs (with
//! their Secrets and ConfigMaps) and built with every built-in step kind,
//! outside a runtime as `authchain check` does, and read as the server's
//! settings. Any text may be refused, with an error; none may panic.

#![no_main]

use std::sync::OnceLock;

use authchain_core::{Documents, Format, Generation, PluginRegistry};
use authchain_server::Loaded;
use libfuzzer_sys::fuzz_target;

fn registry() -> &'static PluginRegistry {
    static REGISTRY: OnceLock<PluginRegistry> = OnceLock::new();
    REGISTRY.get_or_init(authchain_server::default_registry)
}

fuzz_target!(|text: &str| {
    for format in [Format::Yaml, Format::Json] {
        match Documents::parse("fuzz", text, format) {
            Ok(documents) => {
                let configs = documents.into_configs();
                if let Err(e) = Generation::build(registry(), &configs, 1) {
                    let _ = e.to_string();
                }
                for config in &configs {
                    let _ = config.to_yaml();
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if let Err(e) = Loaded::from_text("fuzz.yaml", text, None) {
        let _ = e.to_string();
    }
});
