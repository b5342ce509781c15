//! Gloo's RequiredHeader example plugin, through the public API: the
//! manifest from its docs, unchanged.

#![allow(clippy::unwrap_used)]

use authchain_core::{
    AuthConfig, AuthorizationRequest, Decision, Engine, Format, HeaderAction, PluginRegistry,
};
use authchain_examples::required_header::{MATCHED_HEADER, RequiredHeaderPlugin};
use http::{HeaderName, HeaderValue, Method};

const MANIFEST: &str = include_str!("../required_header.yaml");

async fn engine(text: &str) -> Result<Engine, authchain_core::Error> {
    let mut registry = PluginRegistry::new();
    registry.register(RequiredHeaderPlugin);
    let engine = Engine::new(registry);
    engine
        .load(&AuthConfig::parse(
            "required_header.yaml",
            text,
            Format::Yaml,
        )?)
        .await?;
    Ok(engine)
}

fn request(values: &[&'static str]) -> AuthorizationRequest {
    let mut req = AuthorizationRequest::new(Method::GET, "/");
    for v in values {
        req.headers.append(
            HeaderName::from_static("my-header"),
            HeaderValue::from_static(v),
        );
    }
    req
}

async fn decide(mut req: AuthorizationRequest) -> Decision {
    let engine = engine(MANIFEST).await.unwrap();
    let generation = engine.current();
    let chain = generation.chain("gloo-system.plugin-auth").unwrap();
    chain.authorize(&mut req).await
}

#[tokio::test]
async fn an_allowed_value_is_allowed_and_marked() {
    for v in ["foo", "bar"] {
        let Decision::Allow(allow) = decide(request(&[v])).await else {
            panic!("{v} must be allowed")
        };
        assert_eq!(allow.headers.len(), 1);
        assert_eq!(allow.headers[0].name, MATCHED_HEADER);
        assert_eq!(allow.headers[0].value, "true");
        assert_eq!(
            allow.headers[0].action,
            HeaderAction::OverwriteIfExistsOrAdd
        );
    }
    // Any of several values may match.
    assert!(decide(request(&["nope", "bar"])).await.is_allow());
}

#[tokio::test]
async fn another_value_or_no_header_is_403() {
    let cases = [
        ("another value", request(&["baz"])),
        ("no header", request(&[])),
        ("an allowed value in another case", request(&["FOO"])),
    ];
    for (name, req) in cases {
        assert_eq!(decide(req).await, Decision::unauthorized(), "case {name}");
    }
}

/// Values are compared byte for byte, as Gloo's Go plugin compares its
/// strings: a UTF-8 value a header carries as raw bytes matches the same
/// text in the config; a near miss (padding, another byte) does not.
#[tokio::test]
async fn values_are_compared_as_bytes() {
    let config = MANIFEST.replace("- bar", "- café");
    assert_ne!(config, MANIFEST);
    let engine = engine(&config).await.unwrap();
    let generation = engine.current();
    let chain = generation.chain("gloo-system.plugin-auth").unwrap();
    let with = |bytes: &[u8]| {
        request(&[]).with_header(
            HeaderName::from_static("my-header"),
            HeaderValue::from_bytes(bytes).unwrap(),
        )
    };
    assert!(
        chain
            .authorize(&mut with("café".as_bytes()))
            .await
            .is_allow()
    );
    for miss in [&b"caf\xe9"[..], b"caf\xc3\xa9 ", b"fo", b"foo\xff"] {
        assert_eq!(
            chain.authorize(&mut with(miss)).await,
            Decision::unauthorized(),
            "{miss:?}"
        );
    }
}

#[tokio::test]
async fn a_client_cannot_send_the_match_marker_itself() {
    let mut req = request(&["baz"]);
    req.headers
        .insert(MATCHED_HEADER, HeaderValue::from_static("true"));
    let engine = engine(MANIFEST).await.unwrap();
    let generation = engine.current();
    let chain = generation.chain("gloo-system.plugin-auth").unwrap();
    assert_eq!(chain.stripped_headers(), [MATCHED_HEADER]);
    assert!(!chain.authorize(&mut req).await.is_allow());
    assert!(!req.headers.contains_key(MATCHED_HEADER));
}

#[tokio::test]
async fn bad_configs_name_their_place() {
    let values = "AllowedValues:\n        - foo\n        - bar\n";
    // (case, what the manifest has instead, and of what; the error)
    let cases = [
        (
            "values that are no list",
            (values, "AllowedValues: secret-value\n"),
            "required_header.yaml: spec.configs[0].pluginAuth.config.AllowedValues: invalid type: string, expected a sequence",
        ),
        (
            "no values",
            (values, "AllowedValues: []\n"),
            "required_header.yaml: spec.configs[0].pluginAuth.config.AllowedValues: expected at least one value",
        ),
        (
            "a header that is no header name",
            ("RequiredHeader: my-header", "RequiredHeader: \"my header\""),
            "required_header.yaml: spec.configs[0].pluginAuth.config.RequiredHeader: not a valid header name",
        ),
        (
            "a plugin name no one registered",
            ("name: RequiredHeader", "name: RequiredHeaders"),
            "required_header.yaml: spec.configs[0].pluginAuth.name: no plugin named 'RequiredHeaders' is registered (registered: RequiredHeader)",
        ),
    ];
    for (name, (from, to), want) in cases {
        let text = MANIFEST.replace(from, to);
        assert_ne!(text, MANIFEST, "case {name}: {from:?} is in the manifest");
        let error = engine(&text).await.unwrap_err().to_string();
        assert_eq!(error, want, "case {name}");
    }
}
