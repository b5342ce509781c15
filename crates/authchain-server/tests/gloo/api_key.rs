//! Gloo's API keys in Kubernetes Secrets, read from files beside the
//! AuthConfig and reloaded when they change, behind real Envoy.

use std::time::Duration;

use authchain_testkit::client;
use authchain_testkit::envoy::{Bootstrap, Envoy};
use authchain_testkit::{EchoServer, ScratchDir};

use crate::manifest_path;
use crate::support::{Authchain, LISTENERS};

/// The key of the guide's Secret (its `data.api-key`, decoded).
const GUIDE_KEY: &str = "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy";

/// An API key Secret for `user` with `key`, in `stringData`.
fn secret(user: &str, key: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{ name: {user}-apikey, namespace: gloo-system, labels: {{ team: apps }} }}
type: extauth.solo.io/apikey
stringData: {{ api-key: {key}, user-id: {user} }}
"
    )
}

#[tokio::test]
async fn keys_in_secrets_answer_and_a_changed_secret_file_reloads() {
    let upstream = EchoServer::start().await.unwrap();
    let files = ScratchDir::new("gloo-secrets").unwrap();
    let secrets = files
        .write("secrets.yaml", &secret("alice", "alice-key-0123456789"))
        .unwrap();
    let authconfig = files
        .write(
            "authconfig.yaml",
            "apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: { name: apps, namespace: gloo-system }
spec:
  configs:
  - apiKeyAuth:
      k8sSecretApikeyStorage:
        labelSelector: { team: apps }
      headersFromMetadataEntry:
        x-user-id: { name: user-id, required: true }
",
        )
        .unwrap();
    let mut authchain = Authchain::start(&format!(
        "{LISTENERS}authConfigFiles: [{}, {}, {}]\n",
        manifest_path("api-key-auth.yaml").display(),
        authconfig.display(),
        secrets.display(),
    ))
    .await;
    let envoy = Envoy::start(
        &Bootstrap::new(upstream.addr())
            .route("/guide", Some("gloo-system.apikey-auth"))
            .route("/", Some("gloo-system.apps"))
            .grpc(authchain.grpc)
            .yaml(),
    )
    .await
    .unwrap();
    let ingress = envoy.listener("ingress").unwrap();
    let get = |path: &'static str, key: &'static str| async move {
        let headers: Vec<(&str, &str)> = if key.is_empty() {
            vec![]
        } else {
            vec![("api-key", key)]
        };
        client::get(ingress, path, &headers).await.unwrap()
    };

    // The guide's manifest, as its curls go.
    assert_eq!(
        get("/guide", GUIDE_KEY).await.status,
        200,
        "{}",
        authchain.log()
    );
    assert_eq!(get("/guide", "").await.status, 401);
    assert_eq!(get("/guide", "alice-key-0123456789").await.status, 401);

    let reply = get("/", "alice-key-0123456789").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), ["alice"]);

    // The Secret changes: alice's key is revoked, bob's takes its place.
    std::fs::write(&secrets, secret("bob", "bob-key-0123456789")).unwrap();
    authchain.wait_for_generation(2).await;
    assert_eq!(get("/", "alice-key-0123456789").await.status, 401);
    let reply = get("/", "bob-key-0123456789").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), ["bob"]);

    // A Secret the AuthConfig needs is gone: the reload is refused, bob's
    // key keeps working, and the log says what is missing.
    std::fs::write(&secrets, "").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !authchain.log().contains("no API keys") {
        assert!(std::time::Instant::now() < deadline, "{}", authchain.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get("/", "bob-key-0123456789").await.status, 200);
}
