//! The server's config file: listeners, limits, logs, and the AuthConfigs.
//!
//! ```yaml
//! grpc:  { address: 127.0.0.1:9001 }          # Envoy ext_authz over gRPC
//! http:                                        # Envoy HTTP service, nginx, Traefik, Caddy
//!   address: 127.0.0.1:9002
//!   prefix: /check                             # /check:{config} selects an AuthConfig
//!   trustedProxies:                            # forward-auth proxies, each with the headers it writes
//!   - { network: 127.0.0.1/32, headers: x-original }   # nginx: X-Original-URI, X-Original-Method
//! admin: { address: 127.0.0.1:9091 }           # /metrics, /healthz, /readyz
//! defaultConfig: site                          # for checks that name no AuthConfig
//! maxConcurrentChecks: 1024                    # beyond it: 503 / RESOURCE_EXHAUSTED
//! shutdownGrace: 30s                           # SIGTERM: time for checks in flight
//! log: { format: text, level: info }           # format: text | json
//! watch: true                                  # reload when a file changes (SIGHUP always does)
//! authConfigs:                                 # inline: specs with a name, or Gloo manifests
//! - name: site
//!   configs:
//!   - name: ratings
//!     rules: { rules: [{ action: allow, path: { exact: /ratings/1 } }] }
//! authConfigFiles: [gloo/]                     # files and directories of AuthConfig documents
//! ```
//!
//! Every key is optional; a listener that is not set is not opened. Paths
//! are relative to the config file's directory (the `authchain` binary
//! works there), those inside the AuthConfigs too (`keysFile`,
//! `htpasswdFile`, a JWKS or Rego file, a CA file). A directory contributes its `.yaml`,
//! `.yml` and `.json` files, in name order, not its subdirectories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authchain_core::resources::Resources;
use authchain_core::transport::ConnectionLimits;
use authchain_core::{
    AuthConfig, ConfigDuration, Documents, Error, Format, Generation, PluginRegistry,
    deserialize_config,
};
use authchain_http::ForwardedHeaders;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

/// The config the server serves when it is given none: documented,
/// runnable on a fresh machine.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// The name the embedded default config goes by in messages.
pub const DEFAULT_CONFIG_ORIGIN: &str = "<embedded default config>";

/// The server settings of a config file. Its `Debug` counts the inline
/// AuthConfigs instead of printing them: they may hold keys and hashes.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// The gRPC ext_authz listener.
    #[serde(default)]
    pub grpc: Option<GrpcSettings>,
    /// The HTTP check listener.
    #[serde(default)]
    pub http: Option<HttpSettings>,
    /// The admin listener.
    #[serde(default)]
    pub admin: Option<AdminSettings>,
    /// The AuthConfig for checks that name none.
    #[serde(default)]
    pub default_config: Option<String>,
    /// Gloo's `userIdHeader`: every AuthConfig names its allowed user
    /// upstream in this header (unless it names its own), and a client's
    /// copy is always stripped.
    #[serde(default)]
    pub user_id_header: Option<String>,
    /// The most checks in flight on each listener (default 1024).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_checks: usize,
    /// How long SIGTERM waits for checks in flight (default 30 s).
    #[serde(default = "default_grace")]
    pub shutdown_grace: ConfigDuration,
    /// How long, after SIGTERM, the server reports not ready while it
    /// still accepts checks, before it stops accepting (default 0 s): time
    /// for the proxies and load balancers to stop sending it new ones.
    #[serde(default = "no_delay")]
    pub shutdown_delay: ConfigDuration,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// The decision log: where records go, and whether every AuthConfig
    /// logs (see `authchain_core::decision_log`).
    #[serde(default)]
    pub decision_log: Option<DecisionLogSettings>,
    /// Reload when the config file or an AuthConfig file changes (default
    /// true); SIGHUP reloads either way.
    #[serde(default = "yes")]
    pub watch: bool,
    /// AuthConfig documents written inline.
    #[serde(default)]
    pub auth_configs: Vec<Value>,
    /// Files and directories of AuthConfig documents.
    #[serde(default)]
    pub auth_config_files: Vec<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("grpc", &self.grpc)
            .field("http", &self.http)
            .field("admin", &self.admin)
            .field("default_config", &self.default_config)
            .field("user_id_header", &self.user_id_header)
            .field("max_concurrent_checks", &self.max_concurrent_checks)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("log", &self.log)
            .field("decision_log", &self.decision_log)
            .field("watch", &self.watch)
            .field("auth_configs", &self.auth_configs.len())
            .field("auth_config_files", &self.auth_config_files)
            .finish()
    }
}

/// The gRPC listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct GrpcSettings {
    /// Where to listen (`127.0.0.1:9001`).
    pub address: SocketAddr,
    /// The context extension that names the AuthConfig (`config_id`).
    #[serde(default)]
    pub config_key: Option<String>,
    /// The largest `CheckRequest` in bytes (4 MiB); a larger one is a deny
    /// with 413, never a transport error Envoy could fail open on.
    #[serde(default)]
    pub max_request_bytes: Option<usize>,
    /// How long a `CheckRequest` may take to arrive once its stream opened
    /// (10 s); a later one is a deny with 408.
    #[serde(default)]
    pub read_timeout: Option<ConfigDuration>,
    /// The most connections open at once (4096); beyond it none is
    /// accepted until one closes.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// A connection with no byte either way for this long is closed (2 h:
    /// Envoy closes its idle connections after 1 h, and should close first).
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// The most bytes of checks read and answered at once, over all
    /// connections (64 MiB, and never below one check's size limit): a
    /// check whose bytes would pass it is shed as beyond
    /// `maxConcurrentChecks` is. Checks are read before they take a place
    /// there, so this bounds what slow clients can make the server hold.
    #[serde(default)]
    pub max_buffered_bytes: Option<usize>,
}

impl GrpcSettings {
    /// The connection limits these settings give.
    pub fn connection_limits(&self) -> ConnectionLimits {
        connection_limits(
            self.max_connections,
            self.idle_timeout,
            authchain_grpc::DEFAULT_IDLE_TIMEOUT,
            self.max_buffered_bytes,
        )
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpSettings {
    /// Where to listen (`127.0.0.1:9002`).
    pub address: SocketAddr,
    /// The path prefix after which `:{config}` selects an AuthConfig.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Forward-auth proxies whose forwarded headers are believed, each for
    /// the family it writes itself.
    #[serde(default)]
    pub trusted_proxies: Vec<TrustedProxySettings>,
    /// The largest check body read; larger is 413 (64 KiB).
    #[serde(default)]
    pub body_limit: Option<usize>,
    /// How long a check's headers, then its body, may take to arrive (10 s):
    /// later HTTP/1 headers close the connection, a later body is a 408. A check
    /// holds a permit of `maxConcurrentChecks` only once it is read.
    #[serde(default)]
    pub read_timeout: Option<ConfigDuration>,
    /// The most connections open at once (4096); beyond it none is
    /// accepted until one closes.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// A connection with no byte either way for this long is closed (60 s).
    /// An HTTP/1.1 connection waiting for its next check is closed after
    /// `readTimeout` already: that check's headers are late.
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// The most bytes of checks read and answered at once, over all
    /// connections (64 MiB, and never below one check's size limit): a
    /// check whose bytes would pass it is shed as beyond
    /// `maxConcurrentChecks` is. Checks are read before they take a place
    /// there, so this bounds what slow clients can make the server hold.
    #[serde(default)]
    pub max_buffered_bytes: Option<usize>,
}

impl HttpSettings {
    /// The connection limits these settings give.
    pub fn connection_limits(&self) -> ConnectionLimits {
        connection_limits(
            self.max_connections,
            self.idle_timeout,
            authchain_core::transport::DEFAULT_IDLE_TIMEOUT,
            self.max_buffered_bytes,
        )
    }
}

/// A listener's connection limits: those set, else the defaults and
/// `default_idle`.
fn connection_limits(
    max: Option<usize>,
    idle: Option<ConfigDuration>,
    default_idle: Duration,
    buffered: Option<usize>,
) -> ConnectionLimits {
    ConnectionLimits::new(
        max.unwrap_or(authchain_core::transport::DEFAULT_MAX_CONNECTIONS),
        idle.map_or(default_idle, |d| d.0),
    )
    .max_buffered_bytes(buffered.unwrap_or(authchain_core::transport::DEFAULT_MAX_BUFFERED_BYTES))
}

/// A network of forward-auth proxies and the forwarded headers they write
/// themselves: `{ network: 127.0.0.1/32, headers: x-original }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedProxySettings {
    /// Where their checks come from.
    pub network: IpNet,
    /// `x-original` (nginx: `X-Original-URI`, `X-Original-Method`) or
    /// `x-forwarded` (Traefik, Caddy: `X-Forwarded-{Method,Uri,Host,Proto}`).
    pub headers: ForwardedHeaders,
}

impl<'de> Deserialize<'de> for TrustedProxySettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Entry {
            network: IpNet,
            headers: Family,
        }
        #[derive(Deserialize)]
        enum Family {
            #[serde(rename = "x-original")]
            XOriginal,
            #[serde(rename = "x-forwarded")]
            XForwarded,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TrustedProxySettings;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{ network, headers: x-original | x-forwarded }")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Err(E::custom(
                    "say which headers this proxy writes itself: \
                     { network: 127.0.0.1/32, headers: x-original } for nginx, \
                     headers: x-forwarded for Traefik and Caddy",
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let entry = Entry::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(TrustedProxySettings {
                    network: entry.network,
                    headers: match entry.headers {
                        Family::XOriginal => ForwardedHeaders::XOriginal,
                        Family::XForwarded => ForwardedHeaders::XForwarded,
                    },
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminSettings {
    /// Where to listen (`127.0.0.1:9091`).
    pub address: SocketAddr,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LogSettings {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `authchain_core=debug,info`); the
    /// `RUST_LOG` variable wins when it is set.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

/// `decisionLog`: where decision records go, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct DecisionLogSettings {
    /// A file to append to, or `-` for standard output.
    pub path: PathBuf,
    /// Every AuthConfig logs this share of its decisions (0 to 1) unless
    /// its own `decisionLog` says otherwise; left out, only the
    /// AuthConfigs with a `decisionLog` log.
    #[serde(default)]
    pub sample: Option<f64>,
    /// Request headers logged by value, with `sample`.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object a line, for log pipelines.
    Json,
}

fn default_max_concurrent() -> usize {
    1024
}

fn no_delay() -> ConfigDuration {
    ConfigDuration(Duration::ZERO)
}

fn default_grace() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_level() -> String {
    "info".to_owned()
}

fn yes() -> bool {
    true
}

/// A config file read whole: the settings, every AuthConfig, and what to
/// watch for changes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded {
    /// The server settings.
    pub settings: Settings,
    /// The AuthConfigs, inline ones first, then the files' in order.
    pub configs: Vec<AuthConfig>,
    /// The Secrets and ConfigMaps of the files, which every AuthConfig's
    /// references resolve against.
    pub resources: Resources,
    /// The files read, the config file first.
    pub files: Vec<PathBuf>,
    /// The directories listed, whose new files count as changes.
    pub directories: Vec<PathBuf>,
    /// A digest of every text read, to tell a real change from a touch.
    pub digest: u64,
}

impl Loaded {
    /// Reads the config file at `path` and the AuthConfig files it names.
    /// Every problem is reported at once, each with its file and place.
    pub fn from_file(path: &Path) -> Result<Loaded, Error> {
        all_or_nothing(Self::read_file(path)?)
    }

    /// Reads a config text; `base` resolves relative AuthConfig file paths
    /// (`None`: files are not allowed, as in the embedded default).
    pub fn from_text(origin: &str, text: &str, base: Option<&Path>) -> Result<Loaded, Error> {
        all_or_nothing(Self::read(origin, text, base)?)
    }

    /// Reads the config file at `path` and the AuthConfig files `files`
    /// (neither: the embedded default; files alone: no server settings)
    /// and builds every AuthConfig with `registry`, as `authchain check`
    /// does: every problem of every file and every config, at once.
    pub fn check(
        path: Option<&Path>,
        files: &[PathBuf],
        registry: &PluginRegistry,
    ) -> Result<(Loaded, Generation), Error> {
        let (mut loaded, mut errors) = match path {
            Some(path) => Self::read_file(path).map_err(|e| hint_manifest(path, e))?,
            None if files.is_empty() => Self::read(DEFAULT_CONFIG_ORIGIN, DEFAULT_CONFIG, None)?,
            None => Self::read(NO_CONFIG_ORIGIN, "{}", None)?,
        };
        let mut digest = Digest::default();
        let mut documents = Documents::default();
        documents.configs = std::mem::take(&mut loaded.configs);
        documents.resources = std::mem::take(&mut loaded.resources);
        // The config file's AuthConfigs have the server's userIdHeader
        // already; the files' are defaulted below.
        let read = documents.configs.len();
        for file in files {
            add_documents(&mut documents, file, &mut digest, &mut errors, |e| {
                Error::config(format!("cannot read the file: {e}")).in_source(file.display())
            });
            loaded.files.push(file.clone());
        }
        loaded.resources = documents.resources.clone();
        loaded.configs = documents.into_configs();
        default_user_id_header(
            loaded.settings.user_id_header.as_deref(),
            &mut loaded.configs[read..],
        );
        match Generation::build(registry, &loaded.configs, 1) {
            Ok(generation) if errors.is_empty() => return Ok((loaded, generation)),
            Ok(_) => {}
            Err(e) => errors.push(e), // collect flattens its problems
        }
        Err(Error::collect(errors).unwrap_or_else(|| Error::config("no problem found")))
    }

    /// [`read`](Self::read) of the file at `path`, its files relative to
    /// its directory; the file itself comes first among those read.
    pub(crate) fn read_file(path: &Path) -> Result<(Loaded, Vec<Error>), Error> {
        let text = read_text(path).map_err(|e| {
            Error::config(format!("cannot read the config file: {e}")).in_source(path.display())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let (mut loaded, mut errors) = Self::read(&path.display().to_string(), &text, Some(base))?;
        // One that opens none would serve nothing, which a proxy may read
        // as allow.
        if loaded.settings.grpc.is_none() && loaded.settings.http.is_none() {
            errors.push(
                Error::config(
                    "no check listener: set `grpc.address` or `http.address` (an empty file, or one caught while it was written?)",
                )
                .in_source(path.display()),
            );
        }
        loaded.files.insert(0, path.to_owned());
        Ok((loaded, errors))
    }

    /// Reads what it can: the settings (or the error that they do not
    /// read), the AuthConfigs that read, and the problems of the rest.
    fn read(origin: &str, text: &str, base: Option<&Path>) -> Result<(Loaded, Vec<Error>), Error> {
        let mut digest = Digest::default();
        digest.add(text.as_bytes());
        let format = Format::from_path(Path::new(origin));
        let mut docs = format.documents(origin, text)?;
        if docs.len() > 1 {
            return Err(
                Error::config(format!("one document expected, found {}", docs.len()))
                    .in_source(origin),
            );
        }
        let value = match docs.pop() {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v) => v,
        };
        let settings: Settings = deserialize_config(value).map_err(|e| e.in_source(origin))?;
        let mut errors = Vec::new();
        let listeners = [
            (
                "grpc",
                settings
                    .grpc
                    .as_ref()
                    .map(|g| (g.max_connections, g.idle_timeout)),
            ),
            (
                "http",
                settings
                    .http
                    .as_ref()
                    .map(|h| (h.max_connections, h.idle_timeout)),
            ),
        ];
        for (name, limits) in listeners {
            let Some((max, idle)) = limits else { continue };
            if max == Some(0) {
                errors.push(
                    Error::config("expected at least 1")
                        .at(format!("{name}.maxConnections"))
                        .in_source(origin),
                );
            }
            if idle.is_some_and(|d| d.0.is_zero()) {
                errors.push(
                    Error::config("expected more than 0s")
                        .at(format!("{name}.idleTimeout"))
                        .in_source(origin),
                );
            }
        }
        // Sizes: zero would refuse every check.
        let sizes = [
            (
                "grpc.maxRequestBytes",
                settings.grpc.as_ref().and_then(|g| g.max_request_bytes),
            ),
            (
                "grpc.maxBufferedBytes",
                settings.grpc.as_ref().and_then(|g| g.max_buffered_bytes),
            ),
            (
                "http.bodyLimit",
                settings.http.as_ref().and_then(|h| h.body_limit),
            ),
            (
                "http.maxBufferedBytes",
                settings.http.as_ref().and_then(|h| h.max_buffered_bytes),
            ),
        ];
        for (place, size) in sizes {
            if size == Some(0) {
                errors.push(
                    Error::config("expected at least 1")
                        .at(place)
                        .in_source(origin),
                );
            }
        }
        if settings.max_concurrent_checks == 0 {
            errors.push(
                Error::config("expected at least 1")
                    .at("maxConcurrentChecks")
                    .in_source(origin),
            );
        }
        let read_timeouts = [
            ("grpc", settings.grpc.as_ref().and_then(|g| g.read_timeout)),
            ("http", settings.http.as_ref().and_then(|h| h.read_timeout)),
        ];
        for (name, timeout) in read_timeouts {
            if timeout.is_some_and(|t| t.0.is_zero()) {
                errors.push(
                    Error::config("expected more than 0s")
                        .at(format!("{name}.readTimeout"))
                        .in_source(origin),
                );
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log.level) {
            errors.push(
                Error::config(format!("not a log filter: {e}"))
                    .at("log.level")
                    .in_source(origin),
            );
        }
        let proxies = settings
            .http
            .as_ref()
            .map_or(&[][..], |h| &h.trusted_proxies);
        for (i, proxy) in proxies.iter().enumerate() {
            let at = format!("http.trustedProxies[{i}].network");
            let network = proxy.network;
            if network != network.trunc() {
                // A write cut short (`10.0.0.0/1` of `/16`) would widen the trust.
                errors.push(
                    Error::config(format!(
                        "{network} has address bits past its prefix: write {} if that is meant",
                        network.trunc()
                    ))
                    .at(at)
                    .in_source(origin),
                );
                continue;
            }
            let same = |other: &TrustedProxySettings| {
                let [a, b] = [proxy, other]
                    .map(|p| authchain_http::TrustedProxy::new(p.network, p.headers).network);
                a == b && other.headers != proxy.headers
            };
            if let Some(j) = proxies[..i].iter().position(same) {
                errors.push(
                    Error::config(format!(
                        "{network} is trustedProxies[{j}]'s network, with other headers: a proxy writes one family"
                    ))
                    .at(at)
                    .in_source(origin),
                );
            }
        }
        if let Some(prefix) = settings.http.as_ref().and_then(|h| h.prefix.as_deref())
            && !(prefix.is_empty() || prefix.starts_with('/') && !prefix.contains([':', '?']))
        {
            errors.push(
                Error::config("expected a path that starts with '/', without ':' or '?'")
                    .at("http.prefix")
                    .in_source(origin),
            );
        }
        // The decision log is opened at start alone; every read checks its
        // settings, so that a reload never accepts what the next start
        // refuses.
        if let Some(log) = &settings.decision_log
            && let Err(e) = crate::decision_log::sampling(log)
        {
            errors.push(e.at("decisionLog").in_source(origin));
        }
        let mut documents = Documents::default();
        for (i, doc) in settings.auth_configs.iter().enumerate() {
            if let Err(e) = documents.add(&format!("{origin} authConfigs[{i}]"), doc.clone()) {
                errors.push(e);
            }
        }
        let mut files = Vec::new();
        let mut directories = Vec::new();
        for (i, entry) in settings.auth_config_files.iter().enumerate() {
            let Some(base) = base else {
                errors.push(
                    Error::config("files cannot be named here")
                        .at(format!("authConfigFiles[{i}]"))
                        .in_source(origin),
                );
                continue;
            };
            let path = base.join(entry);
            let listed = if path.is_dir() {
                directories.push(path.clone());
                list_dir(&path)
            } else {
                Ok(vec![path.clone()])
            };
            let listed = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    errors.push(
                        Error::config(format!("cannot list {}: {e}", path.display()))
                            .at(format!("authConfigFiles[{i}]"))
                            .in_source(origin),
                    );
                    continue;
                }
            };
            for file in listed {
                add_documents(&mut documents, &file, &mut digest, &mut errors, |e| {
                    Error::config(format!("cannot read {}: {e}", file.display()))
                        .at(format!("authConfigFiles[{i}]"))
                        .in_source(origin)
                });
                files.push(file);
            }
        }
        let resources = documents.resources.clone();
        let mut configs = documents.into_configs();
        match &settings.user_id_header {
            Some(header) if axum::http::HeaderName::try_from(header.as_str()).is_err() => errors
                .push(
                    Error::config("not a valid header name")
                        .at("userIdHeader")
                        .in_source(origin),
                ),
            header => default_user_id_header(header.as_deref(), &mut configs),
        }
        if let Some(name) = &settings.default_config
            && errors.is_empty()
            && !configs.iter().any(|c| c.name() == name)
        {
            errors.push(
                Error::config(format!("no AuthConfig is named '{name}'"))
                    .at("defaultConfig")
                    .in_source(origin),
            );
        }
        let loaded = Loaded {
            settings,
            configs,
            resources,
            files,
            directories,
            digest: digest.finish(),
        };
        Ok((loaded, errors))
    }

    /// The embedded default config.
    pub fn default_config() -> Result<Loaded, Error> {
        Self::from_text(DEFAULT_CONFIG_ORIGIN, DEFAULT_CONFIG, None)
    }
}

/// What was read, if nothing failed.
pub(crate) fn all_or_nothing((loaded, errors): (Loaded, Vec<Error>)) -> Result<Loaded, Error> {
    match Error::collect(errors) {
        Some(e) => Err(e),
        None => Ok(loaded),
    }
}

/// A config file's text ([`authchain_core::config::read_file`]: a
/// regular file, of a bounded size).
fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(authchain_core::config::read_file(path)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

fn list_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["yaml", "yml", "json"].contains(&e.to_ascii_lowercase().as_str()));
        // A link whose target is gone is named by the read's error, not
        // left out unseen.
        let dangling = path.is_symlink() && !path.exists();
        if wanted && (path.is_file() || dangling) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// FNV-1a over the texts read: enough to tell a change from a touch.
#[derive(Debug)]
struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(&[0xff]) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(self) -> u64 {
        self.0
    }
}

/// Where `authchain check` with AuthConfig files alone says its (empty)
/// server settings come from.
const NO_CONFIG_ORIGIN: &str = "(no server config)";

/// Adds the documents of `file` to `documents`, its name and text to
/// `digest`; a problem goes to `errors`, made by `unreadable` when the
/// file cannot be read.
fn add_documents(
    documents: &mut Documents,
    file: &Path,
    digest: &mut Digest,
    errors: &mut Vec<Error>,
    unreadable: impl FnOnce(std::io::Error) -> Error,
) {
    let text = match read_text(file) {
        Ok(text) => text,
        Err(e) => return errors.push(unreadable(e)),
    };
    digest.add(file.as_os_str().as_encoded_bytes());
    digest.add(text.as_bytes());
    let name = file.display().to_string();
    let added = Documents::parse(&name, &text, Format::from_path(file))
        .and_then(|found| documents.extend(found).map_err(|e| e.in_source(&name)));
    if let Err(e) = added {
        errors.push(e);
    }
}

/// The server's `userIdHeader` (Gloo's), as the default of `configs`.
fn default_user_id_header(header: Option<&str>, configs: &mut [AuthConfig]) {
    if let Some(header) = header {
        for config in configs {
            config.default_user_id_header(header);
        }
    }
}

/// `e`, the error of reading `path` as the server config, with a hint
/// when it refused a manifest's `apiVersion` or `kind` (an AuthConfig
/// file, which `authchain check FILE...` reads).
fn hint_manifest(path: &Path, e: Error) -> Error {
    let text = e.to_string();
    if !["unknown field `apiVersion`", "unknown field `kind`"]
        .iter()
        .any(|m| text.contains(m))
    {
        return e;
    }
    Error::config(format!(
        "{text} (this file is a manifest, not a server config: `authchain check {}` checks AuthConfig files alone)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_holds_no_inline_secret() {
        let loaded = Loaded::from_text(
            "a.yaml",
            "authConfigs:\n- name: k\n  configs:\n  - apiKeyAuth: { keys: [{ key: s3cr3t-value-0123 }] }\n",
            None,
        )
        .unwrap();
        let shown = format!("{loaded:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("auth_configs: 1"), "{shown}");
    }

    /// An inline document may be a Secret (or a List), as in a file: it is
    /// read as one, not refused as an AuthConfig of another apiVersion.
    #[test]
    fn inline_documents_are_read_as_files_are() {
        let text = "authConfigs:
- { apiVersion: v1, kind: Secret, metadata: { name: s, namespace: ns }, stringData: { a: s3cr3t } }
- { apiVersion: v1, kind: List, items: [{ name: listed, configs: [{ rules: { defaultAction: allow } }] }] }
- { name: c, configs: [{ rules: { defaultAction: allow } }] }
";
        let e = Loaded::from_text("a.yaml", text, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.yaml authConfigs[1]: items[0]") && e.contains("AuthConfig, a Secret"),
            "{e}"
        );
        let text = text.replace("[{ name: listed, configs", "[{ apiVersion: enterprise.gloo.solo.io/v1, kind: AuthConfig, metadata: { name: listed }, spec: { configs");
        let text = text.replace(
            "defaultAction: allow } }] }] }",
            "defaultAction: allow } }] } }] }",
        );
        let loaded = Loaded::from_text("a.yaml", &text, None).unwrap();
        let names: Vec<&str> = loaded.configs.iter().map(AuthConfig::name).collect();
        assert_eq!(names, ["listed", "c"]);
        assert_eq!(
            loaded.resources.secret("ns", "s").unwrap().data["a"],
            b"s3cr3t"
        );
    }

    #[test]
    fn the_embedded_default_loads() {
        let loaded = Loaded::default_config().unwrap();
        assert!(loaded.settings.grpc.is_some());
        assert!(loaded.settings.http.is_some());
        assert!(loaded.settings.admin.is_some());
        assert!(!loaded.configs.is_empty());
    }

    #[test]
    fn errors_name_the_file_and_the_place() {
        let e = Loaded::from_text("a.yaml", "grpc: { address: nowhere }\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.yaml") && e.contains("grpc.address"), "{e}");
        let e = Loaded::from_text("a.yaml", "grcp: {}\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `grcp`"), "{e}");
        let e = Loaded::from_text("a.yaml", "authConfigs: [{ configs: [] }]\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("authConfigs[0]") && e.contains("name"), "{e}");
        let e = Loaded::from_text("a.yaml", "defaultConfig: nope\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("defaultConfig") && e.contains("nope"), "{e}");
    }

    /// A file that is no regular file (a pipe would block the read for
    /// good, a device fill the memory), and a link in an AuthConfig
    /// directory whose target is gone, are errors that name the file.
    #[test]
    fn what_is_no_regular_file_is_named() {
        let dir = authchain_testkit::ScratchDir::new("files").unwrap();
        let pipe = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::create_dir(dir.path().join("configs")).unwrap();
        std::os::unix::fs::symlink("/nonexistent.yaml", dir.path().join("configs/gone.yaml"))
            .unwrap();
        for (text, named) in [
            ("authConfigFiles: [pipe.yaml]\n", "pipe.yaml"),
            ("authConfigFiles: [/dev/zero]\n", "/dev/zero"),
            ("authConfigFiles: [configs]\n", "gone.yaml"),
        ] {
            let e = Loaded::from_text("a.yaml", text, Some(dir.path()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{text}: {e}");
        }
    }

    /// A limit that would shed every check, or time every check out, is
    /// refused rather than taken for the smallest.
    #[test]
    fn zero_limits_are_refused() {
        for (text, place) in [
            ("maxConcurrentChecks: 0\n", "maxConcurrentChecks"),
            (
                "grpc: { address: '127.0.0.1:0', readTimeout: 0s }\n",
                "grpc.readTimeout",
            ),
            (
                "http: { address: '127.0.0.1:0', readTimeout: 0s }\n",
                "http.readTimeout",
            ),
            (
                "http: { address: '127.0.0.1:0', maxConnections: 0 }\n",
                "http.maxConnections",
            ),
            (
                "grpc: { address: '127.0.0.1:0', maxRequestBytes: 0 }\n",
                "grpc.maxRequestBytes",
            ),
            (
                "grpc: { address: '127.0.0.1:0', maxBufferedBytes: 0 }\n",
                "grpc.maxBufferedBytes",
            ),
            (
                "http: { address: '127.0.0.1:0', maxBufferedBytes: 0 }\n",
                "http.maxBufferedBytes",
            ),
        ] {
            let e = Loaded::from_text("a.yaml", text, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(place), "{text}: {e}");
        }
    }

    #[test]
    fn a_trusted_proxy_names_the_headers_it_writes() {
        let http = |proxies: &str| {
            Loaded::from_text(
                "a.yaml",
                &format!("http: {{ address: 127.0.0.1:9002, trustedProxies: {proxies} }}\n"),
                None,
            )
            .map(|l| l.settings.http.unwrap().trusted_proxies)
        };
        let proxies = http(
            "[{ network: 127.0.0.1/32, headers: x-original }, { network: 10.0.0.0/8, headers: x-forwarded }]",
        )
        .unwrap();
        assert_eq!(
            proxies,
            [
                TrustedProxySettings {
                    network: "127.0.0.1/32".parse().unwrap(),
                    headers: ForwardedHeaders::XOriginal,
                },
                TrustedProxySettings {
                    network: "10.0.0.0/8".parse().unwrap(),
                    headers: ForwardedHeaders::XForwarded,
                },
            ]
        );
        // A network with bits past its prefix (a write cut short), or
        // listed twice for two families, is refused where it is.
        for (proxies, place, says) in [
            (
                "[{ network: 10.0.0.0/1, headers: x-forwarded }]",
                "http.trustedProxies[0].network",
                "write 0.0.0.0/1",
            ),
            (
                "[{ network: 10.0.0.0/8, headers: x-forwarded }, { network: '::ffff:10.0.0.0/104', headers: x-original }]",
                "http.trustedProxies[1].network",
                "trustedProxies[0]'s network",
            ),
        ] {
            let e = http(proxies).unwrap_err().to_string();
            assert!(e.contains(place) && e.contains(says), "{e}");
        }
        // Nested networks are not refused: the most specific one is a peer's.
        assert_eq!(
            http("[{ network: 10.0.0.0/8, headers: x-forwarded }, { network: 10.0.0.0/8, headers: x-forwarded }, { network: 10.42.7.0/24, headers: x-original }]")
                .unwrap()
                .len(),
            3
        );
        // The old form does not say which family: an error that says how.
        let e = http("[127.0.0.1/32]").unwrap_err().to_string();
        assert!(
            e.contains("http.trustedProxies[0]") && e.contains("headers: x-original"),
            "{e}"
        );
        for prefix in ["check", "/check:x", "/check?"] {
            let text = format!("http: {{ address: 127.0.0.1:9002, prefix: '{prefix}' }}\n");
            let e = Loaded::from_text("a.yaml", &text, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("http.prefix"), "{prefix}: {e}");
        }
        for bad in [
            "[{ network: 127.0.0.1/32 }]",
            "[{ network: 127.0.0.1/32, headers: x-real-ip }]",
            "[{ network: nowhere, headers: x-original }]",
            "[{ network: 127.0.0.1/32, headers: x-original, extra: 1 }]",
        ] {
            let e = http(bad).unwrap_err().to_string();
            assert!(e.contains("http.trustedProxies[0]"), "{bad}: {e}");
        }
    }
}
