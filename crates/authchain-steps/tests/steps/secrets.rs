//! No config or step that holds a credential prints it in `Debug`.

use authchain_steps::api_key::{ApiKeyAuth, ApiKeyConfig};
use authchain_steps::basic::{BasicAuth, BasicConfig};
use authchain_steps::hmac::{HmacAuth, HmacConfig};
use authchain_steps::jwt::{JwtAuth, JwtConfig};

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[test]
fn debug_output_holds_no_secret() {
    let api_doc = serde_json::json!({
        "keys": [{ "key": "key-s3cret-0123456789", "metadata": { "user-id": "alice" } }],
        "headersFromMetadataEntry": { "x-user-id": { "name": "user-id" } }
    });
    let api: ApiKeyConfig = from(api_doc.clone());
    let basic_doc = serde_json::json!({
        "realm": "r",
        "apr": { "users": { "alice": { "salt": "TYu6jVnr", "hashedPassword": "ZMc4.dAY/srWCwfeAr0sc1" } } }
    });
    let basic: BasicConfig = from(basic_doc.clone());
    let jwt_doc = serde_json::json!({
        "algorithms": ["HS256"],
        "jwks": { "local": { "key": "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"k\", \"alg\": \"HS256\", \"k\": \"czNjcmV0LWtleS1zM2NyZXQta2V5LXMzY3JldC1rZXk\"}]}" } }
    });
    let jwt: JwtConfig = from(jwt_doc.clone());
    // The AuthConfig documents that hold them, before they are built.
    let doc = serde_json::json!({ "name": "all", "configs": [
        { "apiKeyAuth": &api_doc }, { "basicAuth": &basic_doc }, { "jwt": &jwt_doc }
    ]});
    let configs =
        authchain_core::AuthConfig::parse("a.json", &doc.to_string(), authchain_core::Format::Json)
            .unwrap();
    let mut shown = format!("{configs:?} {api:?} {basic:?} {jwt:?}");
    shown.push_str(&format!("{:?}", ApiKeyAuth::new(api).unwrap()));
    shown.push_str(&format!("{:?}", BasicAuth::new(basic).unwrap()));
    shown.push_str(&format!("{:?}", JwtAuth::new(jwt).unwrap()));
    // hmacAuth's keys come from Secrets.
    let hmac_doc = serde_json::json!({
        "secretRefs": { "secretRefs": [{ "name": "alice-hmac" }] },
        "parametersInHeaders": {}
    });
    let secrets = authchain_core::Documents::parse(
        "s.yaml",
        "{ apiVersion: v1, kind: Secret, metadata: { name: alice-hmac }, type: extauth.solo.io/accountcredentials, stringData: { username: alice, password: hmac-s3cret } }",
        authchain_core::Format::Yaml,
    )
    .unwrap()
    .resources;
    let context = authchain_core::BuildContext::new("c", "s", "p").with_resources(&secrets, "");
    let hmac: HmacConfig = from(hmac_doc);
    shown.push_str(&format!("{hmac:?} {secrets:?}"));
    shown.push_str(&format!("{:?}", HmacAuth::new(hmac, &context).unwrap()));
    for secret in ["s3cret", "czNjcmV0", "TYu6jVnr", "ZMc4.dAY"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    // Nor as bytes.
    let bytes = format!("{:?}", &b"key-s3cret"[..]);
    let bytes = bytes.trim_end_matches(']');
    assert!(!shown.contains(bytes), "the key's bytes in {shown}");
}
