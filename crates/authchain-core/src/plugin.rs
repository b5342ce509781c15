//! Plugins: typed factories of steps, and the registry that finds them.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::redact_serde_message;
use crate::resources::Resources;
use crate::{AuthService, Error};

/// A factory of steps with a typed config: what Gloo's Go plugins do with
/// `NewConfigInstance` and reflection, checked by the compiler instead.
///
/// The config is deserialized with serde from the step's block of the
/// AuthConfig; give it `#[serde(deny_unknown_fields)]` so a misspelt key is
/// an error that names its place.
///
/// ```
/// use std::sync::Arc;
/// use authchain_core::{AuthService, BuildContext, Decision, Error, ExtAuthPlugin, service_fn};
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { allow: bool }
///
/// struct Fixed;
///
/// impl ExtAuthPlugin for Fixed {
///     type Config = Config;
///     fn name(&self) -> &str { "Fixed" }
///     fn build(&self, config: Config, _: &BuildContext<'_>) -> Result<Arc<dyn AuthService>, Error> {
///         let allow = config.allow;
///         Ok(Arc::new(service_fn(move |_| Box::pin(async move {
///             Ok(if allow { Decision::authorized() } else { Decision::unauthorized() })
///         }))))
///     }
/// }
/// ```
pub trait ExtAuthPlugin: Send + Sync + 'static {
    /// The plugin's config, deserialized from the step's block.
    type Config: DeserializeOwned;

    /// The name configs refer to: `pluginAuth.name` for a plugin registered
    /// with [`PluginRegistry::register`], or the step kind key
    /// (`apiKeyAuth`, `passThroughAuth.http`, ...) for one registered with
    /// [`PluginRegistry::register_kind`].
    fn name(&self) -> &str;

    /// Builds a service from a config. Errors should say what is wrong
    /// without quoting secret values.
    fn build(
        &self,
        config: Self::Config,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error>;
}

/// Where a step is being built: which AuthConfig, which step.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct BuildContext<'a> {
    /// The AuthConfig's name.
    pub config_name: &'a str,
    /// The step's name (its `name`, or `config_<index>`).
    pub step_name: &'a str,
    /// The step's place in the document (`spec.configs[2]`).
    pub place: &'a str,
    /// Whether the chain lets requests pass when this step fails
    /// (`failureModeAllow`). The chain applies it; a step may use it to
    /// count its own bypasses under a name of its own.
    pub failure_mode_allow: bool,
    /// The most time the step has for a request: its own `timeout`, else
    /// the AuthConfig's `deadline` (`None`: built outside a config). A
    /// step that may wait on work it could do later (a key refresh) or
    /// for a place in a queue of its own waits less, so that the request
    /// is answered rather than timed out (which `failureModeAllow` would
    /// let through).
    pub timeout: Option<std::time::Duration>,
    /// The AuthConfig's namespace (empty: none), which references without
    /// one mean ([`ResourceRef::resolve`](crate::resources::ResourceRef::resolve)).
    pub namespace: &'a str,
    /// The Secrets and ConfigMaps read beside the AuthConfig, which the
    /// step's references resolve against.
    pub resources: &'a Resources,
    /// Gloo's `failOnRedirect`: a step that would send the client away to
    /// log in (a `302` to an IdP) answers a plain `401` instead.
    pub fail_on_redirect: bool,
    /// Where [`read`](Self::read) notes the files it reads.
    pub(crate) files: Option<&'a FilesRead>,
}

/// The files a generation's steps read while building, noted by
/// [`BuildContext::read`], each with a digest of what was read (`None`:
/// it could not be).
pub(crate) type FilesRead = Mutex<Vec<(PathBuf, Option<u64>)>>;

/// A digest of a file's contents, to tell whether it changed since.
pub(crate) fn contents_digest(contents: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut hasher = DefaultHasher::new();
    hasher.write(contents);
    hasher.finish()
}

/// What a context built outside a config document resolves against.
static NO_RESOURCES: Resources = Resources::new();

impl<'a> BuildContext<'a> {
    /// A context for building a step outside a config document (plugin
    /// unit tests, chains assembled in code). The step fails closed.
    pub fn new(config_name: &'a str, step_name: &'a str, place: &'a str) -> Self {
        BuildContext {
            config_name,
            step_name,
            place,
            failure_mode_allow: false,
            timeout: None,
            namespace: "",
            resources: &NO_RESOURCES,
            fail_on_redirect: false,
            files: None,
        }
    }

    /// Reads a file the step's config names (a key list, a CA, a policy).
    /// Read files this way: the generation lists them
    /// ([`Generation::files`](crate::Generation::files)), and the
    /// `authchain` server reloads when one changes. The error names the
    /// path and the I/O error, never the contents.
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>, Error> {
        let path = path.as_ref();
        let contents = crate::config::read_file(path);
        if let Some(files) = self.files {
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
            let digest = contents.as_deref().ok().map(contents_digest);
            files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((absolute, digest));
        }
        contents.map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::InvalidInput => e.to_string(),
                kind => kind.to_string(),
            };
            Error::config(format!("cannot read {}: {why}", path.display()))
        })
    }

    /// [`read`](Self::read), as UTF-8 text.
    pub fn read_to_string(&self, path: impl AsRef<Path>) -> Result<String, Error> {
        let path = path.as_ref();
        String::from_utf8(self.read(path)?)
            .map_err(|_| Error::config(format!("{} is not UTF-8 text", path.display())))
    }

    /// The same context, resolving references against `resources` as an
    /// AuthConfig in `namespace` does.
    pub fn with_resources(mut self, resources: &'a Resources, namespace: &'a str) -> Self {
        self.resources = resources;
        self.namespace = namespace;
        self
    }

    /// The same context, with `failureModeAllow` set as given.
    pub fn with_failure_mode_allow(mut self, allow: bool) -> Self {
        self.failure_mode_allow = allow;
        self
    }

    /// The longest a request should wait on something of the step's own
    /// (a place in its queue, a key refresh it started): half its time,
    /// so that it is answered (a deny, or [`Error::overloaded`]) before
    /// its timer ends it with an error `failureModeAllow` lets through.
    /// `None` outside a config: no bound but the work's own.
    pub fn wait_limit(&self) -> Option<std::time::Duration> {
        self.timeout.map(|t| t / 2)
    }

    /// The longest a call the step makes to another server should take: a
    /// tenth short of its time, so that the step judges a late call
    /// itself (an outage, or, while the server answers others, a call a
    /// client made slow) before its timer ends it with an error
    /// `failureModeAllow` lets through. `None` outside a config.
    pub fn call_limit(&self) -> Option<std::time::Duration> {
        self.timeout.map(|t| t - t / 10)
    }

    /// The same context, for a step with this `timeout`.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A plugin made from a closure; see [`plugin_fn`].
pub struct PluginFn<C, F> {
    name: String,
    build: F,
    _config: PhantomData<fn() -> C>,
}

impl<C, F> fmt::Debug for PluginFn<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginFn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Makes a plugin from a name and a closure that builds a service from a
/// typed config.
///
/// ```
/// use std::sync::Arc;
/// use authchain_core::{plugin_fn, service_fn, Decision, PluginRegistry};
///
/// #[derive(serde::Deserialize)]
/// struct Config { header: String }
///
/// let mut registry = PluginRegistry::new();
/// registry.register(plugin_fn("HasHeader", |config: Config, _ctx| {
///     let header = http::HeaderName::try_from(config.header)
///         .map_err(|e| authchain_core::Error::config(e.to_string()).at("header"))?;
///     Ok(Arc::new(service_fn(move |req| {
///         let ok = req.headers.contains_key(&header);
///         Box::pin(async move {
///             Ok(if ok { Decision::authorized() } else { Decision::unauthenticated() })
///         })
///     })))
/// }));
/// ```
pub fn plugin_fn<C, F>(name: impl Into<String>, build: F) -> PluginFn<C, F>
where
    C: DeserializeOwned + 'static,
    F: Fn(C, &BuildContext<'_>) -> Result<Arc<dyn AuthService>, Error> + Send + Sync + 'static,
{
    PluginFn {
        name: name.into(),
        build,
        _config: PhantomData,
    }
}

impl<C, F> ExtAuthPlugin for PluginFn<C, F>
where
    C: DeserializeOwned + 'static,
    F: Fn(C, &BuildContext<'_>) -> Result<Arc<dyn AuthService>, Error> + Send + Sync + 'static,
{
    type Config = C;

    fn name(&self) -> &str {
        &self.name
    }

    fn build(&self, config: C, context: &BuildContext<'_>) -> Result<Arc<dyn AuthService>, Error> {
        (self.build)(config, context)
    }
}

/// A plugin with its config type erased, as the registry keeps it.
trait DynPlugin: Send + Sync {
    fn build_value(
        &self,
        config: Value,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error>;
}

impl<P: ExtAuthPlugin> DynPlugin for P {
    fn build_value(
        &self,
        config: Value,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        let config = deserialize_config::<P::Config>(config)?;
        self.build(config, context)
    }
}

/// Deserializes a typed config from a document value; an error is placed
/// at the path of the offending field, relative to the value, and quotes
/// no string from the document.
pub fn deserialize_config<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let place = e.path().to_string();
        let message = redact_serde_message(&e.inner().to_string());
        let error = Error::config(message);
        if place == "." { error } else { error.at(place) }
    })
}

/// Plugins by name: what `pluginAuth.name` and the step kinds of a config
/// resolve to. Cheap to clone.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    plugins: BTreeMap<String, Arc<dyn DynPlugin>>,
    kinds: BTreeMap<String, Arc<dyn DynPlugin>>,
}

impl fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("plugins", &self.plugins.keys().collect::<Vec<_>>())
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a plugin that configs name with `pluginAuth: {name, config}`.
    /// Replaces a plugin registered under the same name.
    pub fn register<P: ExtAuthPlugin>(&mut self, plugin: P) -> &mut Self {
        self.plugins
            .insert(plugin.name().to_owned(), Arc::new(plugin));
        self
    }

    /// Registers a plugin for a step kind: the key of a `configs[]` entry
    /// (`apiKeyAuth`, `jwt`, ...), or `passThroughAuth.grpc` /
    /// `passThroughAuth.http` for the two passthrough transports. The
    /// plugin's config is the block under that key. Replaces a plugin
    /// registered for the same kind.
    pub fn register_kind<P: ExtAuthPlugin>(&mut self, plugin: P) -> &mut Self {
        self.kinds
            .insert(plugin.name().to_owned(), Arc::new(plugin));
        self
    }

    /// The names `pluginAuth` can use.
    pub fn plugin_names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// The step kinds registered.
    pub fn kind_names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    pub(crate) fn build_plugin(
        &self,
        name: &str,
        config: Value,
        context: &BuildContext<'_>,
    ) -> Option<Result<Arc<dyn AuthService>, Error>> {
        Some(self.plugins.get(name)?.build_value(config, context))
    }

    pub(crate) fn build_kind(
        &self,
        kind: &str,
        config: Value,
        context: &BuildContext<'_>,
    ) -> Option<Result<Arc<dyn AuthService>, Error>> {
        Some(self.kinds.get(kind)?.build_value(config, context))
    }
}
