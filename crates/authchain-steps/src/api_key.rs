//! `apiKeyAuth`: a request must carry one of the configured API keys.
//!
//! ```yaml
//! apiKeyAuth:
//!   headerName: api-key            # where the key is read (default `api-key`)
//!   allowBearer: true              # also `Authorization: Bearer <key>` (default true)
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
//! A missing or unknown key is a 401. On a match, the metadata entries are
//! set on the upstream request as configured, the user (if
//! `userIdMetadata` is set) goes into `UserInfo`, and the key's metadata
//! into `state.apiKey` (never the key itself). The upstream headers are
//! declared as identity headers, so the chain strips client-sent copies.
//!
//! Keys are looked up by a keyed PRF of their bytes (SipHash with a
//! random per-instance key), and the key found is then compared with the
//! presented one in constant time: how long a lookup takes
//! depends on a value the client cannot compute, not on how many
//! characters of a real key it has guessed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use authchain_core::{
    Allow, Answer, Attribute, AuthService, AuthorizationRequest, BuildContext, Decision, Error,
    ExtAuthPlugin, UserInfo,
};
use http::HeaderName;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::util;

/// The step kind this module registers.
pub const KIND: &str = "apiKeyAuth";

/// The header the key is read from by default.
pub const DEFAULT_HEADER: &str = "api-key";

/// The key under which the step writes the key's metadata into `state`.
pub const STATE_KEY: &str = "apiKey";

/// The `apiKeyAuth` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The header the key is read from (`api-key`).
    #[serde(default)]
    pub header_name: Option<String>,
    /// Whether `Authorization: Bearer <key>` is accepted too (true).
    #[serde(default = "yes")]
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
}

fn yes() -> bool {
    true
}

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
        _: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        Ok(Arc::new(ApiKeyAuth::new(config)?))
    }
}

/// What a matched key yields: computed once, cloned per request.
struct Holder {
    key: Box<[u8]>,
    allow: Allow,
    /// `state.apiKey`: shared by every request with the key.
    state: Arc<Value>,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("key", &"<redacted>")
            .field("allow", &self.allow)
            .field("state", &self.state)
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
    by_prf: HashMap<u64, usize, std::hash::BuildHasherDefault<util::PassThrough>>,
    holders: Vec<Holder>,
    identity_headers: Vec<HeaderName>,
}

impl ApiKeyAuth {
    /// Builds the step from its config; reads `keysFile`.
    pub fn new(config: ApiKeyConfig) -> Result<Self, Error> {
        let header = util::header_name(
            config.header_name.as_deref().unwrap_or(DEFAULT_HEADER),
            "headerName",
        )?;
        let mut entries: Vec<(String, KeyEntry)> = config
            .keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (format!("keys[{i}]"), k))
            .collect();
        if let Some(file) = &config.keys_file {
            let text = util::read_file(file, "keysFile")?;
            let list: Vec<KeyEntry> = serde_yaml_ng::from_str(&text).map_err(|e| {
                // The message may quote the file's content: keep only where.
                let at = e
                    .location()
                    .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                    .unwrap_or_default();
                Error::config(format!("not a list of {{key, metadata}} entries{at}")).at("keysFile")
            })?;
            entries.extend(
                list.into_iter()
                    .enumerate()
                    .map(|(i, k)| (format!("keysFile[{i}]"), k)),
            );
        }
        if entries.is_empty() {
            return Err(Error::config("no API keys: set `keys` or `keysFile`"));
        }
        let mut mapped = Vec::new();
        for (name, entry) in &config.headers_from_metadata_entry {
            let at = format!("headersFromMetadataEntry.{name}");
            mapped.push((util::header_name(name, &at)?, entry));
        }
        let prf = util::Prf::new();
        let mut by_prf = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut seen = std::collections::HashSet::new();
        let mut holders = Vec::with_capacity(entries.len());
        for (at, entry) in entries {
            if entry.key.is_empty() || entry.key.len() > util::MAX_CREDENTIAL_LEN {
                return Err(
                    Error::config("a key must have 1 to 8192 bytes").at(format!("{at}.key"))
                );
            }
            by_prf
                .entry(prf.hash64(entry.key.as_bytes()))
                .or_insert(holders.len());
            if !seen.insert(entry.key.clone()) {
                return Err(Error::config("the same key is listed twice").at(format!("{at}.key")));
            }
            let mut allow = Allow::new();
            for (header, source) in &mapped {
                match entry.metadata.get(&source.name) {
                    Some(v) => {
                        let value =
                            util::header_value(v, &format!("{at}.metadata.{}", source.name))?;
                        allow = allow.set_header(header.clone(), value);
                    }
                    None if source.required => {
                        return Err(Error::config(format!(
                            "missing metadata entry `{}`, required by headersFromMetadataEntry",
                            source.name
                        ))
                        .at(format!("{at}.metadata")));
                    }
                    None => {}
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
            holders.push(Holder {
                key: entry.key.as_bytes().into(),
                allow,
                state: Arc::new(Value::Object(metadata)),
            });
        }
        Ok(ApiKeyAuth {
            header,
            allow_bearer: config.allow_bearer,
            prf,
            by_prf,
            holders,
            identity_headers: mapped.into_iter().map(|(h, _)| h).collect(),
        })
    }

    /// The presented key's bytes: from the named header, else from
    /// `Authorization: Bearer`. `Err(())` for an unusable credential.
    fn presented<'a>(&self, request: &'a AuthorizationRequest) -> Result<Option<&'a [u8]>, ()> {
        if let Some(v) = request.headers.get(&self.header) {
            let v = v.as_bytes();
            if v.is_empty() || v.len() > util::MAX_CREDENTIAL_LEN {
                return Err(());
            }
            return Ok(Some(v));
        }
        if self.allow_bearer {
            return util::scheme_credential(request, &http::header::AUTHORIZATION, "Bearer ")
                .map(|k| k.map(str::as_bytes));
        }
        Ok(None)
    }

    /// The holder of `key`, found by PRF and confirmed in constant time.
    fn find(&self, key: &[u8]) -> Option<&Holder> {
        let holder = &self.holders[*self.by_prf.get(&self.prf.hash64(key))?];
        util::ct_eq(&holder.key, key).then_some(holder)
    }

    /// The answer for a request; also writes `state.apiKey` on a match.
    pub fn decide(&self, request: &mut AuthorizationRequest) -> Decision {
        let holder = match self.presented(request) {
            Ok(Some(key)) => self.find(key),
            Ok(None) | Err(()) => None,
        };
        let Some(holder) = holder else {
            return Decision::unauthenticated();
        };
        request.state.insert(STATE_KEY, holder.state.clone());
        Decision::Allow(holder.allow.clone())
    }
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
}
