//! The basic auth manifests of Gloo's guide, behind real Envoy, answered
//! as the guide's `curl`s are.

use authchain_testkit::EchoServer;
use authchain_testkit::client;
use authchain_testkit::envoy::{Bootstrap, Envoy};

use crate::manifest_path;
use crate::support::{Authchain, LISTENERS};

#[tokio::test]
async fn gloo_s_basic_auth_manifests_answer_as_its_guide_says() {
    let upstream = EchoServer::start().await.unwrap();
    let manifests = [
        "basic-auth",
        "basic-auth-extended-apr",
        "basic-auth-extended-sha1",
    ];
    let files: Vec<String> = manifests
        .iter()
        .map(|m| manifest_path(&format!("{m}.yaml")).display().to_string())
        .collect();
    let authchain = Authchain::start(&format!(
        "{LISTENERS}authConfigFiles: [{}]\n",
        files.join(", ")
    ))
    .await;
    let mut bootstrap = Bootstrap::new(upstream.addr());
    for m in manifests {
        bootstrap = bootstrap.route(&format!("/{m}/"), Some(&format!("gloo-system.{m}")));
    }
    let envoy = Envoy::start(&bootstrap.grpc(authchain.grpc).yaml())
        .await
        .unwrap();
    let ingress = envoy.listener("ingress").unwrap();

    // `user:password`, as the guide sends it (its `basic`, lower case).
    let user = "basic dXNlcjpwYXNzd29yZA==";
    // `user:passwore`.
    let wrong = "Basic dXNlcjpwYXNzd29yZQ==";
    for m in manifests {
        let path = format!("/{m}/posts/1");
        let reply = client::get(ingress, &path, &[("authorization", user)])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "case {m}: {}", authchain.log());
        for (name, headers) in [
            ("no credential", vec![]),
            ("a wrong password", vec![("authorization", wrong)]),
        ] {
            let reply = client::get(ingress, &path, &headers).await.unwrap();
            assert_eq!(reply.status, 401, "case {m}: {name}");
        }
        // The extended shape also reads Proxy-Authorization.
        let reply = client::get(ingress, &path, &[("proxy-authorization", user)])
            .await
            .unwrap();
        let want = if m == "basic-auth" { 401 } else { 200 };
        assert_eq!(reply.status, want, "case {m}: proxy-authorization");
    }
}
