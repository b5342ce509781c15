//! Config documents, the registry, and errors that name their place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use authchain_core::{
    AuthConfig, BuildContext, Chain, ChainStep, Decision, Engine, Error, ExtAuthPlugin,
    FAILURE_MODE_ALLOWED_HEADER, Format, PluginRegistry, decide_fn, plugin_fn, service_fn,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::*;

/// `RequiredHeader`-like plugin with Gloo's PascalCase config.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HeaderConfig {
    required_header: String,
    allowed_values: Vec<String>,
}

fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(plugin_fn("RequiredHeader", |c: HeaderConfig, _| {
        let header = http::HeaderName::try_from(c.required_header)
            .map_err(|_| Error::config("not a header name").at("RequiredHeader"))?;
        let allowed = c.allowed_values;
        Ok(Arc::new(service_fn(move |req| {
            let ok = req
                .header_str(&header)
                .is_some_and(|v| allowed.iter().any(|a| a == v));
            Box::pin(async move {
                Ok(if ok {
                    Decision::authorized()
                } else {
                    Decision::unauthorized()
                })
            })
        })))
    }));
    registry.register(plugin_fn("Allow", |_: Value, _| {
        Ok(Arc::new(service_fn(|_| {
            Box::pin(async { Ok(Decision::authorized()) })
        })))
    }));
    registry
}

fn parse_one(text: &str) -> AuthConfig {
    let mut configs = AuthConfig::parse("auth.yaml", text, Format::Yaml).unwrap();
    assert_eq!(configs.len(), 1);
    configs.remove(0)
}

fn build_err(text: &str, registry: &PluginRegistry) -> String {
    parse_one(text).build(registry).unwrap_err().to_string()
}

const GLOO_MANIFEST: &str = r#"
apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata:
  name: plugin-auth
  namespace: gloo-system
spec:
  configs:
  - pluginAuth:
      name: RequiredHeader
      pluginFileName: RequiredHeader.so
      exportedSymbolName: Plugin
      config:
        RequiredHeader: my-header
        AllowedValues:
        - foo
        - bar
"#;

async fn decide(config: &AuthConfig, header: Option<&'static str>) -> bool {
    let chain = config.build(&registry()).unwrap();
    let mut req = get("/");
    if let Some(v) = header {
        req.headers.insert(name("my-header"), value(v));
    }
    chain.authorize(&mut req).await.is_allow()
}

#[tokio::test]
async fn a_gloo_manifest_is_accepted_as_it_is() {
    let config = parse_one(GLOO_MANIFEST);
    assert_eq!(config.name(), "gloo-system.plugin-auth");
    assert!(decide(&config, Some("foo")).await);
    assert!(!decide(&config, Some("baz")).await);
    assert!(!decide(&config, None).await);
}

#[tokio::test]
async fn yaml_json_and_manifest_forms_agree() {
    let plain = parse_one(
        "name: plain\nconfigs:\n- pluginAuth: {name: RequiredHeader, config: {RequiredHeader: my-header, AllowedValues: [foo]}}\n",
    );
    let json = AuthConfig::parse(
        "auth.json",
        r#"{"name": "json", "configs": [{"pluginAuth": {"name": "RequiredHeader",
            "config": {"RequiredHeader": "my-header", "AllowedValues": ["foo"]}}}]}"#,
        Format::Json,
    )
    .unwrap()
    .remove(0);
    let manifest = parse_one(GLOO_MANIFEST);
    for config in [&plain, &json, &manifest] {
        assert!(decide(config, Some("foo")).await, "{}", config.name());
        assert!(!decide(config, Some("nope")).await, "{}", config.name());
    }
}

#[test]
fn multi_document_files_and_json_arrays() {
    let text = format!("{GLOO_MANIFEST}---\nname: second\nconfigs: []\n---\n");
    let configs = AuthConfig::parse("all.yaml", &text, Format::Yaml).unwrap();
    let names: Vec<_> = configs.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["gloo-system.plugin-auth", "second"]);
    assert_eq!(configs[1].origin(), "all.yaml document 2");

    let configs = AuthConfig::parse(
        "all.json",
        r#"[{"name": "a", "configs": []}, {"name": "b", "configs": []}]"#,
        Format::Json,
    )
    .unwrap();
    assert_eq!(configs.len(), 2);
    assert_eq!(Format::from_path("x/y.JSON".as_ref()), Format::Json);
    assert_eq!(Format::from_path("x/y.yml".as_ref()), Format::Yaml);
}

#[test]
fn a_bad_plugin_config_names_its_place_and_no_secret() {
    let text = r#"
name: c
configs:
- pluginAuth: {name: Allow}
- pluginAuth:
    name: RequiredHeader
    config:
      RequiredHeader: my-header
      AllowedValues: hunter2-secret
"#;
    let err = build_err(text, &registry());
    assert_eq!(
        err,
        "auth.yaml: configs[1].pluginAuth.config.AllowedValues: invalid type: string, expected a sequence"
    );
    assert!(!err.contains("hunter2"));
}

#[test]
fn errors_in_a_manifest_are_placed_under_spec() {
    let text = GLOO_MANIFEST.replace("AllowedValues:", "AllowedValuez:");
    let err = build_err(&text, &registry());
    assert!(
        err.starts_with("auth.yaml: spec.configs[0].pluginAuth.config.AllowedValuez: unknown field `AllowedValuez`"),
        "{err}"
    );
}

#[test]
fn unknown_plugins_kinds_and_fields_are_rejected() {
    // (case, document, the error)
    const CASES: &[(&str, &str, &str)] = &[
        (
            "no step kind, and a plugin no one registered",
            "name: c\nconfigs:\n- {}\n- pluginAuth: {name: Nope}\n",
            "auth.yaml: configs[0]: no step kind: expected one of pluginAuth, passThroughAuth\n\
             auth.yaml: configs[1].pluginAuth.name: no plugin named 'Nope' is registered (registered: Allow, RequiredHeader)",
        ),
        (
            "a step kind no plugin serves",
            "name: c\nconfigs:\n- myAuth: {}\n",
            "auth.yaml: configs[0].myAuth: no plugin is registered for step kind `myAuth` (registered: none)",
        ),
        (
            "a Gloo step kind authchain lacks",
            "name: c\nconfigs:\n- portalAuth: {}\n",
            "auth.yaml: configs[0].portalAuth: `portalAuth` is a Gloo step kind that authchain does not support: see the Gloo compatibility table (docs/src/gloo.md)",
        ),
        (
            "two step kinds",
            "name: c\nconfigs:\n- {jwt: {}, apiKeyAuth: {}}\n",
            "auth.yaml: configs[0]: expected exactly one step kind, found `apiKeyAuth` and `jwt`",
        ),
        (
            "an unknown top-level field",
            "name: c\nconfigz: []\n",
            "auth.yaml: configz: unknown field `configz`, expected one of `configs`, `booleanExpr`, `statusOnError`, `deadline`, `stripClientHeaders`, `trustClientHeaders`, `allowAmbiguousPaths`, `userIdHeader`, `failOnRedirect`, `cache`, `decisionLog`, `shadow`",
        ),
        (
            "an unknown pluginAuth field",
            "name: c\nconfigs:\n- pluginAuth: {name: Allow, extra: 1}\n",
            "auth.yaml: configs[0].pluginAuth.extra: unknown field `extra`, expected one of `name`, `config`, `pluginFileName`, `exportedSymbolName`",
        ),
        (
            "a timeout with no unit",
            "name: c\nconfigs:\n- pluginAuth: {name: Allow}\n  timeout: soon\n",
            "auth.yaml: configs[0].timeout: expected a duration such as \"5s\" or \"250ms\" (units h, m, s, ms, us, ns)",
        ),
        (
            "failureModeAllow not a boolean",
            "name: c\nconfigs:\n- pluginAuth: {name: Allow}\n  failureModeAllow: yes\n",
            "auth.yaml: configs[0].failureModeAllow: expected a boolean, found a string",
        ),
        (
            "a zero step timeout",
            "name: c\nconfigs:\n- pluginAuth: {name: Allow}\n  timeout: 0s\n",
            "auth.yaml: configs[0].timeout: expected a duration above zero",
        ),
        (
            "a zero deadline",
            "name: c\ndeadline: 0ms\nconfigs: []\n",
            "auth.yaml: deadline: expected a duration above zero",
        ),
        (
            "statusOnError not a deny status",
            "name: c\nstatusOnError: 99\nconfigs: []\n",
            "auth.yaml: statusOnError: expected an error's deny status, 400 to 599 (a proxy lets a request through on a 2xx, a browser may keep a redirect without a Location, and serves its kept copy on a 304)",
        ),
        (
            "stripClientHeaders not a header name",
            "name: c\nstripClientHeaders: [\"bad header\"]\nconfigs: []\n",
            "auth.yaml: stripClientHeaders[0]: not a valid header name",
        ),
        (
            "booleanExpr naming no step",
            "name: c\nconfigs:\n- name: a\n  pluginAuth: {name: Allow}\nbooleanExpr: a && b\n",
            "auth.yaml: booleanExpr: column 6: unknown step name 'b' (steps: a)",
        ),
    ];
    let registry = registry();
    for (name, document, want) in CASES {
        assert_eq!(build_err(document, &registry), *want, "case {name}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
name: c
configs:
- pluginAuth: {name: Nope}
- pluginAuth: {name: RequiredHeader, config: {RequiredHeader: h}}
- 42
"#;
    let err = parse_one(text).build(&registry()).unwrap_err();
    assert!(err.is_config());
    let problems: Vec<String> = err.problems().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "auth.yaml: configs[0].pluginAuth.name: no plugin named 'Nope' is registered (registered: Allow, RequiredHeader)",
            "auth.yaml: configs[1].pluginAuth.config: missing field `AllowedValues`",
            "auth.yaml: configs[2]: expected a mapping, found a number",
        ]
    );
}

#[test]
fn document_shape_errors() {
    let err = |t: &str| {
        AuthConfig::parse("f.yaml", t, Format::Yaml)
            .unwrap_err()
            .to_string()
    };
    // (case, document, the error)
    const CASES: &[(&str, &str, &str)] = &[
        (
            "a list",
            "- a\n- b\n",
            "f.yaml: expected a mapping, found a list",
        ),
        (
            "no name",
            "configs: []\n",
            "f.yaml: missing field `name` (or a Gloo manifest)",
        ),
        (
            "another apiVersion",
            "apiVersion: gateway.solo.io/v1\nkind: VirtualService\n",
            "f.yaml: apiVersion: expected one of enterprise.gloo.solo.io/v1, extauth.solo.io/v1",
        ),
        (
            "another kind",
            "apiVersion: enterprise.gloo.solo.io/v1\nkind: Upstream\n",
            "f.yaml: kind: expected `AuthConfig`",
        ),
        (
            "a manifest without metadata.name",
            "apiVersion: enterprise.gloo.solo.io/v1\nkind: AuthConfig\nspec: {configs: []}\n",
            "f.yaml: metadata.name: expected a non-empty string",
        ),
        // Both reported, each with its document.
        (
            "two documents, both wrong",
            "kind: x\n---\n[]\n",
            "f.yaml document 1: apiVersion: expected one of enterprise.gloo.solo.io/v1, extauth.solo.io/v1\n\
             f.yaml document 2: expected a mapping, found a list",
        ),
    ];
    for (name, document, want) in CASES {
        assert_eq!(err(document), *want, "case {name}");
    }
    // Syntax errors say where, in the parser's words.
    let e = err("name: a\nconfigs: [\n");
    assert!(e.starts_with("f.yaml document 1: "), "{e}");
    assert!(e.contains("line"), "a YAML syntax error says where: {e}");
    let e = AuthConfig::parse("f.json", "{\"name\": ", Format::Json)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f.json: EOF while parsing"), "{e}");
}

/// A passthrough kind that records the block it was built from and fails
/// every request.
#[derive(Clone, Default)]
struct RecordingPassthrough {
    got: Arc<Mutex<Vec<Value>>>,
}

impl ExtAuthPlugin for RecordingPassthrough {
    type Config = Value;

    fn name(&self) -> &str {
        "passThroughAuth.http"
    }

    fn build(
        &self,
        config: Value,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn authchain_core::AuthService>, Error> {
        assert_eq!(context.place, "configs[0].passThroughAuth");
        assert!(context.failure_mode_allow);
        self.got.lock().unwrap().push(config);
        Ok(failing())
    }
}

#[tokio::test]
async fn pass_through_auth_resolves_by_transport_and_the_chain_applies_failure_mode_allow() {
    let plugin = RecordingPassthrough::default();
    let mut registry = registry();
    registry.register_kind(plugin.clone());
    let text = r#"
name: pt
configs:
- name: remote
  passThroughAuth:
    http:
      url: http://127.0.0.1:1/auth
    config: {customConfig1: true}
    failureModeAllow: true
"#;
    let chain = parse_one(text).build(&registry).unwrap();
    assert_eq!(
        plugin.got.lock().unwrap()[0],
        json!({"http": {"url": "http://127.0.0.1:1/auth"}, "config": {"customConfig1": true}})
    );
    let decision = chain.authorize(&mut get("/")).await;
    assert_eq!(
        decision.as_allow().unwrap().headers[0].name,
        FAILURE_MODE_ALLOWED_HEADER
    );

    assert_eq!(
        build_err(
            "name: pt\nconfigs:\n- passThroughAuth: {grpc: {address: x}}\n",
            &registry
        ),
        "auth.yaml: configs[0].passThroughAuth: no plugin is registered for step kind `passThroughAuth.grpc` (registered: passThroughAuth.http)"
    );
    assert_eq!(
        build_err(
            "name: pt\nconfigs:\n- passThroughAuth: {config: {}}\n",
            &registry
        ),
        "auth.yaml: configs[0].passThroughAuth: expected exactly one of `grpc` and `http`"
    );
}

#[tokio::test]
async fn engine_load_reports_duplicate_names() {
    let engine = Engine::new(registry());
    let configs = AuthConfig::parse(
        "a.yaml",
        "name: x\nconfigs: [{ pluginAuth: { name: RequiredHeader, config: { RequiredHeader: a, AllowedValues: [b] } } }]\n---\nname: x\nconfigs: []\n",
        Format::Yaml,
    )
    .unwrap();
    let err = engine.load(&configs).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "a.yaml document 2: a second AuthConfig named 'x' (the first is in a.yaml document 1); names must be unique"
    );
    assert_eq!(engine.current().number(), 0);

    // The first one does not build: both problems, and both places.
    let mut configs = AuthConfig::parse(
        "a.yaml",
        "name: x\nconfigs: [{ pluginAuth: { name: RequiredHeader, config: { RequiredHeader: 'no header', AllowedValues: [b] } } }]\n",
        Format::Yaml,
    )
    .unwrap();
    configs.extend(
        AuthConfig::parse(
            "b.yaml",
            "name: x\nconfigs: [{ pluginAuth: { name: RequiredHeader, config: { RequiredHeader: a, AllowedValues: [b] } } }]\n",
            Format::Yaml,
        )
        .unwrap(),
    );
    let err = engine.load(&configs).await.unwrap_err().to_string();
    assert!(err.contains("not a header name"), "{err}");
    assert!(
        err.contains("b.yaml: a second AuthConfig named 'x' (the first is in a.yaml)"),
        "{err}"
    );
}

#[tokio::test]
async fn config_level_settings_apply() {
    let mut registry = registry();
    registry.register(plugin_fn("Broken", |_: Value, _| Ok(failing())));
    let text = r#"
name: c
statusOnError: 503
deadline: 2s
stripClientHeaders: [x-tenant]
configs:
- name: broken
  timeout: 100ms
  pluginAuth: {name: Broken}
"#;
    let chain = parse_one(text).build(&registry).unwrap();
    assert_eq!(chain.stripped_headers(), [name("x-tenant")]);
    assert_eq!(chain.step_names().collect::<Vec<_>>(), ["broken"]);
    let decision = chain.authorize(&mut get("/")).await;
    assert_eq!(decision.as_deny().unwrap().status, 503);
    // Default step names are config_<index>.
    let chain =
        parse_one("name: c\nconfigs:\n- pluginAuth: {name: Allow}\n- pluginAuth: {name: Allow}\n")
            .build(&registry)
            .unwrap();
    assert_eq!(
        chain.step_names().collect::<Vec<_>>(),
        ["config_0", "config_1"]
    );
}

#[tokio::test]
async fn a_chain_of_no_steps_and_durations_no_clock_can_hold_are_config_errors() {
    let step = "{ pluginAuth: { name: RequiredHeader, config: { RequiredHeader: a, AllowedValues: [b] } } }";
    // (case, the document after its name, what the error says)
    let cases = [
        (
            "no steps",
            "configs: []".to_owned(),
            "configs: expected at least one step",
        ),
        (
            "a deadline of a year",
            format!("deadline: 8784h\nconfigs: [{step}]"),
            "deadline: duration out of range: at most 365 days",
        ),
        (
            "a step timeout of a year",
            format!(
                "configs: [{{ timeout: 9000h, {} }}]",
                &step[2..step.len() - 2]
            ),
            "timeout: duration out of range: at most 365 days",
        ),
        (
            "a cache ttl of eons",
            format!(
                "configs: [{step}]\ncache: {{ key: [path], ttl: 99999999999h, trustKey: true }}"
            ),
            "cache.ttl",
        ),
    ];
    for (name, spec, expected) in cases {
        let yaml = format!("name: x\n{spec}\n");
        let error = match AuthConfig::parse("a.yaml", &yaml, Format::Yaml) {
            Err(e) => e,
            Ok(configs) => Engine::new(registry()).load(&configs).await.unwrap_err(),
        };
        assert!(error.to_string().contains(expected), "case {name}: {error}");
    }
    // In code as well: nothing a clock overflows on.
    let allow = || ChainStep::new("s", Arc::new(decide_fn(|_| Ok(Decision::authorized()))));
    let cases = [
        (
            "a deadline of Duration::MAX",
            Chain::builder("c").step(allow()).deadline(Duration::MAX),
            "deadline",
        ),
        (
            "a step timeout of Duration::MAX",
            Chain::builder("c").step(allow().timeout(Duration::MAX)),
            "step 's' timeout",
        ),
        ("no steps", Chain::builder("c"), "at least one step"),
    ];
    for (name, builder, expected) in cases {
        let error = builder.build().unwrap_err();
        assert!(error.to_string().contains(expected), "case {name}: {error}");
    }
}

#[test]
fn secrets_and_config_maps_are_read_beside_auth_configs() {
    use authchain_core::Documents;
    use authchain_core::resources::ResourceRef;
    let text = r#"
apiVersion: v1
kind: Secret
metadata: { name: keys, namespace: ns, labels: { team: a } }
type: extauth.solo.io/apikey
data: { api-key: czNjcjN0 }
stringData: { user-id: alice }
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: { name: rego }
  data: { policy.rego: "package p" }
- apiVersion: v1
  kind: Secret
  metadata: { name: other, namespace: ns, labels: { team: b } }
  data: {}
- apiVersion: enterprise.gloo.solo.io/v1
  kind: AuthConfig
  metadata: { name: listed, namespace: ns }
  spec: { configs: [{ jwt: {} }] }
---
name: c
configs: [{ jwt: {} }]
"#;
    let docs = Documents::parse("r.yaml", text, Format::Yaml).unwrap();
    // `kubectl get authconfigs,secrets -o yaml`: a List holds AuthConfigs
    // too.
    let names: Vec<&str> = docs.configs.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["ns.listed", "c"]);
    let secret = docs.resources.secret("ns", "keys").unwrap();
    assert_eq!(secret.data["api-key"], b"s3cr3t");
    assert_eq!(secret.data["user-id"], b"alice");
    assert_eq!(secret.kind, "extauth.solo.io/apikey");
    assert!(!format!("{secret:?}").contains("s3cr3t"), "{secret:?}");
    assert!(!format!("{:?}", docs.resources).contains("s3cr3t"));
    // Base64 in lines, as `base64` writes it by default (Kubernetes reads
    // it too).
    let wrapped = "apiVersion: v1\nkind: Secret\nmetadata: { name: w, namespace: ns }\ndata:\n  k: |\n    czNj\n    cjN0\n";
    let wrapped = Documents::parse("w.yaml", wrapped, Format::Yaml).unwrap();
    assert_eq!(
        wrapped.resources.secret("ns", "w").unwrap().data["k"],
        b"s3cr3t"
    );
    let map = docs.resources.config_map("default", "rego").unwrap();
    assert_eq!(map.data["policy.rego"], "package p");
    let selector = [("team".to_owned(), "a".to_owned())].into_iter().collect();
    let picked: Vec<_> = docs
        .resources
        .secrets_labelled(&selector)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(picked, ["keys"]);
    // A reference without a namespace means its AuthConfig's.
    let reference = ResourceRef {
        name: "keys".into(),
        namespace: None,
    };
    assert!(docs.resources.secret_ref(&reference, "ns").is_ok());
    let e = docs.resources.secret_ref(&reference, "").unwrap_err();
    assert_eq!(e.to_string(), "no Secret default/keys was read");
    // Every AuthConfig of the text resolves against the text's objects.
    let configs = AuthConfig::parse("r.yaml", text, Format::Yaml).unwrap();
    assert!(configs[0].resources().secret("ns", "keys").is_some());

    let secret = |rest: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{ name: s, namespace: ns }}\n{rest}")
    };
    let cases = [
        (
            "data not base64",
            secret("data: { k: 's3cr3t!!' }"),
            "r.yaml: data.k: expected base64",
        ),
        (
            "data not a string",
            secret("data: { k: [s3cr3t] }"),
            "r.yaml: data.k: expected a string",
        ),
        (
            "an unknown field",
            secret("spec: s3cr3t"),
            "r.yaml: unknown field `spec`",
        ),
        (
            "no name",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { namespace: ns }\n".to_owned(),
            "r.yaml: metadata.name: expected a non-empty string",
        ),
        (
            "another apiVersion",
            "apiVersion: v2\nkind: Secret\nmetadata: { name: s }\n".to_owned(),
            "r.yaml: apiVersion: expected `v1`",
        ),
        (
            "twice",
            format!("{}\n---\n{}", secret(""), secret("")),
            "r.yaml document 2: the Secret ns/s is given twice",
        ),
        (
            "a List of something else",
            "apiVersion: v1\nkind: List\nitems: [{ kind: Pod }]\n".to_owned(),
            "r.yaml: items[0]: expected an AuthConfig, a Secret or a ConfigMap in a List",
        ),
    ];
    for (name, text, want) in cases {
        let e = Documents::parse("r.yaml", &text, Format::Yaml).unwrap_err();
        assert_eq!(e.to_string(), want, "case {name}");
        assert!(!e.to_string().contains("s3cr3t"), "case {name}");
    }
    // Two texts: an object in both is an error naming it.
    let mut one = Documents::parse("a.yaml", &secret(""), Format::Yaml).unwrap();
    let two = Documents::parse("b.yaml", &secret(""), Format::Yaml).unwrap();
    assert_eq!(
        one.extend(two).unwrap_err().to_string(),
        "the Secret ns/s is given twice"
    );
}

/// The files a step reads through its context are listed by the
/// generation (absolute, once each), for a server to watch; a file that
/// cannot be read is an error naming it, at the step's place, and the
/// error lists it.
#[test]
fn a_generation_lists_the_files_its_steps_read() {
    #[derive(Deserialize)]
    struct FileConfig {
        file: String,
    }
    let mut registry = PluginRegistry::new();
    registry.register(plugin_fn("Reads", |c: FileConfig, context| {
        let text = context.read_to_string(&c.file).map_err(|e| e.at("file"))?;
        Ok(Arc::new(service_fn(move |_| {
            let allow = text.trim() == "allow";
            Box::pin(async move {
                Ok(if allow {
                    Decision::authorized()
                } else {
                    Decision::unauthorized()
                })
            })
        })))
    }));
    let dir = std::env::temp_dir().join(format!("authchain-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("verdict");
    std::fs::write(&file, "allow\n").unwrap();
    let config = |path: &std::path::Path| {
        let step = format!(
            "pluginAuth: {{ name: Reads, config: {{ file: '{}' }} }}",
            path.display()
        );
        AuthConfig::parse(
            "auth.yaml",
            &format!("name: a\nconfigs: [{step}, {step}]\n---\nname: b\nconfigs: [{step}]\n"),
            Format::Yaml,
        )
        .unwrap()
    };
    let generation = authchain_core::Generation::build(&registry, &config(&file), 1).unwrap();
    assert_eq!(generation.files().collect::<Vec<_>>(), [file.as_path()]);
    // Rewritten the same (a touch), it has not changed; with other
    // contents, or gone, it has.
    std::fs::write(&file, "allow\n").unwrap();
    assert!(!generation.files_changed());
    std::fs::write(&file, "deny\n").unwrap();
    assert!(generation.files_changed());
    std::fs::write(&file, "allow\n").unwrap();
    assert!(!generation.files_changed());
    std::fs::remove_file(&file).unwrap();
    assert!(generation.files_changed());

    // Read twice or three times in one build with other contents between
    // (a sidecar writing meanwhile, here each step): its next event
    // reloads, though it holds what one of the reads saw.
    let mut writing = PluginRegistry::new();
    writing.register(plugin_fn("ReadsThenFlips", |c: FileConfig, context| {
        let text = context.read_to_string(&c.file).map_err(|e| e.at("file"))?;
        std::fs::write(&c.file, if text == "v" { "w" } else { "v" }).unwrap();
        Ok(Arc::new(service_fn(|_| {
            Box::pin(async { Ok(Decision::authorized()) })
        })))
    }));
    for readers in [2, 3] {
        std::fs::write(&file, "v").unwrap();
        let yaml: Vec<String> = (0..readers)
            .map(|i| {
                format!(
                    "name: c{i}\nconfigs: [{{ pluginAuth: {{ name: ReadsThenFlips, config: {{ file: '{}' }} }} }}]\n",
                    file.display()
                )
            })
            .collect();
        let configs = AuthConfig::parse("auth.yaml", &yaml.join("---\n"), Format::Yaml).unwrap();
        let generation = authchain_core::Generation::build(&writing, &configs, 3).unwrap();
        assert!(generation.files_changed(), "{readers} readers");
    }

    // A failed build names the files it read or tried to, for a server
    // to watch until one mends it.
    let missing = dir.join("missing");
    let failed = authchain_core::Generation::build(&registry, &config(&missing), 2).unwrap_err();
    assert_eq!(failed.files().collect::<Vec<_>>(), [missing.as_path()]);
    let error = failed.to_string();
    assert!(
        error.contains("configs[0].pluginAuth.config.file: cannot read")
            && error.contains(&missing.display().to_string())
            && error.contains("not found"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Gloo's `failOnRedirect` reaches each step of its AuthConfig in the
/// build context: a step that would send the client away to log in
/// answers a plain 401 instead (as `oauth2` does).
#[tokio::test]
async fn fail_on_redirect_reaches_the_steps_of_its_auth_config() {
    let mut registry = PluginRegistry::new();
    registry.register(plugin_fn("Login", |_: Value, context| {
        let plain = context.fail_on_redirect;
        Ok(Arc::new(service_fn(move |_| {
            Box::pin(async move {
                Ok(match plain {
                    true => authchain_core::Deny::new(http::StatusCode::UNAUTHORIZED).into(),
                    false => authchain_core::Deny::new(http::StatusCode::FOUND)
                        .header(
                            http::header::LOCATION,
                            "https://idp.example/auth".parse().unwrap(),
                        )
                        .into(),
                })
            })
        })))
    }));
    let engine = Engine::new(registry);
    let yaml = "name: api\nfailOnRedirect: true\nconfigs: [{ pluginAuth: { name: Login } }]\n---\nname: ui\nconfigs: [{ pluginAuth: { name: Login } }]\n";
    engine
        .load(&AuthConfig::parse("auth.yaml", yaml, Format::Yaml).unwrap())
        .await
        .unwrap();
    let generation = engine.current();
    let status_of = async |name: &str| {
        let mut request = authchain_core::AuthorizationRequest::new(http::Method::GET, "/");
        let chain = generation.chain(name).unwrap();
        chain
            .authorize(&mut request)
            .await
            .as_deny()
            .unwrap()
            .status
            .as_u16()
    };
    assert_eq!(status_of("api").await, 401);
    assert_eq!(status_of("ui").await, 302);
}
