//! Each of the core's four header actions, as the upstream and the client
//! see them through real Envoy 1.40, with the header present and absent.

use crate::common::{Opts, Stack, route};

const ACTIONS: [&str; 4] = ["append", "addIfAbsent", "overwrite", "overwriteIfExists"];

fn configs(field: &str, header: &str) -> String {
    ACTIONS
        .iter()
        .map(|a| {
            format!(
                "name: {a}\nconfigs:\n- pluginAuth: {{name: Script, config: {{{field}: [[{a}, {header}, auth]]}}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn routes() -> Vec<crate::common::Route> {
    ACTIONS
        .iter()
        .map(|a| route(Box::leak(format!("/{a}/").into_boxed_str()), a))
        .collect()
}

#[tokio::test]
async fn upstream_header_actions_apply_as_the_core_defines_them() {
    let stack = Stack::start(&configs("headers", "x-h"), &routes(), Opts::default()).await;
    // (action, upstream sees when the client sent `x-h: client`, when it did not)
    let expected: [(&str, &[&str], &[&str]); 4] = [
        ("append", &["client", "auth"], &["auth"]),
        ("addIfAbsent", &["client"], &["auth"]),
        ("overwrite", &["auth"], &["auth"]),
        ("overwriteIfExists", &["auth"], &[]),
    ];
    for (action, present, absent) in expected {
        let path = format!("/{action}/x");
        let seen = stack
            .get(&path, &[("x-h", "client")])
            .await
            .echoed()
            .unwrap();
        assert_eq!(
            seen.header_values("x-h"),
            present,
            "{action} with the header present"
        );
        let seen = stack.get(&path, &[]).await.echoed().unwrap();
        assert_eq!(
            seen.header_values("x-h"),
            absent,
            "{action} with the header absent"
        );
    }
}

#[tokio::test]
async fn client_response_header_actions_apply_as_the_core_defines_them() {
    let stack = Stack::start(
        &configs("responseHeaders", "x-r"),
        &routes(),
        Opts::default(),
    )
    .await;
    // (action, client sees when the upstream answered `x-r: upstream`, when it did not)
    let expected: [(&str, &[&str], &[&str]); 4] = [
        ("append", &["upstream", "auth"], &["auth"]),
        ("addIfAbsent", &["upstream"], &["auth"]),
        ("overwrite", &["auth"], &["auth"]),
        ("overwriteIfExists", &["auth"], &[]),
    ];
    for (action, present, absent) in expected {
        let path = format!("/{action}/x");
        // The echo upstream answers `x-r: upstream` when asked to.
        let reply = stack.get(&path, &[("x-echo-set-x-r", "upstream")]).await;
        assert_eq!(
            reply.header_values("x-r"),
            present,
            "{action} with the header present"
        );
        let reply = stack.get(&path, &[]).await;
        assert_eq!(
            reply.header_values("x-r"),
            absent,
            "{action} with the header absent"
        );
    }
}

#[tokio::test]
async fn mutations_of_several_steps_merge_as_in_the_gloo_example() {
    // Incoming `one: foo`; step 1 sets `one: bar`; step 2 appends
    // `one: baz` and adds `two: asd` → upstream gets `one: bar, baz`, `two: asd`.
    let configs = r#"
name: gloo
configs:
- pluginAuth: { name: Script, config: { headers: [[overwrite, one, bar]] } }
- pluginAuth: { name: Script, config: { headers: [[append, one, baz], [append, two, asd]] } }
"#;
    let stack = Stack::start(configs, &[route("/", "gloo")], Opts::default()).await;
    let seen = stack.get("/x", &[("one", "foo")]).await.echoed().unwrap();
    assert_eq!(seen.header_values("one"), ["bar", "baz"]);
    assert_eq!(seen.header_values("two"), ["asd"]);
}

#[tokio::test]
async fn appends_to_an_absent_header_keep_every_value() {
    // Envoy drops an `append: true` entry for a header that does not exist,
    // so the first value must be sent as a set.
    let configs = r#"
name: appends
configs:
- pluginAuth: { name: Script, config: { headers: [[append, x-new, a], [append, x-new, b]] } }
- pluginAuth: { name: Script, config: { headers: [[addIfAbsent, x-new, c], [addIfAbsent, x-other, d]] } }
"#;
    let stack = Stack::start(configs, &[route("/", "appends")], Opts::default()).await;
    let seen = stack.get("/x", &[]).await.echoed().unwrap();
    assert_eq!(seen.header_values("x-new"), ["a", "b"]);
    assert_eq!(seen.header_values("x-other"), ["d"]);
    let seen = stack
        .get("/x", &[("x-new", "client")])
        .await
        .echoed()
        .unwrap();
    assert_eq!(seen.header_values("x-new"), ["client", "a", "b"]);
}
