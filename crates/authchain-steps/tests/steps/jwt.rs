//! `jwt`, with a local JWKS and one served on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::common::*;

const RSA: &[u8] = include_bytes!("../keys/rsa.pem");
const RSA2: &[u8] = include_bytes!("../keys/rsa2.pem");
const EC: &[u8] = include_bytes!("../keys/ec.pem");
const ED: &[u8] = include_bytes!("../keys/ed25519.pem");
const HS: &[u8] = b"a-test-only-hmac-secret-of-32-by";

fn jwks_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": "https://issuer.example.com",
        "aud": "ratings",
        "exp": now() + 600,
        "org": { "id": 42 },
    })
}

fn sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(if kid == "rsa-2" { RSA2 } else { RSA }),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED),
        _ => Ok(EncodingKey::from_secret(HS)),
    }
    .unwrap();
    let mut header = Header::new(alg);
    if !kid.is_empty() {
        header.kid = Some(kid.to_owned());
    }
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// `claims`, as written, signed with RS256 under `rsa-1`.
fn signed_text(claims: &str) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let message = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","kid":"rsa-1"}"#),
        b64(claims.as_bytes())
    );
    let key = EncodingKey::from_rsa_pem(RSA).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256).unwrap();
    format!("{message}.{signature}")
}

fn bearer(token: &str) -> authchain_core::AuthorizationRequest {
    get_with("/", "authorization", &format!("Bearer {token}"))
}

fn local_config(extra: &str) -> String {
    format!(
        r#"
name: j
configs:
- jwt:
    issuer: https://issuer.example.com
    audiences: [ratings]
    leeway: 30s
    jwks:
      local:
        file: {}
    claimsToHeaders:
    - {{ claim: sub, header: x-user-id }}
    - {{ claim: org.id, header: x-org-id }}
{extra}"#,
        jwks_path("jwks.json")
    )
}

/// An `exp` past what a clock holds (a valid signature on it) allows,
/// with no expiry for a cache to keep; it made the step panic.
#[tokio::test]
async fn an_exp_past_any_clock_is_no_panic() {
    let chain = chain(&local_config("")).await;
    let mut claims = claims();
    claims["exp"] = json!(10_000_000_000_000_000_000u64);
    let d = chain
        .authorize(&mut bearer(&sign(Algorithm::RS256, "rsa-1", &claims)))
        .await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.as_allow().unwrap().expires, None);
}

#[tokio::test]
async fn rs256_es256_eddsa_and_hs256_tokens_verify() {
    let chain = chain(&local_config("")).await;
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
        (Algorithm::HS256, "hs-1"),
        (Algorithm::ES256, ""), // no kid: every key of the right type is tried
    ] {
        let claims = claims();
        let mut r = bearer(&sign(alg, kid, &claims));
        let d = chain.authorize(&mut r).await;
        assert!(d.is_allow(), "{alg:?}: {d:?}");
        assert_eq!(upstream(&d, "x-user-id").as_deref(), Some("alice"));
        assert_eq!(upstream(&d, "x-org-id").as_deref(), Some("42"));
        assert_eq!(
            d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
            "alice"
        );
        assert_eq!(r.state["jwt"]["org"]["id"], 42);
        // A decision cache keeps the allow no longer than the token.
        let exp = claims["exp"].as_u64().unwrap();
        assert_eq!(
            d.as_allow().unwrap().expires,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp))
        );
    }
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token() {
    let chain = chain(&local_config("")).await;
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let good = sign(Algorithm::RS256, "rsa-1", &claims());
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&with("sub", json!("admin"))).unwrap(),
        );
        parts.join(".")
    };
    let none_alg = format!(
        "{}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT"}"#
        ),
        good.split('.').nth(1).unwrap()
    );
    let forged = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_rsa_pem(RSA2).unwrap(),
        )
        .unwrap()
    };
    let cases = vec![
        (
            "expired",
            sign(Algorithm::RS256, "rsa-1", &with("exp", json!(now() - 120))),
        ),
        (
            "not yet valid",
            sign(Algorithm::RS256, "rsa-1", &with("nbf", json!(now() + 120))),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::RS256,
                "rsa-1",
                &with("iss", json!("https://evil")),
            ),
        ),
        (
            "wrong audience",
            sign(Algorithm::RS256, "rsa-1", &with("aud", json!("other"))),
        ),
        ("no exp", sign(Algorithm::RS256, "rsa-1", &without("exp"))),
        ("no aud", sign(Algorithm::RS256, "rsa-1", &without("aud"))),
        (
            "other key, same kid",
            sign(Algorithm::RS256, "rsa-2", &claims()),
        ),
        ("unknown kid", sign(Algorithm::RS256, "nope", &claims())),
        ("another key under a real kid", forged),
        // An HMAC token cannot pass as one of RS256's keys.
        (
            "HS256 under an RSA kid",
            sign(Algorithm::HS256, "rsa-1", &claims()),
        ),
        ("tampered", tampered),
        // One issuer, a string: jsonwebtoken takes an array if any of it
        // is the issuer.
        (
            "iss as an array",
            sign(
                Algorithm::RS256,
                "rsa-1",
                &with("iss", json!(["https://evil", "https://issuer.example.com"])),
            ),
        ),
        // A service reading the token after the step may take the first
        // of a repeated name: the step refuses it rather than take the
        // last.
        (
            "a claim named twice",
            signed_text(&format!(
                r#"{{"sub":"alice","iss":"https://issuer.example.com","aud":"ratings","exp":{},"scope":"admin","scope":"read"}}"#,
                now() + 600
            )),
        ),
        (
            "a member of a claim named twice",
            signed_text(&format!(
                r#"{{"sub":"alice","iss":"https://issuer.example.com","aud":"ratings","exp":{},"org":{{"id":1,"id":42}}}}"#,
                now() + 600
            )),
        ),
        ("alg none", none_alg),
        ("garbage", "a.b.c".to_owned()),
        ("one part", "abc".to_owned()),
        ("huge", "a".repeat(100_000)),
        ("non-base64", "@@@.@@@.@@@".to_owned()),
    ];
    for (name, token) in cases {
        let d = chain.authorize(&mut bearer(&token)).await;
        let deny = d
            .as_deny()
            .unwrap_or_else(|| panic!("case {name}: allowed"));
        assert_eq!(deny.status, 401, "case {name}");
        assert_eq!(
            deny.headers["www-authenticate"], "Bearer realm=\"authchain\", error=\"invalid_token\"",
            "case {name}"
        );
        // A token not yet valid passes in time: no decision cache (with
        // `cacheDenies`) keeps its refusal. The others stay refused.
        let kept = !deny.headers.contains_key(http::header::CACHE_CONTROL);
        assert_eq!(kept, name != "not yet valid", "case {name}");
    }
    // Within the leeway, an expired token still passes.
    let d = chain
        .authorize(&mut bearer(&sign(
            Algorithm::RS256,
            "rsa-1",
            &with("exp", json!(now() - 5)),
        )))
        .await;
    assert!(d.is_allow());
}

#[tokio::test]
async fn a_missing_token_gets_a_plain_challenge_an_unreadable_one_invalid_token() {
    let chain = chain(&local_config("    realm: ratings\n")).await;
    let plain = "Bearer realm=\"ratings\"";
    let invalid = "Bearer realm=\"ratings\", error=\"invalid_token\"";
    // (case, request, the challenge of its 401)
    let cases = [
        ("no header", req(http::Method::GET, "/"), plain),
        (
            "a cookie, no token",
            get_with("/", "cookie", "session=x"),
            plain,
        ),
        // Another step's credential (RFC 6750 3.1).
        (
            "Authorization of another scheme",
            get_with("/", "authorization", "Basic abc"),
            plain,
        ),
        (
            "Authorization of the scheme's word and no token",
            get_with("/", "authorization", "Bearer"),
            invalid,
        ),
        (
            "Authorization of no scheme",
            get_with("/", "authorization", "eyJhbGciOiJub25lIn0"),
            invalid,
        ),
        (
            "Authorization of another scheme, then a bearer, joined",
            get_with("/", "authorization", "Basic abc, Bearer x"),
            invalid,
        ),
        (
            "Authorization twice, of another scheme",
            get_with("/", "authorization", "Basic abc").with_header(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static("Basic abd"),
            ),
            invalid,
        ),
        (
            "a token not UTF-8",
            req(http::Method::GET, "/").with_header(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
            ),
            invalid,
        ),
    ];
    for (name, mut r, challenge) in cases {
        let d = chain.authorize(&mut r).await;
        let deny = d.as_deny().unwrap_or_else(|| panic!("case {name}: {d:?}"));
        assert_eq!(deny.status, 401, "case {name}");
        assert_eq!(deny.headers["www-authenticate"], challenge, "case {name}");
    }
}

/// An `Authorization` of another scheme beside a token in a cookie: the
/// app may read the header's credential, never checked.
#[tokio::test]
async fn a_token_in_a_cookie_beside_another_scheme_s_authorization_is_refused() {
    let chain = chain(&local_config(
        "    tokenSource:\n      headers: [{ header: authorization, prefix: \"Bearer \" }]\n      cookies: [access_token]\n",
    ))
    .await;
    let token = sign(Algorithm::ES256, "ec-1", &claims());
    let cookie = format!("access_token={token}");
    let mut r = get_with("/", "cookie", &cookie);
    assert!(chain.authorize(&mut r).await.is_allow());
    let invalid = "Bearer realm=\"authchain\", error=\"invalid_token\"";
    for authorization in [
        "Basic abc",
        "Token forged",
        "Basic abc,Bearer forged",
        "Bearer forged",
        "forged",
        " Bearer forged",
    ] {
        let mut r = get_with("/", "cookie", &cookie).with_header(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(authorization).unwrap(),
        );
        let d = chain.authorize(&mut r).await;
        let deny = d
            .as_deny()
            .unwrap_or_else(|| panic!("{authorization}: {d:?}"));
        assert_eq!(deny.status, 401, "{authorization}");
        assert_eq!(deny.headers["www-authenticate"], invalid, "{authorization}");
    }
}

#[tokio::test]
async fn a_token_from_a_cookie_or_a_custom_header() {
    let chain = chain(&local_config(
        "    tokenSource:\n      headers: [{ header: x-token }]\n      cookies: [access_token]\n",
    ))
    .await;
    let token = sign(Algorithm::ES256, "ec-1", &claims());
    // (case, the header and its value, the status)
    let cases = [
        (
            "in the cookie",
            "cookie",
            format!("a=b; access_token={token}"),
            200,
        ),
        ("in the custom header", "x-token", token.clone(), 200),
        (
            "in the cookie twice",
            "cookie",
            format!("access_token={token}; a=b; access_token={token}"),
            200,
        ),
        // The app behind may read the copy not checked (Django takes the
        // last of a name).
        (
            "in the cookie, then another",
            "cookie",
            format!("access_token={token}; access_token=forged"),
            401,
        ),
        // Other spellings, which a CGI-style app reads as the source:
        // PHP makes a cookie's `.` `_`; PHP, WSGI and Rack fold headers.
        (
            "in the cookie, and another under another spelling",
            "cookie",
            format!("access.token=forged; access_token={token}"),
            401,
        ),
        (
            "in the cookie, and the same under another spelling",
            "cookie",
            format!("access.token={token}; access_token={token}"),
            200,
        ),
        // PHP before 8.1.11 and Rack 2 percent-decode a cookie's name;
        // Rack 2 splits pairs at `,` too.
        (
            "in the cookie, and another percent-encoded",
            "cookie",
            format!("access%5Ftoken=forged; access_token={token}"),
            401,
        ),
        (
            "in the cookie, and another after a comma",
            "cookie",
            format!("a=1,access_token=forged; access_token={token}"),
            401,
        ),
        // PHP makes an unclosed `[` `_`; ASP.NET Core compares names in
        // any case, and it and Python's SimpleCookie find a pair after a
        // space.
        (
            "in the cookie, and another with a [",
            "cookie",
            format!("access[token=forged; access_token={token}"),
            401,
        ),
        (
            "in the cookie, and another in capitals",
            "cookie",
            format!("access_token={token}; ACCESS_TOKEN=forged"),
            401,
        ),
        (
            "in the cookie, and another after a space",
            "cookie",
            format!("access_token={token}; x=1 access_token=forged"),
            401,
        ),
        // A name no app reads as the source: another app's cookie.
        (
            "in the cookie, beside access-token",
            "cookie",
            format!("access-token=other; access_token={token}"),
            200,
        ),
        // Authorization is not a source any more.
        (
            "under Bearer",
            "authorization",
            format!("Bearer {token}"),
            401,
        ),
    ];
    for (name, header, value, want) in cases {
        let d = chain.authorize(&mut get_with("/", header, &value)).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
    }
    // Two sources: one token in both, or a 401.
    let both = |cookie: &str| {
        get_with("/", "x-token", &token).with_header(
            http::header::COOKIE,
            http::HeaderValue::try_from(format!("access_token={cookie}")).unwrap(),
        )
    };
    assert!(chain.authorize(&mut both(&token)).await.is_allow());
    assert_eq!(status(&chain.authorize(&mut both("forged")).await), 401);
    for spelling in ["x_token", "x.token"] {
        let mut r = get_with("/", "x-token", &token).with_header(
            http::HeaderName::from_static(spelling),
            http::HeaderValue::from_static("forged"),
        );
        assert_eq!(status(&chain.authorize(&mut r).await), 401, "{spelling}");
    }
}

/// A key without a `kid` (one converted from a PEM) is tried for a token
/// that names one, as Envoy's `jwt_authn` (Gloo's JWT) tries it: only
/// its signature counts.
#[tokio::test]
async fn a_key_without_a_kid_verifies_tokens_that_name_one() {
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(jwks_path("jwks.json")).unwrap()).unwrap();
    let mut rsa = jwks["keys"][0].clone();
    rsa.as_object_mut().unwrap().remove("kid");
    let document = json!({ "keys": [rsa] }).to_string();
    let chain = chain(&format!(
        "name: j\nconfigs:\n- jwt:\n    jwks:\n      local:\n        key: '{document}'\n"
    ))
    .await;
    // (case, the signing key by kid, the kid the token names, the status)
    let cases = [
        ("another kid", "rsa-1", "k9", 200),
        ("the key's old kid", "rsa-1", "rsa-1", 200),
        ("no kid", "rsa-1", "", 200),
        ("another key", "rsa-2", "k9", 401),
    ];
    for (name, signer, kid, want) in cases {
        let key = EncodingKey::from_rsa_pem(if signer == "rsa-2" { RSA2 } else { RSA }).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = (!kid.is_empty()).then(|| kid.to_owned());
        let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
        let d = chain.authorize(&mut bearer(&token)).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
    }
}

/// A claim with spaces or tabs around it names no one upstream: the app's
/// HTTP parser strips them, and would read `admin` where the chain judged
/// ` admin` (an IdP that keeps a user-chosen name as typed).
#[tokio::test]
async fn a_claim_with_spaces_around_it_is_no_header() {
    let chain = chain(&local_config("")).await;
    for sub in [" admin", "admin\t", "admin"] {
        let mut claims = claims();
        claims["sub"] = json!(sub);
        let token = sign(Algorithm::ES256, "ec-1", &claims);
        let d = chain.authorize(&mut bearer(&token)).await;
        let want = (sub == "admin").then(|| "admin".to_owned());
        assert_eq!(upstream(&d, "x-user-id"), want, "{sub:?}: {d:?}");
        assert_eq!(upstream(&d, "x-org-id").as_deref(), Some("42"));
    }
}

/// The step says it reads its token's header and cookie: a decision
/// cache keyed on them needs no `trustKey`, one that misses them is a
/// config error, and a decision log never names the header (a custom one,
/// such as AWS ALB's `x-amzn-oidc-data`, says nothing of a credential).
#[tokio::test]
async fn the_token_s_header_and_cookie_are_what_it_reads() {
    let source =
        "    tokenSource:\n      headers: [{ header: x-amzn-oidc-data }]\n      cookies: [id]\n";
    let with = |block: &str| local_config(&format!("{source}{block}\n"));
    let e = load_error(&with("decisionLog: { headers: [x-amzn-oidc-data] }")).await;
    assert_eq!(e.place(), Some("t: decisionLog.headers[0]"), "{e}");
    load(&with(
        "cache: { key: [{ header: x-amzn-oidc-data }, { cookie: id }] }",
    ))
    .await
    .expect("a key that holds what it reads");
    let e = load_error(&with("cache: { key: [{ header: x-amzn-oidc-data }] }")).await;
    assert!(e.to_string().contains("reads cookie `id`"), "{e}");
}

/// A JWKS server on 127.0.0.1:0 whose document can change; counts fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(body: String) -> JwksServer {
    jwks_server_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        body,
    )
}

/// [`jwks_server`] on `listener`.
fn jwks_server_on(listener: tokio::net::TcpListener, body: String) -> JwksServer {
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let body = Arc::new(Mutex::new(body));
    let hits = Arc::new(AtomicUsize::new(0));
    let (b, h) = (body.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (b, h) = (b.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = b.lock().await.clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    JwksServer { url, body, hits }
}

fn remote_config(url: &str, min_refresh: &str) -> String {
    format!(
        r#"
name: j
configs:
- jwt:
    jwks:
      remote:
        url: {url}
        refreshInterval: 1h
        minRefreshInterval: {min_refresh}
        timeout: 5s
        allowInsecureHttp: true
"#
    )
}

#[tokio::test]
async fn a_remote_jwks_is_https_and_asymmetric_unless_the_config_says_otherwise() {
    let text = std::fs::read_to_string(jwks_path("jwks.json")).unwrap();
    let server = jwks_server(text).await;
    // http:// is refused at build time, naming the way out.
    let plain = remote_config(&server.url, "1s").replace("        allowInsecureHttp: true\n", "");
    let error = load_error(&plain).await.to_string();
    assert!(
        error.contains("jwks.remote.url") && error.contains("allowInsecureHttp"),
        "{error}"
    );
    // The JWKS's `oct` key verifies nothing by default: an HMAC key that
    // travels is not a secret the issuer alone holds.
    let default = chain(&remote_config(&server.url, "1h")).await;
    let hs = default
        .authorize(&mut bearer(&sign(Algorithm::HS256, "hs-1", &claims())))
        .await;
    assert_eq!(status(&hs), 401, "{hs:?}");
    let rs = default
        .authorize(&mut bearer(&sign(Algorithm::RS256, "rsa-1", &claims())))
        .await;
    assert!(rs.is_allow(), "{rs:?}");
    // Listing HS256 is the config saying otherwise.
    let listed = remote_config(&server.url, "1h")
        .replace("    jwks:", "    algorithms: [HS256, RS256]\n    jwks:");
    let listing = chain(&listed).await;
    let hs = listing
        .authorize(&mut bearer(&sign(Algorithm::HS256, "hs-1", &claims())))
        .await;
    assert!(hs.is_allow(), "{hs:?}");
}

#[tokio::test]
async fn a_remote_jwks_is_fetched_at_start_and_again_for_an_unknown_kid() {
    let first = std::fs::read_to_string(jwks_path("jwks.json")).unwrap();
    let server = jwks_server(first).await;
    let chain = chain(&remote_config(&server.url, "1s")).await;
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "fetched once at start"
    );
    let d = chain
        .authorize(&mut bearer(&sign(Algorithm::RS256, "rsa-1", &claims())))
        .await;
    assert!(d.is_allow());
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "a known kid needs no fetch"
    );

    // The issuer rotates to rsa-2.
    *server.body.lock().await = std::fs::read_to_string(jwks_path("jwks-rsa2.json")).unwrap();
    let d = chain
        .authorize(&mut bearer(&sign(Algorithm::RS256, "rsa-2", &claims())))
        .await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

/// A made-up `kid` while the JWKS endpoint stalls: the token waits half
/// the step's timeout for the refresh, then is a 401, never a timeout
/// that `failureModeAllow` would let through; the refresh goes on, and
/// the key it brings verifies the next token.
#[tokio::test]
async fn an_unknown_kid_under_a_stalled_jwks_is_a_401_not_a_timeout() {
    let first = std::fs::read_to_string(jwks_path("jwks.json")).unwrap();
    let server = jwks_server(first).await;
    let config = remote_config(&server.url, "1s").replace(
        "- jwt:",
        "- failureModeAllow: true\n  timeout: 200ms\n  jwt:",
    );
    let chain = chain(&config).await;
    let rotated = sign(Algorithm::RS256, "rsa-2", &claims());
    let mut body = server.body.lock().await;
    let d = chain.authorize(&mut bearer(&rotated)).await;
    assert_eq!(status(&d), 401, "{d:?}");
    // The refresh under way may bring its key: no cache keeps the 401.
    let no_store = &d.as_deny().unwrap().headers[http::header::CACHE_CONTROL];
    assert_eq!(no_store, "no-store");
    *body = std::fs::read_to_string(jwks_path("jwks-rsa2.json")).unwrap();
    drop(body);
    let verified = async {
        while !chain.authorize(&mut bearer(&rotated)).await.is_allow() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), verified)
        .await
        .expect("the rotated key, once the endpoint answers");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "the start's fetch and the one the first token started, seen through"
    );
}

#[tokio::test]
async fn unknown_kid_refreshes_are_rate_bound() {
    let chain_of = chain;
    let first = std::fs::read_to_string(jwks_path("jwks.json")).unwrap();
    let server = jwks_server(first).await;
    let chain = chain(&remote_config(&server.url, "1h")).await;
    for _ in 0..5 {
        let d = chain
            .authorize(&mut bearer(&sign(Algorithm::RS256, "rsa-9", &claims())))
            .await;
        assert_eq!(status(&d), 401);
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "the start's fetch, the first unknown kid's, and none after within minRefreshInterval"
    );
    // Made-up kids at once: a refresh under way is not queued behind.
    let flooded = chain_of(&remote_config(&server.url, "1s")).await;
    let before = server.hits.load(Ordering::SeqCst);
    let token = sign(Algorithm::RS256, "rsa-9", &claims());
    let answers = futures::future::join_all((0..50).map(|_| {
        let (chain, token) = (flooded.clone(), token.clone());
        async move { status(&chain.authorize(&mut bearer(&token)).await) }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 401), "{answers:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst) - before, 1);
    // Not a bound anyone may lift.
    let error = load_error(&remote_config(&server.url, "0s"))
        .await
        .to_string();
    assert!(
        error.contains("jwks.remote.minRefreshInterval") && error.contains("at least 1s"),
        "{error}"
    );
}

/// A key the set has, named with an algorithm it does not do, or a token
/// with a `crit` header (an extension no one here understands): refused,
/// without fetching the keys again.
#[tokio::test]
async fn a_known_kid_with_another_alg_or_a_crit_header_is_refused_without_a_fetch() {
    let first = std::fs::read_to_string(jwks_path("jwks.json")).unwrap();
    let server = jwks_server(first).await;
    // The first refresh after the start's fetch is not bounded: any
    // refresh these tokens caused would show.
    let chain = chain(&remote_config(&server.url, "1s")).await;
    let ec_as_rsa = sign(Algorithm::ES256, "rsa-1", &claims());
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    header.crit = Some(vec!["exp".to_owned()]);
    let crit =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_rsa_pem(RSA).unwrap()).unwrap();
    for token in [ec_as_rsa, crit] {
        assert_eq!(status(&chain.authorize(&mut bearer(&token)).await), 401);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "only the start's fetch"
    );
}

/// A JWK meant for another use than verifying (RFC 7517 4.2-4.4): an
/// encryption `alg`, an `alg` unknown here, a `use` that is not `sig`,
/// `key_ops` without `verify`: its private half signs nothing the step
/// accepts, though the key's type would do.
#[tokio::test]
async fn a_key_for_another_use_verifies_nothing() {
    let set: Value =
        serde_json::from_str(&std::fs::read_to_string(jwks_path("jwks.json")).unwrap()).unwrap();
    let (rsa, ec) = (set["keys"][0].clone(), set["keys"][1].clone());
    assert_eq!(
        (rsa["kid"].as_str(), ec["kid"].as_str()),
        (Some("rsa-1"), Some("ec-1"))
    );
    let token = sign(Algorithm::RS256, "rsa-1", &claims());
    let changes: [(&str, Value); 5] = [
        ("alg", json!("RSA-OAEP")),
        ("alg", json!("RSA1_5")),
        ("alg", json!("XS999")),
        ("use", json!("enc-ish")),
        ("key_ops", json!(["encrypt", "wrapKey"])),
    ];
    for (field, value) in changes {
        let mut key = rsa.clone();
        key.as_object_mut().unwrap().remove("use");
        key[field] = value.clone();
        let keys = json!({ "keys": [key, ec] }).to_string();
        let yaml =
            format!("name: j\nconfigs:\n- jwt:\n    jwks:\n      local:\n        key: '{keys}'\n");
        let chain = chain(&yaml).await;
        let d = chain.authorize(&mut bearer(&token)).await;
        assert_eq!(status(&d), 401, "{field}: {value}");
    }
    // The same key, declared for signing: verifies.
    let mut key = rsa.clone();
    key["key_ops"] = json!(["verify"]);
    let keys = json!({ "keys": [key, ec] }).to_string();
    let yaml =
        format!("name: j\nconfigs:\n- jwt:\n    jwks:\n      local:\n        key: '{keys}'\n");
    let d = chain(&yaml).await.authorize(&mut bearer(&token)).await;
    assert!(d.is_allow(), "{d:?}");
}

/// An `oct` key shorter than its hash (RFC 7518 3.2) verifies nothing
/// under that algorithm: an empty one, a secret rendered from nothing,
/// let anyone sign.
#[tokio::test]
async fn an_oct_key_shorter_than_its_hash_verifies_nothing() {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hmac = |alg: Algorithm, kid: &str, secret: &[u8]| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap()
    };
    let forty = [7u8; 40];
    let set: Value =
        serde_json::from_str(&std::fs::read_to_string(jwks_path("jwks.json")).unwrap()).unwrap();
    let keys = json!({ "keys": [
        set["keys"][0],
        { "kty": "oct", "kid": "empty", "k": "" },
        { "kty": "oct", "kid": "sixteen", "k": b64(&[7u8; 16]) },
        { "kty": "oct", "kid": "forty", "k": b64(&forty) },
    ] })
    .to_string();
    let yaml =
        format!("name: j\nconfigs:\n- jwt:\n    jwks:\n      local:\n        key: '{keys}'\n");
    let chain = chain(&yaml).await;
    for (name, token) in [
        ("empty", hmac(Algorithm::HS256, "empty", b"")),
        ("16 bytes", hmac(Algorithm::HS256, "sixteen", &[7u8; 16])),
        ("40 bytes, HS384", hmac(Algorithm::HS384, "forty", &forty)),
    ] {
        let d = chain.authorize(&mut bearer(&token)).await;
        assert_eq!(status(&d), 401, "{name}: {d:?}");
    }
    let d = chain
        .authorize(&mut bearer(&hmac(Algorithm::HS256, "forty", &forty)))
        .await;
    assert!(d.is_allow(), "{d:?}");
    // A set of short secrets alone is a config error that says why.
    let keys = json!({ "keys": [{ "kty": "oct", "k": b64(b"short") }] }).to_string();
    let yaml =
        format!("name: j\nconfigs:\n- jwt:\n    jwks:\n      local:\n        key: '{keys}'\n");
    let e = load_error(&yaml).await.to_string();
    assert!(e.contains("32 bytes for HS256"), "{e}");
}

#[tokio::test]
async fn an_unreachable_jwks_fails_closed_until_it_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/jwks.json");
    drop(listener);
    let engine = load(&remote_config(&url, "30s"))
        .await
        .expect("the config goes live");
    let generation = engine.current();
    let chain = generation.chain("j").unwrap();
    let token = sign(Algorithm::RS256, "rsa-1", &claims());
    assert_eq!(status(&chain.authorize(&mut bearer(&token)).await), 403);
    let waiting = generation.waiting();
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].2.contains("jwks.remote"), "{waiting:?}");
    // The key server comes up where the config said: the step starts.
    let server = jwks_server_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        std::fs::read_to_string(jwks_path("jwks.json")).unwrap(),
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while !generation.waiting().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("started within 10 s");
    assert!(chain.authorize(&mut bearer(&token)).await.is_allow());
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_jwt_configs_name_their_place() {
    let jwks = jwks_path("jwks.json");
    let cases = [
        ("jwks: {}".to_owned(), "configs[0].jwt.jwks"),
        ("issuer: x".to_owned(), "configs[0].jwt"),
        (
            "jwks: { local: { key: 'not json s3cr3t' } }".to_owned(),
            "configs[0].jwt.jwks.local.key",
        ),
        (
            "jwks: { local: { key: '{\"keys\": []}' } }".to_owned(),
            "configs[0].jwt.jwks.local.key",
        ),
        (
            "jwks: { local: { key: '{\"keys\": []}', file: x } }".to_owned(),
            "configs[0].jwt.jwks.local",
        ),
        (
            "jwks: { local: { file: /nonexistent/jwks.json } }".to_owned(),
            "configs[0].jwt.jwks.local.file",
        ),
        (
            "jwks: { remote: { url: 'not a url' } }".to_owned(),
            "configs[0].jwt.jwks.remote.url",
        ),
        (
            "jwks: { remote: { url: 'ftp://x/y' } }".to_owned(),
            "configs[0].jwt.jwks.remote.url",
        ),
        (
            "jwks: { remote: { url: /relative } }".to_owned(),
            "configs[0].jwt.jwks.remote.url",
        ),
        (
            "jwks: { remote: { url: 'https://x/y', timeout: 0s } }".to_owned(),
            "configs[0].jwt.jwks.remote.timeout",
        ),
        (
            format!("jwks: {{ local: {{ file: {jwks} }} }}\n    algorithms: [RS257]"),
            "configs[0].jwt.algorithms[0]",
        ),
        (
            format!(
                "jwks: {{ local: {{ file: {jwks} }} }}\n    claimsToHeaders: [{{ claim: sub, header: 'a b' }}]"
            ),
            "configs[0].jwt.claimsToHeaders[0].header",
        ),
        (
            format!("jwks: {{ local: {{ file: {jwks} }} }}\n    tokenSource: {{ headers: [] }}"),
            "configs[0].jwt.tokenSource",
        ),
        (
            format!("jwks: {{ local: {{ file: {jwks} }} }}\n    leeway: soon"),
            "configs[0].jwt.leeway",
        ),
        // An expired token would pass for as long.
        (
            format!("jwks: {{ local: {{ file: {jwks} }} }}\n    leeway: 2h"),
            "configs[0].jwt.leeway",
        ),
        (
            format!("jwks: {{ local: {{ file: {jwks} }} }}\n    leeway: 5s3cr3t"),
            "configs[0].jwt.leeway",
        ),
        (
            format!(
                "jwks: {{ local: {{ file: {jwks} }} }}\n    algorithms: [ES256, HS256]\n    realm: 'a\"'"
            ),
            "configs[0].jwt.realm",
        ),
    ];
    for (block, place) in cases {
        let yaml = format!("name: j\nconfigs:\n- jwt:\n    {block}\n");
        assert_bad_config(&yaml, place, &["s3cr3t"]).await;
    }
}

#[tokio::test]
async fn an_empty_jwt_block_takes_the_payload_envoy_verified() {
    let chain = chain("name: j\nconfigs:\n- jwt: {}\n").await;
    let (namespace, key) = authchain_steps::jwt::ENVOY_PAYLOAD;
    let verified = |payload: Value| {
        let mut r = get_with("/", "authorization", "Bearer whatever-envoy-checked");
        r.metadata.insert(namespace.into(), json!({ key: payload }));
        r
    };

    let claims = claims();
    let mut r = verified(claims.clone());
    let d = chain.authorize(&mut r).await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(
        d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
        "alice"
    );
    assert_eq!(r.state["jwt"], claims);
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(
        d.as_allow().unwrap().expires,
        Some(UNIX_EPOCH + Duration::from_secs(exp))
    );

    // Without Envoy's verdict, whatever the request carries, a 401.
    let mut other_key = get_with("/", "authorization", "Bearer x");
    other_key
        .metadata
        .insert(namespace.into(), json!({ "other": claims.clone() }));
    let mut other_namespace = get_with("/", "authorization", "Bearer x");
    other_namespace.metadata.insert(
        "envoy.filters.http.other".into(),
        json!({ key: claims.clone() }),
    );
    let cases = [
        (
            "no metadata",
            bearer(&sign(Algorithm::HS256, "hs-1", &claims)),
        ),
        ("a payload that is not an object", verified(json!("alice"))),
        ("another key", other_key),
        ("another namespace", other_namespace),
    ];
    for (name, mut r) in cases {
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), 401, "case {name}");
        let deny = d.as_deny().unwrap();
        assert_eq!(deny.headers["www-authenticate"], "Bearer", "case {name}");
        assert!(!r.state.contains_key("jwt"), "case {name}");
    }
}

#[tokio::test]
async fn claims_become_dynamic_metadata_as_gloo_names_them() {
    let chain = chain(&local_config(
        "    dynamicMetadataFromClaims: { issuer: iss, organisation: org, missing: nope }\n",
    ))
    .await;
    let mut r = bearer(&sign(Algorithm::RS256, "rsa-1", &claims()));
    let d = chain.authorize(&mut r).await;
    let metadata = &d.as_allow().expect("allow").dynamic_metadata;
    assert_eq!(
        Value::Object(metadata.clone()),
        json!({ "issuer": "https://issuer.example.com", "organisation": { "id": 42 } }),
        "a claim's structure is kept; an absent claim adds nothing"
    );

    for bad in ["org.id", "", "a b"] {
        assert_bad_config(
            &local_config(&format!(
                "    dynamicMetadataFromClaims: {{ k: '{bad}' }}\n"
            )),
            "configs[0].jwt.dynamicMetadataFromClaims.k",
            &[],
        )
        .await;
    }
}

#[tokio::test]
async fn only_an_empty_mapping_is_gloo_s_placeholder() {
    // An empty value is not `{}`: a template that rendered nothing must
    // not make a step that checks tokens trust Envoy instead.
    for block in [
        "",
        "~",
        "[]",
        "[null, [], [], null, {local: {key: s3cr3t}}]",
        "s3cr3t",
    ] {
        let yaml = format!("name: j\nconfigs:\n- jwt: {block}\n");
        assert_bad_config(&yaml, "configs[0].jwt", &["s3cr3t"]).await;
    }
}
