//! The basic auth manifests of Gloo's guide, behind real Envoy, answered
//! as the guide's `curl`s are.

use crate::{Stack, config_files};

#[tokio::test]
async fn gloo_s_basic_auth_manifests_answer_as_its_guide_says() {
    let manifests = [
        "basic-auth",
        "basic-auth-overview",
        "basic-auth-format-history",
        "basic-auth-extended-apr",
        "basic-auth-extended-sha1",
    ];
    let files: Vec<String> = manifests.iter().map(|m| format!("{m}.yaml")).collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let stack = Stack::for_manifests(&config_files(&files), &manifests).await;

    // `user:password`, as the guide sends it (its `basic`, lower case).
    let user = "basic dXNlcjpwYXNzd29yZA==";
    // `user:passwore`.
    let wrong = "Basic dXNlcjpwYXNzd29yZQ==";
    for m in manifests {
        let path = format!("/{m}/posts/1");
        let reply = stack.get(&path, &[("authorization", user)]).await;
        assert_eq!(reply.status, 200, "case {m}: {}", stack.authchain.log());
        for (name, headers) in [
            ("no credential", vec![]),
            ("a wrong password", vec![("authorization", wrong)]),
        ] {
            let reply = stack.get(&path, &headers).await;
            assert_eq!(reply.status, 401, "case {m}: {name}");
        }
        // The extended shape also reads Proxy-Authorization.
        let reply = stack.get(&path, &[("proxy-authorization", user)]).await;
        let want = if m.contains("extended") { 200 } else { 401 };
        assert_eq!(reply.status, want, "case {m}: proxy-authorization");
    }
}
