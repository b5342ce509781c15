//! Admin endpoints, logs, the decision cache, load shedding and graceful
//! shutdown of the running binary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authchain_testkit::client;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::{Authchain, LISTENERS, check_request, grpc_status};

/// An auth server for `passThroughAuth.http` that takes `delay` to allow.
async fn slow_auth_server(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let hits = counted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let hits = hits.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn slow_config(extra: &str, auth: SocketAddr) -> String {
    format!(
        "{LISTENERS}{extra}
authConfigs:
- name: slow
  configs:
  - passThroughAuth: {{ http: {{ url: 'http://{auth}/auth' }} }}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_limit_checks_are_shed_with_429_and_resource_exhausted() {
    let (auth, hits) = slow_auth_server(Duration::from_millis(1500)).await;
    let server = Authchain::start(&slow_config("maxConcurrentChecks: 1", auth)).await;
    let slow_http = tokio::spawn({
        let http = server.http;
        async move {
            client::get(http, "/check:slow/x", &[])
                .await
                .unwrap()
                .status
        }
    });
    let slow_grpc = tokio::spawn({
        let mut grpc = server.grpc_client().await;
        async move {
            let answer = grpc.check(check_request("slow", "/x", &[])).await;
            grpc_status(&answer.unwrap().into_inner())
        }
    });
    // Each listener has its own place, and each is taken.
    while hits.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = server.http_check("slow", "/x", &[]).await.unwrap();
    assert_eq!(shed.status, 429);
    assert!(shed.text().contains("too many checks"), "{}", shed.text());
    let mut grpc = server.grpc_client().await;
    let answer = grpc
        .check(check_request("slow", "/x", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_status(&answer), (8, 503));
    assert_eq!(slow_http.await.unwrap(), 200);
    assert_eq!(slow_grpc.await.unwrap(), (0, 200));
    // The place is free again.
    assert_eq!(
        server.http_check("slow", "/x", &[]).await.unwrap().status,
        200
    );
    assert_eq!(
        server
            .metric("authchain_shed_total{transport=\"http\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("authchain_shed_total{transport=\"grpc\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_checks_in_flight_then_exits_zero() {
    let (auth, hits) = slow_auth_server(Duration::from_millis(1500)).await;
    let mut server = Authchain::start(&slow_config("shutdownGrace: 10s", auth)).await;
    let in_flight = tokio::spawn({
        let http = server.http;
        async move { client::get(http, "/check:slow/x", &[]).await }
    });
    while hits.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal("TERM");
    // Not ready any more (as soon as the signal is handled)...
    let admin = server.admin;
    let unready = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client::get(admin, "/readyz", &[]).await {
                Ok(reply) if reply.status != 503 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return,
            }
        }
    });
    unready.await.expect("unready after SIGTERM");
    // ...no new checks accepted (once the listener has closed)...
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        while server.http_check("slow", "/x", &[]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    refused.await.expect("the listener closed after SIGTERM");
    // (closed at once, not when the checks in flight are done: a proxy
    // that connects meanwhile tries another server)...
    assert!(
        !in_flight.is_finished(),
        "the listener closed while the check was in flight"
    );
    // ...but the one in flight is answered.
    assert_eq!(in_flight.await.unwrap().unwrap().status, 200);
    server.assert_exits_cleanly().await;
    assert!(server.log().contains("stopped"), "{}", server.log());
}

/// An app behind Envoy's HTTP service with `failure_mode_allow: true`,
/// which checks with `server`'s AuthConfig `config` (Envoy's `timeout`
/// when given): the app, the Envoy, and its listener.
async fn envoy_http_failing_open(
    server: &Authchain,
    config: &str,
    timeout: Option<&'static str>,
) -> (
    authchain_testkit::EchoServer,
    authchain_testkit::envoy::Envoy,
    SocketAddr,
) {
    use authchain_testkit::envoy::{Bootstrap, Envoy, HttpService};
    let upstream = authchain_testkit::EchoServer::start().await.unwrap();
    let prefix = format!("/check:{config}");
    let mut bootstrap = Bootstrap::new(upstream.addr())
        .http(HttpService {
            addr: server.http,
            path_prefix: &prefix,
            allowed_headers: &[],
            upstream_headers: &[],
            upstream_headers_to_append: &[],
            client_headers: &[],
        })
        .failure_mode_allow(true);
    if let Some(timeout) = timeout {
        bootstrap = bootstrap.timeout(timeout);
    }
    let envoy = Envoy::start(&bootstrap.yaml()).await.unwrap();
    let ingress = envoy.listener("ingress").unwrap();
    (upstream, envoy, ingress)
}

/// Envoy's HTTP service lets a request through under `failure_mode_allow`
/// when the auth server answers 5xx: a shed check, answered 429, is a deny
/// there all the same, so that a flood cannot open the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_check_is_a_deny_through_envoy_http_under_failure_mode_allow() {
    let (auth, hits) = slow_auth_server(Duration::from_millis(1500)).await;
    let server = Authchain::start(&slow_config("maxConcurrentChecks: 1", auth)).await;
    let (upstream, _envoy, ingress) = envoy_http_failing_open(&server, "slow", Some("5s")).await;
    let first = tokio::spawn(async move { client::get(ingress, "/x", &[]).await.unwrap().status });
    while hits.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = client::get(ingress, "/x", &[]).await.unwrap();
    assert_eq!(shed.status, 429, "{}", shed.text());
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(upstream.hits(), 1, "only the checked request passed");
}

/// One AuthConfig, `a`, that allows everything.
const ALLOW: &str =
    "authConfigs:\n- name: a\n  configs: [{ rules: { rules: [{ action: allow }] } }]\n";

/// A reload waits for its steps to start (here a JWKS fetch from a key
/// server that never answers, with a long timeout): a SIGTERM meanwhile
/// ends the process at once, not after the fetch.
#[tokio::test]
async fn sigterm_during_a_slow_reload_exits_at_once() {
    let keys = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let keys_addr = keys.local_addr().unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = keys.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut server = Authchain::start(&format!("{LISTENERS}shutdownGrace: 10s\n{ALLOW}")).await;
    server.rewrite(&format!(
        "{LISTENERS}shutdownGrace: 10s
authConfigs:
- name: a
  configs:
  - jwt:
      jwks:
        remote: {{ url: 'http://{keys_addr}/jwks', allowInsecureHttp: true, timeout: 120s }}
"
    ));
    while fetches.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal("TERM");
    server.assert_exits_cleanly().await;
}

/// With `shutdownDelay`, SIGTERM makes the server unready at once, and it
/// still answers new checks (on new connections) until the delay is over;
/// then it stops.
#[tokio::test]
async fn during_the_shutdown_delay_new_checks_are_answered_while_unready() {
    let mut server = Authchain::start(&format!("{LISTENERS}shutdownDelay: 2s\n{ALLOW}")).await;
    server.signal("TERM");
    let admin = server.admin;
    tokio::time::timeout(Duration::from_secs(5), async {
        while client::get(admin, "/readyz", &[]).await.unwrap().status == 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("unready after SIGTERM");
    let reply = server.http_check("a", "/x", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    // The gRPC health service says so too, its listener still open.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing;
    assert_eq!(status, not_serving as i32);
    server.assert_exits_cleanly().await;
}

/// A second SIGTERM (or Ctrl-C) during a long shutdown delay stops the
/// server at once, as an operator who pressed Ctrl-C twice expects.
#[tokio::test]
async fn a_second_signal_ends_the_shutdown_at_once() {
    for (first, second) in [("TERM", "TERM"), ("TERM", "INT")] {
        let mut server = Authchain::start(&format!(
            "{LISTENERS}shutdownDelay: 10m\nshutdownGrace: 10m\n{ALLOW}"
        ))
        .await;
        server.signal(first);
        let admin = server.admin;
        tokio::time::timeout(Duration::from_secs(5), async {
            while client::get(admin, "/readyz", &[]).await.unwrap().status == 200 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("unready after the first signal");
        server.signal(second);
        server.assert_exits_cleanly().await;
    }
}

/// Started with a soft open-file limit below what its listeners may hold,
/// the server raises it (up to the hard limit); where the hard limit is
/// below too, it says so.
#[tokio::test]
async fn a_low_open_file_limit_is_raised_or_reported() {
    let start = |ulimit: &str| {
        let dir = authchain_testkit::ScratchDir::new("authchain-nofile").unwrap();
        let config = dir
            .write(
                "authchain.yaml",
                &format!("grpc: {{ address: '127.0.0.1:0' }}\n{ALLOW}"),
            )
            .unwrap();
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(format!(
            "{ulimit} && exec {} serve --config {}",
            crate::support::binary(),
            config.display()
        ));
        authchain_testkit::ChildPeer::spawn("authchain", command, dir).unwrap()
    };
    let serving = async |peer: &mut authchain_testkit::ChildPeer| {
        let log = peer.dir().join("stderr.log");
        peer.wait_until(Duration::from_secs(10), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                text.contains("authchain serving").then_some(text)
            }
        })
        .await
        .unwrap()
    };
    // 4096 gRPC connections, and some to spare.
    let mut raised = start("ulimit -Sn 256");
    let log = serving(&mut raised).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", raised.pid())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(soft > 4096, "{limits}");
    assert!(!log.contains("open-file limit"), "{log}");
    let mut low = start("ulimit -n 256");
    let log = serving(&mut low).await;
    assert!(log.contains("the open-file limit is below"), "{log}");
}

const KEY: &str = "s3cr3t-4p1-k3y-value";

#[tokio::test]
async fn admin_metrics_and_json_logs_without_secrets() {
    let template = format!(
        "{LISTENERS}log: {{ format: json, level: debug }}
authConfigs:
- name: keys
  configs:
  - name: key
    apiKeyAuth:
      headerName: api-key
      keys: [{{ key: {KEY}, metadata: {{ user-id: alice }} }}]
      headersFromMetadataEntry: {{ x-user-id: {{ name: user-id }} }}
  cache:
    key: [{{ header: api-key }}]
    ttl: 10m
    trustKey: true
"
    );
    let server = Authchain::start(&template).await;
    assert_eq!(
        client::get(server.admin, "/healthz", &[])
            .await
            .unwrap()
            .status,
        200
    );
    for _ in 0..3 {
        let reply = server
            .http_check("keys", "/x", &[("api-key", KEY)])
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header_values("x-user-id"), ["alice"]);
    }
    let wrong = server
        .http_check("keys", "/x", &[("api-key", "s3cr3t-wrong-guess")])
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);

    let metrics = server.metrics().await;
    for series in [
        "authchain_cache_lookups_total{config=\"keys\",result=\"hit\"} 2",
        "authchain_cache_lookups_total{config=\"keys\",result=\"miss\"} 2",
        "authchain_step_decisions_total{config=\"keys\",step=\"key\",result=\"ok\"} 1",
        "authchain_step_decisions_total{config=\"keys\",step=\"key\",result=\"denied\"} 1",
        "authchain_config_generation 1",
        "authchain_reloads_total{result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    assert!(metrics.contains("authchain_chain_duration_seconds_bucket{config=\"keys\""));

    let log = server.log();
    assert!(!log.is_empty());
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(
        !log.contains(KEY) && !log.contains("s3cr3t-wrong-guess"),
        "{log}"
    );
}

/// A policy builtin that panics on what a client sends (regorus's
/// `regex.template_match` slices the value by the template's length):
/// the step's panic fails closed (`statusOnError`; a step that calls no
/// server takes no `failureModeAllow`, and a panic never passes under
/// one), and the log names its place but not its message, which holds
/// the value.
#[tokio::test]
async fn a_panic_on_client_input_fails_closed_and_logs_no_value() {
    let config = format!(
        r#"{LISTENERS}authConfigs:
- name: policy
  statusOnError: 503
  configs:
  - opaAuth:
      query: data.t.allow
      modules:
        t.rego: |
          package t
          import rego.v1
          allow if regex.template_match("/users/{{[0-9]+}}", input.headers["x-token"], "{{", "}}")
"#
    );
    let server = Authchain::start(&config).await;
    let mut client = server.grpc_client().await;
    let mut check = async |token: &'static str| {
        let request = check_request("policy", "/", &[("x-token", token)]);
        grpc_status(&client.check(request).await.unwrap().into_inner()).1
    };
    assert_eq!(check("/users/42").await, 200);
    assert_eq!(check("/users/x").await, 403);
    assert_eq!(check("s3cr").await, 503);
    let log = server.log();
    assert!(log.contains("panicked"), "{log}");
    assert!(!log.contains("s3cr"), "{log}");
}

/// Under Envoy's HTTP service with `failure_mode_allow`, a 5xx from the
/// auth server lets the request through: a step's error answered with
/// `statusOnError: 503` (here a remote that refuses connections) is a
/// 403 there, and reaches no app. (A trusted forward-auth proxy's check
/// keeps its 503: nginx makes it a 500, Traefik and Caddy show it.)
#[tokio::test]
async fn a_5xx_deny_is_a_403_through_envoy_http_under_failure_mode_allow() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = closed.local_addr().unwrap();
    drop(closed);
    let config = format!(
        "{LISTENERS}authConfigs:
- name: down
  statusOnError: 503
  configs:
  - passThroughAuth: {{ http: {{ url: 'http://{refused}/auth' }} }}
"
    );
    let server = Authchain::start(&config).await;
    let (upstream, _envoy, ingress) = envoy_http_failing_open(&server, "down", None).await;
    let reply = client::get(ingress, "/x", &[]).await.unwrap();
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(upstream.hits(), 0, "a deny reached the app");
    let direct = server.http_check("down", "/x", &[]).await.unwrap();
    assert_eq!(direct.status, 403);
}

/// Envoy gives up on a gRPC check after its `timeout`, and then lets the
/// request through under `failure_mode_allow`: a step slower than that
/// (here a remote auth server taking 1.5 s, Envoy waiting 300 ms) is
/// answered by the chain first, a tenth before Envoy's `grpc-timeout`,
/// with a deny (`statusOnError`), and no request reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_slower_than_envoy_s_timeout_is_a_deny_under_failure_mode_allow() {
    use authchain_testkit::EchoServer;
    use authchain_testkit::envoy::{Bootstrap, Envoy};

    let (auth, hits) = slow_auth_server(Duration::from_millis(1500)).await;
    let server = Authchain::start(&slow_config("", auth)).await;
    let upstream = EchoServer::start().await.unwrap();
    let yaml = Bootstrap::new(upstream.addr())
        .route("/", Some("slow"))
        .grpc(server.grpc)
        .timeout("0.3s")
        .failure_mode_allow(true)
        .yaml();
    let envoy = Envoy::start(&yaml).await.unwrap();
    let ingress = envoy.listener("ingress").unwrap();
    let reply = client::get(ingress, "/x", &[]).await.unwrap();
    answered_before_envoy_gave_up(&reply, &hits, &upstream, &server);
}

/// A deny the chain answered at the caller's deadline, before Envoy's
/// `timeout` passed the request on: the slow remote asked once, nothing
/// at the app.
fn answered_before_envoy_gave_up(
    reply: &client::Reply,
    hits: &AtomicUsize,
    upstream: &authchain_testkit::EchoServer,
    server: &Authchain,
) {
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.hits(), 0, "a request passed on Envoy's timeout");
    assert!(
        server.log().contains("the caller's deadline passed"),
        "{}",
        server.log()
    );
}

/// The same through Envoy's HTTP service, which says how long it waits
/// in the check's `x-envoy-expected-rq-timeout-ms`: the chain answers a
/// tenth before, with a deny, and no request reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_slower_than_envoy_http_s_timeout_is_a_deny_under_failure_mode_allow() {
    let (auth, hits) = slow_auth_server(Duration::from_millis(1500)).await;
    let server = Authchain::start(&slow_config("", auth)).await;
    let (upstream, _envoy, ingress) = envoy_http_failing_open(&server, "slow", Some("0.3s")).await;
    let reply = client::get(ingress, "/x", &[]).await.unwrap();
    answered_before_envoy_gave_up(&reply, &hits, &upstream, &server);
}

/// No step's answer sets a connection or framing header: a policy's deny
/// with `content-length: 0` and a body (which the check server writes on
/// its own answer) reaches the client through Envoy's HTTP service whole,
/// with its status and body, the rest of its headers kept.
#[tokio::test]
async fn framing_headers_from_a_step_are_left_out() {
    let config = format!(
        r#"{LISTENERS}authConfigs:
- name: policy
  configs:
  - opaAuth:
      query: data.t.result
      modules:
        t.rego: |
          package t
          import rego.v1
          result := {{"allowed": false, "http_status": 401, "body": "denied here",
            "headers": {{"content-length": "0", "transfer-encoding": "chunked", "connection": "close", "x-why": "policy"}}}}
"#
    );
    let server = Authchain::start(&config).await;
    let (upstream, _envoy, ingress) = envoy_http_failing_open(&server, "policy", None).await;
    for _ in 0..3 {
        let reply = client::get(ingress, "/x", &[]).await.unwrap();
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert_eq!(reply.text(), "denied here");
        assert_eq!(reply.header_values("x-why"), ["policy"]);
    }
    assert_eq!(upstream.hits(), 0);
    assert!(
        server.log().contains("framing headers are left out"),
        "{}",
        server.log()
    );
}

/// A config file that opens no check listener (empty, say) is an error
/// at start, named, not a server that serves nothing.
#[tokio::test]
async fn serve_refuses_a_config_with_no_listener() {
    let dir = authchain_testkit::ScratchDir::new("no-listener").unwrap();
    let config = dir.write("authchain.yaml", "").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authchain"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("serve did not exit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no check listener") && stderr.contains("authchain.yaml"),
        "{stderr}"
    );
}
