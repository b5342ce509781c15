//! `apiKeyAuth`: a request must carry one of the configured API keys.
//!
//! ```yaml
//! apiKeyAuth:
//!   headerName: api-key            # where the key is read (default `api-key`)
//!   allowBearer: true              # also `Authorization: Bearer <key>` (default false, as Gloo)
//!   keys:
//!   - key: N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy
//!     metadata: { user-id: alice, plan: gold }
//!   keysFile: /etc/authchain/api-keys.yaml   # more entries, same shape (a YAML or JSON list)
//!   headersFromMetadataEntry:      # Gloo's name: upstream header <- metadata entry
//!     x-user-id: { name: user-id, required: true }
//!     x-plan: { name: plan }
//!   userIdMetadata: user-id        # metadata entry that names the user (UserInfo, state)
//! ```
//!
//! A missing or unknown key is a 401 with `WWW-Authenticate: API key is
//! missing or invalid`, as Gloo answers. On a match, the metadata entries are
//! set on the upstream request as configured, the user (if
//! `userIdMetadata` is set) goes into `UserInfo`, and the key's metadata
//! into `state.apiKey`. As Gloo's, the state also takes each
//! `headersFromMetadataEntry` value under its header's name as written
//! (`state["x-user-id"]`) and the key under `api_key_value`, so that a
//! Gloo policy reading them reads what it reads in Gloo (one that finds
//! them missing may let in what it meant to keep out). A header named
//! like a state name a step writes (`jwt`, `api_key_value`) is a config
//! error, and so are two headers that differ only in case; a name an
//! earlier step wrote with another value, or where the key has no entry
//! (a passthrough's answer, another apiKeyAuth), fails the request closed.
//! The upstream headers are declared as identity headers, so the chain
//! strips client-sent copies.
//!
//! Keys are looked up by a keyed PRF of their bytes (SipHash with a
//! random per-instance key), and the key found is then compared with the
//! presented one in constant time: how long a lookup takes
//! depends on a value the client cannot compute, not on how many
//! characters of a real key it has guessed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use authchain_core::resources::{ResourceRef, Secret};
use authchain_core::{
    Allow, Answer, Attribute, AuthService, AuthorizationRequest, BuildContext, Decision, Error,
    ExtAuthPlugin, Format, UserInfo,
};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::util;

/// The step kind this module registers.
pub const KIND: &str = "apiKeyAuth";

/// The header the key is read from by default.
pub const DEFAULT_HEADER: &str = "api-key";

/// The key under which the step writes the key's metadata into `state`.
pub const STATE_KEY: &str = "apiKey";

/// The key under which the step writes the key itself into `state`, as
/// Gloo does.
pub const GLOO_KEY_STATE: &str = "api_key_value";

/// The state names the built-in steps write, which no
/// `headersFromMetadataEntry` header may take: Gloo's state takes each
/// entry under its header's name, and a key's metadata (which whoever
/// writes key Secrets sets) must not stand for a login's `jwt`, say.
const OTHERS_STATE: [&str; 9] = [
    STATE_KEY,
    GLOO_KEY_STATE,
    crate::jwt::STATE_KEY,
    crate::basic::STATE_KEY,
    crate::hmac::STATE_KEY,
    crate::ldap::STATE_KEY,
    crate::oauth2::access::JWT_STATE_KEY,
    crate::oauth2::access::INTROSPECTION_STATE_KEY,
    crate::oauth2::access::USERINFO_STATE_KEY,
];

/// The `apiKeyAuth` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The header the key is read from (`api-key`).
    #[serde(default)]
    pub header_name: Option<String>,
    /// Whether `Authorization: Bearer <key>` is accepted too (false: Gloo
    /// reads the key from `headerName` alone).
    #[serde(default)]
    pub allow_bearer: bool,
    /// Keys, inline.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// A YAML or JSON file with a list of more key entries.
    #[serde(default)]
    pub keys_file: Option<String>,
    /// Upstream header name → the metadata entry copied into it.
    #[serde(default)]
    pub headers_from_metadata_entry: BTreeMap<String, MetadataEntry>,
    /// The metadata entry that holds the user id.
    #[serde(default)]
    pub user_id_metadata: Option<String>,
    /// Gloo's older name of `headersFromMetadataEntry`, merged into it.
    #[serde(default)]
    pub headers_from_metadata: BTreeMap<String, MetadataEntry>,
    /// Gloo's: keys in Secrets of type `extauth.solo.io/apikey`.
    #[serde(default)]
    pub k8s_secret_apikey_storage: Option<SecretStorage>,
    /// Gloo's older place of `k8sSecretApikeyStorage.labelSelector`.
    #[serde(default)]
    pub label_selector: BTreeMap<String, String>,
    /// Gloo's older place of `k8sSecretApikeyStorage.apiKeySecretRefs`.
    #[serde(default)]
    pub api_key_secret_refs: Vec<ResourceRef>,
    /// A key without a `required` metadata entry is refused (401) when
    /// presented, instead of failing the config.
    #[serde(default)]
    pub skip_metadata_validation: bool,
}

/// Gloo's `k8sSecretApikeyStorage`: Secrets picked by label, or named.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretStorage {
    /// Every API key Secret with these labels.
    #[serde(default)]
    pub label_selector: BTreeMap<String, String>,
    /// These API key Secrets.
    #[serde(default)]
    pub api_key_secret_refs: Vec<ResourceRef>,
}

/// The type of the Secrets that hold API keys, as Gloo names it.
pub const SECRET_TYPE: &str = "extauth.solo.io/apikey";

/// What a refused request's `WWW-Authenticate` says, as Gloo's does.
pub const CHALLENGE: &str = "API key is missing or invalid";

/// The data entry of an API key Secret that holds the key; the others are
/// the key's metadata.
pub const SECRET_KEY_ENTRY: &str = "api-key";

/// One key and what it says about its holder.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyEntry {
    /// The key. Never logged, never in an error.
    pub key: String,
    /// Free-form string attributes of the key's holder.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("key", &"<redacted>")
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// Which metadata entry fills an upstream header.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataEntry {
    /// The metadata entry's name.
    pub name: String,
    /// Whether every key must have the entry (checked when building).
    #[serde(default)]
    pub required: bool,
}

/// The plugin for step kind `apiKeyAuth`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKeyPlugin;

impl ExtAuthPlugin for ApiKeyPlugin {
    type Config = ApiKeyConfig;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: ApiKeyConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        Ok(Arc::new(ApiKeyAuth::with_secrets(config, context)?))
    }
}

/// What a matched key yields: computed once, cloned per request.
struct Holder {
    key: Box<[u8]>,
    /// False for a key that lacks a required metadata entry (with
    /// `skipMetadataValidation`): presented, it is refused.
    usable: bool,
    allow: Allow,
    /// `state.apiKey`: shared by every request with the key.
    state: Arc<Value>,
    /// Gloo's state: each mapped entry's value under its header's name
    /// as written (none when the key lacks the entry), then the key under
    /// [`GLOO_KEY_STATE`].
    gloo_state: Vec<(String, Option<Arc<Value>>)>,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("key", &"<redacted>")
            .field("allow", &self.allow)
            .field("state", &self.state)
            .field(
                "gloo_state",
                &self.gloo_state.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The `apiKeyAuth` step.
#[derive(Debug)]
pub struct ApiKeyAuth {
    header: HeaderName,
    allow_bearer: bool,
    prf: util::Prf,
    /// PRF of a key → index in `holders`. A PRF collision between two
    /// keys (chance 2^-64) makes the second key unusable, never wrong.
    by_prf: HashMap<u64, usize, util::PrfKeyed>,
    holders: Vec<Holder>,
    identity_headers: Vec<HeaderName>,
}

impl ApiKeyAuth {
    /// Builds the step from its config; reads `keysFile`. References to
    /// Secrets resolve against nothing: see [`with_secrets`](Self::with_secrets).
    pub fn new(config: ApiKeyConfig) -> Result<Self, Error> {
        Self::with_secrets(config, &BuildContext::new("", "", ""))
    }

    /// Builds the step from its config, its Secrets from `context`'s;
    /// reads `keysFile`.
    pub fn with_secrets(
        mut config: ApiKeyConfig,
        context: &BuildContext<'_>,
    ) -> Result<Self, Error> {
        let header = util::header_name(
            config.header_name.as_deref().unwrap_or(DEFAULT_HEADER),
            "headerName",
        )?;
        let mut entries: Vec<(String, KeyEntry, Picked)> = std::mem::take(&mut config.keys)
            .into_iter()
            .enumerate()
            .map(|(i, k)| (format!("keys[{i}]"), k, Picked::Inline))
            .collect();
        if let Some(file) = &config.keys_file {
            let text = context.read_to_string(file).map_err(|e| e.at("keysFile"))?;
            let list: Vec<KeyEntry> = serde_yaml_ng::from_str(&text).map_err(|e| {
                // The message may quote the file's content: keep only where.
                let at = e
                    .location()
                    .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                    .unwrap_or_default();
                Error::config(format!("not a list of {{key, metadata}} entries{at}")).at("keysFile")
            })?;
            // What the list's reader lets pass; its errors may quote a key.
            Format::Yaml.documents("keysFile", &text).map_err(|_| {
                Error::config(
                    "a key twice in a mapping, a YAML merge key, or aliases that expand too far",
                )
                .at("keysFile")
            })?;
            entries.extend(
                list.into_iter()
                    .enumerate()
                    .map(|(i, k)| (format!("keysFile[{i}]"), k, Picked::Inline)),
            );
        }
        let uses_secrets = config.k8s_secret_apikey_storage.is_some()
            || !config.label_selector.is_empty()
            || !config.api_key_secret_refs.is_empty();
        entries.extend(secret_entries(&config, context)?);
        if entries.is_empty() && !uses_secrets {
            return Err(Error::config(
                "no API keys: set `keys`, `keysFile`, or Secrets by `labelSelector` or `apiKeySecretRefs`",
            ));
        }
        if entries.is_empty() {
            // Every key revoked: the step refuses every request.
            tracing::warn!(
                config = context.config_name,
                step = context.step_name,
                "apiKeyAuth: no API keys in the Secrets; every request is refused"
            );
        }
        for (header, entry) in std::mem::take(&mut config.headers_from_metadata) {
            config
                .headers_from_metadata_entry
                .entry(header)
                .or_insert(entry);
        }
        let mut mapped = Vec::new();
        for (name, entry) in &config.headers_from_metadata_entry {
            let at = format!("headersFromMetadataEntry.{name}");
            if let Some(taken) = OTHERS_STATE.iter().find(|n| n.eq_ignore_ascii_case(name)) {
                return Err(Error::config(format!(
                    "`{taken}` is a state name a step writes, and the state takes each entry \
                     under its header's name, as Gloo's does: choose another header"
                ))
                .at(at));
            }
            let header = util::header_name(name, &at)?;
            if mapped.iter().any(|(h, _, _)| *h == header) {
                return Err(Error::config(
                    "the same header as another entry, in another case: the state would take \
                     each under its own spelling, the upstream request one",
                )
                .at(at));
            }
            mapped.push((header, name, entry));
        }
        let prf = util::Prf::new();
        let mut by_prf = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut seen = std::collections::HashSet::new();
        let mut holders = Vec::with_capacity(entries.len());
        // A Secret a selector picked must not stop a reload (which may be
        // a revocation) by what it holds: a key it cannot serve is left
        // out, one whose metadata cannot be a header is refused; both are
        // logged.
        let left_out = |at: &str, why: &str| {
            tracing::warn!(
                config = context.config_name, step = context.step_name, secret = %at,
                "apiKeyAuth: a Secret picked by label is left out: {why}"
            );
        };
        for (at, entry, picked) in entries {
            let selected = picked == Picked::Selected;
            let problem = if entry.key.is_empty() || entry.key.len() > util::MAX_CREDENTIAL_LEN {
                Some("a key must have 1 to 8192 bytes")
            } else if seen.contains(&entry.key) {
                Some("the same key is listed twice")
            } else {
                None
            };
            match problem {
                Some(why) if selected => {
                    left_out(&at, why);
                    continue;
                }
                Some(why) => return Err(Error::config(why).at(format!("{at}.key"))),
                None => {}
            }
            seen.insert(entry.key.clone());
            by_prf
                .entry(prf.hash64(entry.key.as_bytes()))
                .or_insert(holders.len());
            let mut allow = Allow::new();
            let mut usable = true;
            let mut gloo_state = Vec::new();
            for (header, written, source) in &mapped {
                match entry.metadata.get(&source.name) {
                    Some(v) => {
                        let value = Arc::new(Value::String(v.clone()));
                        gloo_state.push(((*written).clone(), Some(value)));
                        match util::header_value(v, &format!("{at}.metadata.{}", source.name)) {
                            Ok(value) => allow = allow.set_header(header.clone(), value),
                            Err(_) if selected => {
                                left_out(&at, "a metadata entry cannot be a header value");
                                usable = false;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    // Keys picked by label may lack a required entry
                    // without failing the config: refused.
                    None if source.required && (config.skip_metadata_validation || selected) => {
                        usable = false
                    }
                    None if source.required => {
                        return Err(Error::config(format!(
                            "missing metadata entry `{}`, required by headersFromMetadataEntry",
                            source.name
                        ))
                        .at(format!("{at}.metadata")));
                    }
                    None => gloo_state.push(((*written).clone(), None)),
                }
            }
            if let Some(user) = config
                .user_id_metadata
                .as_ref()
                .and_then(|k| entry.metadata.get(k))
            {
                allow = allow.user(UserInfo::new(user.clone()));
            }
            let metadata: Map<String, Value> = entry
                .metadata
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            gloo_state.push((
                GLOO_KEY_STATE.to_owned(),
                Some(Arc::new(Value::String(entry.key.clone()))),
            ));
            holders.push(Holder {
                key: entry.key.as_bytes().into(),
                usable,
                allow,
                state: Arc::new(Value::Object(metadata)),
                gloo_state,
            });
        }
        Ok(ApiKeyAuth {
            header,
            allow_bearer: config.allow_bearer,
            prf,
            by_prf,
            holders,
            identity_headers: mapped.into_iter().map(|(h, _, _)| h).collect(),
        })
    }

    /// The presented key's bytes: from the named header, else from
    /// `Authorization: Bearer`. `Err(())` for an unusable credential, the
    /// header sent twice or under another spelling too (`api_key` for
    /// `api-key`), or (with `allowBearer`) a different key in each place:
    /// the app behind may read the other one.
    fn presented<'a>(&self, request: &'a AuthorizationRequest) -> Result<Option<&'a [u8]>, ()> {
        if request.other_spellings(&self.header).next().is_some() {
            return Err(());
        }
        let mut all = request.headers.get_all(&self.header).iter();
        let named = match all.next().map(HeaderValue::as_bytes) {
            Some(v) if v.is_empty() || v.len() > util::MAX_CREDENTIAL_LEN => return Err(()),
            Some(_) if all.next().is_some() => return Err(()),
            named => named,
        };
        if !self.allow_bearer {
            return Ok(named);
        }
        let bearer = util::scheme_credential(request, &http::header::AUTHORIZATION, "Bearer ");
        let Some(named) = named else {
            return bearer.map(|k| k.map(str::as_bytes));
        };
        // Beside the named key, an `Authorization` of another scheme is
        // another step's; a bearer (or what may be one: a second value,
        // one too long) must be the same key.
        let authorization = http::header::AUTHORIZATION;
        let other_scheme = !request.headers.contains_key(&authorization)
            || util::other_scheme(request, &authorization, "Bearer ");
        match bearer {
            _ if other_scheme => Ok(Some(named)),
            Ok(Some(bearer)) if bearer.as_bytes() == named => Ok(Some(named)),
            _ => Err(()),
        }
    }

    /// The holder of `key`, found by PRF and confirmed in constant time.
    fn find(&self, key: &[u8]) -> Option<&Holder> {
        let holder = &self.holders[*self.by_prf.get(&self.prf.hash64(key))?];
        util::ct_eq(&holder.key, key).then_some(holder)
    }

    /// The answer for a request; also writes the state on a match:
    /// Gloo's names, then `state.apiKey`. An error when an earlier step
    /// (a passthrough's answer, another apiKeyAuth) wrote one of Gloo's
    /// names with another value: a policy would judge that one.
    pub fn decide(&self, request: &mut AuthorizationRequest) -> Result<Decision, Error> {
        let holder = match self.presented(request) {
            Ok(Some(key)) => self.find(key),
            Ok(None) | Err(()) => None,
        };
        let Some(holder) = holder.filter(|h| h.usable) else {
            return Ok(util::challenge(&HeaderValue::from_static(CHALLENGE)));
        };
        // What an earlier step wrote under one of these names must be
        // the key's, or absent where the key has none.
        if let Some((name, _)) = holder.gloo_state.iter().find(|(name, value)| {
            request
                .state
                .get(name)
                .is_some_and(|held| value.as_deref() != Some(held))
        }) {
            return Err(Error::step(format!(
                "an earlier step wrote the state's `{name}`, which this key's would replace"
            )));
        }
        for (name, value) in &holder.gloo_state {
            if let Some(value) = value {
                request.state.insert(name.clone(), value.clone());
            }
        }
        request.state.insert(STATE_KEY, holder.state.clone());
        Ok(Decision::Allow(holder.allow.clone()))
    }
}

/// The key entries of the Secrets `config` names (`apiKeySecretRefs`) or
/// selects (`labelSelector`), from `context`'s, each named by where it
/// came from; a Secret named and selected counts once.
fn secret_entries(
    config: &ApiKeyConfig,
    context: &BuildContext<'_>,
) -> Result<Vec<(String, KeyEntry, Picked)>, Error> {
    let storage = config.k8s_secret_apikey_storage.clone().unwrap_or_default();
    let (refs, refs_at, selector, selector_at) = if config.k8s_secret_apikey_storage.is_some() {
        if !config.api_key_secret_refs.is_empty() || !config.label_selector.is_empty() {
            return Err(Error::config(
                "set Secrets in `k8sSecretApikeyStorage` or at the top level (Gloo's older place), not both",
            ));
        }
        (
            &storage.api_key_secret_refs,
            "k8sSecretApikeyStorage.apiKeySecretRefs",
            &storage.label_selector,
            "k8sSecretApikeyStorage.labelSelector",
        )
    } else {
        (
            &config.api_key_secret_refs,
            "apiKeySecretRefs",
            &config.label_selector,
            "labelSelector",
        )
    };
    let mut secrets: Vec<(String, &Secret, Picked)> = Vec::new();
    for (i, reference) in refs.iter().enumerate() {
        let at = format!("{refs_at}[{i}]");
        let secret = util::typed_secret(context, reference, SECRET_TYPE, &at)?;
        if !secrets.iter().any(|(_, s, _)| std::ptr::eq(*s, secret)) {
            secrets.push((at, secret, Picked::Named));
        }
    }
    if !selector.is_empty() {
        for secret in context.resources.secrets_labelled(selector) {
            let named = secrets.iter().any(|(_, s, _)| std::ptr::eq(*s, secret));
            if secret.kind == SECRET_TYPE && !named {
                let at = format!(
                    "{selector_at} (Secret {}/{})",
                    secret.namespace, secret.name
                );
                secrets.push((at, secret, Picked::Selected));
            }
        }
    }
    let mut entries = Vec::new();
    for (at, secret, picked) in secrets {
        match secret_entry(secret) {
            Ok(entry) => entries.push((at, entry, picked)),
            Err(e) if picked == Picked::Named => return Err(e.at(&at)),
            // A Secret a selector picked that cannot be read must not stop
            // a reload, which may be a revocation: it is left out.
            Err(e) => tracing::warn!(
                config = context.config_name, step = context.step_name, error = %e,
                "apiKeyAuth: a Secret picked by label is left out"
            ),
        }
    }
    Ok(entries)
}

/// How a key came to the step: inline, in a Secret named by reference,
/// or in one picked by a label selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Picked {
    Inline,
    Named,
    Selected,
}

/// The key entry of an API key Secret: its `api-key`, the rest as
/// metadata; an error names the Secret and the entry, never a value.
fn secret_entry(secret: &Secret) -> Result<KeyEntry, Error> {
    let key = util::secret_text(secret, SECRET_KEY_ENTRY)?;
    let mut metadata = BTreeMap::new();
    for entry in secret.data.keys() {
        if entry != SECRET_KEY_ENTRY {
            metadata.insert(entry.clone(), util::secret_text(secret, entry)?);
        }
    }
    Ok(KeyEntry { key, metadata })
}

impl AuthService for ApiKeyAuth {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        self.decide(request).into()
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        self.identity_headers.clone()
    }

    fn reads(&self) -> Option<Vec<Attribute>> {
        let mut reads = vec![Attribute::header(self.header.clone())];
        if self.allow_bearer {
            reads.push(Attribute::header(http::header::AUTHORIZATION));
        }
        Some(reads)
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        Some(authchain_core::CALLS_NO_SERVER)
    }
}
