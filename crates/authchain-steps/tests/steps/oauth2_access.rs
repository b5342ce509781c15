//! `oauth2.accessTokenValidation`, against an IdP served on 127.0.0.1 by
//! the test (introspection, JWKS and userinfo endpoints that count their
//! calls), with JWTs signed here by jsonwebtoken.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use authchain_core::{AuthorizationRequest, Chain, Decision, Engine};
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::{ORIGIN, get_with, load, req, status, upstream};

const RSA: &[u8] = include_bytes!("../keys/rsa.pem");
const RSA2: &[u8] = include_bytes!("../keys/rsa2.pem");
const JWKS: &str = include_str!("../keys/jwks.json");
const ISSUER: &str = "https://idp.example.com/";
const CLIENT: (&str, &str) = ("ratings", "introspect-s3cret");

// ---------------------------------------------------------------- helpers

/// The chain of the only AuthConfig in `yaml`, and its engine to keep.
async fn chain_of(yaml: &str) -> (Arc<Chain>, Engine) {
    let engine = load(yaml).await.expect("config loads");
    let generation = engine.current();
    let name = generation.names()[0].to_owned();
    let chain = generation.chain(&name).expect("chain").clone();
    (chain, engine)
}

/// An AuthConfig `a` with one `accessTokenValidation` block (`block`,
/// indented under it) and a 503 for a failing step.
fn config(block: &str) -> String {
    let block: String = block.lines().map(|l| format!("      {l}\n")).collect();
    format!("name: a\nstatusOnError: 503\nconfigs:\n- oauth2:\n    accessTokenValidation:\n{block}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": "ratings",
        "exp": now() + 600,
        "scope": "ratings.read ratings.write",
        "email": "alice@example.com",
    })
}

fn sign_with(key: EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with(
        EncodingKey::from_rsa_pem(RSA).unwrap(),
        Algorithm::RS256,
        "rsa-1",
        claims,
    )
}

fn bearer(token: &str) -> AuthorizationRequest {
    get_with("/", "authorization", &format!("Bearer {token}"))
}

fn challenge(d: &Decision) -> String {
    d.as_deny().expect("a deny").headers["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

const INVALID: &str = "Bearer realm=\"authchain\", error=\"invalid_token\"";

// ------------------------------------------------------------ a small IdP

/// An introspection request as the IdP got it: its `Authorization`, its
/// form.
type Seen = (Option<String>, Vec<(String, String)>);

/// What the test IdP answers and counts.
#[derive(Default)]
struct IdpState {
    /// Introspection answers by token (unknown tokens: `active: false`).
    answers: Mutex<HashMap<String, Value>>,
    /// Userinfo answers by token: a status and a body.
    userinfo: Mutex<HashMap<String, (u16, Value)>>,
    /// How long introspection takes.
    delay: Mutex<Duration>,
    introspections: AtomicUsize,
    userinfos: AtomicUsize,
    jwks: AtomicUsize,
    /// The last introspection request: its `Authorization`, its form.
    last: Mutex<Option<Seen>>,
}

/// An IdP on 127.0.0.1: `POST /introspect` (HTTP Basic with [`CLIENT`]),
/// `POST /introspect-open` (no client check), `GET /jwks`, `GET /userinfo`.
struct Idp {
    base: String,
    state: Arc<IdpState>,
}

impl Idp {
    async fn start() -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| serve(state.clone(), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Idp { base, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Introspection says `answer` about `token`.
    fn answer(&self, token: &str, answer: Value) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), answer);
    }

    fn userinfo(&self, token: &str, status: u16, answer: Value) {
        self.state
            .userinfo
            .lock()
            .unwrap()
            .insert(token.to_owned(), (status, answer));
    }

    fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }

    fn userinfos(&self) -> usize {
        self.state.userinfos.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.state.last.lock().unwrap().clone().expect("a call")
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn serve(
    state: Arc<IdpState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let authorization = parts
        .headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let response = match (parts.method.as_str(), parts.uri.path()) {
        ("POST", path @ ("/introspect" | "/introspect-open")) => {
            state.introspections.fetch_add(1, Ordering::SeqCst);
            let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            *state.last.lock().unwrap() = Some((authorization.clone(), form.clone()));
            let delay = *state.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", CLIENT.0, CLIENT.1))
            );
            if path == "/introspect" && authorization.as_deref() != Some(basic.as_str()) {
                json_response(401, &json!({"error": "invalid_client"}))
            } else {
                let token = form
                    .iter()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let answer = state.answers.lock().unwrap().get(&token).cloned();
                match answer {
                    Some(Value::String(s)) if s == "fail" => json_response(500, &json!({})),
                    Some(answer) => json_response(200, &answer),
                    None => json_response(200, &json!({"active": false})),
                }
            }
        }
        ("GET", "/jwks") => {
            state.jwks.fetch_add(1, Ordering::SeqCst);
            json_response(200, &serde_json::from_str(JWKS).unwrap())
        }
        ("GET", "/userinfo") => {
            state.userinfos.fetch_add(1, Ordering::SeqCst);
            let token = authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or_default();
            let answer = state.userinfo.lock().unwrap().get(token).cloned();
            match answer {
                Some((status, body)) => json_response(status, &body),
                None => json_response(401, &json!({"error": "invalid_token"})),
            }
        }
        _ => json_response(404, &json!({})),
    };
    Ok(response)
}

/// Gloo's client Secret for [`CLIENT`], as a manifest before a config.
fn client_secret() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\ntype: extauth.solo.io/oauth\nmetadata: {{ name: ratings-oauth }}\nstringData: {{ client-secret: {} }}\n---\n",
        CLIENT.1
    )
}

/// An `introspection` block for `idp`, with `extra` lines.
fn introspection(idp: &Idp, extra: &str) -> String {
    let block = config(&format!(
        "introspection:
  introspectionUrl: {}
  clientId: {}
  clientSecretRef: {{ name: ratings-oauth }}
{extra}",
        idp.url("/introspect"),
        CLIENT.0,
    ));
    format!("{}{block}", client_secret())
}

/// An active introspection answer for alice, expiring in `ttl` seconds.
fn active(ttl: u64) -> Value {
    json!({
        "active": true,
        "sub": "alice-id",
        "username": "alice",
        "scope": "ratings.read ratings.write",
        "client_id": "app",
        "exp": now() + ttl,
        "org": "solo",
        "groups": ["dev", "ops"],
    })
}

// ------------------------------------------------------------------- JWTs

fn local_jwt(extra: &str) -> String {
    config(&format!(
        "jwt:
  localJwks:
    inlineString: '{}'
  issuer: {ISSUER}
  audiences: [ratings]
claimsToHeaders:
- {{ claim: sub, header: x-user-id }}
- {{ claim: email, header: x-email }}
dynamicMetadataFromClaims: {{ user-email: email }}
{extra}",
        JWKS.replace('\n', " ")
    ))
}

#[tokio::test]
async fn a_valid_jwt_is_allowed_with_its_claims() {
    let (chain, _engine) = chain_of(&local_jwt("")).await;
    let claims = claims();
    let mut r = bearer(&sign(&claims));
    let d = chain.authorize(&mut r).await;
    let allow = d.as_allow().unwrap_or_else(|| panic!("{d:?}"));
    assert_eq!(upstream(&d, "x-user-id").as_deref(), Some("alice"));
    assert_eq!(
        upstream(&d, "x-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(allow.dynamic_metadata["user-email"], "alice@example.com");
    assert_eq!(allow.user_info.as_ref().unwrap().user_id, "alice");
    assert_eq!(r.state["jwtAccessToken"]["email"], "alice@example.com");
    // A decision cache keeps the allow no longer than the token.
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(allow.expires, Some(UNIX_EPOCH + Duration::from_secs(exp)));
    // Client-sent copies of the claim headers are stripped.
    let mut forged = bearer(&sign(&claims));
    forged
        .headers
        .insert("x-email", "evil@example.com".parse().unwrap());
    let d = chain.authorize(&mut forged).await;
    assert_eq!(
        upstream(&d, "x-email").as_deref(),
        Some("alice@example.com")
    );
}

#[tokio::test]
async fn a_missing_token_is_a_401_challenge_a_bad_one_invalid_token() {
    let (chain, _engine) = chain_of(&local_jwt("")).await;
    let d = chain.authorize(&mut req(http::Method::GET, "/")).await;
    assert_eq!(status(&d), 401);
    assert_eq!(challenge(&d), "Bearer realm=\"authchain\"");

    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let payload = b64(claims().to_string().as_bytes());
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-jwt".to_owned()),
        ("three garbage parts", "a.b.c".to_owned()),
        ("expired", sign(&with("exp", json!(now() - 3600)))),
        ("not yet valid", sign(&with("nbf", json!(now() + 3600)))),
        ("wrong issuer", sign(&with("iss", json!("https://evil/")))),
        ("wrong audience", sign(&with("aud", json!("other")))),
        (
            "another key, same kid",
            sign_with(
                EncodingKey::from_rsa_pem(RSA2).unwrap(),
                Algorithm::RS256,
                "rsa-1",
                &claims(),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{payload}.",
                b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#)
            ),
        ),
        // Algorithm confusion: HMAC keyed with the public key as the
        // attacker has it (the JWKS, and its RSA modulus).
        (
            "HS256 keyed with the JWKS",
            sign_with(
                EncodingKey::from_secret(JWKS.as_bytes()),
                Algorithm::HS256,
                "rsa-1",
                &claims(),
            ),
        ),
        (
            "HS256 keyed with the modulus",
            sign_with(
                EncodingKey::from_secret(
                    serde_json::from_str::<Value>(JWKS).unwrap()["keys"][0]["n"]
                        .as_str()
                        .unwrap()
                        .as_bytes(),
                ),
                Algorithm::HS256,
                "rsa-1",
                &claims(),
            ),
        ),
        ("too long", "a".repeat(9000)),
        ("a tab inside", "abc\tdef".to_owned()),
        ("not ASCII", "abc\u{e9}def".to_owned()),
    ];
    for (name, token) in cases {
        let mut r = AuthorizationRequest::new(http::Method::GET, "/").with_header(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(format!("Bearer {token}").as_bytes()).unwrap(),
        );
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), 401, "case {name}: {d:?}");
        assert_eq!(challenge(&d), INVALID, "case {name}");
        assert!(r.state.is_empty(), "case {name}: a deny writes nothing");
    }
    // Another scheme is a bad credential too.
    let d = chain
        .authorize(&mut get_with("/", "authorization", "Basic YWxpY2U6cHc="))
        .await;
    assert_eq!(challenge(&d), INVALID);
}

#[tokio::test]
async fn a_missing_scope_is_a_403_insufficient_scope() {
    let (chain, _engine) = chain_of(&local_jwt(
        "requiredScopes: { scope: [ratings.read, ratings.write] }",
    ))
    .await;
    let with_scopes = |k: &str, v: Value| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove("scope");
        if !k.is_empty() {
            c[k] = v;
        }
        sign(&c)
    };
    // (case, token, status)
    let cases = [
        ("both, and more", sign(&claims()), 200),
        (
            "scope, one missing",
            with_scopes("scope", json!("ratings.read")),
            403,
        ),
        (
            "a prefix is not a scope",
            with_scopes("scope", json!("ratings.read ratings.writer")),
            403,
        ),
        ("no scope", with_scopes("", json!(null)), 403),
        (
            "scp as a list",
            with_scopes("scp", json!(["ratings.write", "ratings.read"])),
            200,
        ),
        (
            "scp as a string",
            with_scopes("scp", json!("ratings.write ratings.read")),
            200,
        ),
    ];
    for (name, token, want) in cases {
        let mut r = bearer(&token);
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
        if want == 403 {
            assert_eq!(
                challenge(&d),
                "Bearer realm=\"authchain\", error=\"insufficient_scope\", scope=\"ratings.read ratings.write\"",
                "case {name}"
            );
            assert!(r.state.is_empty(), "case {name}");
        }
    }
}

#[tokio::test]
async fn a_remote_jwks_is_fetched_when_the_step_starts() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&config(&format!(
        "jwt:\n  remoteJwks: {{ url: {} }}\n  issuer: {ISSUER}",
        idp.url("/jwks")
    )))
    .await;
    assert_eq!(idp.state.jwks.load(Ordering::SeqCst), 1);
    let d = chain.authorize(&mut bearer(&sign(&claims()))).await;
    assert!(d.is_allow(), "{d:?}");
    let d = chain
        .authorize(&mut bearer(&sign_with(
            EncodingKey::from_rsa_pem(RSA2).unwrap(),
            Algorithm::RS256,
            "rsa-1",
            &claims(),
        )))
        .await;
    assert_eq!(challenge(&d), INVALID);
}

#[tokio::test]
async fn the_userinfo_answer_goes_to_state_and_is_kept() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&local_jwt(&format!(
        "userinfoUrl: {}",
        idp.url("/userinfo")
    )))
    .await;
    let good = sign(&claims());
    idp.userinfo(&good, 200, json!({"sub": "alice", "name": "Alice"}));
    for _ in 0..3 {
        let mut r = bearer(&good);
        let d = chain.authorize(&mut r).await;
        assert!(d.is_allow(), "{d:?}");
        assert_eq!(r.state["introspection"]["name"], "Alice");
        assert_eq!(r.state["jwtAccessToken"]["sub"], "alice");
    }
    assert_eq!(idp.userinfos(), 1, "the answer is kept");

    // The endpoint's 401: the token is refused; other failures: the step's error.
    let refused = sign(&json!({"sub": "bob", "iss": ISSUER, "aud": "ratings", "exp": now() + 600}));
    let d = chain.authorize(&mut bearer(&refused)).await;
    assert_eq!(challenge(&d), INVALID);
    let broken =
        sign(&json!({"sub": "carol", "iss": ISSUER, "aud": "ratings", "exp": now() + 600}));
    idp.userinfo(&broken, 500, json!({}));
    let d = chain.authorize(&mut bearer(&broken)).await;
    assert_eq!(status(&d), 503);
    // Neither is kept.
    let before = idp.userinfos();
    chain.authorize(&mut bearer(&refused)).await;
    chain.authorize(&mut bearer(&broken)).await;
    assert_eq!(idp.userinfos(), before + 2);
}

// ---------------------------------------------------------- introspection

#[tokio::test]
async fn an_active_token_is_allowed_with_the_introspection_answer() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(
        &idp,
        "  userIdAttributeName: username
requiredScopes: { scope: [ratings.read] }
claimsToHeaders:
- { claim: username, header: x-user }
- { claim: groups, header: x-groups }
dynamicMetadataFromClaims: { org: org }",
    ))
    .await;
    let answer = active(600);
    idp.answer("opaque-1", answer.clone());
    let mut r = bearer("opaque-1");
    let d = chain.authorize(&mut r).await;
    let allow = d.as_allow().unwrap_or_else(|| panic!("{d:?}"));
    assert_eq!(allow.user_info.as_ref().unwrap().user_id, "alice");
    assert_eq!(upstream(&d, "x-user").as_deref(), Some("alice"));
    assert_eq!(
        upstream(&d, "x-groups").as_deref(),
        Some(r#"["dev","ops"]"#)
    );
    assert_eq!(allow.dynamic_metadata["org"], "solo");
    assert_eq!(r.state["tokenIntrospection"]["org"], "solo");
    assert_eq!(r.state["tokenIntrospection"]["client_id"], "app");
    let exp = UNIX_EPOCH + Duration::from_secs(answer["exp"].as_u64().unwrap());
    assert!(allow.expires.unwrap() <= exp);
    // RFC 7662: the token in the form, the client in HTTP Basic.
    let (authorization, form) = idp.last();
    assert!(authorization.unwrap().starts_with("Basic "));
    assert_eq!(form, vec![("token".to_owned(), "opaque-1".to_owned())]);

    // Without the scope: 403.
    let mut narrow = active(600);
    narrow["scope"] = json!("ratings.write");
    idp.answer("opaque-narrow", narrow);
    let d = chain.authorize(&mut bearer("opaque-narrow")).await;
    assert_eq!(status(&d), 403);
    // Without the user's attribute: 401.
    let mut anonymous = active(600);
    anonymous.as_object_mut().unwrap().remove("username");
    idp.answer("opaque-anonymous", anonymous);
    let d = chain.authorize(&mut bearer("opaque-anonymous")).await;
    assert_eq!(challenge(&d), INVALID);
}

#[tokio::test]
async fn inactive_unknown_and_expired_tokens_are_401_and_not_kept() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    idp.answer("revoked", json!({"active": false}));
    let mut past = active(0);
    past["exp"] = json!(now() - 10);
    idp.answer("past", past);
    for token in ["revoked", "never-issued", "past"] {
        for _ in 0..2 {
            let mut r = bearer(token);
            let d = chain.authorize(&mut r).await;
            assert_eq!(status(&d), 401, "{token}");
            assert_eq!(challenge(&d), INVALID, "{token}");
            assert!(r.state.is_empty());
        }
    }
    assert_eq!(idp.introspections(), 6, "no rejection is kept");
}

#[tokio::test]
async fn a_kept_answer_costs_no_call_until_cache_timeout_or_exp() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "cacheTimeout: 1s")).await;
    idp.answer("t-long", active(600));
    idp.answer("t-short", active(2));
    for _ in 0..5 {
        assert!(chain.authorize(&mut bearer("t-long")).await.is_allow());
    }
    assert_eq!(idp.introspections(), 1, "a kept answer costs no call");
    // Past cacheTimeout: asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(chain.authorize(&mut bearer("t-long")).await.is_allow());
    assert_eq!(idp.introspections(), 2);

    // Never past the token's exp, even within cacheTimeout.
    let (chain, _engine2) = chain_with_keep(&idp, "10m").await;
    let before = idp.introspections();
    let d = chain.authorize(&mut bearer("t-short")).await;
    assert!(d.is_allow());
    let expires = d.as_allow().unwrap().expires.unwrap();
    assert!(expires <= SystemTime::now() + Duration::from_secs(2));
    assert!(chain.authorize(&mut bearer("t-short")).await.is_allow());
    assert_eq!(idp.introspections(), before + 1);
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    let d = chain.authorize(&mut bearer("t-short")).await;
    assert_eq!(challenge(&d), INVALID, "expired");
    assert_eq!(idp.introspections(), before + 2, "asked again past exp");
}

async fn chain_with_keep(idp: &Idp, keep: &str) -> (Arc<Chain>, Engine) {
    chain_of(&introspection(idp, &format!("cacheTimeout: {keep}"))).await
}

#[tokio::test]
async fn cache_timeout_zero_asks_every_time() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_with_keep(&idp, "0s").await;
    idp.answer("t", active(600));
    for _ in 0..3 {
        let d = chain.authorize(&mut bearer("t")).await;
        assert!(d.is_allow());
        // Nor may a decision cache keep the allow.
        assert!(d.as_allow().unwrap().expires.unwrap() <= SystemTime::now());
    }
    assert_eq!(idp.introspections(), 3);
}

#[tokio::test]
async fn concurrent_misses_for_one_token_make_one_call() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    idp.answer("t", active(600));
    *idp.state.delay.lock().unwrap() = Duration::from_millis(300);
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.authorize(&mut bearer("t")).await })
        })
        .collect();
    for run in runs {
        assert!(run.await.unwrap().is_allow());
    }
    assert_eq!(idp.introspections(), 1);
}

#[tokio::test]
async fn an_idp_that_fails_is_the_steps_error_and_never_kept() {
    let idp = Idp::start().await;
    // The IdP's 500, and an IdP that refuses the client (a wrong secret).
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    idp.answer("t", json!("fail"));
    for _ in 0..2 {
        assert_eq!(status(&chain.authorize(&mut bearer("t")).await), 503);
    }
    assert_eq!(idp.introspections(), 2, "a failure is not kept");
    let (refused, _engine2) = chain_of(&config(&format!(
        "introspection:\n  introspectionUrl: {}\n  clientId: ratings\n  disableClientSecret: true",
        idp.url("/introspect")
    )))
    .await;
    idp.answer("good", active(600));
    assert_eq!(status(&refused.authorize(&mut bearer("good")).await), 503);

    // Nothing listening, and a peer that never answers: a 503 within the timeout.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = authchain_testkit::silent_server().await.unwrap();
    for addr in [closed, silent] {
        let (chain, _engine) = chain_of(&config(&format!(
            "introspectionUrl: http://{addr}/introspect\ntimeout: 300ms"
        )))
        .await;
        let started = Instant::now();
        let d = chain.authorize(&mut bearer("t")).await;
        assert_eq!(status(&d), 503, "{addr}");
        assert!(started.elapsed() < Duration::from_secs(2), "{addr}");
    }
}

#[tokio::test]
async fn the_client_is_sent_as_configured() {
    let idp = Idp::start().await;
    idp.answer("t", active(600));
    // The deprecated introspectionUrl: no client at all.
    let (chain, _engine) = chain_of(&config(&format!(
        "introspectionUrl: {}",
        idp.url("/introspect-open")
    )))
    .await;
    assert!(chain.authorize(&mut bearer("t")).await.is_allow());
    assert_eq!(
        idp.last(),
        (None, vec![("token".to_owned(), "t".to_owned())])
    );
    // A client id without a secret: in the form.
    let (chain, _engine) = chain_of(&config(&format!(
        "introspection:\n  introspectionUrl: {}\n  clientId: public-app\n  disableClientSecret: true",
        idp.url("/introspect-open")
    )))
    .await;
    assert!(chain.authorize(&mut bearer("t")).await.is_allow());
    let (authorization, form) = idp.last();
    assert_eq!(authorization, None);
    assert!(form.contains(&("client_id".to_owned(), "public-app".to_owned())));
}

#[tokio::test]
async fn introspection_with_userinfo_keeps_both() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(
        &idp,
        &format!("userinfoUrl: {}", idp.url("/userinfo")),
    ))
    .await;
    idp.answer("t", active(600));
    idp.userinfo("t", 200, json!({"email": "alice@example.com"}));
    for _ in 0..2 {
        let mut r = bearer("t");
        assert!(chain.authorize(&mut r).await.is_allow());
        assert_eq!(r.state["introspection"]["email"], "alice@example.com");
        assert_eq!(r.state["tokenIntrospection"]["username"], "alice");
    }
    assert_eq!((idp.introspections(), idp.userinfos()), (1, 1));
}

// ----------------------------------------------------------------- config

/// Asserts that `yaml` fails to load at `place` (under the step's block)
/// and names none of `secrets`.
async fn assert_bad(yaml: &str, place: &str, secrets: &[&str]) {
    let e = match load(yaml).await {
        Ok(_) => panic!("should not load: {place}"),
        Err(e) => e,
    };
    // The AuthConfig is the document after the Secret.
    let full = format!("{ORIGIN} document 2: configs[0].oauth2.accessTokenValidation{place}");
    assert_eq!(e.place(), Some(full.as_str()), "{e}");
    let text = format!("{e} {e:?}");
    for s in secrets {
        assert!(!text.contains(s), "the error names a secret: {text}");
    }
}

#[tokio::test]
async fn config_errors_name_their_place() {
    let url = "http://127.0.0.1:9/introspect";
    let cases: Vec<(String, &str)> = vec![
        ("{}".to_owned(), ""),
        (
            format!(
                "introspectionUrl: {url}\njwt: {{ localJwks: {{ inlineString: '{}' }} }}",
                JWKS.replace('\n', " ")
            ),
            "",
        ),
        (
            format!("introspectionUrl: {url}\nintrospection: {{ introspectionUrl: {url} }}"),
            "",
        ),
        (
            format!("introspection: {{ introspectionUrl: {url}, clientId: app }}"),
            ".introspection.clientSecretRef",
        ),
        (
            format!(
                "introspection: {{ introspectionUrl: {url}, clientSecretRef: {{ name: ratings-oauth }} }}"
            ),
            ".introspection.clientSecretRef",
        ),
        (
            format!(
                "introspection: {{ introspectionUrl: {url}, clientId: app, clientSecretRef: {{ name: nowhere }} }}"
            ),
            ".introspection.clientSecretRef",
        ),
        (
            "introspection: { introspectionUrl: 'ftp://idp/introspect' }".to_owned(),
            ".introspection.introspectionUrl",
        ),
        (
            "introspection: { introspectionUrl: '/relative' }".to_owned(),
            ".introspection.introspectionUrl",
        ),
        (
            "introspectionUrl: 'not a url'".to_owned(),
            ".introspectionUrl",
        ),
        (
            format!("introspectionUrl: {url}\nuserinfoUrl: 'idp/userinfo'"),
            ".userinfoUrl",
        ),
        (
            "jwt: { remoteJwks: { url: 'file:///etc/jwks.json' } }".to_owned(),
            ".jwt.remoteJwks.url",
        ),
        (
            format!("jwt: {{ remoteJwks: {{ url: {url}, refreshInterval: 0s }} }}"),
            ".jwt.remoteJwks.refreshInterval",
        ),
        (
            "jwt: { localJwks: { inlineString: '{\"keys\": 5}' } }".to_owned(),
            ".jwt.localJwks.inlineString",
        ),
        ("jwt: {}".to_owned(), ".jwt"),
        (format!("introspectionUrl: {url}\ntimeout: 0s"), ".timeout"),
        (
            format!("introspectionUrl: {url}\nrequiredScopes: {{ scope: ['a b'] }}"),
            ".requiredScopes.scope[0]",
        ),
        (
            format!("introspectionUrl: {url}\nazure: {{ clientId: x }}"),
            ".azure",
        ),
        (
            format!(
                "introspectionUrl: {url}\nclaimsToHeaders: [{{ claim: sub, header: 'bad header' }}]"
            ),
            ".claimsToHeaders[0].header",
        ),
    ];
    for (block, place) in cases {
        assert_bad(
            &format!("{}{}", client_secret(), config(&block)),
            place,
            &[CLIENT.1],
        )
        .await;
    }
}

/// Gloo's manifest: a Secret made by `glooctl create secret oauth`, and
/// an AuthConfig that names it, loaded as they are.
#[tokio::test]
async fn a_gloo_manifest_with_an_oauth_secret_loads_as_it_is() {
    let idp = Idp::start().await;
    idp.answer("t", active(600));
    let manifest = |secret_entry: &str| {
        format!(
            "apiVersion: v1
kind: Secret
type: extauth.solo.io/oauth
metadata: {{ name: ratings-oauth, namespace: gloo-system }}
stringData:
  {secret_entry}
---
apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: {{ name: ratings, namespace: gloo-system }}
spec:
  configs:
  - oauth2:
      accessTokenValidation:
        introspection:
          introspectionUrl: {}
          clientId: {}
          clientSecretRef:
            name: ratings-oauth
            namespace: gloo-system
          userIdAttributeName: sub
        cacheTimeout: 5m
        requiredScopes:
          scope:
          - ratings.read
",
            idp.url("/introspect"),
            CLIENT.0
        )
    };
    for entry in [
        format!("client-secret: {}", CLIENT.1),
        format!("oauth: 'clientSecret: {}'", CLIENT.1),
    ] {
        let (chain, _engine) = chain_of(&manifest(&entry)).await;
        let d = chain.authorize(&mut bearer("t")).await;
        let allow = d.as_allow().unwrap_or_else(|| panic!("{entry}: {d:?}"));
        assert_eq!(allow.user_info.as_ref().unwrap().user_id, "alice-id");
    }
    // A Secret of another type is refused, naming the reference.
    let other = manifest(&format!("client-secret: {}", CLIENT.1))
        .replace("extauth.solo.io/oauth", "Opaque");
    let e = match load(&other).await {
        Ok(_) => panic!("should not load"),
        Err(e) => e,
    };
    assert!(
        e.place()
            .unwrap()
            .ends_with("accessTokenValidation.introspection.clientSecretRef"),
        "{e}"
    );
    assert!(!format!("{e} {e:?}").contains(CLIENT.1));
}

#[tokio::test]
async fn the_step_shows_no_secret_and_declares_its_headers() {
    use authchain_core::{AuthService, BuildContext};
    use authchain_steps::oauth2::access::AccessToken;
    let dir = authchain_testkit::ScratchDir::new("oauth2-access").unwrap();
    let file = dir
        .write("client-secret", &format!("{}\n", CLIENT.1))
        .unwrap();
    let block: authchain_steps::oauth2::config::AccessTokenValidation =
        serde_json::from_value(json!({
            "introspection": {
                "introspectionUrl": "https://idp.example.com/introspect",
                "clientId": "ratings",
                "clientSecretRef": { "file": file },
            },
            "claimsToHeaders": [{ "claim": "sub", "header": "x-user-id" }],
        }))
        .unwrap();
    let step = AccessToken::new(block, &BuildContext::new("a", "s", "configs[0]")).unwrap();
    let shown = format!("{step:?}");
    assert!(!shown.contains(CLIENT.1), "{shown}");
    assert!(shown.contains("ratings"), "{shown}");
    assert_eq!(step.identity_headers(), vec!["x-user-id"]);
    assert!(step.reads().is_none());
}

// ------------------------------------------------------------ a real IdP

/// oidc-provider (the testkit's IdP) with one confidential client.
async fn real_idp() -> authchain_testkit::idp::Idp {
    let config =
        authchain_testkit::idp::IdpConfig::single("app", "appsecret", "http://127.0.0.1:1/cb");
    authchain_testkit::idp::Idp::start(config)
        .await
        .expect("the IdP starts (see ./scripts/install-peers.sh)")
}

#[tokio::test]
async fn a_real_idps_jwt_access_token_is_checked_with_its_discovered_jwks() {
    let idp = real_idp().await;
    let discovery = idp.discovery().await.unwrap();
    let (chain, _engine) = chain_of(&config(&format!(
        "jwt:
  remoteJwks: {{ url: '{}' }}
  issuer: '{}'
  audiences: ['{}']
requiredScopes: {{ scope: ['api:read'] }}
claimsToHeaders: [{{ claim: client_id, header: x-client }}]",
        discovery["jwks_uri"].as_str().unwrap(),
        discovery["issuer"].as_str().unwrap(),
        idp.config().resource,
    )))
    .await;
    let token = idp
        .client_credentials("app", "appsecret", "api:read api:write", true)
        .await
        .unwrap();
    let mut r = bearer(&token);
    let d = chain.authorize(&mut r).await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(upstream(&d, "x-client").as_deref(), Some("app"));
    assert_eq!(r.state["jwtAccessToken"]["client_id"], "app");
    let narrow = idp
        .client_credentials("app", "appsecret", "api:write", true)
        .await
        .unwrap();
    assert_eq!(status(&chain.authorize(&mut bearer(&narrow)).await), 403);
    // An opaque token is no JWT.
    let opaque = idp
        .client_credentials("app", "appsecret", "api:read", false)
        .await
        .unwrap();
    assert_eq!(
        challenge(&chain.authorize(&mut bearer(&opaque)).await),
        INVALID
    );
    // Checking JWTs costs the IdP nothing: the JWKS once, at start.
    let counts = idp.requests().await.unwrap();
    assert_eq!((counts.jwks, counts.introspection), (1, 0));
}

#[tokio::test]
async fn a_real_idps_opaque_token_is_introspected_once() {
    let idp = real_idp().await;
    let discovery = idp.discovery().await.unwrap();
    let yaml = format!(
        "apiVersion: v1
kind: Secret
type: extauth.solo.io/oauth
metadata: {{ name: app-oauth, namespace: gloo-system }}
stringData: {{ client-secret: appsecret }}
---
apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: {{ name: api, namespace: gloo-system }}
spec:
  statusOnError: 503
  configs:
  - oauth2:
      accessTokenValidation:
        introspection:
          introspectionUrl: '{}'
          clientId: app
          clientSecretRef: {{ name: app-oauth, namespace: gloo-system }}
          userIdAttributeName: client_id
        requiredScopes: {{ scope: ['api:read'] }}
",
        discovery["introspection_endpoint"].as_str().unwrap()
    );
    let (chain, _engine) = chain_of(&yaml).await;
    let token = idp
        .client_credentials("app", "appsecret", "api:read", false)
        .await
        .unwrap();
    idp.reset_requests().await.unwrap();
    for _ in 0..3 {
        let mut r = bearer(&token);
        let d = chain.authorize(&mut r).await;
        let allow = d.as_allow().unwrap_or_else(|| panic!("{d:?}"));
        assert_eq!(allow.user_info.as_ref().unwrap().user_id, "app");
        assert_eq!(r.state["tokenIntrospection"]["active"], true);
        assert!(allow.expires.is_some());
    }
    assert_eq!(
        idp.requests().await.unwrap().introspection,
        1,
        "a kept answer costs no call"
    );
    // A token the IdP never issued: asked, inactive, 401.
    let d = chain.authorize(&mut bearer("never-issued")).await;
    assert_eq!(challenge(&d), INVALID);
    assert_eq!(idp.requests().await.unwrap().introspection, 2);
}
