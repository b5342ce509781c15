//! envoy-http: the seed "Custom Auth server", Envoy's ext_authz filter in
//! HTTP service mode with a `rules` AuthConfig.

use crate::seed::Stack;

#[tokio::test]
async fn envoy_http_custom_auth_server() {
    let stack = Stack::start("envoy-http", None).await;

    let reply = stack.get("/ratings/1", &[]).await;
    assert_eq!(stack.upstream(&reply).path, "/ratings/1");

    for path in ["/ratings/2", "/ratings", "/", "/ratings/1/x"] {
        stack.assert_denied(path, &[], 403).await;
    }
    let post = authchain_testkit::client::request(
        http::Method::POST,
        "/ratings/1",
        &[],
        bytes::Bytes::new(),
    )
    .unwrap();
    assert_eq!(stack.send(post).await.status, 403, "only GET is allowed");

    // A client cannot name another path: Envoy does not pass these on,
    // and authchain trusts no proxy's forwarded headers here.
    stack
        .assert_denied(
            "/ratings/2",
            &[
                ("x-forwarded-uri", "/ratings/1"),
                ("x-original-uri", "/ratings/1"),
            ],
            403,
        )
        .await;
}
