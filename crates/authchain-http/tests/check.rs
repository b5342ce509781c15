//! The HTTP check server: what it reads from each kind of proxy and what it
//! answers. (End-to-end runs behind the real proxies live with the peers.)

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use authchain_core::{
    Allow, AuthorizationRequest, Chain, ChainBuilder, ChainStep, Decision, Deny, Engine,
    Generation, PluginRegistry, decide_fn, service_fn,
};
use authchain_http::{CheckConfig, CheckServer, HEADERS_TO_REMOVE};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

/// What the chain saw of the original request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: Method,
    path: String,
    host: String,
    scheme: String,
    body: Option<Bytes>,
}

fn recorder(seen: Arc<Mutex<Option<Seen>>>, decision: Decision) -> ChainStep {
    ChainStep::new(
        "record",
        Arc::new(service_fn(move |req: &mut AuthorizationRequest| {
            *seen.lock().unwrap() = Some(Seen {
                method: req.method.clone(),
                path: req.path.clone(),
                host: req.host.clone(),
                scheme: req.scheme.clone(),
                body: req.body.clone(),
            });
            let decision = decision.clone();
            Box::pin(async move { Ok(decision) })
        })),
    )
}

async fn check_server(
    config: CheckConfig,
    decision: Decision,
) -> (CheckServer, Arc<Mutex<Option<Seen>>>) {
    let seen = Arc::new(Mutex::new(None));
    let chains = ["site", "other"]
        .map(|name| Chain::builder(name).step(recorder(seen.clone(), decision.clone())));
    (server_of(config, chains).await, seen)
}

/// A check server reading checks as `config` says, with the chains
/// `builders` make.
async fn server_of(
    config: CheckConfig,
    builders: impl IntoIterator<Item = ChainBuilder>,
) -> CheckServer {
    let chains = builders.into_iter().map(|b| b.build().unwrap());
    let engine = Arc::new(Engine::new(PluginRegistry::new()));
    engine
        .install(Generation::from_chains(chains, 1).unwrap())
        .await
        .unwrap();
    CheckServer::new(engine, config)
}

fn trusted() -> CheckConfig {
    CheckConfig::default().trust(["10.0.0.0/8".parse().unwrap()])
}

const PROXY: &str = "10.1.2.3:5000";
const CLIENT: &str = "192.0.2.7:6000";

fn peer(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn envoy_http_service_mode_sends_the_original_after_the_prefix() {
    let (server, seen) = check_server(CheckConfig::default(), Decision::authorized()).await;
    let req = request(
        Method::POST,
        "/check/site/ratings/1?x=1",
        &[("host", "shop.example")],
        "payload",
    );
    let response = server.check(req, peer(CLIENT)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().clone().unwrap(),
        Seen {
            method: Method::POST,
            path: "/ratings/1?x=1".into(),
            host: "shop.example".into(),
            scheme: String::new(),
            body: Some(Bytes::from_static(b"payload")),
        }
    );
    // The bare config path is the root.
    let response = server
        .check(request(Method::GET, "/check/other", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().clone().unwrap().path, "/");
    let response = server
        .check(
            request(Method::GET, "/check/other?q", &[], ""),
            peer(CLIENT),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().clone().unwrap().path, "/?q");
}

#[tokio::test]
async fn traefik_and_caddy_forwarded_headers_from_a_trusted_proxy() {
    let (server, seen) = check_server(trusted(), Decision::authorized()).await;
    let headers = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/admin/users?id=7"),
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-proto", "https"),
        ("host", "authchain:9000"),
    ];
    let response = server
        .check(
            request(Method::GET, "/check/site", &headers, ""),
            peer(PROXY),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().clone().unwrap(),
        Seen {
            method: Method::DELETE,
            path: "/admin/users?id=7".into(),
            host: "app.example".into(),
            scheme: "https".into(),
            body: None,
        }
    );
}

#[tokio::test]
async fn forwarded_headers_from_anyone_else_are_ignored() {
    let (server, seen) = check_server(trusted(), Decision::authorized()).await;
    let headers = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/admin"),
        ("x-original-uri", "/admin"),
        ("host", "authchain:9000"),
    ];
    server
        .check(
            request(Method::GET, "/check/site", &headers, ""),
            peer(CLIENT),
        )
        .await;
    let seen = seen.lock().unwrap().clone().unwrap();
    assert_eq!((seen.method, seen.path.as_str()), (Method::GET, "/"));
    assert_eq!(seen.host, "authchain:9000");
}

#[tokio::test]
async fn nginx_original_headers() {
    let (server, seen) = check_server(trusted(), Decision::authorized()).await;
    let headers = [
        ("x-original-uri", "/private/doc?v=2"),
        ("x-original-method", "PUT"),
    ];
    server
        .check(
            request(Method::GET, "/check/site", &headers, ""),
            peer(PROXY),
        )
        .await;
    let s = seen.lock().unwrap().clone().unwrap();
    assert_eq!(
        (s.method, s.path.as_str()),
        (Method::PUT, "/private/doc?v=2")
    );

    let headers = [("x-original-url", "https://docs.example/a/b?c=d")];
    server
        .check(
            request(Method::GET, "/check/site", &headers, ""),
            peer(PROXY),
        )
        .await;
    let s = seen.lock().unwrap().clone().unwrap();
    assert_eq!(
        (s.path.as_str(), s.host.as_str(), s.scheme.as_str()),
        ("/a/b?c=d", "docs.example", "https")
    );

    // Garbage in forwarded headers falls back, never panics.
    let headers = [
        ("x-original-uri", "no-slash"),
        ("x-original-method", "BAD METHOD"),
    ];
    server
        .check(
            request(Method::GET, "/check/site", &headers, ""),
            peer(PROXY),
        )
        .await;
    let s = seen.lock().unwrap().clone().unwrap();
    assert_eq!((s.method, s.path.as_str()), (Method::GET, "/"));
}

#[tokio::test]
async fn the_first_value_of_a_forwarded_header_decides() {
    let (server, seen) = check_server(trusted(), Decision::authorized()).await;
    // A second value never stands in for a first one that is unusable.
    let headers = [
        ("x-forwarded-uri", ""),
        ("x-forwarded-uri", "/admin"),
        ("x-original-method", "PUT"),
        ("x-original-method", "DELETE"),
        ("host", "first.example"),
        ("host", "second.example"),
    ];
    server
        .check(
            request(Method::GET, "/check/site/own", &headers, ""),
            peer(PROXY),
        )
        .await;
    let s = seen.lock().unwrap().clone().unwrap();
    assert_eq!(
        (s.method, s.path.as_str(), s.host.as_str()),
        (Method::PUT, "/own", "first.example")
    );
}

#[tokio::test]
async fn default_and_unknown_configs() {
    let (server, seen) = check_server(
        CheckConfig::default().default_config("other"),
        Decision::authorized(),
    )
    .await;
    let response = server
        .check(request(Method::GET, "/ratings/1", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().clone().unwrap().path, "/ratings/1");

    let response = server
        .check(request(Method::GET, "/check/nope/x", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.body(), "unknown AuthConfig");

    let (server, _) = check_server(CheckConfig::default(), Decision::authorized()).await;
    let response = server
        .check(request(Method::GET, "/ratings/1", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "no default: fail closed"
    );
}

#[tokio::test]
async fn an_allow_carries_upstream_headers_and_removals() {
    let allow = Allow::new()
        .set_header(
            HeaderName::from_static("x-user-id"),
            HeaderValue::from_static("alice"),
        )
        .append_header(
            HeaderName::from_static("x-groups"),
            HeaderValue::from_static("a"),
        )
        .response_header(
            HeaderName::from_static("set-cookie"),
            HeaderValue::from_static("s=1"),
        )
        .remove_header(HeaderName::from_static("x-debug"))
        .remove_header(HeaderName::from_static("cookie"));
    // The check's own headers never come back in the answer, whether the
    // chain answers at once (the answer reuses the check's header map) or
    // after a step waited.
    let (waiting, _) = check_server(CheckConfig::default(), allow.clone().into()).await;
    let at_once = server_of(
        CheckConfig::default(),
        [Chain::builder("site").step(ChainStep::new(
            "allow",
            Arc::new(decide_fn(move |_| Ok(allow.clone().into()))),
        ))],
    );
    for server in [waiting, at_once.await] {
        let check = request(
            Method::GET,
            "/check/site/",
            &[
                ("authorization", "Bearer secret"),
                ("cookie", "session=secret"),
                ("x-debug", "1"),
            ],
            "",
        );
        let response = server.check(check, peer(CLIENT)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h["x-user-id"], "alice");
        assert_eq!(h["x-groups"], "a");
        assert_eq!(h["set-cookie"], "s=1");
        assert_eq!(h[HEADERS_TO_REMOVE], "x-debug, cookie");
        assert_eq!(h.len(), 4, "{h:?}");
    }
}

#[tokio::test]
async fn one_removal_is_listed_alone() {
    let allow = Allow::new().remove_header(HeaderName::from_static("x-debug"));
    let (server, _) = check_server(CheckConfig::default(), allow.into()).await;
    let response = server
        .check(request(Method::GET, "/check/site/", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.headers()[HEADERS_TO_REMOVE], "x-debug");
    let (server, _) = check_server(CheckConfig::default(), Decision::authorized()).await;
    let response = server
        .check(request(Method::GET, "/check/site/", &[], ""), peer(CLIENT))
        .await;
    assert!(!response.headers().contains_key(HEADERS_TO_REMOVE));
}

#[tokio::test]
async fn a_deny_is_sent_as_it_is() {
    let deny = Deny::new(StatusCode::UNAUTHORIZED)
        .header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        )
        .body("token expired");
    let (server, _) = check_server(CheckConfig::default(), deny.into()).await;
    let response = server
        .check(request(Method::GET, "/check/site/x", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[http::header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(response.body(), "token expired");
}

#[tokio::test]
async fn a_query_rewrite_cannot_be_carried_and_fails_the_check() {
    let (server, _) = check_server(
        CheckConfig::default(),
        Allow::new().remove_query_parameter("token").into(),
    )
    .await;
    let response = server
        .check(
            request(Method::GET, "/check/site/x?token=1", &[], ""),
            peer(CLIENT),
        )
        .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn an_oversized_body_is_413_before_any_step() {
    let (server, seen) = check_server(CheckConfig::default(), Decision::authorized()).await;
    let server = server.body_limit(4);
    let response = server
        .check(
            request(Method::POST, "/check/site/x", &[], "12345"),
            peer(CLIENT),
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(seen.lock().unwrap().is_none());
}

#[tokio::test]
async fn serves_over_tcp_and_shuts_down_gracefully() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (server, seen) = check_server(CheckConfig::default(), Decision::authorized()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /check/site/hello HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(seen.lock().unwrap().clone().unwrap().path, "/hello");
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn one_check_leaves_nothing_for_the_next() {
    // The server reads each check into the spare its thread's last check
    // left: what the chain sees of the next one must be all its own, after
    // an allow, a deny and a check that waited.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let at_once = decide_fn(move |req| {
        record.lock().unwrap().push(format!(
            "{} {} host={:?} scheme={:?} id={:?} body={:?} state={:?} headers={}",
            req.method,
            req.path,
            req.host,
            req.scheme,
            req.id,
            req.body,
            req.state.to_json(),
            req.headers.len(),
        ));
        req.state
            .insert("from", serde_json::json!(req.path.clone()));
        Ok(if req.path.starts_with("/deny") {
            Decision::unauthorized()
        } else {
            Decision::authorized()
        })
    });
    let waits = service_fn(|_| {
        Box::pin(async {
            tokio::task::yield_now().await;
            Ok(Decision::authorized())
        })
    });
    let server = server_of(
        trusted(),
        [Chain::builder("site")
            .step(ChainStep::new("record", Arc::new(at_once)))
            .step(ChainStep::new("waits", Arc::new(waits)))],
    )
    .await;
    let checks = [
        (
            "/check/site",
            vec![
                ("x-forwarded-uri", "/one?a=1"),
                ("x-forwarded-host", "one.example"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "id-1"),
            ],
            "body",
        ),
        ("/check/site/deny", vec![("host", "deny.example")], ""),
        ("/check/site/two", vec![], ""),
    ];
    for (path, headers, body) in checks {
        server
            .check(request(Method::POST, path, &headers, body), peer(PROXY))
            .await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "POST /one?a=1 host=\"one.example\" scheme=\"https\" id=\"id-1\" body=Some(b\"body\") state=Object {} headers=4",
            "POST /deny host=\"deny.example\" scheme=\"\" id=\"\" body=None state=Object {} headers=1",
            "POST /two host=\"\" scheme=\"\" id=\"\" body=None state=Object {} headers=0",
        ]
    );
}
