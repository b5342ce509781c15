//! AuthConfig documents: Gloo's shape, in YAML or JSON.
//!
//! A document is either a whole Gloo manifest, pasted as it is:
//!
//! ```yaml
//! apiVersion: enterprise.gloo.solo.io/v1
//! kind: AuthConfig
//! metadata: { name: plugin-auth, namespace: gloo-system }
//! spec:
//!   configs:
//!   - pluginAuth:
//!       name: RequiredHeader
//!       config: { RequiredHeader: my-header, AllowedValues: [foo, bar] }
//! ```
//!
//! (named `gloo-system.plugin-auth`: `namespace.name`), or the same spec
//! with a `name` beside it:
//!
//! ```yaml
//! name: plugin-auth
//! configs:
//! - name: check-header
//!   pluginAuth: { name: RequiredHeader, config: { RequiredHeader: my-header, AllowedValues: [foo] } }
//! booleanExpr: check-header
//! ```
//!
//! A file may hold many documents (`---` in YAML, an array in JSON).
//!
//! # The spec
//!
//! | key | meaning |
//! |---|---|
//! | `configs` | the steps, in order (below) |
//! | `booleanExpr` | combine steps by name with `&&`, `\|\|`, `!`, `( )` |
//! | `statusOnError` | status of the deny a failing step causes (403; 400 to 599) |
//! | `deadline` | time limit of the whole chain (`10s`) |
//! | `stripClientHeaders` | more client headers to strip before the chain |
//! | `decisionLog` | log this AuthConfig's decisions: `{sample, headers}` (see [`crate::decision_log`]) |
//! | `shadow` | another AuthConfig each request also runs through, off the answer's path (see [`crate::shadow`]) |
//! | `trustClientHeaders` | declared identity headers a client may send after all |
//! | `allowAmbiguousPaths` | an authchain addition: `true` lets a path with a `.` or `..` segment, or an encoded `/`, `\` or control byte, reach the steps (dot segments resolved, stopped at the root; bytes kept encoded) instead of a 400 ([`crate::path`]), and a method servers read differently (a standard one in another case, an override header naming another) |
//! | `userIdHeader` | an authchain addition, per AuthConfig, of Gloo's server setting: an allow with a user ([`crate::UserInfo`]) names it upstream in this header; a client's copy is always stripped. The server's `userIdHeader` fills it in where a document has none |
//! | `failOnRedirect` | Gloo's: `true` has a step that would send the client away to log in (an `oauth2` login's `302` to the IdP) answer a plain `401` instead ([`BuildContext::fail_on_redirect`]); its callback and logout redirect as ever |
//! | `cache` | an authchain addition: the [decision cache](crate::cache) (`key`, `ttl`, `maxEntries`, `maxBytes`, `cacheDenies`, `trustKey`) |
//!
//! Each `configs[]` entry has one step kind key and optionally `name`
//! (default `config_<index>`), `timeout` (`250ms`, say; without one the
//! chain's deadline applies) and `failureModeAllow`:
//!
//! - `pluginAuth: {name, config}` runs the plugin registered under `name`
//!   ([`PluginRegistry::register`]) with `config`. Gloo's
//!   `pluginFileName` and `exportedSymbolName` are accepted and ignored:
//!   plugins are compiled in.
//! - `passThroughAuth: {grpc | http, config, failureModeAllow, mirror}`
//!   runs the kind `passThroughAuth.grpc` or `passThroughAuth.http` with
//!   the block (less `failureModeAllow`, which the chain applies, and
//!   `mirror`: an AuthConfig that runs beside, compared and never served,
//!   which is the chain's [shadow](crate::shadow)).
//! - any other key (`apiKeyAuth`, `basicAuth`, `jwt`, `opaAuth`, ...) runs
//!   the kind registered under that key with the block under it
//!   ([`PluginRegistry::register_kind`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::decision_log::Sampling;
use crate::error::redact_serde_message;
use crate::path::AmbiguousPaths;
use crate::plugin::{FilesRead, deserialize_config};
use crate::resources::Resources;
use crate::{BuildContext, CacheSettings, Chain, ChainStep, Deny, Error, PluginRegistry};

/// Gloo's step kinds that authchain does not bring: a config naming one
/// is told so, unless a plugin of that kind is registered.
const GLOO_KINDS_UNSUPPORTED: &[&str] = &["oauth", "opaServerAuth", "portalAuth"];

/// The Gloo API versions whose `AuthConfig` manifests are accepted.
pub const GLOO_API_VERSIONS: [&str; 2] = ["enterprise.gloo.solo.io/v1", "extauth.solo.io/v1"];

/// The format of a config text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, one or more documents separated by `---`.
    Yaml,
    /// JSON: one object, or an array of them.
    Json,
}

impl Format {
    /// The format a file name suggests: `.json` is JSON, anything else YAML.
    pub fn from_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }

    /// The documents of `text` (JSON has one), as values. Read every
    /// config text this way: a mapping that has a key twice is an error
    /// naming the key (serde would keep the last silently, dropping what
    /// the first said), so is a YAML merge key (`<<`, which would be kept
    /// as a key, the keys it merges missing), and so is a text whose YAML aliases would make it
    /// more than twice as large as it is (plus 100,000), counting each
    /// value as one and each string and key as its length too: a small
    /// file can ask for gigabytes. `origin` names the text in errors.
    pub fn documents(self, origin: &str, text: &str) -> Result<Vec<Value>, Error> {
        use serde::de::DeserializeSeed as _;
        let left = std::cell::Cell::new(text.len().saturating_mul(2).saturating_add(100_000));
        let read = |e: String| Error::config(redact_serde_message(&e));
        match self {
            Format::Yaml => serde_yaml_ng::Deserializer::from_str(text)
                .enumerate()
                .map(|(i, doc)| {
                    Counted {
                        left: &left,
                        yaml: true,
                    }
                    .deserialize(doc)
                    .map_err(|e| {
                        read(e.to_string()).in_source(format!("{origin} document {}", i + 1))
                    })
                })
                .collect(),
            Format::Json => {
                let mut reader = serde_json::Deserializer::from_str(text);
                let doc = Counted {
                    left: &left,
                    yaml: false,
                }
                .deserialize(&mut reader)
                .and_then(|doc| reader.end().map(|()| doc))
                .map_err(|e| read(e.to_string()).in_source(origin))?;
                Ok(vec![doc])
            }
        }
    }
}

/// Reads a value as `serde_json::Value` does, but refuses a key twice in
/// a mapping and stops when `left` values have been read.
struct Counted<'a> {
    left: &'a std::cell::Cell<usize>,
    /// Whether the text is YAML, where `<<` is a merge key.
    yaml: bool,
}

impl Counted<'_> {
    fn spend<E: serde::de::Error>(&self) -> Result<(), E> {
        self.spend_more(0)
    }

    /// Spends one value of `len` bytes.
    fn spend_more<E: serde::de::Error>(&self, len: usize) -> Result<(), E> {
        match self.left.get().checked_sub(len.saturating_add(1)) {
            None => Err(E::custom(
                "the document expands to too many values (YAML aliases repeating large parts?)",
            )),
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
        }
    }

    fn again(&self) -> Self {
        Counted {
            left: self.left,
            yaml: self.yaml,
        }
    }
}

/// A mapping's key, counted as a string is.
struct Key<'a>(Counted<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        self.0.spend_more(key.len())?;
        Ok(key)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Counted<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Counted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend()?;
        // serde_json would make it null, which an optional field reads as
        // unset.
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite (`.nan`, `.inf`)"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend_more(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.spend_more(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Null)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.again())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(Key(self.again()))? {
            let value = map.next_value_seed(self.again())?;
            // YAML 1.1's merge key, which serde_yaml_ng keeps as a key:
            // the keys it would merge would be silently missing.
            if self.yaml && key == "<<" {
                return Err(serde::de::Error::custom(
                    "YAML merge keys (`<<: *anchor`) are not read: write the keys out",
                ));
            }
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{key}` appears twice in one mapping"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// One named AuthConfig as read from a document, not yet built.
#[derive(Clone, PartialEq)]
pub struct AuthConfig {
    name: String,
    origin: String,
    base: &'static str,
    spec: Value,
    /// A Gloo manifest's `apiVersion`, `kind` and `metadata`.
    manifest: Option<Map<String, Value>>,
    /// The manifest's namespace (empty: none), which its references to
    /// Secrets and ConfigMaps default to.
    namespace: String,
    /// The Secrets and ConfigMaps its references resolve against.
    resources: Arc<Resources>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The spec may hold keys, hashes and secrets inline: its fields'
        // names only.
        let fields: Vec<&str> = match &self.spec {
            Value::Object(spec) => spec.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        f.debug_struct("AuthConfig")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("manifest", &self.manifest.is_some())
            .field("spec_fields", &fields)
            .finish()
    }
}

impl AuthConfig {
    /// Reads every AuthConfig in `text`, each resolving its references
    /// against the Secrets and ConfigMaps of the same text. `origin` names
    /// the text in errors (a file name); documents are counted from 1 when
    /// there are several. [`Documents`] reads several texts as one.
    pub fn parse(origin: &str, text: &str, format: Format) -> Result<Vec<AuthConfig>, Error> {
        Documents::parse(origin, text, format).map(Documents::into_configs)
    }

    /// The Secrets and ConfigMaps its references resolve against.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// Resolves its references against `resources` from now on.
    pub fn set_resources(&mut self, resources: Arc<Resources>) {
        self.resources = resources;
    }
}

/// What texts of documents hold: AuthConfigs, and the Secrets and
/// ConfigMaps ([`crate::resources`]) their references name, which may be
/// in another text (another file) than the AuthConfig.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Documents {
    /// The AuthConfigs, in order.
    pub configs: Vec<AuthConfig>,
    /// The Secrets and ConfigMaps.
    pub resources: Resources,
}

impl Documents {
    /// Reads every document of `text`; as [`AuthConfig::parse`].
    pub fn parse(origin: &str, text: &str, format: Format) -> Result<Documents, Error> {
        let mut docs = format.documents(origin, text)?;
        if let (Format::Json, [Value::Array(array)]) = (format, docs.as_mut_slice()) {
            docs = std::mem::take(array);
        }
        let several = docs.iter().filter(|d| !d.is_null()).count() > 1;
        let mut found = Documents::default();
        let mut errors = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue; // an empty YAML document, e.g. after a trailing `---`
            }
            let place = if several {
                format!("{origin} document {}", i + 1)
            } else {
                origin.to_owned()
            };
            if let Err(e) = found.add(&place, doc) {
                errors.push(e);
            }
        }
        match Error::collect(errors) {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// Adds one document, read at `place` (a file, `document 2` of it):
    /// an AuthConfig, a Secret, a ConfigMap, or a `kind: List` of them
    /// (`kubectl get -o yaml` of several objects).
    pub fn add(&mut self, place: &str, doc: Value) -> Result<(), Error> {
        match doc {
            Value::Object(mut list) if list.get("kind").and_then(Value::as_str) == Some("List") => {
                let Some(Value::Array(items)) = list.remove("items") else {
                    return Err(Error::config("expected a list")
                        .at("items")
                        .in_source(place));
                };
                let errors = items.into_iter().enumerate().filter_map(|(i, item)| {
                    self.read(&format!("{place}: items[{i}]"), item, true).err()
                });
                Error::collect(errors.collect()).map_or(Ok(()), Err)
            }
            doc => self.read(place, doc, false),
        }
    }

    /// Reads one document at `place`: a Secret, a ConfigMap or an
    /// AuthConfig (`in_list`: an item of a List, which must say which).
    fn read(&mut self, place: &str, doc: Value, in_list: bool) -> Result<(), Error> {
        if let Value::Object(object) = &doc {
            if let Some(read) = self.resources.read(object) {
                return read.map_err(|e| e.in_source(place));
            }
            if in_list && object.get("kind").and_then(Value::as_str) != Some("AuthConfig") {
                return Err(Error::config(
                    "expected an AuthConfig, a Secret or a ConfigMap in a List",
                )
                .in_source(place));
            }
        }
        self.configs.push(AuthConfig::from_value(place, doc)?);
        Ok(())
    }

    /// Adds another text's documents (a Secret or ConfigMap given twice is
    /// an error naming it).
    pub fn extend(&mut self, other: Documents) -> Result<(), Error> {
        self.configs.extend(other.configs);
        self.resources.extend(other.resources)
    }

    /// The AuthConfigs, each resolving its references against every
    /// Secret and ConfigMap read.
    pub fn into_configs(self) -> Vec<AuthConfig> {
        let resources = Arc::new(self.resources);
        self.configs
            .into_iter()
            .map(|mut c| {
                c.resources = resources.clone();
                c
            })
            .collect()
    }
}

impl AuthConfig {
    /// Reads one AuthConfig from a document value (a Gloo manifest or a
    /// spec with a `name`). `origin` names it in errors.
    pub fn from_value(origin: &str, doc: Value) -> Result<AuthConfig, Error> {
        let fail = |msg: String, place: &str| Err(Error::config(msg).at(place).in_source(origin));
        let Value::Object(mut doc) = doc else {
            return fail(format!("expected a mapping, found {}", kind_of(&doc)), "");
        };
        let is_manifest = doc.contains_key("apiVersion") || doc.contains_key("kind");
        if !is_manifest {
            let name = match doc.remove("name") {
                Some(Value::String(name)) if !name.is_empty() => name,
                Some(other) => {
                    return fail(
                        format!("expected a non-empty string, found {}", kind_of(&other)),
                        "name",
                    );
                }
                None => return fail("missing field `name` (or a Gloo manifest)".into(), ""),
            };
            return Ok(AuthConfig {
                name,
                origin: origin.to_owned(),
                base: "",
                spec: Value::Object(doc),
                manifest: None,
                namespace: String::new(),
                resources: Arc::default(),
            });
        }
        match doc.get("apiVersion") {
            Some(Value::String(v)) if GLOO_API_VERSIONS.contains(&v.as_str()) => {}
            _ => {
                return fail(
                    format!("expected one of {}", GLOO_API_VERSIONS.join(", ")),
                    "apiVersion",
                );
            }
        }
        match doc.get("kind") {
            Some(Value::String(k)) if k == "AuthConfig" => {}
            _ => return fail("expected `AuthConfig`".into(), "kind"),
        }
        for key in doc.keys() {
            if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
                return fail(
                    format!(
                        "unknown field `{key}`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
                    ),
                    "",
                );
            }
        }
        let metadata = doc.get("metadata").and_then(Value::as_object);
        let name = match metadata.and_then(|m| m.get("name")) {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return fail("expected a non-empty string".into(), "metadata.name"),
        };
        let (name, namespace) = match metadata.and_then(|m| m.get("namespace")) {
            None | Some(Value::Null) => (name, String::new()),
            Some(Value::String(ns)) if !ns.is_empty() => (format!("{ns}.{name}"), ns.clone()),
            Some(_) => return fail("expected a non-empty string".into(), "metadata.namespace"),
        };
        let spec = match doc.remove("spec") {
            Some(spec @ Value::Object(_)) => spec,
            _ => return fail("expected a mapping".into(), "spec"),
        };
        // What a controller last reported: not part of the config.
        doc.remove("status");
        Ok(AuthConfig {
            name,
            origin: origin.to_owned(),
            base: "spec",
            spec,
            manifest: Some(doc),
            namespace,
            resources: Arc::default(),
        })
    }

    /// The document as YAML: what [`parse`](Self::parse) reads back into
    /// the same AuthConfig (a manifest stays a manifest; a manifest's
    /// `status` is left out). An error when it holds a key `<<` (from
    /// JSON), which YAML would read as a merge key.
    pub fn to_yaml(&self) -> Result<String, Error> {
        fn merge_key(value: &Value) -> bool {
            match value {
                Value::Object(map) => map.iter().any(|(k, v)| k == "<<" || merge_key(v)),
                Value::Array(items) => items.iter().any(merge_key),
                _ => false,
            }
        }
        let mut head = self.manifest.iter().flatten();
        if merge_key(&self.spec) || head.any(|(k, v)| k == "<<" || merge_key(v)) {
            return Err(Error::config(
                "a key `<<` cannot be printed as YAML, which reads it as a merge key",
            )
            .in_source(&self.origin));
        }
        let doc = match &self.manifest {
            Some(head) => {
                let mut doc = head.clone();
                doc.insert("spec".to_owned(), self.spec.clone());
                doc
            }
            None => {
                let mut doc = Map::new();
                doc.insert("name".to_owned(), Value::String(self.name.clone()));
                if let Value::Object(spec) = &self.spec {
                    doc.extend(spec.clone());
                }
                doc
            }
        };
        serde_yaml_ng::to_string(&doc).map_err(|e| {
            Error::config(format!("cannot print as YAML: {e}")).in_source(&self.origin)
        })
    }

    /// The name requests select it by (`namespace.name` for a manifest).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it was read from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Names the allowed user upstream in `header` unless the document
    /// names a header of its own (`userIdHeader`), and strips a client's
    /// `header` either way: what the server's `userIdHeader` setting,
    /// Gloo's, does to every AuthConfig.
    pub fn default_user_id_header(&mut self, header: &str) {
        let Value::Object(spec) = &mut self.spec else {
            return;
        };
        if !spec.contains_key("userIdHeader") {
            spec.insert("userIdHeader".into(), Value::String(header.to_owned()));
            return;
        }
        // A `stripClientHeaders` that is not a list: the build says so.
        if let Value::Array(strip) = spec
            .entry("stripClientHeaders")
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            strip.push(Value::String(header.to_owned()));
        }
    }

    /// Builds the chain: resolves each step's plugin, deserializes its
    /// config and builds its service. Every problem is reported, each with
    /// its place (`auth.yaml: spec.configs[1].pluginAuth.config.AllowedValues: ...`).
    pub fn build(&self, registry: &PluginRegistry) -> Result<Chain, Error> {
        self.build_reading(registry, &FilesRead::default())
    }

    /// Where its fields are in its document: `spec` for a manifest, ``
    /// (the top) otherwise.
    pub(crate) fn base(&self) -> &'static str {
        self.base
    }

    /// [`build`](Self::build), noting in `files` the files its steps read.
    pub(crate) fn build_reading(
        &self,
        registry: &PluginRegistry,
        files: &FilesRead,
    ) -> Result<Chain, Error> {
        let place = |e: Error| e.at(self.base).in_source(&self.origin);
        let spec: Spec = deserialize_config(self.spec.clone()).map_err(place)?;
        let mut builder = Chain::builder(self.name.clone());
        let mut errors = Vec::new();
        let deadline = spec
            .deadline
            .map_or(crate::chain::DEFAULT_DEADLINE, |d| d.0);
        match spec.deadline {
            None => {}
            Some(ConfigDuration(d)) if d.is_zero() => {
                errors.push(Error::config("expected a duration above zero").at("deadline"))
            }
            Some(ConfigDuration(d)) => builder = builder.deadline(d),
        }
        match spec.status_on_error.map(StatusCode::from_u16) {
            None => {}
            Some(Ok(status)) if Deny::is_error_status(status) => {
                builder = builder.status_on_error(status)
            }
            Some(_) => errors.push(
                Error::config(
                    "expected an error's deny status, 400 to 599 (a proxy lets a request through on a 2xx, a browser may keep a redirect without a Location, and serves its kept copy on a 304)",
                )
                .at("statusOnError"),
            ),
        }
        if spec.allow_ambiguous_paths {
            builder = builder.ambiguous_paths(AmbiguousPaths::Keep);
        }
        if let Some(name) = &spec.user_id_header {
            match HeaderName::try_from(name.as_str()) {
                Ok(h) => builder = builder.user_id_header(h),
                Err(_) => errors.push(Error::config("not a valid header name").at("userIdHeader")),
            }
        }
        for (list, field) in [
            (&spec.strip_client_headers, "stripClientHeaders"),
            (&spec.trust_client_headers, "trustClientHeaders"),
        ] {
            for (i, name) in list.iter().enumerate() {
                match HeaderName::try_from(name.as_str()) {
                    Ok(h) if field == "stripClientHeaders" => {
                        builder = builder.strip_client_header(h)
                    }
                    Ok(h) => builder = builder.trust_client_header(h),
                    Err(_) => errors
                        .push(Error::config("not a valid header name").at(format!("{field}[{i}]"))),
                }
            }
        }
        let around = Around {
            fail_on_redirect: spec.fail_on_redirect,
            deadline,
        };
        let mut shadow = spec.shadow.map(|name| (name, "shadow".to_owned()));
        for (i, mut entry) in spec.configs.into_iter().enumerate() {
            let at = format!("configs[{i}]");
            match take_mirror(&mut entry) {
                Ok(None) => {}
                Ok(Some(mirrored)) if shadow.is_none() => {
                    shadow = Some((mirrored, format!("{at}.passThroughAuth.mirror")));
                }
                Ok(Some(_)) => errors.push(
                    Error::config(
                        "a chain has one shadow: set one passThroughAuth's `mirror` or the AuthConfig's `shadow`",
                    )
                    .at(format!("{at}.passThroughAuth.mirror")),
                ),
                Err(e) => errors.push(e.at(format!("{at}.passThroughAuth.mirror"))),
            }
            match self.build_step(registry, i, entry, &at, files, around) {
                Ok(step) => builder = builder.step(step),
                Err(e) => errors.push(e.at(&at)),
            }
        }
        if let Some((shadow, at)) = shadow {
            builder = builder.shadow_at(shadow, at);
        }
        if let Some(expr) = spec.boolean_expr {
            builder = builder.boolean_expr(expr);
        }
        match spec.cache.map(deserialize_config::<CacheSettings>) {
            None => {}
            Some(Ok(settings)) => builder = builder.cache(settings),
            Some(Err(e)) => errors.push(e.at("cache")),
        }
        match spec.decision_log.map(deserialize_config::<Sampling>) {
            None => {}
            Some(Ok(sampling)) => builder = builder.decision_log(sampling),
            Some(Err(e)) => errors.push(e.at("decisionLog")),
        }
        if let Some(e) = Error::collect(errors) {
            return Err(place(e));
        }
        builder.build().map_err(place)
    }

    fn build_step(
        &self,
        registry: &PluginRegistry,
        index: usize,
        entry: Value,
        at: &str,
        files: &FilesRead,
        around: Around,
    ) -> Result<ChainStep, Error> {
        let Around {
            fail_on_redirect,
            deadline,
        } = around;
        let Value::Object(mut entry) = entry else {
            return Err(Error::config(format!(
                "expected a mapping, found {}",
                kind_of(&entry)
            )));
        };
        let name = match entry.remove("name") {
            None | Some(Value::Null) => format!("config_{index}"),
            Some(Value::String(n)) if !n.is_empty() => n,
            Some(_) => return Err(Error::config("expected a non-empty string").at("name")),
        };
        let timeout = match entry.remove("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => match deserialize_config::<ConfigDuration>(v) {
                Ok(ConfigDuration(d)) if d.is_zero() => {
                    return Err(Error::config("expected a duration above zero").at("timeout"));
                }
                Ok(d) => Some(d),
                Err(e) => return Err(e.at("timeout")),
            },
        };
        let mut failure_mode_allow = take_bool(&mut entry, "failureModeAllow")?;
        let mut kinds = entry.into_iter();
        let (kind, block) = match (kinds.next(), kinds.next()) {
            (Some(kv), None) => kv,
            (None, _) => {
                let kinds = ["pluginAuth", "passThroughAuth"].into_iter().chain(
                    registry
                        .kind_names()
                        .filter(|k| !k.starts_with("passThroughAuth.")),
                );
                return Err(Error::config(format!(
                    "no step kind: expected one of {}",
                    listing(kinds)
                )));
            }
            (Some((a, _)), Some((b, _))) => {
                return Err(Error::config(format!(
                    "expected exactly one step kind, found `{a}` and `{b}`"
                )));
            }
        };
        let (target, config) = match kind.as_str() {
            "pluginAuth" => {
                let block: PluginAuth = deserialize_config(block).map_err(|e| e.at(&kind))?;
                let config = block.config.unwrap_or_else(|| Value::Object(Map::new()));
                (Target::Plugin(block.name), config)
            }
            "passThroughAuth" => {
                let Value::Object(mut block) = block else {
                    return Err(Error::config("expected a mapping").at(&kind));
                };
                let inner = take_bool(&mut block, "failureModeAllow").map_err(|e| e.at(&kind))?;
                failure_mode_allow |= inner;
                let transport = match (block.contains_key("grpc"), block.contains_key("http")) {
                    (true, false) => "passThroughAuth.grpc",
                    (false, true) => "passThroughAuth.http",
                    _ => {
                        return Err(
                            Error::config("expected exactly one of `grpc` and `http`").at(&kind)
                        );
                    }
                };
                (Target::Kind(transport.to_owned()), Value::Object(block))
            }
            _ => (Target::Kind(kind.clone()), block),
        };
        let place = format!("{at}.{kind}");
        let context = BuildContext {
            config_name: &self.name,
            step_name: &name,
            place: &place,
            failure_mode_allow,
            timeout: Some(timeout.map_or(deadline, |t| t.0.min(deadline))),
            namespace: &self.namespace,
            resources: &self.resources,
            fail_on_redirect,
            files: Some(files),
        };
        let built = match &target {
            Target::Plugin(plugin) => registry
                .build_plugin(plugin, config, &context)
                .map(|built| built.map_err(|e| e.at("config")))
                .unwrap_or_else(|| {
                    Err(Error::config(format!(
                        "no plugin named '{plugin}' is registered (registered: {})",
                        listing(registry.plugin_names())
                    ))
                    .at("name"))
                }),
            Target::Kind(kind_name) => registry
                .build_kind(kind_name, config, &context)
                .unwrap_or_else(|| {
                    Err(Error::config(
                        if GLOO_KINDS_UNSUPPORTED.contains(&kind_name.as_str()) {
                            format!(
                                "`{kind_name}` is a Gloo step kind that authchain does not support: see the Gloo compatibility table (docs/src/gloo.md)"
                            )
                        } else {
                            format!(
                                "no plugin is registered for step kind `{kind_name}` (registered: {})",
                                listing(registry.kind_names())
                            )
                        },
                    ))
                }),
        };
        let service = built.map_err(|e| e.at(&kind))?;
        if let Some(e) = crate::service::fail_open_refusal(&*service, failure_mode_allow) {
            return Err(e.at(&kind));
        }
        let mut step = ChainStep::new(name, service).failure_mode_allow(failure_mode_allow);
        if let Some(timeout) = timeout {
            step = step.timeout(timeout.0);
        }
        Ok(step)
    }
}

/// What the AuthConfig gives each of its steps.
#[derive(Clone, Copy)]
struct Around {
    /// Gloo's `failOnRedirect`.
    fail_on_redirect: bool,
    /// The chain's deadline: the time a step without a `timeout` has.
    deadline: Duration,
}

/// What a `configs[]` entry resolves to in the registry.
enum Target {
    /// `pluginAuth`, by plugin name.
    Plugin(String),
    /// Any other step kind, by kind name.
    Kind(String),
}

/// `a, b, c`, or `none`.
fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Takes `passThroughAuth.mirror` out of a step entry: the AuthConfig
/// that runs beside the passthrough, whose answer is served (the chain's
/// [shadow](crate::shadow)).
fn take_mirror(entry: &mut Value) -> Result<Option<String>, Error> {
    let Some(Value::Object(block)) = entry.get_mut("passThroughAuth") else {
        return Ok(None);
    };
    match block.remove("mirror") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) if !name.is_empty() => Ok(Some(name)),
        Some(_) => Err(Error::config("expected the name of an AuthConfig")),
    }
}

fn take_bool(map: &mut Map<String, Value>, key: &str) -> Result<bool, Error> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(other) => {
            Err(Error::config(format!("expected a boolean, found {}", kind_of(&other))).at(key))
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    configs: Vec<Value>,
    #[serde(default)]
    boolean_expr: Option<String>,
    #[serde(default)]
    status_on_error: Option<u16>,
    #[serde(default)]
    deadline: Option<ConfigDuration>,
    #[serde(default)]
    strip_client_headers: Vec<String>,
    #[serde(default)]
    trust_client_headers: Vec<String>,
    #[serde(default)]
    allow_ambiguous_paths: bool,
    #[serde(default)]
    user_id_header: Option<String>,
    #[serde(default)]
    fail_on_redirect: bool,
    #[serde(default)]
    cache: Option<Value>,
    #[serde(default)]
    decision_log: Option<Value>,
    #[serde(default)]
    shadow: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginAuth {
    name: String,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default, rename = "pluginFileName")]
    _plugin_file_name: Option<String>,
    #[serde(default, rename = "exportedSymbolName")]
    _exported_symbol_name: Option<String>,
}

/// A duration in a config, written as protobuf JSON and Gloo write them
/// (`5s`, `0.25s`) or with another unit (`250ms`, `100us`, `2m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

/// The longest duration a config may give (365 days): long enough for any
/// TTL or interval, short enough that no deadline computed from it
/// overflows a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest file a config names that is read (a keys file, a JWKS, a
/// policy, an AuthConfig file): 256 MiB.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads a file a config names: a regular file (after symbolic links) of
/// at most [`MAX_FILE_BYTES`]. A device (`/dev/zero`) or a named pipe,
/// which would fill the memory or never end, is an `InvalidInput` error,
/// as is a larger file. What is read is what was opened: a path that is
/// no regular file is not opened (a device may act on an open), and the
/// file is opened without waiting (a pipe with no writer would hold the
/// open) nor becoming a terminal, then looked at again, so that a link
/// switched in between reads nothing else.
pub fn read_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let not_regular = || Error::new(ErrorKind::InvalidInput, "not a regular file");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    let mut contents = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut contents)?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::new(ErrorKind::InvalidInput, "larger than 256 MiB"));
    }
    Ok(contents)
}

impl ConfigDuration {
    /// Parses `5s`, `1.5s`, `250ms`, `100us`, `2m`, `1h`.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => {
                // The unit is not quoted: the document's values never are.
                return Err(
                    "expected a duration such as \"5s\" or \"250ms\" (units h, m, s, ms, us, ns)"
                        .to_owned(),
                );
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| "expected a duration such as \"5s\" or \"250ms\"".to_owned())?;
        match Duration::try_from_secs_f64(value * scale) {
            Ok(d) if d <= MAX_DURATION => Ok(d),
            _ => Err("duration out of range: at most 365 days".to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"5s\" or \"250ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                ConfigDuration::parse(v)
                    .map(ConfigDuration)
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl From<ConfigDuration> for Duration {
    fn from(d: ConfigDuration) -> Duration {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| ConfigDuration::parse(s).unwrap();
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("0.25s"), Duration::from_millis(250));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("100us"), Duration::from_micros(100));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        for bad in ["5", "s", "5 sec", "-1s", "1e400s", ""] {
            assert!(ConfigDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_manifest_is_named_namespace_dot_name() {
        let docs = AuthConfig::parse(
            "a.yaml",
            "apiVersion: enterprise.gloo.solo.io/v1\nkind: AuthConfig\nmetadata: {name: n, namespace: ns}\nspec: {configs: []}\n",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!(docs[0].name(), "ns.n");
        assert_eq!(docs[0].base, "spec");
    }

    #[test]
    fn a_key_twice_in_a_mapping_or_a_nan_is_an_error() {
        let cases = [
            (
                "name: s\nconfigs: [{rules: {defaultAction: deny}}]\nconfigs: [{rules: {defaultAction: allow}}]\n",
                Format::Yaml,
                "`configs`",
            ),
            (
                "name: s\nconfigs:\n- rules: {defaultAction: deny, defaultAction: allow}\n",
                Format::Yaml,
                "`defaultAction`",
            ),
            (
                r#"[{"name": "s", "booleanExpr": "a", "booleanExpr": "b", "configs": []}]"#,
                Format::Json,
                "`booleanExpr`",
            ),
        ];
        for (text, format, key) in cases {
            let e = AuthConfig::parse("a.yaml", text, format)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("twice"), "{text}: {e}");
            assert!(e.contains("a.yaml"), "{e}");
        }
        // Nor is a number that is none a null, an optional field unset.
        let e = AuthConfig::parse(
            "a.yaml",
            "name: s\nstatusOnError: .nan\nconfigs: []\n",
            Format::Yaml,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not finite"), "{e}");
        // The same key in two mappings is two keys.
        let ok =
            "name: s\nconfigs:\n- rules: {defaultAction: deny}\n- rules: {defaultAction: allow}\n";
        assert!(AuthConfig::parse("a.yaml", ok, Format::Yaml).is_ok());
    }

    /// A YAML merge key is an error: serde_yaml_ng keeps it as a key, so
    /// a policy's data or a plugin's config missed the keys it merges.
    #[test]
    fn a_yaml_merge_key_is_an_error() {
        let text = "limits: &d {max: 5}\nopa: {data: {limits: {<<: *d, min: 1}}}\n";
        let e = Format::Yaml
            .documents("a.yaml", text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("merge keys") && e.contains("a.yaml"), "{e}");
        let plain = "limits: &d {max: 5}\nopa: {data: {limits: *d}}\n";
        assert!(Format::Yaml.documents("a.yaml", plain).is_ok());
    }

    #[test]
    fn aliases_that_expand_a_small_text_past_its_budget_are_refused_at_once() {
        let n = 20_000;
        let text = format!(
            "name: x\npad: &a [{}]\nboom: [{}]\nconfigs: []\n",
            vec!["0"; n].join(","),
            vec!["*a"; n].join(",")
        );
        assert!(text.len() < 200_000);
        let e = Format::Yaml
            .documents("a.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many values") && e.contains("a.yaml"), "{e}");
        // Few aliases of a long string are as many long strings.
        let text = format!(
            "a: &s {}\nb: [{}]\n",
            "x".repeat(100_000),
            vec!["*s"; 5_000].join(",")
        );
        let e = Format::Yaml
            .documents("a.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many values"), "{e}");
        // A few aliases still read, to the value they stand for.
        let docs = Format::Yaml
            .documents("b.yaml", "a: &x {k: [1, 2]}\nb: *x\n")
            .unwrap();
        assert_eq!(docs[0]["b"], serde_json::json!({"k": [1, 2]}));
    }
}
