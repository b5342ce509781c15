//! The HTTP passthrough's Gloo fields beyond the call itself: `tlsConfig`
//! (a Secret's client certificate and CA, `sslParams`) against a real TLS
//! server that requires a client certificate, `responseHeaderTimeout`,
//! `connectionPool` and `response.allowedClientHeadersOnSuccess`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authchain_core::{
    AuthConfig, AuthorizationRequest, Chain, Decision, Format, HeaderAction, PluginRegistry,
};
use authchain_testkit::tls::{FrontSettings, Issued, Pki, TlsFront};
use bytes::Bytes;
use http::{Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn build(yaml: &str) -> Result<Chain, authchain_core::Error> {
    let mut registry = PluginRegistry::new();
    authchain_http::register(&mut registry);
    let configs = AuthConfig::parse("pt.yaml", yaml, Format::Yaml)?;
    configs[0].build(&registry)
}

fn request() -> AuthorizationRequest {
    AuthorizationRequest::new(Method::GET, "/app")
}

/// What a [`server`] saw: connections accepted, calls in flight now and
/// at most.
#[derive(Debug, Default)]
struct Seen {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// A plain HTTP/1.1 auth server: 200 with `headers` after `delay`.
async fn server(
    headers: &'static [(&'static str, &'static str)],
    delay: Duration,
) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let s = s.clone();
                    async move {
                        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        s.most_in_flight.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        s.in_flight.fetch_sub(1, Ordering::SeqCst);
                        let mut answer = http::Response::builder().status(StatusCode::OK);
                        for (k, v) in headers {
                            answer = answer.header(*k, *v);
                        }
                        Ok::<_, std::convert::Infallible>(
                            answer
                                .body(http_body_util::Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A kubernetes.io/tls Secret `gloo-system/<name>`.
fn tls_secret(name: &str, client: Option<&Issued>, ca: Option<&str>) -> String {
    authchain_testkit::tls::tls_secret("gloo-system", name, client, ca)
}

/// A Gloo AuthConfig in gloo-system whose `http` block is `http`, and
/// `extra` documents.
fn manifest(http: &str, extra: &str) -> String {
    format!(
        "apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: {{ name: pt, namespace: gloo-system }}
spec:
  configs:
  - passThroughAuth:
      http: {http}
---
{extra}"
    )
}

#[tokio::test]
async fn mtls_with_the_secret_s_certificate_allows_and_anything_less_fails_closed() {
    let servers = Pki::new();
    let clients = Pki::new();
    let strangers = Pki::new();
    let (backend, _) = server(&[("x-tls", "yes")], Duration::ZERO).await;
    let identity = servers.issue(&["localhost", "127.0.0.1"]);
    let front = TlsFront::start(
        backend,
        FrontSettings::new(identity.clone()).require_client_cert(&clients),
    )
    .await
    .unwrap();
    let tls12 = TlsFront::start(
        backend,
        FrontSettings::new(identity)
            .require_client_cert(&clients)
            .tls12_only(),
    )
    .await
    .unwrap();
    let client = clients.issue(&["authchain"]);
    let stranger = strangers.issue(&["authchain"]);
    let ca = servers.ca_pem();
    let other_ca = strangers.ca_pem();
    let url = |addr: SocketAddr| format!("https://127.0.0.1:{}/auth", addr.port());
    let (at, at12) = (url(front.addr()), url(tls12.addr()));
    // (case, URL, tlsConfig, the Secret, allowed)
    let cases = [
        (
            "the Secret's certificate and CA",
            &at,
            "{secretRef: {name: mtls}}",
            tls_secret("mtls", Some(&client), Some(&ca)),
            true,
        ),
        (
            "no client certificate",
            &at,
            "{secretRef: {name: mtls}}",
            tls_secret("mtls", None, Some(&ca)),
            false,
        ),
        (
            "a certificate from another CA",
            &at,
            "{secretRef: {name: mtls}}",
            tls_secret("mtls", Some(&stranger), Some(&ca)),
            false,
        ),
        (
            "a server the Secret's CA did not sign",
            &at,
            "{secretRef: {name: mtls}}",
            tls_secret("mtls", Some(&client), Some(&other_ca)),
            false,
        ),
        (
            "the web PKI roots (tlsConfig: {})",
            &at,
            "{}",
            String::new(),
            false,
        ),
        (
            "TLS 1.2 when it is all the server speaks",
            &at12,
            "{secretRef: {name: mtls}, sslParams: {maximumProtocolVersion: TLSv1_2}}",
            tls_secret("mtls", Some(&client), Some(&ca)),
            true,
        ),
        (
            "TLS 1.3 at least, against a TLS 1.2 server",
            &at12,
            "{secretRef: {name: mtls}, sslParams: {minimumProtocolVersion: TLSv1_3}}",
            tls_secret("mtls", Some(&client), Some(&ca)),
            false,
        ),
        (
            "a suite the (ECDSA) server shares",
            &at12,
            "{secretRef: {name: mtls}, sslParams: {cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]}}",
            tls_secret("mtls", Some(&client), Some(&ca)),
            true,
        ),
        (
            "only suites it does not",
            &at12,
            "{secretRef: {name: mtls}, sslParams: {cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES256-GCM-SHA384]}}",
            tls_secret("mtls", Some(&client), Some(&ca)),
            false,
        ),
    ];
    for (case, url, tls_config, secret, allowed) in cases {
        let http = format!(
            "{{url: '{url}', connectionTimeout: 2s, tlsConfig: {tls_config}, response: {{allowedUpstreamHeaders: [x-tls]}}}}"
        );
        let chain = build(&manifest(&http, &secret)).unwrap_or_else(|e| panic!("{case}: {e}"));
        let mut req = request();
        let decision = chain.authorize(&mut req).await;
        if allowed {
            assert!(decision.is_allow(), "case {case}: {decision:?}");
            assert_eq!(req.headers["x-tls"], "yes", "case {case}");
        } else {
            assert_eq!(decision, Decision::unauthorized(), "case {case}");
        }
    }
}

#[tokio::test]
async fn secret_refs_resolve_in_the_authconfig_s_namespace_and_a_missing_one_is_named() {
    let clients = Pki::new();
    let client = clients.issue(&["authchain"]);
    let elsewhere = tls_secret("mtls", Some(&client), None).replace("gloo-system", "team-b");
    // Without a namespace, `mtls` is gloo-system's, not team-b's.
    let e = build(&manifest(
        "{url: 'https://127.0.0.1:1/auth', tlsConfig: {secretRef: {name: mtls}}}",
        &elsewhere,
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "pt.yaml document 1: spec.configs[0].passThroughAuth.http.tlsConfig.secretRef: no Secret gloo-system/mtls was read"
    );
    // A reference that names the namespace may use it: the files the
    // server reads are what it trusts.
    build(&manifest(
        "{url: 'https://127.0.0.1:1/auth', tlsConfig: {secretRef: {name: mtls, namespace: team-b}}}",
        &elsewhere,
    ))
    .unwrap();
    // A key that does not parse is named, its text never shown.
    let broken = tls_secret("mtls", Some(&client), None)
        .replace(client.key_pem.lines().nth(1).unwrap(), "k3y-s3cret-garbage");
    let e = build(&manifest(
        "{url: 'https://127.0.0.1:1/auth', tlsConfig: {secretRef: {name: mtls}}}",
        &broken,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("http.tlsConfig: the client key is not a PEM private key"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

#[tokio::test]
async fn a_server_that_never_answers_fails_closed_by_response_header_timeout() {
    let addr = authchain_testkit::silent_server().await.unwrap();
    // connectionTimeout alone would wait a minute: the bounded wait below
    // can only end in a deny through responseHeaderTimeout.
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth:\n    http: {{url: 'http://{addr}/auth', connectionTimeout: 60s, responseHeaderTimeout: 100ms, request: {{passThroughState: true}}}}\n"
    ))
    .unwrap();
    let outcome =
        tokio::time::timeout(Duration::from_secs(20), chain.authorize(&mut request())).await;
    assert_eq!(
        outcome.expect("an answer before the bounded wait"),
        Decision::unauthorized()
    );

    // A server that answers in time is unaffected; `0s` is Gloo's unset.
    let (slow, _) = server(&[], Duration::from_millis(50)).await;
    for limit in ["5s", "0s"] {
        let chain = build(&format!(
            "name: pt\nconfigs:\n- passThroughAuth: {{http: {{url: 'http://{slow}/auth', responseHeaderTimeout: {limit}}}}}\n"
        ))
        .unwrap();
        assert!(chain.authorize(&mut request()).await.is_allow(), "{limit}");
    }
}

#[tokio::test]
async fn only_the_listed_headers_of_a_200_reach_the_client() {
    static HEADERS: &[(&str, &str)] = &[
        ("x-ratelimit-remaining", "9"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("x-internal", "no"),
    ];
    let (addr, _) = server(HEADERS, Duration::ZERO).await;
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth:\n    http:\n      url: http://{addr}/auth\n      response: {{allowedClientHeadersOnSuccess: [x-ratelimit-remaining, set-cookie, x-absent]}}\n"
    ))
    .unwrap();
    let mut req = request();
    let decision = chain.authorize(&mut req).await;
    let allow = decision.as_allow().unwrap();
    let to_client: Vec<(String, String, HeaderAction)> = allow
        .response_headers
        .iter()
        .map(|m| {
            (
                m.name.to_string(),
                m.value.to_str().unwrap().to_owned(),
                m.action,
            )
        })
        .collect();
    assert_eq!(
        to_client,
        [
            (
                "x-ratelimit-remaining".into(),
                "9".into(),
                HeaderAction::OverwriteIfExistsOrAdd
            ),
            (
                "set-cookie".into(),
                "a=1".into(),
                HeaderAction::OverwriteIfExistsOrAdd
            ),
            (
                "set-cookie".into(),
                "b=2".into(),
                HeaderAction::AppendIfExistsOrAdd
            ),
        ]
    );
    assert!(allow.headers.is_empty(), "nothing goes upstream: {allow:?}");
    assert!(!req.headers.contains_key("x-ratelimit-remaining"));
}

#[tokio::test]
async fn max_conns_bounds_the_calls_in_flight() {
    let (addr, seen) = server(&[], Duration::from_millis(100)).await;
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth: {{http: {{url: 'http://{addr}/auth', connectionPool: {{maxConns: 1}}}}}}\n"
    ))
    .unwrap();
    let chain = Arc::new(chain);
    let calls = (0..4).map(|_| {
        let chain = chain.clone();
        async move { chain.authorize(&mut request()).await }
    });
    for decision in join_all(calls).await {
        assert!(decision.is_allow(), "{decision:?}");
    }
    assert_eq!(seen.most_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout_and_kept_without_it() {
    for (idle, connections) in [("idleTimeout: 50ms", 2), ("", 1)] {
        let (addr, seen) = server(&[], Duration::ZERO).await;
        let chain = build(&format!(
            "name: pt\nconfigs:\n- passThroughAuth: {{http: {{url: 'http://{addr}/auth', connectionPool: {{ {idle} }}}}}}\n"
        ))
        .unwrap();
        assert!(chain.authorize(&mut request()).await.is_allow());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(chain.authorize(&mut request()).await.is_allow());
        assert_eq!(
            seen.connections.load(Ordering::SeqCst),
            connections,
            "{idle:?}"
        );
    }
}

/// Runs `calls` at once and gives their outcomes in order.
async fn join_all<F>(calls: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = calls.map(tokio::spawn).collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// The auth server's status is its whole say: a 2xx other than 200 is
/// never an allow, and no deny goes out as a 1xx or 2xx.
#[tokio::test]
async fn a_2xx_other_than_200_is_a_deny_never_an_allow() {
    for status in [201u16, 204, 206] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(status)
                            .header("x-ratelimit-remaining", "9")
                            .body(http_body_util::Full::new(Bytes::new()))
                            .unwrap(),
                    )
                });
                tokio::spawn(
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        let chain = build(&format!(
            "name: pt\nconfigs:\n- passThroughAuth: {{http: {{url: 'http://{addr}/auth', response: {{allowedClientHeadersOnSuccess: [x-ratelimit-remaining]}}}}}}\n"
        ))
        .unwrap();
        let decision = chain.authorize(&mut request()).await;
        let deny = decision
            .as_deny()
            .unwrap_or_else(|| panic!("{status}: {decision:?}"));
        assert_eq!(deny.status, 403, "{status}");
        assert!(deny.headers.is_empty(), "{status}: {deny:?}");
    }
}
