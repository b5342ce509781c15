//! Gloo's HTTP passthrough with mutual TLS (`tlsConfig.secretRef`,
//! `sslParams`), `responseHeaderTimeout`, `connectionPool` and
//! `allowedClientHeadersOnSuccess`: `authchain check` over the manifest,
//! and a request through real Envoy to an auth server behind a real TLS
//! server that requires the Secret's client certificate.

use std::net::SocketAddr;

use authchain_testkit::ScratchDir;
use authchain_testkit::tls::{FrontSettings, Issued, TlsFront};
use bytes::Bytes;
use hyper_util::rt::TokioIo;

use crate::support::run_check;
use crate::{Stack, manifest_path};

const MANIFEST: &str = "passthrough-http-mtls.yaml";

/// The manifest, as it is but for the auth server's address.
fn manifest_at(auth: SocketAddr) -> String {
    std::fs::read_to_string(manifest_path(MANIFEST))
        .unwrap()
        .replace(
            "https://127.0.0.1:9100/auth",
            &format!("https://{auth}/auth"),
        )
}

/// The fixture's server certificate and key, and the manifest Secret's CA.
fn fixture() -> (Issued, String) {
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/gloo/fixtures/passthrough-server.pem"),
    )
    .unwrap();
    let split = pem.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let manifest = std::fs::read_to_string(manifest_path(MANIFEST)).unwrap();
    let ca = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("ca.crt: "))
        .unwrap();
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .unwrap();
    (
        Issued::from_pem(&pem[..split], &pem[split..]),
        String::from_utf8(ca).unwrap(),
    )
}

/// The auth server of Gloo's guide, plain HTTP: `authorization: authorize
/// me` is a 200 with `x-user-id: alice`, `x-ratelimit-remaining: 9` and
/// `x-internal: 1`; anything else a 403.
async fn auth_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let allowed = req.uri().path() == "/auth"
                        && req
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v == "authorize me");
                    let answer = if allowed {
                        http::Response::builder()
                            .header("x-user-id", "alice")
                            .header("x-ratelimit-remaining", "9")
                            .header("x-internal", "1")
                    } else {
                        http::Response::builder().status(403)
                    };
                    Ok::<_, std::convert::Infallible>(
                        answer
                            .body(http_body_util::Full::new(Bytes::new()))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[test]
fn check_names_a_missing_secret_and_never_prints_the_key() {
    let (ok, out, err) = run_check(&[manifest_path(MANIFEST)]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ok "), "{out}");
    // Without its Secret (a file of the AuthConfig alone), the reference
    // is named.
    let dir = ScratchDir::new("gloo-passthrough").unwrap();
    let manifest = std::fs::read_to_string(manifest_path(MANIFEST)).unwrap();
    let authconfig = &manifest[manifest.find("apiVersion: enterprise").unwrap()..];
    let alone = dir.write("authconfig.yaml", authconfig).unwrap();
    let (ok, _, err) = run_check(&[alone.as_path()]);
    assert!(!ok);
    assert!(
        err.contains(
            "spec.configs[0].passThroughAuth.http.tlsConfig.secretRef: no Secret gloo-system/passthrough-mtls was read"
        ),
        "{err}"
    );
    // A Secret whose key does not parse: named, its value never shown.
    let key_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("tls.key: "))
        .unwrap();
    let broken = dir
        .write(
            "broken.yaml",
            &manifest.replace(key_line, "  tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCmszeS1zM2NyZXQKLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo="),
        )
        .unwrap();
    let (ok, out, err) = run_check(&[broken.as_path()]);
    assert!(!ok);
    assert!(
        err.contains("http.tlsConfig: the client key is not a PEM private key"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains("s3cret"), "{err}");
}

#[tokio::test]
async fn mutual_tls_through_envoy_with_the_manifest_s_secret() {
    let (identity, ca) = fixture();
    let backend = auth_server().await;
    let front = TlsFront::start(
        backend,
        FrontSettings::new(identity).require_client_cert_pem(&ca),
    )
    .await
    .unwrap();
    let dir = ScratchDir::new("gloo-passthrough").unwrap();
    let manifest = dir.write(MANIFEST, &manifest_at(front.addr())).unwrap();
    let stack = Stack::start(
        &format!("authConfigFiles: [{}]\n", manifest.display()),
        &[("/", "gloo-system.http-passthrough-mtls")],
        |b| b,
    )
    .await;

    let reply = stack
        .get(
            "/",
            &[("authorization", "authorize me"), ("x-user-id", "mallory")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", stack.authchain.log());
    // The auth server's identity goes upstream, the client's is gone; only
    // the listed header of its 200 reaches the client.
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), ["alice"]);
    assert_eq!(reply.header_values("x-ratelimit-remaining"), ["9"]);
    assert!(reply.header_values("x-internal").is_empty());
    assert!(
        reply
            .echoed()
            .unwrap()
            .header_all("x-ratelimit-remaining")
            .is_empty()
    );

    assert_eq!(stack.get("/", &[]).await.status, 403);
    assert!(!stack.authchain.log().contains("PRIVATE KEY"));
}
