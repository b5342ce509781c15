//! The adapter's counters, with a global recorder of this test binary's
//! own (in process, no Envoy): an unknown config, an invalid request, an
//! allow Envoy cannot carry and a failed passthrough are each counted.

use std::sync::Arc;

use authchain_core::{AuthConfig, Engine, Format, PluginRegistry, plugin_fn, service_fn};
use authchain_grpc::ExtAuthzService;
use authchain_grpc::envoy_types::ext_authz::v3::pb::CheckRequest;
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn check(config_id: Option<&str>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/x".into(),
                    ..Default::default()
                }),
            }),
            context_extensions: config_id
                .map(|id| {
                    [("config_id".to_owned(), id.to_owned())]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }),
    }
}

type Entries = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The sum of the counters named `name` with these labels. (A snapshot
/// drains the recorder, so take one and ask it everything.)
fn counter(entries: &Entries, name: &str, labels: &[(&str, &str)]) -> u64 {
    entries
        .iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn rejections_and_passthrough_failures_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");

    let mut registry = PluginRegistry::new();
    authchain_grpc::register(&mut registry);
    registry.register(plugin_fn("Latin1", |_: serde_json::Value, _| {
        Ok(Arc::new(service_fn(|_| {
            Box::pin(async {
                Ok(authchain_core::Allow::new()
                    .set_header(
                        http::HeaderName::from_static("x-bad"),
                        http::HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
                    )
                    .into())
            })
        })))
    }));
    let port = authchain_testkit::free_port().unwrap();
    let yaml = format!(
        "name: latin1\nconfigs:\n- pluginAuth: {{name: Latin1}}\n---\nname: down\nconfigs:\n- passThroughAuth: {{grpc: {{address: '127.0.0.1:{port}', connectionTimeout: 1s}}}}\n---\nname: down-open\nconfigs:\n- name: remote\n  passThroughAuth: {{grpc: {{address: '127.0.0.1:{port}', connectionTimeout: 1s}}, failureModeAllow: true}}\n"
    );
    let engine = Engine::new(registry);
    engine
        .load(&AuthConfig::parse("t.yaml", &yaml, Format::Yaml).unwrap())
        .await
        .unwrap();
    let service = ExtAuthzService::new(Arc::new(engine));

    let deny_status = |r: &authchain_grpc::envoy_types::ext_authz::v3::pb::CheckResponse| {
        r.status.as_ref().map_or(0, |s| s.code)
    };
    // (case, the check, whether it is denied)
    let cases = [
        ("an unknown config", check(Some("ghost")), true),
        ("no HTTP attributes", CheckRequest::default(), true),
        ("an allow Envoy cannot carry", check(Some("latin1")), true),
        ("a remote that is down", check(Some("down")), true),
        // failureModeAllow lets it through.
        (
            "the same under failureModeAllow",
            check(Some("down-open")),
            false,
        ),
    ];
    for (name, request, denied) in cases {
        let code = deny_status(&service.check_request(request).await);
        assert_eq!(code != 0, denied, "case {name}: gRPC status {code}");
    }

    let snapshot: Entries = snapshotter.snapshot().into_vec();
    let rejected = "authchain_grpc_rejected_total";
    assert_eq!(
        counter(&snapshot, rejected, &[("reason", "unknown_config")]),
        1
    );
    // The unknown name is no label: a caller cannot grow the metrics.
    assert!(
        !snapshot
            .iter()
            .any(|(key, ..)| key.key().labels().any(|l| l.value() == "ghost")),
        "no series names the unknown config"
    );
    assert_eq!(
        counter(&snapshot, rejected, &[("reason", "invalid_request")]),
        1
    );
    assert_eq!(
        counter(&snapshot, rejected, &[("reason", "invalid_decision")]),
        1
    );
    assert_eq!(
        counter(
            &snapshot,
            "authchain_grpc_passthrough_errors_total",
            &[("reason", "unavailable")]
        ),
        2
    );
    assert_eq!(
        counter(
            &snapshot,
            "passthrough_failure_bypass",
            &[("config", "down-open"), ("step", "remote")]
        ),
        1,
        "only the bypassed failure is counted under Gloo's name"
    );
    assert_eq!(
        counter(
            &snapshot,
            "authchain_chain_decisions_total",
            &[("config", "down"), ("result", "error")]
        ),
        1
    );
}
