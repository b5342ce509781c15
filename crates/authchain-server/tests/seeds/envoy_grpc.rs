//! envoy-grpc: Envoy's ext_authz filter over gRPC, the route's
//! `config_id` picking an `apiKeyAuth` AuthConfig.

use crate::seed::Stack;

const ALICE: &str = "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy";
const BOB: &str = "ZDNlYjJmYjMtMjhiYi00ZDM0LWFkYjItM2Q2ZmFjMmM0YjQ1";

#[tokio::test]
async fn envoy_grpc_api_keys() {
    let stack = Stack::start("envoy-grpc", None).await;

    // A key in `api-key`: its holder goes upstream, whatever the client claims.
    let reply = stack
        .get(
            "/orders?id=3",
            &[
                ("api-key", ALICE),
                ("x-user-id", "admin"),
                ("x-plan", "platinum"),
            ],
        )
        .await;
    let seen = stack.upstream(&reply);
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);
    assert_eq!(seen.header_all("x-plan"), ["gold"]);
    assert_eq!(seen.path, "/orders?id=3");

    // Or in Authorization: Bearer.
    let bearer = format!("Bearer {BOB}");
    let reply = stack.get("/", &[("authorization", &bearer)]).await;
    let seen = stack.upstream(&reply);
    assert_eq!(seen.header_all("x-user-id"), ["bob"]);
    assert_eq!(seen.header_all("x-plan"), ["free"]);

    // No key, an unknown one, a forged identity alone: 401 from Envoy.
    stack.assert_denied("/orders", &[], 401).await;
    stack
        .assert_denied("/orders", &[("api-key", "not-a-key")], 401)
        .await;
    stack
        .assert_denied("/orders", &[("x-user-id", "alice")], 401)
        .await;
}
