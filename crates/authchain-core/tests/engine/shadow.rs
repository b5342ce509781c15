//! Shadow AuthConfigs: every request also runs through the shadow, after
//! the answer, never delaying it; disagreements are counted by kind, runs
//! beyond the bound dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authchain_core::shadow::{MAX_SHADOW_BODY_BYTES, MAX_SHADOW_RUNS};
use authchain_core::{
    Allow, AuthConfig, AuthorizationRequest, Engine, Format, Generation, PluginRegistry, plugin_fn,
    service_fn,
};
use http::Method;
use metrics_util::debugging::DebuggingRecorder;
use serde_json::Value;

use crate::support::Counters;

/// `PublicOnly` (allows /public/ only, 401 else), `Slow` (allows after
/// 300 ms, counting the runs it finished in `done`), `Stuck` (never
/// answers).
fn registry(done: Arc<AtomicUsize>) -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    crate::support::register_public_only(&mut registry);
    registry.register(plugin_fn("Slow", move |_: Value, _| {
        let done = done.clone();
        Ok(Arc::new(service_fn(move |_| {
            let done = done.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(Allow::new().into())
            })
        })))
    }));
    for (name, user) in [("Alice", "alice"), ("Bob", "bob")] {
        registry.register(plugin_fn(name, move |_: Value, _| {
            Ok(Arc::new(authchain_core::decide_fn(move |_| {
                Ok(Allow::new()
                    .user(authchain_core::UserInfo::new(user))
                    .into())
            })))
        }));
    }
    registry.register(plugin_fn("Stuck", |_: Value, _| {
        Ok(Arc::new(service_fn(|_| Box::pin(std::future::pending()))))
    }));
    registry
}

const CONFIGS: &str = "name: site
shadow: next
configs:
- pluginAuth: { name: PublicOnly }
---
name: next
cache: { key: [path], ttl: 1m, trustKey: true }
configs:
- pluginAuth: { name: Slow }
---
name: busy
shadow: stuck
configs:
- pluginAuth: { name: PublicOnly }
---
name: stuck
deadline: 1h
configs:
- pluginAuth: { name: Stuck }
---
name: uploads
shadow: stuck
configs:
- pluginAuth: { name: PublicOnly }
---
name: as-alice
shadow: as-bob
configs:
- pluginAuth: { name: Alice }
---
name: as-bob
configs:
- pluginAuth: { name: Bob }
";

#[tokio::test]
async fn the_shadow_runs_after_the_answer_and_counts_disagreements() {
    let done = Arc::new(AtomicUsize::new(0));
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let configs = AuthConfig::parse("t.yaml", CONFIGS, Format::Yaml).unwrap();
    let generation = metrics::with_local_recorder(&recorder, || {
        Generation::build(&registry(done.clone()), &configs, 1)
    })
    .unwrap();
    let engine = Engine::new(registry(done.clone()));
    engine.install(generation).await.unwrap();
    let generation = engine.current();
    let site = generation.chain("site").unwrap();

    // Twenty answers, each sent before any shadow run finished: the
    // shadow never delays an answer.
    let mut answered_before_a_shadow_finished = 0;
    for i in 0..20 {
        let path = if i % 2 == 0 { "/public/x" } else { "/private" };
        let d = site
            .authorize(&mut AuthorizationRequest::new(Method::GET, path))
            .await;
        assert_eq!(d.is_allow(), i % 2 == 0, "{path}: the AuthConfig's answer");
        if done.load(Ordering::SeqCst) == 0 {
            answered_before_a_shadow_finished += 1;
        }
    }
    assert_eq!(answered_before_a_shadow_finished, 20);
    for _ in 0..250 {
        if done.load(Ordering::SeqCst) == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        done.load(Ordering::SeqCst),
        20,
        "every request ran in the shadow"
    );
    // Its cache neither answered nor kept them: a shadow that serves too
    // gives out none of its runs' answers.
    assert_eq!(generation.chain("next").unwrap().cached_entries(), 0);
    // The shadow allowed all: the ten /private denies disagree.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let counters = Counters::take(&snapshotter);
    let disagreements = |kind| {
        counters.get(
            "authchain_shadow_disagreements_total",
            &[("config", "site"), ("shadow", "next"), ("kind", kind)],
        )
    };
    assert_eq!(disagreements("deny_allow"), 10);
    assert_eq!(disagreements("allow_deny"), 0);
    assert_eq!(disagreements("status"), 0);

    // A caller that waits 100 ms (Envoy's grpc-timeout) got its answer;
    // the shadow, which takes 300 ms after it, is not held to that time:
    // it allows too, no disagreement.
    let mut waited = AuthorizationRequest::new(Method::GET, "/public/x");
    waited
        .extensions
        .insert(authchain_core::transport::AnswerBy(
            std::time::Instant::now() + Duration::from_millis(100),
        ));
    assert!(site.authorize(&mut waited).await.is_allow());
    for _ in 0..250 {
        if done.load(Ordering::SeqCst) == 21 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(done.load(Ordering::SeqCst), 21, "the shadow ran to its end");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let counters = Counters::take(&snapshotter);
    assert_eq!(
        counters.get(
            "authchain_shadow_disagreements_total",
            &[
                ("config", "site"),
                ("shadow", "next"),
                ("kind", "allow_deny")
            ],
        ),
        0
    );

    // Both allow, another user: an identity disagreement.
    generation
        .chain("as-alice")
        .unwrap()
        .authorize(&mut AuthorizationRequest::new(Method::GET, "/"))
        .await;
    let mut identity = 0;
    for _ in 0..250 {
        identity = Counters::take(&snapshotter).get(
            "authchain_shadow_disagreements_total",
            &[("config", "as-alice"), ("kind", "identity")],
        );
        if identity > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(identity, 1);

    // A shadow that never answers holds its places: beyond them, requests
    // are not shadowed, and counted.
    let busy = generation.chain("busy").unwrap();
    for _ in 0..MAX_SHADOW_RUNS + 5 {
        busy.authorize(&mut AuthorizationRequest::new(Method::GET, "/public/x"))
            .await;
    }
    let counters = Counters::take(&snapshotter);
    assert_eq!(
        counters.get(
            "authchain_shadow_dropped_total",
            &[("config", "busy"), ("shadow", "stuck")]
        ),
        5
    );

    // Nor do its runs hold more than their share of bodies, which outlive
    // the answers: beyond it, requests are not shadowed either.
    let uploads = generation.chain("uploads").unwrap();
    let mib = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    for _ in 0..(MAX_SHADOW_BODY_BYTES >> 20) + 3 {
        let mut request = AuthorizationRequest::new(Method::POST, "/public/x");
        request.body = Some(mib.clone());
        uploads.authorize(&mut request).await;
    }
    let counters = Counters::take(&snapshotter);
    assert_eq!(
        counters.get(
            "authchain_shadow_dropped_total",
            &[("config", "uploads"), ("shadow", "stuck")]
        ),
        3
    );
}

#[tokio::test]
async fn a_shadow_must_be_another_authconfig_without_one() {
    let step = "configs:\n- pluginAuth: { name: PublicOnly }\n";
    for (case, yaml, message) in [
        (
            "no such AuthConfig",
            format!("name: a\nshadow: ghost\n{step}"),
            "no AuthConfig named 'ghost'",
        ),
        (
            "itself",
            format!("name: a\nshadow: a\n{step}"),
            "an AuthConfig cannot be its own shadow",
        ),
        (
            "a shadow with a shadow",
            format!(
                "name: a\nshadow: b\n{step}---\nname: b\nshadow: c\n{step}---\nname: c\n{step}"
            ),
            "'b' has a shadow of its own",
        ),
    ] {
        let e = load_error(&yaml).await;
        assert!(e.to_string().contains(message), "{case}: {e}");
        assert!(e.to_string().contains("shadow"), "{case}: {e}");
    }
    // The error points where the name is: a manifest's `spec.shadow`.
    let manifest = "apiVersion: enterprise.gloo.solo.io/v1\nkind: AuthConfig\nmetadata: { name: m }\nspec:\n  shadow: ghost\n  configs:\n  - pluginAuth: { name: PublicOnly }\n";
    let e = load_error(manifest).await.to_string();
    assert!(
        e.contains(": spec.shadow: no AuthConfig named 'ghost'"),
        "{e}"
    );
}

#[test]
fn chains_made_in_code_name_their_shadow_too() {
    use authchain_core::{Chain, ChainStep, decide_fn};
    let step = || ChainStep::new("s", Arc::new(decide_fn(|_| Ok(Allow::new().into()))));
    let shadowed = || {
        Chain::builder("a")
            .shadow("b")
            .step(step())
            .build()
            .unwrap()
    };
    let b = || Chain::builder("b").step(step()).build().unwrap();
    assert!(Generation::from_chains([shadowed(), b()], 1).is_ok());
    let e = Generation::from_chains([shadowed()], 1).unwrap_err();
    assert!(e.to_string().contains("no AuthConfig named 'b'"), "{e}");
}

#[tokio::test]
async fn a_passthrough_s_mirror_is_the_chain_s_shadow() {
    let pass = |mirror: &str| {
        format!("configs:\n- passThroughAuth: {{ grpc: {{ address: 'x:1' }}, mirror: {mirror} }}\n")
    };
    for (case, yaml, message) in [
        (
            "a mirror beside a shadow",
            format!(
                "name: a\nshadow: b\n{}---\nname: b\nconfigs:\n- pluginAuth: {{ name: PublicOnly }}\n",
                pass("b")
            ),
            "configs[0].passThroughAuth.mirror: a chain has one shadow",
        ),
        (
            "a mirror that names nothing",
            format!("name: a\n{}", pass("5")),
            "configs[0].passThroughAuth.mirror: expected the name of an AuthConfig",
        ),
    ] {
        let e = load_error(&yaml).await;
        assert!(e.to_string().contains(message), "{case}: {e}");
    }
}

/// The error loading `yaml` fails with.
async fn load_error(yaml: &str) -> String {
    let configs = AuthConfig::parse("t.yaml", yaml, Format::Yaml).unwrap();
    Engine::new(registry(Arc::default()))
        .load(&configs)
        .await
        .unwrap_err()
        .to_string()
}
