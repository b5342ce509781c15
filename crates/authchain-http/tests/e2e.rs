//! authchain-http behind the real proxies: Envoy (HTTP service mode),
//! nginx `auth_request`, Traefik ForwardAuth and Caddy `forward_auth`, each
//! started by the test on loopback and killed on drop. A missing proxy
//! fails the test with an install hint (`./scripts/install-peers.sh`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authchain_core::{
    Allow, Answer, AuthConfig, AuthorizationRequest, Decision, Deny, Engine, Format,
    PluginRegistry, plugin_fn, service_fn,
};
use authchain_http::{CheckConfig, CheckServer, ForwardedHeaders};
use authchain_testkit::caddy::Caddy;
use authchain_testkit::envoy::{Bootstrap, Envoy, HttpService};
use authchain_testkit::nginx::Nginx;
use authchain_testkit::traefik::Traefik;
use authchain_testkit::{EchoServer, client, render};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

const USER_ID: HeaderName = HeaderName::from_static("x-user-id");

/// The seed's token check: a token in `Authorization: Bearer` or in the
/// `session` cookie names a user, who goes upstream as `x-user-id`; no
/// token or an unknown one is a 401 with a Bearer challenge.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenConfig {
    tokens: BTreeMap<String, String>,
}

/// Allows paths listed in `allow`, denies the rest; `/slow` sleeps first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathsConfig {
    allow: Vec<String>,
}

fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    authchain_http::register(&mut registry);
    registry.register(plugin_fn("Token", |c: TokenConfig, _| {
        let tokens = Arc::new(c.tokens);
        Ok(Arc::new(TokenStep { tokens }))
    }));
    registry.register(plugin_fn("Decorate", |_: serde_json::Value, _| {
        Ok(Arc::new(service_fn(|_| {
            Box::pin(async {
                Ok(Allow::new()
                    .set_header(USER_ID, HeaderValue::from_static("carol"))
                    .append_header(
                        HeaderName::from_static("x-groups"),
                        HeaderValue::from_static("auditors"),
                    )
                    .remove_header(HeaderName::from_static("x-debug"))
                    .set_header(
                        HeaderName::from_static("x-roles"),
                        HeaderValue::from_static("reader"),
                    )
                    .append_header(
                        HeaderName::from_static("x-roles"),
                        HeaderValue::from_static("auditor"),
                    )
                    .into())
            })
        })))
    }));
    registry.register(plugin_fn("BodyLength", |_: serde_json::Value, _| {
        Ok(Arc::new(service_fn(|req| {
            let len = req.body.as_ref().map_or(0, |b| b.len());
            Box::pin(async move {
                Ok(Allow::new()
                    .set_header(
                        HeaderName::from_static("x-body-length"),
                        HeaderValue::from(len),
                    )
                    .into())
            })
        })))
    }));
    registry.register(plugin_fn("Paths", |c: PathsConfig, _| {
        Ok(Arc::new(service_fn(move |req| {
            let path = req.path_only().to_owned();
            let allowed = c.allow.contains(&path);
            Box::pin(async move {
                if path == "/slow" {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok(if allowed {
                    Decision::authorized()
                } else {
                    Decision::unauthorized()
                })
            })
        })))
    }));
    registry
}

struct TokenStep {
    tokens: Arc<BTreeMap<String, String>>,
}

#[authchain_core::async_trait]
impl authchain_core::AuthService for TokenStep {
    fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            let bearer = req
                .header_str("authorization")
                .and_then(|v| v.strip_prefix("Bearer "));
            let cookie = req.header_str("cookie").and_then(|c| {
                c.split(';')
                    .filter_map(|kv| kv.trim().split_once('='))
                    .find_map(|(k, v)| (k == "session").then_some(v))
            });
            let user = bearer.or(cookie).and_then(|t| self.tokens.get(t));
            let Some(user) = user.and_then(|u| HeaderValue::try_from(u.as_str()).ok()) else {
                return Ok(Deny::new(StatusCode::UNAUTHORIZED)
                    .header(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"authchain\""),
                    )
                    .body("missing or bad token")
                    .into());
            };
            Ok(Allow::new().set_header(USER_ID, user).into())
        })
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        vec![USER_ID]
    }
}

const CONFIGS: &str = r#"
name: site
configs:
- name: token
  pluginAuth:
    name: Token
    config: { tokens: { t-alice: alice, t-bob: bob } }
---
name: ratings
configs:
- pluginAuth: { name: Paths, config: { allow: [/ratings/1] } }
---
name: decorate
configs:
- pluginAuth: { name: Decorate }
---
name: slow
configs:
- pluginAuth: { name: Paths, config: { allow: [/slow, /fast] } }
---
name: body
configs:
- pluginAuth: { name: BodyLength }
"#;

/// authchain's HTTP check server on a loopback port.
struct Authchain {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Authchain {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// For a forward-auth proxy that writes `headers` itself.
async fn authchain(headers: ForwardedHeaders) -> Authchain {
    authchain_with(CheckConfig::default().trust(["127.0.0.0/8".parse().unwrap()], headers)).await
}

/// For Envoy in HTTP service mode: no trusted proxy, since Envoy passes
/// its client's `x-` headers on and sends the original path itself.
async fn envoy_authchain() -> Authchain {
    authchain_with(CheckConfig::default()).await
}

async fn authchain_with(config: CheckConfig) -> Authchain {
    let engine = Arc::new(Engine::new(registry()));
    engine
        .load(&AuthConfig::parse("e2e.yaml", CONFIGS, Format::Yaml).unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = CheckServer::new(engine, config);
    let task = tokio::spawn(server.serve(listener, std::future::pending()));
    Authchain { addr, task }
}

/// A proxy config with the upstream's and authchain's addresses filled
/// in; `{{port}}` stays for the peer's own start to fill.
fn wire(template: &str, upstream: &EchoServer, auth: &Authchain) -> String {
    render(
        template,
        &[
            ("port", "{{port}}".into()),
            ("upstream", upstream.addr().to_string()),
            ("authchain", auth.addr.to_string()),
        ],
    )
    .unwrap()
}

// nginx auth_request: the seed "Forward Authentication".

const NGINX: &str = r#"
server {
    listen 127.0.0.1:{{port}};
    location / {
        auth_request /_authz;
        auth_request_set $authchain_user $upstream_http_x_user_id;
        proxy_set_header X-User-Id $authchain_user;
        proxy_pass http://{{upstream}};
    }
    location = /_authz {
        internal;
        proxy_pass http://{{authchain}}/check:site;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
    }
}
"#;

#[tokio::test]
async fn nginx_auth_request_forward_authentication() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = authchain(ForwardedHeaders::XOriginal).await;
    let nginx = Nginx::start(&wire(NGINX, &upstream, &auth)).await.unwrap();

    // A token in Authorization: the upstream gets alice, whatever the client claims.
    let reply = client::get(
        nginx.addr(),
        "/orders?id=3",
        &[("authorization", "Bearer t-alice"), ("x-user-id", "admin")],
    )
    .await
    .unwrap();
    let seen = reply
        .echoed()
        .unwrap_or_else(|e| panic!("{e}\n{}", nginx.output()));
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);
    assert_eq!(seen.path, "/orders?id=3");

    // A token in the session cookie.
    let reply = client::get(
        nginx.addr(),
        "/",
        &[("cookie", "theme=dark; session=t-bob")],
    )
    .await
    .unwrap();
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), ["bob"]);

    // No token, a bad one, a forged identity alone: 401 at the client, with
    // the challenge; the upstream never sees these requests.
    let hits = upstream.hits();
    for headers in [
        vec![],
        vec![("authorization", "Bearer t-mallory")],
        vec![("x-user-id", "admin")],
    ] {
        let reply = client::get(nginx.addr(), "/orders", &headers)
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(
            reply.header_values("www-authenticate"),
            ["Bearer realm=\"authchain\""]
        );
    }
    assert_eq!(upstream.hits(), hits);
}

/// nginx within a network trusted for Traefik's headers, and trusted
/// itself for its own: in either order of the list, the most specific
/// network is nginx's, and a client's `X-Forwarded-*`, which nginx passes
/// on, describe nothing.
#[tokio::test]
async fn a_proxy_within_another_s_network_is_trusted_for_its_own_headers() {
    let upstream = EchoServer::start().await.unwrap();
    let nginx = || ["127.0.0.1/32".parse().unwrap()];
    let traefik = || ["127.0.0.0/8".parse().unwrap()];
    let orders = [
        CheckConfig::default()
            .trust(traefik(), ForwardedHeaders::XForwarded)
            .trust(nginx(), ForwardedHeaders::XOriginal),
        CheckConfig::default()
            .trust(nginx(), ForwardedHeaders::XOriginal)
            .trust(traefik(), ForwardedHeaders::XForwarded),
    ];
    for config in orders {
        let auth = authchain_with(config).await;
        let template = NGINX.replace("/check:site", "/check:ratings");
        let nginx = Nginx::start(&wire(&template, &upstream, &auth))
            .await
            .unwrap();
        // The host nginx's check names (authchain's): another one is a
        // 400 of its own.
        let host = auth.addr.to_string();
        let forged = [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/ratings/1"),
            ("x-forwarded-host", host.as_str()),
        ];
        let reply = client::get(nginx.addr(), "/admin", &forged).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", nginx.output());
        let reply = client::get(nginx.addr(), "/ratings/1", &forged)
            .await
            .unwrap();
        assert_eq!(reply.echoed().unwrap().path, "/ratings/1");
    }
}

// Traefik ForwardAuth.

const TRAEFIK: &str = r#"
http:
  routers:
    app: { rule: "PathPrefix(`/`)", entryPoints: [web], middlewares: [authz], service: upstream }
  middlewares:
    authz:
      forwardAuth:
        address: "http://{{authchain}}/check:site"
        authResponseHeaders: ["X-User-Id"]
  services:
    upstream: { loadBalancer: { servers: [ { url: "http://{{upstream}}" } ] } }
"#;

#[tokio::test]
async fn traefik_forward_auth() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = authchain(ForwardedHeaders::XForwarded).await;
    let traefik = Traefik::start(&wire(TRAEFIK, &upstream, &auth))
        .await
        .unwrap();

    let reply = client::get(
        traefik.addr(),
        "/a?b=c",
        &[("authorization", "Bearer t-alice"), ("x-user-id", "admin")],
    )
    .await
    .unwrap();
    let seen = reply
        .echoed()
        .unwrap_or_else(|e| panic!("{e}\n{}", traefik.output()));
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);

    let reply = client::get(traefik.addr(), "/a", &[("authorization", "Bearer nope")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text(), "missing or bad token");
    assert_eq!(
        reply.header_values("www-authenticate"),
        ["Bearer realm=\"authchain\""]
    );
}

// Caddy forward_auth.

// Any Host: the test client names the listener by its address.
const CADDY: &str = r#"
http://:{{port}} {
	bind 127.0.0.1
	forward_auth {{authchain}} {
		uri /check:site
		copy_headers X-User-Id
	}
	reverse_proxy {{upstream}}
}
"#;

#[tokio::test]
async fn caddy_forward_auth() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = authchain(ForwardedHeaders::XForwarded).await;
    let caddy = Caddy::start(&wire(CADDY, &upstream, &auth)).await.unwrap();

    let reply = client::get(
        caddy.addr(),
        "/x",
        &[("cookie", "session=t-bob"), ("x-user-id", "admin")],
    )
    .await
    .unwrap();
    let seen = reply
        .echoed()
        .unwrap_or_else(|e| panic!("{e}\n{}", caddy.output()));
    assert_eq!(seen.header_all("x-user-id"), ["bob"]);

    let reply = client::get(caddy.addr(), "/x", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text(), "missing or bad token");
}

// Envoy ext_authz in HTTP service mode.

async fn envoy(auth: SocketAddr, upstream: SocketAddr, config: &str) -> Envoy {
    let prefix = format!("/check:{config}");
    let yaml = Bootstrap::new(upstream)
        .http(HttpService {
            addr: auth,
            path_prefix: &prefix,
            allowed_headers: &["authorization", "cookie", "x-*"],
            upstream_headers: &["x-user-id", "x-body-length", "x-roles"],
            upstream_headers_to_append: &["x-groups"],
            client_headers: &["www-authenticate"],
        })
        .timeout("0.5s")
        .with_body(10240, false)
        .yaml();
    Envoy::start(&yaml).await.unwrap()
}

#[tokio::test]
async fn envoy_http_service_allows_denies_and_overwrites_identity() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = envoy_authchain().await;
    let envoy = envoy(auth.addr, upstream.addr(), "site").await;
    let ingress = envoy.listener("ingress").unwrap();

    let reply = client::get(
        ingress,
        "/orders?id=1",
        &[("authorization", "Bearer t-alice"), ("x-user-id", "admin")],
    )
    .await
    .unwrap();
    let seen = reply
        .echoed()
        .unwrap_or_else(|e| panic!("{e}\n{}", envoy.output()));
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);
    assert_eq!(seen.path, "/orders?id=1");

    let reply = client::get(ingress, "/orders", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text(), "missing or bad token");
    assert_eq!(
        reply.header_values("www-authenticate"),
        ["Bearer realm=\"authchain\""]
    );
}

#[tokio::test]
async fn envoy_http_service_custom_auth_server_seed() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = envoy_authchain().await;
    let envoy = envoy(auth.addr, upstream.addr(), "ratings").await;
    let ingress = envoy.listener("ingress").unwrap();
    let reply = client::get(ingress, "/ratings/1", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", envoy.output());
    for path in ["/ratings/2", "/ratings", "/", "/ratings/1/x"] {
        let reply = client::get(ingress, path, &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn envoy_http_service_body_limit_down_and_timeout() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = envoy_authchain().await;
    let envoy_slow = envoy(auth.addr, upstream.addr(), "slow").await;
    let ingress = envoy_slow.listener("ingress").unwrap();

    // A body within Envoy's 10 KiB reaches authchain and the upstream.
    let body = "b".repeat(10 * 1024);
    let reply = client::post(ingress, "/fast", &[], body.clone())
        .await
        .unwrap();
    assert_eq!(reply.echoed().unwrap().body, body);
    // Beyond it Envoy answers 413 before any check.
    let reply = client::post(ingress, "/fast", &[], "b".repeat(10 * 1024 + 1))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // A check slower than Envoy's 0.5 s: Envoy fails closed with 403.
    let reply = client::get(ingress, "/slow", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // authchain down: 403.
    let port = auth.addr;
    drop(auth);
    let down = envoy(port, upstream.addr(), "site").await;
    let reply = client::get(
        down.listener("ingress").unwrap(),
        "/",
        &[("authorization", "Bearer t-alice")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn envoy_http_service_overwrites_appends_and_removes() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = envoy_authchain().await;
    let envoy = envoy(auth.addr, upstream.addr(), "decorate").await;
    let ingress = envoy.listener("ingress").unwrap();
    let reply = client::get(
        ingress,
        "/",
        &[
            ("x-user-id", "admin"),
            ("x-groups", "users"),
            ("x-debug", "1"),
            ("x-keep", "k"),
        ],
    )
    .await
    .unwrap();
    let seen = reply
        .echoed()
        .unwrap_or_else(|e| panic!("{e}\n{}", envoy.output()));
    assert_eq!(seen.header_values("x-user-id"), ["carol"], "overwritten");
    assert_eq!(
        seen.header_values("x-groups"),
        ["users", "auditors"],
        "appended"
    );
    assert!(seen.header("x-debug").is_none(), "removed");
    assert_eq!(seen.header("x-keep"), Some("k"));
    // Set, then appended to: one line, as Envoy sets each line it takes.
    assert_eq!(
        seen.header_values("x-roles"),
        ["reader", "auditor"],
        "set and appended"
    );
}

#[tokio::test]
async fn envoy_http_service_forwards_the_body_to_the_chain() {
    let upstream = EchoServer::start().await.unwrap();
    let auth = envoy_authchain().await;
    let envoy = envoy(auth.addr, upstream.addr(), "body").await;
    let ingress = envoy.listener("ingress").unwrap();
    let body = "z".repeat(10 * 1024);
    let reply = client::post(ingress, "/upload", &[], body.clone())
        .await
        .unwrap();
    let seen = reply
        .echoed()
        .unwrap_or_else(|e| panic!("{e}\n{}", envoy.output()));
    assert_eq!(
        seen.header("x-body-length"),
        Some("10240"),
        "the chain saw the whole body"
    );
    assert_eq!(seen.body, body);
}
