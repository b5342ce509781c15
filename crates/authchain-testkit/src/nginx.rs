//! nginx as a child process (Debian's `nginx-light`, which has
//! `auth_request`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::{ChildPeer, Locator, PeerError, ScratchDir, free_port, render};

/// Where the nginx binary comes from.
pub const LOCATOR: Locator = Locator {
    name: "nginx",
    env_var: "AUTHCHAIN_NGINX",
    python: None,
    venv_bin: None,
    path_names: &["nginx", "/usr/sbin/nginx"],
    install_hint: "it apt-installs nginx-light",
};

/// How long nginx may take to come up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx. Dropping it kills the process.
#[derive(Debug)]
pub struct Nginx {
    peer: ChildPeer,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx with `server` as the body of its `http {}` block,
    /// after `{{port}}` in it is replaced with a free loopback port (write
    /// `listen 127.0.0.1:{{port}};`). Temp paths, the pid file and logs go
    /// to a scratch directory; errors go to stderr. nginx runs as one
    /// process (`master_process off`): killing a master would leave its
    /// workers serving the port.
    pub async fn start(server: &str) -> Result<Nginx, PeerError> {
        Self::start_at(server, free_port()?).await
    }

    /// [`start`](Self::start) on `port`, for a config that must know its
    /// own address before nginx runs (an app URL).
    pub async fn start_at(server: &str, port: u16) -> Result<Nginx, PeerError> {
        let binary = LOCATOR.locate()?;
        let dir = ScratchDir::new("nginx")?;
        let server = render(server, &[("port", port.to_string())])?;
        let prefix = dir.path().display().to_string();
        let config = format!(
            "master_process off;\n\
             worker_processes 1;\n\
             user root;\n\
             pid {prefix}/nginx.pid;\n\
             error_log stderr warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log off;\n\
             client_body_temp_path {prefix}/body;\n\
             proxy_temp_path {prefix}/proxy;\n\
             fastcgi_temp_path {prefix}/fastcgi;\n\
             uwsgi_temp_path {prefix}/uwsgi;\n\
             scgi_temp_path {prefix}/scgi;\n\
             {server}\n\
             }}\n"
        );
        let config_path = dir.write("nginx.conf", &config)?;
        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(format!("{prefix}/"))
            .arg("-c")
            .arg(&config_path)
            .args(["-e", "stderr", "-g", "daemon off;"]);
        let mut peer = ChildPeer::spawn("nginx", command, dir)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        peer.wait_for_port(addr, STARTUP_TIMEOUT).await?;
        Ok(Nginx { peer, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.peer.pid()
    }

    /// What nginx wrote so far.
    pub fn output(&self) -> String {
        self.peer.output()
    }
}
