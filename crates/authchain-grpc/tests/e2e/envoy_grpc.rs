//! Allow, deny, removals, query rewrites, config selection, bodies and
//! failure modes through real Envoy.

use crate::common::{Opts, Route, Stack, assert_upstream, route};
use std::sync::Arc;

use authchain_grpc::ExtAuthzService;
use tokio::sync::Notify;

const CONFIGS: &str = r#"
name: allow
configs:
- pluginAuth: { name: Script, config: { headers: [[overwrite, x-auth, ok]] } }
---
name: deny
configs:
- pluginAuth:
    name: Script
    config:
      deny:
        status: 401
        headers: [[www-authenticate, 'Bearer realm="r"'], [x-deny, a], [x-deny, b], [content-type, application/json]]
        body: '{"error":"go away"}'
"#;

#[tokio::test]
async fn allow_reaches_the_upstream_with_the_chains_header() {
    let stack = Stack::start(CONFIGS, &[route("/", "allow")], Opts::default()).await;
    let reply = stack.get("/hello?x=1", &[("x-client", "c")]).await;
    let seen = reply.echoed().unwrap();
    assert_eq!(seen.path, "/hello?x=1");
    assert_eq!(seen.header("x-auth"), Some("ok"));
    assert_eq!(seen.header("x-client"), Some("c"));
    assert_eq!(stack.upstream.hits(), 1);
}

#[tokio::test]
async fn the_chain_sees_the_request_as_envoy_describes_it() {
    let configs =
        "name: describe\nconfigs:\n- pluginAuth: {name: Script, config: {describe: true}}\n";
    let stack = Stack::start(configs, &[route("/", "describe")], Opts::default()).await;
    let reply = stack
        .send(
            http::Method::PUT,
            "/a/b?c=d&e",
            &[("host", "api.example.com"), ("x-client", "c1")],
        )
        .await;
    let seen = reply.echoed().unwrap();
    let get = |name: &str| seen.header(name).unwrap_or("<missing>").to_owned();
    assert_eq!(get("x-seen-method"), "PUT");
    assert_eq!(get("x-seen-path"), "/a/b?c=d&e");
    assert_eq!(get("x-seen-host"), "api.example.com");
    assert_eq!(get("x-seen-scheme"), "http");
    assert_eq!(get("x-seen-protocol"), "HTTP/1.1");
    assert_eq!(get("x-seen-source"), "127.0.0.1");
    assert_eq!(
        get("x-seen-destination-port"),
        stack.ingress.port().to_string()
    );
    assert_eq!(get("x-seen-id-set"), "true");
    assert_eq!(get("x-seen-client-header"), "c1");
    assert_eq!(get("x-seen-pseudo-in-headers"), "false");
    assert_eq!(get("x-seen-context"), r#"{"config_id":"describe"}"#);
}

#[tokio::test]
async fn deny_gives_the_client_its_status_headers_and_body() {
    let stack = Stack::start(CONFIGS, &[route("/", "deny")], Opts::default()).await;
    let reply = stack.get("/x", &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header_values("www-authenticate"),
        [r#"Bearer realm="r""#]
    );
    // Pinned: two values of one name arrive as two header lines.
    assert_eq!(reply.header_values("x-deny"), ["a", "b"]);
    // Pinned: a deny's content-type replaces Envoy's text/plain.
    assert_eq!(reply.header_values("content-type"), ["application/json"]);
    assert_eq!(reply.text(), r#"{"error":"go away"}"#);
    assert_eq!(
        stack.upstream.hits(),
        0,
        "a deny never reaches the upstream"
    );
}

#[tokio::test]
async fn deny_with_an_unusual_status_keeps_it() {
    let configs = "name: teapot\nconfigs:\n- pluginAuth: {name: Script, config: {deny: {status: 418, body: short and stout}}}\n";
    let stack = Stack::start(configs, &[route("/", "teapot")], Opts::default()).await;
    let reply = stack.get("/x", &[]).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.text(), "short and stout");
}

#[tokio::test]
async fn headers_to_remove_strip_client_headers() {
    let configs = "name: rm\nconfigs:\n- pluginAuth: {name: Script, config: {remove: [x-secret, authorization]}}\n";
    let stack = Stack::start(configs, &[route("/", "rm")], Opts::default()).await;
    let reply = stack
        .get(
            "/x",
            &[
                ("x-secret", "s"),
                ("authorization", "Bearer t"),
                ("x-keep", "k"),
            ],
        )
        .await;
    assert_upstream(&reply, "x-secret", &[]);
    assert_upstream(&reply, "authorization", &[]);
    assert_upstream(&reply, "x-keep", &["k"]);
}

#[tokio::test]
async fn identity_headers_a_client_forges_are_stripped() {
    // RequiredHeader declares matched-allowed-headers as identity: a client
    // copy must not reach the upstream, whatever the chain answers.
    let configs = "name: rh\nconfigs:\n- pluginAuth: {name: RequiredHeader, config: {RequiredHeader: my-header, AllowedValues: [foo]}}\n";
    let stack = Stack::start(configs, &[route("/", "rh")], Opts::default()).await;
    let reply = stack
        .get(
            "/x",
            &[("my-header", "foo"), ("matched-allowed-headers", "forged")],
        )
        .await;
    assert_upstream(&reply, "matched-allowed-headers", &["true"]);
    let reply = stack.get("/x", &[("my-header", "nope")]).await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn query_parameters_are_set_and_removed() {
    let configs = "name: q\nconfigs:\n- pluginAuth: {name: Script, config: {setQuery: [[a, '9'], [new, 'x%20y']], removeQuery: [b]}}\n";
    let stack = Stack::start(configs, &[route("/", "q")], Opts::default()).await;
    let reply = stack.get("/p?a=1&b=2&c=3", &[]).await;
    let seen = reply.echoed().unwrap();
    let (path, query) = seen.path.split_once('?').expect("a query");
    assert_eq!(path, "/p");
    let mut pairs: Vec<&str> = query.split('&').collect();
    pairs.sort_unstable();
    assert_eq!(pairs, ["a=9", "c=3", "new=x%20y"]);
}

/// A parameter a step sets or removes goes in every spelling an app reads
/// as its name, through Envoy too, which sets and removes parameters by
/// their names as written: else a client's `user.id=admin` beside the
/// `user_id` a step set reaches a PHP app, which takes the last.
#[tokio::test]
async fn query_changes_reach_every_spelling_an_app_reads() {
    let configs = "name: q\nconfigs:\n- pluginAuth: {name: Script, config: {setQuery: [[user_id, alice]], removeQuery: [to_ken]}}\n";
    let stack = Stack::start(configs, &[route("/", "q")], Opts::default()).await;
    let reply = stack
        .get(
            "/p?user_id=x&user.id=admin&user%5Fid=y&user+id=z&to.ken=t&to_ken=u&c=3",
            &[],
        )
        .await;
    let seen = reply.echoed().unwrap();
    let (_, query) = seen.path.split_once('?').expect("a query");
    let mut pairs: Vec<&str> = query.split('&').collect();
    pairs.sort_unstable();
    assert_eq!(pairs, ["c=3", "user_id=alice"]);
}

#[tokio::test]
async fn context_extensions_select_the_auth_config_per_route() {
    let configs = r#"
name: team-a
configs:
- pluginAuth: { name: Script, config: { require: [x-team, a], headers: [[overwrite, x-config, a]] } }
---
apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: { name: team-b, namespace: gloo-system }
spec:
  configs:
  - pluginAuth: { name: Script, config: { headers: [[overwrite, x-config, b]] } }
"#;
    let routes = [
        route("/a", "team-a"),
        route("/b", "gloo-system.team-b"),
        route("/unknown", "no-such-config"),
        Route {
            prefix: "/",
            config_id: None,
        },
    ];
    let service =
        ExtAuthzService::new(crate::common::engine(configs).await).default_config("team-a");
    let stack = Stack::with_service(service, &routes, Opts::default()).await;
    assert_upstream(
        &stack.get("/a", &[("x-team", "a")]).await,
        "x-config",
        &["a"],
    );
    assert_eq!(stack.get("/a", &[]).await.status, 401);
    assert_upstream(&stack.get("/b", &[]).await, "x-config", &["b"]);
    // No config_id on the route: the default (team-a).
    assert_eq!(stack.get("/other", &[]).await.status, 401);
    assert_upstream(
        &stack.get("/other", &[("x-team", "a")]).await,
        "x-config",
        &["a"],
    );
    // A config_id the engine does not know: deny, never a panic or a pass.
    assert_eq!(stack.get("/unknown", &[("x-team", "a")]).await.status, 403);
}

#[tokio::test]
async fn the_request_body_reaches_the_chain_and_the_upstream() {
    let configs =
        "name: body\nconfigs:\n- pluginAuth: {name: Script, config: {bodyToHeader: true}}\n";
    let opts = Opts {
        body: Some((8192, false)),
        ..Opts::default()
    };
    let stack = Stack::start(configs, &[route("/", "body")], opts).await;
    let reply = stack
        .post("/upload", &[("content-type", "text/plain")], "hello-world")
        .await;
    let seen = reply.echoed().unwrap();
    assert_eq!(seen.header("x-auth-saw-body"), Some("hello-world"));
    assert_eq!(seen.body, "hello-world");
}

#[tokio::test]
async fn a_body_over_envoys_limit_is_refused_by_envoy() {
    let configs =
        "name: body\nconfigs:\n- pluginAuth: {name: Script, config: {bodyToHeader: true}}\n";
    let opts = Opts {
        body: Some((1024, false)),
        ..Opts::default()
    };
    let stack = Stack::start(configs, &[route("/", "body")], opts).await;
    let reply = stack.post("/upload", &[], vec![b'a'; 4096]).await;
    assert_eq!(
        reply.status, 413,
        "pinned: Envoy answers 413 before any check"
    );
    assert_eq!(stack.upstream.hits(), 0);
}

#[tokio::test]
async fn auth_server_down_fails_closed() {
    let port = authchain_testkit::free_port().unwrap();
    let addr = ([127, 0, 0, 1], port).into();
    let stack = Stack::in_front_of(addr, None, &[route("/", "allow")], Opts::default()).await;
    let reply = stack.get("/x", &[]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(stack.upstream.hits(), 0);
}

#[tokio::test]
async fn auth_server_down_passes_under_envoys_failure_mode_allow() {
    let port = authchain_testkit::free_port().unwrap();
    let addr = ([127, 0, 0, 1], port).into();
    // (case, failure_mode_allow_header_add, the mark upstream)
    let cases: [(&str, bool, &[&str]); 2] = [
        // Pinned: failure_mode_allow alone lets the request through unmarked.
        ("failure_mode_allow alone", false, &[]),
        ("with failure_mode_allow_header_add", true, &["true"]),
    ];
    for (name, header_add, mark) in cases {
        let opts = Opts {
            failure_mode_allow: true,
            failure_mode_allow_header_add: header_add,
            ..Opts::default()
        };
        let stack = Stack::in_front_of(addr, None, &[route("/", "allow")], opts).await;
        let reply = stack.get("/x", &[]).await;
        let seen = reply
            .echoed()
            .unwrap_or_else(|e| panic!("case {name}: {e}"));
        let header = seen.header_values("x-envoy-auth-failure-mode-allowed");
        assert_eq!(header, mark, "case {name}");
    }
}

#[tokio::test]
async fn an_unknown_config_denies_even_under_failure_mode_allow() {
    // authchain answers a deny (not a gRPC error), so Envoy's
    // failure_mode_allow cannot turn a config mistake into a pass.
    let opts = Opts {
        failure_mode_allow: true,
        ..Opts::default()
    };
    let stack = Stack::start(CONFIGS, &[route("/", "missing")], opts).await;
    assert_eq!(stack.get("/x", &[]).await.status, 403);
    assert_eq!(stack.upstream.hits(), 0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight_and_reports_health() {
    use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    // A step that says when it has the request, and answers when told.
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let mut registry = authchain_core::PluginRegistry::new();
    registry.register(authchain_core::plugin_fn(
        "Gate",
        move |_: serde_json::Value, _| {
            let (e, r) = (e.clone(), r.clone());
            Ok(Arc::new(authchain_core::service_fn(move |_| {
                let (e, r) = (e.clone(), r.clone());
                Box::pin(async move {
                    e.notify_one();
                    r.notified().await;
                    Ok(authchain_core::Decision::authorized())
                })
            })))
        },
    ));
    let engine = crate::common::engine_with(
        registry,
        "name: gate\nconfigs:\n- pluginAuth: {name: Gate}\n",
    )
    .await;
    let service = ExtAuthzService::new(engine).default_config("gate");
    let mut server = crate::common::GrpcServer::authchain(service).await;
    let uri = format!("http://{}", server.addr);
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut client = AuthorizationClient::connect(uri).await.unwrap();
    let in_flight =
        tokio::spawn(async move { client.check(crate::bad_input::minimal_check("/x")).await });
    entered.notified().await;
    server.begin_stop();
    release.notify_one();
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.into_inner().status.unwrap().code, 0);
    // The server future ends, cleanly, once the request is answered.
    server.stop().await;
}

#[tokio::test]
async fn serve_with_shutdown_binds_its_address_and_stops_on_the_signal() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let service =
        ExtAuthzService::new(crate::common::engine(CONFIGS).await).default_config("allow");
    let addr: std::net::SocketAddr =
        ([127, 0, 0, 1], authchain_testkit::free_port().unwrap()).into();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(authchain_grpc::serve_with_shutdown(addr, service, async {
        let _ = rx.await;
    }));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let mut channel = None;
    for _ in 0..250 {
        if let Ok(c) = endpoint.connect().await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut health = HealthClient::new(channel.expect("the server listens"));
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    tx.send(()).unwrap();
    task.await.unwrap().expect("a clean stop");
}

#[tokio::test]
async fn a_panicking_step_denies_even_under_failure_mode_allow() {
    // A plugin that panics: were the gRPC stream to die with it, Envoy's
    // failure_mode_allow would let the request through.
    let mut registry = crate::common::registry();
    registry.register(authchain_core::plugin_fn(
        "Panics",
        |_: serde_json::Value, _| {
            Ok(
                Arc::new(authchain_core::decide_fn(|_| panic!("a plugin's bug")))
                    as Arc<dyn authchain_core::AuthService>,
            )
        },
    ));
    let engine = crate::common::engine_with(
        registry,
        "name: panics\nconfigs: [{ pluginAuth: { name: Panics } }]\n",
    )
    .await;
    let opts = Opts {
        failure_mode_allow: true,
        failure_mode_allow_header_add: true,
        ..Opts::default()
    };
    let stack = Stack::with_service(
        authchain_grpc::ExtAuthzService::new(engine),
        &[route("/", "panics")],
        opts,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(stack.get("/x", &[]).await.status, 403);
    }
    assert_eq!(stack.upstream.hits(), 0, "no request passed");
}

/// Given a readiness, the health service follows it, for the server as a
/// whole and for the `Authorization` service: NOT_SERVING while a server
/// starts or drains, SERVING between.
#[tokio::test]
async fn health_follows_the_readiness_it_is_given() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let (ready, readiness) = tokio::sync::watch::channel(false);
    let service = ExtAuthzService::new(crate::common::engine(CONFIGS).await)
        .default_config("allow")
        .readiness(readiness);
    let server = crate::common::GrpcServer::authchain(service).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut watches = Vec::new();
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        watches.push(health.watch(request).await.unwrap().into_inner());
    }
    for step in [false, true, false] {
        ready.send_replace(step);
        let expected = match step {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        for watch in &mut watches {
            // A watch sends the status now, then each change.
            let reached = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while watch.message().await.unwrap().unwrap().status != expected as i32 {}
            });
            reached
                .await
                .unwrap_or_else(|_| panic!("never {expected:?}"));
        }
    }
}
