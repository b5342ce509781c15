//! Config generations and their atomic replacement.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::decision_log::DecisionLog;
use crate::plugin::FilesRead;
use crate::{AuthConfig, Chain, Error, Lifecycle, PluginRegistry};

/// The map of a generation's chains by name. Every check looks its chain
/// up, and names are few and never inserted after the build: a fast
/// (randomly seeded) hash rather than SipHash.
type Chains = HashMap<String, Arc<Chain>, foldhash::fast::RandomState>;

/// Every named AuthConfig built into chains: immutable once built.
pub struct Generation {
    number: u64,
    chains: Chains,
    /// What the steps read, with a digest of each (`None`: unreadable).
    files: Vec<(PathBuf, Option<u64>)>,
    token: CancellationToken,
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.chains.keys().collect();
        names.sort();
        f.debug_struct("Generation")
            .field("number", &self.number)
            .field("configs", &names)
            .field("cancelled", &self.token.is_cancelled())
            .finish()
    }
}

impl Generation {
    /// An empty generation, number 0: what an engine serves before its
    /// first load. It knows no AuthConfig.
    pub fn empty() -> Self {
        Generation {
            number: 0,
            chains: Chains::default(),
            files: Vec::new(),
            token: CancellationToken::new(),
        }
    }

    /// Builds every config into a generation numbered `number`, without
    /// starting it. Every problem in every config is reported, each with
    /// its place; two configs with one name are an error.
    pub fn build(
        registry: &PluginRegistry,
        configs: &[AuthConfig],
        number: u64,
    ) -> Result<Generation, Error> {
        Self::build_logged(registry, configs, number, None)
    }

    /// [`build`](Self::build), each chain logging its decisions to `log`
    /// as it and `log` say.
    fn build_logged(
        registry: &PluginRegistry,
        configs: &[AuthConfig],
        number: u64,
        log: Option<&DecisionLog>,
    ) -> Result<Generation, Error> {
        let mut chains = Chains::with_capacity_and_hasher(configs.len(), Default::default());
        let mut built: Vec<Chain> = Vec::with_capacity(configs.len());
        let mut errors = Vec::new();
        let files = FilesRead::default();
        for (i, config) in configs.iter().enumerate() {
            // Whether or not the first one builds.
            if let Some(first) = configs[..i].iter().find(|c| c.name() == config.name()) {
                errors.push(
                    Error::config(format!(
                        "a second AuthConfig named '{}' (the first is in {}); names must be unique",
                        config.name(),
                        first.origin()
                    ))
                    .in_source(config.origin()),
                );
                continue;
            }
            match config.build_reading(registry, &files) {
                Ok(mut chain) => {
                    if let Some(log) = log {
                        chain.attach_log(log, number);
                    }
                    built.push(chain);
                }
                Err(e) => errors.push(e),
            }
        }
        if log.is_none() {
            let asking: Vec<&str> = built
                .iter()
                .filter(|c| c.wants_log())
                .map(|c| c.name())
                .collect();
            if !asking.is_empty() {
                tracing::warn!(
                    configs = %asking.join(", "),
                    "these AuthConfigs ask for a decision log, but there is none to write to"
                );
            }
        }
        let origin = |name: &str| {
            configs
                .iter()
                .find(|c| c.name() == name)
                .map_or((String::new(), ""), |c| (c.origin().to_owned(), c.base()))
        };
        link(built, &mut chains, &mut errors, origin);
        let mut files = files.into_inner().unwrap_or_else(|e| e.into_inner());
        files.sort();
        // A file read twice with other contents (changed during the
        // build) has no digest: the next event on it reloads.
        files.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same && later.1 != kept.1 {
                kept.1 = None;
            }
            same
        });
        if let Some(e) = Error::collect(errors) {
            return Err(e.with_files(files.into_iter().map(|(path, _)| path).collect()));
        }
        Ok(Generation {
            number,
            chains,
            files,
            token: CancellationToken::new(),
        })
    }

    /// Builds a generation from chains made in code (their shadows named
    /// among them).
    pub fn from_chains(
        chains: impl IntoIterator<Item = Chain>,
        number: u64,
    ) -> Result<Self, Error> {
        let mut built: Vec<Chain> = Vec::new();
        for chain in chains {
            if built.iter().any(|c| c.name() == chain.name()) {
                return Err(Error::config(format!(
                    "a second chain named '{}'; names must be unique",
                    chain.name()
                )));
            }
            built.push(chain);
        }
        let (mut map, mut errors) = (Chains::default(), Vec::new());
        link(built, &mut map, &mut errors, |_| (String::new(), ""));
        if let Some(e) = Error::collect(errors) {
            return Err(e);
        }
        Ok(Generation {
            number,
            chains: map,
            files: Vec::new(),
            token: CancellationToken::new(),
        })
    }

    /// The generation's number: 0 for the empty one, then 1, 2, ...
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The chain of the AuthConfig named `name`.
    pub fn chain(&self, name: &str) -> Option<&Arc<Chain>> {
        self.chains.get(name)
    }

    /// The names of its AuthConfigs, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.chains.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The files its steps read while building ([`BuildContext::read`]),
    /// sorted: the `authchain` server reloads when one changes.
    ///
    /// [`BuildContext::read`]: crate::BuildContext::read
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(path, _)| path.as_path())
    }

    /// Whether a file its steps read now holds something else (or can be
    /// read where it could not, or no longer): what a watcher's event on
    /// one needs to mean a reload.
    pub fn files_changed(&self) -> bool {
        self.files.iter().any(|(path, digest)| {
            let now = crate::config::read_file(path)
                .ok()
                .map(|c| crate::plugin::contents_digest(&c));
            now != *digest
        })
    }

    /// The generation's lifecycle, as its services get it.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle::new(self.number, self.token.clone())
    }

    /// Starts every service of every chain. A step that cannot start
    /// waits, failing its requests, and tries again (see [`Chain`]'s rule
    /// 10): one AuthConfig whose key server is down keeps no other from
    /// serving.
    pub async fn start(&self) {
        let lifecycle = self.lifecycle();
        let starts = self.chains.values().map(|chain| chain.start(&lifecycle));
        futures::future::join_all(starts).await;
    }

    /// The steps that have not started, as `(config, step, why)`, by
    /// config name.
    pub fn waiting(&self) -> Vec<(&str, &str, String)> {
        self.names()
            .into_iter()
            .flat_map(|name| {
                self.chains[name]
                    .waiting()
                    .into_iter()
                    .map(move |(step, why)| (name, step, why))
            })
            .collect()
    }

    /// Cancels the lifecycle: services stop their background work.
    pub fn shut_down(&self) {
        self.token.cancel();
    }
}

/// A generation no one holds any more stops its services' background work
/// (key refreshes, start retries), whether or not it was shut down.
impl Drop for Generation {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The live generation, replaced atomically on reload.
///
/// A request takes the generation current when it starts
/// ([`Engine::current`]) and finishes on it whatever loads happen
/// meanwhile.
///
/// [`Engine::load`] builds a whole new generation; any error leaves the
/// current one serving, untouched. Otherwise it starts the new services
/// with a fresh lifecycle (a step that cannot start waits, failing its
/// requests, and keeps trying: see [`Generation::start`]), swaps the new
/// generation in, then cancels the old one's lifecycle. Starting before cancelling means the serving generation never
/// runs with its background work stopped; services that hold an exclusive
/// resource must therefore let two generations overlap briefly.
pub struct Engine {
    registry: PluginRegistry,
    current: ArcSwap<Generation>,
    load: Mutex<u64>,
    log: Option<DecisionLog>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("registry", &self.registry)
            .field("current", &self.current.load())
            .finish()
    }
}

impl Engine {
    /// An engine serving the empty generation 0.
    pub fn new(registry: PluginRegistry) -> Self {
        Engine {
            registry,
            current: ArcSwap::from_pointee(Generation::empty()),
            load: Mutex::new(0),
            log: None,
        }
    }

    /// Logs decisions to `log` (see [`crate::decision_log`]), from the
    /// next [`load`](Self::load) on.
    pub fn with_decision_log(mut self, log: DecisionLog) -> Self {
        self.log = Some(log);
        self
    }

    /// Builds `configs` into a generation numbered `number`, as
    /// [`Generation::build`] does, its chains logging to the engine's
    /// decision log; [`install`](Self::install) starts it.
    pub fn build(&self, configs: &[AuthConfig], number: u64) -> Result<Generation, Error> {
        Generation::build_logged(&self.registry, configs, number, self.log.as_ref())
    }

    /// The registry configs resolve against.
    pub fn registry(&self) -> &PluginRegistry {
        &self.registry
    }

    /// The generation serving now. Hold the `Arc` for the whole request.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Builds, starts and swaps in a new generation from `configs`;
    /// returns its number. Loads are serialised. On error the current
    /// generation stays.
    pub async fn load(&self, configs: &[AuthConfig]) -> Result<u64, Error> {
        let mut last = self.load.lock().await;
        let generation = self.build(configs, *last + 1)?;
        self.swap_in(generation, &mut last).await
    }

    /// Starts and swaps in a generation built elsewhere (for example with
    /// [`Generation::from_chains`]). Its number must be higher than the
    /// current one's.
    pub async fn install(&self, generation: Generation) -> Result<u64, Error> {
        let mut last = self.load.lock().await;
        if generation.number <= *last {
            return Err(Error::config(format!(
                "generation {} is not newer than generation {}",
                generation.number, *last
            )));
        }
        self.swap_in(generation, &mut last).await
    }

    async fn swap_in(&self, generation: Generation, last: &mut u64) -> Result<u64, Error> {
        generation.start().await;
        let number = generation.number;
        *last = number;
        let old = self.current.swap(Arc::new(generation));
        old.shut_down();
        tracing::info!(generation = number, "got new config");
        Ok(number)
    }

    /// Cancels the current generation's lifecycle (on shutdown).
    pub fn shut_down(&self) {
        self.current.load().shut_down();
    }
}

/// Leaves out of every chain's log the headers a step of any chain reads:
/// a credential there, which a client may send on every route (and a
/// shadow runs its chain's requests).
fn unlog_read_headers(built: &mut [Chain]) {
    let mut read: Vec<http::HeaderName> = Vec::new();
    for header in built.iter().flat_map(Chain::logged_headers) {
        if read.contains(header) {
            continue;
        }
        let reader = built
            .iter()
            .find_map(|c| c.reader_of(header).map(|step| (c.name(), step)));
        if let Some((config, step)) = reader {
            tracing::warn!(
                config,
                step,
                header = %header,
                "the decision log names a header a step reads: it is logged for no AuthConfig"
            );
            read.push(header.clone());
        }
    }
    if !read.is_empty() {
        for chain in built {
            chain.unlog(&read);
        }
    }
}

/// Puts `built` into `chains`, each linked to its shadow: an AuthConfig
/// of its own, with no shadow of its own (those with none go in first, for
/// the others to point at). A shadow that is none is an error, from the
/// document `origin` names (and under its base, `spec` for a manifest).
fn link(
    mut built: Vec<Chain>,
    chains: &mut Chains,
    errors: &mut Vec<Error>,
    origin: impl Fn(&str) -> (String, &'static str),
) {
    unlog_read_headers(&mut built);
    let (shadowing, plain): (Vec<Chain>, Vec<Chain>) =
        built.into_iter().partition(|c| c.shadow_name().is_some());
    let names: Vec<String> = shadowing.iter().map(|c| c.name().to_owned()).collect();
    for chain in plain {
        chains.insert(chain.name().to_owned(), Arc::new(chain));
    }
    for mut chain in shadowing {
        let name = chain.shadow_name().unwrap_or_default().to_owned();
        match chains.get(&name) {
            Some(shadow) => {
                chain.attach_shadow(shadow.clone());
                chains.insert(chain.name().to_owned(), Arc::new(chain));
            }
            None => errors.push({
                let (source, base) = origin(chain.name());
                Error::config(if name == chain.name() {
                    "an AuthConfig cannot be its own shadow".to_owned()
                } else if names.contains(&name) {
                    format!("'{name}' has a shadow of its own; a shadow cannot")
                } else {
                    format!("no AuthConfig named '{name}'")
                })
                .at(chain.shadow_place())
                .at(base)
                .in_source(source)
            }),
        }
    }
}
