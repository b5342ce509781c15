//! Starting each transport's stack: the remote auth servers, the
//! `authchain` binary from a config written here, the real proxy with
//! its documented config, and the app; or, for the layer, the same
//! AuthConfigs in process in front of an axum handler.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use authchain_core::Engine;
use authchain_http::AuthChainLayer;
use authchain_server::Loaded;
use authchain_testkit::caddy::Caddy;
use authchain_testkit::envoy::Envoy;
use authchain_testkit::nginx::Nginx;
use authchain_testkit::traefik::Traefik;
use authchain_testkit::{EchoServer, render, workspace_root};

use crate::remotes::{EchoHandler, Served, grpc_remote, http_remote};
use crate::support::Authchain;
use crate::table::BOB_KEY;

/// A way a request reaches a chain. Adding one: a variant here, in
/// [`Transport::ALL`] and in [`Stack::start`], and a test in `main.rs`;
/// it then runs every row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Envoy's ext_authz over gRPC; the route names `site` in
    /// `context_extensions: { config_id: site }`.
    EnvoyGrpc,
    /// The same with `normalize_path: true` and `merge_slashes: true`, as
    /// the book advises (docs/src/security.md) so that the app sees the path that was judged.
    EnvoyGrpcNormalized,
    /// The same as [`Transport::EnvoyGrpc`] with `failure_mode_allow:
    /// true`: a check that ends in an error rather than an answer lets
    /// the request through, so no row may end so. Every row as for
    /// Envoy gRPC.
    EnvoyGrpcFailOpen,
    /// Envoy's ext_authz in HTTP service mode, `path_prefix: /check:site`.
    EnvoyHttp,
    /// The same with `failure_mode_allow: true`, under which Envoy lets a
    /// request through on a 5xx or no answer. Every row as for
    /// [`Transport::EnvoyHttp`].
    EnvoyHttpFailOpen,
    /// Envoy's ext_authz in HTTP service mode, `path_prefix: /check`:
    /// authchain's `defaultConfig: site` judges.
    EnvoyHttpDefault,
    /// nginx `auth_request`, authchain trusting it for `X-Original-*`.
    Nginx,
    /// Traefik ForwardAuth, authchain trusting it for `X-Forwarded-*`.
    Traefik,
    /// The same Traefik trusting its peer's forwarded headers
    /// (`forwardedHeaders.trustedIPs`, as behind a load balancer): it
    /// passes the peer's `X-Forwarded-Host` on to the app unless a
    /// middleware drops it. Every row as for Traefik.
    TraefikTrusting,
    /// Caddy `forward_auth`, authchain trusting it for `X-Forwarded-*`.
    Caddy,
    /// The same Caddy trusting its peer (`trusted_proxies`, as behind a
    /// load balancer): it keeps a trusted peer's `X-Forwarded-Host` and
    /// `-Proto` unless the Caddyfile pins them. Every row as for Caddy.
    CaddyTrusting,
    /// `AuthChainLayer::from_engine(engine, "site")` around an axum app.
    Layer,
}

impl Transport {
    /// Every transport, each of which runs every row.
    pub(crate) const ALL: [Transport; 12] = [
        Transport::EnvoyGrpc,
        Transport::EnvoyGrpcNormalized,
        Transport::EnvoyGrpcFailOpen,
        Transport::EnvoyHttp,
        Transport::EnvoyHttpFailOpen,
        Transport::EnvoyHttpDefault,
        Transport::Nginx,
        Transport::Traefik,
        Transport::TraefikTrusting,
        Transport::Caddy,
        Transport::CaddyTrusting,
        Transport::Layer,
    ];
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::EnvoyGrpc => "envoy-grpc",
            Transport::EnvoyGrpcNormalized => "envoy-grpc (normalize_path, merge_slashes)",
            Transport::EnvoyGrpcFailOpen => "envoy-grpc (failure_mode_allow)",
            Transport::EnvoyHttp => "envoy-http (/check:site)",
            Transport::EnvoyHttpFailOpen => "envoy-http (/check:site, failure_mode_allow)",
            Transport::EnvoyHttpDefault => "envoy-http (/check, defaultConfig)",
            Transport::Nginx => "nginx",
            Transport::Traefik => "traefik",
            Transport::TraefikTrusting => "traefik (trustedIPs)",
            Transport::Caddy => "caddy",
            Transport::CaddyTrusting => "caddy (trusted_proxies)",
            Transport::Layer => "layer",
        })
    }
}

/// The authchain config's listeners, less the `http` one (which the
/// transport decides): `{{http_block}}` is filled in before
/// [`Authchain::start_with`] fills the ports. Its AuthConfigs follow.
const LISTENERS: &str = "\
grpc: { address: '127.0.0.1:{{grpc_port}}' }
{{http_block}}
admin: { address: '127.0.0.1:{{admin_port}}' }
defaultConfig: site
log: { format: text, level: info }
";

/// The table's AuthConfigs; `{{remote_http}}` and `{{remote_grpc}}` are
/// the remotes' ports.
pub(crate) const SITE: &str = "\
authConfigs:
- name: site
  stripClientHeaders: [x-tenant]
  configs:
  - name: key
    apiKeyAuth:
      headerName: api-key
      keys:
      - key: {{bob_key}}
        metadata: { user-id: bob }
      headersFromMetadataEntry:
        x-user-id: { name: user-id, required: true }
  - name: rules
    rules:
      defaultAction: deny
      rules:
      - { action: allow, methods: [GET], hosts: [app.example], paths: [ { prefix: /public/ } ] }
  - name: source
    opaAuth:
      query: data.source.allow
      modules:
        source.rego: |
          package source
          import rego.v1
          # A client that names itself 10.9.9.9 must not be taken for it.
          default allow := true
          allow := false if input.attributes.source.address.socketAddress.address == \"10.9.9.9\"
  - name: remote-http
    passThroughAuth:
      http:
        url: 'http://127.0.0.1:{{remote_http}}/auth'
        request: { allowedHeaders: [x-remote-answer] }
  - name: remote-grpc
    passThroughAuth:
      grpc: { address: '127.0.0.1:{{remote_grpc}}' }
- name: open
  configs:
  - name: anything
    rules: { defaultAction: allow }
";

/// The `http` listener: Envoy's is trusted for nothing.
const HTTP_UNTRUSTED: &str = "http: { address: '127.0.0.1:{{http_port}}' }";
/// The `http` listener behind nginx, which writes `X-Original-*`.
const HTTP_NGINX: &str = "http:
  address: '127.0.0.1:{{http_port}}'
  trustedProxies: [ { network: 127.0.0.1/32, headers: x-original } ]";
/// The `http` listener behind Traefik or Caddy, which write
/// `X-Forwarded-*`.
const HTTP_FORWARDED: &str = "http:
  address: '127.0.0.1:{{http_port}}'
  trustedProxies: [ { network: 127.0.0.1/32, headers: x-forwarded } ]";

/// Envoy with ext_authz over gRPC, as `examples/seeds/envoy-grpc`;
/// `{{hcm_options}}` adds lines to the HTTP connection manager.
const ENVOY_GRPC: &str = r#"static_resources:
  listeners:
  - name: ingress
    enable_reuse_port: false
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
{{hcm_options}}          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: { context_extensions: { config_id: site } }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: {{fail_open}}
              grpc_service: { envoy_grpc: { cluster_name: authchain }, timeout: 2s }
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: authchain
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: authchain
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{authchain_port}} } } } } ] } ]
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{app_port}} } } } } ] } ]
"#;

/// Envoy with ext_authz in HTTP service mode, as the README documents it.
/// `allowed_headers` passes the key, and every `x-` header besides, as a
/// user who wants the remotes' headers there might: authchain trusts
/// this Envoy for nothing, so a client's forwarded headers must not
/// count. `forwarded` and the `x_` spellings go too, as the security page
/// asks.
const ENVOY_HTTP: &str = r#"static_resources:
  listeners:
  - name: ingress
    enable_reuse_port: false
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: {{fail_open}}
              allowed_headers:
                patterns: [ { exact: api-key }, { exact: config_id }, { exact: forwarded }, { prefix: x- }, { prefix: x_ } ]
              http_service:
                server_uri: { uri: "http://127.0.0.1:{{authchain_port}}", cluster: authchain, timeout: 2s }
                path_prefix: {{path_prefix}}
                authorization_response:
                  allowed_upstream_headers: { patterns: [ { exact: x-user-id } ] }
                  allowed_client_headers: { patterns: [ { exact: www-authenticate }, { exact: location } ] }
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: authchain
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: authchain
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{authchain_port}} } } } } ] } ]
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{app_port}} } } } } ] } ]
"#;

/// The proxy configs the README shows, from `examples/proxies/` (a test
/// in `main.rs` holds the README to them), with `AUTHCHAIN` and `APP`
/// made template variables.
fn readme_config(file: &str) -> String {
    let path = workspace_root().join("examples/proxies").join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .replace("AUTHCHAIN", "{{authchain}}")
        .replace("APP", "{{app}}")
}

/// nginx `auth_request`: the README's locations in a server block.
fn nginx_config() -> String {
    format!(
        "server {{\n    listen 127.0.0.1:{{{{port}}}};\n{}}}\n",
        readme_config("nginx.conf")
    )
}

/// Traefik ForwardAuth: the README's dynamic config, on the testkit's
/// entry point.
fn traefik_config() -> String {
    readme_config("traefik.yml")
}

/// Caddy `forward_auth`: the README's site on the port chosen here.
fn caddy_config() -> String {
    readme_config("Caddyfile").replace("http://:8080 {", "http://:{{port}} {\n\tbind 127.0.0.1")
}

/// The proxy of a stack.
enum Proxy {
    Envoy(Envoy),
    Nginx(Nginx),
    Traefik(Traefik),
    Caddy(Caddy),
}

impl Proxy {
    fn output(&self) -> String {
        match self {
            Proxy::Envoy(p) => p.output(),
            Proxy::Nginx(p) => p.output(),
            Proxy::Traefik(p) => p.output(),
            Proxy::Caddy(p) => p.output(),
        }
    }
}

/// What answers behind the chain, and counts what reaches it.
enum App {
    Echo(EchoServer),
    Handler(EchoHandler),
}

/// A transport running: remotes, authchain, proxy and app (or the layer
/// and its handler), each stopped on drop.
pub(crate) struct Stack {
    /// Where the client sends its requests.
    pub(crate) addr: SocketAddr,
    app: App,
    proxy: Option<Proxy>,
    authchain: Option<Authchain>,
    _remotes: (Served, Served),
    _layer: Option<Served>,
}

impl Stack {
    /// Starts `transport`'s stack serving [`SITE`] and waits until each
    /// part is ready.
    pub(crate) async fn start(transport: Transport) -> Stack {
        Self::start_with(transport, SITE).await
    }

    /// Starts `transport`'s stack serving `auth_configs` (an
    /// `authConfigs:` block with an AuthConfig `site`, in which
    /// `{{bob_key}}`, `{{remote_http}}` and `{{remote_grpc}}` are filled
    /// in) and waits until each part is ready.
    pub(crate) async fn start_with(transport: Transport, auth_configs: &str) -> Stack {
        let remotes = (http_remote().await, grpc_remote().await);
        let http_block = match transport {
            Transport::EnvoyGrpc
            | Transport::EnvoyGrpcNormalized
            | Transport::EnvoyGrpcFailOpen
            | Transport::EnvoyHttp
            | Transport::EnvoyHttpFailOpen
            | Transport::EnvoyHttpDefault => HTTP_UNTRUSTED,
            Transport::Nginx => HTTP_NGINX,
            Transport::Traefik
            | Transport::TraefikTrusting
            | Transport::Caddy
            | Transport::CaddyTrusting => HTTP_FORWARDED,
            Transport::Layer => HTTP_UNTRUSTED,
        };
        // Everything but the ports authchain's own start picks.
        let template = render(
            &format!("{LISTENERS}{auth_configs}"),
            &[
                ("http_block", http_block.to_owned()),
                ("bob_key", BOB_KEY.to_owned()),
                ("remote_http", remotes.0.addr.port().to_string()),
                ("remote_grpc", remotes.1.addr.port().to_string()),
                ("grpc_port", "{{grpc_port}}".to_owned()),
                ("http_port", "{{http_port}}".to_owned()),
                ("admin_port", "{{admin_port}}".to_owned()),
            ],
        )
        .unwrap();

        if transport == Transport::Layer {
            return Self::start_layer(&template, remotes).await;
        }

        let app = EchoServer::start().await.unwrap();
        let authchain = Authchain::start(&template).await;
        let vars = |extra: &[(&'static str, String)]| {
            let mut vars = vec![
                ("port", "{{port}}".to_owned()),
                ("app", app.addr().to_string()),
                ("app_port", app.addr().port().to_string()),
                ("authchain", authchain.http.to_string()),
            ];
            vars.extend(extra.iter().cloned());
            vars
        };
        let envoy_http = |prefix: &str, fail_open: bool| {
            render(
                ENVOY_HTTP,
                &vars(&[
                    ("authchain_port", authchain.http.port().to_string()),
                    ("path_prefix", prefix.to_owned()),
                    ("fail_open", fail_open.to_string()),
                ]),
            )
            .unwrap()
        };
        let (proxy, addr) = match transport {
            Transport::EnvoyGrpc
            | Transport::EnvoyGrpcNormalized
            | Transport::EnvoyGrpcFailOpen => {
                let options = match transport {
                    Transport::EnvoyGrpcNormalized => {
                        "          normalize_path: true\n          merge_slashes: true\n"
                    }
                    _ => "",
                };
                let fail_open = transport == Transport::EnvoyGrpcFailOpen;
                let config = render(
                    ENVOY_GRPC,
                    &vars(&[
                        ("authchain_port", authchain.grpc.port().to_string()),
                        ("hcm_options", options.to_owned()),
                        ("fail_open", fail_open.to_string()),
                    ]),
                )
                .unwrap();
                envoy(&config).await
            }
            Transport::EnvoyHttp => envoy(&envoy_http("/check:site", false)).await,
            Transport::EnvoyHttpFailOpen => envoy(&envoy_http("/check:site", true)).await,
            Transport::EnvoyHttpDefault => envoy(&envoy_http("/check", false)).await,
            Transport::Nginx => {
                let nginx = Nginx::start(&render(&nginx_config(), &vars(&[])).unwrap())
                    .await
                    .unwrap();
                let addr = nginx.addr();
                (Proxy::Nginx(nginx), addr)
            }
            Transport::Traefik | Transport::TraefikTrusting => {
                let entry_point = match transport {
                    Transport::TraefikTrusting => {
                        "forwardedHeaders: { trustedIPs: [\"127.0.0.1/32\"] }"
                    }
                    _ => "",
                };
                let dynamic = render(&traefik_config(), &vars(&[])).unwrap();
                let port = authchain_testkit::free_port().unwrap();
                let traefik = Traefik::start_with(&dynamic, port, entry_point)
                    .await
                    .unwrap();
                let addr = traefik.addr();
                (Proxy::Traefik(traefik), addr)
            }
            Transport::Caddy | Transport::CaddyTrusting => {
                let global = match transport {
                    Transport::CaddyTrusting => {
                        "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}"
                    }
                    _ => "",
                };
                let site = render(&caddy_config(), &vars(&[])).unwrap();
                let port = authchain_testkit::free_port().unwrap();
                let caddy = Caddy::start_with(&site, port, global).await.unwrap();
                let addr = caddy.addr();
                (Proxy::Caddy(caddy), addr)
            }
            Transport::Layer => unreachable!("started above"),
        };
        Stack {
            addr,
            app: App::Echo(app),
            proxy: Some(proxy),
            authchain: Some(authchain),
            _remotes: remotes,
            _layer: None,
        }
    }

    /// The layer: the binary's config read as the binary reads it, its
    /// AuthConfigs loaded into an engine with the binary's registry, and
    /// `AuthChainLayer::from_engine(engine, "site")` around an axum app.
    async fn start_layer(template: &str, remotes: (Served, Served)) -> Stack {
        let text = render(
            template,
            &[
                ("grpc_port", "1".to_owned()),
                ("http_port", "2".to_owned()),
                ("admin_port", "3".to_owned()),
            ],
        )
        .unwrap();
        let loaded = Loaded::from_text("attack.yaml", &text, None).unwrap();
        let engine = Arc::new(Engine::new(authchain_server::default_registry()));
        engine.load(&loaded.configs).await.unwrap();
        let handler = EchoHandler::default();
        // Routed as an app is, with the layer on the router: axum picks
        // the route by the raw path before the layer runs.
        let app = {
            let route = |handler: EchoHandler| {
                axum::routing::any(move |request| handler.clone().handle(request))
            };
            let fallback = handler.clone();
            axum::Router::new()
                .route("/admin/{*rest}", route(handler.clone()))
                .route("/public/{*rest}", route(handler.clone()))
                .fallback(move |request| fallback.clone().handle(request))
                .layer(AuthChainLayer::from_engine(engine, "site"))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stack {
            addr,
            app: App::Handler(handler),
            proxy: None,
            authchain: None,
            _remotes: remotes,
            _layer: Some(Served::new(addr, task)),
        }
    }

    /// Stops the authchain process: the proxy's checks then fail.
    pub(crate) fn stop_authchain(&mut self) {
        if let Some(authchain) = &mut self.authchain {
            authchain.peer.kill();
        }
    }

    /// How many requests reached the app.
    pub(crate) fn hits(&self) -> usize {
        match &self.app {
            App::Echo(echo) => echo.hits(),
            App::Handler(handler) => handler.hits(),
        }
    }

    /// What the proxy and authchain wrote (the end of it), for failure
    /// messages.
    pub(crate) fn output(&self) -> String {
        let mut out = String::new();
        if let Some(proxy) = &self.proxy {
            out.push_str(&proxy.output());
        }
        if let Some(authchain) = &self.authchain {
            let log = authchain.log();
            let from = log.len().saturating_sub(16 * 1024);
            let from = (from..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(log.len());
            out.push_str("\n--- authchain (last 16 KiB) ---\n");
            out.push_str(&log[from..]);
        }
        if out.is_empty() {
            out.push_str("(in process: no proxy, no authchain process)");
        }
        out
    }
}

async fn envoy(config: &str) -> (Proxy, SocketAddr) {
    let envoy = Envoy::start(config).await.unwrap();
    let addr = envoy.listener("ingress").unwrap();
    (Proxy::Envoy(envoy), addr)
}
