//! The decision log of the binary: a JSON line per decision in the file
//! the config names, from real Envoy over gRPC and from HTTP checks, with
//! no secret a client sent.

use std::time::Duration;

use authchain_testkit::envoy::{Bootstrap, Envoy};
use authchain_testkit::{EchoServer, client};
use serde_json::Value;

use crate::support::{Authchain, LISTENERS};

const CONFIG: &str = "
decisionLog: { path: '{{dir}}/decisions.jsonl', sample: 1, headers: [x-request-id] }
authConfigs:
- name: site
  configs:
  - apiKeyAuth:
      headerName: api-key
      keys: [{ key: k3y-s3cret-0123456789, metadata: { user-id: alice } }]
      userIdMetadata: user-id
";

/// Every place a client can put a secret, but the key: (name, value).
const SECRETS: [(&str, &str); 4] = [
    ("authorization", "Bearer s3cret-bearer"),
    ("cookie", "session=s3cret-cookie"),
    ("x-secret", "s3cret-header"),
    ("x-request-id", "req-42"),
];

/// The records written so far, once there are `n` (or after 10 s).
async fn records(server: &Authchain, n: usize) -> Vec<Value> {
    let path = server.peer.dir().join("decisions.jsonl");
    for _ in 0..500 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= n {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} records in {}", path.display());
}

#[tokio::test]
async fn decisions_are_logged_without_a_secret_from_envoy_and_http_checks() {
    let upstream = EchoServer::start().await.unwrap();
    let server = Authchain::start(&format!("{LISTENERS}{CONFIG}")).await;
    let bootstrap = Bootstrap::new(upstream.addr())
        .route("/", Some("site"))
        .grpc(server.grpc);
    let envoy = Envoy::start(&bootstrap.yaml()).await.unwrap();
    let ingress = envoy.listener("ingress").unwrap();

    let mut headers: Vec<(&str, &str)> = SECRETS.to_vec();
    headers.push(("api-key", "k3y-s3cret-0123456789"));
    let path = "/%70ublic?token=s3cret-query";
    let reply = client::get(ingress, path, &headers).await.unwrap();
    assert_eq!(reply.status, 200);
    headers.pop();
    headers.push(("api-key", "wr0ng-s3cret"));
    let reply = client::get(ingress, path, &headers).await.unwrap();
    assert_eq!(reply.status, 401);
    let reply = server
        .http_check("site", "/public", &headers)
        .await
        .unwrap();
    assert_eq!(reply.status, 401);

    let logged = records(&server, 3).await;
    assert_eq!(logged.len(), 3, "{logged:#?}");
    let transports: Vec<&str> = logged
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["grpc", "grpc", "http"]);
    let allowed = &logged[0];
    assert_eq!(allowed["config"], "site");
    assert_eq!(allowed["input"]["path"], "/public");
    assert_eq!(allowed["input"]["method"], "GET");
    assert_eq!(
        allowed["input"]["headers"],
        serde_json::json!({ "x-request-id": "req-42" })
    );
    assert_eq!(allowed["user_id"], "alice");
    assert_eq!(allowed["result"]["allowed"], true);
    assert_eq!(logged[1]["result"]["status"], 401);
    assert_eq!(logged[1]["steps"][0]["result"], "deny");

    let text = std::fs::read_to_string(server.peer.dir().join("decisions.jsonl")).unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    // Nor in the server's own log.
    assert!(!server.log().contains("s3cret"), "{}", server.log());
}

/// A log rotation (logrotate's default: move the file, then signal): the
/// records before the signal stay in the moved file, those after go to
/// a new file at the configured path. SIGUSR1 reopens the log alone, as
/// nginx's does: a daily rotation rebuilds no step (nor empties the
/// decision caches); SIGHUP reloads too.
#[tokio::test]
async fn sigusr1_and_sighup_reopen_the_log_after_a_rotation() {
    for signal in ["USR1", "HUP"] {
        let mut server = Authchain::start(&format!("{LISTENERS}{CONFIG}")).await;
        let key = [("api-key", "k3y-s3cret-0123456789")];
        let check = async |server: &Authchain| {
            let reply = server.http_check("site", "/", &key).await.unwrap();
            assert_eq!(reply.status, 200);
        };
        check(&server).await;
        records(&server, 1).await;
        let dir = server.peer.dir().to_owned();
        std::fs::rename(dir.join("decisions.jsonl"), dir.join("decisions.jsonl.1")).unwrap();
        check(&server).await;
        server.signal(signal);
        let log = dir.join("stderr.log");
        server
            .peer
            .wait_until(Duration::from_secs(10), || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move { text.contains("decision log reopened").then_some(()) }
            })
            .await
            .unwrap();
        check(&server).await;
        check(&server).await;

        let logged = records(&server, 2).await;
        assert_eq!(logged.len(), 2, "{signal}: {logged:#?}");
        let rotated = std::fs::read_to_string(dir.join("decisions.jsonl.1")).unwrap();
        assert_eq!(rotated.lines().count(), 2, "{signal}: {rotated}");
        let reloaded = server.log().contains("reloading config");
        assert_eq!(reloaded, signal == "HUP", "{signal}: {}", server.log());
    }
}

/// A SIGHUP while the server starts (here while it waits to open its
/// decision log, a FIFO whose reader, a log shipper, is not up yet) is a
/// reload once it serves, as after it, rather than the end of the
/// process.
#[tokio::test]
async fn a_sighup_while_starting_reloads_once_serving() {
    let dir = authchain_testkit::ScratchDir::new("fifo").unwrap();
    let fifo = dir.path().join("decisions.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let config = CONFIG.replace("{{dir}}/decisions.jsonl", &fifo.display().to_string());
    let mut server = Authchain::spawn(&format!("{LISTENERS}{config}"), &[], &[]);
    let status = format!("/proc/{}/status", server.peer.pid());
    let catches_hangup = || {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let mask = text
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
        mask.is_some_and(|m| m & 1 != 0)
    };
    server
        .peer
        .wait_until(Duration::from_secs(10), || async {
            catches_hangup().then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("SIGHUP not caught while starting: {e}"));
    assert!(
        !server.log().contains("authchain serving"),
        "{}",
        server.log()
    );
    server.signal("HUP");
    // The reader: opened for writing too, so that the server's reopen
    // never sees the FIFO without one.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    server.wait_ready().await.unwrap();
    server.wait_for_generation(2).await;
    let log = server.log();
    assert!(log.contains("SIGHUP"), "{log}");
    assert!(log.contains("decision log reopened"), "{log}");
}

#[test]
fn a_share_outside_zero_to_one_is_a_config_error() {
    let dir = authchain_testkit::ScratchDir::new("decision-log").unwrap();
    let config = dir
        .write(
            "authchain.yaml",
            "decisionLog: { path: /x.jsonl, sample: 2 }\nauthConfigs:\n- name: a\n  configs: [{ rules: { rules: [{ action: allow }] } }]\n",
        )
        .unwrap();
    let (ok, _, err) =
        crate::support::run_check(&[std::ffi::OsStr::new("--config"), config.as_os_str()]);
    assert!(!ok);
    assert!(err.contains("decisionLog.sample"), "{err}");
}
