//! The HTTP passthrough step against independent HTTP auth servers on
//! loopback, configured through AuthConfig YAML as Gloo users write it.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authchain_core::{AuthConfig, AuthorizationRequest, Chain, Decision, Format, PluginRegistry};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use http::{HeaderName, HeaderValue, Method};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::{Value, json};

/// What the auth server received.
#[derive(Debug, Clone, Default)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn spawn(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The sample server of Gloo's guide: `/auth` with `authorization:
/// authorize me` → 200 (plus headers), `/auth` otherwise → 403, other
/// paths → 403. Records every call.
async fn sample_server() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let app = Router::new()
        .route(
            "/auth",
            post(move |headers: HeaderMap, body: Bytes| {
                let l = l.clone();
                async move {
                    l.lock().unwrap().push(Received {
                        path: "/auth".into(),
                        headers: headers.clone(),
                        body,
                    });
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some("authorize me")
                    {
                        (
                            StatusCode::OK,
                            [
                                ("x-auth-user", "alice"),
                                ("x-user-id", "u-1"),
                                ("x-not-listed", "no"),
                            ],
                            "",
                        )
                            .into_response()
                    } else {
                        (
                            StatusCode::FORBIDDEN,
                            [
                                ("www-authenticate", "Custom"),
                                ("x-secret-detail", "internal"),
                            ],
                            "denied by sample",
                        )
                            .into_response()
                    }
                }
            }),
        )
        .fallback(any(|| async { StatusCode::FORBIDDEN }));
    (spawn(app).await, log)
}

fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    authchain_http::register(&mut registry);
    registry
}

fn build(yaml: &str) -> Result<Chain, authchain_core::Error> {
    let configs = AuthConfig::parse("pt.yaml", yaml, Format::Yaml)?;
    configs[0].build(&registry())
}

fn request(headers: &[(&'static str, &'static str)]) -> AuthorizationRequest {
    let mut req = AuthorizationRequest::new(Method::GET, "/app");
    for (k, v) in headers {
        req.headers
            .append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    req
}

#[tokio::test]
async fn the_seed_http_passthrough() {
    let (addr, log) = sample_server().await;
    let chain = build(&format!(
        r#"
name: pt
configs:
- passThroughAuth:
    http:
      url: http://{addr}/auth
      request:
        allowedHeaders: [authorization]
"#
    ))
    .unwrap();
    let mut req = request(&[("authorization", "authorize me"), ("x-other", "not sent")]);
    assert!(chain.authorize(&mut req).await.is_allow());
    {
        let calls = log.lock().unwrap();
        assert_eq!(calls[0].headers["authorization"], "authorize me");
        assert!(
            !calls[0].headers.contains_key("x-other"),
            "only allowed headers are sent"
        );
        assert!(
            calls[0].body.is_empty(),
            "no pass-through options: empty body"
        );
    }
    let mut req = request(&[("authorization", "let me in")]);
    let decision = chain.authorize(&mut req).await;
    assert_eq!(decision.as_deny().unwrap().status, 403);
    // Without allowedHeaders nothing is copied, so the sample denies.
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth: {{http: {{url: 'http://{addr}/auth'}}}}\n"
    ))
    .unwrap();
    let mut req = request(&[("authorization", "authorize me")]);
    assert!(!chain.authorize(&mut req).await.is_allow());
}

#[tokio::test]
async fn answer_headers_go_upstream_as_configured_and_only_if_present() {
    let (addr, _) = sample_server().await;
    let chain = build(&format!(
        r#"
name: pt
configs:
- passThroughAuth:
    http:
      url: http://{addr}/auth
      request: {{ allowedHeaders: [authorization] }}
      response:
        allowedUpstreamHeaders: [x-auth-user, x-absent]
        allowedUpstreamHeadersToOverwrite: [x-user-id]
"#
    ))
    .unwrap();
    let mut stripped: Vec<&str> = chain
        .stripped_headers()
        .iter()
        .map(|h| h.as_str())
        .collect();
    stripped.sort_unstable();
    assert_eq!(stripped, ["x-absent", "x-auth-user", "x-user-id"]);
    let mut req = request(&[
        ("authorization", "authorize me"),
        ("x-user-id", "forged"),
        ("x-absent", "forged"),
    ]);
    let decision = chain.authorize(&mut req).await;
    assert!(decision.is_allow());
    assert_eq!(req.headers["x-auth-user"], "alice");
    assert_eq!(req.headers["x-user-id"], "u-1");
    assert!(
        !req.headers.contains_key("x-absent"),
        "no empty header for an absent answer header"
    );
    assert!(!req.headers.contains_key("x-not-listed"));
}

#[tokio::test]
async fn denies_carry_status_body_and_only_the_listed_client_headers() {
    let (addr, _) = sample_server().await;
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth:\n    http:\n      url: http://{addr}/auth\n      response: {{allowedClientHeadersOnDenied: [www-authenticate]}}\n"
    ))
    .unwrap();
    let decision = chain.authorize(&mut request(&[])).await;
    let deny = decision.as_deny().unwrap();
    assert_eq!(deny.status, 403);
    assert_eq!(deny.body, "denied by sample");
    assert_eq!(deny.headers["www-authenticate"], "Custom");
    assert!(!deny.headers.contains_key("x-secret-detail"));
}

/// An auth server that records the body it got and answers `reply`.
async fn recording_server(status: StatusCode, reply: impl Into<String>) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let reply: String = reply.into();
    let app = Router::new().route(
        "/{*path}",
        any(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let l = l.clone();
                let reply = reply.clone();
                async move {
                    l.lock().unwrap().push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    (status, reply)
                }
            },
        ),
    );
    (spawn(app).await, log)
}

#[tokio::test]
async fn state_metadata_and_body_pass_through_and_state_comes_back() {
    let (addr, log) = recording_server(
        StatusCode::OK,
        r#"{"state": {"tier": "gold", "user": "alice"}}"#,
    )
    .await;
    let chain = build(&format!(
        r#"
name: pt
configs:
- passThroughAuth:
    http:
      url: http://{addr}/deep/path/check
      request:
        headersToAdd: {{ x-caller: gateway }}
        passThroughState: true
        passThroughFilterMetadata: true
        passThroughBody: true
      response: {{ readStateFromResponse: true }}
    config: {{ tenant: acme, limits: [1, 2] }}
"#
    ))
    .unwrap();
    let mut req = request(&[("x-caller", "client")]);
    req.state.insert("user", json!("alice"));
    req.state.insert("kept", json!(1));
    req.metadata
        .insert("envoy.filters.http.jwt_authn".into(), json!({"sub": "a"}));
    req.body = Some(Bytes::from_static(b"{\"order\": 7}"));
    assert!(chain.authorize(&mut req).await.is_allow());
    let call = log.lock().unwrap()[0].clone();
    assert_eq!(call.path, "/deep/path/check", "the URL's path is kept");
    assert_eq!(call.headers["x-caller"], "gateway");
    assert_eq!(call.headers["content-type"], "application/json");
    let sent: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        sent,
        json!({
            "state": {"user": "alice", "kept": 1},
            "filterMetadata": {"envoy.filters.http.jwt_authn": {"sub": "a"}},
            "body": "{\"order\": 7}",
            "config": {"tenant": "acme", "limits": [1, 2]},
        })
    );
    assert_eq!(
        req.state.to_json(),
        json!({"user": "alice", "kept": 1, "tier": "gold"})
    );
}

/// A step writes state; the auth server may send it back as it got it
/// (numbers as floats too), and add names, but a state that changes a
/// name the step wrote fails closed, under `failureModeAllow` too: a
/// later `opaAuth` would judge it.
#[tokio::test]
async fn a_state_that_overwrites_another_step_s_fails_closed() {
    let mut registry = registry();
    registry.register(authchain_core::plugin_fn(
        "WritesState",
        |_: Value, _: &authchain_core::BuildContext<'_>| {
            Ok(Arc::new(authchain_core::decide_fn(|req| {
                req.state.insert(
                    "jwt",
                    json!({"sub": "alice", "n": 5, "roles": ["a"], "big": 9_007_199_254_740_993u64}),
                );
                Ok(Decision::authorized())
            })))
        },
    ));
    // (case, the answer's state, allowed)
    let cases = [
        ("new names", r#"{"tier": "gold"}"#, true),
        (
            "sent back as it was",
            // A number past 2^53, as a float rounds it.
            r#"{"jwt": {"sub": "alice", "n": 5.0, "roles": ["a"], "big": 9007199254740992}, "tier": "gold"}"#,
            true,
        ),
        (
            "a changed name",
            r#"{"jwt": {"sub": "admin", "n": 5, "roles": ["a"]}}"#,
            false,
        ),
        (
            "a name added inside",
            r#"{"jwt": {"sub": "alice", "n": 5, "roles": ["a"], "admin": true}}"#,
            false,
        ),
        (
            "a changed number",
            r#"{"jwt": {"sub": "alice", "n": 6, "roles": ["a"]}}"#,
            false,
        ),
        (
            "a changed list",
            r#"{"jwt": {"sub": "alice", "n": 5, "roles": ["a", "admin"]}}"#,
            false,
        ),
        ("another type", r#"{"jwt": "admin"}"#, false),
    ];
    for (case, state, allowed) in cases {
        let (addr, _) = recording_server(StatusCode::OK, format!(r#"{{"state": {state}}}"#)).await;
        let configs = AuthConfig::parse(
            "pt.yaml",
            &format!(
                r#"
name: pt
statusOnError: 503
configs:
- pluginAuth: {{ name: WritesState }}
- passThroughAuth:
    http:
      url: http://{addr}/auth
      request: {{ passThroughState: true }}
      response: {{ readStateFromResponse: true }}
    failureModeAllow: true
"#
            ),
            Format::Yaml,
        )
        .unwrap();
        let chain = configs[0].build(&registry).unwrap();
        let mut req = request(&[]);
        let decision = chain.authorize(&mut req).await;
        assert_eq!(req.state["jwt"]["sub"], "alice", "case {case}");
        if allowed {
            let allow = decision.as_allow().expect(case);
            assert!(
                !allow
                    .headers
                    .iter()
                    .any(|m| m.name == "x-envoy-auth-failure-mode-allowed"),
                "case {case} was no failure"
            );
            assert_eq!(req.state["tier"], "gold", "case {case}");
            // What the step wrote stays as it wrote it.
            assert_eq!(
                req.state["jwt"]["big"], 9_007_199_254_740_993u64,
                "case {case}"
            );
        } else {
            assert_eq!(
                decision.as_deny().map(|d| d.status.as_u16()),
                Some(503),
                "case {case}"
            );
        }
    }
}

#[tokio::test]
async fn unparsable_state_is_a_deny() {
    for reply in ["not json", r#"{"nostate": 1}"#, r#"{"state": [1]}"#] {
        let (addr, _) = recording_server(StatusCode::OK, reply).await;
        let chain = build(&format!(
            "name: pt\nconfigs:\n- passThroughAuth:\n    http:\n      url: http://{addr}/auth\n      response: {{readStateFromResponse: true}}\n"
        ))
        .unwrap();
        let mut req = request(&[]);
        assert_eq!(
            chain.authorize(&mut req).await,
            Decision::unauthorized(),
            "{reply}"
        );
    }
}

fn failing_configs(url: &str, timeout: &str, fail_open: bool) -> String {
    format!(
        "name: pt\nconfigs:\n- name: remote\n  passThroughAuth:\n    http: {{url: '{url}', connectionTimeout: {timeout}}}\n    failureModeAllow: {fail_open}\n"
    )
}

fn bypass_count(recorder: &DebuggingRecorder) -> u64 {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "http_passthrough_bypass_failure")
        .map(|(.., v)| match v {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// A port with nothing listening on it.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn failures_deny_unless_failure_mode_allow_which_is_counted() {
    let (unavailable, _) = recording_server(StatusCode::SERVICE_UNAVAILABLE, "later").await;
    let down = closed_port().await;
    let hanging = authchain_testkit::silent_server().await.unwrap();
    for (what, url) in [
        ("503", format!("http://{unavailable}/auth")),
        ("down", format!("http://{down}/auth")),
        ("hangs", format!("http://{hanging}/auth")),
    ] {
        let chain = build(&failing_configs(&url, "300ms", false)).unwrap();
        assert_eq!(
            chain.authorize(&mut request(&[])).await,
            Decision::unauthorized(),
            "{what}"
        );

        let recorder = DebuggingRecorder::new();
        let chain = metrics::with_local_recorder(&recorder, || {
            build(&failing_configs(&url, "300ms", true))
        })
        .unwrap();
        let decision = chain.authorize(&mut request(&[])).await;
        let allow = decision
            .as_allow()
            .unwrap_or_else(|| panic!("{what}: fails open"));
        assert_eq!(
            allow.headers[0].name, "x-envoy-auth-failure-mode-allowed",
            "{what}"
        );
        assert_eq!(bypass_count(&recorder), 1, "{what}");
    }
}

/// A call that gets no answer in time while the auth server answered
/// another is no outage (a client can make its own call slow: a
/// credential the server is slow to refuse): it fails closed under
/// `failureModeAllow`. One that hangs while the server answers nothing
/// still passes (above).
#[tokio::test]
async fn a_call_late_while_the_server_answers_others_fails_closed() {
    // (case, what the first call gets, and when)
    let cases = [
        ("no answer in time", StatusCode::OK, 2000),
        ("a gateway's 504", StatusCode::GATEWAY_TIMEOUT, 200),
    ];
    for (case, first_status, first_after) in cases {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let app = Router::new().route(
            "/auth",
            axum::routing::post(move || {
                let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                async move {
                    if !first {
                        return StatusCode::OK;
                    }
                    tokio::time::sleep(Duration::from_millis(first_after)).await;
                    first_status
                }
            }),
        );
        let addr = spawn(app).await;
        let url = format!("http://{addr}/auth");
        let chain = Arc::new(build(&failing_configs(&url, "500ms", true)).unwrap());
        let slow = {
            let chain = chain.clone();
            tokio::spawn(async move { chain.authorize(&mut request(&[])).await })
        };
        while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            chain.authorize(&mut request(&[])).await.is_allow(),
            "{case}: answered at once"
        );
        assert_eq!(slow.await.unwrap(), Decision::unauthorized(), "{case}");
    }
}

/// A 5xx other than a gateway's, or a connection closed with no answer
/// once the request is in (a handler that fails on the request, which a
/// client can bring about: Go's server closes the connection on a
/// handler's panic), fails closed, under `failureModeAllow` too, and is
/// no bypass.
#[tokio::test]
async fn a_handler_s_failure_never_fails_open() {
    let mut cases = Vec::new();
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::NOT_IMPLEMENTED,
        StatusCode::HTTP_VERSION_NOT_SUPPORTED,
    ] {
        let (erroring, _) = recording_server(status, "boom").await;
        cases.push((status.to_string(), erroring));
    }
    cases.push(("hangs up".to_owned(), hanging_up_server().await));
    for (what, addr) in cases {
        let recorder = DebuggingRecorder::new();
        let chain = metrics::with_local_recorder(&recorder, || {
            build(&failing_configs(
                &format!("http://{addr}/auth"),
                "300ms",
                true,
            ))
        })
        .unwrap();
        let decision = chain.authorize(&mut request(&[])).await;
        assert_eq!(decision, Decision::unauthorized(), "{what}");
        assert_eq!(bypass_count(&recorder), 0, "{what}");
    }
}

/// A server that allows one call, closes its connection, and listens no
/// more.
async fn one_call_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        drop(listener);
        let mut buf = vec![0; 64 * 1024];
        let _ = stream.read(&mut buf).await;
        let answer = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let _ = stream.write_all(answer.as_bytes()).await;
    });
    addr
}

/// A connection that cannot be made while the server answered another
/// call within the call's time fails closed under `failureModeAllow`: the
/// server is up (a flood fills its backlog so).
#[tokio::test]
async fn a_connection_refused_while_the_server_answers_others_fails_closed() {
    let addr = one_call_server().await;
    let chain = build(&failing_configs(&format!("http://{addr}/auth"), "2s", true)).unwrap();
    assert!(chain.authorize(&mut request(&[])).await.is_allow());
    let decision = chain.authorize(&mut request(&[])).await;
    assert_eq!(decision, Decision::unauthorized());
}

/// A server that reads each call's request and closes the connection
/// without an answer.
async fn hanging_up_server() -> SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

/// A server that answers every call with `head` and then `body`, and
/// keeps the connection open (a body that never ends, when `head` promises
/// more).
async fn raw_server(head: &'static str, body: Vec<u8>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

/// A deny is a deny whatever its body does: too large, or stalled after
/// the head. Neither is a failure that `failureModeAllow` lets through.
#[tokio::test]
async fn a_deny_with_a_huge_or_stalled_body_stays_a_deny_under_failure_mode_allow() {
    let huge = raw_server(
        "HTTP/1.1 403 Forbidden\r\ncontent-length: 2097152\r\n\r\n",
        vec![b'x'; 2 * 1024 * 1024],
    )
    .await;
    let stalled = raw_server(
        "HTTP/1.1 403 Forbidden\r\ncontent-length: 100\r\n\r\n",
        b"no entry".to_vec(),
    )
    .await;
    for (what, addr, body_len) in [
        (
            "huge",
            huge,
            authchain_http::passthrough::MAX_RESPONSE_BYTES,
        ),
        ("stalled", stalled, 8),
    ] {
        let chain = build(&failing_configs(
            &format!("http://{addr}/auth"),
            "300ms",
            true,
        ))
        .unwrap();
        let decision = chain.authorize(&mut request(&[])).await;
        let deny = decision
            .as_deny()
            .unwrap_or_else(|| panic!("{what}: a 403 let through: {decision:?}"));
        assert_eq!(deny.status, StatusCode::FORBIDDEN, "{what}");
        assert_eq!(
            deny.body.len(),
            body_len,
            "{what}: the body read, cut at the limit"
        );
    }
}

/// An allow's body, too large or stalled, is no failure either: without
/// `readStateFromResponse` it is not read, and with it the state is not
/// whole, which is a deny, or late after the server answered the head,
/// which is no outage. `failureModeAllow` lets none through.
#[tokio::test]
async fn an_allow_with_a_huge_or_stalled_body_is_no_failure() {
    let huge = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-length: 2097152\r\n\r\n",
        vec![b' '; 2 * 1024 * 1024],
    )
    .await;
    let stalled = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
        b"{\"state\":".to_vec(),
    )
    .await;
    for (what, addr) in [("huge", huge), ("stalled", stalled)] {
        let url = format!("http://{addr}/auth");
        let recorder = DebuggingRecorder::new();
        let chain =
            metrics::with_local_recorder(&recorder, || build(&failing_configs(&url, "2s", true)))
                .unwrap();
        let started = std::time::Instant::now();
        let decision = chain.authorize(&mut request(&[])).await;
        let allow = decision
            .as_allow()
            .unwrap_or_else(|| panic!("{what}: {decision:?}"));
        assert!(allow.headers.is_empty(), "{what}: an allow, not a bypass");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{what}: the body is not waited for"
        );
        let reading = failing_configs(&url, "2s", true).replace(
            "http: {",
            "http: {response: {readStateFromResponse: true}, ",
        );
        let chain = metrics::with_local_recorder(&recorder, || build(&reading)).unwrap();
        let decision = chain.authorize(&mut request(&[])).await;
        // Stalled: cut short by the call's time limit, once the server
        // had answered the call's head, which is no outage.
        assert_eq!(decision, Decision::unauthorized(), "{what}");
        assert_eq!(bypass_count(&recorder), 0, "{what}");
    }
}

#[tokio::test]
async fn the_call_has_a_time_limit_even_when_the_chain_has_more() {
    let hanging = authchain_testkit::silent_server().await.unwrap();
    let chain = build(&failing_configs(
        &format!("http://{hanging}/auth"),
        "100ms",
        false,
    ))
    .unwrap();
    let outcome =
        tokio::time::timeout(Duration::from_secs(5), chain.authorize(&mut request(&[]))).await;
    assert_eq!(outcome.unwrap(), Decision::unauthorized());
}

#[test]
fn bad_configs_name_their_place() {
    let err = |http: &str| {
        build(&format!(
            "name: pt\nconfigs:\n- passThroughAuth:\n    http: {http}\n"
        ))
        .unwrap_err()
        .to_string()
    };
    // (case, the `http` block, the error)
    const CASES: &[(&str, &str, &str)] = &[
        (
            "a header listed both to add and to overwrite",
            "{url: 'http://a/auth', response: {allowedUpstreamHeaders: [x-a, x-b], allowedUpstreamHeadersToOverwrite: [x-b]}}",
            "pt.yaml: configs[0].passThroughAuth.http.response.allowedUpstreamHeadersToOverwrite[0]: a header may be in allowedUpstreamHeaders or allowedUpstreamHeadersToOverwrite, not both",
        ),
        (
            "the host set upstream",
            "{url: 'http://a/auth', response: {allowedUpstreamHeadersToOverwrite: [x-a, host]}}",
            "pt.yaml: configs[0].passThroughAuth.http.response.allowedUpstreamHeadersToOverwrite[1]: a remote may not set host upstream",
        ),
        (
            "the failure mark set upstream",
            "{url: 'http://a/auth', response: {allowedUpstreamHeaders: [X-Envoy-Auth-Failure-Mode-Allowed]}}",
            "pt.yaml: configs[0].passThroughAuth.http.response.allowedUpstreamHeaders[0]: a remote may not set x-envoy-auth-failure-mode-allowed upstream",
        ),
        (
            "the failure mark set upstream under another spelling",
            "{url: 'http://a/auth', response: {allowedUpstreamHeadersToOverwrite: [x_envoy_auth.failure_mode_allowed]}}",
            "pt.yaml: configs[0].passThroughAuth.http.response.allowedUpstreamHeadersToOverwrite[0]: a remote may not set x_envoy_auth.failure_mode_allowed upstream",
        ),
        (
            "a relative URL",
            "{url: '/relative'}",
            "pt.yaml: configs[0].passThroughAuth.http.url: expected an http:// or https:// URL",
        ),
        (
            "an allowed header that is no header name",
            "{url: 'http://a', request: {allowedHeaders: ['bad header']}}",
            "pt.yaml: configs[0].passThroughAuth.http.request.allowedHeaders[0]: not a valid header name",
        ),
        (
            "a header to add that is no header value",
            "{url: 'http://a', request: {headersToAdd: {x-k: \"bad\\nvalue\"}}}",
            "pt.yaml: configs[0].passThroughAuth.http.request.headersToAdd.x-k: not a valid header value",
        ),
        (
            "a zero connection timeout",
            "{url: 'http://a', connectionTimeout: 0s}",
            "pt.yaml: configs[0].passThroughAuth.http.connectionTimeout: expected a duration above zero",
        ),
        (
            "tls for http://",
            "{url: 'http://a', tls: {caPem: x}}",
            "pt.yaml: configs[0].passThroughAuth.http.tls: needs an https:// URL",
        ),
        (
            "a CA that is no PEM",
            "{url: 'https://a', tls: {caPem: not-a-pem}}",
            "pt.yaml: configs[0].passThroughAuth.http.tls: no certificate in the PEM",
        ),
        (
            "a CA file that is not there",
            "{url: 'https://a', tls: {caFile: /nonexistent/ca.pem}}",
            "pt.yaml: configs[0].passThroughAuth.http.tls.caFile: cannot read /nonexistent/ca.pem: entity not found",
        ),
        (
            "an unknown field",
            "{url: 'http://a', retries: 3}",
            "pt.yaml: configs[0].passThroughAuth.http.retries: unknown field `retries`, expected one of `url`, `connectionTimeout`, `responseHeaderTimeout`, `connectionPool`, `tlsConfig`, `tls`, `request`, `response`",
        ),
        (
            "Gloo's tlsConfig beside authchain's tls",
            "{url: 'https://a', tlsConfig: {}, tls: {caPem: x}}",
            "pt.yaml: configs[0].passThroughAuth.http.tlsConfig: set Gloo's `tlsConfig` or authchain's `tls`, not both",
        ),
        (
            "tlsConfig for http://",
            "{url: 'http://a', tlsConfig: {}}",
            "pt.yaml: configs[0].passThroughAuth.http.tlsConfig: needs an https:// URL",
        ),
        (
            "a Secret that was not read",
            "{url: 'https://a', tlsConfig: {secretRef: {name: nowhere, namespace: team-b}}}",
            "pt.yaml: configs[0].passThroughAuth.http.tlsConfig.secretRef: no Secret team-b/nowhere was read",
        ),
        (
            "a cipher suite rustls lacks",
            "{url: 'https://a', tlsConfig: {sslParams: {cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, DES-CBC3-SHA]}}}",
            "pt.yaml: configs[0].passThroughAuth.http.tlsConfig.sslParams.cipherSuites[1]: `DES-CBC3-SHA` is not offered by rustls, which has AEAD suites with ECDHE only: ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-CHACHA20-POLY1305, TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256",
        ),
        (
            "TLS 1.1",
            "{url: 'https://a', tlsConfig: {sslParams: {minimumProtocolVersion: TLSv1_1}}}",
            "pt.yaml: configs[0].passThroughAuth.http.tlsConfig.sslParams.minimumProtocolVersion: TLS below 1.2 is not available: rustls speaks TLSv1_2 and TLSv1_3 only",
        ),
        (
            "a version Gloo lacks",
            "{url: 'https://a', tlsConfig: {sslParams: {minimumProtocolVersion: TLSv9}}}",
            "pt.yaml: configs[0].passThroughAuth.http.tlsConfig.sslParams.minimumProtocolVersion: unknown variant `TLSv9`, expected one of `TLS_AUTO`, `TLSv1_0`, `TLSv1_1`, `TLSv1_2`, `TLSv1_3`",
        ),
        (
            "a framing header for the client",
            "{url: 'http://a', response: {allowedClientHeadersOnSuccess: [x-a, Content-Length]}}",
            "pt.yaml: configs[0].passThroughAuth.http.response.allowedClientHeadersOnSuccess[1]: a connection or framing header cannot be passed on",
        ),
        (
            "a framing header for the client on a deny",
            "{url: 'http://a', response: {allowedClientHeadersOnDenied: [transfer-encoding]}}",
            "pt.yaml: configs[0].passThroughAuth.http.response.allowedClientHeadersOnDenied[0]: a connection or framing header cannot be passed on",
        ),
        (
            "a framing header upstream",
            "{url: 'http://a', response: {allowedUpstreamHeaders: [connection]}}",
            "pt.yaml: configs[0].passThroughAuth.http.response.allowedUpstreamHeaders[0]: a connection or framing header cannot be passed on",
        ),
        (
            "a framing header to add to the call",
            "{url: 'http://a', request: {headersToAdd: {x-caller: gateway, transfer-encoding: chunked}}}",
            "pt.yaml: configs[0].passThroughAuth.http.request.headersToAdd.transfer-encoding: a connection or framing header cannot be passed on",
        ),
        (
            "a connection header to add to the call",
            "{url: 'http://a', request: {headersToAdd: {Connection: close}}}",
            "pt.yaml: configs[0].passThroughAuth.http.request.headersToAdd.Connection: a connection or framing header cannot be passed on",
        ),
        (
            "the client's host for the call",
            "{url: 'http://a', request: {allowedHeaders: [authorization, Host]}}",
            "pt.yaml: configs[0].passThroughAuth.http.request.allowedHeaders[1]: the call's host is the URL's; a client's cannot be passed on",
        ),
        (
            "a pool field Gloo lacks",
            "{url: 'http://a', connectionPool: {maxRequests: 3}}",
            "pt.yaml: configs[0].passThroughAuth.http.connectionPool.maxRequests: unknown field `maxRequests`, expected `maxConns` or `idleTimeout`",
        ),
    ];
    for (name, http, want) in CASES {
        assert_eq!(err(http), *want, "case {name}");
    }
}

/// An HTTPS auth server with a certificate from a fresh CA; returns its
/// address and the CA's PEM.
async fn https_server() -> (SocketAddr, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("x-tls", "yes")
                            .body(http_body_util::Full::new(Bytes::new()))
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.pem())
}

#[tokio::test]
async fn https_with_a_custom_ca() {
    let (addr, ca_pem) = https_server().await;
    let url = format!("https://localhost:{}/auth", addr.port());
    let indented: String = ca_pem.lines().map(|l| format!("          {l}\n")).collect();
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth:\n    http:\n      url: {url}\n      response: {{allowedUpstreamHeaders: [x-tls]}}\n      tls:\n        caPem: |\n{indented}"
    ))
    .unwrap();
    let mut req = request(&[]);
    assert!(chain.authorize(&mut req).await.is_allow());
    assert_eq!(req.headers["x-tls"], "yes");

    // The same server is not trusted with the web PKI roots: fail closed.
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth: {{http: {{url: '{url}'}}}}\n"
    ))
    .unwrap();
    assert_eq!(
        chain.authorize(&mut request(&[])).await,
        Decision::unauthorized()
    );

    // A CA file works the same as inline PEM.
    let dir = std::env::temp_dir().join(format!("authchain-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ca.pem");
    std::fs::write(&file, &ca_pem).unwrap();
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth: {{http: {{url: '{url}', tls: {{caFile: '{}'}}}}}}\n",
        file.display()
    ))
    .unwrap();
    assert!(chain.authorize(&mut request(&[])).await.is_allow());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_step_s_config_alone_makes_a_json_body() {
    let (addr, log) = recording_server(StatusCode::OK, "").await;
    let chain = build(&format!(
        "name: pt\nconfigs:\n- passThroughAuth:\n    http: {{ url: 'http://{addr}/auth' }}\n    config: {{ tenant: acme }}\n"
    ))
    .unwrap();
    let mut req = request(&[]);
    assert!(chain.authorize(&mut req).await.is_allow());
    let call = log.lock().unwrap()[0].clone();
    assert_eq!(call.headers["content-type"], "application/json");
    let sent: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(sent, json!({ "config": { "tenant": "acme" } }));
}

#[test]
fn the_config_is_a_mapping_and_its_values_stay_out_of_debug() {
    let Err(e) = build(
        "name: pt\nconfigs:\n- passThroughAuth:\n    http: { url: 'http://127.0.0.1:1/auth' }\n    config: [s3cr3t]\n",
    ) else {
        panic!("a list is not a config")
    };
    assert!(e.to_string().contains("passThroughAuth"), "{e}");
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    let config: authchain_http::passthrough::PassThroughHttp = serde_json::from_value(json!({
        "http": { "url": "http://127.0.0.1:1/auth" },
        "config": { "token": "s3cr3t" },
    }))
    .unwrap();
    let shown = format!("{config:?}");
    assert!(
        shown.contains("token") && !shown.contains("s3cr3t"),
        "{shown}"
    );
}

/// A `mirror` that names no AuthConfig is an error at the mirror.
#[tokio::test]
async fn a_mirror_of_nothing_is_an_error_where_it_is_named() {
    let yaml = "name: a\nconfigs:\n- passThroughAuth: { http: { url: 'http://127.0.0.1:1/' }, mirror: ghost }\n";
    let configs = AuthConfig::parse("pt.yaml", yaml, Format::Yaml).unwrap();
    let e = authchain_core::Engine::new(registry())
        .load(&configs)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pt.yaml: configs[0].passThroughAuth.mirror: no AuthConfig named 'ghost'"),
        "{e}"
    );
}

/// The connection pool's slots are a flood's to take: a request that has
/// none within half the step's time, or half the call's, is turned away
/// (the chain's `statusOnError`) even with `failureModeAllow`, which lets
/// through only the auth server's own failure (here, its silence).
#[tokio::test]
async fn a_full_connection_pool_never_fails_open() {
    let silent = authchain_testkit::silent_server().await.unwrap();
    for (step_timeout, call_timeout) in [("\n  timeout: 1s", "5s"), ("", "1s")] {
        full_pool_with(silent, step_timeout, call_timeout).await;
    }
}

async fn full_pool_with(silent: std::net::SocketAddr, step_timeout: &str, call_timeout: &str) {
    let yaml = format!(
        "name: pt\nconfigs:\n- name: remote{step_timeout}\n  failureModeAllow: true\n  passThroughAuth:\n    http: {{url: 'http://{silent}/auth', connectionTimeout: {call_timeout}, connectionPool: {{maxConns: 1}}}}\n"
    );
    let chain = Arc::new(build(&yaml).unwrap());
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.authorize(&mut request(&[])).await })
        })
        .collect();
    let mut turned_away = 0;
    for run in runs {
        match run.await.unwrap() {
            Decision::Deny(deny) => {
                assert_eq!(deny.status, StatusCode::FORBIDDEN);
                turned_away += 1;
            }
            Decision::Allow(allow) => assert_eq!(
                allow.headers[0].name, "x-envoy-auth-failure-mode-allowed",
                "only the server's silence passes"
            ),
        }
    }
    assert_eq!(
        turned_away, 2,
        "the two without a connection ({step_timeout:?}, {call_timeout})"
    );
}
