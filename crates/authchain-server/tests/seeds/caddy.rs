//! caddy: `forward_auth` to authchain's HTTP check, HTTP Basic users, the
//! user copied upstream with `copy_headers`.

use crate::seed::Stack;

/// `user:password`.
const USER: &str = "Basic dXNlcjpwYXNzd29yZA==";
/// `user:wrong`.
const WRONG: &str = "Basic dXNlcjp3cm9uZw==";

#[tokio::test]
async fn caddy_forward_auth_basic() {
    let stack = Stack::start("caddy", None).await;

    let reply = stack
        .get(
            "/orders?id=3",
            &[("authorization", USER), ("x-user-id", "admin")],
        )
        .await;
    let seen = stack.upstream(&reply);
    assert_eq!(seen.header_all("x-user-id"), ["user"]);
    assert_eq!(seen.path, "/orders?id=3");

    for headers in [
        vec![],
        vec![("authorization", WRONG)],
        vec![("x-user-id", "user")],
    ] {
        let reply = stack.get("/orders", &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}\n{}", stack.output());
        assert_eq!(
            reply.header_values("www-authenticate"),
            ["Basic realm=\"site\", charset=\"UTF-8\""]
        );
    }
    stack
        .assert_denied("/orders", &[("authorization", WRONG)], 401)
        .await;
}
