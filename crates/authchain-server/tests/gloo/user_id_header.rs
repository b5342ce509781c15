//! Gloo's server setting `userIdHeader`: the allowed user goes upstream
//! in that header, and no client can put it there, behind real Envoy.

use crate::Stack;

#[tokio::test]
async fn the_user_id_header_carries_the_chain_s_user_and_never_the_client_s() {
    let stack = Stack::start(
        "userIdHeader: x-user-id
authConfigs:
- name: keys
  configs:
  - apiKeyAuth:
      keys:
      - { key: alice-key-0123456789, metadata: { user-id: alice } }
      - { key: anon-key-0123456789 }
      userIdMetadata: user-id
  booleanExpr: config_0
- name: own
  userIdHeader: x-own-user
  configs:
  - apiKeyAuth:
      keys: [{ key: bob-key-0123456789, metadata: { user-id: bob } }]
      userIdMetadata: user-id
",
        &[("/own", "own"), ("/", "keys")],
        |b| b,
    )
    .await;
    // What a client claims, in two spellings; Envoy forwards both.
    let forged = [("x-user-id", "admin"), ("x_user_id", "admin")];

    // Path, API key, and what the upstream sees of each header.
    type Seen<'a> = &'a [(&'a str, &'a [&'a str])];
    let cases: [(&str, &str, Seen<'_>); 3] = [
        ("/", "alice-key-0123456789", &[("x-user-id", &["alice"])]),
        ("/", "anon-key-0123456789", &[("x-user-id", &[])]),
        (
            "/own",
            "bob-key-0123456789",
            // Its own header, and the server's stripped all the same.
            &[("x-own-user", &["bob"]), ("x-user-id", &[])],
        ),
    ];
    for (path, key, want) in cases {
        let mut headers = vec![("api-key", key)];
        headers.extend(forged);
        let reply = stack.get(path, &headers).await;
        assert_eq!(reply.status, 200, "case {key}: {}", stack.authchain.log());
        let seen = reply.echoed().unwrap();
        for (name, values) in want {
            assert_eq!(seen.header_all(name), *values, "case {key}: {name}");
        }
        assert!(seen.header_all("x_user_id").is_empty(), "case {key}");
    }

    // A refused request: the claim goes nowhere.
    let mut headers = vec![("api-key", "wrong")];
    headers.extend(forged);
    let reply = stack.get("/", &headers).await;
    assert_eq!(reply.status, 401);
}
