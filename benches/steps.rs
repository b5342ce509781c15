//! Per-request cost of the built-in steps, called directly as the chain
//! calls them (no chain, no runtime): API key, JWT RS256 with a cached
//! key, an OAuth2 access token (a JWT, RS256), a simple Rego allow, Basic
//! with a cache hit, and request rules.
//!
//! `cargo bench -p authchain-benches --bench steps`
//!
//! With `AUTHCHAIN_STEPS_LOOP=N` the binary only runs N API-key hits and
//! exits: a fixed workload to profile, e.g. with
//! `valgrind --tool=callgrind target/release/deps/steps-*`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use authchain_core::{Answer, AuthService, AuthorizationRequest, Decision};
use authchain_steps::{ApiKeyAuth, BasicAuth, JwtAuth, OpaAuth, Rules};
use base64::Engine as _;
use criterion::{Criterion, criterion_group};
use http::{HeaderName, HeaderValue, Method};
use serde_json::json;

/// Runs a future that does not wait on anything (every step here answers
/// without I/O on these paths) to its end, with no runtime around it.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the step waited; this bench measures the ready path only"),
    }
}

/// One request's worth of a step, called as the chain calls it: the state
/// starts empty, as in a fresh request, so a step's state write pays for
/// the map it starts.
fn allow(step: &dyn AuthService, req: &mut AuthorizationRequest) -> Decision {
    req.state.clear();
    let d = match step.authorize(req) {
        Answer::Ready(answer) => answer,
        Answer::Wait(future) => ready(future),
    }
    .expect("step ok");
    assert!(d.is_allow(), "{d:?}");
    d
}

fn with(req: AuthorizationRequest, name: &'static str, value: &str) -> AuthorizationRequest {
    req.with_header(
        HeaderName::from_static(name),
        HeaderValue::try_from(value).expect("value"),
    )
}

/// The API-key step with 100 keys, and a request carrying one of them.
fn api_key_setup() -> (ApiKeyAuth, AuthorizationRequest) {
    let keys: Vec<_> = (0..100)
        .map(|i| json!({"key": format!("key-{i:04}-0123456789abcdef0123456789"), "metadata": {"user-id": format!("user-{i}")}}))
        .collect();
    let step = ApiKeyAuth::new(
        serde_json::from_value(json!({
            "keys": keys,
            "headersFromMetadataEntry": {"x-user-id": {"name": "user-id"}},
        }))
        .expect("config"),
    )
    .expect("step");
    let req = with(
        AuthorizationRequest::new(Method::GET, "/"),
        "api-key",
        "key-0042-0123456789abcdef0123456789",
    );
    (step, req)
}

fn api_key(c: &mut Criterion) {
    let (step, mut req) = api_key_setup();
    allow(&step, &mut req);
    c.bench_function("apiKeyAuth/100 keys, hit", |b| {
        b.iter(|| black_box(allow(&step, black_box(&mut req))))
    });
}

fn jwt(c: &mut Criterion) {
    let jwks = include_str!("../crates/authchain-steps/tests/keys/jwks.json");
    let step = JwtAuth::new(
        serde_json::from_value(json!({
            "issuer": "https://issuer.example.com",
            "audiences": ["ratings"],
            "jwks": {"local": {"key": jwks}},
            "claimsToHeaders": [{"claim": "sub", "header": "x-user-id"}],
        }))
        .expect("config"),
    )
    .expect("step");
    let mut req = bearer_rs256(json!({}));
    allow(&step, &mut req);
    c.bench_function("jwt/RS256 cached key", |b| {
        b.iter(|| black_box(allow(&step, black_box(&mut req))))
    });
}

/// A request with `Authorization: Bearer` and an RS256 JWT of the test
/// key `rsa-1`: alice's, for `ratings` of `https://issuer.example.com`,
/// good for an hour, with `more` claims.
fn bearer_rs256(more: serde_json::Value) -> AuthorizationRequest {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
        "../crates/authchain-steps/tests/keys/rsa.pem"
    ))
    .expect("key");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let mut claims =
        json!({"sub": "alice", "iss": "https://issuer.example.com", "aud": "ratings", "exp": exp});
    if let (Some(claims), serde_json::Value::Object(more)) = (claims.as_object_mut(), more) {
        claims.extend(more);
    }
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("token");
    with(
        AuthorizationRequest::new(Method::GET, "/"),
        "authorization",
        &format!("Bearer {token}"),
    )
}

/// `oauth2.accessTokenValidation` with a local JWKS: an RS256 access
/// token with a required scope, its `sub` to a header.
fn oauth2_access_jwt_rs256(c: &mut Criterion) {
    let jwks = include_str!("../crates/authchain-steps/tests/keys/jwks.json");
    let step = authchain_steps::oauth2::access::AccessToken::new(
        serde_json::from_value(json!({
            "jwt": {
                "localJwks": {"inlineString": jwks},
                "issuer": "https://issuer.example.com",
                "audiences": ["ratings"],
            },
            "requiredScopes": {"scope": ["ratings.read"]},
            "claimsToHeaders": [{"claim": "sub", "header": "x-user-id"}],
        }))
        .expect("config"),
        &authchain_core::BuildContext::new("bench", "oauth2", "configs[0]"),
    )
    .expect("step");
    let mut req = bearer_rs256(json!({"scope": "ratings.read ratings.write"}));
    allow(&step, &mut req);
    c.bench_function("oauth2/accessTokenValidation JWT RS256", |b| {
        b.iter(|| black_box(allow(&step, black_box(&mut req))))
    });
}

fn opa(c: &mut Criterion) {
    let step = OpaAuth::new(
        serde_json::from_value(json!({
            "query": "data.envoy.authz.allow",
            "modules": {"policy.rego": "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if {\n  input.attributes.request.http.method == \"GET\"\n  startswith(input.path, \"/ratings/\")\n}\n"},
        }))
        .expect("config"),
    )
    .expect("step");
    let mut req = with(
        with(
            AuthorizationRequest::new(Method::GET, "/ratings/1").with_host("ratings.example.com"),
            "user-agent",
            "bench/1.0",
        ),
        "accept",
        "application/json",
    );
    allow(&step, &mut req);
    c.bench_function("opaAuth/simple allow", |b| {
        b.iter(|| black_box(allow(&step, black_box(&mut req))))
    });
}

fn basic(c: &mut Criterion) {
    let step = BasicAuth::new(
        serde_json::from_value(json!({
            "htpasswd": "user:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\n",
        }))
        .expect("config"),
    )
    .expect("step");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:password")
    );
    let mut req = with(
        AuthorizationRequest::new(Method::GET, "/"),
        "authorization",
        &auth,
    );
    // The first request verifies the hash on the blocking pool; then it is cached.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let first = rt
        .block_on(step.authorize(&mut req).into_future())
        .expect("step ok");
    assert!(first.is_allow());
    c.bench_function("basicAuth/cache hit", |b| {
        b.iter(|| black_box(allow(&step, black_box(&mut req))))
    });
}

fn rules(c: &mut Criterion) {
    let step = Rules::new(
        serde_json::from_value(json!({
            "rules": [
                {"action": "deny", "methods": ["DELETE"]},
                {"action": "allow", "paths": [{"glob": "/docs/**/*.html"}]},
                {"action": "allow", "methods": ["GET"], "path": {"exact": "/ratings/1"}},
            ],
        }))
        .expect("config"),
    )
    .expect("step");
    let mut req = AuthorizationRequest::new(Method::GET, "/ratings/1");
    c.bench_function("rules/3 rules", |b| {
        b.iter(|| black_box(allow(&step, black_box(&mut req))))
    });
}

criterion_group!(
    benches,
    api_key,
    jwt,
    oauth2_access_jwt_rs256,
    opa,
    basic,
    rules
);

fn main() {
    // A fixed workload to profile (instruction counts do not drift with
    // the machine's noise), e.g. `AUTHCHAIN_STEPS_LOOP=100000 valgrind
    // --tool=callgrind target/release/deps/steps-*`: N API-key hits, then exit.
    if let Some(n) = authchain_benches::profile_loop("AUTHCHAIN_STEPS_LOOP") {
        let (step, mut req) = api_key_setup();
        for _ in 0..n {
            black_box(allow(&step, black_box(&mut req)));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
