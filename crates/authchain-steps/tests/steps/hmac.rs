//! `hmacAuth`, through a loaded chain, from a client's and an attacker's
//! side. Requests are signed here with the RustCrypto crates directly,
//! not with the step's code.

use std::time::{Duration, SystemTime};

use authchain_core::Decision;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderName, HeaderValue, Method};
use proptest::prelude::*;

use crate::common::*;

/// Alice's and bob's credential Secrets, one of another type, and `hmacAuth`
/// over the named ones, with `extra` fields.
fn config(extra: &str) -> String {
    let secret = |name: &str, kind: &str, data: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: {kind}\nstringData: {data}\n---\n"
        )
    };
    format!(
        "{}{}{}name: h
configs:
- hmacAuth:
    secretRefs:
      secretRefs: [{{ name: alice-hmac }}, {{ name: bob-hmac, namespace: default }}]
    parametersInHeaders: {{}}
    {extra}
",
        secret(
            "alice-hmac",
            "extauth.solo.io/accountcredentials",
            "{ username: alice, password: alice-s3cret }"
        ),
        secret(
            "bob-hmac",
            "extauth.solo.io/accountcredentials",
            "{ username: bob, password: bob-s3cret }"
        ),
        secret(
            "api-key",
            "extauth.solo.io/apikey",
            "{ api-key: s3cret-api-key }"
        ),
    )
}

/// base64 of the HMAC of `message` keyed with `key`, by `algorithm`.
fn mac(algorithm: &str, key: &str, message: &str) -> String {
    fn run<M: Mac + KeyInit>(key: &str, message: &str) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
        m.update(message.as_bytes());
        m.finalize().into_bytes().to_vec()
    }
    let raw = match algorithm {
        "hmac-sha1" => run::<Hmac<sha1::Sha1>>(key, message),
        "hmac-sha256" => run::<Hmac<sha2::Sha256>>(key, message),
        "hmac-sha384" => run::<Hmac<sha2::Sha384>>(key, message),
        "hmac-sha512" => run::<Hmac<sha2::Sha512>>(key, message),
        other => panic!("{other}"),
    };
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A `Date` value `offset` seconds from now.
fn date(offset: i64) -> String {
    let now = SystemTime::now();
    let at = if offset >= 0 {
        now + Duration::from_secs(offset.unsigned_abs())
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// What a client signs and sends.
#[derive(Clone)]
struct Signed {
    user: &'static str,
    key: &'static str,
    algorithm: &'static str,
    /// The request line's method and path, as signed.
    signed_target: String,
    /// The `headers` parameter.
    headers: &'static str,
    date: String,
    /// More headers, sent and (when `headers` names them) signed.
    extra: Vec<(&'static str, String)>,
}

impl Signed {
    fn new(user: &'static str, key: &'static str, target: &str) -> Self {
        Signed {
            user,
            key,
            algorithm: "hmac-sha256",
            signed_target: target.to_owned(),
            headers: "date @request-target",
            date: date(0),
            extra: Vec::new(),
        }
    }

    fn alice(target: &str) -> Self {
        Signed::new("alice", "alice-s3cret", target)
    }

    /// The signing string, written out as Gloo's scheme says.
    fn signing_string(&self) -> String {
        self.headers
            .split_ascii_whitespace()
            .map(|name| match name.to_ascii_lowercase().as_str() {
                "@request-target" | "request-line" => format!("{} HTTP/1.1", self.signed_target),
                "date" => format!("date: {}", self.date),
                other => {
                    let value = self
                        .extra
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(other))
                        .map(|(_, v)| v.as_str())
                        .unwrap_or_default();
                    format!("{}: {value}", other.to_ascii_lowercase())
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn authorization(&self) -> String {
        format!(
            "hmac username=\"{}\", algorithm=\"{}\", headers=\"{}\", signature=\"{}\"",
            self.user,
            self.algorithm,
            self.headers,
            mac(self.algorithm, self.key, &self.signing_string())
        )
    }

    /// The request `method path`, with this signature.
    fn request(&self, method: Method, path: &str) -> authchain_core::AuthorizationRequest {
        let mut r = req(method, path)
            .with_header(
                http::header::DATE,
                HeaderValue::try_from(self.date.as_str()).unwrap(),
            )
            .with_header(
                http::header::AUTHORIZATION,
                HeaderValue::try_from(self.authorization()).unwrap(),
            );
        for (name, value) in &self.extra {
            r = r.with_header(
                HeaderName::from_static(name),
                HeaderValue::try_from(value.as_str()).unwrap(),
            );
        }
        r
    }
}

/// Asserts that `d` is the step's 401.
fn assert_refused(d: &Decision, case: &str) {
    let deny = d
        .as_deny()
        .unwrap_or_else(|| panic!("case {case}: allowed"));
    assert_eq!(deny.status.as_u16(), 401, "case {case}");
    assert_eq!(
        deny.headers.get(http::header::WWW_AUTHENTICATE).unwrap(),
        "hmac headers=\"date @request-target\"",
        "case {case}"
    );
}

#[tokio::test]
async fn signed_requests_name_their_user() {
    let chain = chain(&config("")).await;
    for algorithm in ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"] {
        let mut s = Signed::alice("GET /ratings/1?x=1");
        s.algorithm = algorithm;
        let mut r = s.request(Method::GET, "/ratings/1?x=1");
        let d = chain.authorize(&mut r).await;
        assert!(d.is_allow(), "{algorithm}: {d:?}");
        let allow = d.as_allow().unwrap();
        assert_eq!(allow.user_info.as_ref().unwrap().user_id, "alice");
        assert_eq!(
            r.state.get("hmacAuth"),
            Some(&serde_json::json!({ "user": "alice" }))
        );
    }
    // Bob's Secret, named with its namespace; more headers signed, in
    // any order, in any case.
    let mut s = Signed::new("bob", "bob-s3cret", "POST /orders");
    s.headers = "x-tenant @request-target Date content-type";
    s.extra = vec![
        ("x-tenant", "acme".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    let d = chain
        .authorize(&mut s.request(Method::POST, "/orders"))
        .await;
    assert_eq!(
        d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
        "bob"
    );
    // `host` is the request's authority (Envoy sends it as `:authority`,
    // a forward-auth hop as X-Forwarded-Host), not a Host header.
    let mut s = Signed::alice("GET /");
    s.headers = "date @request-target host";
    s.extra = vec![("host", "api.example.com".to_owned())];
    let mut r = s.request(Method::GET, "/");
    r.headers.remove(http::header::HOST);
    let mut r = r.with_host("api.example.com");
    assert!(chain.authorize(&mut r).await.is_allow());
    let mut r = s.request(Method::GET, "/").with_host("evil.example.com");
    assert_eq!(status(&chain.authorize(&mut r).await), 401, "another host");
    let mut r = s.request(Method::GET, "/");
    assert_eq!(status(&chain.authorize(&mut r).await), 401, "no host");

    // Kong's name for the request line.
    let mut s = Signed::alice("GET /");
    s.headers = "date request-line";
    assert!(
        chain
            .authorize(&mut s.request(Method::GET, "/"))
            .await
            .is_allow()
    );
}

#[tokio::test]
async fn forged_and_tampered_requests_are_401() {
    let chain = chain(&config("")).await;
    let alice = Signed::alice("GET /admin");
    let mut cases: Vec<(&str, authchain_core::AuthorizationRequest)> = Vec::new();

    cases.push(("no credential", req(Method::GET, "/admin")));
    let mut s = alice.clone();
    s.key = "bob-s3cret";
    cases.push(("another user's key", s.request(Method::GET, "/admin")));
    let mut s = alice.clone();
    s.user = "mallory";
    cases.push(("an unknown user", s.request(Method::GET, "/admin")));
    let mut s = alice.clone();
    s.user = "ALICE";
    cases.push(("the user in another case", s.request(Method::GET, "/admin")));
    cases.push(("another method", alice.request(Method::POST, "/admin")));
    cases.push(("another path", alice.request(Method::GET, "/admin/users")));
    cases.push(("a query added", alice.request(Method::GET, "/admin?all=1")));
    let s = Signed::alice("GET /admin?all=0");
    cases.push(("the query changed", s.request(Method::GET, "/admin?all=1")));
    // The path as sent is /%61dmin; the chain (and the app) read /admin:
    // a signature over the text that was sent does not hold.
    let s = Signed::alice("GET /%61dmin");
    cases.push((
        "a signature over a path not in canonical form",
        s.request(Method::GET, "/%61dmin"),
    ));
    let s = Signed::alice("GET /public");
    cases.push((
        "a signature for /public, sent to /public//%61dmin",
        s.request(Method::GET, "/public//%61dmin"),
    ));
    let s = Signed::alice("get /admin");
    cases.push(("the method in lower case", s.request(Method::GET, "/admin")));

    // The Authorization header itself.
    let mut r = alice.request(Method::GET, "/admin");
    r.headers.append(
        http::header::AUTHORIZATION,
        HeaderValue::try_from(alice.authorization()).unwrap(),
    );
    cases.push(("the Authorization header twice", r));
    let mut r = alice.request(Method::GET, "/admin");
    let joined = format!("{0},{0}", alice.authorization());
    r.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::try_from(joined).unwrap(),
    );
    cases.push(("two signatures comma-joined (as Envoy joins)", r));
    let with = |from: &str, to: &str| {
        let mut r = alice.request(Method::GET, "/admin");
        let value = alice.authorization().replace(from, to);
        r.headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::try_from(value).unwrap(),
        );
        r
    };
    let sig = mac("hmac-sha256", "alice-s3cret", &alice.signing_string());
    cases.push(("an empty signature", with(&sig, "")));
    cases.push(("a signature that is not base64", with(&sig, "!!!!")));
    cases.push(("a signature cut short", with(&sig, &sig[..sig.len() - 4])));
    cases.push((
        "the signature unpadded",
        with(&sig, sig.trim_end_matches('=')),
    ));
    cases.push(("an unknown algorithm", with("hmac-sha256", "hmac-md5")));
    cases.push(("no algorithm", with("algorithm=\"hmac-sha256\", ", "")));
    cases.push(("the scheme is not hmac", with("hmac ", "Signature ")));
    cases.push((
        "a parameter twice",
        with("username=\"alice\"", "username=\"alice\", username=\"bob\""),
    ));
    cases.push((
        "an unknown parameter",
        with("username=\"alice\"", "username=\"alice\", keyId=\"alice\""),
    ));
    // What is signed.
    for (name, headers) in [
        ("date not signed", "@request-target"),
        ("the request target not signed", "date"),
        ("nothing signed", ""),
        ("date signed twice", "date date @request-target"),
        (
            "the target signed twice",
            "date @request-target request-line",
        ),
        ("authorization signed", "date @request-target authorization"),
        (
            "a header the request lacks",
            "date @request-target x-absent",
        ),
        (
            "a name that is not a header's",
            "date @request-target (created)",
        ),
        ("the draft's (request-target)", "date (request-target)"),
    ] {
        let mut s = alice.clone();
        s.headers = headers;
        cases.push((name, s.request(Method::GET, "/admin")));
    }
    let mut s = alice.clone();
    s.headers = "date @request-target x-tenant";
    s.extra = vec![("x-tenant", "acme".to_owned())];
    let mut r = s.request(Method::GET, "/admin");
    r.headers.append(
        HeaderName::from_static("x-tenant"),
        HeaderValue::from_static("evil"),
    );
    cases.push(("a signed header sent twice", r));
    for spelling in ["x_tenant", "x.tenant"] {
        let mut r = s.request(Method::GET, "/admin");
        r.headers.append(
            HeaderName::from_static(spelling),
            HeaderValue::from_static("evil"),
        );
        cases.push(("a signed header sent again under another spelling", r));
    }
    let mut r = alice.request(Method::GET, "/admin");
    r.headers
        .append(http::header::DATE, HeaderValue::from_static("whenever"));
    cases.push(("Date sent twice", r));
    let mut s = alice.clone();
    s.headers = "date @request-target x-tenant";
    s.extra = vec![("x-tenant", "acme".to_owned())];
    let mut r = s.request(Method::GET, "/admin");
    r.headers.insert(
        HeaderName::from_static("x-tenant"),
        HeaderValue::from_static("evil"),
    );
    cases.push(("a signed header changed", r));

    for (case, mut r) in cases {
        assert_refused(&chain.authorize(&mut r).await, case);
    }
}

#[tokio::test]
async fn a_date_out_of_the_window_is_401() {
    let chain = chain(&config("")).await;
    for (offset, allowed) in [
        (0, true),
        (-290, true),
        (290, true),
        (-310, false),
        (310, false),
        (-10 * 365 * 24 * 3600, false),
        (10 * 365 * 24 * 3600, false),
    ] {
        let mut s = Signed::alice("GET /");
        s.date = date(offset);
        let d = chain.authorize(&mut s.request(Method::GET, "/")).await;
        assert_eq!(d.is_allow(), allowed, "offset {offset}");
    }
    for bad in ["yesterday", "", "Thu, 32 Jun 2017 17:15:21 GMT"] {
        let mut s = Signed::alice("GET /");
        s.date = bad.to_owned();
        assert_refused(
            &chain.authorize(&mut s.request(Method::GET, "/")).await,
            bad,
        );
    }
    // The window is the config's, and the allow expires with it.
    let chain = chain_with("clockSkew: 1m").await;
    let mut s = Signed::alice("GET /");
    s.date = date(-90);
    assert_refused(
        &chain.authorize(&mut s.request(Method::GET, "/")).await,
        "90s ago, 1m allowed",
    );
    s.date = date(-30);
    let d = chain.authorize(&mut s.request(Method::GET, "/")).await;
    // The allow holds for this request alone (no cache keeps it).
    let expires = d.as_allow().unwrap().expires.unwrap();
    assert!(expires <= SystemTime::now());
}

/// A decision cache keyed on everything the step reads but what the client
/// chose to sign (here the body, through its digest) keeps no allow: a
/// replay of a signed request's headers with another body is refused, as
/// without the cache.
#[tokio::test]
async fn no_cache_replays_a_signed_request_s_allow() {
    let key = "[{header: authorization}, {header: date}, {header: digest}, method, path, host]";
    let yaml = format!(
        "{}cache: {{ key: {key}, trustKey: true }}\n",
        config("requiredHeaders: [digest]")
    );
    let chain = chain(&yaml).await;
    let mut s = Signed::alice("POST /transfer");
    s.headers = "date @request-target digest";
    s.extra = vec![(
        "digest",
        "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=".to_owned(),
    )];
    let with_body = |body: &'static str| {
        let mut r = s.request(Method::POST, "/transfer");
        r.body = Some(bytes::Bytes::from_static(body.as_bytes()));
        r
    };
    let signed = chain
        .authorize(&mut with_body("{\"hello\": \"world\"}"))
        .await;
    assert!(signed.is_allow());
    let replayed = chain
        .authorize(&mut with_body("{\"hello\": \"mallory\"}"))
        .await;
    assert_eq!(status(&replayed), 401);
}

async fn chain_with(extra: &str) -> std::sync::Arc<authchain_core::Chain> {
    chain(&config(extra)).await
}

#[tokio::test]
async fn algorithms_and_required_headers_narrow_what_is_accepted() {
    let chain =
        chain_with("algorithms: [hmac-sha256, hmac-sha512]\n    requiredHeaders: [Digest]").await;
    let digest = (
        "digest",
        "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=".to_owned(),
    );
    let mut s = Signed::alice("GET /");
    s.headers = "date @request-target digest";
    s.extra = vec![digest.clone()];
    // The digest (RFC 3230) is the body's: the draft's own example.
    let with_body = |body: Option<&'static str>| {
        let mut r = s.request(Method::GET, "/");
        r.body = body.map(|b| bytes::Bytes::from_static(b.as_bytes()));
        r
    };
    assert!(
        chain
            .authorize(&mut with_body(Some("{\"hello\": \"world\"}")))
            .await
            .is_allow()
    );
    for (case, body) in [
        (
            "another body under the signed digest",
            Some("{\"hello\": \"mallory\"}"),
        ),
        ("a body the check did not carry", None),
    ] {
        assert_eq!(
            status(&chain.authorize(&mut with_body(body)).await),
            401,
            "{case}"
        );
    }
    // Any whitespace between the signed names signs the same string, and
    // the digest is the body's whichever separates it.
    for headers in [
        "date @request-target\tdigest",
        "date  @request-target \t digest",
    ] {
        let mut tabbed = Signed::alice("GET /");
        tabbed.headers = headers;
        tabbed.extra = vec![digest.clone()];
        let mut r = tabbed.request(Method::GET, "/");
        r.body = Some(bytes::Bytes::from_static(b"{\"hello\": \"mallory\"}"));
        assert_eq!(status(&chain.authorize(&mut r).await), 401, "{headers:?}");
        r.body = Some(bytes::Bytes::from_static(b"{\"hello\": \"world\"}"));
        assert!(chain.authorize(&mut r).await.is_allow(), "{headers:?}");
    }
    // A signed request without a body, replayed with one the check did
    // not see: its framing says so.
    let mut empty = Signed::alice("GET /");
    empty.headers = "date @request-target digest";
    empty.extra = vec![(
        "digest",
        "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_owned(),
    )];
    // Without the body, the request must say it has none, with a length
    // of 0: HTTP/2 and HTTP/3 need not declare a body, and Envoy's check
    // leaves out an HTTP/1.1 request's `Transfer-Encoding: chunked`.
    for (protocol, length, allowed) in [
        ("HTTP/2", Some("0"), true),
        ("HTTP/1.1", Some("0"), true),
        ("", Some("0"), true),
        ("HTTP/1.1", None, false),
        ("HTTP/1.0", None, false),
        ("HTTP/2", None, false),
        ("HTTP/3", None, false),
        ("", None, false),
    ] {
        let mut r = empty.request(Method::GET, "/");
        r.protocol = protocol.to_owned();
        if let Some(length) = length {
            r.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_static(length),
            );
        }
        assert_eq!(
            chain.authorize(&mut r).await.is_allow(),
            allowed,
            "{protocol} {length:?}"
        );
    }
    for (name, value) in [("content-length", "18"), ("transfer-encoding", "chunked")] {
        let mut r = empty.request(Method::GET, "/");
        r.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("0"),
        );
        r.headers.insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
        assert_eq!(status(&chain.authorize(&mut r).await), 401, "{name}");
    }
    // The signed body's first bytes, which Envoy sent alone
    // (`allow_partial_message`) and says so: the rest goes unchecked to
    // the app, so the digest counts for nothing.
    for (partial, allowed) in [("true", false), ("false", true)] {
        let mut r = with_body(Some("{\"hello\": \"world\"}"));
        r.headers.insert(
            http::HeaderName::from_static("x-envoy-auth-partial-body"),
            http::HeaderValue::from_static(partial),
        );
        assert_eq!(
            chain.authorize(&mut r).await.is_allow(),
            allowed,
            "{partial}"
        );
    }
    // RFC 9530's Content-Digest is the body's too, its value between
    // colons; without them it is no digest.
    let plain = chain_with("").await;
    for (value, body, allowed) in [
        (
            ":X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            "{\"hello\": \"world\"}",
            true,
        ),
        (
            ":X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            "{\"hello\": \"mallory\"}",
            false,
        ),
        (
            "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
            "{\"hello\": \"world\"}",
            false,
        ),
    ] {
        let mut signed = Signed::alice("GET /");
        signed.headers = "date @request-target content-digest";
        signed.extra = vec![("content-digest", format!("sha-256={value}"))];
        let mut r = signed.request(Method::GET, "/");
        r.body = Some(bytes::Bytes::from_static(body.as_bytes()));
        let decision = plain.authorize(&mut r).await;
        assert_eq!(decision.is_allow(), allowed, "{value} {body}");
    }
    let d = chain
        .authorize(&mut Signed::alice("GET /").request(Method::GET, "/"))
        .await;
    let deny = d.as_deny().unwrap();
    assert_eq!(deny.status.as_u16(), 401);
    assert_eq!(
        deny.headers.get(http::header::WWW_AUTHENTICATE).unwrap(),
        "hmac headers=\"date @request-target digest\"",
    );
    // A downgrade to an algorithm the config leaves out.
    s.algorithm = "hmac-sha1";
    let d = chain.authorize(&mut s.request(Method::GET, "/")).await;
    assert_eq!(status(&d), 401, "hmac-sha1");
}

#[tokio::test]
async fn huge_and_non_text_input_is_401() {
    let chain = chain(&config("")).await;
    let alice = Signed::alice("GET /");
    let huge = "a".repeat(100_000);
    let mut cases = Vec::new();
    let mut r = alice.request(Method::GET, "/");
    r.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::try_from(format!("{} {huge}", alice.authorization())).unwrap(),
    );
    cases.push(("a huge Authorization", r));
    let mut s = alice.clone();
    s.headers = "date @request-target x-big";
    s.extra = vec![("x-big", huge.clone())];
    cases.push(("a huge signed header", s.request(Method::GET, "/")));
    let mut s = alice.clone();
    s.headers = Box::leak(format!("date @request-target {}", "x-a ".repeat(40)).into_boxed_str());
    cases.push(("too many signed names", s.request(Method::GET, "/")));
    let mut r = alice.request(Method::GET, "/");
    let mut bytes = alice.authorization().into_bytes();
    bytes.extend_from_slice(b"\xff\xfe");
    r.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_bytes(&bytes).unwrap(),
    );
    cases.push(("an Authorization that is not UTF-8", r));
    let mut r = alice.request(Method::GET, "/");
    r.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_bytes("hmac username=\"é\", algorithm=\"hmac-sha256\", headers=\"date @request-target\", signature=\"AAAA\"".as_bytes()).unwrap(),
    );
    cases.push(("a UTF-8 user name", r));
    let mut r = alice.request(Method::GET, "/");
    r.headers.insert(
        http::header::DATE,
        HeaderValue::from_bytes(b"Thu, 22 Jun 2017 \xff GMT").unwrap(),
    );
    cases.push(("a Date that is not UTF-8", r));
    for (case, mut r) in cases {
        assert_refused(&chain.authorize(&mut r).await, case);
    }
}

#[tokio::test]
async fn an_unknown_user_is_answered_as_a_wrong_signature() {
    let chain = chain(&config("")).await;
    let mut unknown = Signed::alice("GET /");
    unknown.user = "mallory";
    let mut wrong = Signed::alice("GET /");
    wrong.key = "guess";
    let a = chain
        .authorize(&mut unknown.request(Method::GET, "/"))
        .await;
    let b = chain.authorize(&mut wrong.request(Method::GET, "/")).await;
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[tokio::test]
async fn bad_hmac_configs_name_their_place_and_hide_secrets() {
    let cases = [
        (
            "secretRefs: { secretRefs: [{ name: nowhere }] }",
            "configs[0].hmacAuth.secretRefs.secretRefs[0]",
        ),
        (
            "secretRefs: { secretRefs: [] }",
            "configs[0].hmacAuth.secretRefs.secretRefs",
        ),
        (
            "secretRefs: { secretRefs: [{ name: api-key }] }",
            "configs[0].hmacAuth.secretRefs.secretRefs[0]",
        ),
        (
            "secretRefs: { secretRefs: [{ name: no-password }] }",
            "configs[0].hmacAuth.secretRefs.secretRefs[0]",
        ),
        (
            "secretRefs: { secretRefs: [{ name: quoted-user }] }",
            "configs[0].hmacAuth.secretRefs.secretRefs[0]",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }, { name: alice-again }] }",
            "configs[0].hmacAuth.secretRefs.secretRefs[1]",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }] }\n    algorithms: [hmac-md5]",
            "configs[0].hmacAuth.algorithms[0]",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }] }\n    algorithms: []",
            "configs[0].hmacAuth.algorithms",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }] }\n    clockSkew: 0s",
            "configs[0].hmacAuth.clockSkew",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }] }\n    clockSkew: 2h",
            "configs[0].hmacAuth.clockSkew",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }] }\n    requiredHeaders: [authorization]",
            "configs[0].hmacAuth.requiredHeaders[0]",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }] }\n    parametersInHeaders: { x: 1 }",
            "configs[0].hmacAuth.parametersInHeaders.x",
        ),
        (
            "secretRefs: { secretRefs: [{ name: alice-hmac }] }\n    realm: r",
            "configs[0].hmacAuth.realm",
        ),
        ("{}", "configs[0].hmacAuth"),
    ];
    let secrets = "apiVersion: v1
kind: List
items:
- { apiVersion: v1, kind: Secret, metadata: { name: alice-hmac }, type: extauth.solo.io/accountcredentials, stringData: { username: alice, password: s3cret-a } }
- { apiVersion: v1, kind: Secret, metadata: { name: alice-again }, type: extauth.solo.io/accountcredentials, stringData: { username: alice, password: s3cret-b } }
- { apiVersion: v1, kind: Secret, metadata: { name: no-password }, type: extauth.solo.io/accountcredentials, stringData: { username: carol } }
- { apiVersion: v1, kind: Secret, metadata: { name: quoted-user }, type: extauth.solo.io/accountcredentials, stringData: { username: 'a\"b', password: s3cret-c } }
- { apiVersion: v1, kind: Secret, metadata: { name: api-key }, type: extauth.solo.io/apikey, stringData: { api-key: s3cret-k } }
";
    for (block, place) in cases {
        let yaml = format!("name: h\nconfigs:\n- hmacAuth:\n    {block}\n---\n{secrets}");
        let e = load_error(&yaml).await;
        assert_eq!(
            e.place(),
            Some(format!("t document 1: {place}").as_str()),
            "{e}"
        );
        let text = format!("{e} {e:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    let e = load_error(&format!(
        "name: h\nconfigs:\n- hmacAuth:\n    secretRefs: {{ secretRefs: [{{ name: nowhere, namespace: gloo-system }}] }}\n---\n{secrets}"
    ))
    .await;
    assert!(
        e.to_string()
            .contains("no Secret gloo-system/nowhere was read"),
        "{e}"
    );
    let e = load_error(&format!(
        "name: h\nconfigs:\n- hmacAuth:\n    secretRefs: {{ secretRefs: [{{ name: no-password }}] }}\n---\n{secrets}"
    ))
    .await;
    assert!(
        e.to_string()
            .contains("the Secret default/no-password has no `password`"),
        "{e}"
    );
}

/// One runtime and one chain for every case of a property.
fn shared_chain() -> &'static (
    tokio::runtime::Runtime,
    std::sync::Arc<authchain_core::Chain>,
) {
    static SHARED: std::sync::OnceLock<(
        tokio::runtime::Runtime,
        std::sync::Arc<authchain_core::Chain>,
    )> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let chain = runtime.block_on(chain(&config("")));
        (runtime, chain)
    })
}

/// Authorization values: arbitrary text, arbitrary bytes, and near-misses
/// of a well-formed one.
fn authorization_values() -> impl Strategy<Value = Vec<u8>> {
    let near = (
        prop::sample::select(vec!["hmac ", "HMAC ", "hmac", "Basic ", ""]),
        proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "username",
                    "algorithm",
                    "headers",
                    "signature",
                    "keyId",
                    "",
                    "=",
                ]),
                prop::sample::select(vec![
                    "alice",
                    "hmac-sha256",
                    "hmac-sha1",
                    "date @request-target",
                    "date request-line x-a x-a",
                    "(request-target)",
                    "AAAA",
                    "ujWCGHeec9Xd6UD2zlyxiNMCiXnDOWeVFMu5VeRUxtw=",
                    "",
                    "\"",
                    "\\",
                    ",",
                    " ",
                ]),
                prop::sample::select(vec!["=\"", "=", " = \"", "\""]),
                prop::sample::select(vec!["\", ", "\",", "\"", ", ", ""]),
            ),
            0..7,
        ),
    )
        .prop_map(|(scheme, params)| {
            let mut v = scheme.to_owned();
            for (name, value, eq, end) in params {
                v.push_str(name);
                v.push_str(eq);
                v.push_str(value);
                v.push_str(end);
            }
            v.into_bytes()
        });
    prop_oneof![
        near,
        any::<String>().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// No Authorization value makes the step panic or allow.
    #[test]
    fn arbitrary_authorization_values_are_refused(
        value in authorization_values(),
        headers in proptest::collection::vec("[a-zA-Z@()-]{0,12}", 0..5),
    ) {
        let (runtime, chain) = shared_chain();
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            return Ok(());
        };
        let mut r = req(Method::GET, "/")
            .with_header(http::header::DATE, HeaderValue::try_from(date(0)).unwrap())
            .with_header(http::header::AUTHORIZATION, value);
        for h in headers {
            if let Ok(name) = HeaderName::from_bytes(h.as_bytes()) {
                r.headers.append(name, HeaderValue::from_static("v"));
            }
        }
        let d = runtime.block_on(chain.authorize(&mut r));
        prop_assert_eq!(status(&d), 401);
    }

    /// A well-formed header with any `headers` list and any signature
    /// of any length: refused, never a panic.
    #[test]
    fn arbitrary_signed_lists_and_signatures_are_refused(
        names in proptest::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "date", "DATE", "@request-target", "request-line", "x-a",
                    "authorization", "host", "(request-target)", "",
                ]).prop_map(str::to_owned),
                "[ -~]{0,8}",
            ],
            0..40,
        ),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
        algorithm in prop::sample::select(vec!["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512", "x"]),
        user in prop::sample::select(vec!["alice", "bob", "mallory"]),
    ) {
        let (runtime, chain) = shared_chain();
        let value = format!(
            "hmac username=\"{user}\", algorithm=\"{algorithm}\", headers=\"{}\", signature=\"{}\"",
            names.join(" ").replace(['"', '\\'], ""),
            base64::engine::general_purpose::STANDARD.encode(&signature),
        );
        let Ok(value) = HeaderValue::try_from(value) else {
            return Ok(());
        };
        let mut r = req(Method::GET, "/")
            .with_header(http::header::DATE, HeaderValue::try_from(date(0)).unwrap())
            .with_header(HeaderName::from_static("x-a"), HeaderValue::from_static("a"))
            .with_header(http::header::AUTHORIZATION, value);
        let d = runtime.block_on(chain.authorize(&mut r));
        prop_assert_eq!(status(&d), 401);
    }
}
