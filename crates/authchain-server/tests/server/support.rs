//! Starting the `authchain` binary on ports chosen at run time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use authchain_core::AuthorizationRequest;
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use authchain_testkit::{ChildPeer, ScratchDir, client, free_port, render};
use serde_json::Map;

/// The binary under test.
pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_authchain")
}

/// `authchain check ARGS...`: whether it passed, its stdout and stderr.
pub(crate) fn run_check<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The listener block every test config starts with.
pub(crate) const LISTENERS: &str = "\
grpc: { address: '127.0.0.1:{{grpc_port}}' }
http: { address: '127.0.0.1:{{http_port}}' }
admin: { address: '127.0.0.1:{{admin_port}}' }
";

/// A running `authchain serve`, killed on drop.
pub(crate) struct Authchain {
    pub(crate) peer: ChildPeer,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) config: PathBuf,
    vars: Vec<(&'static str, String)>,
}

impl Authchain {
    /// Writes `template` ({{grpc_port}}, {{http_port}}, {{admin_port}} and
    /// {{dir}} filled in) as `authchain.yaml` and serves it, waiting until
    /// `/readyz` answers 200.
    pub(crate) async fn start(template: &str) -> Authchain {
        Self::start_with(template, &[]).await
    }

    pub(crate) async fn start_with(template: &str, extra: &[(&'static str, String)]) -> Authchain {
        Self::start_with_files(template, extra, &[]).await
    }

    /// [`start_with`](Self::start_with), with `files` (name, text) written
    /// beside `authchain.yaml` first.
    pub(crate) async fn start_with_files(
        template: &str,
        extra: &[(&'static str, String)],
        files: &[(&str, String)],
    ) -> Authchain {
        // A port chosen free can be taken by another test's process before
        // the binary binds it: then the binary exits, and it starts again
        // on other ports.
        for attempt in 1.. {
            let mut server = Self::spawn(template, extra, files);
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(e) if attempt < 3 && e.to_string().contains("in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    /// Starts the binary as [`start_with_files`](Self::start_with_files)
    /// does, without waiting for it to serve.
    pub(crate) fn spawn(
        template: &str,
        extra: &[(&'static str, String)],
        files: &[(&str, String)],
    ) -> Authchain {
        let dir = ScratchDir::new("authchain-server").unwrap();
        let ports = [
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        ];
        let mut vars = vec![
            ("grpc_port", ports[0].to_string()),
            ("http_port", ports[1].to_string()),
            ("admin_port", ports[2].to_string()),
            ("dir", dir.path().display().to_string()),
        ];
        vars.extend(extra.iter().cloned());
        for (name, text) in files {
            dir.write(name, text).unwrap();
        }
        let config = dir
            .write("authchain.yaml", &render(template, &vars).unwrap())
            .unwrap();
        let mut command = Command::new(binary());
        command.arg("serve").arg("--config").arg(&config);
        let peer = ChildPeer::spawn("authchain", command, dir).unwrap();
        Authchain {
            peer,
            grpc: ([127, 0, 0, 1], ports[0]).into(),
            http: ([127, 0, 0, 1], ports[1]).into(),
            admin: ([127, 0, 0, 1], ports[2]).into(),
            config,
            vars,
        }
    }

    /// Waits (20 s at most) until `/readyz` answers 200.
    pub(crate) async fn wait_ready(&mut self) -> Result<(), authchain_testkit::PeerError> {
        let admin = self.admin;
        self.peer
            .wait_until(Duration::from_secs(20), || async move {
                let reply = client::get(admin, "/readyz", &[]).await.ok()?;
                (reply.status == 200).then_some(())
            })
            .await
    }

    /// Replaces the config file at once (write aside, then rename), as an
    /// editor or a ConfigMap update does.
    pub(crate) fn rewrite(&self, template: &str) {
        let text = render(template, &self.vars).unwrap();
        let aside = self.config.with_extension("yaml.new");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.config).unwrap();
    }

    /// Writes the config file in place, `piece` bytes at a time with
    /// `pause` between pieces, as a slow writer (`cat > file`, a copy
    /// over a network mount) does.
    pub(crate) async fn write_in_pieces(&self, template: &str, piece: usize, pause: Duration) {
        use std::io::Write;
        let text = render(template, &self.vars).unwrap();
        let mut file = std::fs::File::create(&self.config).unwrap();
        for chunk in text.as_bytes().chunks(piece) {
            file.write_all(chunk).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(pause).await;
        }
    }

    /// The admin's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        client::get(self.admin, "/metrics", &[])
            .await
            .unwrap()
            .text()
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// The generation serving, as `/readyz` says it.
    pub(crate) async fn generation(&self) -> u64 {
        serving(self.admin).await.unwrap_or(0)
    }

    /// Waits until generation `n` serves.
    pub(crate) async fn wait_for_generation(&mut self, n: u64) {
        let admin = self.admin;
        self.peer
            .wait_until(Duration::from_secs(10), || async move {
                (serving(admin).await? >= n).then_some(())
            })
            .await
            .unwrap();
    }

    /// Sends a signal (`HUP`, `TERM`) to the process.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.peer.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (10 s at most) for the process to end, and checks that it
    /// exited 0.
    pub(crate) async fn assert_exits_cleanly(&mut self) {
        let _ = self
            .peer
            .wait_until(Duration::from_secs(10), || async { None::<()> })
            .await;
        let status = self.peer.exited();
        assert!(
            status.is_some_and(|s| s.success()),
            "{status:?}: {}",
            self.log()
        );
    }

    /// What the process logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.peer.dir().join("stderr.log")).unwrap_or_default()
    }

    /// `/readyz`: 200 once serving, with a line per step that waits.
    pub(crate) async fn readyz(&self) -> client::Reply {
        client::get(self.admin, "/readyz", &[]).await.unwrap()
    }

    /// An HTTP check of `path` under AuthConfig `config`.
    pub(crate) async fn http_check(
        &self,
        config: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<client::Reply, authchain_testkit::PeerError> {
        client::get(self.http, &format!("/check:{config}{path}"), headers).await
    }

    /// A gRPC client of the ext_authz service.
    pub(crate) async fn grpc_client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }
}

/// A `CheckRequest` for `GET path` with these headers and `config_id`.
pub(crate) fn check_request(
    config: &str,
    path: &str,
    headers: &[(&'static str, &'static str)],
) -> authchain_grpc::envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let mut request = AuthorizationRequest::new(http::Method::GET, path).with_host("example.com");
    for (k, v) in headers {
        request.headers.append(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    request.context.insert("config_id".into(), config.into());
    authchain_grpc::convert::to_check_request(&request, &Map::new())
}

/// The HTTP status a `CheckResponse` tells Envoy to answer with (200 for
/// an allow).
pub(crate) fn grpc_status(
    response: &authchain_grpc::envoy_types::pb::envoy::service::auth::v3::CheckResponse,
) -> (i32, u16) {
    use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let code = response.status.as_ref().map_or(0, |s| s.code);
    let http = match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            denied.status.as_ref().map_or(403, |s| s.code as u16)
        }
        _ => 200,
    };
    (code, http)
}

/// The generation `/readyz` at `admin` says serves (`ready: generation N`).
async fn serving(admin: SocketAddr) -> Option<u64> {
    let text = client::get(admin, "/readyz", &[]).await.ok()?.text();
    // `ready: generation N`, then the steps that wait, a line each.
    text.lines().next()?.rsplit(' ').next()?.parse().ok()
}

pub(crate) fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}
