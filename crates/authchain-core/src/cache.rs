//! The decision cache: a chain's answers remembered per request key.
//!
//! Like nginx `proxy_cache` in front of an auth server: the key is the
//! AuthConfig (each chain has its own cache, and a reload starts a new one)
//! plus an explicit list of request [attributes](Attribute); answers live
//! for a TTL, the cache holds at most `maxEntries` answers and about
//! `maxBytes` of them (each answer's headers and state), only allows are kept
//! unless `cacheDenies` is set, and concurrent misses for one key run the
//! chain once and share its answer (unless the answer is for its request
//! alone: then the key is a pass for a while, and each request runs the
//! chain).
//!
//! ```yaml
//! name: site
//! configs:
//! - name: token
//!   apiKeyAuth: { headerName: api-key, allowBearer: false, keys: [{ key: t0ken }] }
//! cache:
//!   key: [{ header: api-key }]
//!   ttl: 10m
//! ```
//!
//! # What protects you from a wrong key
//!
//! A cached answer is replayed for every request with the same key, so the
//! key must hold everything the steps decide on. The chain checks this when
//! it is built: every step says which attributes it reads
//! ([`AuthService::reads`](crate::AuthService::reads)), and an attribute
//! missing from the key is a config error naming the step and the
//! attribute. A step that does not say (a plugin of your own that keeps the
//! default, `opaAuth`, a passthrough to another server) makes the cache a
//! config error too, unless the cache sets `trustKey: true`: your statement
//! that the key decides the answer of the steps that do not say (what the
//! others say they read, the key must hold all the same). Time is not in
//! the key, but an allow
//! is never kept past the expiry its step gave it (a JWT's `exp`), whatever
//! the TTL.
//!
//! The key is a keyed 128-bit SipHash-2-4 of the attributes, with a
//! random key per cache: an entry's size does not grow with the
//! credentials, and a client, who cannot compute the hash, cannot craft a
//! request that collides with another client's entry.

use std::fmt;
use std::hash::Hasher as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use http::HeaderName;
use metrics::Counter;
use serde::Deserialize;
use serde_json::Value;
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::chain::Reuse;
use crate::config::ConfigDuration;
use crate::request::names_parameter;
use crate::{Allow, AuthorizationRequest, Chain, Decision, Deny, Error, HeaderMutation, State};

/// The TTL when a cache config sets none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The bound on entries when a cache config sets none.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// The bound on the bytes of the answers kept when a cache config sets
/// none: an answer holds its headers and state (an ID token, a token's
/// claims), and one client's distinct keys could fill the entries.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// A request attribute: what a cache key is made of, and what a step
/// declares that it reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Attribute {
    /// Every value of a request header (`{header: authorization}`).
    Header(#[serde(deserialize_with = "header_name")] HeaderName),
    /// One cookie of the `Cookie` headers (`{cookie: session}`).
    Cookie(String),
    /// One query parameter (`{query: token}`).
    Query(String),
    /// The method (`method`).
    Method,
    /// The host (`host`).
    Host,
    /// The path with its query (`path`).
    Path,
    /// The client as the steps see it, [`AuthorizationRequest::source`]:
    /// its IP address (not its port, which changes with each connection)
    /// and its TLS principal (`client`). For a policy on the client's
    /// address.
    Client,
}

impl Attribute {
    /// A header attribute.
    pub fn header(name: HeaderName) -> Self {
        Attribute::Header(name)
    }

    /// A cookie attribute.
    pub fn cookie(name: impl Into<String>) -> Self {
        Attribute::Cookie(name.into())
    }

    /// Whether a key that holds `self` also decides `read`.
    fn covers(&self, read: &Attribute) -> bool {
        match (self, read) {
            (Attribute::Header(h), Attribute::Cookie(_)) => h == http::header::COOKIE,
            (Attribute::Path, Attribute::Query(_)) => true,
            (a, b) => a == b,
        }
    }

    fn feed(&self, request: &AuthorizationRequest, hash: &mut SipHasher24) {
        match self {
            // The other spellings too, each with its name: a step that
            // reads a credential refuses a request with one.
            Attribute::Header(name) => {
                hash.write(&[1]);
                for value in request.headers.get_all(name) {
                    field(hash, Some(value.as_bytes()));
                }
                hash.write(&[0]);
                for (other, value) in request.other_spellings(name) {
                    field(hash, Some(other.as_str().as_bytes()));
                    field(hash, Some(value.as_bytes()));
                }
                hash.write(&[0]);
            }
            Attribute::Cookie(name) => {
                hash.write(&[3]);
                for (spelled, value) in request.cookies_spelled_like(name) {
                    field(hash, Some(spelled));
                    field(hash, Some(value));
                }
                hash.write(&[0]);
            }
            // Every occurrence of the parameter, in every spelling of its
            // name (`%74oken` is `token` to a step that decodes the query),
            // each as written: one that reads the raw query tells them
            // apart.
            Attribute::Query(name) => {
                hash.write(&[4]);
                for pair in request.query().unwrap_or_default().split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !names_parameter(key, name) {
                        continue;
                    }
                    field(hash, Some(key.as_bytes()));
                    field(hash, Some(value.as_bytes()));
                }
                hash.write(&[0]);
            }
            Attribute::Method => field(hash, Some(request.method.as_str().as_bytes())),
            Attribute::Host => field(hash, Some(request.host.as_bytes())),
            Attribute::Path => field(hash, Some(request.path.as_bytes())),
            Attribute::Client => {
                let ip = request.source.address.map(|a| a.ip().to_string());
                field(hash, ip.as_deref().map(str::as_bytes));
                field(hash, request.source.principal.as_deref().map(str::as_bytes));
            }
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Header(h) => write!(f, "header `{h}`"),
            Attribute::Cookie(c) => write!(f, "cookie `{c}`"),
            Attribute::Query(q) => write!(f, "query parameter `{q}`"),
            Attribute::Method => f.write_str("the method"),
            Attribute::Host => f.write_str("the host"),
            Attribute::Path => f.write_str("the path"),
            Attribute::Client => f.write_str("the client"),
        }
    }
}

fn header_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
    let name = String::deserialize(d)?;
    HeaderName::try_from(name.as_str())
        .map_err(|_| serde::de::Error::custom(format!("not a valid header name: `{name}`")))
}

/// One length-prefixed field, or an absence distinct from any value.
fn field(hash: &mut SipHasher24, value: Option<&[u8]>) {
    match value {
        None => hash.write(&[0]),
        Some(v) => {
            hash.write(&[2]);
            hash.write(&(v.len() as u64).to_le_bytes());
            hash.write(v);
        }
    }
}

/// How a chain caches its answers (the AuthConfig's `cache` block).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheSettings {
    /// The attributes that make the key; at least one.
    pub key: Vec<Attribute>,
    /// How long an answer is kept (default one minute).
    #[serde(default = "default_ttl")]
    pub ttl: ConfigDuration,
    /// The most answers kept (default 100 000).
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// About the most bytes of answers kept (default 64 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Keep denies too (default: only allows).
    #[serde(default)]
    pub cache_denies: bool,
    /// Cache though some step does not declare what it reads: you state
    /// that the key decides the answer.
    #[serde(default)]
    pub trust_key: bool,
}

fn default_ttl() -> ConfigDuration {
    ConfigDuration(DEFAULT_TTL)
}

fn default_max_entries() -> u64 {
    DEFAULT_MAX_ENTRIES
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

impl CacheSettings {
    /// Settings with `key`, and the defaults for the rest.
    pub fn new(key: Vec<Attribute>) -> Self {
        CacheSettings {
            key,
            ttl: default_ttl(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            cache_denies: false,
            trust_key: false,
        }
    }

    /// The TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ConfigDuration(ttl);
        self
    }

    /// The bound on entries.
    pub fn max_entries(mut self, max: u64) -> Self {
        self.max_entries = max;
        self
    }

    /// The bound on the bytes of the answers kept.
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = max;
        self
    }

    /// Keep denies too.
    pub fn cache_denies(mut self, yes: bool) -> Self {
        self.cache_denies = yes;
        self
    }

    /// Cache though some step does not declare what it reads (what the
    /// others declare, the key must still hold).
    pub fn trust_key(mut self, yes: bool) -> Self {
        self.trust_key = yes;
        self
    }

    /// Checks the settings against the steps' declared reads: `steps` are
    /// (name, reads) pairs in order.
    pub(crate) fn check<'a>(
        &self,
        steps: impl Iterator<Item = (&'a str, Option<Vec<Attribute>>)>,
    ) -> Result<(), Error> {
        let mut errors = Vec::new();
        if self.key.is_empty() {
            errors.push(Error::config("expected at least one attribute").at("cache.key"));
        }
        if self.ttl.0.is_zero() {
            errors.push(Error::config("expected a duration above zero").at("cache.ttl"));
        }
        if self.ttl.0 > crate::MAX_DURATION {
            errors.push(Error::config("at most 365 days").at("cache.ttl"));
        }
        if self.max_entries == 0 {
            errors.push(Error::config("expected a number above zero").at("cache.maxEntries"));
        }
        if self.max_bytes == 0 {
            errors.push(Error::config("expected a number above zero").at("cache.maxBytes"));
        }
        // `trustKey` vouches for the steps that declare nothing; what a
        // step declares, the key must hold all the same.
        for (step, reads) in steps {
            match reads {
                None if self.trust_key => {}
                None => errors.push(
                    Error::config(format!(
                        "step '{step}' does not declare which request attributes it reads, so a cached answer could be replayed for a request it would decide differently; set `trustKey: true` if the key decides its answer"
                    ))
                    .at("cache"),
                ),
                Some(reads) => {
                    for read in reads {
                        if !self.key.iter().any(|k| k.covers(&read)) {
                            errors.push(
                                Error::config(format!(
                                    "step '{step}' reads {read}, which the key does not hold: add it to the key"
                                ))
                                .at("cache.key"),
                            );
                        }
                    }
                }
            }
        }
        match Error::collect(errors) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A remembered answer: the decision and the state the chain left, until
/// it expires. Kept compact (about 90 bytes besides its headers): at
/// 100 000 keys every field counts.
#[derive(Debug)]
struct Cached {
    answer: Answer,
    state: Option<Box<State>>,
    expires: Instant,
    /// About how many bytes it holds, which the cache's weight counts.
    bytes: u64,
}

/// An entry's weight: its bytes, and at least the bytes bound's share of
/// one of the most entries, so that the one bound holds both.
#[derive(Debug, Clone)]
struct Weight {
    least: u64,
}

impl quick_cache::Weighter<u128, Entry> for Weight {
    fn weight(&self, _: &u128, entry: &Entry) -> u64 {
        match entry {
            Entry::Answer(cached) => cached.bytes.max(self.least),
            Entry::Pass(_) => self.least,
        }
    }
}

/// The longest a key is a pass ([`Entry::Pass`]): one request's answer
/// for itself alone may hang on what it sent, and a broad key would run
/// the chain for every request of the TTL.
const MAX_PASS: Duration = Duration::from_secs(30);

/// What the cache holds for a key.
#[derive(Debug, Clone)]
enum Entry {
    Answer(Arc<Cached>),
    /// Until then, the chain runs for every request with the key, as
    /// nginx's "hit for pass": its last answer was for its request alone
    /// (and, at once, for the requests waiting on that run).
    Pass(Instant),
}

/// About how many bytes `value` holds.
fn json_bytes(value: &Value) -> u64 {
    match value {
        Value::String(s) => NODE + s.len() as u64,
        Value::Array(a) => NODE + a.iter().map(json_bytes).sum::<u64>(),
        Value::Object(o) => object_bytes(o),
        _ => NODE,
    }
}

/// About how many bytes `object` holds.
fn object_bytes(object: &serde_json::Map<String, Value>) -> u64 {
    let members = object
        .iter()
        .map(|(k, v)| NODE + k.len() as u64 + json_bytes(v));
    NODE + members.sum::<u64>()
}

/// What a JSON value or a map's member holds besides its text.
const NODE: u64 = 32;

/// About how many bytes `headers` hold.
fn header_bytes<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> u64 {
    headers.map(|(n, v)| 48 + (n.len() + v.len()) as u64).sum()
}

/// Whether `decision` is for one client alone: it sets a cookie (a login's
/// state, a session), which no other request may be given, or it is a deny
/// that says no cache may keep it (`Cache-Control: no-store` or `private`,
/// as every `oauth2` login answer does: it may hang on what the key leaves
/// out). An allow's `Cache-Control` is for the browser.
fn for_one_client(decision: &Decision) -> bool {
    let no_store = |value: &http::HeaderValue| {
        value.to_str().is_ok_and(|v| {
            v.split(',').any(|d| {
                let d = d.trim();
                d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private")
            })
        })
    };
    match decision {
        Decision::Allow(allow) => allow
            .response_headers
            .iter()
            .any(|m| m.name == http::header::SET_COOKIE),
        Decision::Deny(deny) => {
            deny.headers.contains_key(http::header::SET_COOKIE)
                || deny
                    .headers
                    .get_all(http::header::CACHE_CONTROL)
                    .iter()
                    .any(no_store)
        }
    }
}

#[derive(Debug)]
enum Answer {
    Allow {
        headers: Box<[HeaderMutation]>,
        /// Shared with the entries before that listed the same.
        headers_to_remove: Arc<[HeaderName]>,
        /// The rest of the allow, when it has any.
        rest: Option<Box<Allow>>,
    },
    Deny(Box<Deny>),
}

impl Cached {
    /// The entry of `decision` and `state`; its removals are `last`'s
    /// when they are the same, else they become `last`.
    fn new(
        decision: &Decision,
        state: &State,
        expires: Instant,
        last: &Mutex<Arc<[HeaderName]>>,
    ) -> Self {
        let (answer, answer_bytes) = match decision {
            Decision::Allow(allow) => {
                let mutations = allow.headers.iter().chain(&allow.response_headers);
                let query = allow.query_parameters_to_set.iter();
                let bytes = header_bytes(mutations.map(|m| (m.name.as_str(), m.value.as_bytes())))
                    + header_bytes(query.map(|(k, v)| (k.as_str(), v.as_bytes())))
                    + 32 * (allow.headers_to_remove.len() + allow.query_parameters_to_remove.len())
                        as u64
                    + object_bytes(&allow.dynamic_metadata);
                let mut rest = allow.clone();
                let headers = std::mem::take(&mut rest.headers).into_boxed_slice();
                let listed = std::mem::take(&mut rest.headers_to_remove);
                let headers_to_remove = {
                    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                    if **last != *listed {
                        *last = listed.into();
                    }
                    last.clone()
                };
                let answer = Answer::Allow {
                    headers,
                    headers_to_remove,
                    rest: (rest != Allow::default()).then(|| Box::new(rest)),
                };
                (answer, bytes)
            }
            Decision::Deny(deny) => {
                let headers = deny.headers.iter();
                let bytes = header_bytes(headers.map(|(n, v)| (n.as_str(), v.as_bytes())))
                    + deny.body.len() as u64;
                (Answer::Deny(Box::new(deny.clone())), bytes)
            }
        };
        let state_bytes: u64 = state
            .iter()
            .map(|(name, value)| name.len() as u64 + json_bytes(value))
            .sum();
        Cached {
            answer,
            state: (!state.is_empty()).then(|| Box::new(state.clone())),
            expires,
            bytes: 128 + answer_bytes + state_bytes,
        }
    }

    fn decision(&self) -> Decision {
        match &self.answer {
            Answer::Allow {
                headers,
                headers_to_remove,
                rest,
            } => {
                let mut allow = rest.as_deref().cloned().unwrap_or_default();
                allow.headers = headers.to_vec();
                allow.headers_to_remove = headers_to_remove.to_vec();
                Decision::Allow(allow)
            }
            Answer::Deny(deny) => Decision::Deny(Deny::clone(deny)),
        }
    }
}

/// A random 128-bit key: two outputs of the standard library's randomly
/// keyed SipHash (seeded from the operating system), which no client sees.
fn random_key() -> (u64, u64) {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    (state.hash_one(0u8), state.hash_one(1u8))
}

/// A chain's cache: quick_cache, with the TTL checked on read.
pub(crate) struct DecisionCache {
    key: Vec<Attribute>,
    ttl: Duration,
    cache_denies: bool,
    entries: quick_cache::sync::Cache<u128, Entry, Weight>,
    /// The secret key of the key hash.
    secret: (u64, u64),
    /// The removals of the last allow kept: most of a chain's allows list
    /// the same (the other spellings of the headers it sets), which each
    /// entry would otherwise hold a copy of.
    removals: Mutex<Arc<[HeaderName]>>,
    hits: Counter,
    misses: Counter,
    passes: Counter,
}

impl fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionCache")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl DecisionCache {
    pub(crate) fn new(config: &str, settings: CacheSettings) -> Self {
        let counter = |result: &'static str| {
            metrics::counter!(
                "authchain_cache_lookups_total",
                "config" => config.to_owned(),
                "result" => result
            )
        };
        let least = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        let most = settings.max_entries.min(settings.max_bytes / least);
        let estimated = usize::try_from(most).unwrap_or(usize::MAX);
        DecisionCache {
            entries: quick_cache::sync::Cache::with_weighter(
                estimated,
                settings.max_bytes,
                Weight { least },
            ),
            secret: random_key(),
            removals: Mutex::new(Arc::new([])),
            ttl: settings.ttl.0,
            cache_denies: settings.cache_denies,
            key: settings.key,
            hits: counter("hit"),
            misses: counter("miss"),
            passes: counter("pass"),
        }
    }

    /// Whether the key holds header `name`'s values.
    pub(crate) fn holds_header(&self, name: &HeaderName) -> bool {
        self.key
            .iter()
            .any(|k| matches!(k, Attribute::Header(h) if h == name))
    }

    fn key_of(&self, request: &AuthorizationRequest) -> u128 {
        let mut hash = SipHasher24::new_with_keys(self.secret.0, self.secret.1);
        for attribute in &self.key {
            attribute.feed(request, &mut hash);
        }
        hash.finish128().into()
    }

    /// The number of entries, expired ones not yet evicted included.
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The answer for `request`: remembered, or the chain's, run once for
    /// every concurrent request with its key. With `replay`, a remembered
    /// answer is replayed on the request as the chain would have left it.
    pub(crate) async fn authorize(
        &self,
        chain: &Chain,
        request: &mut AuthorizationRequest,
    ) -> Decision {
        let key = self.key_of(request);
        let answer_by = crate::transport::AnswerBy::of(request);
        let cached = loop {
            let entry = self.entries.get_value_or_guard_async(&key);
            // A miss that waits on another request's run waits no longer
            // than its caller does.
            let entry = match answer_by {
                None => entry.await,
                Some(by) => match tokio::time::timeout_at(by, entry).await {
                    Ok(entry) => entry,
                    Err(_) => {
                        tracing::debug!(config = %chain.name(), "the caller's deadline passed while waiting on the same key's run; denying");
                        return crate::Deny::new(chain.status_on_error()).into();
                    }
                },
            };
            match entry {
                Ok(Entry::Pass(until)) => {
                    let now = Instant::now();
                    if until <= now {
                        self.entries
                            .remove_if(&key, |e| matches!(e, Entry::Pass(u) if *u <= now));
                    }
                    self.passes.increment(1);
                    return Box::pin(chain.authorize_uncached(request, false)).await.0;
                }
                Ok(Entry::Answer(cached)) if cached.expires > Instant::now() => break cached,
                Ok(Entry::Answer(_)) => {
                    let now = Instant::now();
                    self.entries
                        .remove_if(&key, |e| matches!(e, Entry::Answer(c) if c.expires <= now));
                }
                Err(guard) => {
                    // The concurrent misses for this key wait on the guard
                    // and get what it is filled with.
                    // Boxed: a miss runs the whole chain anyway, and the
                    // hit path's future stays small.
                    let (decision, reuse) =
                        Box::pin(chain.authorize_uncached(request, false)).await;
                    self.misses.increment(1);
                    // A run that failed as its own caller stopped waiting
                    // says nothing to the waiters, whose callers may wait
                    // longer: the key goes to one of them, which runs for
                    // the rest (quick_cache hands an unfilled guard on).
                    let out_of_time =
                        reuse == Reuse::Share && answer_by.is_some_and(|by| Instant::now() >= by);
                    if out_of_time {
                        drop(guard);
                        return decision;
                    }
                    // For its request alone: the waiters run the chain
                    // themselves, and so does every request with the key
                    // for a while (the TTL, at most `MAX_PASS`), when the
                    // chain's answers depend on what the key leaves out.
                    if reuse == Reuse::Alone {
                        let pass = self.ttl.min(MAX_PASS);
                        let _ = guard.insert(Entry::Pass(Instant::now() + pass));
                        return decision;
                    }
                    if for_one_client(&decision) {
                        let _ = guard.insert(Entry::Pass(Instant::now()));
                        self.entries.remove(&key);
                        return decision;
                    }
                    let keep =
                        reuse == Reuse::Remember && (self.cache_denies || decision.is_allow());
                    let now = Instant::now();
                    let mut expires = now + self.ttl;
                    // Never past the credential's own expiry.
                    if let Some(at) = decision.as_allow().and_then(|a| a.expires) {
                        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                        if let Some(at) = now.checked_add(left) {
                            expires = expires.min(at);
                        }
                    }
                    let cached = Arc::new(Cached::new(
                        &decision,
                        &request.state,
                        expires,
                        &self.removals,
                    ));
                    let _ = guard.insert(Entry::Answer(cached));
                    if !keep {
                        // Shared with the waiters, then forgotten.
                        self.entries.remove(&key);
                    }
                    return decision;
                }
            }
        };
        self.hits.increment(1);
        match &cached.state {
            Some(state) => request.state.clone_from(state),
            None => request.state.clear(),
        }
        let decision = cached.decision();
        if let Decision::Allow(allow) = &decision {
            allow.apply_to_headers(&mut request.headers);
            for key in &allow.query_parameters_to_remove {
                request.remove_query_parameter(key);
            }
            for (key, value) in &allow.query_parameters_to_set {
                request.set_query_parameter(key, value);
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> AuthorizationRequest {
        let mut r = AuthorizationRequest::new(http::Method::GET, "/a?x=1");
        for (k, v) in headers {
            r.headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        r
    }

    #[test]
    fn a_remembered_answer_loses_nothing() {
        let name = |s: &'static str| HeaderName::from_static(s);
        let value = |s: &'static str| http::HeaderValue::from_static(s);
        let full = Allow::new()
            .set_header(name("x-a"), value("1"))
            .append_header(name("x-b"), value("2"))
            .remove_header(name("x-c"))
            .response_header(name("x-d"), value("3"))
            .set_query_parameter("q", "v")
            .remove_query_parameter("r")
            .metadata("m", serde_json::json!(1))
            .user(crate::UserInfo::new("alice"));
        let mut state = State::new();
        state.insert("s", serde_json::json!({"t": 1}));
        let now = Instant::now();
        let last = Mutex::new(Arc::from([]));
        for decision in [
            Decision::Allow(full),
            Decision::Allow(Allow::new().set_header(name("x-a"), value("1"))),
            Decision::Allow(Allow::new()),
            Decision::unauthenticated(),
        ] {
            let cached = Cached::new(&decision, &state, now, &last);
            assert_eq!(cached.decision(), decision);
            assert_eq!(cached.state.as_deref(), Some(&state));
        }
        assert!(
            Cached::new(&Decision::unauthorized(), &State::new(), now, &last)
                .state
                .is_none()
        );
    }

    /// Entries whose allows list the same removals hold one copy of them.
    #[test]
    fn entries_share_a_removal_list() {
        let name = |s: &'static str| HeaderName::from_static(s);
        let allow = |value: &'static str, removed: &[&'static str]| {
            let mut allow =
                Allow::new().set_header(name("x-user"), http::HeaderValue::from_static(value));
            for r in removed {
                allow = allow.remove_header(name(r));
            }
            Decision::Allow(allow)
        };
        let removals = |cached: &Cached| match &cached.answer {
            Answer::Allow {
                headers_to_remove, ..
            } => headers_to_remove.clone(),
            Answer::Deny(_) => unreachable!(),
        };
        let (now, state, last) = (Instant::now(), State::new(), Mutex::new(Arc::from([])));
        let a = Cached::new(&allow("a", &["x_user", "x.user"]), &state, now, &last);
        let b = Cached::new(&allow("b", &["x_user", "x.user"]), &state, now, &last);
        let c = Cached::new(&allow("c", &["x_user"]), &state, now, &last);
        assert!(Arc::ptr_eq(&removals(&a), &removals(&b)));
        assert_eq!(*removals(&c), [name("x_user")]);
        for (cached, value) in [(&a, "a"), (&b, "b")] {
            assert_eq!(cached.decision(), allow(value, &["x_user", "x.user"]));
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let r = request(&[
            ("cookie", "a=1; session = s1 ;b=2"),
            ("cookie", "c=3; session=s2"),
        ]);
        let all = |name| r.cookies(name).collect::<Vec<_>>();
        assert_eq!(all("session"), [&b"s1"[..], &b"s2"[..]]);
        assert_eq!(all("c"), [&b"3"[..]]);
        assert!(all("sess").is_empty());
        assert!(all("d").is_empty());
        // Only spaces and tabs are trimmed: a name that a Unicode trim
        // would make `session` is another cookie, for the key and the
        // steps alike.
        let r = request(&[("cookie", "\u{a0}session=x; session\u{3000}=y;\tsession\t=z")]);
        assert_eq!(r.cookies("session").collect::<Vec<_>>(), [&b"z"[..]]);
    }

    #[test]
    fn keys_separate_absence_values_and_boundaries() {
        let cache = DecisionCache::new(
            "t",
            CacheSettings::new(vec![
                Attribute::Cookie("session".into()),
                Attribute::Header(http::header::AUTHORIZATION),
            ]),
        );
        let k = |h: &[(&str, &str)]| cache.key_of(&request(h));
        let none = k(&[]);
        let empty_cookie = k(&[("cookie", "session=")]);
        let a = k(&[("authorization", "Bearer a")]);
        let a_again = k(&[("authorization", "Bearer a"), ("x-other", "1")]);
        let b = k(&[("authorization", "Bearer b")]);
        let both = k(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_ne!(none, empty_cookie);
        // A second cookie of the name is in the key: a step may read it.
        assert_ne!(
            k(&[("cookie", "session=a"), ("cookie", "session=b")]),
            k(&[("cookie", "session=a"), ("cookie", "session=c")])
        );
        assert_ne!(a, b);
        assert_eq!(a, a_again);
        assert_ne!(a, both);
        assert_ne!(both, k(&[("authorization", "Bearer aBearer b")]));
    }

    /// The client is keyed by its address without the port, and its
    /// principal.
    #[test]
    fn client_keys_read_the_address_and_the_principal() {
        let cache = DecisionCache::new("t", CacheSettings::new(vec![Attribute::Client]));
        let k = |address: Option<&str>, principal: Option<&str>| {
            let mut r = request(&[]);
            r.source.address = address.map(|a| a.parse().unwrap());
            r.source.principal = principal.map(str::to_owned);
            cache.key_of(&r)
        };
        let a = k(Some("10.0.0.1:1234"), None);
        assert_eq!(a, k(Some("10.0.0.1:5678"), None));
        assert_ne!(a, k(Some("10.0.0.2:1234"), None));
        assert_ne!(a, k(None, None));
        assert_ne!(a, k(Some("10.0.0.1:1234"), Some("spiffe://a")));
        assert_ne!(k(None, Some("spiffe://a")), k(None, None));
    }

    /// A header or a cookie is keyed with its other spellings, which a
    /// credential step refuses (a CGI-style app reads them as one): a
    /// cached allow is never replayed for a request that adds one.
    #[test]
    fn header_and_cookie_keys_hold_the_other_spellings() {
        let cache = DecisionCache::new(
            "t",
            CacheSettings::new(vec![
                Attribute::Header(HeaderName::from_static("x-api-key")),
                Attribute::Cookie("access_token".into()),
            ]),
        );
        let k = |h: &[(&str, &str)]| cache.key_of(&request(h));
        let key = k(&[("x-api-key", "k"), ("cookie", "access_token=t")]);
        for (case, other) in [
            ("x_api_key", ("x_api_key", "forged")),
            ("x.api.key", ("x.api.key", "forged")),
            ("access.token", ("cookie", "access.token=forged")),
            ("access%5Ftoken", ("cookie", "access%5Ftoken=forged")),
            ("a comma", ("cookie", "a=1,access_token=forged")),
        ] {
            let with = k(&[("x-api-key", "k"), ("cookie", "access_token=t"), other]);
            assert_ne!(key, with, "{case}");
        }
        let unrelated = k(&[
            ("x-api-key", "k"),
            ("cookie", "access_token=t; b=1"),
            ("x-apikey", "1"),
        ]);
        assert_eq!(key, unrelated);
        // Which spelling carries a value is in the key.
        assert_ne!(
            k(&[("x-api-key", "k"), ("x_api_key", "k")]),
            k(&[("x-api-key", "k"), ("x.api.key", "k")])
        );
    }

    /// A query parameter is keyed by every value it has, in every
    /// spelling of its name, as a step that decodes the query reads it.
    #[test]
    fn query_keys_read_every_value_of_every_spelling() {
        let cache = DecisionCache::new(
            "t",
            CacheSettings::new(vec![Attribute::Query("token".into())]),
        );
        let k = |path: &str| cache.key_of(&AuthorizationRequest::new(http::Method::GET, path));
        assert_ne!(k("/?%74oken=a"), k("/"));
        assert_ne!(k("/?token=a&token=b"), k("/?token=a&token=c"));
        assert_ne!(k("/?token=a&to%6Ben=b"), k("/?token=a"));
        assert_ne!(k("/?token="), k("/"));
        assert_eq!(k("/?token=a&x=1"), k("/?x=2&token=a"));
        // As written: a step reading the raw query tells these apart.
        assert_ne!(k("/?%74oken=a"), k("/?token=a"));
        assert_ne!(k("/?token=%FF"), k("/?token=%80"));
        assert_ne!(k("/?token=a+b"), k("/?token=a%20b"));
    }

    #[test]
    fn coverage_names_the_step_and_the_attribute() {
        let settings = CacheSettings::new(vec![Attribute::Cookie("session".into())]);
        let e = settings
            .check(
                [(
                    "keys",
                    Some(vec![Attribute::Header(http::header::AUTHORIZATION)]),
                )]
                .into_iter(),
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("step 'keys' reads header `authorization`"),
            "{e}"
        );
        let e = settings.check([("mine", None)].into_iter()).unwrap_err();
        assert!(e.to_string().contains("trustKey"), "{e}");
        assert!(
            settings
                .clone()
                .trust_key(true)
                .check([("mine", None)].into_iter())
                .is_ok()
        );
        // trustKey vouches for a step that declares nothing, never for
        // one whose declared reads the key lacks (a `rules` step beside a
        // `jwt` one: a GET's allow replayed for a POST).
        let e = settings
            .clone()
            .trust_key(true)
            .check([("token", None), ("paths", Some(vec![Attribute::Method]))].into_iter())
            .unwrap_err();
        assert!(
            e.to_string().contains("step 'paths' reads the method"),
            "{e}"
        );
        let whole_cookie = CacheSettings::new(vec![Attribute::Header(http::header::COOKIE)]);
        assert!(
            whole_cookie
                .check([("c", Some(vec![Attribute::Cookie("session".into())]))].into_iter())
                .is_ok()
        );
    }

    #[test]
    fn attributes_read_from_yaml() {
        // Documents are read into JSON values first, as AuthConfig::parse does.
        let value: serde_json::Value = serde_yaml_ng::from_str(
            "key: [{cookie: session}, {header: Authorization}, method, path, client]\nttl: 10m\n",
        )
        .unwrap();
        let settings: CacheSettings = serde_json::from_value(value).unwrap();
        assert_eq!(
            settings.key,
            vec![
                Attribute::Cookie("session".into()),
                Attribute::Header(http::header::AUTHORIZATION),
                Attribute::Method,
                Attribute::Path,
                Attribute::Client,
            ]
        );
        assert_eq!(settings.ttl.0, Duration::from_secs(600));
        assert!(!settings.cache_denies);
    }
}
