//! Gloo AuthConfigs as Gloo users write them, run by the real `authchain`
//! binary behind the real proxy. `manifests/` holds the manifests, each
//! retyped from Gloo's API and guides; the tests read them unchanged.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../server/support.rs"]
mod support;

mod api_key;
mod basic;
mod check;
mod dynamic_metadata;
mod hmac;
mod jwt;
mod ldap;
mod opa;
mod passthrough;
mod user_id_header;

/// What the tests run: the echo app, the `authchain` binary serving a
/// config (after the listener block), and Envoy in front, whose routes
/// name AuthConfigs over gRPC ext_authz; each stopped on drop.
pub(crate) struct Stack {
    pub(crate) authchain: support::Authchain,
    pub(crate) envoy: authchain_testkit::envoy::Envoy,
    /// Envoy's listener.
    pub(crate) ingress: std::net::SocketAddr,
    _upstream: authchain_testkit::EchoServer,
}

impl Stack {
    /// Serves `config`; `routes` are (path prefix, AuthConfig), the first
    /// that matches wins; `envoy` adds to Envoy's bootstrap.
    pub(crate) async fn start(
        config: &str,
        routes: &[(&str, &str)],
        envoy: impl FnOnce(
            authchain_testkit::envoy::Bootstrap<'static>,
        ) -> authchain_testkit::envoy::Bootstrap<'static>,
    ) -> Stack {
        let upstream = authchain_testkit::EchoServer::start().await.unwrap();
        let authchain = support::Authchain::start(&format!("{}{config}", support::LISTENERS)).await;
        let mut bootstrap = authchain_testkit::envoy::Bootstrap::new(upstream.addr());
        for (prefix, config) in routes {
            bootstrap = bootstrap.route(prefix, Some(config));
        }
        let yaml = envoy(bootstrap.grpc(authchain.grpc)).yaml();
        let envoy = authchain_testkit::envoy::Envoy::start(&yaml).await.unwrap();
        let ingress = envoy.listener("ingress").unwrap();
        Stack {
            authchain,
            envoy,
            ingress,
            _upstream: upstream,
        }
    }

    /// Serves `config`, with a route `/{m}/` to AuthConfig
    /// `gloo-system.{m}` for each manifest name `m`.
    pub(crate) async fn for_manifests(config: &str, manifests: &[&str]) -> Stack {
        let routes: Vec<(String, String)> = manifests
            .iter()
            .map(|m| (format!("/{m}/"), format!("gloo-system.{m}")))
            .collect();
        let routes: Vec<(&str, &str)> = routes
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        Stack::start(config, &routes, |b| b).await
    }

    /// `method path` with `headers`, through Envoy.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> authchain_testkit::client::Reply {
        let request = authchain_testkit::client::request(method, path, headers, "").unwrap();
        authchain_testkit::client::send(self.ingress, request)
            .await
            .unwrap()
    }

    /// `GET path` with `headers`, through Envoy.
    pub(crate) async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> authchain_testkit::client::Reply {
        self.send(http::Method::GET, path, headers).await
    }
}

/// The `authConfigFiles` line naming these manifests of `manifests/`.
pub(crate) fn config_files(manifests: &[&str]) -> String {
    let paths: Vec<String> = manifests
        .iter()
        .map(|m| manifest_path(m).display().to_string())
        .collect();
    format!("authConfigFiles: [{}]\n", paths.join(", "))
}

/// Where a manifest of `manifests/` is.
pub(crate) fn manifest_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/gloo/manifests")
        .join(name)
}
