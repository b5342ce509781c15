//! Gloo's `hmacAuth` manifest, checked by `authchain check` and answered
//! behind real Envoy: requests signed here (with the RustCrypto crates,
//! not the step's code) as Gloo's end-to-end test signs them.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};

use crate::support::run_check;
use crate::{Stack, config_files, manifest_path};

/// The manifest's user and key.
const USER: &str = "alice";
const KEY: &str = "secret";

/// Gloo's own test: its `Date`, and its signature of `GET /requests` by
/// alice.
const GLOO_DATE: &str = "Thu, 22 Jun 2017 17:15:21 GMT";
const GLOO_SIGNATURE: &str = "ujWCGHeec9Xd6UD2zlyxiNMCiXnDOWeVFMu5VeRUxtw=";

/// base64 of HMAC-SHA256(`key`, `message`).
fn sign(key: &str, message: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The `Authorization` value of Gloo's scheme.
fn authorization(user: &str, signature: &str) -> String {
    format!(
        "hmac username=\"{user}\", algorithm=\"hmac-sha256\", headers=\"date @request-target\", signature=\"{signature}\""
    )
}

/// The `Date` and `Authorization` headers of `user`, signing with `key`
/// the request line `signed` (`GET /path`) at `date`.
fn headers(user: &str, key: &str, signed: &str, date: &str) -> [(&'static str, String); 2] {
    let signature = sign(key, &format!("date: {date}\n{signed} HTTP/1.1"));
    [
        ("date", date.to_owned()),
        ("authorization", authorization(user, &signature)),
    ]
}

/// Header names and values, as a test sends them.
type Headers = Vec<(&'static str, String)>;

fn now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

fn refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

#[test]
fn authchain_check_reads_the_manifest() {
    let (ok, out, err) = run_check(&[manifest_path("hmac-auth.yaml")]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ok gloo-system.hmac-auth: 1 step"), "{out}");
}

#[tokio::test]
async fn signed_requests_pass_through_envoy_and_forged_ones_do_not() {
    let stack = Stack::start(
        &format!(
            "userIdHeader: x-user-id\n{}",
            config_files(&["hmac-auth.yaml"])
        ),
        &[("/", "gloo-system.hmac-auth")],
        |b| b,
    )
    .await;

    // Gloo's signature: its scheme verifies, but its Date is years old.
    // Gloo's own test expects a 200 here; authchain keeps signatures to
    // 5 minutes around their Date (`clockSkew`).
    let reply = stack
        .get(
            "/requests",
            &[
                ("date", GLOO_DATE),
                ("authorization", &authorization(USER, GLOO_SIGNATURE)),
            ],
        )
        .await;
    assert_eq!(reply.status, 401, "{}", stack.authchain.log());

    // The same scheme, signed now: allowed, the user goes upstream.
    for path in ["/requests", "/requests?page=2&sort=asc"] {
        let h = headers(USER, KEY, &format!("GET {path}"), &now());
        let reply = stack.get(path, &refs(&h)).await;
        assert_eq!(reply.status, 200, "{path}: {}", stack.authchain.log());
        let echoed = reply.echoed().unwrap();
        assert_eq!(echoed.header_all("x-user-id"), [USER]);
        assert_eq!(echoed.path, path);
    }
    let date = now();
    let h = headers(USER, KEY, "POST /orders", &date);
    let reply = stack.send(http::Method::POST, "/orders", &refs(&h)).await;
    assert_eq!(reply.status, 200);

    // `host` signed too: Envoy's check carries it as `:authority`.
    let date = now();
    let signature = sign(
        KEY,
        &format!("date: {date}\nGET /requests HTTP/1.1\nhost: api.example.com"),
    );
    let auth = authorization(USER, &signature).replace(
        "headers=\"date @request-target\"",
        "headers=\"date @request-target host\"",
    );
    for (host, want) in [("api.example.com", 200), ("other.example.com", 401)] {
        let reply = stack
            .get(
                "/requests",
                &[("host", host), ("date", &date), ("authorization", &auth)],
            )
            .await;
        assert_eq!(reply.status, want, "host {host}");
    }

    // Forged, replayed elsewhere, or out of time: a 401 with the challenge.
    let long_ago = httpdate::fmt_http_date(
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    let cases: Vec<(&str, &str, Headers)> = vec![
        ("no signature", "/requests", vec![]),
        (
            "a wrong key",
            "/requests",
            headers(USER, "guess", "GET /requests", &now()).into(),
        ),
        (
            "an unknown user",
            "/requests",
            headers("mallory", KEY, "GET /requests", &now()).into(),
        ),
        (
            "signed for another path",
            "/admin",
            headers(USER, KEY, "GET /requests", &now()).into(),
        ),
        (
            "signed for another query",
            "/requests?page=3",
            headers(USER, KEY, "GET /requests?page=2", &now()).into(),
        ),
        (
            "signed for another method",
            "/orders",
            headers(USER, KEY, "GET /orders", &now()).into(),
        ),
        (
            "signed over the spelling Envoy forwards as it is",
            "/%61dmin",
            headers(USER, KEY, "GET /%61dmin", &now()).into(),
        ),
        (
            "an hour old",
            "/requests",
            headers(USER, KEY, "GET /requests", &long_ago).into(),
        ),
    ];
    for (case, path, h) in cases {
        let method = if case.contains("method") {
            http::Method::POST
        } else {
            http::Method::GET
        };
        let reply = stack.send(method, path, &refs(&h)).await;
        assert_eq!(reply.status, 401, "case {case}");
        assert_eq!(
            reply.header_values("www-authenticate"),
            ["hmac headers=\"date @request-target\""],
            "case {case}"
        );
    }

    // The signature binds the request as authchain reads it: the path
    // Envoy forwards as it came, /%61dmin, is /admin, and only a
    // signature of /admin holds for it.
    let h = headers(USER, KEY, "GET /admin", &now());
    let reply = stack.get("/%61dmin", &refs(&h)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echoed().unwrap().path, "/%61dmin");

    // Two Authorization headers (Envoy joins them with a comma).
    let good = headers(USER, KEY, "GET /requests", &now());
    let other = headers(USER, KEY, "GET /admin", &good[0].1);
    let mut twice = refs(&good);
    twice.push(("authorization", &other[1].1));
    assert_eq!(stack.get("/requests", &twice).await.status, 401);

    // A client's own x-user-id never reaches the app.
    let mut forged = refs(&good);
    forged.push(("x-user-id", "admin"));
    let reply = stack.get("/requests", &forged).await;
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), [USER]);
}

/// A signed `Digest` of no body, replayed over HTTP/2 with a body: HTTP/2
/// need not declare a length, Envoy does not send the body to the check
/// (over gRPC or HTTP, whose check carries Envoy's own `content-length`
/// and HTTP version), and the body must not reach the app under a digest
/// that was not of it. A request that says it has none
/// (`content-length: 0`) passes over gRPC; over HTTP nothing tells.
#[tokio::test]
async fn a_digest_of_no_body_does_not_cover_an_http2_body() {
    use authchain_testkit::envoy::{Bootstrap, Envoy, HttpService};
    let stack = hmac_stack().await;
    let upstream = authchain_testkit::EchoServer::start().await.unwrap();
    let http_envoy = Bootstrap::new(upstream.addr()).http(HttpService {
        addr: stack.authchain.http,
        path_prefix: "/check:gloo-system.hmac-auth",
        allowed_headers: &["date", "digest"],
        upstream_headers: &[],
        upstream_headers_to_append: &[],
        client_headers: &[],
    });
    let http_envoy = Envoy::start(&http_envoy.yaml()).await.unwrap();
    let over_http = http_envoy.listener("ingress").unwrap();
    for (transport, ingress, empty_passes) in
        [("gRPC", stack.ingress, true), ("HTTP", over_http, false)]
    {
        let body = Some("{\"amount\": 1000000}");
        assert_eq!(
            post_h2_with_digest_of_nothing(ingress, body).await,
            401,
            "{transport}: {}",
            stack.authchain.log()
        );
        let want = if empty_passes { 200 } else { 401 };
        assert_eq!(
            post_h2_with_digest_of_nothing(ingress, None).await,
            want,
            "{transport}, no body: {}",
            stack.authchain.log()
        );
    }
}

/// The manifest's AuthConfig behind Envoy (gRPC) at `/`.
async fn hmac_stack() -> Stack {
    Stack::start(
        &config_files(&["hmac-auth.yaml"]),
        &[("/", "gloo-system.hmac-auth")],
        |b| b,
    )
    .await
}

/// alice's `Date`, `Authorization` and `Digest` for `POST /orders`, her
/// signature covering a `Digest` of no body (SHA-256 of nothing).
fn digest_of_nothing_signed() -> [(&'static str, String); 3] {
    let digest = "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let date = now();
    let signature = sign(
        KEY,
        &format!("date: {date}\nPOST /orders HTTP/1.1\ndigest: {digest}"),
    );
    let auth = authorization(USER, &signature).replace(
        "headers=\"date @request-target\"",
        "headers=\"date @request-target digest\"",
    );
    [
        ("date", date),
        ("authorization", auth),
        ("digest", digest.to_owned()),
    ]
}

/// The same over HTTP/1.1 with a chunked body, which declares no length:
/// Envoy's check leaves out its `Transfer-Encoding`, so only a length of 0
/// says a body is empty.
#[tokio::test]
async fn a_digest_of_no_body_does_not_cover_a_chunked_http1_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stack = hmac_stack().await;
    let [(_, date), (_, auth), (_, digest)] = digest_of_nothing_signed();
    let mut stream = tokio::net::TcpStream::connect(stack.ingress).await.unwrap();
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: app.example\r\ndate: {date}\r\nauthorization: {auth}\r\ndigest: {digest}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n13\r\n{{\"amount\": 1000000}}\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "{answer}\n{}",
        stack.authchain.log()
    );
}

/// The status of an HTTP/2 `POST /orders` to `ingress`, alice's signature
/// covering a `Digest` of no body, with `body` in one frame and no
/// length (`None`: no body, and `content-length: 0`).
async fn post_h2_with_digest_of_nothing(
    ingress: std::net::SocketAddr,
    body: Option<&'static str>,
) -> u16 {
    let [(_, date), (_, auth), (_, digest)] = digest_of_nothing_signed();
    let io = tokio::net::TcpStream::connect(ingress).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{ingress}/orders"))
        .header("date", date)
        .header("authorization", auth)
        .header("digest", digest);
    if body.is_none() {
        request = request.header("content-length", "0");
    }
    // A stream of one frame: no length, so none is sent.
    let frames = futures::stream::iter(body.map(|b| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(b)))
    }));
    let request = request
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response.status().as_u16()
}
