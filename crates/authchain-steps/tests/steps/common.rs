//! Helpers: load a YAML config into an engine, make requests.

#![allow(dead_code)]

use std::sync::Arc;

use authchain_core::{AuthConfig, AuthorizationRequest, Chain, Decision, Engine, Error, Format};
use http::{HeaderName, HeaderValue, Method};

/// The origin every test config is parsed with.
pub(crate) const ORIGIN: &str = "t";

/// An engine with every built-in step and `yaml` loaded.
pub(crate) async fn load(yaml: &str) -> Result<Engine, Error> {
    let mut registry = authchain_core::PluginRegistry::new();
    authchain_steps::register(&mut registry);
    let engine = Engine::new(registry);
    engine
        .load(&AuthConfig::parse(ORIGIN, yaml, Format::Yaml)?)
        .await?;
    Ok(engine)
}

/// The chain of the only AuthConfig in `yaml`.
pub(crate) async fn chain(yaml: &str) -> Arc<Chain> {
    let engine = load(yaml).await.expect("config loads");
    let generation = engine.current();
    let name = generation.names()[0].to_owned();
    // Keep the engine (and its lifecycle) alive as long as the test.
    let chain = generation.chain(&name).expect("chain").clone();
    std::mem::forget(engine);
    chain
}

/// The error `yaml` fails to load with.
pub(crate) async fn load_error(yaml: &str) -> Error {
    match load(yaml).await {
        Ok(_) => panic!("config should not load"),
        Err(e) => e,
    }
}

/// Asserts that `yaml` fails to load with an error at `place`
/// (relative to the document), and that its text carries none of `secrets`.
pub(crate) async fn assert_bad_config(yaml: &str, place: &str, secrets: &[&str]) {
    let e = load_error(yaml).await;
    assert_eq!(
        e.place(),
        Some(format!("{ORIGIN}: {place}").as_str()),
        "{e}"
    );
    let text = format!("{e} {e:?}");
    for s in secrets {
        assert!(!text.contains(s), "error text leaks a secret: {text}");
    }
}

/// A request.
pub(crate) fn req(method: Method, path: &str) -> AuthorizationRequest {
    AuthorizationRequest::new(method, path)
}

/// A GET with one header.
pub(crate) fn get_with(path: &str, name: &'static str, value: &str) -> AuthorizationRequest {
    req(Method::GET, path).with_header(
        HeaderName::from_static(name),
        HeaderValue::try_from(value).expect("header value"),
    )
}

/// The status of a deny (200 for an allow).
pub(crate) fn status(d: &Decision) -> u16 {
    d.as_deny().map_or(200, |d| d.status.as_u16())
}

/// An upstream header the allow sets.
pub(crate) fn upstream(d: &Decision, name: &str) -> Option<String> {
    d.as_allow()?
        .headers
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value.to_str().expect("ascii").to_owned())
}

/// Everything logged on this thread, at every level, while the guard
/// lives (the tests' runtime is current-thread: the step, its clients and
/// a front log here).
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

pub(crate) struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.0.clone())
    }
}

impl Logs {
    pub(crate) fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
