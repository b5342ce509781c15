//! The decision log: a record per sampled decision, with each step's
//! result, and nothing of the request the config does not name.

use std::sync::{Arc, Mutex};

use authchain_core::decision_log::{DecisionLog, Sampling};
use authchain_core::{
    Allow, AuthConfig, AuthorizationRequest, Decision, Engine, Error, Format, PluginRegistry,
    UserInfo, decide_fn, plugin_fn,
};
use http::{HeaderName, HeaderValue, Method};
use serde_json::Value;

/// Records, as the sink got them.
type Records = Arc<Mutex<Vec<String>>>;

/// Steps by name: `Allow` (user alice), `Deny` (401), `Fail`, and
/// `PublicOnly` (allows /public/ only).
fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(plugin_fn("Allow", |_: Value, _| {
        Ok(Arc::new(decide_fn(|_| {
            Ok(Allow::new().user(UserInfo::new("alice")).into())
        })))
    }));
    registry.register(plugin_fn("Deny", |_: Value, _| {
        Ok(Arc::new(decide_fn(|_| Ok(Decision::unauthenticated()))))
    }));
    registry.register(plugin_fn("Fail", |_: Value, _| {
        Ok(Arc::new(decide_fn(|_| Err(Error::step("backend down")))))
    }));
    crate::support::register_public_only(&mut registry);
    registry.register(plugin_fn("ReadsTenant", |_: Value, _| {
        Ok(Arc::new(ReadsTenant))
    }));
    registry.register(plugin_fn("Busy", |_: Value, _| {
        Ok(Arc::new(decide_fn(|_| {
            std::thread::sleep(std::time::Duration::from_millis(60));
            Ok(Decision::authorized())
        })))
    }));
    registry.register(plugin_fn("Mints", |_: Value, _| {
        Ok(Arc::new(decide_fn(|_| {
            Ok(Allow::new()
                .set_header(
                    HeaderName::from_static("x-request-id"),
                    HeaderValue::from_static("minted-s3cret"),
                )
                .into())
        })))
    }));
    registry
}

/// A step that takes `x-tenant` for a credential of its own (an API key
/// under a name the log's guard does not know) and says it reads it.
struct ReadsTenant;

#[authchain_core::async_trait]
impl authchain_core::AuthService for ReadsTenant {
    fn authorize<'a>(&'a self, _: &'a mut AuthorizationRequest) -> authchain_core::Answer<'a> {
        Decision::authorized().into()
    }

    fn reads(&self) -> Option<Vec<authchain_core::Attribute>> {
        Some(vec![authchain_core::Attribute::header(
            HeaderName::from_static("x-tenant"),
        )])
    }
}

async fn engine(yaml: &str, every: Option<Sampling>) -> (Engine, Records) {
    let records = Records::default();
    let sink = records.clone();
    let mut log = DecisionLog::new(move |r: String| sink.lock().unwrap().push(r));
    if let Some(sampling) = every {
        log = log.every_config(sampling).unwrap();
    }
    let engine = Engine::new(registry()).with_decision_log(log);
    engine
        .load(&AuthConfig::parse("t.yaml", yaml, Format::Yaml).unwrap())
        .await
        .unwrap();
    (engine, records)
}

fn records(records: &Records) -> Vec<Value> {
    records
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

/// A request with a secret in every place a client can put one.
fn request(path: &str) -> AuthorizationRequest {
    let mut r = AuthorizationRequest::new(Method::POST, path);
    r.host = "app.example".into();
    r.id = "req-7".into();
    for (name, value) in [
        ("authorization", "Bearer s3cret-bearer"),
        ("cookie", "session=s3cret-cookie"),
        ("x-api-key", "s3cret-key"),
        ("x-request-id", "req-7"),
        ("x-tenant", "acme"),
        ("x-auth-request-user", "bob"),
    ] {
        r.headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    r.body = Some(bytes::Bytes::from_static(b"s3cret-body"));
    r
}

const CONFIGS: &str = "name: in-order
decisionLog: { headers: [x-request-id] }
configs:
- { name: first, pluginAuth: { name: Allow } }
- { name: second, pluginAuth: { name: PublicOnly } }
---
name: failing
decisionLog: {}
configs:
- { name: open, pluginAuth: { name: Fail }, failureModeAllow: true }
- { name: closed, pluginAuth: { name: Fail } }
---
name: cached
decisionLog: {}
cache: { key: [path], trustKey: true }
configs:
- pluginAuth: { name: Allow }
---
name: silent
configs:
- pluginAuth: { name: Allow }
";

#[tokio::test]
async fn each_decision_is_one_record_with_its_steps() {
    let (engine, sink) = engine(CONFIGS, None).await;
    let generation = engine.current();
    let chain = |name| generation.chain(name).unwrap().clone();

    let d = chain("in-order")
        .authorize(&mut request("/public//%62?token=s3cret-query"))
        .await;
    assert!(d.is_allow());
    let d = chain("in-order").authorize(&mut request("/private")).await;
    assert_eq!(d.as_deny().unwrap().status, 401);
    chain("failing").authorize(&mut request("/x")).await;
    for _ in 0..2 {
        chain("cached").authorize(&mut request("/c")).await;
    }
    chain("silent").authorize(&mut request("/s")).await;
    let d = chain("in-order").authorize(&mut request("/a%2fb")).await;
    assert_eq!(d.as_deny().unwrap().status, 400);

    let logged = records(&sink);
    assert_eq!(logged.len(), 6, "{logged:#?}");
    let [allowed, denied, failed, first, again, refused] = &logged[..] else {
        unreachable!()
    };
    assert_eq!(refused["result"]["status"], 400);
    assert_eq!(refused["cached"], false, "refused, not remembered");
    assert_eq!(refused["steps"], serde_json::json!([]));

    assert_eq!(allowed["config"], "in-order");
    assert_eq!(allowed["generation"], 1);
    assert_eq!(allowed["transport"], "in_process");
    assert_eq!(allowed["request_id"], "req-7");
    assert_eq!(allowed["labels"]["app"], "authchain");
    assert_eq!(allowed["input"]["method"], "POST");
    assert_eq!(allowed["input"]["path"], "/public/b", "canonical, no query");
    assert_eq!(allowed["input"]["host"], "app.example");
    assert_eq!(
        allowed["input"]["headers"],
        serde_json::json!({ "x-request-id": "req-7" })
    );
    assert_eq!(
        allowed["result"],
        serde_json::json!({ "allowed": true, "status": 200 })
    );
    assert_eq!(allowed["user_id"], "alice");
    assert_eq!(allowed["cached"], false);
    let steps = allowed["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "second"]);
    assert!(
        steps
            .iter()
            .all(|s| s["result"] == "allow" && s["duration_ns"].is_u64())
    );
    assert!(
        allowed["metrics"]["timer_authchain_decision_ns"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(allowed["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_ne!(allowed["decision_id"], denied["decision_id"]);

    assert_eq!(
        denied["result"],
        serde_json::json!({ "allowed": false, "status": 401 })
    );
    assert_eq!(denied["steps"][1]["result"], "deny");
    assert_eq!(denied["steps"][1]["status"], 401);
    assert_eq!(denied["user_id"], Value::Null);

    let steps = failed["steps"].as_array().unwrap();
    assert_eq!(steps[0]["result"], "failure_mode_allowed");
    assert_eq!(steps[1]["result"], "error");
    assert!(steps[1]["error"].as_str().unwrap().contains("backend down"));
    assert_eq!(failed["result"]["error"], true);
    assert!(
        failed["result"]["cause"]
            .as_str()
            .unwrap()
            .contains("backend down")
    );
    assert_eq!(failed["result"]["status"], 403);

    assert_eq!(first["cached"], false);
    assert_eq!(again["cached"], true, "the cache's answer");
    assert_eq!(again["steps"], serde_json::json!([]));

    // No credential, cookie, query, body or unnamed header.
    let text = sink.lock().unwrap().join("\n");
    assert!(!text.contains("s3cret"), "{text}");
}

/// An allow that came past the deadline is logged as the error it is,
/// with its cause, though every step allowed.
#[tokio::test]
async fn a_late_allow_is_logged_with_its_cause() {
    let (engine, sink) = engine(
        "name: late\ndecisionLog: {}\ndeadline: 20ms\nconfigs:\n- { name: busy, pluginAuth: { name: Busy } }\n",
        None,
    )
    .await;
    let chain = engine.current().chain("late").unwrap().clone();
    let d = chain.authorize(&mut request("/x")).await;
    assert!(!d.is_allow());
    let logged = records(&sink);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["result"]["error"], true, "{}", logged[0]);
    let cause = logged[0]["result"]["cause"].as_str().unwrap_or_default();
    assert!(cause.contains("deadline"), "{}", logged[0]);
}

#[tokio::test]
async fn sampling_every_config_and_the_config_s_own() {
    let yaml = "name: all\nconfigs:\n- pluginAuth: { name: Allow }\n---\nname: none\ndecisionLog: { sample: 0 }\nconfigs:\n- pluginAuth: { name: Allow }\n";
    let (engine, sink) = engine(
        yaml,
        Some(
            Sampling::default()
                .header("x-tenant")
                .header("x-auth-request-user"),
        ),
    )
    .await;
    let generation = engine.current();
    for name in ["all", "none"] {
        for _ in 0..10 {
            generation
                .chain(name)
                .unwrap()
                .authorize(&mut request("/"))
                .await;
        }
    }
    let logged = records(&sink);
    assert_eq!(logged.len(), 10, "every decision of `all`, none of `none`");
    assert!(logged.iter().all(|r| r["config"] == "all"));
    // A header the server's settings name is logged by value.
    assert_eq!(logged[0]["input"]["headers"]["x-tenant"], "acme");
    // An identity a proxy sends on is no credential.
    assert_eq!(logged[0]["input"]["headers"]["x-auth-request-user"], "bob");

    // A share outside 0..1, a bad header name: config errors, placed.
    for (block, place) in [
        ("{ sample: 1.5 }", "decisionLog.sample"),
        ("{ headers: ['bad name'] }", "decisionLog.headers[0]"),
        ("{ unknown: 1 }", "decisionLog"),
        ("{ headers: [Authorization] }", "decisionLog.headers[0]"),
        ("{ headers: [x-a, cookie] }", "decisionLog.headers[1]"),
        // Whatever the steps read (a passthrough may read any header), a
        // name that says it holds a credential.
        ("{ headers: [x-api-key] }", "decisionLog.headers[0]"),
        ("{ headers: [x-a, X-Auth-Token] }", "decisionLog.headers[1]"),
        ("{ headers: [x-session-id] }", "decisionLog.headers[0]"),
        ("{ headers: [Authentication] }", "decisionLog.headers[0]"),
        ("{ headers: [x-a, X-Auth] }", "decisionLog.headers[1]"),
        (
            "{ headers: [x-forwarded-bearer] }",
            "decisionLog.headers[0]",
        ),
    ] {
        let yaml =
            format!("name: x\ndecisionLog: {block}\nconfigs:\n- pluginAuth: {{ name: Allow }}\n");
        let e = Engine::new(registry())
            .load(&AuthConfig::parse("t.yaml", &yaml, Format::Yaml).unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains(place), "{block}: {e}");
    }
    assert!(
        DecisionLog::new(|_: String| {})
            .every_config(Sampling::default().sample(-0.1))
            .is_err()
    );
}

/// A header a step of one AuthConfig reads is a credential there, which
/// its clients may send on every route: no AuthConfig logs it, whether
/// the server's sampling or another AuthConfig's own names it.
#[tokio::test]
async fn a_header_any_auth_config_s_step_reads_is_logged_by_none() {
    let yaml = "name: keyed\nconfigs:\n- pluginAuth: { name: ReadsTenant }\n---\nname: open\nconfigs:\n- pluginAuth: { name: Allow }\n---\nname: own\ndecisionLog: { headers: [x-tenant, x-request-id] }\nconfigs:\n- pluginAuth: { name: Allow }\n";
    let sampling = Sampling::default()
        .header("x-tenant")
        .header("x-request-id");
    let (engine, sink) = engine(yaml, Some(sampling)).await;
    let generation = engine.current();
    for name in ["keyed", "open", "own"] {
        let chain = generation.chain(name).unwrap();
        chain.authorize(&mut request("/")).await;
    }
    let logged = records(&sink);
    assert_eq!(logged.len(), 3, "{logged:#?}");
    for record in &logged {
        assert_eq!(
            record["input"]["headers"],
            serde_json::json!({ "x-request-id": "req-7" }),
            "{}",
            record["config"]
        );
    }
}

#[tokio::test]
async fn headers_are_logged_as_sent_and_fields_are_cut() {
    let yaml = "name: m\ndecisionLog: { headers: [x-request-id] }\nconfigs:\n- pluginAuth: { name: Mints }\n";
    let (engine, sink) = engine(yaml, None).await;
    let generation = engine.current();
    let mut r = request(&format!("/{}", "p".repeat(5000)));
    r.host = "h".repeat(5000);
    for _ in 0..20 {
        r.headers
            .append("x-request-id", HeaderValue::from_static("again"));
    }
    generation.chain("m").unwrap().authorize(&mut r).await;
    let logged = records(&sink);
    let record = &logged[0];
    // The client's values, not the one a step set; at most 8 of them.
    let ids = record["input"]["headers"]["x-request-id"]
        .as_array()
        .unwrap();
    assert_eq!(ids.len(), 8);
    assert_eq!(ids[0], "req-7");
    assert!(!sink.lock().unwrap()[0].contains("minted"));
    for field in [&record["input"]["path"], &record["input"]["host"]] {
        let text = field.as_str().unwrap();
        assert!(text.len() <= 1024 + '…'.len_utf8(), "{}", text.len());
        assert!(text.ends_with('…'));
    }
    assert!(sink.lock().unwrap()[0].len() < 4096);
}

/// A header that carries a URL is logged without its query, which may
/// hold a credential (a forward-auth proxy's `X-Forwarded-Uri` of a
/// login's callback, `?access_token=`); `input.path` has none either.
#[tokio::test]
async fn a_logged_header_s_query_is_cut() {
    let yaml = "name: m\ndecisionLog: { headers: [x-forwarded-uri, referer] }\nconfigs:\n- pluginAuth: { name: Allow }\n";
    let (engine, sink) = engine(yaml, None).await;
    let mut r = request("/callback?code=c0de&state=s");
    r.headers.append(
        "x-forwarded-uri",
        HeaderValue::from_static("/callback?code=c0de&state=s"),
    );
    r.headers.append(
        "referer",
        HeaderValue::from_static("https://app.example/x?access_token=t0ken"),
    );
    engine.current().chain("m").unwrap().authorize(&mut r).await;
    let record = &records(&sink)[0];
    assert_eq!(record["input"]["path"], "/callback");
    assert_eq!(record["input"]["headers"]["x-forwarded-uri"], "/callback");
    assert_eq!(
        record["input"]["headers"]["referer"],
        "https://app.example/x"
    );
    let line = &sink.lock().unwrap()[0];
    assert!(!line.contains("c0de") && !line.contains("t0ken"), "{line}");
}

/// A path's `;` parameters, which `allowAmbiguousPaths` keeps in the path
/// judged (`;jsessionid=`), are not logged either.
#[tokio::test]
async fn a_path_s_parameters_are_cut() {
    let yaml = "name: m\nallowAmbiguousPaths: true\ndecisionLog: { headers: [x-forwarded-uri, referer, x-region] }\nconfigs:\n- pluginAuth: { name: Allow }\n";
    let (engine, sink) = engine(yaml, None).await;
    let mut r = request("/app;jsessionid=s3ss10n/cart;v=2?x=1");
    r.headers.append(
        "x-forwarded-uri",
        HeaderValue::from_static("/app;jsessionid=s3ss10n/cart"),
    );
    r.headers.append(
        "referer",
        HeaderValue::from_static("https://app.example/app;jsessionid=s3ss10n/cart"),
    );
    r.headers
        .append("x-region", HeaderValue::from_static("eu;zone=b"));
    assert!(!format!("{r:?}").contains("s3ss10n"));
    engine.current().chain("m").unwrap().authorize(&mut r).await;
    let record = &records(&sink)[0];
    assert_eq!(record["input"]["path"], "/app/cart");
    let headers = &record["input"]["headers"];
    assert_eq!(headers["x-forwarded-uri"], "/app/cart");
    assert_eq!(headers["referer"], "https://app.example/app/cart");
    // A value that is no URL keeps its parameters.
    assert_eq!(headers["x-region"], "eu;zone=b");
    assert!(!sink.lock().unwrap()[0].contains("s3ss10n"));
}
