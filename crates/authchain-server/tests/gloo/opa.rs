//! Gloo's OPA guide behind real Envoy: its policy in a ConfigMap, its
//! AuthConfig, answered as its curls are.

use authchain_testkit::EchoServer;
use authchain_testkit::client;
use authchain_testkit::envoy::{Bootstrap, Envoy};
use http::Method;

use crate::manifest_path;
use crate::support::{Authchain, LISTENERS};

#[tokio::test]
async fn gloo_s_opa_guide_answers_as_its_curls_say() {
    let upstream = EchoServer::start().await.unwrap();
    let authchain = Authchain::start(&format!(
        "{LISTENERS}authConfigFiles: [{}]\n",
        manifest_path("opa.yaml").display()
    ))
    .await;
    let envoy = Envoy::start(
        &Bootstrap::new(upstream.addr())
            .route("/", Some("gloo-system.opa"))
            .grpc(authchain.grpc)
            .yaml(),
    )
    .await
    .unwrap();
    let ingress = envoy.listener("ingress").unwrap();
    let cases = [
        (Method::GET, "/api/pets", 200),
        (Method::GET, "/api/", 403),
        (Method::DELETE, "/api/pets/1", 403),
        (Method::DELETE, "/api/pets/2", 200),
    ];
    for (method, path, status) in cases {
        let request = client::request(method.clone(), path, &[], "").unwrap();
        let reply = client::send(ingress, request).await.unwrap();
        assert_eq!(
            reply.status,
            status,
            "case {method} {path}: {}",
            authchain.log()
        );
    }
}
