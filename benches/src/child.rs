//! Servers the harnesses run as child processes: the harness binary
//! itself, started again with a flag and a port. Each then has a
//! multi-thread runtime of its own, as a real server binary has, and its
//! CPU time is read apart from the harness's.

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use authchain_testkit::{ChildPeer, ScratchDir, free_port};
use tokio::net::TcpListener;

/// A server running in a child process (this binary, started with a
/// flag and a port), killed on drop.
#[derive(Debug)]
pub struct ChildServer {
    peer: ChildPeer,
    addr: SocketAddr,
}

impl ChildServer {
    /// Starts this binary with `flag PORT` (a free loopback port) and
    /// waits until the port takes connections.
    pub async fn start(flag: &str) -> Result<ChildServer, Box<dyn Error>> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(std::env::current_exe()?);
        command.arg(flag).arg(port.to_string());
        let name = flag.trim_start_matches('-');
        let mut peer = ChildPeer::spawn(name, command, ScratchDir::new(name)?)?;
        peer.wait_for_port(addr, Duration::from_secs(20)).await?;
        Ok(ChildServer { peer, addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.peer.pid()
    }
}

/// In the child: when this process was started as `FLAG PORT` with a flag
/// of `flags`, that flag and the port.
pub fn child_args<'a>(flags: &[&'a str]) -> Result<Option<(&'a str, u16)>, Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let Some(flag) = args.next().and_then(|a| flags.iter().find(|f| **f == a)) else {
        return Ok(None);
    };
    let port = args
        .next()
        .ok_or_else(|| format!("no port after {flag}"))?
        .parse()?;
    Ok(Some((flag, port)))
}

/// In the child: binds `127.0.0.1:port` and runs `serve` on it on a
/// multi-thread runtime, until the process is killed.
pub fn serve_child<F, Fut, E>(port: u16, serve: F) -> Result<(), Box<dyn Error>>
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn Error>>,
{
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            serve(listener).await.map_err(Into::into)
        })
}
