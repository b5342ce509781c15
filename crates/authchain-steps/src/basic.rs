//! `basicAuth`: HTTP Basic authentication against htpasswd users.
//!
//! ```yaml
//! basicAuth:
//!   realm: ratings                 # in `WWW-Authenticate: Basic realm="ratings"` (default `authchain`)
//!   htpasswd: |                    # htpasswd lines, inline
//!     alice:$2y$05$...             # bcrypt ($2y$, $2b$, $2a$)
//!     bob:$6$rounds=5000$...       # SHA-512-crypt ($6$) or SHA-256-crypt ($5$)
//!     carol:$apr1$TYu6jVnr$...     # APR1-MD5, as `htpasswd -m` and Gloo write
//!   htpasswdFile: /etc/authchain/htpasswd   # more users, same format
//!   apr:                           # Gloo's shape, accepted as it is
//!     users:
//!       user: { salt: TYu6jVnr, hashedPassword: wEVL6KLf9B4wQ3ZIXZZhB/ }
//!   # or Gloo's extended shape (not beside `apr`):
//!   # encryption: { sha1: {} }     # or { apr: {} }
//!   # userList:
//!   #   users:
//!   #     user: { salt: TYiryv0/, hashedPassword: 010eb058a59f4ac5ba05639b0263cf91b4345fd6 }
//!   userIdHeader: x-user-id        # optional: the user name to this upstream header
//!   cache: { maxEntries: 10000, ttl: 5m }   # verified credentials (the defaults)
//! ```
//!
//! In the extended shape, `sha1` hashes are Gloo's: the hex SHA-1 of the
//! password followed by the salt (case-insensitive; SHA-1 is weak, for
//! migrations only), and the credential may come in `Proxy-Authorization`
//! when `Authorization` has none, as Gloo reads it.
//!
//! A missing, malformed or wrong credential is a 401 with
//! `WWW-Authenticate: Basic realm="..."`. A verified user goes into
//! `UserInfo`, into `state.basicAuth.user`, and into `userIdHeader` if set
//! (declared as an identity header, so client copies are stripped).
//!
//! Password hashes are slow on purpose (bcrypt most of all), so verified
//! credentials are cached: the cache key is a keyed PRF (SipHash with a
//! random per-instance key, 128 bits) of the user and the password, never
//! the password itself nor an unkeyed hash of it. Only successes are cached; a miss is verified on Tokio's
//! blocking pool so it does not stall the request loop, with at most
//! twice as many verifications at once as there are cores; a check that
//! finds them all busy for half the step's time is denied as overloaded.
//! An unknown user is verified against another user's hash and denied,
//! so the time taken does not tell which users exist; any client reaches
//! any line's hash so, and a hash that costs more than a second or so
//! (bcrypt cost above 14, SHA-crypt above 1,000,000 rounds) is a config
//! error; a password longer than such a hash allows (SHA-crypt's work is
//! its rounds times the password's length: 64 bytes at 1,000,000 rounds)
//! is refused unverified.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use authchain_core::{
    Allow, Answer, Attribute, AuthService, AuthorizationRequest, BuildContext, ConfigDuration,
    Decision, Error, ExtAuthPlugin, UserInfo, async_trait,
};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use crate::util::{self, BasicCredential};

/// The step kind this module registers.
pub const KIND: &str = "basicAuth";

/// The key under which the step writes the user into `state`.
pub const STATE_KEY: &str = "basicAuth";

/// The `basicAuth` block.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicConfig {
    /// The realm (`authchain`).
    #[serde(default)]
    pub realm: Option<String>,
    /// htpasswd lines.
    #[serde(default)]
    pub htpasswd: Option<String>,
    /// A file of htpasswd lines.
    #[serde(default)]
    pub htpasswd_file: Option<String>,
    /// Gloo's `apr` block.
    #[serde(default)]
    pub apr: Option<AprConfig>,
    /// Gloo's extended shape: the hashing of `userList`.
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
    /// Gloo's extended shape: the users.
    #[serde(default)]
    pub user_list: Option<AprConfig>,
    /// The upstream header that gets the user name.
    #[serde(default)]
    pub user_id_header: Option<String>,
    /// The verification cache.
    #[serde(default)]
    pub cache: CacheConfig,
}

impl std::fmt::Debug for BasicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Password hashes are not printed: they can be attacked offline.
        f.debug_struct("BasicConfig")
            .field("realm", &self.realm)
            .field("htpasswd", &self.htpasswd.as_ref().map(|_| "<redacted>"))
            .field("htpasswd_file", &self.htpasswd_file)
            .field("apr_users", &self.apr.as_ref().map(|a| a.users.len()))
            .field("encryption", &self.encryption)
            .field("user_list", &self.user_list.as_ref().map(|a| a.users.len()))
            .field("user_id_header", &self.user_id_header)
            .field("cache", &self.cache)
            .finish()
    }
}

/// Gloo's `basicAuth.apr`, and its `userList`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AprConfig {
    /// User name → salt and hash.
    pub users: std::collections::BTreeMap<String, AprUser>,
}

/// Gloo's `basicAuth.encryption`: exactly one of its algorithms.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Apache's iterated MD5 (`apr: {}`).
    #[serde(default)]
    pub apr: Option<serde_json::Map<String, serde_json::Value>>,
    /// Salted SHA-1 (`sha1: {}`).
    #[serde(default)]
    pub sha1: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One user of Gloo's `apr.users` or `userList.users`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AprUser {
    /// The APR1 salt.
    pub salt: String,
    /// The APR1 hash, without `$apr1$salt$`.
    pub hashed_password: String,
}

impl std::fmt::Debug for AprUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AprUser").finish_non_exhaustive()
    }
}

/// The verification cache's bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// How many verified credentials to keep (10000; 0 turns the cache off).
    #[serde(default = "default_entries")]
    pub max_entries: u64,
    /// How long one is trusted (5m).
    #[serde(default = "default_ttl")]
    pub ttl: ConfigDuration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: default_entries(),
            ttl: default_ttl(),
        }
    }
}

fn default_entries() -> u64 {
    10_000
}

fn default_ttl() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(300))
}

/// The plugin for step kind `basicAuth`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BasicPlugin;

impl ExtAuthPlugin for BasicPlugin {
    type Config = BasicConfig;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: BasicConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        Ok(Arc::new(BasicAuth::read(config, context)?))
    }
}

/// A stored password hash, checked at build time.
#[derive(Debug, Clone)]
enum Hash {
    Bcrypt(String),
    ShaCrypt {
        hash: String,
        rounds: u64,
    },
    Apr1 {
        salt: String,
        hash: String,
    },
    /// Gloo's: SHA-1 of the password, then the salt.
    Sha1 {
        salt: String,
        digest: [u8; 20],
    },
}

impl Hash {
    fn parse(hash: &str) -> Result<Hash, String> {
        if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            let parts = hash
                .parse::<bcrypt::HashParts>()
                .map_err(|_| "malformed bcrypt hash".to_owned())?;
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err(format!(
                    "bcrypt cost {} is above {MAX_BCRYPT_COST}: {SLOW}",
                    parts.get_cost()
                ));
            }
            return Ok(Hash::Bcrypt(hash.to_owned()));
        }
        if let Some(rest) = hash
            .strip_prefix("$5$")
            .or_else(|| hash.strip_prefix("$6$"))
        {
            sha_crypt::PasswordHashRef::new(hash)
                .map_err(|_| "malformed SHA-crypt hash".to_owned())?;
            let rounds = rest
                .strip_prefix("rounds=")
                .and_then(|r| r.split('$').next())
                .map_or(SHA_CRYPT_DEFAULT_ROUNDS, |r| r.parse().unwrap_or(u64::MAX));
            if rounds > MAX_SHA_CRYPT_ROUNDS {
                return Err(format!(
                    "SHA-crypt rounds={rounds} is above {MAX_SHA_CRYPT_ROUNDS}: {SLOW}"
                ));
            }
            return Ok(Hash::ShaCrypt {
                hash: hash.to_owned(),
                rounds,
            });
        }
        if let Some(rest) = hash.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or_else(|| "malformed APR1 hash".to_owned())?;
            return Hash::apr1(salt, hash);
        }
        Err("unsupported hash scheme (expected $2y$, $2b$, $5$, $6$ or $apr1$)".to_owned())
    }

    fn apr1(salt: &str, hash: &str) -> Result<Hash, String> {
        let good = |s: &str| s.bytes().all(|b| ITOA64.contains(&b));
        if salt.is_empty() || salt.len() > 8 || !good(salt) || hash.len() != 22 || !good(hash) {
            return Err("malformed APR1 salt or hash".to_owned());
        }
        Ok(Hash::Apr1 {
            salt: salt.to_owned(),
            hash: hash.to_owned(),
        })
    }

    fn sha1(salt: &str, hex: &str) -> Result<Hash, String> {
        let malformed = || "malformed SHA-1 hash: expected 40 hexadecimal digits".to_owned();
        if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let mut digest = [0u8; 20];
        for (i, byte) in digest.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(malformed)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| malformed())?;
        }
        Ok(Hash::Sha1 {
            salt: salt.to_owned(),
            digest,
        })
    }

    /// Whether verifying `password` would cost more than the costliest
    /// hash does with a password of 64 bytes: SHA-crypt's work grows with
    /// its rounds times the password's length.
    fn too_costly_for(&self, password: &[u8]) -> bool {
        match self {
            Hash::ShaCrypt { rounds, .. } => {
                let work = rounds.saturating_mul(password.len().max(64) as u64);
                work > MAX_SHA_CRYPT_ROUNDS * 64
            }
            _ => false,
        }
    }

    /// Whether `password` matches. Slow by design; run off the event loop.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::ShaCrypt { hash: h, .. } => {
                use sha_crypt::PasswordVerifier;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, h.as_str())
                    .is_ok()
            }
            Hash::Apr1 { salt, hash } => {
                let computed = apr1_crypt(password, salt.as_bytes());
                util::ct_eq(computed.as_bytes(), hash.as_bytes())
            }
            Hash::Sha1 { salt, digest } => {
                use sha1::{Digest as _, Sha1};
                let mut sha = Sha1::new();
                sha.update(password);
                sha.update(salt.as_bytes());
                util::ct_eq(&sha.finalize(), digest)
            }
        }
    }
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// APR1-MD5 (Apache's variant of md5-crypt): the 22-character hash part.
fn apr1_crypt(password: &[u8], salt: &[u8]) -> String {
    use md5::{Digest as _, Md5};
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];

    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = [0u8; 16];
    fin.copy_from_slice(&ctx.finalize());

    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin.copy_from_slice(&c.finalize());
    }

    let mut out = String::with_capacity(22);
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    to64((b(0) << 16) | (b(6) << 8) | b(12), 4);
    to64((b(1) << 16) | (b(7) << 8) | b(13), 4);
    to64((b(2) << 16) | (b(8) << 8) | b(14), 4);
    to64((b(3) << 16) | (b(9) << 8) | b(15), 4);
    to64((b(4) << 16) | (b(10) << 8) | b(5), 4);
    to64(b(11), 2);
    out
}

/// The `basicAuth` step.
pub struct BasicAuth {
    users: HashMap<String, Arc<Hash>>,
    /// What an unknown user's password is verified against, so that the
    /// time taken does not tell which users exist: the users' own hashes,
    /// one drawn for each name by a keyed PRF, so that unknown names meet
    /// each scheme in use (bcrypt is slow, APR1 fast) as often as real
    /// users do, and the same name always meets the same one.
    decoys: Vec<Arc<Hash>>,
    challenge: HeaderValue,
    user_id_header: Option<HeaderName>,
    /// Gloo's extended shape also reads `Proxy-Authorization`.
    proxy_authorization: bool,
    /// The verified credentials kept, and for how long.
    cache: Option<(util::Kept<Arc<str>>, Duration)>,
    prf: util::Prf,
    /// Bounds the hash verifications running at once, so that a flood of
    /// wrong passwords queues instead of filling the blocking pool.
    verifying: Arc<tokio::sync::Semaphore>,
    /// How long a request waits for a place among them
    /// ([`BuildContext::wait_limit`]): then it is denied, overloaded.
    queue_wait: Option<Duration>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .field("challenge", &self.challenge)
            .field("user_id_header", &self.user_id_header)
            .field("cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// Builds the step from its config; reads `htpasswdFile`.
    pub fn new(config: BasicConfig) -> Result<Self, Error> {
        Self::read(config, &BuildContext::new("", "", ""))
    }

    /// [`new`](Self::new), reading `htpasswdFile` through `context`.
    fn read(config: BasicConfig, context: &BuildContext<'_>) -> Result<Self, Error> {
        let mut users = HashMap::new();
        let mut add = |text: &str, place: &str| -> Result<(), Error> {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let fail = |m: &str| Error::config(format!("line {}: {m}", n + 1)).at(place);
                let (user, hash) = line
                    .split_once(':')
                    .ok_or_else(|| fail("expected `user:hash`"))?;
                if user.is_empty() {
                    return Err(fail("empty user name"));
                }
                let hash = Hash::parse(hash).map_err(|m| fail(&m))?;
                if users.insert(user.to_owned(), Arc::new(hash)).is_some() {
                    return Err(fail("the same user is listed twice"));
                }
            }
            Ok(())
        };
        if let Some(text) = &config.htpasswd {
            add(text, "htpasswd")?;
        }
        if let Some(file) = &config.htpasswd_file {
            let text = context
                .read_to_string(file)
                .map_err(|e| e.at("htpasswdFile"))?;
            add(&text, "htpasswdFile")?;
        }
        let apr_given = config.apr.is_some();
        if let Some(apr) = config.apr {
            for (user, entry) in apr.users {
                let at = format!("apr.users.{user}");
                let hash = Hash::apr1(&entry.salt, &entry.hashed_password)
                    .map_err(|m| Error::config(m).at(&at))?;
                if users.insert(user, Arc::new(hash)).is_some() {
                    return Err(Error::config("the same user is listed twice").at(at));
                }
            }
        }
        let extended = match (config.encryption, config.user_list) {
            (None, None) => false,
            (Some(_), None) => return Err(Error::config("`encryption` needs a `userList`")),
            (None, Some(_)) => return Err(Error::config("`userList` needs an `encryption`")),
            (Some(_), Some(_)) if apr_given => {
                return Err(Error::config(
                    "`apr` excludes `encryption` and `userList` (Gloo's two shapes)",
                ));
            }
            (Some(encryption), Some(list)) => {
                let sha1 = match (&encryption.apr, &encryption.sha1) {
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    _ => {
                        return Err(Error::config("expected exactly one of `apr` and `sha1`")
                            .at("encryption"));
                    }
                };
                for (user, entry) in list.users {
                    let at = format!("userList.users.{user}");
                    let hash = if sha1 {
                        Hash::sha1(&entry.salt, &entry.hashed_password)
                    } else {
                        Hash::apr1(&entry.salt, &entry.hashed_password)
                    };
                    let hash = hash.map_err(|m| Error::config(m).at(&at))?;
                    if users.insert(user, Arc::new(hash)).is_some() {
                        return Err(Error::config("the same user is listed twice").at(at));
                    }
                }
                true
            }
        };
        if users.is_empty() {
            return Err(Error::config(
                "no users: set `htpasswd`, `htpasswdFile`, `apr.users` or `userList.users`",
            ));
        }
        let mut named: Vec<(&String, &Arc<Hash>)> = users.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let decoys = named.into_iter().map(|(_, h)| h.clone()).collect();
        let realm = config.realm.as_deref().unwrap_or("authchain");
        if realm.contains(['"', '\\']) {
            return Err(Error::config("a realm cannot contain `\"` or `\\`").at("realm"));
        }
        let challenge = util::header_value(
            &format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
            "realm",
        )?;
        let user_id_header = config
            .user_id_header
            .as_deref()
            .map(|h| util::header_name(h, "userIdHeader"))
            .transpose()?;
        let cache = (config.cache.max_entries > 0).then(|| {
            (
                util::Kept::new(config.cache.max_entries),
                config.cache.ttl.0,
            )
        });
        Ok(BasicAuth {
            users,
            decoys,
            challenge,
            user_id_header,
            proxy_authorization: extended,
            cache,
            prf: util::Prf::new(),
            verifying: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            )),
            queue_wait: context.wait_limit(),
        })
    }

    /// The hash an unknown `user`'s password is verified against.
    fn decoy(&self, user: &str) -> Arc<Hash> {
        let at = self.prf.hash64(user.as_bytes()) % self.decoys.len() as u64;
        self.decoys[usize::try_from(at).unwrap_or_default()].clone()
    }

    /// Whether the cache holds a verified `user` with `password` (for
    /// diagnostics and tests).
    pub fn is_cached(&self, user: &str, password: &[u8]) -> bool {
        let key = self.cache_key(user, password);
        self.cache
            .as_ref()
            .is_some_and(|(c, _)| c.get(key).is_some())
    }

    fn challenge(&self) -> Decision {
        util::challenge(&self.challenge)
    }

    fn cache_key(&self, user: &str, password: &[u8]) -> u128 {
        self.prf.hash(&[user.as_bytes(), password])
    }

    fn allow(&self, request: &mut AuthorizationRequest, user: &str) -> Decision {
        let mut allow = Allow::new().user(UserInfo::new(user));
        if self.proxy_authorization {
            // A credential for this hop: the upstream has no use for it.
            allow = allow.remove_header(http::header::PROXY_AUTHORIZATION);
        }
        if let Some(header) = &self.user_id_header {
            match HeaderValue::try_from(user) {
                Ok(v) => allow = allow.set_header(header.clone(), v),
                // A user name that cannot be a header value cannot be
                // forwarded: deny rather than let it through unnamed (and
                // leave the request as it was, as a deny must).
                Err(_) => return Decision::unauthorized(),
            }
        }
        request.state.insert(STATE_KEY, json!({ "user": user }));
        allow.into()
    }

    /// The base64 text of an `Authorization: Basic` header, or (Gloo's
    /// extended shape) of `Proxy-Authorization` when there is no
    /// `Authorization`.
    fn encoded<'r>(&self, request: &'r AuthorizationRequest) -> Option<&'r str> {
        let basic = |name| util::scheme_credential(request, name, "Basic ");
        match basic(&http::header::AUTHORIZATION) {
            Ok(None) if self.proxy_authorization => {
                basic(&http::header::PROXY_AUTHORIZATION).ok().flatten()
            }
            found => found.ok().flatten(),
        }
    }

    /// Verifies `password` against `user`'s hash (on the blocking pool,
    /// a few at a time) and remembers a match.
    async fn verify(
        &self,
        request: &mut AuthorizationRequest,
        user: &str,
        password: &[u8],
    ) -> Result<Decision, Error> {
        let key = self.cache_key(user, password);
        let password = password.to_vec();
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.decoy(user), false),
        };
        if hash.too_costly_for(&password) {
            return Ok(self.challenge());
        }
        let acquire = self.verifying.clone().acquire_owned();
        let permit = match self.queue_wait {
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .map_err(|_| Error::overloaded("every password check is busy"))?,
            None => acquire.await,
        }
        .map_err(Error::step)?;
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash.verify(&password)
        })
        .await
        .map_err(|e| match e.is_panic() {
            true => Error::panicked(),
            false => Error::step(e),
        })?;
        if !(ok && known) {
            return Ok(self.challenge());
        }
        if let Some((cache, ttl)) = &self.cache {
            cache.insert(key, Arc::from(user), *ttl);
        }
        Ok(self.allow(request, user))
    }
}

/// The costliest hashes verified: a second or so each (SHA-crypt's with
/// a password of 64 bytes at most: a longer one is refused unverified
/// where it would cost more). An unknown user's password is verified
/// against a user's hash (a decoy), so any client reaches the slowest
/// line of the file, and a few such checks would hold every verifying
/// slot.
const MAX_BCRYPT_COST: u32 = 14;
const MAX_SHA_CRYPT_ROUNDS: u64 = 1_000_000;
/// SHA-crypt's rounds where a hash names none.
const SHA_CRYPT_DEFAULT_ROUNDS: u64 = 5_000;
const SLOW: &str = "any client could make each check take that long, by a name that is no user's; \
                    hash this password again with a lower cost";

/// The longest password verified: APR1's and SHA-crypt's work grows with
/// the password's length (SHA-crypt's with its square), so a longer one
/// is refused before it takes a verifying slot.
const MAX_PASSWORD_LEN: usize = 1024;

#[async_trait]
impl AuthService for BasicAuth {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        let Some(decoded) = self.encoded(request).and_then(BasicCredential::decode) else {
            return self.challenge().into();
        };
        let Some((user, password)) = decoded.split() else {
            return self.challenge().into();
        };
        if password.len() > MAX_PASSWORD_LEN {
            return self.challenge().into();
        }
        // A credential the cache remembers needs no hash.
        if let Some((cache, _)) = &self.cache
            && cache
                .get(self.cache_key(user, password))
                .is_some_and(|cached| *cached == *user)
        {
            return self.allow(request, user).into();
        }
        Answer::wait(async move {
            // Decoded again, a trifle next to the hash.
            let Some(decoded) = self.encoded(request).and_then(BasicCredential::decode) else {
                return Ok(self.challenge());
            };
            let Some((user, password)) = decoded.split() else {
                return Ok(self.challenge());
            };
            self.verify(request, user, password).await
        })
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        self.user_id_header.iter().cloned().collect()
    }

    fn reads(&self) -> Option<Vec<Attribute>> {
        let mut reads = vec![Attribute::header(http::header::AUTHORIZATION)];
        if self.proxy_authorization {
            reads.push(Attribute::header(http::header::PROXY_AUTHORIZATION));
        }
        Some(reads)
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        Some(authchain_core::CALLS_NO_SERVER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl() {
        // openssl passwd -apr1 -salt TYu6jVnr password
        assert_eq!(
            apr1_crypt(b"password", b"TYu6jVnr"),
            "ZMc4.dAY/srWCwfeAr0sc1"
        );
        assert_eq!(apr1_crypt(b"secret", b"TYu6jVnr"), "kTRa.30dcMNrEaZSk7tV0.");
        let h = Hash::parse("$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1").unwrap();
        assert!(h.verify(b"password"));
        assert!(!h.verify(b"Password"));
        let h = Hash::parse("$5$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC.").unwrap();
        assert!(h.verify(b"password"));
        assert!(!h.verify(b"passwor"));
    }

    #[test]
    fn unknown_users_meet_every_scheme_in_use() {
        let bcrypt = bcrypt::hash("password", 4).unwrap();
        let config: BasicConfig = serde_json::from_value(json!({
            "htpasswd": format!("fast:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\nslow:{bcrypt}\n")
        }))
        .unwrap();
        let step = BasicAuth::new(config).unwrap();
        let schemes: std::collections::BTreeSet<&str> = (0..64)
            .map(|i| match *step.decoy(&format!("nobody-{i}")) {
                Hash::Bcrypt(_) => "bcrypt",
                Hash::ShaCrypt { .. } => "sha-crypt",
                Hash::Apr1 { .. } => "apr1",
                Hash::Sha1 { .. } => "sha1",
            })
            .collect();
        assert_eq!(schemes.into_iter().collect::<Vec<_>>(), ["apr1", "bcrypt"]);
        // One name, one decoy: repeating a probe averages nothing out.
        let first = format!("{:?}", step.decoy("mallory"));
        assert!((0..8).all(|_| format!("{:?}", step.decoy("mallory")) == first));
    }

    #[test]
    fn hashes_parse_or_say_why_not() {
        assert!(Hash::parse("{SHA}abc").is_err());
        assert!(Hash::parse("$2y$05$short").is_err());
        assert!(Hash::parse("$apr1$salt").is_err());
        assert!(Hash::parse("$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1").is_ok());
        assert!(Hash::parse("$6$saltsalt$nope!").is_err());
        // What no decoy should cost: refused, with the cost it has.
        let cost_4 = bcrypt::hash("password", 4).unwrap();
        assert!(Hash::parse(&cost_4.replacen("$04$", "$14$", 1)).is_ok());
        let e = Hash::parse(&cost_4.replacen("$04$", "$15$", 1)).unwrap_err();
        assert!(e.contains("bcrypt cost 15 is above 14"), "{e}");
        let sha = |rounds: &str| {
            Hash::parse(&format!(
                "$5$rounds={rounds}$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC."
            ))
        };
        assert!(sha("1000000").is_ok());
        let e = sha("1000001").unwrap_err();
        assert!(e.contains("rounds=1000001 is above 1000000"), "{e}");
        // Its work grows with the password's length: a long one is
        // refused where it would cost more than the costliest hash's.
        let costliest = sha("1000000").unwrap();
        assert!(!costliest.too_costly_for(&[b'p'; 64]));
        assert!(costliest.too_costly_for(&[b'p'; 65]));
        let default =
            Hash::parse("$5$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC.").unwrap();
        assert!(!default.too_costly_for(&[b'p'; MAX_PASSWORD_LEN]));
    }

    /// A check that finds every verifying place taken waits half the
    /// step's time, then is denied as overloaded: a flood of made-up names
    /// cannot hold a real user's check for as long as it lasts.
    #[tokio::test]
    async fn a_check_waits_for_a_verifying_place_no_longer_than_its_wait_limit() {
        let config: BasicConfig = serde_json::from_value(json!({
            "htpasswd": "alice:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\n"
        }))
        .unwrap();
        let context = BuildContext::new("t", "basicAuth", "configs[0]")
            .with_timeout(Duration::from_millis(400));
        let step = BasicAuth::read(config, &context).unwrap();
        let places = u32::try_from(step.verifying.available_permits()).unwrap();
        let _taken = step
            .verifying
            .clone()
            .acquire_many_owned(places)
            .await
            .unwrap();
        let mut request = AuthorizationRequest::new(http::Method::GET, "/").with_header(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic bm9ib2R5Ong="), // nobody:x
        );
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            step.authorize(&mut request).into_future(),
        )
        .await
        .expect("the check waited past its wait limit");
        assert!(answer.is_err_and(|e| e.is_overloaded()));
    }
}
