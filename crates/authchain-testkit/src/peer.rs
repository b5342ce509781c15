//! A peer as a child process.

use std::fs;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::PeerError;

/// A free port on 127.0.0.1, found by binding it and letting go.
///
/// Another process may take it before the caller binds it; prefer binding
/// `127.0.0.1:0` yourself and handing the socket over, or letting the peer
/// bind port 0 and reading the port back (as [`crate::envoy::Envoy`] does).
/// The ports come from below Linux's ephemeral range (32768 and up),
/// where no outgoing connection takes its local port: the tests make
/// thousands, and one that took a port between this and the peer's bind
/// made the peer fail to start. Each call in a process gets another.
pub fn free_port() -> Result<u16, PeerError> {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        // A start of this process's own: parallel test binaries spread out.
        use std::hash::{BuildHasher, Hasher};
        let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
        seed.write_u32(std::process::id());
        let start = (seed.finish() % u64::from(COUNT)) as u32;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + offset).unwrap_or(0);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers
/// (a peer that hangs), until the runtime it was started on ends.
pub async fn silent_server() -> Result<SocketAddr, PeerError> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok(addr)
}

/// A directory of its own under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Makes a new empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Result<Self, PeerError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "authchain-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)
            .map_err(|e| PeerError::new(format!("cannot create {}: {e}", path.display())))?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf, PeerError> {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| PeerError::new(format!("cannot create {}: {e}", parent.display())))?;
        }
        fs::write(&path, contents)
            .map_err(|e| PeerError::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A running peer: a child process with its scratch directory and its
/// captured output. Dropping it kills the process and removes the
/// directory.
#[derive(Debug)]
pub struct ChildPeer {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    // Dropped after the child is killed (fields drop in order, after Drop).
    dir: ScratchDir,
}

impl ChildPeer {
    /// Starts `command` with its stdout and stderr written to files in
    /// `dir` (no pipe that could fill up and stall the peer). `name` names
    /// the peer in messages.
    pub fn spawn(name: &str, mut command: Command, dir: ScratchDir) -> Result<Self, PeerError> {
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let out_file = fs::File::create(&stdout)?;
        let err_file = fs::File::create(&stderr)?;
        command
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(err_file);
        let child = command
            .spawn()
            .map_err(|e| PeerError::new(format!("{name}: cannot start {command:?}: {e}")))?;
        Ok(ChildPeer {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            dir,
        })
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peer's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the peer wrote to stderr and stdout so far (the last 8 KiB of
    /// each).
    pub fn output(&self) -> String {
        let tail = |path: &Path| {
            let text = fs::read(path).unwrap_or_default();
            let from = text.len().saturating_sub(8 * 1024);
            String::from_utf8_lossy(&text[from..]).into_owned()
        };
        format!(
            "--- {name} stderr ---\n{}\n--- {name} stdout ---\n{}",
            tail(&self.stderr),
            tail(&self.stdout),
            name = self.name
        )
    }

    /// An error about this peer, with its captured output.
    pub fn failure(&self, what: impl std::fmt::Display) -> PeerError {
        PeerError::new(format!("{}: {what}\n{}", self.name, self.output()))
    }

    /// Polls `probe` every 20 ms until it gives `Some`, the process exits,
    /// or `timeout` passes; the last two are errors with the peer's output.
    pub async fn wait_until<T, F, Fut>(
        &mut self,
        timeout: Duration,
        mut probe: F,
    ) -> Result<T, PeerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(self.failure(format!("exited early ({status})")));
            }
            if let Some(value) = probe().await {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(self.failure(format!("not ready after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a TCP connection to `addr` succeeds.
    pub async fn wait_for_port(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        self.wait_until(timeout, || async move {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_that_exits_fails_with_its_output() {
        let dir = ScratchDir::new("peer-test").unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo boom >&2; exit 3");
        let mut peer = ChildPeer::spawn("sh", cmd, dir).unwrap();
        let e = peer
            .wait_until(Duration::from_secs(5), || async { None::<()> })
            .await
            .unwrap_err();
        assert!(e.message().contains("exited early"), "{e}");
        assert!(e.message().contains("boom"), "{e}");
    }

    #[tokio::test]
    async fn drop_kills_the_process_and_removes_its_directory() {
        let dir = ScratchDir::new("peer-test").unwrap();
        let path = dir.path().to_path_buf();
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let peer = ChildPeer::spawn("sleep", cmd, dir).unwrap();
        let pid = peer.pid();
        drop(peer);
        assert!(!path.exists());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                // A zombie is gone once waited for; the kill above waited.
                fs::read_to_string(format!("/proc/{pid}/status")).is_err()
            }
        );
    }

    #[test]
    fn free_ports_are_loopback_ports() {
        assert_ne!(free_port().unwrap(), 0);
        // Below the ephemeral range, and another each time.
        let ports: Vec<u16> = (0..64).map(|_| free_port().unwrap()).collect();
        assert!(
            ports.iter().all(|&p| (20_000..32_000).contains(&p)),
            "{ports:?}"
        );
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
