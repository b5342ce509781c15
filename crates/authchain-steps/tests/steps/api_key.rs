//! `apiKeyAuth`.

use authchain_core::AuthService;
use authchain_core::decision_log::{DecisionLog, Sampling};
use authchain_steps::api_key::{ApiKeyAuth, ApiKeyConfig};
use http::{HeaderName, HeaderValue, Method};

use crate::common::*;

const KEYS: &str = r#"
name: k
configs:
- apiKeyAuth:
    keys:
    - key: alice-key-0123456789
      metadata: { user-id: alice, plan: gold }
    - key: bob-key-0123456789
      metadata: { user-id: bob }
    headersFromMetadataEntry:
      x-user-id: { name: user-id, required: true }
      x-plan: { name: plan }
    userIdMetadata: user-id
"#;

#[tokio::test]
async fn a_key_in_the_header_allows_and_sends_its_metadata_upstream() {
    let chain = chain(KEYS).await;
    let mut r = get_with("/", "api-key", "alice-key-0123456789");
    let d = chain.authorize(&mut r).await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(upstream(&d, "x-user-id").as_deref(), Some("alice"));
    assert_eq!(upstream(&d, "x-plan").as_deref(), Some("gold"));
    assert_eq!(
        d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
        "alice"
    );
    assert_eq!(r.state["apiKey"]["plan"], "gold");
    // Gloo's state: each mapped entry under its header's name, the key
    // under `api_key_value`; never shown in Debug output.
    assert_eq!(r.state["x-user-id"], "alice");
    assert_eq!(r.state["x-plan"], "gold");
    assert_eq!(r.state["api_key_value"], "alice-key-0123456789");
    assert!(
        !format!("{:?} {r:?}", r.state).contains("alice-key"),
        "the key is shown"
    );
    let mut r = get_with("/", "api-key", "bob-key-0123456789");
    assert!(chain.authorize(&mut r).await.is_allow());
    assert_eq!(r.state.get("x-plan"), None);
    assert_eq!(r.state["api_key_value"], "bob-key-0123456789");
}

/// Gloo's state names of a key never stand for another step's state: a
/// header named like a name a step writes is a config error, and a name
/// an earlier step wrote with another value fails the request closed.
#[tokio::test]
async fn a_key_s_state_never_replaces_another_step_s() {
    for name in ["jwt", "basicAuth", "BasicAuth", "api_key_value", "apiKey"] {
        let config = format!(
            "name: k
configs:
- apiKeyAuth:
    keys: [{{ key: alice-key-0123456789, metadata: {{ tier: gold }} }}]
    headersFromMetadataEntry: {{ {name}: {{ name: tier }} }}
"
        );
        assert_bad_config(
            &config,
            &format!("configs[0].apiKeyAuth.headersFromMetadataEntry.{name}"),
            &["alice-key"],
        )
        .await;
    }
    // One header in two spellings: two state names, one upstream header.
    assert_bad_config(
        "name: k
configs:
- apiKeyAuth:
    keys: [{ key: alice-key-0123456789, metadata: { tier: gold } }]
    headersFromMetadataEntry: { x-tier: { name: tier }, X-Tier: { name: tier } }
",
        "configs[0].apiKeyAuth.headersFromMetadataEntry.x-tier",
        &["alice-key"],
    )
    .await;
    // Two steps of one key: the same metadata is one state; another, or
    // none where the earlier step wrote one, is an error (403), never the
    // earlier value kept or replaced unseen.
    for (second, want) in [
        ("{ tier: gold }", 200),
        ("{ tier: free }", 403),
        ("{}", 403),
    ] {
        let config = format!(
            "name: k
configs:
- apiKeyAuth:
    keys: [{{ key: alice-key-0123456789, metadata: {{ tier: gold }} }}]
    headersFromMetadataEntry: {{ x-tier: {{ name: tier }} }}
- apiKeyAuth:
    keys: [{{ key: alice-key-0123456789, metadata: {second} }}]
    headersFromMetadataEntry: {{ x-tier: {{ name: tier }} }}
"
        );
        let chain = chain(&config).await;
        let mut r = get_with("/", "api-key", "alice-key-0123456789");
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "{second}: {d:?}");
    }
}

/// A Gloo policy that keeps out what the key's metadata or the key
/// itself names, reading them where Gloo's state has them: missing, it
/// would let them in (`not` of an undefined value is true).
#[tokio::test]
async fn a_gloo_policy_reads_the_key_s_metadata_and_the_key_in_state() {
    for (revoked, bob) in [("bob-key-0123456789", 403), ("carol-key", 200)] {
        let config = format!(
            "{KEYS}- opaAuth:
    query: data.test.allow
    modules:
      test.rego: |
        package test
        default allow := false
        allow if {{ not suspended; not revoked }}
        suspended if input.state[\"x-plan\"] == \"gold\"
        revoked if input.state.api_key_value == \"{revoked}\"
"
        );
        let chain = chain(&config).await;
        for (key, want) in [("alice-key-0123456789", 403), ("bob-key-0123456789", bob)] {
            let d = chain.authorize(&mut get_with("/", "api-key", key)).await;
            assert_eq!(status(&d), want, "{key}, {revoked} revoked: {d:?}");
        }
    }
}

/// As Gloo's, the key is read from `headerName` alone; `allowBearer: true`
/// takes `Authorization: Bearer <key>` too.
#[tokio::test]
async fn a_bearer_key_works_when_allowed() {
    let bearer = || get_with("/", "authorization", "Bearer bob-key-0123456789");
    let key_only = chain(KEYS).await;
    assert_eq!(status(&key_only.authorize(&mut bearer()).await), 401);
    let allowed = chain(&KEYS.replace("    keys:\n", "    allowBearer: true\n    keys:\n")).await;
    let d = allowed.authorize(&mut bearer()).await;
    assert_eq!(upstream(&d, "x-user-id").as_deref(), Some("bob"));
    assert_eq!(upstream(&d, "x-plan"), None);
    // A key in each place: the same one is a key; two are refused, since
    // the app behind may read the other; another scheme is not a key.
    let both = |bearer: &str| {
        get_with("/", "api-key", "bob-key-0123456789").with_header(
            http::header::AUTHORIZATION,
            HeaderValue::try_from(bearer).unwrap(),
        )
    };
    for (authorization, user) in [
        ("Bearer bob-key-0123456789", Some("bob")),
        ("Bearer alice-key-0123456789", None),
        ("Bearer not-a-key", None),
        ("Basic Ym9iOnB3", Some("bob")),
        ("Bearer", None),
        ("bearer    ", None),
        // What an app may read as a bearer: a repeated header that a proxy
        // joined (Envoy over gRPC), one after spaces, one of no scheme.
        ("Basic Ym9iOnB3,Bearer alice-key-0123456789", None),
        ("Basic Ym9iOnB3, bearer alice-key-0123456789", None),
        (" Bearer alice-key-0123456789", None),
        ("alice-key-0123456789", None),
    ] {
        let d = allowed.authorize(&mut both(authorization)).await;
        assert_eq!(
            upstream(&d, "x-user-id").as_deref(),
            user,
            "{authorization}"
        );
        assert_eq!(status(&d), if user.is_some() { 200 } else { 401 });
    }
    // A bearer twice (the HTTP transports keep both): which one the app
    // reads is not known, so neither is taken.
    let mut twice = both("Bearer bob-key-0123456789");
    twice.headers.append(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer alice-key-0123456789"),
    );
    assert_eq!(status(&allowed.authorize(&mut twice).await), 401);
}

#[tokio::test]
async fn a_forged_identity_header_is_replaced() {
    let chain = chain(KEYS).await;
    let mut r = get_with("/", "api-key", "bob-key-0123456789").with_header(
        HeaderName::from_static("x-user-id"),
        HeaderValue::from_static("admin"),
    );
    let d = chain.authorize(&mut r).await;
    assert_eq!(upstream(&d, "x-user-id").as_deref(), Some("bob"));
    let step = ApiKeyAuth::new(
        serde_json::from_value::<ApiKeyConfig>(serde_json::json!({
            "keys": [{"key": "k", "metadata": {"u": "x"}}],
            "headersFromMetadataEntry": {"x-user-id": {"name": "u"}}
        }))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        step.identity_headers(),
        vec![HeaderName::from_static("x-user-id")]
    );
}

#[tokio::test]
async fn missing_wrong_and_malformed_keys_are_401() {
    let chain = chain(KEYS).await;
    let huge = "a".repeat(100_000);
    let cases = [
        ("no key", req(Method::GET, "/")),
        (
            "one byte short",
            get_with("/", "api-key", "alice-key-012345678"),
        ),
        (
            "one byte long",
            get_with("/", "api-key", "alice-key-01234567890"),
        ),
        ("empty", get_with("/", "api-key", "")),
        // The app behind may read the other copy.
        (
            "a valid key and another",
            get_with("/", "x-client", "alice-key-0123456789").with_header(
                HeaderName::from_static("api-key"),
                HeaderValue::from_static("forged"),
            ),
        ),
        // A CGI-style app (PHP, WSGI, Rack) reads these as `api-key`.
        (
            "a valid key and another spelling",
            get_with("/", "api-key", "alice-key-0123456789").with_header(
                HeaderName::from_static("api_key"),
                HeaderValue::from_static("forged"),
            ),
        ),
        (
            "a valid key and the same under another spelling",
            get_with("/", "api-key", "alice-key-0123456789").with_header(
                HeaderName::from_static("api.key"),
                HeaderValue::from_static("alice-key-0123456789"),
            ),
        ),
        ("huge", get_with("/", "api-key", &huge)),
        (
            "a key under Basic",
            get_with("/", "authorization", "Basic alice-key-0123456789"),
        ),
        ("Bearer alone", get_with("/", "authorization", "Bearer")),
        (
            "a huge bearer",
            get_with("/", "authorization", &format!("Bearer {huge}")),
        ),
        (
            "not UTF-8",
            req(Method::GET, "/").with_header(
                HeaderName::from_static("api-key"),
                HeaderValue::from_bytes(b"alice-key-\xff\xfe").unwrap(),
            ),
        ),
    ];
    for (name, mut r) in cases {
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), 401, "case {name}");
    }
}

#[tokio::test]
async fn keys_from_a_file_and_a_custom_header() {
    let path = std::env::temp_dir().join(format!("authchain-keys-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "- key: from-file-key\n  metadata: { user-id: carol }\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
name: k
configs:
- apiKeyAuth:
    headerName: x-api-key
    allowBearer: false
    keysFile: {}
    headersFromMetadataEntry: {{ x-user-id: {{ name: user-id }} }}
"#,
        path.display()
    );
    let chain = chain(&yaml).await;
    let d = chain
        .authorize(&mut get_with("/", "x-api-key", "from-file-key"))
        .await;
    assert_eq!(upstream(&d, "x-user-id").as_deref(), Some("carol"));
    let d = chain
        .authorize(&mut get_with("/", "authorization", "Bearer from-file-key"))
        .await;
    assert_eq!(status(&d), 401, "bearer is off");
    std::fs::write(&path, "- key: [not, a, string, secret-in-file]\n").unwrap();
    let e = load_error(&yaml).await;
    assert_eq!(e.place(), Some("t: configs[0].apiKeyAuth.keysFile"));
    assert!(!e.to_string().contains("secret-in-file"), "{e}");
    // A file that is no YAML says where; one with a key twice, or a
    // merge key, says what, and neither quotes a key.
    for (text, says) in [
        ("- {key: secret-in-file\n", "at line"),
        (
            "- {key: a-secret-in-file, key: secret-in-file}\n",
            "keysFile",
        ),
        ("- &d {key: secret-in-file}\n- {<<: *d}\n", "keysFile"),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = load_error(&yaml).await.to_string();
        assert!(
            e.contains(says) && !e.contains("secret-in-file"),
            "{text}: {e}"
        );
    }
    std::fs::remove_file(&path).ok();
}

/// A step that reads a header a step sets upstream never sees the
/// client's copy (removed before any step runs): the load says so.
#[tokio::test]
async fn a_step_reading_a_header_a_step_sets_is_warned_of() {
    let yaml = |trust: &str| {
        format!(
            "{}- name: second
  apiKeyAuth:
    headerName: x-plan
    keys: [{{ key: gold-key-0123456789 }}]
",
            KEYS.replace("configs:", &format!("{trust}configs:"))
        )
    };
    let (logs, _guard) = crate::common::Logs::capture();
    chain(&yaml("")).await;
    let text = logs.text();
    assert!(
        text.contains("a step reads a header that a step sets upstream")
            && text.contains("step=second")
            && text.contains("header=x-plan"),
        "{text}"
    );
    let (logs, _guard) = crate::common::Logs::capture();
    chain(&yaml("trustClientHeaders: [x-plan]\n")).await;
    assert!(
        !logs.text().contains("a step reads a header"),
        "{}",
        logs.text()
    );
}

/// The key's header is a credential, whatever its name (`x-client` says
/// nothing of it, unlike `api-key`, which no log may name): an AuthConfig
/// cannot log it by value.
#[tokio::test]
async fn the_key_header_is_never_logged() {
    let keys = KEYS.replace("    keys:\n", "    headerName: x-client\n    keys:\n");
    let yaml = keys.replace(
        "configs:",
        "decisionLog: { headers: [x-request-id, X-Client] }\nconfigs:",
    );
    let e = load_error(&yaml).await.to_string();
    assert!(
        e.contains("decisionLog.headers[1]") && e.contains("x-client"),
        "{e}"
    );
    let other = keys.replace(
        "configs:",
        "decisionLog: { headers: [x-request-id] }\nconfigs:",
    );
    chain(&other).await;
    // The server's log, for every AuthConfig, leaves it out for this one.
    let (engine, mut records) = logging(&keys).await;
    let mut r = key_request("r-1");
    let chain = engine.current().chain("k").unwrap().clone();
    assert!(chain.authorize(&mut r).await.is_allow());
    let record = records.borrow_and_update()[0].clone();
    assert!(
        record.contains("r-1") && !record.contains("alice-key"),
        "{record}"
    );

    // Nor by a shadow whose own steps do not read it: it runs the
    // shadowed AuthConfig's requests.
    let text = format!(
        "{}\n---\nname: next\nconfigs: [{{ rules: {{ defaultAction: allow }} }}]\n",
        keys.replace("configs:", "shadow: next\nconfigs:")
    );
    let (engine, mut records) = logging(&text).await;
    let chain = engine.current().chain("k").unwrap().clone();
    assert!(chain.authorize(&mut key_request("r-2")).await.is_allow());
    let shadow = r#""transport":"shadow""#;
    let records = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        records.wait_for(|records| records.iter().any(|r| r.contains(shadow))),
    )
    .await
    .expect("a shadow run")
    .unwrap()
    .clone();
    let run = records.iter().find(|r| r.contains(shadow)).unwrap();
    assert!(run.contains("r-2") && !run.contains("alice-key"), "{run}");
}

/// An engine with every step, `text` loaded, and a decision log of every
/// AuthConfig that names `x-client` and `x-request-id`; its records.
async fn logging(
    text: &str,
) -> (
    authchain_core::Engine,
    tokio::sync::watch::Receiver<Vec<String>>,
) {
    let (sink, records) = tokio::sync::watch::channel(Vec::<String>::new());
    let log = DecisionLog::new(move |r: String| sink.send_modify(|records| records.push(r)))
        .every_config(
            Sampling::default()
                .header("x-client")
                .header("x-request-id"),
        )
        .unwrap();
    let mut registry = authchain_core::PluginRegistry::new();
    authchain_steps::register(&mut registry);
    let engine = authchain_core::Engine::new(registry).with_decision_log(log);
    let configs = authchain_core::AuthConfig::parse(ORIGIN, text, authchain_core::Format::Yaml);
    engine.load(&configs.unwrap()).await.unwrap();
    (engine, records)
}

/// alice's key, and request id `id`.
fn key_request(id: &'static str) -> authchain_core::AuthorizationRequest {
    get_with("/", "x-client", "alice-key-0123456789").with_header(
        HeaderName::from_static("x-request-id"),
        HeaderValue::from_static(id),
    )
}

#[tokio::test]
async fn bad_api_key_configs_name_their_place_and_hide_keys() {
    let cases = [
        ("headerName: x", "configs[0].apiKeyAuth"),
        (
            "keys: [{ key: s3cr3t-key }, { key: s3cr3t-key }]",
            "configs[0].apiKeyAuth.keys[1].key",
        ),
        ("keys: [{ key: '' }]", "configs[0].apiKeyAuth.keys[0].key"),
        (
            "keys: [{ key: s3cr3t-key }]\n    headerName: 'bad header'",
            "configs[0].apiKeyAuth.headerName",
        ),
        (
            "keys: [{ key: s3cr3t-key }]\n    headersFromMetadataEntry: { x-u: { name: u, required: true } }",
            "configs[0].apiKeyAuth.keys[0].metadata",
        ),
        (
            "keys: [{ key: s3cr3t-key, metadata: { u: \"a\\nb\" } }]\n    headersFromMetadataEntry: { x-u: { name: u } }",
            "configs[0].apiKeyAuth.keys[0].metadata.u",
        ),
        (
            "keys: [{ key: s3cr3t-key, extra: 1 }]",
            "configs[0].apiKeyAuth.keys[0].extra",
        ),
        ("keys: s3cr3t-key", "configs[0].apiKeyAuth.keys"),
        (
            "keysFile: /nonexistent/authchain/keys.yaml",
            "configs[0].apiKeyAuth.keysFile",
        ),
    ];
    for (block, place) in cases {
        let yaml = format!("name: k\nconfigs:\n- apiKeyAuth:\n    {block}\n");
        assert_bad_config(&yaml, place, &["s3cr3t"]).await;
    }
}

/// Gloo's API key Secrets: alice's and bob's in `gloo-system` (team
/// infrastructure), carol's elsewhere (team other), one of another type.
fn secrets() -> String {
    let secret = |name: &str, ns: &str, team: &str, kind: &str, data: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: {ns}, labels: {{ team: {team} }} }}\ntype: {kind}\nstringData: {data}\n---\n"
        )
    };
    [
        secret(
            "alice",
            "gloo-system",
            "infrastructure",
            "extauth.solo.io/apikey",
            "{ api-key: alice-key-0123456789, user-id: alice }",
        ),
        secret(
            "bob",
            "gloo-system",
            "infrastructure",
            "extauth.solo.io/apikey",
            "{ api-key: bob-key-0123456789 }",
        ),
        secret(
            "carol",
            "apps",
            "other",
            "extauth.solo.io/apikey",
            "{ api-key: carol-key-0123456789, user-id: carol }",
        ),
        secret(
            "opaque",
            "gloo-system",
            "infrastructure",
            "Opaque",
            "{ api-key: opaque-key-0123456789 }",
        ),
    ]
    .concat()
}

fn manifest(spec: &str) -> String {
    format!(
        "{}apiVersion: enterprise.gloo.solo.io/v1\nkind: AuthConfig\nmetadata: {{ name: k, namespace: gloo-system }}\nspec:\n  configs:\n  - apiKeyAuth:\n{spec}",
        secrets()
    )
}

#[tokio::test]
async fn keys_come_from_secrets_by_label_or_by_reference() {
    let cases = [
        (
            "the older labelSelector",
            "      labelSelector: { team: infrastructure }\n",
            &["alice", "bob"][..],
        ),
        (
            "k8sSecretApikeyStorage's",
            "      k8sSecretApikeyStorage:\n        labelSelector: { team: infrastructure }\n        apiKeySecretRefs: [{ name: carol, namespace: apps }]\n",
            &["alice", "bob", "carol"][..],
        ),
        (
            "references, one in the AuthConfig's namespace",
            "      apiKeySecretRefs: [{ name: bob }, { name: carol, namespace: apps }]\n",
            &["bob", "carol"][..],
        ),
    ];
    for (name, spec, holders) in cases {
        let chain = chain(&manifest(&format!(
            "{spec}      headersFromMetadata: {{ x-user-id: {{ name: user-id }} }}\n"
        )))
        .await;
        for who in ["alice", "bob", "carol", "opaque"] {
            let mut r = get_with("/", "api-key", &format!("{who}-key-0123456789"));
            let d = chain.authorize(&mut r).await;
            assert_eq!(d.is_allow(), holders.contains(&who), "case {name}: {who}");
            if d.is_allow() && who != "bob" {
                assert_eq!(
                    upstream(&d, "x-user-id").as_deref(),
                    Some(who),
                    "case {name}"
                );
                assert_eq!(r.state["apiKey"]["user-id"], who, "case {name}");
            }
        }
    }

    // skipMetadataValidation: bob's key lacks the required entry; it loads,
    // and is refused.
    let chain = chain(&manifest(
        "      labelSelector: { team: infrastructure }\n      headersFromMetadataEntry: { x-user-id: { name: user-id, required: true } }\n      skipMetadataValidation: true\n",
    ))
    .await;
    let mut r = get_with("/", "api-key", "alice-key-0123456789");
    assert!(chain.authorize(&mut r).await.is_allow());
    let mut r = get_with("/", "api-key", "bob-key-0123456789");
    assert_eq!(status(&chain.authorize(&mut r).await), 401);
}

#[tokio::test]
async fn bad_secret_references_name_what_is_missing() {
    let at = "spec.configs[0].apiKeyAuth";
    let cases = [
        (
            "      apiKeySecretRefs: [{ name: nobody }]\n",
            format!("{at}.apiKeySecretRefs[0]"),
            "no Secret gloo-system/nobody was read",
        ),
        (
            "      apiKeySecretRefs: [{ name: opaque }]\n",
            format!("{at}.apiKeySecretRefs[0]"),
            "expected a Secret of type `extauth.solo.io/apikey`",
        ),
        (
            "      apiKeySecretRefs: [{ name: bob }]\n      headersFromMetadataEntry: { x-user-id: { name: user-id, required: true } }\n",
            format!("{at}.apiKeySecretRefs[0].metadata"),
            "missing metadata entry `user-id`",
        ),
        (
            "      labelSelector: { team: apps }\n      k8sSecretApikeyStorage: { labelSelector: { team: apps } }\n",
            at.to_owned(),
            "not both",
        ),
    ];
    for (spec, place, message) in cases {
        let e = load_error(&manifest(spec)).await;
        // The AuthConfig is the fifth document, after the four Secrets.
        assert_eq!(
            e.place(),
            Some(format!("{ORIGIN} document 5: {place}").as_str()),
            "{e}"
        );
        assert!(e.to_string().contains(message), "{e}");
        assert!(!e.to_string().contains("key-0123456789"), "{e}");
    }
}

#[tokio::test]
async fn what_a_selector_picks_never_stops_a_reload() {
    // A selected Secret without a required entry loads, and its key is
    // refused; a selector that picks nothing refuses every key: either may
    // be a revocation, which a config error would stop.
    let chain = crate::common::chain(&manifest(
        "      labelSelector: { team: infrastructure }\n      headersFromMetadataEntry: { x-user-id: { name: user-id, required: true } }\n",
    ))
    .await;
    let mut r = get_with("/", "api-key", "alice-key-0123456789");
    assert!(chain.authorize(&mut r).await.is_allow());
    let mut r = get_with("/", "api-key", "bob-key-0123456789");
    assert_eq!(status(&chain.authorize(&mut r).await), 401);

    let chain = crate::common::chain(&manifest("      labelSelector: { team: nobody }\n")).await;
    for who in ["alice", "bob", "carol"] {
        let mut r = get_with("/", "api-key", &format!("{who}-key-0123456789"));
        assert_eq!(status(&chain.authorize(&mut r).await), 401, "{who}");
    }

    // A Secret named twice, or named and selected, counts once.
    let chain = crate::common::chain(&manifest(
        "      apiKeySecretRefs: [{ name: alice }, { name: alice, namespace: gloo-system }]\n      labelSelector: { team: infrastructure }\n",
    ))
    .await;
    let mut r = get_with("/", "api-key", "alice-key-0123456789");
    assert!(chain.authorize(&mut r).await.is_allow());

    // Selected Secrets whose metadata cannot be a header, whose key is
    // empty, or whose key another holds: each left out or refused, the
    // rest served.
    let odd = |name: &str, data: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: gloo-system, labels: {{ team: infrastructure }} }}\ntype: extauth.solo.io/apikey\nstringData: {data}\n---\n"
        )
    };
    let text = format!(
        "{}{}{}{}",
        odd(
            "newline",
            "{ api-key: jose-key-0123456789, user-id: \"line\\nbreak\" }"
        ),
        odd("empty", "{ api-key: '', user-id: empty }"),
        odd("copy", "{ api-key: bob-key-0123456789, user-id: mallory }"),
        manifest(
            "      labelSelector: { team: infrastructure }\n      headersFromMetadataEntry: { x-user-id: { name: user-id } }\n"
        )
    );
    let chain = crate::common::chain(&text).await;
    let mut r = get_with("/", "api-key", "alice-key-0123456789");
    assert!(chain.authorize(&mut r).await.is_allow());
    for key in ["jose-key-0123456789", ""] {
        let mut r = get_with("/", "api-key", key);
        assert_eq!(status(&chain.authorize(&mut r).await), 401, "{key}");
    }
    // The first holder of bob's key keeps it (Secrets are read in name
    // order: `bob` before `copy`), never mallory.
    let mut r = get_with("/", "api-key", "bob-key-0123456789");
    let decision = chain.authorize(&mut r).await;
    let allow = decision.as_allow().expect("bob's key");
    assert!(
        allow.headers.iter().all(|h| h.value != "mallory"),
        "{allow:?}"
    );
}
