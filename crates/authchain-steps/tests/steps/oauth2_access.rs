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

use crate::common::{Logs, ORIGIN, get_with, load, req, status, upstream};

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
    /// How long introspection takes, and userinfo.
    delay: Mutex<Duration>,
    userinfo_delay: Mutex<Duration>,
    introspections: AtomicUsize,
    userinfos: AtomicUsize,
    jwks: AtomicUsize,
    /// Introspection calls under way, and the most there were at once.
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    /// The discovery document `GET /.well-known/openid-configuration`
    /// serves, as it is.
    discovery: Mutex<String>,
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
            let now = state.inflight.fetch_add(1, Ordering::SeqCst) + 1;
            state.max_inflight.fetch_max(now, Ordering::SeqCst);
            let delay = *state.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            state.inflight.fetch_sub(1, Ordering::SeqCst);
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
                    // Active, after this many milliseconds.
                    Some(Value::String(s)) if s.starts_with("sleep:") => {
                        let ms = s["sleep:".len()..].parse().unwrap();
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        json_response(200, &active(600))
                    }
                    // An answer with this status and an empty object.
                    Some(Value::String(s)) if s.starts_with("status:") => {
                        json_response(s["status:".len()..].parse().unwrap(), &json!({}))
                    }
                    Some(Value::String(s)) if s == "invalid_request" => {
                        json_response(400, &json!({"error": "invalid_request"}))
                    }
                    // An answer as bytes, JSON or not.
                    Some(Value::String(s)) if s.starts_with("raw:") => Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(s["raw:".len()..].to_owned())))
                        .unwrap(),
                    Some(answer) => json_response(200, &answer),
                    None => json_response(200, &json!({"active": false})),
                }
            }
        }
        ("GET", "/.well-known/openid-configuration") => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                state.discovery.lock().unwrap().clone(),
            )))
            .unwrap(),
        ("GET", "/jwks") => {
            state.jwks.fetch_add(1, Ordering::SeqCst);
            json_response(200, &serde_json::from_str(JWKS).unwrap())
        }
        ("GET", "/userinfo") => {
            state.userinfos.fetch_add(1, Ordering::SeqCst);
            let delay = *state.userinfo_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
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

/// The form of an introspection of `token`, as sent.
fn token_form(token: &str) -> Vec<(String, String)> {
    vec![
        ("token".to_owned(), token.to_owned()),
        ("token_type_hint".to_owned(), "access_token".to_owned()),
    ]
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
    // Another scheme is no token (RFC 6750 3.1): the plain challenge.
    let d = chain
        .authorize(&mut get_with("/", "authorization", "Basic YWxpY2U6cHc="))
        .await;
    assert_eq!(challenge(&d), "Bearer realm=\"authchain\"");
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
    assert_eq!(claims()["sub"], "alice");
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
    // An answer naming the user otherwise than the access token (Okta's
    // userinfo `sub` is the user id, its access token's the login) is
    // the user's: OpenID Connect compares it with the ID token's.
    let login = sign(
        &json!({"sub": "dave@example.com", "iss": ISSUER, "aud": "ratings", "exp": now() + 600}),
    );
    idp.userinfo(&login, 200, json!({"sub": "00u1dave", "name": "Dave"}));
    let mut r = bearer(&login);
    assert!(chain.authorize(&mut r).await.is_allow());
    assert_eq!(r.state["introspection"]["name"], "Dave");
    // Neither failure is kept.
    let before = idp.userinfos();
    chain.authorize(&mut bearer(&refused)).await;
    chain.authorize(&mut bearer(&broken)).await;
    assert_eq!(idp.userinfos(), before + 2);
}

// ---------------------------------------------------------- introspection

/// Many IdPs answer `active` for a refresh or an ID token too (Hydra,
/// Keycloak), whatever the hint: one is not a bearer token here, or a
/// stolen refresh token would work past every access token's lifetime.
#[tokio::test]
async fn a_refresh_or_id_token_is_not_an_access_token() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    let cases = [
        ("token_type", "refresh_token", 401),
        ("token_use", "refresh_token", 401),
        ("typ", "Refresh", 401),
        ("typ", "Offline", 401),
        ("typ", "ID", 401),
        ("token_type", "Bearer", 200),
        ("token_use", "access_token", 200),
        ("typ", "Bearer", 200),
    ];
    for (i, (member, kind, want)) in cases.into_iter().enumerate() {
        let mut answer = active(600);
        answer[member] = json!(kind);
        let token = format!("t{i}");
        idp.answer(&token, answer);
        let d = chain.authorize(&mut bearer(&token)).await;
        assert_eq!(status(&d), want, "{member}: {kind}: {d:?}");
    }
    let (_, form) = idp.last();
    assert!(
        form.contains(&("token_type_hint".to_owned(), "access_token".to_owned())),
        "{form:?}"
    );
}

/// A signed `exp` past what a clock holds is no panic.
#[tokio::test]
async fn an_exp_past_any_clock_is_no_panic() {
    let (chain, _engine) = chain_of(&local_jwt("")).await;
    let mut claims = claims();
    claims["exp"] = json!(10_000_000_000_000_000_000u64);
    let d = chain.authorize(&mut bearer(&sign(&claims))).await;
    assert!(d.is_allow(), "{d:?}");
}

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
    // RFC 7662: the token in the form, with its hint, the client in
    // HTTP Basic.
    let (authorization, form) = idp.last();
    assert!(authorization.unwrap().starts_with("Basic "));
    assert_eq!(form, token_form("opaque-1"));

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
    // Before the epoch: long past, not no `exp` at all.
    let mut before = active(0);
    before["exp"] = json!(-1);
    idp.answer("before-the-epoch", before);
    // A 400 for a token the IdP cannot read (RFC 7662 asks for
    // `active: false`): the client's doing, so a refusal.
    idp.answer("unreadable", json!("invalid_request"));
    for token in [
        "revoked",
        "never-issued",
        "past",
        "before-the-epoch",
        "unreadable",
    ] {
        for _ in 0..2 {
            let mut r = bearer(token);
            let d = chain.authorize(&mut r).await;
            assert_eq!(status(&d), 401, "{token}");
            assert_eq!(challenge(&d), INVALID, "{token}");
            assert!(r.state.is_empty());
        }
    }
    assert_eq!(idp.introspections(), 10, "no rejection is kept");
}

#[tokio::test]
async fn a_kept_answer_costs_no_call_until_cache_timeout_or_exp() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "cacheTimeout: 1s")).await;
    idp.answer("t-long", active(600));
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
    // Answered now (not before the wait above): `exp` is whole seconds.
    idp.answer("t-short", active(3));
    let before = idp.introspections();
    let d = chain.authorize(&mut bearer("t-short")).await;
    assert!(d.is_allow());
    let expires = d.as_allow().unwrap().expires.unwrap();
    assert!(expires <= SystemTime::now() + Duration::from_secs(3));
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

/// The step's own limits (calls to the IdP under way, and permits for
/// them) are clients' to fill with made-up tokens: a request turned away
/// at one is a 503 even with `failureModeAllow`, which lets through only
/// the IdP's own failures (here, its silence past the step's timeout).
/// A request waits for a permit half the step's timeout at most, so that
/// the step's timer, whose error fails open, does not end the wait.
#[tokio::test]
async fn a_step_at_its_own_limit_never_fails_open() {
    let idp = Idp::start().await;
    *idp.state.delay.lock().unwrap() = Duration::from_secs(10);
    let yaml = config(&format!(
        "introspectionUrl: {}\ntimeout: 5s",
        idp.url("/introspect-open")
    ))
    .replace(
        "- oauth2:",
        "- failureModeAllow: true\n  timeout: 2s\n  oauth2:",
    );
    let (chain, _engine) = chain_of(&yaml).await;
    let runs: Vec<_> = (0..260)
        .map(|i| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.authorize(&mut bearer(&format!("made-up-{i}"))).await })
        })
        .collect();
    let mut turned_away = 0;
    for run in runs {
        match run.await.unwrap() {
            Decision::Deny(deny) => {
                assert_eq!(deny.status, 503);
                turned_away += 1;
            }
            Decision::Allow(allow) => {
                assert_eq!(
                    allow.headers[0].name, "x-envoy-auth-failure-mode-allowed",
                    "only the IdP's failure passes"
                );
            }
        }
    }
    assert!(
        turned_away >= 260 - 64,
        "all but the 64 calls under way: {turned_away}"
    );
}

/// An answer of the IdP's own that judges nothing never passes under
/// `failureModeAllow`: a client can bring each about (a 429 from a flood
/// of made-up tokens, a 500 or an answer that is no RFC 7662 JSON from a
/// handler that fails on its token, a 400 with an error RFC 7662 does not
/// give, a userinfo 403 for a token without `openid`); nor does no answer
/// (a gateway's 503, or none past the step's time) while the IdP answers
/// other calls. An IdP that cannot be reached, or that a gateway answers
/// 503 for every call, passes.
#[tokio::test]
async fn an_idp_s_failure_passes_only_as_an_outage() {
    let within = |seconds: u64| {
        move |yaml: String| {
            yaml.replace(
                "- oauth2:",
                &format!("- failureModeAllow: true\n  timeout: {seconds}s\n  oauth2:"),
            )
        }
    };
    let fail_open = within(3);
    let passed = |d: &Decision| {
        d.as_allow().is_some_and(|a| {
            a.headers
                .iter()
                .any(|m| m.name == "x-envoy-auth-failure-mode-allowed")
        })
    };
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&fail_open(introspection(&idp, ""))).await;
    for (token, answer) in [
        ("flood", json!("status:429")),
        ("handler", json!("fail")),
        ("code", json!("status:400")),
        ("bytes", json!("raw:<html>")),
    ] {
        idp.answer(token, answer);
        let d = chain.authorize(&mut bearer(token)).await;
        assert_eq!(
            d.as_deny().map(|d| d.status.as_u16()),
            Some(503),
            "{token}: {d:?}"
        );
    }
    idp.answer("gateway", json!("status:503"));
    let d = chain.authorize(&mut bearer("gateway")).await;
    assert_eq!(
        d.as_deny().map(|d| d.status.as_u16()),
        Some(503),
        "503: {d:?}"
    );
    // Slow for this token alone (past the step's 2.7 s budget), while it
    // answers another.
    idp.answer("slow", json!("sleep:10000"));
    let slow = {
        let chain = chain.clone();
        tokio::spawn(async move { chain.authorize(&mut bearer("slow")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    chain.authorize(&mut bearer("handler")).await;
    let d = slow.await.unwrap();
    assert_eq!(
        d.as_deny().map(|d| d.status.as_u16()),
        Some(503),
        "slow: {d:?}"
    );

    let userinfo = fail_open(local_jwt(&format!("userinfoUrl: {}", idp.url("/userinfo"))));
    let (chain, _engine) = chain_of(&userinfo).await;
    let token = sign(&claims());
    idp.userinfo(&token, 403, json!({"error": "insufficient_scope"}));
    let d = chain.authorize(&mut bearer(&token)).await;
    assert_eq!(
        d.as_deny().map(|d| d.status.as_u16()),
        Some(503),
        "userinfo: {d:?}"
    );

    // Two calls each within a call's time, and past the step's together:
    // the request's budget ends them (the step's timer would let it in).
    let both = within(1)(introspection(
        &idp,
        &format!("userinfoUrl: {}", idp.url("/userinfo")),
    ));
    let (chain, _engine) = chain_of(&both).await;
    idp.answer("two-calls", json!("sleep:600"));
    idp.userinfo("two-calls", 200, json!({"sub": "alice"}));
    *idp.state.userinfo_delay.lock().unwrap() = Duration::from_millis(600);
    let d = chain.authorize(&mut bearer("two-calls")).await;
    assert_eq!(
        d.as_deny().map(|d| d.status.as_u16()),
        Some(503),
        "two calls: {d:?}"
    );
    *idp.state.userinfo_delay.lock().unwrap() = Duration::ZERO;

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = config(&format!("introspectionUrl: http://{closed}/introspect"));
    let (chain, _engine) = chain_of(&fail_open(yaml)).await;
    let d = chain.authorize(&mut bearer("t")).await;
    assert!(passed(&d), "an IdP that cannot be reached: {d:?}");
    // Another IdP, which nothing heard from (what any step heard of one
    // counts for all).
    let out = Idp::start().await;
    out.answer("gateway", json!("status:503"));
    let (chain, _engine) = chain_of(&fail_open(introspection(&out, ""))).await;
    let d = chain.authorize(&mut bearer("gateway")).await;
    assert!(passed(&d), "a gateway's 503 for every call: {d:?}");
}

/// What one AuthConfig's step heard of the IdP counts for another's: a
/// token the IdP is slow on, sent to a quiet AuthConfig while the IdP
/// answers a busy one's, fails closed under `failureModeAllow`.
#[tokio::test]
async fn an_idp_answering_another_config_is_up_for_this_one() {
    let idp = Idp::start().await;
    let fail_open = |yaml: String| {
        yaml.replace(
            "- oauth2:",
            "- failureModeAllow: true\n  timeout: 3s\n  oauth2:",
        )
    };
    let (busy, _busy) = chain_of(&fail_open(introspection(&idp, ""))).await;
    let (quiet, _quiet) = chain_of(&fail_open(introspection(&idp, ""))).await;
    idp.answer("slow", json!("sleep:10000"));
    idp.answer("good", active(600));
    let slow = tokio::spawn(async move { quiet.authorize(&mut bearer("slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(busy.authorize(&mut bearer("good")).await.is_allow());
    let d = slow.await.unwrap();
    assert_eq!(d.as_deny().map(|d| d.status.as_u16()), Some(503), "{d:?}");
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
    assert_eq!(idp.last(), (None, token_form("t")));
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
    idp.userinfo(
        "t",
        200,
        json!({"sub": "alice-id", "email": "alice@example.com"}),
    );
    for _ in 0..2 {
        let mut r = bearer("t");
        assert!(chain.authorize(&mut r).await.is_allow());
        assert_eq!(r.state["introspection"]["email"], "alice@example.com");
        assert_eq!(r.state["tokenIntrospection"]["username"], "alice");
    }
    assert_eq!((idp.introspections(), idp.userinfos()), (1, 1));
}

/// An ID token signed by the access tokens' key (Cognito's access tokens
/// carry no `aud` to tell them apart) is not an access token.
#[tokio::test]
async fn a_signed_id_token_is_not_an_access_token() {
    let (chain, _engine) = chain_of(&local_jwt("")).await;
    for (member, kind, want) in [
        ("token_use", "id", 401),
        ("typ", "ID", 401),
        ("token_type", "refresh_token", 401),
        ("token_use", "access", 200),
        ("typ", "Bearer", 200),
    ] {
        let mut claims = claims();
        claims[member] = json!(kind);
        let d = chain.authorize(&mut bearer(&sign(&claims))).await;
        assert_eq!(status(&d), want, "{member}: {kind}");
        if want == 401 {
            assert_eq!(challenge(&d), INVALID);
        }
    }
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

// ---------------------------------------------------------------- attacks
//
// The step attacked: the bearer header, JWT headers, introspection
// answers of every shape, the cache under floods and cancellations, the
// IdP client against hostile servers, and what errors and logs show.

use authchain_core::{Answer, AuthService, BuildContext};
use authchain_steps::oauth2::access::AccessToken;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request with each of `values` as its own `Authorization` header.
fn authorizations(values: &[&str]) -> AuthorizationRequest {
    let mut r = AuthorizationRequest::new(http::Method::GET, "/");
    for v in values {
        r.headers.append(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    r
}

/// What a [`raw_server`] does with a connection once it read a request.
type Script = Arc<dyn Fn(TcpStream) -> BoxFuture<'static, ()> + Send + Sync>;

/// Reads one request: its head and its `Content-Length` body (a server
/// that closes with unread bytes resets the connection, and the client
/// may never see the answer). False when the peer went away.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return true;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A server on 127.0.0.1 that reads each request and runs `script` on its
/// connection: its base URL, and how many requests it read.
async fn raw_server(script: Script) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (script, seen) = (script.clone(), seen.clone());
            tokio::spawn(async move {
                if read_request(&mut stream).await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    script(stream).await;
                }
            });
        }
    });
    (base, count)
}

/// A script answering `status` with `content_type` and `body`, then
/// closing.
fn answering(status: u16, content_type: &str, body: &str) -> Script {
    let answer = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Arc::new(move |mut stream| {
        let answer = answer.clone();
        Box::pin(async move {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
    })
}

/// The step built alone from an `accessTokenValidation` block.
fn step(block: Value) -> AccessToken {
    let block = serde_json::from_value(block).unwrap();
    AccessToken::new(block, &BuildContext::new("a", "s", "configs[0]")).unwrap()
}

/// The step's error for `token`, as its text and debug form.
async fn step_error(step: &AccessToken, token: &str) -> String {
    let mut r = bearer(token);
    let answer = match step.authorize(&mut r) {
        Answer::Wait(f) => f.await,
        Answer::Ready(answer) => answer,
    };
    match answer {
        Err(e) => format!("{e} {e:?}"),
        Ok(d) => panic!("expected an error: {d:?}"),
    }
}

#[tokio::test]
async fn the_bearer_header_is_read_one_way_only() {
    let (chain, _engine) = chain_of(&local_jwt("")).await;
    let token = sign(&claims());
    let other =
        sign(&json!({"sub": "mallory", "exp": now() + 600, "iss": ISSUER, "aud": "ratings"}));
    // (case, Authorization headers, status, invalid_token)
    let cases: Vec<(&str, Vec<String>, u16, bool)> = vec![
        ("Bearer", vec![format!("Bearer {token}")], 200, false),
        (
            "the scheme in any case",
            vec![format!("bEARER {token}")],
            200,
            false,
        ),
        (
            "spaces around",
            vec![format!("Bearer    {token}   ")],
            200,
            false,
        ),
        (
            "a tab for the space",
            vec![format!("Bearer\t{token}")],
            401,
            true,
        ),
        ("no space", vec![format!("Bearer{token}")], 401, true),
        (
            "two tokens",
            vec![format!("Bearer {token} {other}")],
            401,
            true,
        ),
        // Envoy joins repeated headers with a comma.
        (
            "joined by a comma",
            vec![format!("Bearer {token},Bearer {other}")],
            401,
            true,
        ),
        (
            "a trailing comma",
            vec![format!("Bearer {token},")],
            401,
            true,
        ),
        // Which of two headers an app reads is its own choice: neither.
        (
            "two headers, the good one first",
            vec![format!("Bearer {token}"), format!("Bearer {other}x")],
            401,
            true,
        ),
        (
            "two headers, the good one last",
            vec!["Basic YWxpY2U6cHc=".to_owned(), format!("Bearer {token}")],
            401,
            true,
        ),
        (
            "another scheme",
            vec!["Basic YWxpY2U6cHc=".to_owned()],
            401,
            false,
        ),
        ("an empty token", vec!["Bearer    ".to_owned()], 401, true),
    ];
    for (name, values, want, invalid) in cases {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let d = chain.authorize(&mut authorizations(&values)).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
        if want == 401 {
            let expected = if invalid {
                INVALID
            } else {
                "Bearer realm=\"authchain\""
            };
            assert_eq!(challenge(&d), expected, "case {name}");
        }
    }
    // RFC 6750 also allows the token in the query or a form body; the
    // step reads neither (a token in a URL lands in logs and caches).
    let mut query = req(http::Method::GET, &format!("/?access_token={token}"));
    let d = chain.authorize(&mut query).await;
    assert_eq!(challenge(&d), "Bearer realm=\"authchain\"", "no token");
    // A token in the query beside the header's, in any spelling: the app
    // may read that one, which nothing checked (RFC 6750 2: a 400).
    for query in ["access_token=x", "a=1&access%5Ftoken=x", "access_tok%65n"] {
        let mut both = req(http::Method::GET, &format!("/?{query}")).with_header(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let d = chain.authorize(&mut both).await;
        assert_eq!(status(&d), 400, "{query}");
        assert_eq!(
            challenge(&d),
            "Bearer realm=\"authchain\", error=\"invalid_request\"",
            "{query}"
        );
    }
    let mut form = req(http::Method::POST, "/").with_header(
        http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    form.body = Some(Bytes::from(format!("access_token={token}")));
    assert_eq!(
        challenge(&chain.authorize(&mut form).await),
        "Bearer realm=\"authchain\""
    );
}

#[tokio::test]
async fn a_token_outside_rfc_6750_never_reaches_the_idp() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    for token in [
        "good,", "good;x", "a\"b", "a\\b", "=abc", "a=b", "%41", "{}", "a:b",
    ] {
        idp.answer(token, active(600));
        let d = chain.authorize(&mut bearer(token)).await;
        assert_eq!(challenge(&d), INVALID, "{token}");
    }
    assert_eq!(idp.introspections(), 0);
    // What RFC 6750 allows goes: base64 and base64url, with padding.
    for token in ["aZ09-._~+/", "abc==", "x"] {
        idp.answer(token, active(600));
        assert!(
            chain.authorize(&mut bearer(token)).await.is_allow(),
            "{token}"
        );
    }
}

/// `claims` signed by the test RSA key under a header made by `header`.
fn sign_header(header: Value, claims: &Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = EncodingKey::from_rsa_pem(RSA).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256).unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn jwt_headers_cannot_pick_another_key_or_skip_a_check() {
    let (chain, _engine) = chain_of(&local_jwt("")).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // The header as the RSA key signs it, and the same with one change.
    let good = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"});
    let with = |k: &str, v: Value| {
        let mut h = good.clone();
        h[k] = v;
        h
    };
    assert!(
        chain
            .authorize(&mut bearer(&sign_header(good.clone(), &claims())))
            .await
            .is_allow()
    );
    let inner = sign(&claims());
    let rsa_public = {
        let jwks: Value = serde_json::from_str(JWKS).unwrap();
        jwks["keys"][0].to_string()
    };
    let cases: Vec<(&str, String)> = vec![
        // RFC 7515 4.1.11: an extension the recipient does not know.
        ("crit", sign_header(with("crit", json!(["exp"])), &claims())),
        (
            "crit, empty",
            sign_header(with("crit", json!([])), &claims()),
        ),
        (
            "crit, b64 false",
            sign_header(with("crit", json!(["b64"])), &claims()),
        ),
        // A kid naming a key of another algorithm.
        (
            "ES256 under the RSA key's kid",
            sign_with(
                EncodingKey::from_ec_pem(include_bytes!("../keys/ec.pem")).unwrap(),
                Algorithm::ES256,
                "rsa-1",
                &claims(),
            ),
        ),
        (
            "RS256 under the HMAC key's kid",
            sign_with(
                EncodingKey::from_rsa_pem(RSA).unwrap(),
                Algorithm::RS256,
                "hs-1",
                &claims(),
            ),
        ),
        (
            "HS256 under the HMAC key's kid, keyed with the RSA JWK",
            sign_with(
                EncodingKey::from_secret(rsa_public.as_bytes()),
                Algorithm::HS256,
                "hs-1",
                &claims(),
            ),
        ),
        (
            "HS256 without a kid, keyed with the RSA JWK",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(),
                &EncodingKey::from_secret(rsa_public.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "a path for a kid",
            sign_with(
                EncodingKey::from_rsa_pem(RSA).unwrap(),
                Algorithm::RS256,
                "../../keys/rsa.pem",
                &claims(),
            ),
        ),
        (
            "a huge kid",
            sign_with(
                EncodingKey::from_rsa_pem(RSA).unwrap(),
                Algorithm::RS256,
                &"k".repeat(5000),
                &claims(),
            ),
        ),
        // Keys the token brings along: never fetched, never used.
        ("the attacker's key, by jku", {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some("rsa-1".to_owned());
            h.jku = Some("https://evil.example/jwks".to_owned());
            jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_rsa_pem(RSA2).unwrap()).unwrap()
        }),
        ("the attacker's key, as jwk", {
            let jwks: Value = serde_json::from_str(include_str!("../keys/jwks-rsa2.json")).unwrap();
            let mut h = Header::new(Algorithm::RS256);
            h.jwk = Some(serde_json::from_value(jwks["keys"][0].clone()).unwrap());
            jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_rsa_pem(RSA2).unwrap()).unwrap()
        }),
        // Nested tokens and JWE.
        (
            "a JWT in a JWT (cty JWT)",
            format!(
                "{}.{}.x",
                b64(with("cty", json!("JWT")).to_string().as_bytes()),
                b64(inner.as_bytes())
            ),
        ),
        (
            "five parts",
            format!("{inner}.{}.{}", b64(b"{}"), b64(b"x")),
        ),
        (
            "a JWE",
            format!(
                "{}.a.b.c.d",
                b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}"#)
            ),
        ),
        (
            "alg none, no signature",
            format!(
                "{}.{}",
                b64(br#"{"alg":"none"}"#),
                b64(claims().to_string().as_bytes())
            ),
        ),
        (
            "alg None",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"None","kid":"rsa-1"}"#),
                b64(claims().to_string().as_bytes())
            ),
        ),
        (
            "alg rs256",
            sign_header(with("alg", json!("rs256")), &claims()),
        ),
        (
            "alg as a list",
            sign_header(with("alg", json!(["RS256"])), &claims()),
        ),
        (
            "kid as a number",
            sign_header(with("kid", json!(1)), &claims()),
        ),
    ];
    for (name, token) in cases {
        let mut r = bearer(&token);
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), 401, "case {name}: {d:?}");
        assert_eq!(challenge(&d), INVALID, "case {name}");
        assert!(r.state.is_empty(), "case {name}");
    }
}

#[tokio::test]
async fn kid_tricks_against_a_remote_jwks_cost_one_fetch_per_30s() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&config(&format!(
        "jwt:\n  remoteJwks: {{ url: {} }}\n  issuer: {ISSUER}",
        idp.url("/jwks")
    )))
    .await;
    assert_eq!(idp.state.jwks.load(Ordering::SeqCst), 1);
    let rsa = || EncodingKey::from_rsa_pem(RSA).unwrap();
    for i in 0..20 {
        let kid = format!("unknown-{i}");
        let token = sign_with(rsa(), Algorithm::RS256, &kid, &claims());
        assert_eq!(
            challenge(&chain.authorize(&mut bearer(&token)).await),
            INVALID
        );
        // A kid the set has, with an algorithm its key does not take.
        let token = sign_with(
            EncodingKey::from_ec_pem(include_bytes!("../keys/ec.pem")).unwrap(),
            Algorithm::ES256,
            "rsa-1",
            &claims(),
        );
        assert_eq!(
            challenge(&chain.authorize(&mut bearer(&token)).await),
            INVALID
        );
    }
    assert!(
        idp.state.jwks.load(Ordering::SeqCst) <= 2,
        "at most one refresh per minRefreshInterval"
    );
    assert!(
        chain
            .authorize(&mut bearer(&sign(&claims())))
            .await
            .is_allow()
    );
}

#[tokio::test]
async fn introspection_answers_of_every_shape() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(
        &idp,
        "requiredScopes: { scope: [ratings.read, ratings.write] }",
    ))
    .await;
    let with = |changes: Value| {
        let mut a = active(600);
        for (k, v) in changes.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    let deep = |n: usize| {
        format!(
            "raw:{{\"active\":true,\"x\":{}{}}}",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    // (case, answer, status)
    let cases: Vec<(&str, Value, u16)> = vec![
        ("active", active(600), 200),
        ("active as a string", with(json!({"active": "true"})), 503),
        ("active as a number", with(json!({"active": 1})), 503),
        ("active null", with(json!({"active": null})), 503),
        (
            "no active",
            {
                let mut a = active(600);
                a.as_object_mut().unwrap().remove("active");
                a
            },
            503,
        ),
        ("inactive", with(json!({"active": false})), 401),
        ("active, exp past", with(json!({"exp": now() - 1})), 401),
        ("active, exp now", with(json!({"exp": now()})), 401),
        (
            "active, exp a string",
            with(json!({"exp": "9999999999"})),
            503,
        ),
        ("active, exp absurd", with(json!({"exp": 1e300})), 503),
        ("the answer an array", json!([{"active": true}]), 503),
        (
            "twice active, false then true",
            json!("raw:{\"active\":false,\"active\":true}"),
            503,
        ),
        ("deeply nested", json!(deep(100_000)), 503),
        ("nested as far as allowed", json!(deep(100)), 403),
        (
            "over 1 MiB",
            json!(format!(
                "raw:{{\"active\":true,\"x\":\"{}\"}}",
                "a".repeat(1 << 20)
            )),
            503,
        ),
        ("not JSON", json!("raw:active=true"), 503),
        (
            "scope a list",
            with(json!({"scope": ["ratings.read", "ratings.write"]})),
            503,
        ),
        ("scope a number", with(json!({"scope": 7})), 503),
        (
            "scope null, scp a list",
            with(json!({"scope": null, "scp": ["ratings.read", "ratings.write"]})),
            200,
        ),
        (
            "scope doubled spaces",
            with(json!({"scope": "  ratings.read   ratings.write "})),
            200,
        ),
        (
            "scope with a tab",
            with(json!({"scope": "ratings.read\tratings.write"})),
            403,
        ),
        (
            "scope, longer names",
            with(json!({"scope": "ratings.read:all ratings.writer"})),
            403,
        ),
        (
            "scope, a prefix",
            with(json!({"scope": "ratings ratings.rea ratings.write"})),
            403,
        ),
        (
            "scope, another case",
            with(json!({"scope": "RATINGS.READ ratings.write"})),
            403,
        ),
        (
            "scope, one string",
            with(json!({"scope": "ratings.read,ratings.write"})),
            403,
        ),
        (
            "scope empty, scp has them",
            with(json!({"scope": "", "scp": "ratings.read ratings.write"})),
            403,
        ),
    ];
    for (i, (name, answer, want)) in cases.into_iter().enumerate() {
        let token = format!("t{i}");
        idp.answer(&token, answer);
        let mut r = bearer(&token);
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
        if want == 401 {
            assert_eq!(challenge(&d), INVALID, "case {name}");
        }
        if want != 200 {
            assert!(r.state.is_empty(), "case {name}");
            // Only a valid token's answer is kept (a 403 is one): the
            // rest are asked again.
            let before = idp.introspections();
            chain.authorize(&mut bearer(&token)).await;
            let again = usize::from(want != 403);
            assert_eq!(idp.introspections(), before + again, "case {name}: kept?");
        }
    }
}

#[tokio::test]
async fn the_user_is_a_non_empty_string_or_a_401() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "  userIdAttributeName: uid")).await;
    let with_uid = |uid: Value| {
        let mut a = active(600);
        a["uid"] = uid;
        a
    };
    let cases: Vec<(&str, Value, u16)> = vec![
        ("a string", with_uid(json!("alice")), 200),
        ("a number", with_uid(json!(42)), 401),
        ("a bool", with_uid(json!(true)), 401),
        ("a list", with_uid(json!(["alice"])), 401),
        ("an object", with_uid(json!({"id": "alice"})), 401),
        ("null", with_uid(json!(null)), 401),
        ("empty", with_uid(json!("")), 401),
        ("missing", active(600), 401),
    ];
    for (i, (name, answer, want)) in cases.into_iter().enumerate() {
        let token = format!("u{i}");
        idp.answer(&token, answer);
        let d = chain.authorize(&mut bearer(&token)).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
        if want == 200 {
            assert_eq!(
                d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
                "alice"
            );
        }
    }
    // RFC 7662's own members are typed: `sub` not a string is a bad answer.
    let (chain, _engine) = chain_of(&introspection(&idp, "  userIdAttributeName: sub")).await;
    let mut a = active(600);
    a["sub"] = json!(42);
    idp.answer("s", a);
    assert_eq!(status(&chain.authorize(&mut bearer("s")).await), 503);
}

#[tokio::test]
async fn each_token_has_its_own_answer() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "  userIdAttributeName: username")).await;
    let user = |name: &str| {
        let mut a = active(600);
        a["username"] = json!(name);
        a
    };
    // Tokens one bit apart, a prefix of another, and long ones that only
    // differ at the end.
    let long = "L".repeat(4000);
    let tokens = [
        ("tokenA".to_owned(), "alice"),
        ("tokenB".to_owned(), "bob"),
        ("token".to_owned(), "carol"),
        (format!("{long}1"), "dave"),
        (format!("{long}2"), "erin"),
    ];
    for (token, name) in &tokens {
        idp.answer(token, user(name));
    }
    for _ in 0..2 {
        for (token, name) in &tokens {
            let d = chain.authorize(&mut bearer(token)).await;
            assert_eq!(
                d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
                *name
            );
        }
    }
    assert_eq!(
        idp.introspections(),
        tokens.len(),
        "each asked once, then kept"
    );
    // One the IdP does not know, beside kept ones: asked, and refused.
    assert_eq!(
        challenge(&chain.authorize(&mut bearer("tokenC")).await),
        INVALID
    );
}

/// A call to the IdP outlives the request that made it: a request waiting
/// for it gets its answer, and so does the next one, from the cache.
#[tokio::test]
async fn a_call_outlives_the_request_that_made_it() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    idp.answer("t", active(600));
    *idp.state.delay.lock().unwrap() = Duration::from_millis(400);
    let leader = {
        let chain = chain.clone();
        tokio::spawn(async move { chain.authorize(&mut bearer("t")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = {
        let chain = chain.clone();
        tokio::spawn(async move { chain.authorize(&mut bearer("t")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        idp.introspections(),
        1,
        "the waiter waits for the leader's call"
    );
    // The leader's request goes away (its client left, a step timeout).
    leader.abort();
    let d = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the waiter does not hang")
        .unwrap();
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(idp.introspections(), 1, "the call went on without it");
    *idp.state.delay.lock().unwrap() = Duration::ZERO;
    assert!(chain.authorize(&mut bearer("t")).await.is_allow());
    assert_eq!(idp.introspections(), 1, "and its answer is kept");

    // A lone request that gives up: its call ends all the same, and the
    // next request has its answer.
    idp.answer("u", active(600));
    *idp.state.delay.lock().unwrap() = Duration::from_millis(300);
    let lone = {
        let chain = chain.clone();
        tokio::spawn(async move { chain.authorize(&mut bearer("u")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    lone.abort();
    let d = tokio::time::timeout(Duration::from_secs(3), chain.authorize(&mut bearer("u")))
        .await
        .expect("the call ends");
    assert!(d.is_allow());
    assert_eq!(idp.introspections(), 2, "one call for u");
}

#[tokio::test]
async fn a_flood_of_distinct_tokens_is_bounded_at_the_idp() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    *idp.state.delay.lock().unwrap() = Duration::from_millis(200);
    let tokens: Vec<String> = (0..150).map(|i| format!("flood{i}")).collect();
    for t in &tokens {
        idp.answer(t, active(600));
    }
    let runs: Vec<_> = tokens
        .iter()
        .map(|t| {
            let (chain, t) = (chain.clone(), t.clone());
            tokio::spawn(async move { chain.authorize(&mut bearer(&t)).await })
        })
        .collect();
    for run in runs {
        let d = run.await.unwrap();
        assert!(d.is_allow(), "{d:?}");
    }
    assert_eq!(
        idp.introspections(),
        tokens.len(),
        "one call per distinct token"
    );
    let most = idp.state.max_inflight.load(Ordering::SeqCst);
    assert!(most <= 64, "{most} calls at once to the IdP");
}

#[tokio::test]
async fn kept_answers_are_bounded_in_bytes() {
    let idp = Idp::start().await;
    let (chain, _engine) = chain_of(&introspection(&idp, "")).await;
    // 60 answers of 900 KiB: 53 MiB, in 60 of the 10 000 places.
    let blob = "b".repeat(900 * 1024);
    let tokens: Vec<String> = (0..60).map(|i| format!("big{i}")).collect();
    for t in &tokens {
        let mut a = active(600);
        a["blob"] = json!(blob);
        idp.answer(t, a);
    }
    for t in &tokens {
        assert!(chain.authorize(&mut bearer(t)).await.is_allow());
    }
    assert_eq!(idp.introspections(), 60);
    for t in &tokens {
        assert!(chain.authorize(&mut bearer(t)).await.is_allow());
    }
    let again = idp.introspections() - 60;
    assert!(
        again >= 20,
        "only {again} of 60 asked again: the cache kept too much"
    );
}

#[tokio::test]
async fn the_idp_client_follows_no_redirect() {
    let idp = Idp::start().await;
    idp.answer("t", active(600));
    let target = idp.url("/introspect-open");
    let redirect: Script = {
        Arc::new(move |mut stream| {
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            Box::pin(async move {
                let _ = stream.write_all(answer.as_bytes()).await;
            })
        })
    };
    let (base, asked) = raw_server(redirect).await;
    let (chain, _engine) = chain_of(&config(&format!("introspectionUrl: {base}/introspect"))).await;
    assert_eq!(status(&chain.authorize(&mut bearer("t")).await), 503);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(idp.introspections(), 0, "the redirect is not followed");
    // Nor at userinfo (a JWT that needs it).
    let (chain, _engine) = chain_of(&local_jwt(&format!("userinfoUrl: {base}/userinfo"))).await;
    assert_eq!(
        status(&chain.authorize(&mut bearer(&sign(&claims()))).await),
        503
    );
    assert_eq!(idp.userinfos(), 0);
}

#[tokio::test]
async fn the_idp_client_bounds_answers_and_time() {
    // 2 MiB of JSON whitespace before an active answer, chunked: read
    // whole, it would be an allow.
    let chunked: Script = Arc::new(|mut stream| {
        Box::pin(async move {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let pad = " ".repeat(64 * 1024);
            for _ in 0..32 {
                let chunk = format!("{:x}\r\n{pad}\r\n", pad.len());
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            let body = "{\"active\":true}";
            let end = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            let _ = stream.write_all(end.as_bytes()).await;
        })
    });
    // A body without a length, ended by closing, over the bound.
    let unframed: Script = Arc::new(|mut stream| {
        Box::pin(async move {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            let pad = " ".repeat(2 << 20);
            let _ = stream.write_all(pad.as_bytes()).await;
            let _ = stream.write_all(b"{\"active\":true}").await;
        })
    });
    // Headers, then a body one byte at a time, forever.
    let trickle_body: Script = Arc::new(|mut stream| {
        Box::pin(async move {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            while stream.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    // Headers that never end.
    let trickle_head: Script = Arc::new(|mut stream| {
        Box::pin(async move {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
            while stream.write_all(b"x-a: b\r\n").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    for (name, script) in [
        ("chunked", chunked),
        ("unframed", unframed),
        ("trickled body", trickle_body),
        ("trickled head", trickle_head),
    ] {
        let (base, _) = raw_server(script).await;
        let (chain, _engine) = chain_of(&config(&format!(
            "introspectionUrl: {base}/introspect\ntimeout: 500ms"
        )))
        .await;
        let started = Instant::now();
        let d = chain.authorize(&mut bearer("t")).await;
        assert_eq!(status(&d), 503, "{name}: {d:?}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{name}: {:?}",
            started.elapsed()
        );
    }
    // A connect that never completes: a listener whose backlog is full
    // drops the SYN.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    let mut held = Vec::new();
    let hangs = loop {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) if held.len() < 16 => held.push(stream),
            Ok(_) => break false,
            Err(_) => break true,
        }
    };
    if hangs {
        let (chain, _engine) = chain_of(&config(&format!(
            "introspectionUrl: http://{addr}/introspect\ntimeout: 500ms"
        )))
        .await;
        let started = Instant::now();
        assert_eq!(status(&chain.authorize(&mut bearer("t")).await), 503);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    } else {
        eprintln!("no connect hangs here: the connect case is not run");
    }
}

#[tokio::test]
async fn errors_and_logs_quote_no_token_secret_or_answer() {
    let (logs, _guard) = Logs::capture();
    let token = "tok-SECRET-T";
    let deep = format!(
        "{{\"active\":true,\"SECRET-K\":{}{}}}",
        "[".repeat(300),
        "]".repeat(300)
    );
    let hostile: Vec<(&str, Script)> = vec![
        (
            "an error code of its own",
            answering(400, "application/json", "{\"error\":\"SECRET-1\"}"),
        ),
        (
            "an error description",
            answering(
                401,
                "application/json",
                "{\"error\":\"invalid_client\",\"error_description\":\"SECRET-2\"}",
            ),
        ),
        (
            "not JSON, said so",
            answering(200, "text/SECRET-3", "{\"active\":true}"),
        ),
        (
            "active a string",
            answering(200, "application/json", "{\"active\":\"SECRET-4\"}"),
        ),
        (
            "exp a string",
            answering(
                200,
                "application/json",
                "{\"active\":true,\"exp\":\"SECRET-5\"}",
            ),
        ),
        (
            "too deep under a key",
            answering(200, "application/json", &deep),
        ),
        ("a 500 with text", answering(500, "text/plain", "SECRET-6")),
        (
            "a 200 with text",
            answering(200, "application/json", "SECRET-7"),
        ),
        (
            "a member named by a secret",
            answering(200, "application/json", "{\"SECRET-8\":1}"),
        ),
    ];
    for (name, script) in hostile {
        let (base, _) = raw_server(script).await;
        let step = step(json!({
            "introspection": {
                "introspectionUrl": format!("{base}/introspect"),
                "clientId": "ratings",
                "clientSecretRef": { "env": "AUTHCHAIN_TEST_NO_SUCH_VAR_IS_SET" },
                "disableClientSecret": true,
            },
        }));
        let text = step_error(&step, token).await;
        assert!(!text.contains("SECRET"), "{name}: {text}");
    }
    // The userinfo endpoint's answers, for a JWT.
    for (name, script) in [
        (
            "userinfo text",
            answering(200, "application/json", "SECRET-9"),
        ),
        (
            "userinfo a list",
            answering(200, "application/json", "[\"SECRET-10\"]"),
        ),
        (
            "userinfo a 500",
            answering(500, "application/json", "{\"error\":\"SECRET-11\"}"),
        ),
    ] {
        let (base, _) = raw_server(script).await;
        let step = step(json!({
            "jwt": { "localJwks": { "inlineString": JWKS } },
            "userinfoUrl": format!("{base}/userinfo"),
        }));
        let jwt = sign(&claims());
        let text = step_error(&step, &jwt).await;
        assert!(
            !text.contains("SECRET") && !text.contains(&jwt),
            "{name}: {text}"
        );
    }
    let logged = logs.text();
    assert!(logged.contains("oauth2"), "the step logged: {logged}");
    assert!(!logged.contains("SECRET"), "{logged}");
}

#[tokio::test]
async fn the_log_at_trace_holds_no_token_secret_or_answer_value() {
    let idp = Idp::start().await;
    let (logs, _guard) = Logs::capture();
    let (chain, _engine) = chain_of(&introspection(
        &idp,
        &format!(
            "  userIdAttributeName: username\nuserinfoUrl: {}\nclaimsToHeaders: [{{ claim: org, header: x-org }}]",
            idp.url("/userinfo")
        ),
    ))
    .await;
    let token = "opaque-token-VALUE-1";
    let mut answer = active(600);
    answer["username"] = json!("alice-VALUE-2");
    answer["org"] = json!("org-VALUE-3");
    idp.answer(token, answer);
    idp.userinfo(
        token,
        200,
        json!({"sub": "alice-id", "email": "alice-VALUE-4@example.com"}),
    );
    for _ in 0..2 {
        let d = chain.authorize(&mut bearer(token)).await;
        assert_eq!(upstream(&d, "x-org").as_deref(), Some("org-VALUE-3"));
    }
    // A rejected token, an expired answer, a failure.
    idp.answer(
        "expired-VALUE-5",
        json!({"active": true, "exp": now() - 5, "sub": "VALUE-6"}),
    );
    chain.authorize(&mut bearer("expired-VALUE-5")).await;
    chain.authorize(&mut bearer("unknown-VALUE-7")).await;
    idp.answer("fail-VALUE-8", json!("fail"));
    chain.authorize(&mut bearer("fail-VALUE-8")).await;
    let logged = logs.text();
    assert!(logged.contains("oauth2"), "the step logged: {logged}");
    assert!(!logged.contains("VALUE"), "{logged}");
    assert!(!logged.contains(CLIENT.1), "{logged}");
}

#[tokio::test]
async fn debug_forms_show_no_secret() {
    let jwks_with_hmac = JWKS.to_owned();
    let hmac_k = serde_json::from_str::<Value>(JWKS).unwrap()["keys"][3]["k"]
        .as_str()
        .unwrap()
        .to_owned();
    let block: authchain_steps::oauth2::config::AccessTokenValidation =
        serde_json::from_value(json!({
            "jwt": { "localJwks": { "inlineString": jwks_with_hmac } },
            "userinfoUrl": "https://idp.example.com/me",
        }))
        .unwrap();
    let shown = format!("{block:?}");
    assert!(!shown.contains(&hmac_k), "{shown}");
    let step = AccessToken::new(block, &BuildContext::new("a", "s", "configs[0]")).unwrap();
    let shown = format!("{step:?} {step:#?}");
    assert!(!shown.contains(&hmac_k), "{shown}");
    assert!(shown.contains("https://idp.example.com/me"), "{shown}");
    // The introspection block's reference names where the secret is.
    let block: authchain_steps::oauth2::config::AccessTokenValidation =
        serde_json::from_value(json!({
            "introspection": {
                "introspectionUrl": "https://idp.example.com/introspect",
                "clientId": "ratings",
                "clientSecretRef": { "env": "AUTHCHAIN_TEST_SECRET_VAR" },
            },
        }))
        .unwrap();
    let shown = format!("{block:?}");
    assert!(shown.contains("AUTHCHAIN_TEST_SECRET_VAR"), "{shown}");
    // A password in a URL (Go's client, Gloo's, sends it as HTTP Basic):
    // refused where it stands, and not quoted.
    for (field, url) in [
        (
            "introspectionUrl",
            "https://ratings:pw-SECRET@idp.example.com/introspect",
        ),
        ("userinfoUrl", "https://me:pw-SECRET2@idp.example.com/me"),
    ] {
        let mut block = json!({ "introspectionUrl": "https://idp.example.com/introspect" });
        block[field] = json!(url);
        let err = AccessToken::new(
            serde_json::from_value(block).unwrap(),
            &BuildContext::new("c", "s", "p"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(field) && text.contains("credentials in a URL"),
            "{text}"
        );
        assert!(!text.contains("pw-SECRET"), "{text}");
    }
}

// ------------------------------------------------------- the IdP, attacked

#[tokio::test]
async fn a_real_idps_token_is_never_allowed_past_its_exp() {
    let mut idp_config =
        authchain_testkit::idp::IdpConfig::single("app", "appsecret", "http://127.0.0.1:1/cb");
    idp_config.ttl.client_credentials = Some(3);
    let idp = authchain_testkit::idp::Idp::start(idp_config)
        .await
        .unwrap();
    let discovery = idp.discovery().await.unwrap();
    let (chain, _engine) = chain_of(&format!(
        "apiVersion: v1\nkind: Secret\ntype: extauth.solo.io/oauth\nmetadata: {{ name: app-oauth }}\nstringData: {{ client-secret: appsecret }}\n---\n{}",
        config(&format!(
            "introspection:\n  introspectionUrl: '{}'\n  clientId: app\n  clientSecretRef: {{ name: app-oauth }}\ncacheTimeout: 10m",
            discovery["introspection_endpoint"].as_str().unwrap()
        ))
    ))
    .await;
    let token = idp
        .client_credentials("app", "appsecret", "api:read", false)
        .await
        .unwrap();
    idp.reset_requests().await.unwrap();
    let d = chain.authorize(&mut bearer(&token)).await;
    let expires = d
        .as_allow()
        .unwrap_or_else(|| panic!("{d:?}"))
        .expires
        .unwrap();
    assert!(expires <= SystemTime::now() + Duration::from_secs(3));
    assert!(chain.authorize(&mut bearer(&token)).await.is_allow());
    assert_eq!(idp.requests().await.unwrap().introspection, 1);
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let d = chain.authorize(&mut bearer(&token)).await;
    assert_eq!(
        challenge(&d),
        INVALID,
        "past exp, though cacheTimeout is 10m"
    );
    assert_eq!(
        idp.requests().await.unwrap().introspection,
        2,
        "asked again"
    );
}

#[tokio::test]
async fn a_real_idps_keys_cannot_be_confused() {
    let idp = real_idp().await;
    let discovery = idp.discovery().await.unwrap();
    let jwks = idp.jwks().await.unwrap();
    let (chain, _engine) = chain_of(&config(&format!(
        "jwt:\n  remoteJwks: {{ url: '{}' }}\n  issuer: '{}'",
        discovery["jwks_uri"].as_str().unwrap(),
        discovery["issuer"].as_str().unwrap(),
    )))
    .await;
    let good = idp
        .client_credentials("app", "appsecret", "api:read", true)
        .await
        .unwrap();
    assert!(chain.authorize(&mut bearer(&good)).await.is_allow());
    let real = jsonwebtoken::decode_header(&good).unwrap();
    let kid = real.kid.clone().unwrap();
    let mut claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&good)
        .unwrap()
        .claims;
    claims["scope"] = json!("api:read api:write admin");
    let key = &jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let confusions = [
        key.to_string(),
        jwks.to_string(),
        key["n"].as_str().unwrap().to_owned(),
    ];
    for secret in &confusions {
        for kid in [Some(kid.as_str()), None] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(str::to_owned);
            let forged = jsonwebtoken::encode(
                &header,
                &claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap();
            assert_eq!(
                challenge(&chain.authorize(&mut bearer(&forged)).await),
                INVALID
            );
        }
    }
    // The real token with its claims changed keeps its signature: no.
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        challenge(&chain.authorize(&mut bearer(&tampered)).await),
        INVALID
    );
    assert!(
        idp.requests().await.unwrap().jwks <= 2,
        "one refresh at most"
    );
}

#[tokio::test]
async fn a_real_idps_client_secret_and_tokens_stay_out_of_the_log() {
    let idp = real_idp().await;
    let discovery = idp.discovery().await.unwrap();
    let (logs, _guard) = Logs::capture();
    let (chain, _engine) = chain_of(&format!(
        "apiVersion: v1\nkind: Secret\ntype: extauth.solo.io/oauth\nmetadata: {{ name: app-oauth }}\nstringData: {{ client-secret: appsecret }}\n---\n{}",
        config(&format!(
            "introspection:\n  introspectionUrl: '{}'\n  clientId: app\n  clientSecretRef: {{ name: app-oauth }}\n  userIdAttributeName: client_id",
            discovery["introspection_endpoint"].as_str().unwrap()
        ))
    ))
    .await;
    let token = idp
        .client_credentials("app", "appsecret", "api:read", false)
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(chain.authorize(&mut bearer(&token)).await.is_allow());
    }
    let forged = format!("{token}x");
    assert_eq!(
        challenge(&chain.authorize(&mut bearer(&forged)).await),
        INVALID
    );
    let logged = logs.text();
    assert!(logged.contains("oauth2"), "{logged}");
    assert!(!logged.contains(&token), "{logged}");
    assert!(!logged.contains("appsecret"), "{logged}");
    // Nor the secret as HTTP Basic sends it.
    let basic = base64::engine::general_purpose::STANDARD.encode("app:appsecret");
    assert!(!logged.contains(&basic), "{logged}");
}

// -------------------------------------------------------------- discovery
//
// idp.rs's discovery (the oidc step's) against a document the test
// serves.

/// The oidc step for an IdP at `base`, started once: its start error.
async fn discovery_error(base: &str) -> Option<String> {
    use authchain_steps::oauth2::oidc::Oidc;
    let block = serde_json::from_value(json!({
        "clientId": "app",
        "disableClientSecret": true,
        "issuerUrl": base,
        "appUrl": "http://127.0.0.1:1",
        "callbackPath": "/callback",
        "timeout": "2s",
    }))
    .unwrap();
    let step = Oidc::new(block, &BuildContext::new("a", "s", "configs[0]")).unwrap();
    let lifecycle = authchain_core::Lifecycle::new(1, tokio_util::sync::CancellationToken::new());
    let result = step.start(lifecycle.clone()).await;
    lifecycle.token().cancel();
    result.err().map(|e| format!("{e} {e:?}"))
}

fn discovery_doc(issuer: &str, base: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "end_session_endpoint": format!("{base}/logout"),
        "revocation_endpoint": format!("{base}/revoke"),
    })
}

#[tokio::test]
async fn discovery_checks_its_issuer_and_endpoints() {
    let idp = Idp::start().await;
    let base = idp.base.clone();
    let serve = |doc: Value| *idp.state.discovery.lock().unwrap() = doc.to_string();
    serve(discovery_doc(&base, &base));
    assert_eq!(discovery_error(&base).await, None);
    // A trailing slash on either side is the same issuer.
    serve(discovery_doc(&format!("{base}/"), &base));
    assert_eq!(discovery_error(&base).await, None);
    // Another issuer: another host, port, scheme, path or case.
    let port = idp.base.rsplit(':').next().unwrap();
    for issuer in [
        "https://evil.example".to_owned(),
        format!("http://localhost:{port}"),
        base.replace("http://", "https://"),
        format!("{base}/tenant"),
        format!("{base}//"),
        base.to_uppercase(),
        format!("{base}/.well-known/openid-configuration"),
    ] {
        serve(discovery_doc(&issuer, &base));
        assert!(discovery_error(&base).await.is_some(), "issuer {issuer}");
    }
    // Endpoints: http(s) only, on any host (Gloo trusts discovery, and
    // IdPs serve keys from other hosts), http:// with a warning.
    {
        let (logs, _guard) = Logs::capture();
        let mut doc = discovery_doc(&base, &base);
        doc["end_session_endpoint"] = json!("http://logout.elsewhere.example/end");
        serve(doc);
        assert_eq!(discovery_error(&base).await, None);
        let logged = logs.text();
        assert!(
            logged.contains("WARN") && logged.contains("end_session_endpoint"),
            "{logged}"
        );
    }
    serve(discovery_doc(&base, "https://keys.elsewhere.example"));
    let e = discovery_error(&base)
        .await
        .expect("the JWKS is not reachable");
    assert!(e.contains("JWKS") || e.contains("jwks"), "{e}");
    for (member, bad) in [
        ("token_endpoint", "file:///etc/passwd"),
        ("jwks_uri", "data:application/json,{\"keys\":[]}"),
        ("authorization_endpoint", "javascript:alert(1)"),
        ("end_session_endpoint", "javascript:alert(1)"),
        ("end_session_endpoint", "myapp://logout"),
        ("revocation_endpoint", "file:///etc/passwd"),
        ("jwks_uri", "/jwks"),
    ] {
        let mut doc = discovery_doc(&base, &base);
        doc[member] = json!(bad);
        serve(doc);
        let e = discovery_error(&base).await;
        assert!(
            e.as_ref().is_some_and(|e| e.contains(member)),
            "{member} {bad}: {e:?}"
        );
    }
}

#[tokio::test]
async fn discovery_errors_quote_nothing_of_the_document() {
    let idp = Idp::start().await;
    let base = idp.base.clone();
    for body in [
        format!(
            "{{\"issuer\":\"{base}\",\"jwks_uri\":\"{base}/jwks\",\"id_token_signing_alg_values_supported\":\"SECRET-1\"}}"
        ),
        "{\"issuer\":987654321}".to_owned(),
        "SECRET-2".to_owned(),
        format!("{{\"issuer\":\"{base}\",\"token_endpoint\":[\"SECRET-3\"]}}"),
        "{\"issuer\":\"SECRET-4\"}".to_owned(),
    ] {
        *idp.state.discovery.lock().unwrap() = body.clone();
        let e = discovery_error(&base).await.expect("a bad document");
        assert!(
            !e.contains("SECRET") && !e.contains("987654321"),
            "{body}: {e}"
        );
    }
}
