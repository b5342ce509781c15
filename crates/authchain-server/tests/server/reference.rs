//! The book's AuthConfig reference (`docs/src/reference.md`) lists every
//! field of every step kind the binary brings: each kind is built with an
//! unknown field, and the fields its error names must all be on the page.

use authchain_core::{AuthConfig, Engine, Format};

/// The fields a config type names when it refuses `__probe__`.
async fn fields(step: &str) -> Vec<String> {
    let yaml = format!("name: probe\nconfigs:\n- {step}\n");
    let configs = AuthConfig::parse("probe.yaml", &yaml, Format::Yaml).unwrap();
    let e = Engine::new(authchain_server::default_registry())
        .load(&configs)
        .await
        .unwrap_err()
        .to_string();
    let list = e
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("{step}: {e}"));
    list.split(", ")
        .map(|f| f.trim().trim_matches('`').to_owned())
        .collect()
}

#[tokio::test]
async fn the_reference_lists_every_field_of_every_kind() {
    let page =
        std::fs::read_to_string(authchain_testkit::workspace_root().join("docs/src/reference.md"))
            .unwrap();
    let probes = [
        "rules: { __probe__: 1 }",
        "apiKeyAuth: { __probe__: 1 }",
        "basicAuth: { __probe__: 1 }",
        "hmacAuth: { __probe__: 1 }",
        "jwt: { __probe__: 1 }",
        "ldap: { __probe__: 1 }",
        "opaAuth: { __probe__: 1 }",
        "passThroughAuth: { grpc: { __probe__: 1 } }",
        "passThroughAuth: { http: { __probe__: 1 } }",
        "pluginAuth: { __probe__: 1 }",
        "oauth2: { __probe__: 1 }",
        "oauth2: { oidcAuthorizationCode: { __probe__: 1 } }",
        "oauth2: { oidcAuthorizationCode: { session: { __probe__: 1 } } }",
        "oauth2: { accessTokenValidation: { __probe__: 1 } }",
    ];
    for probe in probes {
        let fields = fields(probe).await;
        eprintln!("PROBE {probe}: {}", fields.join(", "));
        assert!(fields.len() >= 2, "{probe}: {fields:?}");
        for field in fields {
            assert!(
                page.contains(&format!("`{field}`")),
                "docs/src/reference.md does not list `{field}` ({probe})"
            );
        }
    }
    // The AuthConfig's own fields too.
    let configs = AuthConfig::parse(
        "probe.yaml",
        "name: p\n__probe__: 1\nconfigs: []\n",
        Format::Yaml,
    );
    let e = match configs {
        Err(e) => e.to_string(),
        Ok(configs) => Engine::new(authchain_server::default_registry())
            .load(&configs)
            .await
            .unwrap_err()
            .to_string(),
    };
    let list = e
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("{e}"));
    for field in list.split(", ").map(|f| f.trim().trim_matches('`')) {
        assert!(
            page.contains(&format!("`{field}`")),
            "no `{field}` (AuthConfig)"
        );
    }
}
