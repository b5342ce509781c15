//! passthrough-http: the seed "Http Passthrough Auth". Envoy → authchain
//! over gRPC → `passThroughAuth.http` → the independent HTTP auth server
//! of `auth-server.py`, run by Python as the README says.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use authchain_testkit::{ChildPeer, Locator, ScratchDir, free_port};

use crate::seed::{REMOTE, Stack, ports, read};

/// Python for the seed's auth server: the project's `.peers/venv` (which
/// `./scripts/install-peers.sh` makes), else `python3` on PATH.
const PYTHON: Locator = Locator {
    name: "python3",
    env_var: "AUTHCHAIN_PYTHON",
    python: None,
    venv_bin: Some("python3"),
    path_names: &["python3"],
    install_hint: "it makes .peers/venv with python3",
};

/// `auth-server.py` with its port replaced, running until dropped.
async fn auth_server() -> (ChildPeer, u16) {
    let python = PYTHON.locate().unwrap();
    let port = free_port().unwrap();
    let dir = ScratchDir::new("seed-auth-server").unwrap();
    let script = ports(
        &read("passthrough-http", "auth-server.py"),
        &[(REMOTE, port.to_string())],
    );
    let path = dir.write("auth-server.py", &script).unwrap();
    let mut command = Command::new(python);
    command.arg(path);
    let mut peer = ChildPeer::spawn("auth-server.py", command, dir).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    peer.wait_for_port(addr, Duration::from_secs(10))
        .await
        .unwrap();
    (peer, port)
}

#[tokio::test]
async fn passthrough_http_to_an_independent_server() {
    let (_server, port) = auth_server().await;
    let stack = Stack::start("passthrough-http", Some(port)).await;

    stack.assert_passthrough_allows().await;

    // Anything but `authorize me` is the server's 403.
    stack.assert_denied("/api", &[], 403).await;
    stack
        .assert_denied("/api", &[("authorization", "let me in")], 403)
        .await;
    stack
        .assert_denied("/api", &[("x-user-id", "alice")], 403)
        .await;
}
