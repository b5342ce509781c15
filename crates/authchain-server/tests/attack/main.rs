//! An attacker's end-to-end suite: one table of hostile requests, run as
//! it is against every transport authchain answers, each a real stack.
//!
//! A transport is the real `authchain` binary started from a config
//! written here, the real proxy with the config the README documents,
//! and an echo app that reports what reached it ([`transports`]): Envoy
//! over gRPC (raw paths, with `normalize_path` + `merge_slashes`, and
//! with `failure_mode_allow`, where a check that ends in an error rather
//! than an answer would let its request through), Envoy in HTTP service
//! mode (`path_prefix: /check:site`, the same with `failure_mode_allow`,
//! and `/check` with `defaultConfig`), nginx, Traefik, Caddy. The layer
//! transport runs the same AuthConfigs in process, with the binary's
//! registry, as
//! `AuthChainLayer::from_engine(engine, "site")` in front of an axum
//! handler. Behind the chain, two remote auth servers run in the test
//! ([`remotes`]).
//!
//! The AuthConfig `site` is: bob's API key (`x-user-id: bob` upstream;
//! the client's `x-tenant` stripped), then rules allowing only `GET
//! app.example/public/...`, then an HTTP passthrough and a gRPC
//! passthrough whose answers a row may choose. A
//! permissive AuthConfig `open` (allow everything) sits beside it for a
//! client to try to select; `defaultConfig` is `site`.
//!
//! Each row ([`table`]) is sent with exact bytes ([`client::raw`]): the
//! request line, header names, case, order and duplicates as written, so
//! nothing normalizes the attack before the proxy. It asserts what
//! reached the app: nothing (the app's hit counter unchanged, and no 2xx
//! at the client), or the request with the row's canonical path and
//! exactly the chain's identity (`x-user-id: bob`, no other spelling of
//! it, no `x-tenant`). A proxy that refuses a row itself (a 400, a reset) has blocked it.
//!
//! The groups: A baseline (methods, hosts, request-target forms), B path
//! encodings and traversals, C forged forwarded headers, D forged
//! identity headers, E a client choosing its AuthConfig, F remote auth
//! servers' answers, G request smuggling.
//!
//! Every transport runs every row, collects every mismatch, and fails
//! once at the end with the full list, a line per row (status at the
//! client, requests at the app) and the proxy's and authchain's output.
//! `cargo test -p authchain-server --test attack -- --nocapture` prints
//! the per-row lines of passing transports too.
//!
//! - **A new row**: add it to its group in `table.rs`; every transport
//!   runs it. If one proxy legitimately refuses a benign row, give it
//!   `.except(Transport::X, Expect::Blocked, "why")`.
//! - **A new transport**: a [`transports::Transport`] variant, its stack
//!   in `Stack::start`, and a `#[tokio::test]` below calling
//!   [`run::run_table`]; it inherits every row.
//!
//! [`client::raw`]: authchain_testkit::client::raw

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../server/support.rs"]
mod support;

mod remotes;
mod run;
mod table;
mod transports;

use run::run_table;
use transports::Transport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc() {
    run_table(Transport::EnvoyGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_normalized() {
    run_table(Transport::EnvoyGrpcNormalized).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_failing_open() {
    run_table(Transport::EnvoyGrpcFailOpen).await;
}

/// The failing-open transports do fail open: with authchain gone, a
/// request the table blocks reaches the app (else their runs would pin
/// nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failing_open_transports_do_fail_open() {
    for transport in [Transport::EnvoyGrpcFailOpen, Transport::EnvoyHttpFailOpen] {
        let mut stack = transports::Stack::start(transport).await;
        stack.stop_authchain();
        let hits = stack.hits();
        let request = b"GET /admin HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n";
        let reply = authchain_testkit::client::raw(stack.addr, request)
            .await
            .unwrap_or_else(|e| panic!("{transport}: {e}\n{}", stack.output()));
        assert!(reply.status.is_success(), "{transport}: {}", reply.status);
        assert_eq!(stack.hits(), hits + 1, "{transport}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_named_config() {
    run_table(Transport::EnvoyHttp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_failing_open() {
    run_table(Transport::EnvoyHttpFailOpen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_default_config() {
    run_table(Transport::EnvoyHttpDefault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx() {
    run_table(Transport::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik() {
    run_table(Transport::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_trusting_its_peer() {
    run_table(Transport::TraefikTrusting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy() {
    run_table(Transport::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_trusting_its_peer() {
    run_table(Transport::CaddyTrusting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer() {
    run_table(Transport::Layer).await;
}

/// Every transport has its test above.
#[test]
fn every_transport_has_a_test() {
    let source = include_str!("main.rs");
    for transport in Transport::ALL {
        let call = format!("run_table(Transport::{transport:?})");
        assert!(source.contains(&call), "no test runs {transport:?}");
    }
}

/// The book's proxy page shows the proxy configs this suite runs (an
/// mdBook include of each file).
#[test]
fn the_book_shows_the_proxy_configs_run_here() {
    let root = authchain_testkit::workspace_root();
    let page = std::fs::read_to_string(root.join("docs/src/proxies.md")).unwrap();
    for file in ["nginx.conf", "traefik.yml", "Caddyfile"] {
        assert!(root.join("examples/proxies").join(file).exists());
        assert!(
            page.contains(&format!("{{{{#include ../../examples/proxies/{file}}}}}")),
            "docs/src/proxies.md does not include examples/proxies/{file}"
        );
    }
}

/// Envoy picks a route, and so its AuthConfig, by the raw path unless
/// `normalize_path` is set: with `/assets/` open, `/assets/../admin` is
/// judged by `open` and served as `/admin`. The dot segment is refused
/// whichever AuthConfig the route names, so the climb never reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_climb_out_of_an_open_route_is_refused_by_the_route_s_own_auth_config() {
    use authchain_testkit::envoy::{Bootstrap, Envoy};
    use authchain_testkit::{EchoServer, client};

    let app = EchoServer::start().await.unwrap();
    let config = format!(
        "{}authConfigs:
- name: site
  configs:
  - name: nothing
    rules: {{ defaultAction: deny }}
- name: open
  configs:
  - name: anything
    rules: {{ defaultAction: allow }}
",
        support::LISTENERS
    );
    let authchain = support::Authchain::start(&config).await;
    let bootstrap = Bootstrap::new(app.addr())
        .route("/assets/", Some("open"))
        .route("/", Some("site"))
        .grpc(authchain.grpc);
    let envoy = Envoy::start(&bootstrap.yaml()).await.unwrap();
    let ingress = envoy.listener("ingress").unwrap();

    let reply = client::get(ingress, "/assets/x", &[]).await.unwrap();
    assert_eq!(reply.status, 200, "the open route serves");
    assert_eq!(
        client::get(ingress, "/admin", &[]).await.unwrap().status,
        403
    );
    let hits = app.hits();
    for path in [
        "/assets/../admin",
        "/assets/%2e%2e/admin",
        "/assets/./../admin",
        "/assets/.%2E/admin",
    ] {
        let reply = client::get(ingress, path, &[]).await.unwrap();
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
    }
    assert_eq!(app.hits(), hits, "no climb reached the app");
}

/// A host-scoped deny in an AuthConfig that allows the rest holds
/// whatever follows the host's name: Go's proxies (Traefik, Caddy) and
/// apps that cut at `:` take `admin.example:x` as `admin.example`, which
/// a rule would not match. Every transport, each through its real proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_scoped_deny_holds_whatever_follows_the_name() {
    const HOSTS: &str = "authConfigs:
- name: site
  configs:
  - name: rules
    rules:
      defaultAction: allow
      rules: [ { action: deny, hosts: [admin.example] } ]
";
    let mut problems = Vec::new();
    for transport in Transport::ALL {
        let stack = transports::Stack::start_with(transport, HOSTS).await;
        // (the Host header, whether it may reach the app)
        for (host, reaches) in [
            ("app.example", true),
            ("APP.example:8080", true),
            ("[::1]:8080", true),
            ("admin.example", false),
            ("[admin.example]", false),
            ("[%61dmin.example]:80", false),
            ("admin.example:8080", false),
            ("admin.example:x", false),
            ("admin.example:80x", false),
            ("admin.example.:x", false),
            ("admin.example:8080:1", false),
            ("admin.example:", false),
            ("admin.example,app.example", false),
        ] {
            let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let before = stack.hits();
            let reply = authchain_testkit::client::raw(stack.addr, request.as_bytes()).await;
            let reached = stack.hits() - before;
            let status = reply.as_ref().map(|r| r.status.as_u16());
            let allowed = status.is_ok_and(|s| (200..300).contains(&s));
            let fine = match reaches {
                true => reached == 1 && allowed,
                false => reached == 0 && !allowed,
            };
            if !fine {
                problems.push(format!(
                    "[{transport}] Host {host}: {status:?}, app +{reached}"
                ));
            }
        }
        if problems
            .last()
            .is_some_and(|p| p.starts_with(&format!("[{transport}]")))
        {
            problems.push(stack.output());
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
