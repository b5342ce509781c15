//! Reading the seed files, filling in run-time ports, and starting a
//! scenario's stack: the app, authchain, the proxy.

use std::net::SocketAddr;
use std::path::PathBuf;

use authchain_testkit::caddy::Caddy;
use authchain_testkit::client::{self, Reply};
use authchain_testkit::envoy::Envoy;
use authchain_testkit::nginx::Nginx;
use authchain_testkit::traefik::Traefik;
use authchain_testkit::{EchoServer, EchoedRequest, workspace_root};

use crate::support::Authchain;

/// The proxy's listener.
pub(crate) const PROXY: u16 = 8080;
/// The upstream app.
pub(crate) const APP: u16 = 8081;
/// authchain's gRPC ext_authz listener.
pub(crate) const GRPC: u16 = 9001;
/// authchain's HTTP check listener.
pub(crate) const HTTP: u16 = 9002;
/// authchain's admin listener.
pub(crate) const ADMIN: u16 = 9091;
/// The independent auth server of the passthrough seeds.
pub(crate) const REMOTE: u16 = 9100;

/// Every scenario and its files, in the order the README shows them.
pub(crate) const SCENARIOS: &[(&str, &[&str])] = &[
    ("envoy-grpc", &["authchain.yaml", "envoy.yaml"]),
    ("envoy-http", &["authchain.yaml", "envoy.yaml"]),
    ("nginx", &["authchain.yaml", "nginx.conf"]),
    ("caddy", &["authchain.yaml", "Caddyfile"]),
    ("passthrough-grpc", &["authchain.yaml", "envoy.yaml"]),
    (
        "passthrough-http",
        &["authchain.yaml", "envoy.yaml", "auth-server.py"],
    ),
];

/// `examples/seeds/`.
pub(crate) fn seeds_dir() -> PathBuf {
    workspace_root().join("examples/seeds")
}

/// A seed file's text.
pub(crate) fn read(scenario: &str, file: &str) -> String {
    let path = seeds_dir().join(scenario).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Replaces the ports of `map` where they stand as whole numbers: a run
/// of digits equal to the port, with neither a letter, a digit, `_`, `-`
/// nor `.` on either side (so `127.0.0.1:9001`, `port_value: 8081 }` and
/// `:8080 {` change; `19001`, `v9001`, `a-9001` or a digit run inside a
/// token do not).
pub(crate) fn ports(text: &str, map: &[(u16, String)]) -> String {
    fn word(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && word(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if end == bytes.len() || !word(bytes[end]) {
            let number = &text[i..end];
            if let Some((_, to)) = map.iter().find(|(port, _)| port.to_string() == number) {
                out.push_str(&text[copied..i]);
                out.push_str(to);
                copied = end;
            }
        }
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// How often `port` stands as a whole number in `text`.
pub(crate) fn count(text: &str, port: u16) -> usize {
    ports(text, &[(port, "\u{0}".into())])
        .matches('\u{0}')
        .count()
}

/// The proxy of a scenario.
pub(crate) enum Proxy {
    Envoy(Envoy),
    Nginx(Nginx),
    Caddy(Caddy),
    Traefik(Traefik),
}

impl Proxy {
    pub(crate) fn output(&self) -> String {
        match self {
            Proxy::Envoy(p) => p.output(),
            Proxy::Nginx(p) => p.output(),
            Proxy::Caddy(p) => p.output(),
            Proxy::Traefik(p) => p.output(),
        }
    }
}

/// A scenario running: the app, authchain and the proxy, each stopped on
/// drop.
pub(crate) struct Stack {
    pub(crate) app: EchoServer,
    pub(crate) authchain: Authchain,
    pub(crate) proxy: Proxy,
    /// Where the proxy listens.
    pub(crate) addr: SocketAddr,
}

impl Stack {
    /// Starts `scenario` with its `authchain.yaml` and proxy config;
    /// `remote` is the port of the independent auth server (9100 in the
    /// files), for the passthrough seeds.
    pub(crate) async fn start(scenario: &str, remote: Option<u16>) -> Stack {
        let files = SCENARIOS
            .iter()
            .find(|(name, _)| *name == scenario)
            .map(|(_, files)| *files)
            .unwrap_or_else(|| panic!("no scenario {scenario}"));
        let app = EchoServer::start().await.unwrap();

        let seed = read(scenario, "authchain.yaml");
        for port in [GRPC, HTTP, ADMIN] {
            assert!(
                count(&seed, port) >= 1,
                "{scenario}/authchain.yaml listens on {port}"
            );
        }
        let template = ports(
            &seed,
            &[
                (GRPC, "{{grpc_port}}".into()),
                (HTTP, "{{http_port}}".into()),
                (ADMIN, "{{admin_port}}".into()),
                (REMOTE, "{{remote_port}}".into()),
            ],
        );
        let extra: Vec<(&'static str, String)> = remote
            .map(|port| ("remote_port", port.to_string()))
            .into_iter()
            .collect();
        let authchain = Authchain::start_with(&template, &extra).await;

        let file = files[1];
        let seed = read(scenario, file);
        assert_eq!(
            count(&seed, PROXY),
            1,
            "{scenario}/{file} listens on {PROXY}"
        );
        assert!(
            count(&seed, APP) >= 1,
            "{scenario}/{file} sends to the app on {APP}"
        );
        let map = |own: &str| {
            let mut map = vec![
                (PROXY, own.to_owned()),
                (APP, app.addr().port().to_string()),
                (GRPC, authchain.grpc.port().to_string()),
                (HTTP, authchain.http.port().to_string()),
            ];
            if let Some(port) = remote {
                map.push((REMOTE, port.to_string()));
            }
            map
        };
        let (proxy, addr) = match file {
            "envoy.yaml" => {
                let envoy = Envoy::start(&ports(&seed, &map("0"))).await.unwrap();
                let addr = envoy.listener("ingress").unwrap();
                (Proxy::Envoy(envoy), addr)
            }
            "nginx.conf" => {
                let nginx = Nginx::start(&ports(&seed, &map("{{port}}"))).await.unwrap();
                let addr = nginx.addr();
                (Proxy::Nginx(nginx), addr)
            }
            "Caddyfile" => {
                let caddy = Caddy::start(&ports(&seed, &map("{{port}}"))).await.unwrap();
                let addr = caddy.addr();
                (Proxy::Caddy(caddy), addr)
            }
            other => panic!("no proxy runs {other}"),
        };
        Stack {
            app,
            authchain,
            proxy,
            addr,
        }
    }

    /// What the proxy and authchain wrote, for failure messages.
    pub(crate) fn output(&self) -> String {
        format!(
            "{}\n--- authchain ---\n{}",
            self.proxy.output(),
            self.authchain.log()
        )
    }

    /// `GET path` through the proxy.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(client::request(http::Method::GET, path, headers, bytes::Bytes::new()).unwrap())
            .await
    }

    /// A request through the proxy.
    pub(crate) async fn send(&self, request: http::Request<bytes::Bytes>) -> Reply {
        client::send(self.addr, request)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.output()))
    }

    /// What the app saw of an allowed request.
    #[track_caller]
    pub(crate) fn upstream(&self, reply: &Reply) -> EchoedRequest {
        reply
            .echoed()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.output()))
    }

    /// The passthrough seeds' allowed request: `authorization: authorize
    /// me` with a forged `x-user-id` reaches the app with the remote
    /// server's `x-user-id: alice` and the path as sent.
    pub(crate) async fn assert_passthrough_allows(&self) {
        let reply = self
            .get(
                "/api?x=1",
                &[("authorization", "authorize me"), ("x-user-id", "admin")],
            )
            .await;
        let seen = self.upstream(&reply);
        assert_eq!(seen.header_all("x-user-id"), ["alice"]);
        assert_eq!(seen.path, "/api?x=1");
    }

    /// Asserts a deny with `status` that never reached the app.
    pub(crate) async fn assert_denied(&self, path: &str, headers: &[(&str, &str)], status: u16) {
        let hits = self.app.hits();
        let reply = self.get(path, headers).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "GET {path} {headers:?}: {}\n{}",
            reply.text(),
            self.output()
        );
        assert_eq!(self.app.hits(), hits, "a denied request reached the app");
    }
}

#[test]
fn ports_change_only_whole_numbers() {
    let map = [(9001, "X".to_owned()), (8080, "0".to_owned())];
    assert_eq!(
        ports(
            "127.0.0.1:9001 port_value: 8080 }\n:8080 {\nhttp://127.0.0.1:9001/a",
            &map
        ),
        "127.0.0.1:X port_value: 0 }\n:0 {\nhttp://127.0.0.1:X/a"
    );
    for same in [
        "19001", "90010", "v9001", "9001a", "a-9001", "9001_", "1.9001", "é9001x",
    ] {
        assert_eq!(ports(same, &map), same);
    }
    assert_eq!(count("9001 9001 19001", 9001), 2);
}
