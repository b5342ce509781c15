//! `opaAuth`.

use base64::Engine as _;
use http::{HeaderName, HeaderValue, Method};

use crate::common::*;

fn opa(policy: &str, extra: &str) -> String {
    let policy = policy.replace('\n', "\n        ");
    format!(
        r#"
name: o
configs:
- opaAuth:
    query: data.t.result
    allowedUpstreamHeaders: [x-role]
{extra}    modules:
      t.rego: |
        {policy}
"#
    )
}

#[tokio::test]
async fn opa_envoy_istio_example_runs_unchanged() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples-config/opa.yaml"
    ))
    .unwrap();
    let chain = chain(&yaml).await;
    let auth = |user: &str| {
        let raw = base64::engine::general_purpose::URL_SAFE.encode(format!("{user}:password"));
        format!("Basic {raw}")
    };
    let cases = [
        ("GET", "/health", None, 200),
        ("POST", "/health", None, 403),
        ("GET", "/productpage", Some("alice"), 200),
        ("GET", "/api/v1/products", Some("alice"), 403),
        ("GET", "/api/v1/products", Some("bob"), 200),
        ("GET", "/productpage", Some("mallory"), 403),
        ("GET", "/productpage", None, 403),
    ];
    for (m, p, user, want) in cases {
        let mut r = req(Method::from_bytes(m.as_bytes()).unwrap(), p);
        if let Some(user) = user {
            r = r.with_header(
                http::header::AUTHORIZATION,
                HeaderValue::try_from(auth(user)).unwrap(),
            );
        }
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "{m} {p} {user:?}");
    }
}

#[tokio::test]
async fn an_object_result_sets_headers_or_shapes_the_deny() {
    let chain = chain(&opa(
        r#"package t
import rego.v1
default result := {"allowed": false, "http_status": 418, "body": "no tea", "headers": {"x-why": "policy"}}
result := {"allowed": true, "headers": {"x-role": "reader", "x-sneaky": "1"}, "response_headers_to_add": {"x-seen": "yes"}, "dynamic_metadata": {"role": "reader", "tier": {"n": 2}}} if {
	input.method == "GET"
	input.parsed_query.v == ["1"]
	input.headers["x-a"] == "1,2"
	input.attributes.request.http.host == "api.example.com"
	data.readers[_] == input.context.tenant
}"#,
        "    data: { readers: [acme] }\n",
    ))
    .await;
    let mut r = req(Method::GET, "/p?v=1")
        .with_host("api.example.com")
        .with_header(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("1"),
        )
        .with_header(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("2"),
        );
    r.context.insert("tenant".into(), "acme".into());
    let mut denied = r.clone();
    let d = chain.authorize(&mut r).await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(upstream(&d, "x-role").as_deref(), Some("reader"));
    assert_eq!(
        upstream(&d, "x-sneaky"),
        None,
        "not in allowedUpstreamHeaders"
    );
    assert_eq!(d.as_allow().unwrap().response_headers[0].name, "x-seen");
    assert_eq!(
        serde_json::Value::Object(d.as_allow().unwrap().dynamic_metadata.clone()),
        serde_json::json!({ "role": "reader", "tier": { "n": 2 } })
    );

    denied.context.insert("tenant".into(), "other".into());
    let d = chain.authorize(&mut denied).await;
    let deny = d.as_deny().expect("deny");
    assert_eq!(deny.status, 418);
    assert_eq!(deny.body, "no tea");
    assert_eq!(deny.headers["x-why"], "policy");
}

/// A body with a byte that is not UTF-8 still reaches the policy, the
/// byte as U+FFFD: a policy that refuses a word in the body is not passed
/// by a stray byte beside it.
#[tokio::test]
async fn a_body_that_is_not_utf8_reaches_the_policy() {
    let chain = chain(&opa(
        "package t\nimport rego.v1\nresult if not contains(input.attributes.request.http.body, \"evil\")\n",
        "",
    ))
    .await;
    for (body, want) in [
        (&b"fine"[..], 200),
        (&b"evil"[..], 403),
        (&b"evil\xff"[..], 403),
        (&b"\xfe evil"[..], 403),
    ] {
        let mut r = req(Method::POST, "/x");
        r.body = Some(bytes::Bytes::copy_from_slice(body));
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "{body:?}: {d:?}");
    }
}

#[tokio::test]
async fn boolean_results_and_odd_input() {
    let chain = chain(&opa(
        "package t\nimport rego.v1\nresult if input.path == \"/ok\"\n",
        "",
    ))
    .await;
    // (case, request, the status)
    let cases = [
        ("true", req(Method::GET, "/ok"), 200),
        ("undefined is a deny", req(Method::GET, "/no"), 403),
        (
            "headers not UTF-8 and huge",
            req(Method::GET, "/no")
                .with_header(
                    HeaderName::from_static("x-bin"),
                    HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
                )
                .with_header(
                    HeaderName::from_static("x-huge"),
                    HeaderValue::try_from("a".repeat(100_000)).unwrap(),
                ),
            403,
        ),
    ];
    for (name, mut r, want) in cases {
        let d = chain.authorize(&mut r).await;
        assert_eq!(status(&d), want, "case {name}: {d:?}");
    }
}

/// As Gloo's: any value but `true` is a deny, never a step error (which
/// `statusOnError` would answer); with `== true`, an object that would
/// allow as OPA-Envoy's is no `true` either. The step calls no server, so
/// `failureModeAllow` on it is a config error: nothing it fails on is an
/// outage to ride out.
#[tokio::test]
async fn a_result_of_the_wrong_type_is_a_deny_even_failing_open() {
    let erring = |policy: &str| opa(policy, "").replace("configs:", "statusOnError: 503\nconfigs:");
    let chain = chain(&erring("package t\nresult := 5\n")).await;
    assert_eq!(
        status(&chain.authorize(&mut req(Method::GET, "/")).await),
        403
    );
    let open = opa("package t\nresult := 5\n", "")
        .replace("- opaAuth:", "- failureModeAllow: true\n  opaAuth:");
    let error = load_error(&open).await.to_string();
    assert!(
        error.contains("configs[0].opaAuth") && error.contains("failureModeAllow"),
        "{error}"
    );
    let object = GLOO_OPA.replace(
        "    default allow = false",
        "    default allow = false\n    verdict = {\"allowed\": true}",
    );
    let as_object =
        crate::common::chain(&object.replace("\"data.test.allow == true\"", "data.test.verdict"))
            .await;
    assert!(
        as_object
            .authorize(&mut req(Method::GET, "/"))
            .await
            .is_allow()
    );
    let strict = crate::common::chain(&object.replace(
        "\"data.test.allow == true\"",
        "\"data.test.verdict == true\"",
    ))
    .await;
    let decision = strict.authorize(&mut req(Method::GET, "/")).await;
    assert_eq!(status(&decision), 403);
}

#[tokio::test]
async fn bad_opa_configs_name_their_place() {
    let cases = [
        (
            opa("package t\nresult if {", ""),
            "configs[0].opaAuth.modules.t.rego",
        ),
        (
            opa("package t\nresult := true", "").replace("data.t.result", "allow"),
            "configs[0].opaAuth.query",
        ),
        (
            opa("package t\nresult := true", "").replace("data.t.result", "data.t.result[0]"),
            "configs[0].opaAuth.query",
        ),
        (
            opa("package t\nresult := true", "    data: [1]\n"),
            "configs[0].opaAuth.data",
        ),
        (
            opa("package t\nresult := true", "    evalTimeout: 0s\n"),
            "configs[0].opaAuth.evalTimeout",
        ),
        (
            opa(
                "package t\nresult := true",
                "    moduleFiles: [/nonexistent/x.rego]\n",
            ),
            "configs[0].opaAuth.moduleFiles[0]",
        ),
        (
            opa(
                "package t\nresult := true",
                "    allowedUpstreamHeaders: ['a b']\n",
            )
            .replace("    allowedUpstreamHeaders: [x-role]\n", ""),
            "configs[0].opaAuth.allowedUpstreamHeaders[0]",
        ),
        (
            "name: o\nconfigs:\n- opaAuth: { query: data.t.x }\n".to_owned(),
            "configs[0].opaAuth.modules",
        ),
    ];
    for (yaml, place) in cases {
        assert_bad_config(&yaml, place, &[]).await;
    }
    // A module regorus cannot read: where, and why, on one line (Gloo's OPA
    // guide destructures at package level, which regorus does not take).
    let e = load_error(&opa("package t\n[a, b] := [1, 2]\nresult := true", ""))
        .await
        .to_string();
    let (_, why) = e.split_once("t.rego:2:").expect("the line in the module");
    assert!(
        why.split_once(": ")
            .is_some_and(|(_, why)| !why.trim().is_empty())
            && !e.contains("-->"),
        "the place in the module and the reason: {e}"
    );
}

#[tokio::test]
async fn parsed_path_and_query_are_decoded_as_opa_envoy_decodes_them() {
    // OPA-Envoy: parsed_path is the decoded path without its leading `/`,
    // split at `/`; parsed_query is decoded, `+` a space.
    let chain = chain(&opa(
        r#"package t
import rego.v1
result if {
	input.parsed_path == ["public", "a b", "caf\u00e9"]
	input.parsed_query["q x"] == ["1 2", "/../c"]
}"#,
        "",
    ))
    .await;
    let cases = [
        ("/public/a%20b/caf%C3%A9?q+x=1%202&q%20x=%2F..%2Fc", 200),
        // The same path by another road: slashes merged, escapes made one.
        ("/public//a%20b/caf%c3%a9?q+x=1+2&q+x=/../c", 200),
        // Dot segments never reach the policy.
        ("/public/x/../a%20b/caf%C3%A9?q+x=1+2", 400),
        ("/public/a%20b?q+x=1+2", 403),
        // Ambiguous paths never reach the policy.
        ("/public/a%2Fb/caf%C3%A9?q+x=1+2", 400),
    ];
    for (path, want) in cases {
        let d = chain.authorize(&mut req(Method::GET, path)).await;
        assert_eq!(status(&d), want, "{path}");
    }

    let root = chain_for_root().await;
    assert!(root.authorize(&mut req(Method::GET, "/")).await.is_allow());
}

/// A policy that allows only `/`, whose parsed_path is `[""]` in OPA-Envoy.
async fn chain_for_root() -> std::sync::Arc<authchain_core::Chain> {
    chain(&opa(
        "package t\nimport rego.v1\nresult if input.parsed_path == [\"\"]\n",
        "",
    ))
    .await
}

/// Gloo's OPA guide: its policy (Rego v0, as Gloo's OPA reads it) in the
/// ConfigMap `kubectl create configmap --from-file=policy.rego` makes, and
/// its AuthConfig naming it.
const GLOO_OPA: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: allow-get-users, namespace: gloo-system }
data:
  policy.rego: |
    package test

    default allow = false
    allow {
        startswith(input.http_request.path, "/api/pets")
        input.http_request.method == "GET"
    }
    allow {
        input.http_request.path == "/api/pets/2"
        any({input.http_request.method == "GET",
            input.http_request.method == "DELETE"
        })
    }
    allow {
        input.check_request.attributes.request.http.headers["api-token"] == "t0ken"
        input.state.seen == true
    }
---
apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: { name: opa, namespace: gloo-system }
spec:
  configs:
  - opaAuth:
      modules:
      - name: allow-get-users
        namespace: gloo-system
      query: "data.test.allow == true"
"#;

#[tokio::test]
async fn gloo_s_opa_guide_runs_unchanged() {
    let chain = chain(GLOO_OPA).await;
    let cases = [
        (Method::GET, "/api/pets", None, true),
        (Method::GET, "/api/", None, false),
        (Method::DELETE, "/api/pets/1", None, false),
        (Method::DELETE, "/api/pets/2", None, true),
        (Method::POST, "/other", Some("t0ken"), false), // state.seen is not set
    ];
    for (method, path, token, allowed) in cases {
        let mut r = req(method.clone(), path);
        if let Some(t) = token {
            r.headers.insert(
                HeaderName::from_static("api-token"),
                HeaderValue::from_static(t),
            );
        }
        let d = chain.authorize(&mut r).await;
        assert_eq!(d.is_allow(), allowed, "case {method} {path}");
        if !allowed {
            assert_eq!(status(&d), 403, "case {method} {path}");
        }
    }
    // Gloo's input.state: what an earlier step wrote.
    let mut r = req(Method::POST, "/other");
    r.headers.insert(
        HeaderName::from_static("api-token"),
        HeaderValue::from_static("t0ken"),
    );
    r.state.insert("seen", serde_json::json!(true));
    assert!(chain.authorize(&mut r).await.is_allow());
}

#[tokio::test]
async fn a_decision_reason_goes_to_dynamic_metadata() {
    let yaml = GLOO_OPA
        .replace(
            "    default allow = false",
            "    default allow = false\n    decision = [allow, \"because\"]",
        )
        .replace(
            "      query: \"data.test.allow == true\"",
            "      query: data.test.decision\n      options: { returnDecisionReason: true, fastInputConversion: true }",
        )
        .replace("  - opaAuth:", "  - name: policy\n    opaAuth:");
    let chain = chain(&yaml).await;
    let mut r = req(Method::GET, "/api/pets");
    let d = chain.authorize(&mut r).await;
    assert_eq!(
        serde_json::Value::Object(d.as_allow().expect("allow").dynamic_metadata.clone()),
        serde_json::json!({ "policy": { "reason": { "allowed": true, "body": "because" } } })
    );
    let mut r = req(Method::GET, "/api/");
    assert_eq!(status(&chain.authorize(&mut r).await), 403);
}

#[tokio::test]
async fn bad_config_map_references_name_what_is_missing() {
    let at = "t document 2: spec.configs[0].opaAuth.modules[0]";
    let cases = [
        (
            GLOO_OPA.replace("      - name: allow-get-users\n", "      - name: nobody\n"),
            "no ConfigMap gloo-system/nobody was read",
        ),
        (
            GLOO_OPA.replace("    package test", "    package test s3cr3t {"),
            "ConfigMap gloo-system/allow-get-users, policy.rego:",
        ),
    ];
    for (yaml, message) in cases {
        let e = load_error(&yaml).await;
        assert_eq!(e.place(), Some(at), "{e}");
        assert!(e.to_string().contains(message), "{e}");
    }
}

#[tokio::test]
async fn an_array_result_allows_only_as_gloo_s_decision_reason() {
    // Without returnDecisionReason an array is no answer: a deny,
    // whatever its first element.
    let yaml = GLOO_OPA
        .replace(
            "    default allow = false",
            "    default allow = false\n    checks = [true, false, false]",
        )
        .replace(
            "      query: \"data.test.allow == true\"",
            "      query: data.test.checks",
        );
    let chain = chain(&yaml).await;
    let mut r = req(Method::GET, "/api/pets");
    let d = chain.authorize(&mut r).await;
    assert!(!d.is_allow(), "{d:?}");
    // And with it, only `[allowed, body]`.
    let chain = crate::common::chain(&yaml.replace(
        "      query: data.test.checks",
        "      query: data.test.checks\n      options: { returnDecisionReason: true }",
    ))
    .await;
    let mut r = req(Method::GET, "/api/pets");
    assert!(!chain.authorize(&mut r).await.is_allow());
    // A genuine `[true, body]` allows.
    let pair = yaml
        .replace(
            "checks = [true, false, false]",
            "checks = [true, {\"why\": \"pets\"}]",
        )
        .replace(
            "      query: data.test.checks",
            "      query: data.test.checks\n      options: { returnDecisionReason: true }",
        );
    assert!(pair.contains("[true, {"), "{pair}");
    let chain = crate::common::chain(&pair).await;
    let mut r = req(Method::GET, "/api/pets");
    assert!(chain.authorize(&mut r).await.is_allow());
}

/// OPA's `io.jwt.decode`, which regorus lacks and Gloo's OPA guide uses on
/// the ID token in `input.state.jwt`: header, payload and the signature in
/// hex, unverified; anything but a compact JWS fails the policy closed.
#[tokio::test]
async fn io_jwt_decode_reads_a_token_without_verifying_it() {
    let chain = chain(&opa(
        "package t\nimport rego.v1\ndefault result := false\nresult if {\n  [h, p, s] := io.jwt.decode(input.attributes.request.http.headers[\"x-token\"])\n  h.alg == \"RS256\"\n  p.email == \"alice@example.com\"\n  s == \"0102ff\"\n}\n",
        "",
    ))
    .await;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256"}"#),
        b64(r#"{"email":"alice@example.com"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8, 2, 255])
    );
    let other = token.replace(
        &b64(r#"{"email":"alice@example.com"}"#),
        &b64(r#"{"email":"eve@example.com"}"#),
    );
    for (value, allowed) in [
        (token.as_str(), true),
        (other.as_str(), false),
        ("not.a.jws.at-all", false),
        ("a.b", false),
        ("!!.??.**", false),
    ] {
        let mut r = get_with("/", "x-token", value);
        assert_eq!(chain.authorize(&mut r).await.is_allow(), allowed, "{value}");
    }
}

/// As in OPA (and so Gloo), a builtin that cannot take a client's value
/// (a token that is no JWS, text that is no base64) makes its expression
/// undefined, and `default result := false` decides: a deny, never a
/// step error (here 503).
#[tokio::test]
async fn a_builtin_that_fails_on_a_client_value_is_undefined_even_failing_open() {
    let policy = opa(
        "package t\nimport rego.v1\ndefault result := false\nresult if {\n  [_, p, _] := io.jwt.decode(input.attributes.request.http.headers[\"x-token\"])\n  p.role == \"admin\"\n}\nresult if {\n  base64.decode(input.attributes.request.http.headers[\"x-b64\"]) == \"admin\"\n}\n",
        "",
    )
    .replace("configs:", "statusOnError: 503\nconfigs:");
    assert!(policy.contains("statusOnError"), "{policy}");
    let chain = chain(&policy).await;
    for (header, value) in [
        ("x-token", "garbage"),
        ("x-token", "a.b.c"),
        ("x-b64", "!!not base64!!"),
    ] {
        let decision = chain.authorize(&mut get_with("/", header, value)).await;
        assert_eq!(status(&decision), 403, "{header}: {value}: {decision:?}");
    }
    let admin = base64::engine::general_purpose::STANDARD.encode("admin");
    let mut r = get_with("/", "x-b64", &admin);
    assert!(chain.authorize(&mut r).await.is_allow());
}

/// The headers are Envoy's CheckRequest's, as Gloo's policies read them:
/// its pseudo-headers too, and repeated values joined with `,`.
#[tokio::test]
async fn the_input_headers_are_envoy_s_pseudo_headers_and_all() {
    let chain = chain(&opa(
        r#"package t
import rego.v1
h := input.attributes.request.http.headers
result if {
	h[":authority"] == "app.example"
	h[":method"] == "GET"
	h[":path"] == "/x?y=1"
	h["x-two"] == "a,b"
}"#,
        "",
    ))
    .await;
    let mut r = req(Method::GET, "/x?y=1").with_host("app.example");
    r.headers.append("x-two", HeaderValue::from_static("a"));
    r.headers.append("x-two", HeaderValue::from_static("b"));
    assert!(chain.authorize(&mut r).await.is_allow());
    let mut other = req(Method::GET, "/x?y=1").with_host("admin.example");
    other.headers.append("x-two", HeaderValue::from_static("a"));
    other.headers.append("x-two", HeaderValue::from_static("b"));
    assert_eq!(status(&chain.authorize(&mut other).await), 403);
}
