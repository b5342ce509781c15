//! nginx: the seed "Forward Authentication". `auth_request` to authchain's
//! HTTP check; a JWT in `Authorization: Bearer` or the `session` cookie;
//! the user copied upstream by `auth_request_set`; answers cached.

use crate::seed::Stack;

/// `sub: alice`, HS256 with the seed's key, expiring in 2100.
pub(crate) const ALICE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InNlZWQifQ.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.Jxb-DiQ16-jvi1MRLTBfRg4GvhYHgFTudQt-5vOLGXg";
/// `sub: bob`, likewise.
pub(crate) const BOB: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InNlZWQifQ.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJzdWIiOiJib2IiLCJleHAiOjQxMDI0NDQ4MDB9.q_X2AxlKLkHPTHERDXNiVHjOOfSSho4p6y-8w3dbb3w";

/// A counter of authchain's `/metrics`, whatever the order of its labels.
async fn counter(stack: &Stack, name: &str, labels: &[&str]) -> f64 {
    let text = stack.authchain.metrics().await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn cache_hits(stack: &Stack) -> f64 {
    counter(
        stack,
        "authchain_cache_lookups_total",
        &[r#"config="site""#, r#"result="hit""#],
    )
    .await
}

#[tokio::test]
async fn nginx_forward_authentication() {
    let stack = Stack::start("nginx", None).await;
    let bearer = format!("Bearer {ALICE}");

    // A token in Authorization: alice goes upstream, whatever the client claims.
    let reply = stack
        .get(
            "/orders?id=3",
            &[("authorization", &bearer), ("x-user-id", "admin")],
        )
        .await;
    let seen = stack.upstream(&reply);
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);
    assert_eq!(seen.path, "/orders?id=3");

    // The same credential again is answered from the cache, forged
    // identity still replaced.
    let before = cache_hits(&stack).await;
    let reply = stack
        .get(
            "/other",
            &[("authorization", &bearer), ("x-user-id", "admin")],
        )
        .await;
    assert_eq!(stack.upstream(&reply).header_all("x-user-id"), ["alice"]);
    assert_eq!(
        cache_hits(&stack).await,
        before + 1.0,
        "{}",
        stack.authchain.metrics().await
    );

    // A token in the session cookie.
    let cookie = format!("theme=dark; session={BOB}");
    let reply = stack.get("/", &[("cookie", &cookie)]).await;
    assert_eq!(stack.upstream(&reply).header_all("x-user-id"), ["bob"]);

    // A cookie whose name only a Unicode trim makes `session` is no
    // token: the cache's key, which holds the cookie, would not hold it,
    // and its allow would be every anonymous request's for 10m.
    for name in ["\u{a0}session", "session\u{3000}"] {
        let cookie = format!("{name}={BOB}");
        stack.assert_denied("/", &[("cookie", &cookie)], 401).await;
        stack.assert_denied("/", &[], 401).await;
    }

    // No token, a bad one, a forged identity alone: 401 with the challenge.
    for headers in [
        vec![],
        vec![("authorization", "Bearer not.a.token")],
        vec![("cookie", "session=nope")],
        vec![("x-user-id", "alice")],
    ] {
        let reply = stack.get("/orders", &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}\n{}", stack.output());
        let challenge = reply.header_values("www-authenticate");
        assert_eq!(challenge.len(), 1, "{headers:?}: {challenge:?}");
        assert!(
            challenge[0].starts_with("Bearer realm=\"site\""),
            "{challenge:?}"
        );
    }
    stack
        .assert_denied("/orders", &[("authorization", "Bearer x")], 401)
        .await;
}
