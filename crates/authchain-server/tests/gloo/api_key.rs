//! Gloo's API keys in Kubernetes Secrets, read from files beside the
//! AuthConfig and reloaded when they change, behind real Envoy.

use authchain_testkit::ScratchDir;

use crate::{Stack, manifest_path};

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

/// `GET path` with the API key `key` (none if empty).
async fn get(stack: &Stack, path: &str, key: &str) -> authchain_testkit::client::Reply {
    if key.is_empty() {
        stack.get(path, &[]).await
    } else {
        stack.get(path, &[("api-key", key)]).await
    }
}

#[tokio::test]
async fn keys_in_secrets_answer_and_a_changed_secret_file_reloads() {
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
    let mut stack = Stack::start(
        &format!(
            "authConfigFiles: [{}, {}, {}]\n",
            manifest_path("api-key-auth.yaml").display(),
            authconfig.display(),
            secrets.display(),
        ),
        &[
            ("/guide", "gloo-system.apikey-auth"),
            ("/", "gloo-system.apps"),
        ],
        |b| b,
    )
    .await;
    // The guide's manifest, as its curls go.
    assert_eq!(
        get(&stack, "/guide", GUIDE_KEY).await.status,
        200,
        "{}",
        stack.authchain.log()
    );
    let reply = get(&stack, "/guide", "").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header_values("www-authenticate"),
        ["API key is missing or invalid"]
    );
    assert_eq!(
        get(&stack, "/guide", "alice-key-0123456789").await.status,
        401
    );

    let reply = get(&stack, "/", "alice-key-0123456789").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), ["alice"]);

    // The Secret changes: alice's key is revoked, bob's takes its place.
    std::fs::write(&secrets, secret("bob", "bob-key-0123456789")).unwrap();
    stack.authchain.wait_for_generation(2).await;
    assert_eq!(get(&stack, "/", "alice-key-0123456789").await.status, 401);
    let reply = get(&stack, "/", "bob-key-0123456789").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echoed().unwrap().header_all("x-user-id"), ["bob"]);

    // The Secret is deleted: the reload goes through, and bob's key is
    // revoked with it (a selector that picks nothing refuses every key).
    std::fs::write(&secrets, "").unwrap();
    stack.authchain.wait_for_generation(3).await;
    assert_eq!(get(&stack, "/", "bob-key-0123456789").await.status, 401);
    assert!(!stack.authchain.log().contains("key-0123456789"));
}
