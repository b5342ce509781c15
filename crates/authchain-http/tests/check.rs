//! The HTTP check server: what it reads from each kind of proxy and what it
//! answers. (End-to-end runs behind the real proxies live with the peers.)

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use authchain_core::{
    Allow, AuthorizationRequest, Chain, ChainBuilder, ChainStep, Decision, Deny, Engine,
    Generation, PluginRegistry, decide_fn, service_fn,
};
use authchain_http::{CheckConfig, CheckServer, ForwardedHeaders, HEADERS_TO_REMOVE};
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

/// Trusts `10.0.0.0/8` as nginx (`X-Original-*`).
fn original() -> CheckConfig {
    CheckConfig::default().trust(["10.0.0.0/8".parse().unwrap()], ForwardedHeaders::XOriginal)
}

/// Trusts `10.0.0.0/8` as Traefik or Caddy (`X-Forwarded-*`).
fn forwarding() -> CheckConfig {
    CheckConfig::default().trust(
        ["10.0.0.0/8".parse().unwrap()],
        ForwardedHeaders::XForwarded,
    )
}

/// A check from Traefik or Caddy, trusted as [`forwarding`] says, for
/// `GET https://app.example/x`, with `more` headers.
fn forwarded_check(more: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut headers = vec![
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/x"),
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-proto", "https"),
    ];
    headers.extend_from_slice(more);
    request(Method::GET, "/check:site", &headers, "")
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

/// A check's status and, when a chain ran, its config and the path it saw.
type Outcome = (u16, Option<(String, String)>);

/// What a check of `path` from `from` gets.
async fn outcome(config: CheckConfig, path: &str, headers: &[(&str, &str)], from: &str) -> Outcome {
    let seen = Arc::new(Mutex::new(None));
    let chains = ["site", "other", ""].map(|name| {
        let seen = seen.clone();
        let config = name.to_owned();
        Chain::builder(name).step(ChainStep::new(
            "record",
            Arc::new(decide_fn(move |req| {
                *seen.lock().unwrap() = Some((config.clone(), req.path.clone()));
                Ok(Decision::authorized())
            })),
        ))
    });
    let server = server_of(config, chains).await;
    let response = server
        .check(request(Method::GET, path, headers, ""), peer(from))
        .await;
    let seen = seen.lock().unwrap().clone();
    (response.status().as_u16(), seen)
}

#[tokio::test]
async fn only_the_proxy_config_selects_the_auth_config() {
    let with_default = || CheckConfig::default().default_config("other");
    let ran = |config: &str, path: &str| Some((config.to_owned(), path.to_owned()));
    let cases: Vec<(&str, CheckConfig, &str, Outcome)> = vec![
        (
            "named",
            CheckConfig::default(),
            "/check:site/x",
            (200, ran("site", "/x")),
        ),
        (
            "named with a query",
            CheckConfig::default(),
            "/check:site?q=1",
            (403, None),
        ),
        // Envoy with `path_prefix: /check` appends the client's path: its
        // first segment is only a path, never a selector.
        (
            "prefix only",
            with_default(),
            "/check/site/x",
            (200, ran("other", "/site/x")),
        ),
        (
            "prefix only, no default",
            CheckConfig::default(),
            "/check/site/x",
            (403, None),
        ),
        (
            "a client's colon",
            with_default(),
            "/check/:site/x",
            (200, ran("other", "/:site/x")),
        ),
        ("the bare prefix", with_default(), "/check", (403, None)),
        (
            "outside the prefix",
            with_default(),
            "/ratings/1",
            (404, None),
        ),
        ("a longer word", with_default(), "/checkers/x", (404, None)),
        ("unknown", with_default(), "/check:nope/x", (403, None)),
        ("empty name", with_default(), "/check:/x", (403, None)),
        (
            "empty prefix",
            CheckConfig::default().prefix(""),
            "/check:site/x",
            (403, None),
        ),
        (
            "empty prefix, default",
            with_default().prefix(""),
            "/check:site/x",
            (200, ran("other", "/check:site/x")),
        ),
        (
            "a trailing slash on the prefix",
            CheckConfig::default().prefix("/auth/"),
            "/auth:site/x",
            (200, ran("site", "/x")),
        ),
    ];
    for (what, config, path, expected) in cases {
        assert_eq!(
            outcome(config, path, &[], CLIENT).await,
            expected,
            "{what}: {path}"
        );
    }
}

/// A check as one kind of proxy sends it, and what the chain must see of
/// the original request.
struct ProxyCase {
    name: &'static str,
    config: CheckConfig,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    from: &'static str,
    want: Seen,
}

#[tokio::test]
async fn each_proxy_s_check_is_read_as_its_original_request() {
    let cases = [
        ProxyCase {
            name: "Envoy HTTP service mode: the original after the selector",
            config: CheckConfig::default(),
            method: Method::POST,
            path: "/check:site/ratings/1?x=1",
            headers: &[("host", "shop.example")],
            body: "payload",
            from: CLIENT,
            want: Seen {
                method: Method::POST,
                path: "/ratings/1?x=1".into(),
                host: "shop.example".into(),
                scheme: String::new(),
                body: Some(Bytes::from_static(b"payload")),
            },
        },
        ProxyCase {
            name: "Traefik or Caddy: X-Forwarded-* from a trusted proxy",
            config: forwarding(),
            method: Method::GET,
            path: "/check:site",
            headers: &[
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-uri", "/admin/users?id=7"),
                ("x-forwarded-host", "app.example"),
                ("x-forwarded-proto", "https"),
                // The other family, which Traefik and Caddy pass from the client.
                ("x-original-uri", "/public"),
                ("x-original-method", "GET"),
                ("host", "authchain:9000"),
            ],
            body: "",
            from: PROXY,
            want: Seen {
                method: Method::DELETE,
                path: "/admin/users?id=7".into(),
                host: "app.example".into(),
                scheme: "https".into(),
                body: None,
            },
        },
        ProxyCase {
            name: "nginx: X-Original-* from a trusted proxy",
            config: original(),
            method: Method::GET,
            path: "/check:site",
            headers: &[
                ("x-original-uri", "/private/doc?v=2"),
                ("x-original-method", "PUT"),
                // nginx passes every client header: the other family is the
                // client's (an `x-forwarded-host` naming another host would
                // be refused as ambiguous: the app might read it).
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", "shop.example"),
                // ingress-nginx's, of the same request.
                ("x-original-url", "https://shop.example/private/doc?v=2"),
                ("host", "shop.example"),
            ],
            body: "",
            from: PROXY,
            want: Seen {
                method: Method::PUT,
                path: "/private/doc?v=2".into(),
                host: "shop.example".into(),
                scheme: String::new(),
                body: None,
            },
        },
    ];
    for case in cases {
        let name = case.name;
        let (server, seen) = check_server(case.config, Decision::authorized()).await;
        let check = request(case.method, case.path, case.headers, case.body);
        let response = server.check(check, peer(case.from)).await;
        assert_eq!(response.status(), StatusCode::OK, "case {name}");
        assert_eq!(*seen.lock().unwrap(), Some(case.want), "case {name}");
    }
}

#[tokio::test]
async fn a_trusted_check_without_its_view_or_with_two_is_denied() {
    let nginx = [("x-original-uri", "/a"), ("x-original-method", "GET")];
    let traefik = [
        ("x-forwarded-uri", "/a"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example"),
    ];
    type Case<'a> = (&'a str, CheckConfig, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("nginx, whole", original(), nginx.to_vec(), 200),
        ("nginx, no method", original(), vec![nginx[0]], 403),
        ("nginx, no URI", original(), vec![nginx[1]], 403),
        (
            "nginx, only the other family",
            original(),
            traefik.to_vec(),
            403,
        ),
        (
            "nginx, two URIs",
            original(),
            [&nginx[..], &[("x-original-uri", "/b")]].concat(),
            400,
        ),
        (
            "nginx, two methods",
            original(),
            [&nginx[..], &[("X-Original-Method", "PUT")]].concat(),
            400,
        ),
        (
            "nginx, empty URI",
            original(),
            vec![("x-original-uri", ""), nginx[1]],
            400,
        ),
        (
            "nginx, not a method",
            original(),
            vec![nginx[0], ("x-original-method", "BAD METHOD")],
            400,
        ),
        (
            "nginx, not a path",
            original(),
            vec![("x-original-uri", "no-slash"), nginx[1]],
            400,
        ),
        ("traefik, whole", forwarding(), traefik.to_vec(), 200),
        ("traefik, no host", forwarding(), traefik[..2].to_vec(), 403),
        (
            "traefik, only the other family",
            forwarding(),
            nginx.to_vec(),
            403,
        ),
        (
            "traefik, two URIs",
            forwarding(),
            [&traefik[..], &[("x-forwarded-uri", "/b")]].concat(),
            400,
        ),
        (
            "traefik, two hosts",
            forwarding(),
            [
                &traefik[..],
                &[("x-forwarded-host", "a"), ("x-forwarded-host", "b")],
            ]
            .concat(),
            400,
        ),
        (
            "traefik, a non-ASCII URI",
            forwarding(),
            vec![("x-forwarded-uri", "/caf\u{e9}"), traefik[1]],
            400,
        ),
    ];
    for (what, config, headers, status) in cases {
        let (got, _) = outcome(config, "/check:site", &headers, PROXY).await;
        assert_eq!(got, status, "{what}: {headers:?}");
    }
    // A path after the selector is Envoy's HTTP service's shape (its
    // headers the client's), which no forward-auth proxy sends; a query
    // (Caddy keeps the client's) is not.
    for (config, headers) in [(original(), &nginx[..]), (forwarding(), &traefik[..])] {
        let (got, _) = outcome(config.clone(), "/check:site/admin", headers, PROXY).await;
        assert_eq!(got, 403, "{headers:?}");
        let (got, _) = outcome(config, "/check:site?x=1", headers, PROXY).await;
        assert_eq!(got, 200, "{headers:?}");
    }
}

#[tokio::test]
async fn forward_auth_headers_from_anyone_else_are_refused_never_read() {
    let headers = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/admin"),
        ("x-original-uri", "/admin"),
        ("x-original-method", "DELETE"),
        ("host", "authchain:9000"),
    ];
    for config in [original(), forwarding(), CheckConfig::default()] {
        let (server, seen) = check_server(config, Decision::authorized()).await;
        // A forward-auth proxy that is not trusted: no original path.
        let response = server
            .check(
                request(Method::GET, "/check:site", &headers, ""),
                peer(CLIENT),
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(seen.lock().unwrap().is_none(), "never evaluated as GET /");
        // Nor as the path after the selector (a Traefik or Caddy address
        // ending in `/`), from the client's own address or its IPv4-mapped
        // spelling.
        for (path, from) in [
            ("/check:site/", CLIENT),
            ("/check:site/public", CLIENT),
            ("/check:site/", "[::ffff:192.0.2.7]:6000"),
        ] {
            for header in &headers[..4] {
                let response = server
                    .check(request(Method::GET, path, &[*header], ""), peer(from))
                    .await;
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{path} {header:?}"
                );
            }
        }
        assert!(seen.lock().unwrap().is_none(), "never evaluated");
        // Envoy: the check is the original.
        server
            .check(
                request(Method::GET, "/check:site/public", &headers[4..], ""),
                peer(CLIENT),
            )
            .await;
        let seen = seen.lock().unwrap().clone().unwrap();
        assert_eq!((seen.method, seen.path.as_str()), (Method::GET, "/public"));
        assert_eq!(seen.host, "authchain:9000");
    }
}

/// A dual-stack listener (`[::]`) sees an IPv4 proxy as
/// `::ffff:a.b.c.d`: it is trusted as its IPv4 address is.
#[tokio::test]
async fn a_trusted_ipv4_proxy_seen_over_ipv6_is_trusted() {
    let headers = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/admin"),
        ("x-forwarded-host", "app.example"),
        ("host", "authchain:9000"),
    ];
    let (got, seen) = outcome(
        forwarding(),
        "/check:site",
        &headers,
        "[::ffff:10.1.2.3]:5000",
    )
    .await;
    assert_eq!((got, seen), (200, Some(("site".into(), "/admin".into()))));
    // An entry written as that address is logged matches it too.
    let mapped = CheckConfig::default().trust(
        ["::ffff:10.0.0.0/104".parse().unwrap()],
        ForwardedHeaders::XForwarded,
    );
    for from in [PROXY, "[::ffff:10.1.2.3]:5000"] {
        let (got, seen) = outcome(mapped.clone(), "/check:site", &headers, from).await;
        assert_eq!(
            (got, seen),
            (200, Some(("site".into(), "/admin".into()))),
            "{from}"
        );
    }
    // A trusted proxy's check with the other family's headers (the
    // client's) is read from its own family.
    let both = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/admin"),
        ("x-forwarded-host", "app.example"),
        ("x-original-uri", "/public"),
        ("x-original-method", "GET"),
        ("host", "authchain:9000"),
    ];
    let (got, seen) = outcome(forwarding(), "/check:site", &both, "[::ffff:10.1.2.3]:5000").await;
    assert_eq!((got, seen), (200, Some(("site".into(), "/admin".into()))));
}

#[tokio::test]
async fn http2_checks_take_their_host_from_the_authority() {
    let (server, seen) = check_server(CheckConfig::default(), Decision::authorized()).await;
    let check = Request::builder()
        .method(Method::GET)
        .uri("http://shop.example:8443/check:site/x")
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = server.check(check, peer(CLIENT)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().clone().unwrap().host,
        "shop.example:8443"
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
            "/check:site/",
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
    // (case, the allow, the removals the answer lists)
    let cases = [
        (
            "one removal",
            Allow::new().remove_header(HeaderName::from_static("x-debug")),
            Some("x-debug"),
        ),
        ("no removal", Allow::new(), None),
    ];
    for (name, allow, want) in cases {
        let (server, _) = check_server(CheckConfig::default(), allow.into()).await;
        let response = server
            .check(request(Method::GET, "/check:site/", &[], ""), peer(CLIENT))
            .await;
        let listed = response.headers().get(HEADERS_TO_REMOVE);
        assert_eq!(listed.map(|v| v.to_str().unwrap()), want, "case {name}");
    }
}

/// A forward-auth proxy removes no header: its allow lists none (the
/// list, every spelling of every identity header, would only fill the
/// proxy's buffer for the answer's head).
#[tokio::test]
async fn a_forward_auth_allow_lists_no_removal() {
    let allow = Allow::new().remove_header(HeaderName::from_static("x-debug"));
    let (server, _) = check_server(forwarding(), allow.into()).await;
    let check = forwarded_check(&[]);
    let response = server.check(check, peer(PROXY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(HEADERS_TO_REMOVE).is_none());
}

/// A forward-auth proxy replaces the identity headers its config copies
/// from the allow, by their own name, and passes the client's others on:
/// a check is refused (400) that carries another spelling of one, or one
/// the allow does not set. Not for the headers the proxy writes itself.
#[tokio::test]
async fn a_forward_auth_check_refuses_identity_headers_the_allow_leaves() {
    let allow = Allow::new().set_header(
        HeaderName::from_static("x-user-id"),
        HeaderValue::from_static("bob"),
    );
    let chain = || {
        Chain::builder("site")
            .step(recorder(Arc::default(), allow.clone().into()))
            .strip_client_header(HeaderName::from_static("x-user-id"))
            .strip_client_header(HeaderName::from_static("x-tenant"))
            .strip_client_header(HeaderName::from_static("x-forwarded-host"))
            .strip_client_header(HeaderName::from_static("x-real-ip"))
    };
    let server = server_of(forwarding(), [chain()]).await;
    for (sent, status) in [
        (None, StatusCode::OK),
        (Some(("x-user-id", "admin")), StatusCode::OK),
        (Some(("x-tenant", "victim")), StatusCode::BAD_REQUEST),
        (Some(("x_user_id", "admin")), StatusCode::BAD_REQUEST),
        (Some(("X-Tenant", "victim")), StatusCode::BAD_REQUEST),
        // Caddy writes none.
        (Some(("x-real-ip", "10.0.0.1")), StatusCode::BAD_REQUEST),
    ] {
        let check = forwarded_check(sent.as_slice());
        let response = server.check(check, peer(PROXY)).await;
        assert_eq!(response.status(), status, "{sent:?}");
        if status == StatusCode::OK {
            assert_eq!(response.headers()["x-user-id"], "bob");
        }
    }
    // nginx writes its X-Original-* alone: a client's X-Forwarded-Host
    // is its own there.
    let server = server_of(original(), [chain()]).await;
    for (sent, status) in [
        (None, StatusCode::OK),
        (
            Some(("x-forwarded-host", "admin.example")),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let mut headers = vec![("x-original-method", "GET"), ("x-original-uri", "/x")];
        headers.extend(sent);
        let check = request(Method::GET, "/check:site", &headers, "");
        let response = server.check(check, peer(PROXY)).await;
        assert_eq!(response.status(), status, "{sent:?}");
    }
}

/// A header for the client named as an identity header is not sent: the
/// answer carries the app's headers too, and a proxy copies that name to
/// the app.
#[tokio::test]
async fn a_client_header_named_as_an_identity_header_is_not_sent() {
    let allow = Allow::new()
        .set_header(
            HeaderName::from_static("x-user-id"),
            HeaderValue::from_static("bob"),
        )
        .response_header(
            HeaderName::from_static("x_user_id"),
            HeaderValue::from_static("admin"),
        )
        .response_header(
            HeaderName::from_static("x-tenant"),
            HeaderValue::from_static("victim"),
        )
        .response_header(
            HeaderName::from_static("x-note"),
            HeaderValue::from_static("kept"),
        );
    let chain = Chain::builder("site")
        .step(recorder(Arc::default(), allow.into()))
        .strip_client_header(HeaderName::from_static("x-user-id"))
        .strip_client_header(HeaderName::from_static("x-tenant"));
    let server = server_of(forwarding(), [chain]).await;
    let check = forwarded_check(&[]);
    let response = server.check(check, peer(PROXY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(
        headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["bob"]
    );
    assert!(headers.get("x_user_id").is_none() && headers.get("x-tenant").is_none());
    assert_eq!(headers["x-note"], "kept");
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
        .check(request(Method::GET, "/check:site/x", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[http::header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(response.body(), "token expired");
}

/// A query rewrite cannot be carried: the check fails, with a 500 for a
/// forward-auth proxy (nginx answers its client 500) and a 403 for
/// Envoy's HTTP service, which lets a request through on a 5xx under
/// `failure_mode_allow`, as it does on any 5xx deny.
#[tokio::test]
async fn a_query_rewrite_cannot_be_carried_and_fails_the_check() {
    let rewrite = || Allow::new().remove_query_parameter("token").into();
    let (envoy, _) = check_server(CheckConfig::default(), rewrite()).await;
    let response = envoy
        .check(
            request(Method::GET, "/check:site/x?token=1", &[], ""),
            peer(CLIENT),
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (nginx, _) = check_server(original(), rewrite()).await;
    let headers = [
        ("x-original-uri", "/x?token=1"),
        ("x-original-method", "GET"),
    ];
    let response = nginx
        .check(
            request(Method::GET, "/check:site", &headers, ""),
            peer(PROXY),
        )
        .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let (envoy, _) = check_server(
        CheckConfig::default(),
        Deny::new(StatusCode::SERVICE_UNAVAILABLE).into(),
    )
    .await;
    let response = envoy
        .check(request(Method::GET, "/check:site/x", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_oversized_body_is_413_before_any_step() {
    let (server, seen) = check_server(CheckConfig::default(), Decision::authorized()).await;
    let server = server.body_limit(4);
    let response = server
        .check(
            request(Method::POST, "/check:site/x", &[], "12345"),
            peer(CLIENT),
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(seen.lock().unwrap().is_none());
}

/// Before the first config serves (generation 0, while the server starts
/// its steps), a check is a 403 that says so: not a 5xx, which Envoy's
/// HTTP service passes under `failure_mode_allow`.
#[tokio::test]
async fn a_check_before_any_config_serves_is_a_403_that_says_so() {
    let engine = Arc::new(Engine::new(PluginRegistry::new()));
    let server = CheckServer::new(engine, CheckConfig::default().default_config("site"));
    let response = server
        .check(request(Method::GET, "/check:site/x", &[], ""), peer(CLIENT))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(&response.into_body()[..], b"no config serves yet");
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
        .write_all(b"GET /check:site/hello HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
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
        forwarding(),
        [Chain::builder("site")
            .step(ChainStep::new("record", Arc::new(at_once)))
            .step(ChainStep::new("waits", Arc::new(waits)))],
    )
    .await;
    let checks = [
        (
            "/check:site",
            vec![
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/one?a=1"),
                ("x-forwarded-host", "one.example"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "id-1"),
            ],
            "body",
            PROXY,
        ),
        (
            "/check:site/deny",
            vec![("host", "deny.example")],
            "",
            CLIENT,
        ),
        ("/check:site/two", vec![], "", CLIENT),
    ];
    for (path, headers, body, from) in checks {
        server
            .check(request(Method::POST, path, &headers, body), peer(from))
            .await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [
            // The five sent, and the length of the body the check carries.
            "POST /one?a=1 host=\"one.example\" scheme=\"https\" id=\"id-1\" body=Some(b\"body\") state=Object {} headers=6",
            "POST /deny host=\"deny.example\" scheme=\"\" id=\"\" body=None state=Object {} headers=1",
            "POST /two host=\"\" scheme=\"\" id=\"\" body=None state=Object {} headers=0",
        ]
    );
}

/// A login's redirect deny through nginx's `auth_request`, which passes on
/// only 401 and 403: a check with `x-authchain-login: 401` gets it as a 401
/// that keeps `Location` and `Set-Cookie` (nginx's `@login` location sends
/// the browser on with them); without the header, as it is. Other denies
/// keep their status either way.
#[tokio::test]
async fn a_redirect_is_a_401_for_checks_that_ask_for_it() {
    let redirect = Decision::Deny(
        Deny::new(StatusCode::FOUND)
            .header(
                http::header::LOCATION,
                HeaderValue::from_static("https://idp/auth?x=1"),
            )
            .header(
                http::header::SET_COOKIE,
                HeaderValue::from_static("__session_login=abc; Path=/"),
            ),
    );
    let view = [("x-original-uri", "/private"), ("x-original-method", "GET")];
    type Case<'a> = (&'a [(&'a str, &'a str)], Decision, u16);
    let cases: [Case<'_>; 4] = [
        (&[("x-authchain-login", "401")], redirect.clone(), 401),
        (&[], redirect.clone(), 302),
        (&[("x-authchain-login", "yes")], redirect, 302),
        (
            &[("x-authchain-login", "401")],
            Decision::deny(StatusCode::FORBIDDEN),
            403,
        ),
    ];
    for (extra, decision, status) in cases {
        let (server, _) = check_server(original(), decision).await;
        let headers: Vec<(&str, &str)> = view.iter().chain(extra).copied().collect();
        let response = server
            .check(
                request(Method::GET, "/check:site", &headers, ""),
                peer(PROXY),
            )
            .await;
        assert_eq!(response.status().as_u16(), status, "{extra:?}");
        if status != 403 {
            assert_eq!(
                response.headers()[http::header::LOCATION],
                "https://idp/auth?x=1"
            );
            assert_eq!(
                response.headers()[http::header::SET_COOKIE],
                "__session_login=abc; Path=/"
            );
        }
    }
}

/// The source a step sees is the client as far as the check tells, never
/// the proxy: for Traefik and Caddy the last `X-Forwarded-For` hop (the
/// address they saw, after any a client wrote), for nginx none, and for
/// any other caller (Envoy, a gateway of your own) the check's peer.
#[test]
fn the_source_is_the_client_as_far_as_the_check_tells() {
    use authchain_core::Peer;
    let source = |config: CheckConfig, headers: &[(&str, &str)], from: &str| {
        // A trusted proxy's check has no path after its selector.
        let path = if from == PROXY {
            "/check:site"
        } else {
            "/check:site/x"
        };
        let (mut parts, _) = request(Method::GET, path, headers, "").into_parts();
        let peer = Peer::from_address(from.parse().unwrap());
        let (_, request) = config.read(&mut parts, None, peer).unwrap();
        request.source.address
    };
    let traefik = [
        ("x-forwarded-uri", "/a"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-for", "10.9.9.9, 198.51.100.7"),
    ];
    assert_eq!(
        source(forwarding(), &traefik, PROXY),
        Some("198.51.100.7:0".parse().unwrap())
    );
    assert_eq!(source(forwarding(), &traefik[..3], PROXY), None);
    let nginx = [
        ("x-original-uri", "/a"),
        ("x-original-method", "GET"),
        ("x-forwarded-for", "10.9.9.9"),
    ];
    assert_eq!(source(original(), &nginx, PROXY), None);
    assert_eq!(
        source(
            CheckConfig::default(),
            &[("x-forwarded-for", "10.9.9.9")],
            CLIENT
        ),
        None
    );
}

/// A check's `Content-Length` and `Transfer-Encoding` frame the check,
/// not the client's request (Envoy's HTTP service sets its own length, 0
/// without a body), and its HTTP version is the hop's: the request a step
/// sees has the length of the body the check carries, and no version.
#[test]
fn the_check_s_framing_is_not_the_client_s() {
    use authchain_core::Peer;
    let read = |headers: &[(&str, &str)], body: Option<&'static str>| {
        let (mut parts, _) = request(Method::POST, "/check:site/x", headers, "").into_parts();
        let body = body.map(|b: &'static str| bytes::Bytes::from_static(b.as_bytes()));
        let (_, request) = CheckConfig::default()
            .read(&mut parts, body, Peer::default())
            .unwrap();
        let length = request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            request
                .headers
                .get(http::header::TRANSFER_ENCODING)
                .is_none()
        );
        assert!(request.protocol.is_empty());
        assert_eq!(request.body.is_some(), length.is_some());
        length
    };
    assert_eq!(read(&[("content-length", "0")], None), None);
    // An empty body is none (nginx, Traefik and Caddy send none).
    assert_eq!(read(&[("content-length", "0")], Some("")), None);
    assert_eq!(read(&[("transfer-encoding", "chunked")], None), None);
    assert_eq!(
        read(&[("content-length", "99")], Some("{\"a\": 1}")).as_deref(),
        Some("8")
    );
}
