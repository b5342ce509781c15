//! Gloo's OPA guide behind real Envoy: its policy in a ConfigMap, its
//! AuthConfig, answered as its curls are.

use http::Method;

use crate::{Stack, config_files};

#[tokio::test]
async fn gloo_s_opa_guide_answers_as_its_curls_say() {
    let stack = Stack::start(
        &config_files(&["opa.yaml"]),
        &[("/", "gloo-system.opa")],
        |b| b,
    )
    .await;
    let cases = [
        (Method::GET, "/api/pets", 200),
        (Method::GET, "/api/", 403),
        (Method::DELETE, "/api/pets/1", 403),
        (Method::DELETE, "/api/pets/2", 200),
    ];
    for (method, path, status) in cases {
        let reply = stack.send(method.clone(), path, &[]).await;
        assert_eq!(
            reply.status,
            status,
            "case {method} {path}: {}",
            stack.authchain.log()
        );
    }
}
