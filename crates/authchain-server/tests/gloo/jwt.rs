//! `jwt: {}` behind Envoy's `jwt_authn` filter, set up as Gloo sets it
//! up: a missing or failed token passes the filter, and the AuthConfig's
//! step is what refuses it.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::{Stack, config_files};

const SECRET: &[u8] = b"a-test-only-hmac-secret-of-32-by";

/// The JWKS Envoy verifies with: `SECRET` as an HS256 key.
pub(crate) fn hs256_jwks() -> String {
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    json!({ "keys": [{ "kty": "oct", "alg": "HS256", "kid": "k1", "k": k }] }).to_string()
}

/// A token for `sub` with `extra` claims, signed with [`SECRET`].
pub(crate) fn token(sub: &str, extra: &[(&str, &str)]) -> String {
    signed(SECRET, sub, extra)
}

fn signed(secret: &[u8], sub: &str, extra: &[(&str, &str)]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let mut claims = json!({ "sub": sub, "exp": exp });
    for (k, v) in extra {
        claims[*k] = json!(v);
    }
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn the_empty_jwt_step_allows_what_envoy_verified_and_refuses_the_rest() {
    // Gloo's userIdHeader shows which user the step took from Envoy.
    let jwks = hs256_jwks();
    let stack = Stack::start(
        &format!(
            "userIdHeader: x-user-id\n{}",
            config_files(&["jwt-placeholder.yaml"])
        ),
        &[("/", "gloo-system.jwt-placeholder")],
        |b| b.jwt_authn(&jwks),
    )
    .await;
    let authchain = &stack.authchain;

    let good = format!("Bearer {}", token("alice", &[]));
    let reply = stack.get("/", &[("authorization", good.as_str())]).await;
    assert_eq!(reply.status, 200, "{}", authchain.log());
    let seen = reply.echoed().unwrap();
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);
    let bob = format!("Bearer {}", token("bob", &[]));
    let reply = stack
        .get(
            "/",
            &[("authorization", bob.as_str()), ("x-user-id", "alice")],
        )
        .await;
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), ["bob"]);

    // The HTTP transports carry no filter metadata: a good token there is
    // still a 401.
    let reply = authchain
        .http_check(
            "gloo-system.jwt-placeholder",
            "/",
            &[("authorization", good.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);

    let forged = format!(
        "Bearer {}",
        signed(b"another-secret-of-thirty-two-byt", "alice", &[])
    );
    let cases = [
        ("no token", vec![]),
        (
            "a token Envoy could not verify",
            vec![("authorization", forged.as_str())],
        ),
        ("not a token", vec![("authorization", "Bearer not-a-jwt")]),
        // What a client may try instead of a token: metadata is Envoy's.
        (
            "a payload in a header",
            vec![("x-envoy-jwt-payload", r#"{"principal":{"sub":"alice"}}"#)],
        ),
    ];
    for (name, headers) in cases {
        let reply = stack.get("/", &headers).await;
        assert_eq!(reply.status, 401, "case {name}");
        assert_eq!(
            reply.header_values("www-authenticate"),
            ["Bearer"],
            "case {name}"
        );
    }
}
