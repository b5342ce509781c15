//! `rules`.

use std::sync::Arc;

use authchain_core::Chain;
use http::Method;

use crate::common::*;

const RATINGS: &str = r#"
name: r
configs:
- rules:
    rules:
    - action: allow
      methods: [GET]
      path: { exact: /ratings/1 }
"#;

#[tokio::test]
async fn allow_get_ratings_one_deny_the_rest() {
    let chain = chain(RATINGS).await;
    // (case, method, path, the status)
    let cases = [
        ("the rule's request", Method::GET, "/ratings/1", 200),
        // The query string is not part of the path.
        ("with a query", Method::GET, "/ratings/1?x=1", 200),
        ("another path", Method::GET, "/ratings/2", 403),
        ("another method", Method::POST, "/ratings/1", 403),
        ("a trailing slash", Method::GET, "/ratings/1/", 403),
        ("the root", Method::GET, "/", 403),
    ];
    for (name, method, path, want) in cases {
        let d = chain.authorize(&mut req(method, path)).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
    }
}

#[tokio::test]
async fn first_match_wins_with_every_matcher_kind() {
    let chain = chain(
        r#"
name: r
configs:
- rules:
    defaultAction: allow
    denyStatus: 404
    rules:
    - { action: deny, methods: [DELETE], status: 405 }
    - { action: allow, path: { prefix: /public/ } }
    - { action: deny, path: { glob: "/admin/*" } }
    - { action: deny, path: { glob: "/secret/**" } }
    - { action: allow, paths: [{ regex: "/items/[0-9]+" }] }
    - { action: deny, paths: [{ prefix: /items/ }] }
    - { action: deny, hosts: ["*.internal.example.com", "db.example.com"] }
"#,
    )
    .await;
    let cases = [
        (Method::DELETE, "/public/x", "", 405),
        (Method::GET, "/public/x", "db.example.com", 200),
        (Method::GET, "/admin/users", "", 404),
        (Method::GET, "/admin/users/1", "", 200), // `*` stays in one segment
        (Method::GET, "/admin", "", 200),         // nor is `/admin` under `/admin/*`
        (Method::GET, "/secret/a/b", "", 404),    // `**` crosses segments
        (Method::GET, "/secret", "", 200),        // but `/secret` is not under it
        (Method::GET, "/items/42", "", 200),
        (Method::GET, "/items/42x", "", 404), // regex matches the whole path
        (Method::GET, "/x", "a.internal.example.com:8443", 404),
        (Method::GET, "/x", "DB.example.com", 404),
        // The name with DNS's root dot: a 400 before any step.
        (Method::GET, "/x", "db.example.com.", 400),
        (Method::GET, "/x", "example.com", 200),
    ];
    for (m, p, host, want) in cases {
        let mut r = req(m.clone(), p).with_host(host);
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "{m} {p} {host}");
    }
}

/// A pattern written with a space matches the path a request sends it
/// in (escaped: a raw one is refused); a glob so written is a config
/// error that says how to write it.
#[tokio::test]
async fn a_pattern_with_a_space_matches_the_escaped_path() {
    let chain = chain(
        r#"
name: r
configs:
- rules:
    defaultAction: allow
    rules:
    - { action: deny, path: { prefix: "/my docs/" } }
    - { action: deny, path: { exact: "/a b" } }
"#,
    )
    .await;
    for path in ["/my%20docs/x", "/a%20b"] {
        let d = chain.authorize(&mut req(Method::GET, path)).await;
        assert_eq!(status(&d), 403, "{path}");
    }
    let mut registry = authchain_core::PluginRegistry::new();
    authchain_steps::register(&mut registry);
    let yaml =
        "name: g\nconfigs:\n- rules: { rules: [{ action: deny, path: { glob: '/my docs/*' } }] }\n";
    let config =
        authchain_core::AuthConfig::parse("g.yaml", yaml, authchain_core::Format::Yaml).unwrap();
    let e = config[0]
        .build(&registry)
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(e.contains("%20") && e.contains("glob"), "{e}");
}

/// Where the AuthConfig lets ambiguous requests through, a standard
/// method in another case (`delete`, which Traefik and Caddy pass on and
/// many frameworks upper-case) is that method to a rule.
#[tokio::test]
async fn a_method_matches_in_any_case_where_ambiguity_is_allowed() {
    let chain = chain(
        r#"
name: r
allowAmbiguousPaths: true
configs:
- rules:
    defaultAction: allow
    rules:
    - { action: deny, methods: [DELETE], status: 405 }
"#,
    )
    .await;
    for method in ["DELETE", "delete", "Delete"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let d = chain.authorize(&mut req(method.clone(), "/x")).await;
        assert_eq!(status(&d), 405, "{method}");
    }
    let d = chain.authorize(&mut req(Method::GET, "/x")).await;
    assert_eq!(status(&d), 200);
}

/// Where the AuthConfig lets ambiguous requests through, a host with
/// DNS's root dot is the host without it, as nginx and Traefik take it.
#[tokio::test]
async fn a_host_matches_without_its_root_dot_where_ambiguity_is_allowed() {
    let chain = chain(
        r#"
name: r
allowAmbiguousPaths: true
configs:
- rules:
    defaultAction: allow
    rules:
    - { action: deny, hosts: ["*.internal.example.com", "db.example.com.", "[::1]"] }
"#,
    )
    .await;
    for (host, want) in [
        ("[::1]:8443", 403),
        ("[::2]:8443", 200),
        ("db.example.com.", 403),
        ("DB.example.com", 403),
        ("a.internal.example.com.:8443", 403),
        ("example.com.", 200),
    ] {
        let d = chain
            .authorize(&mut req(Method::GET, "/x").with_host(host))
            .await;
        assert_eq!(status(&d), want, "{host}");
    }
}

/// The host is the request's authority, which a decision cache keys on:
/// with none from the transport, no host rule matches, whatever a `Host`
/// header says (two such requests would share a cached answer).
#[tokio::test]
async fn no_host_from_the_transport_matches_no_host_rule() {
    let chain = chain(
        r#"
name: r
configs:
- rules: { rules: [{ action: allow, hosts: [api.example.com] }] }
"#,
    )
    .await;
    // (case, the Host header, the status)
    let cases = [
        ("the listed host, with a port", "api.example.com:80", 403),
        ("another host", "other.example.com", 403),
    ];
    for (name, host, want) in cases {
        let d = chain.authorize(&mut get_with("/", "host", host)).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
    }
}

/// Servers answer a HEAD with the GET handler: a rule on GET covers it; a
/// deny always (a rule before it may allow HEAD), an allow unless some
/// rule says what HEAD gets (then each allow says for itself).
#[tokio::test]
async fn a_get_rule_covers_head() {
    let naming = chain(
        r#"
name: r
configs:
- rules:
    defaultAction: allow
    rules:
    - { action: deny, methods: [GET], paths: [{ prefix: /admin }] }
    - { action: deny, methods: [HEAD], paths: [{ prefix: /head-only }] }
"#,
    )
    .await;
    let answers = |chain: Arc<Chain>, cases: Vec<(Method, &'static str, u16)>| async move {
        for (method, path, want) in cases {
            let d = chain.authorize(&mut req(method.clone(), path)).await;
            assert_eq!(status(&d), want, "{method} {path}");
        }
    };
    answers(
        naming,
        vec![
            (Method::HEAD, "/admin", 403),
            (Method::GET, "/admin", 403),
            (Method::POST, "/admin", 200),
            (Method::HEAD, "/head-only", 403),
            (Method::GET, "/head-only", 200),
        ],
    )
    .await;
    // No rule names HEAD: a GET rule covers it, both ways.
    let covering = chain(
        r#"
name: r
configs:
- rules:
    defaultAction: allow
    rules:
    - { action: deny, methods: [GET], paths: [{ prefix: /admin }] }
    - { action: allow, methods: [GET], paths: [{ prefix: /files }] }
    - { action: deny, paths: [{ prefix: /files }] }
"#,
    )
    .await;
    answers(
        covering,
        vec![
            (Method::HEAD, "/admin", 403),
            (Method::GET, "/admin", 403),
            (Method::HEAD, "/files/x", 200),
            (Method::POST, "/files/x", 403),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_rules_configs_name_their_place() {
    let cases = [
        // A wildcard method is a method of that name, which no request has.
        (
            "rules: [{ action: deny, methods: [GET, \"*\"] }]",
            "configs[0].rules.rules[0].methods[1]",
        ),
        (
            "rules: [{ action: deny, methods: [any] }]",
            "configs[0].rules.rules[0].methods[0]",
        ),
        (
            "rules: [{ action: allow, path: { exact: /a, prefix: /b } }]",
            "configs[0].rules.rules[0].path",
        ),
        (
            "rules: [{ action: allow, paths: [{ regex: \"(\" }] }]",
            "configs[0].rules.rules[0].paths[0].regex",
        ),
        (
            "rules: [{ action: allow, paths: [{ glob: \"[\" }] }]",
            "configs[0].rules.rules[0].paths[0].glob",
        ),
        (
            "rules: [{ action: allow, methods: [\"G T\"] }]",
            "configs[0].rules.rules[0].methods[0]",
        ),
        (
            "rules: [{ action: allow, hosts: [\"a*.com\"] }]",
            "configs[0].rules.rules[0].hosts[0]",
        ),
        // The request's host is matched without its port: a deny rule
        // on one with a port would match nothing.
        (
            "rules: [{ action: deny, hosts: [\"admin.example.com:8443\"] }]",
            "configs[0].rules.rules[0].hosts[0]",
        ),
        (
            "rules: [{ action: deny, hosts: [a.example.com, \"[::1]:443\"] }]",
            "configs[0].rules.rules[0].hosts[1]",
        ),
        // `/static/..` would be `/`: an allow of everything, unsaid.
        (
            "rules: [{ action: allow, paths: [{ prefix: /static/.. }] }]",
            "configs[0].rules.rules[0].paths[0].prefix",
        ),
        (
            "rules: [{ action: allow, path: { exact: \"/a/%2e/b\" } }]",
            "configs[0].rules.rules[0].path.exact",
        ),
        (
            "rules: [{ action: maybe }]",
            "configs[0].rules.rules[0].action",
        ),
        (
            "rules: [{ action: deny, status: 200 }]",
            "configs[0].rules.rules[0].status",
        ),
        ("denyStatus: 99", "configs[0].rules.denyStatus"),
        ("rulez: []", "configs[0].rules.rulez"),
    ];
    for (block, place) in cases {
        let yaml = format!("name: r\nconfigs:\n- rules:\n    {block}\n");
        assert_bad_config(&yaml, place, &[]).await;
    }
}

#[tokio::test]
async fn odd_input_never_panics() {
    let chain = chain(RATINGS).await;
    let huge = "/".repeat(100_000);
    let slashes = format!("/a{huge}");
    // Denied by the rules, or refused as no path (400) before them.
    let cases = [
        ("", 400),
        ("?", 400),
        ("??", 400),
        ("/ratings/1#x", 400),
        (huge.as_str(), 400),
        (slashes.as_str(), 403),
        ("*", 400),
        ("/%ff", 403),
    ];
    for (p, expected) in cases {
        let d = chain
            .authorize(&mut req(Method::GET, p).with_host("[::1]"))
            .await;
        assert_eq!(status(&d), expected, "{p:.20}");
    }
    // A host that is no authority: refused (400) before the rules.
    for host in ["[::1", "[", "]", "[]x", "::", "a:b:c", "\u{e9}.example"] {
        let d = chain
            .authorize(&mut req(Method::GET, "/ratings/1").with_host(host))
            .await;
        assert_eq!(status(&d), 400, "{host}");
    }
}

/// A step that calls no server fails only on what the request holds (or
/// on a fault): `failureModeAllow` on one would let through exactly the
/// requests it could not check, so it is a config error, placed at the
/// step; the steps that call a server take it.
#[tokio::test]
async fn failure_mode_allow_is_refused_on_steps_that_call_no_server() {
    for (kind, block) in [
        ("rules", "{ defaultAction: allow }"),
        ("apiKeyAuth", "{ keys: [{ key: a-key-0123456789abcdef }] }"),
        (
            "basicAuth",
            "{ htpasswd: 'u:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1' }",
        ),
        (
            "hmacAuth",
            "{ parametersInHeaders: {}, secretRefs: { secretRefs: [{ name: hmac }] } }",
        ),
        (
            "opaAuth",
            "{ query: data.t.allow, modules: { t.rego: \"package t\\nallow := true\" } }",
        ),
        // Envoy's verdict, or a key set of its own: no server either.
        ("jwt", "{}"),
        (
            "oauth2",
            &format!(
                "{{ accessTokenValidation: {{ jwt: {{ localJwks: {{ inlineString: '{}' }} }} }} }}",
                include_str!("../keys/jwks.json").replace('\n', " ")
            ),
        ),
    ] {
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: { name: hmac }\ntype: extauth.solo.io/accountcredentials\nstringData: { username: u, password: p }\n---\n";
        let yaml =
            format!("{secret}name: n\nconfigs:\n- failureModeAllow: true\n  {kind}: {block}\n");
        let error = load_error(&yaml).await.to_string();
        assert!(
            error.contains(&format!("configs[0].{kind}")) && error.contains("failureModeAllow"),
            "{kind}: {error}"
        );
        let fails_closed = yaml.replace("- failureModeAllow: true\n  ", "- ");
        load(&fails_closed)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    // A chain built in code refuses it too, naming the step.
    let rules = authchain_steps::rules::Rules::new(
        serde_json::from_value(serde_json::json!({ "defaultAction": "allow" })).unwrap(),
    )
    .unwrap();
    let error = authchain_core::Chain::builder("c")
        .step(authchain_core::ChainStep::new("open", Arc::new(rules)).failure_mode_allow(true))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("step 'open'") && error.contains("failureModeAllow"),
        "{error}"
    );
}
