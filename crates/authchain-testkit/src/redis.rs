//! Redis (Debian's `redis-server`) as a child process on a 127.0.0.1 port
//! chosen at run time, without persistence; it can be stopped and started
//! again on the same port ("Redis down"). [`Redis::command`] speaks RESP
//! over TCP for the tests' own looks at it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{ChildPeer, Locator, PeerError, ScratchDir, free_port};

/// Where the redis-server binary comes from.
pub const LOCATOR: Locator = Locator {
    name: "redis-server",
    env_var: "AUTHCHAIN_REDIS",
    python: None,
    venv_bin: None,
    path_names: &["redis-server", "/usr/bin/redis-server"],
    install_hint: "it apt-installs redis-server",
};

/// How long Redis may take to come up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one [`Redis::command`] may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Integer(i64),
    /// `$3\r\nabc` (`None`: the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` (`None`: the null array).
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// A bulk or simple string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A running Redis. Dropping it kills the process.
#[derive(Debug)]
pub struct Redis {
    peer: Option<ChildPeer>,
    addr: SocketAddr,
    settings: Vec<String>,
}

impl Redis {
    /// Starts an empty Redis on a free port.
    pub async fn start() -> Result<Redis, PeerError> {
        Redis::start_with(&[]).await
    }

    /// Starts an empty Redis on a free port with more settings, as
    /// redis-server's arguments (`["--rename-command", "HELLO", ""]`).
    pub async fn start_with(settings: &[&str]) -> Result<Redis, PeerError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let settings = settings.iter().map(|s| s.to_string()).collect();
        let mut redis = Redis {
            peer: None,
            addr,
            settings,
        };
        redis.start_again().await?;
        Ok(redis)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Whether it runs (not [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        self.peer.is_some()
    }

    /// Kills it: its port refuses connections until
    /// [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Some(mut peer) = self.peer.take() {
            peer.kill();
        }
    }

    /// Starts it again on the same port, empty (after [`stop`](Self::stop);
    /// a running one is stopped first).
    pub async fn start_again(&mut self) -> Result<(), PeerError> {
        self.stop();
        let binary = LOCATOR.locate()?;
        let dir = ScratchDir::new("redis")?;
        let mut command = Command::new(binary);
        command
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--daemonize", "no", "--logfile", ""])
            .args(&self.settings);
        let mut peer = ChildPeer::spawn("redis-server", command, dir)?;
        let addr = self.addr;
        peer.wait_until(STARTUP_TIMEOUT, || async move {
            let pong = exchange(addr, &["PING"]).await.ok()?;
            (pong == Resp::Simple("PONG".into())).then_some(())
        })
        .await?;
        self.peer = Some(peer);
        Ok(())
    }

    /// Sends one command and reads its reply (a Redis error reply is
    /// `Ok(Resp::Error)`).
    pub async fn command(&self, args: &[&str]) -> Result<Resp, PeerError> {
        exchange(self.addr, args).await.map_err(|e| {
            let what = format!("redis {args:?} to {}: {e}", self.addr);
            match &self.peer {
                Some(peer) => peer.failure(what),
                None => PeerError::new(format!("{what} (it is stopped)")),
            }
        })
    }

    /// `KEYS pattern`, sorted.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, PeerError> {
        let reply = self.command(&["KEYS", pattern]).await?;
        let Resp::Array(Some(items)) = reply else {
            return Err(PeerError::new(format!("KEYS {pattern}: {reply:?}")));
        };
        let mut keys: Vec<String> = items.iter().filter_map(Resp::text).collect();
        keys.sort();
        Ok(keys)
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, PeerError> {
        match self.command(&["GET", key]).await? {
            Resp::Bulk(None) => Ok(None),
            Resp::Bulk(Some(value)) => Ok(Some(String::from_utf8_lossy(&value).into_owned())),
            other => Err(PeerError::new(format!("GET {key}: {other:?}"))),
        }
    }

    /// `SET key value`.
    pub async fn set(&self, key: &str, value: &str) -> Result<(), PeerError> {
        self.expect_ok(&["SET", key, value]).await
    }

    /// `TTL key`: seconds left, -1 without expiry, -2 when missing.
    pub async fn ttl(&self, key: &str) -> Result<i64, PeerError> {
        match self.command(&["TTL", key]).await? {
            Resp::Integer(n) => Ok(n),
            other => Err(PeerError::new(format!("TTL {key}: {other:?}"))),
        }
    }

    /// How many times `command` (`"get"`) ran since Redis started, from
    /// `INFO commandstats`.
    pub async fn calls(&self, command: &str) -> Result<u64, PeerError> {
        let info = self.command(&["INFO", "commandstats"]).await?;
        let info = info
            .text()
            .ok_or_else(|| PeerError::new(format!("INFO commandstats: {info:?}")))?;
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// A field of `INFO` (`tracking_total_keys`), if Redis gives it.
    pub async fn info(&self, field: &str) -> Result<Option<String>, PeerError> {
        let info = self.command(&["INFO"]).await?;
        let info = info
            .text()
            .ok_or_else(|| PeerError::new(format!("INFO: {info:?}")))?;
        let prefix = format!("{field}:");
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.trim().to_owned()))
    }

    /// `FLUSHALL`.
    pub async fn flushall(&self) -> Result<(), PeerError> {
        self.expect_ok(&["FLUSHALL"]).await
    }

    /// What it wrote so far (empty once stopped).
    pub fn output(&self) -> String {
        self.peer
            .as_ref()
            .map(ChildPeer::output)
            .unwrap_or_default()
    }

    async fn expect_ok(&self, args: &[&str]) -> Result<(), PeerError> {
        match self.command(args).await? {
            Resp::Simple(ok) if ok == "OK" => Ok(()),
            other => Err(PeerError::new(format!("{args:?}: {other:?}"))),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn exchange(addr: SocketAddr, args: &[&str]) -> Result<Resp, String> {
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        read_reply(&mut BufReader::new(stream)).await
    };
    tokio::time::timeout(COMMAND_TIMEOUT, talk)
        .await
        .map_err(|_| format!("no reply within {COMMAND_TIMEOUT:?}"))?
}

async fn read_reply<R>(reader: &mut R) -> Result<Resp, String>
where
    R: AsyncBufReadExt + Unpin + Send,
{
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| format!("the connection closed mid-reply: {line:?}"))?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| format!("bad RESP line {line:?}"))
    };
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Integer(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Resp::Bulk(None),
            Ok(len) => {
                let mut data = vec![0; len + 2];
                reader
                    .read_exact(&mut data)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                data.truncate(len);
                Resp::Bulk(Some(data))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Resp::Array(None),
            Ok(len) => {
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(Box::pin(read_reply(reader)).await?);
                }
                Resp::Array(Some(items))
            }
        },
        _ => return Err(format!("bad RESP line {line:?}")),
    })
}
