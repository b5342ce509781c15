//! Config generations: build, start, swap, cancel; in-flight requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authchain_core::{
    Allow, Answer, AuthConfig, AuthService, AuthorizationRequest, BuildContext, Chain, ChainStep,
    Engine, Error, ExtAuthPlugin, Format, Generation, Lifecycle, PluginRegistry, async_trait,
};
use http::HeaderValue;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::support::*;

/// What the `Stamp` plugin's services saw happen to them.
#[derive(Default)]
struct Journal {
    started: Mutex<Vec<Lifecycle>>,
    built: AtomicUsize,
    /// When set, services wait on it inside `authorize` (after signalling `entered`).
    gate: Mutex<Option<Arc<Gate>>>,
}

struct Gate {
    entered: Notify,
    release: Notify,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StampConfig {
    stamp: String,
    /// How many of its starts fail.
    #[serde(default)]
    fail_starts: usize,
    /// How many of its starts (before those that fail) never end.
    #[serde(default)]
    hang_starts: usize,
}

#[derive(Clone, Default)]
struct StampPlugin {
    journal: Arc<Journal>,
}

struct Stamp {
    stamp: HeaderValue,
    fail_starts: AtomicUsize,
    hang_starts: AtomicUsize,
    journal: Arc<Journal>,
}

impl ExtAuthPlugin for StampPlugin {
    type Config = StampConfig;

    fn name(&self) -> &str {
        "Stamp"
    }

    fn build(&self, c: StampConfig, _: &BuildContext<'_>) -> Result<Arc<dyn AuthService>, Error> {
        self.journal.built.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(Stamp {
            stamp: HeaderValue::try_from(c.stamp).map_err(Error::build)?,
            fail_starts: AtomicUsize::new(c.fail_starts),
            hang_starts: AtomicUsize::new(c.hang_starts),
            journal: self.journal.clone(),
        }))
    }
}

#[async_trait]
impl AuthService for Stamp {
    async fn start(&self, lifecycle: Lifecycle) -> Result<(), Error> {
        self.journal.started.lock().unwrap().push(lifecycle);
        let hanging = self
            .hang_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if hanging.is_ok() {
            std::future::pending::<()>().await;
        }
        let failing = self
            .fail_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Error::start("the key server said no"));
        }
        Ok(())
    }

    fn authorize<'a>(&'a self, _: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            let gate = self.journal.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.entered.notify_one();
                gate.release.notified().await;
            }
            Ok(Allow::new()
                .set_header(name("x-stamp"), self.stamp.clone())
                .into())
        })
    }
}

fn configs(stamp: &str, fail_start: bool) -> Vec<AuthConfig> {
    let fail_starts = usize::from(fail_start);
    let text = format!(
        "name: main\nconfigs:\n- pluginAuth: {{name: Stamp, config: {{stamp: {stamp}, fail_starts: {fail_starts}}}}}\n"
    );
    AuthConfig::parse("gen.yaml", &text, Format::Yaml).unwrap()
}

fn engine() -> (Engine, Arc<Journal>) {
    let plugin = StampPlugin::default();
    let journal = plugin.journal.clone();
    let mut registry = PluginRegistry::new();
    registry.register(plugin);
    (Engine::new(registry), journal)
}

async fn stamp_of(generation: &Generation) -> String {
    let chain = generation.chain("main").expect("config main");
    let decision = chain.authorize(&mut get("/")).await;
    decision.as_allow().expect("allow").headers[0]
        .value
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_first_load_starts_generation_one() {
    let (engine, journal) = engine();
    assert_eq!(engine.current().number(), 0);
    assert!(engine.current().chain("main").is_none());
    assert_eq!(engine.load(&configs("v1", false)).await.unwrap(), 1);
    let current = engine.current();
    assert_eq!(current.number(), 1);
    assert_eq!(current.names(), ["main"]);
    assert_eq!(stamp_of(&current).await, "v1");
    let started = journal.started.lock().unwrap();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].generation(), 1);
    assert!(!started[0].is_cancelled());
}

#[tokio::test]
async fn a_good_load_starts_the_new_swaps_and_cancels_the_old() {
    let (engine, journal) = engine();
    engine.load(&configs("v1", false)).await.unwrap();
    let old = engine.current();
    assert_eq!(engine.load(&configs("v2", false)).await.unwrap(), 2);

    let started = journal.started.lock().unwrap().clone();
    assert_eq!(started.len(), 2);
    assert!(
        started[0].is_cancelled(),
        "generation 1's lifecycle is cancelled"
    );
    assert!(
        !started[1].is_cancelled(),
        "generation 2 starts with a fresh token"
    );
    assert_eq!(started[1].generation(), 2);
    // Cancellation is observable by background tasks.
    tokio::time::timeout(Duration::from_secs(1), started[0].cancelled())
        .await
        .expect("cancelled() completes");

    assert_eq!(stamp_of(&engine.current()).await, "v2");
    // Whoever still holds generation 1 still gets its answers.
    assert_eq!(stamp_of(&old).await, "v1");
}

#[tokio::test]
async fn a_failed_build_keeps_the_old_generation() {
    let (engine, journal) = engine();
    engine.load(&configs("v1", false)).await.unwrap();
    let bad = AuthConfig::parse(
        "gen.yaml",
        "name: main\nconfigs:\n- pluginAuth: {name: Stamp, config: {stamp: v2, colour: red}}\n",
        Format::Yaml,
    )
    .unwrap();
    let err = engine.load(&bad).await.unwrap_err();
    assert!(err.is_config());
    assert_eq!(
        err.place(),
        Some("gen.yaml: configs[0].pluginAuth.config.colour")
    );
    assert_eq!(engine.current().number(), 1);
    assert_eq!(stamp_of(&engine.current()).await, "v1");
    {
        let started = journal.started.lock().unwrap();
        assert_eq!(started.len(), 1, "nothing of the bad config was started");
        assert!(!started[0].is_cancelled());
    }
    // The next good load gets the next number.
    assert_eq!(engine.load(&configs("v3", false)).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_step_that_cannot_start_fails_its_requests_and_keeps_trying() {
    let (engine, journal) = engine();
    engine.load(&configs("v1", false)).await.unwrap();
    // One config's key server is down: the rest of the load applies.
    let text = "name: main\nconfigs:\n- pluginAuth: {name: Stamp, config: {stamp: v2}}\n---\n\
                name: other\nconfigs:\n- pluginAuth: {name: Stamp, config: {stamp: o, fail_starts: 3}}\n";
    let next = AuthConfig::parse("gen.yaml", text, Format::Yaml).unwrap();
    assert_eq!(engine.load(&next).await.unwrap(), 2);
    let current = engine.current();
    assert_eq!(stamp_of(&current).await, "v2");
    assert!(
        journal.started.lock().unwrap()[0].is_cancelled(),
        "generation 1 ended"
    );
    let other = current.chain("other").unwrap();
    assert_eq!(
        other
            .authorize(&mut get("/"))
            .await
            .as_deny()
            .unwrap()
            .status,
        403
    );
    assert_eq!(
        current.waiting(),
        [(
            "other",
            "config_0",
            "cannot start step: the key server said no".to_owned()
        )]
    );
    // It tries again after 1 s, 2 s and 4 s, and starts the third time.
    let waited = tokio::time::Instant::now();
    while !current.waiting().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = waited.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert!(other.authorize(&mut get("/")).await.is_allow());
    let starts = journal.started.lock().unwrap().len();
    assert_eq!(
        starts,
        1 + 1 + 4,
        "generation 1, then main once and other four times"
    );
}

/// Steps start side by side, and a start that does not end within 30 s
/// counts as failed: two AuthConfigs whose key servers never answer hold
/// up a load 30 s, not twice that nor for ever; each then waits and
/// tries again.
#[tokio::test(start_paused = true)]
async fn a_start_that_never_ends_holds_up_a_load_30_s_at_most() {
    let (engine, _journal) = engine();
    let text = "name: main\nconfigs:\n- pluginAuth: {name: Stamp, config: {stamp: m, hang_starts: 1}}\n---\n\
                name: other\nconfigs:\n- pluginAuth: {name: Stamp, config: {stamp: o, hang_starts: 1}}\n";
    let configs = AuthConfig::parse("gen.yaml", text, Format::Yaml).unwrap();
    let began = tokio::time::Instant::now();
    engine.load(&configs).await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_secs(30));
    let current = engine.current();
    let waiting = current.waiting();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert!(
        waiting
            .iter()
            .all(|(_, _, why)| why.contains("did not start within 30 s"))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(current.waiting().is_empty());
    assert_eq!(stamp_of(&current).await, "m");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_step_stops_trying_when_its_generation_ends() {
    let (engine, journal) = engine();
    let text = "name: main\nconfigs:\n- pluginAuth: {name: Stamp, config: {stamp: v1, fail_starts: 1000}}\n";
    engine
        .load(&AuthConfig::parse("gen.yaml", text, Format::Yaml).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let tried = journal.started.lock().unwrap().len();
    assert_eq!(tried, 4, "at 0, 1, 3 and 7 s");
    engine.load(&configs("v2", false)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        journal.started.lock().unwrap().len(),
        tried + 1,
        "only generation 2's start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_generation_it_began_with() {
    let (engine, journal) = engine();
    let engine = Arc::new(engine);
    engine.load(&configs("v1", false)).await.unwrap();

    let gate = Arc::new(Gate {
        entered: Notify::new(),
        release: Notify::new(),
    });
    *journal.gate.lock().unwrap() = Some(gate.clone());
    let in_flight = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let generation = engine.current();
            stamp_of(&generation).await
        })
    };
    gate.entered.notified().await;

    // Swap while the request waits inside generation 1's step.
    assert_eq!(engine.load(&configs("v2", false)).await.unwrap(), 2);
    assert!(journal.started.lock().unwrap()[0].is_cancelled());
    *journal.gate.lock().unwrap() = None;
    assert_eq!(
        stamp_of(&engine.current()).await,
        "v2",
        "new requests see v2"
    );

    gate.release.notify_one();
    assert_eq!(in_flight.await.unwrap(), "v1", "the old request ends on v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_fail_while_generations_flip() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    engine.load(&configs("a", false)).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (engine, stop, checks) = (engine.clone(), stop.clone(), checks.clone());
        tokio::spawn(async move {
            let mut seen = [0usize; 2];
            while !stop.load(Ordering::SeqCst) {
                let generation = engine.current();
                match stamp_of(&generation).await.as_str() {
                    "a" => seen[0] += 1,
                    "b" => seen[1] += 1,
                    other => panic!("unexpected stamp {other}"),
                }
                checks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for i in 0..20 {
        let stamp = if i % 2 == 0 { "b" } else { "a" };
        engine.load(&configs(stamp, false)).await.unwrap();
        // Two checks more: the second began after the first ended, which
        // is after this load: on the new generation.
        let loaded = checks.load(Ordering::SeqCst);
        while checks.load(Ordering::SeqCst) < loaded + 2 {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let [seen_a, seen_b] = worker.await.unwrap();
    assert_eq!(engine.current().number(), 21);
    assert!(
        seen_a >= 10 && seen_b >= 10,
        "every generation answered with its own stamp: a {seen_a}, b {seen_b}"
    );
}

#[tokio::test]
async fn chains_built_in_code_install_as_a_generation() {
    let (engine, _) = engine();
    let chain = Chain::builder("coded")
        .step(ChainStep::new("a", Fixed::allow().service()))
        .build()
        .unwrap();
    let generation = Generation::from_chains([chain], 5).unwrap();
    assert_eq!(engine.install(generation).await.unwrap(), 5);
    assert!(engine.current().chain("coded").is_some());
    let stale = Generation::from_chains([], 3).unwrap();
    assert!(engine.install(stale).await.unwrap_err().is_config());
    // Loads continue the numbering.
    assert_eq!(engine.load(&configs("v", false)).await.unwrap(), 6);
}

#[tokio::test]
async fn dropping_the_engine_stops_its_generation() {
    let (engine, journal) = engine();
    engine.load(&configs("v1", false)).await.unwrap();
    let held = engine.current();
    drop(engine);
    let started = journal.started.lock().unwrap()[0].clone();
    assert!(
        !started.is_cancelled(),
        "a request still holds generation 1"
    );
    drop(held);
    assert!(
        started.is_cancelled(),
        "no one holds it: its background work stops, shut_down or not"
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_has_not_started_fails_closed_even_with_failure_mode_allow() {
    let (engine, _) = engine();
    let text = "name: main\nconfigs:\n- failureModeAllow: true\n  pluginAuth: {name: Stamp, config: {stamp: v1, fail_starts: 1}}\n";
    engine
        .load(&AuthConfig::parse("gen.yaml", text, Format::Yaml).unwrap())
        .await
        .unwrap();
    let current = engine.current();
    let chain = current.chain("main").unwrap();
    // It never checked anything: no pass, marked or not.
    let decision = chain.authorize(&mut get("/")).await;
    assert_eq!(decision.as_deny().map(|d| d.status.as_u16()), Some(403));
    // Started, the step answers, and a failure of its own would pass.
    while !current.waiting().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stamp_of(&current).await, "v1");
}
