//! Every YAML example in `examples-config/` loads, and does what its
//! comment says.

use base64::Engine as _;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::*;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/examples-config/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn token(claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let key = EncodingKey::from_rsa_pem(include_bytes!("../keys/rsa.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600
}

#[tokio::test]
async fn every_example_loads() {
    let dir = format!("{}/examples-config", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        load(&text)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 7);
}

#[tokio::test]
async fn rules_example() {
    let chain = chain(&example("rules.yaml")).await;
    assert!(
        chain
            .authorize(&mut req(Method::GET, "/ratings/1"))
            .await
            .is_allow()
    );
    assert_eq!(
        status(&chain.authorize(&mut req(Method::GET, "/ratings/2")).await),
        403
    );
}

#[tokio::test]
async fn api_key_example() {
    let chain = chain(&example("api-key.yaml")).await;
    for (header, value, user) in [
        (
            "api-key",
            "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
            "alice",
        ),
        (
            "authorization",
            "Bearer ZDNlYjJmYjMtMjhiYi00ZDM0LWFkYjItM2Q2ZmFjMmM0YjQ1",
            "bob",
        ),
    ] {
        let d = chain.authorize(&mut get_with("/", header, value)).await;
        assert_eq!(upstream(&d, "x-user-id").as_deref(), Some(user), "{header}");
    }
}

#[tokio::test]
async fn basic_example_is_a_gloo_manifest() {
    let engine = load(&example("basic.yaml")).await.unwrap();
    let generation = engine.current();
    let chain = generation
        .chain("gloo-system.basic-auth")
        .expect("named namespace.name");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:password")
    );
    let d = chain
        .authorize(&mut get_with("/", "authorization", &auth))
        .await;
    assert_eq!(upstream(&d, "x-user-id").as_deref(), Some("user"));
}

#[tokio::test]
async fn hmac_example_signs_the_request_line_and_date() {
    use hmac::{KeyInit, Mac};
    let engine = load(&example("hmac.yaml")).await.unwrap();
    let generation = engine.current();
    let chain = generation.chain("gloo-system.hmac-auth").unwrap();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"alice-shared-key").unwrap();
    mac.update(format!("date: {date}\nGET /ratings/1 HTTP/1.1").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let auth = format!(
        "hmac username=\"alice\", algorithm=\"hmac-sha256\", headers=\"date @request-target\", signature=\"{signature}\""
    );
    let mut r = get_with("/ratings/1", "authorization", &auth).with_header(
        http::header::DATE,
        http::HeaderValue::try_from(date).unwrap(),
    );
    let d = chain.authorize(&mut r).await;
    assert_eq!(
        d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
        "alice"
    );
}

#[tokio::test]
async fn jwt_example() {
    let chain = chain(&example("jwt.yaml")).await;
    let t = token(
        json!({"sub": "alice", "iss": "https://issuer.example.com", "aud": "ratings", "exp": exp(), "org": {"id": "acme"}}),
    );
    let d = chain
        .authorize(&mut get_with("/", "authorization", &format!("Bearer {t}")))
        .await;
    assert_eq!(upstream(&d, "x-org-id").as_deref(), Some("acme"));
}

#[tokio::test]
async fn jwt_then_opa_example_reads_the_claims_from_state() {
    let chain = chain(&example("jwt-then-opa.yaml")).await;
    let bearer = |sub: &str| format!("Bearer {}", token(json!({"sub": sub, "exp": exp()})));
    // (case, the token's subject, method, the status, the role upstream)
    let cases = [
        ("bob reads", Some("bob"), Method::GET, 200, Some("reader")),
        (
            "alice writes",
            Some("alice"),
            Method::POST,
            200,
            Some("writer"),
        ),
        ("bob cannot write", Some("bob"), Method::POST, 403, None),
        ("no token", None, Method::GET, 401, None),
    ];
    for (name, sub, method, want, role) in cases {
        let mut r = req(method, "/");
        if let Some(sub) = sub {
            r = r.with_header(
                http::header::AUTHORIZATION,
                http::HeaderValue::try_from(bearer(sub)).unwrap(),
            );
        }
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
        assert_eq!(upstream(&d, "x-role").as_deref(), role, "case {name}");
        if want == 403 {
            assert_eq!(d.as_deny().unwrap().body, "forbidden", "case {name}");
        }
    }
}
