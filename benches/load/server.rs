//! The `authchain` binary as a child process, for the `grpc` and `memory`
//! groups.

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use authchain_testkit::{ChildPeer, ScratchDir, client, free_port, render, workspace_root};

/// The server settings every config here starts with.
const LISTENERS: &str = "\
grpc: { address: '127.0.0.1:{{grpc_port}}' }
admin: { address: '127.0.0.1:{{admin_port}}' }
defaultConfig: bench
watch: false
log: { format: text, level: info }
";

/// The decision-cache block of the AuthConfig above it: keyed on `header`
/// and what `rules` reads (the method, host and path), and trusted for the
/// rest (`opaAuth` does not declare what it reads), for `entries` keys, an
/// hour each.
pub(crate) fn cache(header: &str, entries: u32) -> String {
    format!(
        "  cache:\n    key: [{{ header: {header} }}, method, host, path]\n    ttl: 1h\n    \
         maxEntries: {entries}\n    trustKey: true\n"
    )
}

/// The `authchain` binary: `$AUTHCHAIN_BIN`, else the one beside this
/// harness (both built in one target directory).
pub(crate) fn binary() -> Result<PathBuf, Box<dyn Error>> {
    let path = match std::env::var_os("AUTHCHAIN_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?.with_file_name("authchain"),
    };
    if path.is_file() {
        return Ok(path);
    }
    Err(format!(
        "the authchain server binary is not at {}.\n\
         Build it first, with the same CARGO_TARGET_DIR as this harness:\n  \
         cargo build --release -p authchain-server\n\
         or point AUTHCHAIN_BIN at it.",
        path.display()
    )
    .into())
}

/// The newest modification time of the sources under `dir`, to tell a
/// stale binary.
fn newest_source(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let name = entry.file_name();
            if name != "tests" && !name.to_string_lossy().starts_with('.') {
                newest_source(&path, newest);
            }
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "toml" || e == "yaml" || e == "lock")
            && let Ok(modified) = meta.modified()
            && newest.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            *newest = Some((modified, path));
        }
    }
}

/// Warns when a source file of the workspace's crates (their tests
/// aside), or its `Cargo.lock`, is newer than `binary`.
pub(crate) fn warn_if_stale(binary: &Path) {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let root = workspace_root();
    let mut newest = None;
    newest_source(&root.join("crates"), &mut newest);
    let lock = root.join("Cargo.lock");
    if let Ok(modified) = lock.metadata().and_then(|m| m.modified())
        && newest.as_ref().is_none_or(|(t, _)| modified > *t)
    {
        newest = Some((modified, lock));
    }
    if let Some((modified, path)) = newest
        && modified > built
    {
        eprintln!(
            "warning: {} is newer than {}; rebuild with `cargo build --release -p authchain-server`",
            path.display(),
            binary.display()
        );
    }
}

/// A running `authchain serve`, killed on drop.
#[derive(Debug)]
pub(crate) struct Authchain {
    peer: ChildPeer,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl Authchain {
    /// Serves [`LISTENERS`] + `auth_configs` (`{{key}}` filled in with
    /// the grpc group's API key) and waits until `/readyz` answers 200.
    pub(crate) async fn start(
        binary: &Path,
        auth_configs: &str,
    ) -> Result<Authchain, Box<dyn Error>> {
        let dir = ScratchDir::new("authchain")?;
        let (grpc_port, admin_port) = (free_port()?, free_port()?);
        let text = render(
            &format!("{LISTENERS}{auth_configs}"),
            &[
                ("grpc_port", grpc_port.to_string()),
                ("admin_port", admin_port.to_string()),
                ("key", crate::grpc::KEY.to_owned()),
            ],
        )?;
        let config = dir.write("authchain.yaml", &text)?;
        let mut command = Command::new(binary);
        command.arg("serve").arg("--config").arg(&config);
        let mut peer = ChildPeer::spawn("authchain", command, dir)?;
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        peer.wait_until(Duration::from_secs(20), || async move {
            let reply = client::get(admin, "/readyz", &[]).await.ok()?;
            (reply.status == 200).then_some(())
        })
        .await?;
        Ok(Authchain {
            peer,
            grpc: ([127, 0, 0, 1], grpc_port).into(),
            admin,
        })
    }

    /// What it wrote (the last 8 KiB of each stream).
    pub(crate) fn output(&self) -> String {
        self.peer.output()
    }

    /// Its gRPC listener.
    pub(crate) fn grpc(&self) -> SocketAddr {
        self.grpc
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.peer.pid()
    }

    /// `authchain_cache_lookups_total{config="bench",result=...}` as
    /// (hits, misses).
    pub(crate) async fn cache_lookups(&self) -> Result<(u64, u64), Box<dyn Error>> {
        let reply = client::get(self.admin, "/metrics", &[]).await?;
        if reply.status != 200 {
            return Err(self
                .peer
                .failure(format!("/metrics answered {}", reply.status))
                .into());
        }
        let text = reply.text();
        let count = |result: &str| -> u64 {
            let labels = [
                "config=\"bench\"".to_owned(),
                format!("result=\"{result}\""),
            ];
            text.lines()
                .filter(|line| {
                    line.starts_with("authchain_cache_lookups_total{")
                        && labels.iter().all(|l| line.contains(l.as_str()))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Ok((count("hit"), count("miss")))
    }

    /// (VmRSS, VmHWM) in bytes.
    pub(crate) fn memory(&self) -> Result<(u64, u64), Box<dyn Error>> {
        let pid = self.peer.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kb| kb * 1024)
                .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}
