//! The running server: listeners, reloads, signals and shutdown.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use authchain_core::transport::ConcurrencyLimit;
use authchain_core::{Engine, Error, Generation, PluginRegistry};
use authchain_grpc::ExtAuthzService;
use authchain_http::{CheckConfig, CheckServer};
use notify::{RecursiveMode, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::settings::{Loaded, Settings, TrustedProxySettings};

/// How long the files must be quiet before a reload: an editor's save, a
/// ConfigMap swap or a file written in pieces is several events.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The longest a reload waits for the files to be quiet.
const GATHER_AT_MOST: Duration = Duration::from_secs(5);

/// Where the config comes from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Default,
}

/// Why the server could not run.
#[derive(Debug)]
pub struct ServeError {
    kind: ServeErrorKind,
}

#[derive(Debug)]
enum ServeErrorKind {
    Config(Error),
    Bind(&'static str, SocketAddr, std::io::Error),
}

impl ServeError {
    /// The config could not be read or built; [`config_error`](Self::config_error)
    /// lists every problem with its place.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, ServeErrorKind::Config(_))
    }

    /// The config error, if that is what this is.
    pub fn config_error(&self) -> Option<&Error> {
        match &self.kind {
            ServeErrorKind::Config(e) => Some(e),
            ServeErrorKind::Bind(..) => None,
        }
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ServeErrorKind::Config(e) => write!(f, "{e}"),
            ServeErrorKind::Bind(what, addr, e) => {
                write!(f, "cannot listen for {what} on {addr}: {e}")
            }
        }
    }
}

impl std::error::Error for ServeError {}

impl From<Error> for ServeError {
    fn from(e: Error) -> Self {
        ServeError {
            kind: ServeErrorKind::Config(e),
        }
    }
}

/// The `authchain` server, to run from a `main` of your own with your
/// plugins registered (what the `authchain` binary does with the built-in
/// steps):
///
/// ```no_run
/// # async fn run() -> Result<(), authchain_server::ServeError> {
/// let mut registry = authchain_server::default_registry();
/// // registry.register(MyPlugin);
/// authchain_server::Server::new(registry)
///     .config_file("authchain.yaml")
///     .run()
///     .await
/// # }
/// ```
///
/// [`main_with`](crate::main_with) does this and the command line too.
#[derive(Debug)]
pub struct Server {
    registry: PluginRegistry,
    source: Source,
}

impl Server {
    /// A server whose AuthConfigs resolve in `registry`, serving the
    /// embedded default config until given a file.
    pub fn new(registry: PluginRegistry) -> Self {
        Server {
            registry,
            source: Source::Default,
        }
    }

    /// Serves the config file at `path` (and reloads it when it changes).
    /// Its `authConfigFiles` are read relative to it; other paths in it
    /// (a step's `keysFile`, the decision log's `path`) relative to the
    /// working directory, which the `authchain` binary makes the config
    /// file's directory.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Source::File(path.into());
        self
    }

    /// Runs until SIGTERM or SIGINT, reloading on SIGHUP and on file
    /// changes; see the crate docs. A second SIGTERM or SIGINT during the
    /// shutdown's delay or grace stops at once.
    pub async fn run(self) -> Result<(), ServeError> {
        let (first, second) = terminations();
        self.serve(first, second).await
    }

    /// As [`run`](Self::run), until `shutdown` completes instead of a
    /// terminating signal (SIGHUP still reloads).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        self.serve(shutdown, std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then shuts down, at once if
    /// `hurry` completes meanwhile.
    async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
        hurry: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        // Caught from the start: a SIGHUP while starting (a log rotation,
        // a config push) reloads once serving, rather than ending the
        // process as its default action does.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        // SIGUSR1 reopens the decision log alone, as nginx's does its logs:
        // a daily rotation does not rebuild every step.
        let reopen = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1());
        let loaded = crate::settings::all_or_nothing(load(&self.source)?)?;
        crate::logging::init(&loaded.settings.log);
        let metrics = admin::install_recorder();
        let settings = loaded.settings.clone();
        let mut engine = Engine::new(self.registry);
        let mut log_file = None;
        if let Some(settings) = &settings.decision_log {
            let (log, file) = crate::decision_log::open(settings)?;
            engine = engine.with_decision_log(log);
            log_file = Some(file);
        }
        let mut reopen = reopen
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGUSR1; reopen the decision log with SIGHUP"))
            .ok();
        let engine = Arc::new(engine);
        // Build before opening anything: a config error ends the run here.
        let generation = engine.build(&loaded.configs, 1)?;

        open_file_limit(&settings);
        let (ready, readiness) = watch::channel(false);
        let stop = CancellationToken::new();
        // Each listener has its own places: one protocol's clients cannot
        // take the other's.
        let limits = [(); 2].map(|()| ConcurrencyLimit::new(settings.max_concurrent_checks));
        let in_flight = || {
            limits
                .iter()
                .map(ConcurrencyLimit::in_flight)
                .sum::<usize>()
        };
        let mut tasks = JoinSet::new();
        let mut addresses = Vec::new();

        if let Some(grpc) = &settings.grpc {
            let listener = bind("gRPC", grpc.address).await?;
            addresses.push(format!("grpc={}", local(&listener)));
            let mut service = ExtAuthzService::new(engine.clone())
                .concurrency_limit(limits[0].clone())
                .connection_limits(grpc.connection_limits())
                .readiness(readiness.clone());
            if let Some(name) = &settings.default_config {
                service = service.default_config(name);
            }
            if let Some(key) = &grpc.config_key {
                service = service.config_key(key);
            }
            if let Some(max) = grpc.max_request_bytes {
                service = service.max_request_bytes(max);
            }
            if let Some(timeout) = grpc.read_timeout {
                service = service.read_timeout(timeout.0);
            }
            let stop = stop.clone().cancelled_owned();
            tasks.spawn(async move {
                if let Err(e) =
                    authchain_grpc::serve_listener_with_shutdown(listener, service, stop).await
                {
                    tracing::error!(error = %e, "the gRPC server failed");
                }
            });
        }
        // The HTTP check server, kept to give it a reload's trusted
        // proxies.
        let mut check_server = None;
        if let Some(http) = &settings.http {
            let listener = bind("HTTP checks", http.address).await?;
            addresses.push(format!("http={}", local(&listener)));
            let config = check_config(&settings, &http.trusted_proxies);
            let mut server = CheckServer::new(engine.clone(), config)
                .concurrency_limit(limits[1].clone())
                .connection_limits(http.connection_limits());
            if let Some(timeout) = http.read_timeout {
                server = server.read_timeout(timeout.0);
            }
            if let Some(max) = http.body_limit {
                server = server.body_limit(max);
            }
            check_server = Some(server.clone());
            let stop = stop.clone().cancelled_owned();
            tasks.spawn(async move {
                if let Err(e) = server.serve(listener, stop).await {
                    tracing::error!(error = %e, "the HTTP server failed");
                }
            });
        }
        // The admin listener outlives the others: it reports not-ready
        // while they drain.
        let admin_stop = CancellationToken::new();
        let mut admin_task = None;
        if let Some(settings) = &settings.admin {
            let listener = bind("admin", settings.address).await?;
            addresses.push(format!("admin={}", local(&listener)));
            let admin = Admin {
                metrics,
                ready: readiness.clone(),
                engine: engine.clone(),
            };
            admin_task = Some(tokio::spawn(
                admin.serve(listener, admin_stop.clone().cancelled_owned()),
            ));
        }
        tracing::info!(listening = %addresses.join(" "), configs = loaded.configs.len(), "authchain serving");

        let source = self.source;
        let mut reloads =
            Reloads::new(source.clone(), hangup, &loaded, &generation, settings.watch);
        let first = start_first(&engine, loaded, generation);
        let mut first = std::pin::pin!(first);
        let mut current: Option<Loaded> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(()) = async {
                    match &mut reopen {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(file) = &log_file {
                        file.reopen().await;
                    }
                }
                loaded = &mut first, if current.is_none() => {
                    if engine.current().number() > 0 {
                        ready.send_replace(true);
                    }
                    reloads.watch(&[&loaded], engine.current().files());
                    current = Some(loaded);
                }
                // While the first generation starts, changes wait in line.
                trigger = reloads.next(), if current.is_some() => {
                    let Some(serving) = &current else { continue };
                    if let Some(file) = log_file.as_ref().filter(|_| trigger == Trigger::Hangup) {
                        file.reopen().await;
                    }
                    // A step file's event that changed nothing (a touch)
                    // reloads only if the config text changed meanwhile.
                    let forced = match trigger {
                        Trigger::Hangup => true,
                        Trigger::StepFile => {
                            let current = engine.current();
                            off_the_workers(move || current.files_changed()).await.unwrap_or(true)
                        }
                        Trigger::ConfigFile => false,
                    };
                    // A reload waits for its steps to start; a SIGTERM
                    // meanwhile ends it, the serving generation kept.
                    let reloaded = tokio::select! {
                        reloaded = reload(&engine, &source, serving, &settings, forced) => reloaded,
                        () = &mut shutdown => break,
                    };
                    match reloaded {
                        Ok(Some(next)) => {
                            reloads.watch(&[&next], engine.current().files());
                            if let Some(server) = &check_server
                                && trusted_proxies(&serving.settings) != trusted_proxies(&next.settings)
                            {
                                server.reconfigure(check_config(&settings, trusted_proxies(&next.settings)));
                                tracing::info!("the HTTP check server trusts the reloaded trustedProxies");
                            }
                            current = Some(next);
                        }
                        // Back to what serves: watched as it is (after a
                        // rejected change, the files it dropped again).
                        Ok(None) => reloads.watch(&[serving], engine.current().files()),
                        // The files both configs name are watched, and the
                        // new files its steps read: a keysFile that is not
                        // there yet, or not right.
                        Err(Some((read, tried))) => reloads.watch(
                            &[serving, &read],
                            engine.current().files().chain(tried.iter().map(PathBuf::as_path)),
                        ),
                        Err(None) => {}
                    }
                }
            }
        }

        let grace = settings.shutdown_grace.0;
        ready.send_replace(false);
        let delay = settings.shutdown_delay.0;
        let mut hurry = std::pin::pin!(hurry);
        let mut hurried = false;
        if !delay.is_zero() {
            tracing::info!(delay = ?delay, "shutting down: not ready, still accepting checks for the delay");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut hurry => hurried = true,
            }
        }
        tracing::info!(grace = ?grace, in_flight = in_flight(), "shutting down: no new connections, finishing checks in flight");
        stop.cancel();
        let drained = !hurried
            && tokio::select! {
                drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }) => drained.is_ok(),
                () = &mut hurry => false,
            };
        if drained {
            tracing::info!("stopped");
        } else {
            tracing::warn!(
                in_flight = in_flight(),
                "the shutdown grace ran out, or a second signal came; dropping checks still in flight"
            );
            tasks.abort_all();
        }
        engine.shut_down();
        if let Some(file) = &log_file {
            file.close(Duration::from_secs(1)).await;
        }
        admin_stop.cancel();
        if let Some(task) = admin_task {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        Ok(())
    }
}

/// Raises the process's soft limit of open files (up to its hard limit)
/// to what the listeners may hold, and warns when it stays below: past
/// it, connections are refused and outbound calls fail.
fn open_file_limit(settings: &Settings) {
    let connections = [
        settings.grpc.as_ref().map(|g| g.connection_limits()),
        settings.http.as_ref().map(|h| h.connection_limits()),
    ];
    // The admin listener's, and 512 for the files and outbound
    // connections of the steps.
    let wanted = connections
        .iter()
        .flatten()
        .fold(admin::ADMIN_CONNECTIONS as u64 + 512, |n, l| {
            n.saturating_add(l.max_connections as u64)
        });
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below what the listeners may hold: raise it (systemd: LimitNOFILE) or lower maxConnections"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

/// The settings and AuthConfigs `source` holds, and the problems of what
/// did not read (a file must open a check listener: one that opens none,
/// empty or caught while written, would serve nothing, which a proxy may
/// read as allow); an error when the settings do not read.
fn load(source: &Source) -> Result<(Loaded, Vec<Error>), Error> {
    match source {
        Source::File(path) => Loaded::read_file(path),
        Source::Default => Loaded::default_config().map(|loaded| (loaded, Vec::new())),
    }
}

async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address).await.map_err(|e| ServeError {
        kind: ServeErrorKind::Bind(what, address, e),
    })
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string())
}

/// Installs the first generation. A step that cannot start does not stop
/// it: that step fails its requests and keeps trying (the chain's rule 10).
async fn start_first(engine: &Engine, loaded: Loaded, built: Generation) -> Loaded {
    match engine.install(built).await {
        Ok(number) => loaded_generation(number),
        // Generation 1 is always newer than the empty generation 0.
        Err(e) => rejected("cannot install the first generation", &e),
    }
    loaded
}

/// One reload: read everything again, build and start a new generation;
/// on any error the serving generation stays. `forced` (SIGHUP) reloads
/// even when no text changed. `running`: the settings the server started
/// with, which its listeners keep. `Ok(None)`: nothing changed;
/// `Err(Some)`: rejected, with what was read (its settings read) and the
/// files its steps read or tried to (watch what both name, so that a fix
/// reloads).
async fn reload(
    engine: &Arc<Engine>,
    source: &Source,
    current: &Loaded,
    running: &Settings,
    forced: bool,
) -> Result<Option<Loaded>, Option<(Loaded, Vec<PathBuf>)>> {
    let read = {
        let source = source.clone();
        off_the_workers(move || load(&source)).await
    };
    let next = match read.unwrap_or_else(|| Err(Error::config("the config read panicked"))) {
        Err(e) => {
            rejected(REJECTED, &e);
            return Err(None);
        }
        Ok((next, errors)) => match Error::collect(errors) {
            None => next,
            // What it names is watched: the file that mends it reloads.
            Some(e) => {
                rejected(REJECTED, &e);
                return Err(Some((next, Vec::new())));
            }
        },
    };
    if !forced && next.digest == current.digest {
        tracing::info!("the config read is the one serving: nothing to reload");
        return Ok(None);
    }
    if let Some(name) = &running.default_config
        && !next.configs.iter().any(|c| c.name() == name)
    {
        let e = Error::config(format!(
            "the listeners' default AuthConfig `{name}` is not among the new ones \
             (a new defaultConfig applies at the next restart)"
        ))
        .at("defaultConfig");
        rejected(REJECTED, &e);
        return Err(Some((next, Vec::new())));
    }
    // An edit that empties the list (a file caught while written) would
    // turn every check away; SIGHUP loads it if that is the intent.
    if !forced && next.configs.is_empty() && !current.configs.is_empty() {
        let e = Error::config(
            "no AuthConfigs in the new config (a file caught while it was written?); \
             send SIGHUP to load it all the same",
        );
        rejected(REJECTED, &e);
        return Err(Some((next, Vec::new())));
    }
    let waiting = restart_only(running, &next.settings);
    if !waiting.is_empty() {
        tracing::warn!(
            settings = %waiting.join(", "),
            "these settings changed and need a restart (the running server keeps the old ones: \
             default AuthConfig, listeners, limits, logs); the AuthConfigs are reloaded now"
        );
    }
    let built = {
        let (engine, configs) = (engine.clone(), next.configs.clone());
        let number = engine.current().number() + 1;
        off_the_workers(move || engine.build(&configs, number)).await
    };
    let installed = match built {
        Some(Ok(generation)) => engine.install(generation).await,
        Some(Err(e)) => Err(e),
        None => Err(Error::config("building the AuthConfigs panicked")),
    };
    match installed {
        Ok(number) => {
            loaded_generation(number);
            Ok(Some(next))
        }
        Err(e) => {
            rejected(REJECTED, &e);
            let tried = e.files().map(Path::to_path_buf).collect();
            Err(Some((next, tried)))
        }
    }
}

/// `work` (reading files, compiling policies) on Tokio's blocking pool,
/// where it holds no worker that checks need (one, in a one-CPU pod);
/// `None` if it panicked.
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// The proxies `settings` trust: none without an `http` block (one taken
/// out on reload trusts no one).
fn trusted_proxies(settings: &Settings) -> &[TrustedProxySettings] {
    settings
        .http
        .as_ref()
        .map_or(&[], |h| h.trusted_proxies.as_slice())
}

/// How the HTTP check server reads checks: `trusted` proxies (the
/// running ones, or a reload's), and the listener's prefix and default
/// AuthConfig as `settings` (the ones it started with) say.
fn check_config(settings: &Settings, trusted: &[TrustedProxySettings]) -> CheckConfig {
    let mut config = CheckConfig::default();
    for proxy in trusted {
        config = config.trust([proxy.network], proxy.headers);
    }
    if let Some(prefix) = settings.http.as_ref().and_then(|h| h.prefix.as_ref()) {
        config = config.prefix(prefix);
    }
    if let Some(name) = &settings.default_config {
        config = config.default_config(name);
    }
    config
}

/// The settings that changed from `old` to `new` that a reload cannot
/// apply (all but the AuthConfigs, `userIdHeader` and the trusted
/// proxies), by the names the file gives them.
fn restart_only(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut differ = |name, same: bool| {
        if !same {
            changed.push(name);
        }
    };
    let (a, b) = (old.http.as_ref(), new.http.as_ref());
    differ("grpc", old.grpc == new.grpc);
    differ("http.address", a.map(|h| h.address) == b.map(|h| h.address));
    differ("http.prefix", a.map(|h| &h.prefix) == b.map(|h| &h.prefix));
    differ(
        "http.bodyLimit",
        a.map(|h| h.body_limit) == b.map(|h| h.body_limit),
    );
    differ(
        "http.readTimeout",
        a.map(|h| h.read_timeout) == b.map(|h| h.read_timeout),
    );
    differ(
        "http.maxConnections",
        a.map(|h| h.max_connections) == b.map(|h| h.max_connections),
    );
    differ(
        "http.idleTimeout",
        a.map(|h| h.idle_timeout) == b.map(|h| h.idle_timeout),
    );
    differ(
        "http.maxBufferedBytes",
        a.map(|h| h.max_buffered_bytes) == b.map(|h| h.max_buffered_bytes),
    );
    differ("admin", old.admin == new.admin);
    differ("defaultConfig", old.default_config == new.default_config);
    differ(
        "maxConcurrentChecks",
        old.max_concurrent_checks == new.max_concurrent_checks,
    );
    differ("shutdownGrace", old.shutdown_grace == new.shutdown_grace);
    differ("shutdownDelay", old.shutdown_delay == new.shutdown_delay);
    differ("log", old.log == new.log);
    differ("decisionLog", old.decision_log == new.decision_log);
    differ("watch", old.watch == new.watch);
    // A setting added later and not named above still says so.
    // `userIdHeader` is applied as each AuthConfig's default, and the
    // trusted proxies by the check server, so they reload with them.
    let rest = |s: &Settings| {
        let mut rest = Settings {
            auth_configs: Vec::new(),
            auth_config_files: Vec::new(),
            user_id_header: None,
            ..s.clone()
        };
        if let Some(http) = &mut rest.http {
            http.trusted_proxies.clear();
        }
        rest
    };
    if changed.is_empty() && rest(old) != rest(new) {
        changed.push("server settings");
    }
    changed
}

const REJECTED: &str = "config change rejected; still serving the previous generation";

/// Counts a generation swapped in (the engine logs `got new config`).
fn loaded_generation(number: u64) {
    metrics::counter!("authchain_reloads_total", "result" => "ok").increment(1);
    metrics::gauge!("authchain_config_generation").set(number as f64);
}

/// Counts a config that could not be swapped in, and logs its problems.
fn rejected(what: &str, e: &Error) {
    metrics::counter!("authchain_reloads_total", "result" => "error").increment(1);
    log_config_error(what, e);
}

fn log_config_error(what: &str, e: &Error) {
    let problems: Vec<String> = e.problems().map(|p| p.to_string()).collect();
    tracing::error!(problems = problems.len(), "{what}");
    for problem in problems {
        tracing::error!(%problem, "config problem");
    }
}

/// Reload triggers: SIGHUP (forced), changes to the config files, and
/// changes to the files the steps read (forced: the config text is the
/// same).
struct Reloads {
    source: Source,
    hangup: Option<tokio::signal::unix::Signal>,
    events: mpsc::Receiver<()>,
    sender: mpsc::Sender<()>,
    /// Set when a step's file changed since the last reload.
    step_file_changed: Arc<AtomicBool>,
    watcher: Option<notify::RecommendedWatcher>,
    enabled: bool,
}

impl Reloads {
    fn new(
        source: Source,
        hangup: std::io::Result<tokio::signal::unix::Signal>,
        loaded: &Loaded,
        steps: &Generation,
        enabled: bool,
    ) -> Self {
        let hangup = match hangup {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only");
                None
            }
        };
        let (sender, events) = mpsc::channel(1);
        let mut reloads = Reloads {
            source,
            hangup,
            events,
            sender,
            step_file_changed: Arc::default(),
            watcher: None,
            enabled,
        };
        reloads.watch(&[loaded], steps.files());
        reloads
    }

    /// Watches the directories of the files each of `loaded` read, the
    /// directories they listed, and the directories of `step_files`
    /// (those the steps read), for changes to those files.
    fn watch<'a>(&mut self, loaded: &[&Loaded], step_files: impl Iterator<Item = &'a Path>) {
        if !self.enabled || matches!(self.source, Source::Default) {
            return;
        }
        let files = with_targets(loaded.iter().flat_map(|l| &l.files).map(|f| absolute(f)));
        let step_files = with_targets(step_files.map(absolute));
        let dirs: HashSet<PathBuf> = loaded
            .iter()
            .flat_map(|l| &l.directories)
            .map(|d| absolute(d))
            .collect();
        let parents = |files: &HashSet<PathBuf>| -> HashSet<PathBuf> {
            files
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf))
                .collect()
        };
        let step_dirs = parents(&step_files);
        let mut watched = parents(&files);
        watched.extend(dirs.iter().cloned());
        watched.extend(step_dirs.iter().cloned());
        // A Kubernetes ConfigMap or Secret volume swaps a `..data` symlink.
        let swapped = |path: &Path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        };
        let of_config = move |path: &Path| {
            files.contains(path) || path.parent().is_some_and(|p| dirs.contains(p)) || swapped(path)
        };
        let of_step = move |path: &Path| {
            step_files.contains(path)
                || (swapped(path) && path.parent().is_some_and(|p| step_dirs.contains(p)))
        };
        let (sender, step_file_changed) = (self.sender.clone(), self.step_file_changed.clone());
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let step = event.paths.iter().any(|p| of_step(p));
            if step {
                step_file_changed.store(true, Ordering::Relaxed);
            }
            if step || event.paths.iter().any(|p| of_config(p)) {
                let _ = sender.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
                return;
            }
        };
        for dir in &watched {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; reload with SIGHUP");
            }
        }
        self.watcher = Some(watcher);
    }

    /// What sets off the next reload.
    async fn next(&mut self) -> Trigger {
        let forced = tokio::select! {
            Some(()) = async {
                match &mut self.hangup {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            Some(()) = self.events.recv() => false,
        };
        if !forced {
            // Gather the rest of a save's events into one reload, until
            // the files have been quiet for DEBOUNCE: a file written in
            // quick pieces is read once it is whole. A writer that pauses
            // longer, or writes for longer than GATHER_AT_MOST, shows a
            // part of it (which can parse into a weaker config): the docs
            // ask for a whole file renamed over the old one.
            let until = tokio::time::Instant::now() + GATHER_AT_MOST;
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.events.recv()).await {
                if tokio::time::Instant::now() >= until {
                    break;
                }
            }
            while self.events.try_recv().is_ok() {}
        }
        let trigger = match (
            forced,
            self.step_file_changed.swap(false, Ordering::Relaxed),
        ) {
            (true, _) => Trigger::Hangup,
            (false, true) => Trigger::StepFile,
            (false, false) => Trigger::ConfigFile,
        };
        tracing::info!(
            reason = match trigger {
                Trigger::Hangup => "SIGHUP",
                Trigger::StepFile => "a file a step reads changed",
                Trigger::ConfigFile => "file change",
            },
            "reloading config"
        );
        trigger
    }
}

/// What set off a reload. A SIGHUP also reopens the log file and reloads
/// even when nothing changed; a step's file reloads when it holds
/// something else, even with the config text the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Hangup,
    StepFile,
    ConfigFile,
}

/// `files`, and the targets of those that are symbolic links (stow, Nix,
/// a host path), which change where they point to.
fn with_targets(files: impl Iterator<Item = PathBuf>) -> HashSet<PathBuf> {
    let mut files: HashSet<PathBuf> = files.collect();
    let targets: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect();
    files.extend(targets);
    files
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Two futures: the first completes on a SIGTERM or SIGINT, the second on
/// the next one. Both listen from this call on, so a second signal that
/// comes while the server turns unready is not lost.
fn terminations() -> (
    impl Future<Output = ()> + Send,
    impl Future<Output = ()> + Send,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => {
            tracing::warn!("cannot listen for SIGTERM; stopping on Ctrl-C only");
            None
        }
    };
    let signals = std::sync::Arc::new(tokio::sync::Mutex::new(signals));
    let next = move || {
        let signals = signals.clone();
        async move {
            match &mut *signals.lock().await {
                Some((term, int)) => tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                },
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    };
    (next(), next())
}
