//! Login sessions and logins in progress: sealed in cookies (AES-256-GCM,
//! bound to the client and its login settings), or in Redis under a
//! random id the cookie holds.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authchain_core::AuthorizationRequest;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::idp::CallError;
use crate::util;

/// The longest value one cookie carries; a longer sealed session is split
/// over `name`, `name.1`, ... (browsers keep about 4 KiB per cookie).
pub(crate) const CHUNK: usize = 3800;
/// The most cookies one sealed value may take.
const MAX_CHUNKS: usize = 4;

/// How long a login may take, from the redirect to the IdP to the callback.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(600);

/// `n` random bytes, base64url.
pub(crate) fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // The system's generator does not fail on the platforms aws-lc runs on;
    // were it to, an all-zero token would be guessable, so refuse to go on.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator failed");
    B64.encode(bytes)
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A logged-in user's tokens.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The ID token, verified when the session was made.
    pub(crate) id_token: String,
    /// The access token.
    pub(crate) access_token: String,
    /// The refresh token, if the IdP gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<String>,
    /// When the session stops letting requests through without a
    /// refresh (seconds since the epoch): the ID token's `exp`.
    pub(crate) expires_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A login in progress: what the callback checks and where it returns.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) verifier: String,
    /// The path (and query) the user asked for, on `appUrl`'s origin.
    pub(crate) return_to: String,
    /// Seconds since the epoch after which the login is void.
    pub(crate) expires_at: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("return_to", &self.return_to)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Seals values into cookie text and opens them: AES-256-GCM with a
/// random nonce, the client's identity and the value's kind as
/// associated data, so that a cookie of another client or IdP, another
/// kind, or changed by one bit does not open.
pub(crate) struct Sealer {
    key: LessSafeKey,
    binding: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with `key` (32 bytes) bound to `binding` (the client, the
    /// issuer and the login's settings).
    pub(crate) fn new(key: &[u8], binding: &str) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(Sealer {
            key: LessSafeKey::new(key),
            binding: binding.as_bytes().to_vec(),
        })
    }

    /// A sealer with a random key: its cookies open only in this process.
    pub(crate) fn random(binding: &str) -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system random generator failed");
        Sealer::new(&key, binding).expect("a 32-byte key")
    }

    fn aad(&self, kind: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.binding.len() + kind.len() + 1);
        aad.extend_from_slice(kind.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&self.binding);
        aad
    }

    pub(crate) fn seal<T: Serialize>(&self, kind: &str, value: &T) -> String {
        let mut data = serde_json::to_vec(value).unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random generator failed");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(kind)),
                &mut data,
            )
            .expect("sealing fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        B64.encode(out)
    }

    pub(crate) fn open<T: for<'de> Deserialize<'de>>(&self, kind: &str, text: &str) -> Option<T> {
        let mut data = B64.decode(text).ok()?;
        if data.len() < NONCE_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&data[..NONCE_LEN]).ok()?;
        let plain = self
            .key
            .open_within(nonce, Aad::from(self.aad(kind)), &mut data, NONCE_LEN..)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// The attributes of the cookies the step sets (`cookieOptions`).
#[derive(Debug, Clone)]
pub(crate) struct CookieAttributes {
    /// `Max-Age` of the session cookie; `None`: a browser-session cookie.
    pub(crate) max_age: Option<u32>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) same_site: Option<&'static str>,
}

impl CookieAttributes {
    /// `Set-Cookie` for `name=value`, kept `max_age` seconds (`Some(0)`:
    /// deleted).
    pub(crate) fn set_cookie(&self, name: &str, value: &str, max_age: Option<u32>) -> HeaderValue {
        let mut text = format!("{name}={value}");
        text.push_str("; Path=");
        text.push_str(&self.path);
        if let Some(domain) = &self.domain {
            text.push_str("; Domain=");
            text.push_str(domain);
        }
        if let Some(age) = max_age {
            text.push_str(&format!("; Max-Age={age}"));
        }
        if self.http_only {
            text.push_str("; HttpOnly");
        }
        if self.secure {
            text.push_str("; Secure");
        }
        if let Some(same_site) = self.same_site {
            text.push_str("; SameSite=");
            text.push_str(same_site);
        }
        // Names, paths and domains are checked when the step is built;
        // values are base64url. A session's value (or id) shows in no
        // decision's `Debug`.
        super::secret_value(&text).unwrap_or_else(|| HeaderValue::from_static(""))
    }
}

/// `value` cut into cookie-sized parts: `(name, part)`, then `name.1`, ...
pub(crate) fn chunks(name: &str, value: &str) -> Option<Vec<(String, String)>> {
    let parts: Vec<&str> = value
        .as_bytes()
        .chunks(CHUNK)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    if parts.len() > MAX_CHUNKS {
        return None;
    }
    Some(
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| match i {
                0 => (name.to_owned(), part.to_owned()),
                i => (format!("{name}.{i}"), part.to_owned()),
            })
            .collect(),
    )
}

/// The value split over cookie `name` and its parts `name.1`, ...:
/// `Err(())` when a part it takes comes twice with different values, or
/// the `Cookie` header is too long (see [`util::cookie`]); none when a
/// part is longer than this step writes one (a forged one is not read:
/// each would cost its decoding and decryption).
pub(crate) fn joined_cookie<'a>(
    request: &'a AuthorizationRequest,
    name: &str,
) -> Result<Option<Cow<'a, str>>, ()> {
    let mut value: Option<Cow<'a, str>> = None;
    for part in util::cookie_parts::<MAX_CHUNKS>(request, name) {
        match part? {
            Some(part) if !part.is_empty() && part.len() <= CHUNK => match &mut value {
                None => value = Some(Cow::Borrowed(part)),
                Some(value) => value.to_mut().push_str(part),
            },
            Some(part) if !part.is_empty() => return Ok(None),
            _ => break,
        }
    }
    Ok(value)
}

/// The names a chunked value may use.
pub(crate) fn chunk_names(name: &str) -> impl Iterator<Item = String> + '_ {
    (0..MAX_CHUNKS).map(move |i| match i {
        0 => name.to_owned(),
        i => format!("{name}.{i}"),
    })
}

/// How long a session read from Redis is kept in the process at most;
/// Redis tells of every change to it at once (client-side caching), so
/// this bounds only a change the connection never delivered (a Redis
/// that stopped answering without closing it).
const CACHE_TTL: Duration = Duration::from_secs(2);
/// How many sessions read from Redis are kept in the process.
const CACHE_SIZE: usize = 4096;

/// Sessions in Redis: the cookie holds a random id; the key is the
/// prefix and the SHA-256 of the id, and the value is sealed with a key
/// derived from the id (another hash of it), so that what Redis holds
/// opens no session by itself and gives no token to whoever reads it.
///
/// Sessions read are kept in the process, and Redis tracks them for it
/// (RESP3 client-side caching): a session changed or removed by any
/// replica (a refresh, a logout) is dropped from every replica's copy
/// when Redis tells them, and every copy goes with the connection. Only
/// ids that opened a session here before are kept so (and tracked by
/// Redis, which holds an entry for each): made-up ids cost Redis
/// nothing. A Redis that does not track (before 6.0) is read on every
/// request.
pub(crate) struct Redis {
    host: String,
    db: i64,
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    /// The PRFs of the ids that opened a session here.
    known: quick_cache::sync::Cache<u128, (), quick_cache::UnitWeighter, crate::util::PrfKeyed>,
    prf: crate::util::Prf,
    prefix: String,
    /// What the values are sealed to besides their id: the client, the
    /// issuer and the login's settings, so that no other opens them.
    binding: String,
    /// `cipherConfig`'s key, which the values' keys are derived with too.
    secret: Option<aws_lc_rs::hmac::Key>,
    timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A store at `host` (`host:port`), database `db`, whose values open
    /// only where `binding` is the same; connects on first use.
    pub(crate) fn new(
        host: &str,
        db: i64,
        prefix: String,
        binding: String,
        secret: Option<&[u8]>,
        timeout: Duration,
    ) -> Option<Self> {
        // A key of its own, derived: the cipher key seals cookies too.
        let secret = secret.map(|s| {
            use aws_lc_rs::hmac;
            let derived = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, s),
                b"authchain oauth2 redis value keys",
            );
            hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
        });
        let store = Redis {
            host: host.to_owned(),
            db,
            connection: tokio::sync::OnceCell::new(),
            known: quick_cache::sync::Cache::with(
                CACHE_SIZE,
                CACHE_SIZE as u64,
                quick_cache::UnitWeighter,
                crate::util::PrfKeyed::default(),
                Default::default(),
            ),
            prf: crate::util::Prf::new(),
            prefix,
            binding,
            secret,
            timeout,
        };
        store.client(true).ok()?;
        Some(store)
    }

    fn client(&self, tracked: bool) -> redis::RedisResult<redis::Client> {
        let protocol = if tracked { "resp3" } else { "resp2" };
        redis::Client::open(format!(
            "redis://{}/{}?protocol={protocol}",
            self.host, self.db
        ))
    }

    /// The connection, made on first use: with the session cache if
    /// Redis takes it, else without.
    async fn connection(&self) -> Result<redis::aio::ConnectionManager, CallError> {
        let connect = self.connection.get_or_try_init(|| async {
            match self.connect(true).await {
                Err(e) if refuses_tracking(&e) => {
                    tracing::warn!(
                        error = e.detail().unwrap_or(e.category()),
                        "oauth2: Redis does not track what clients keep (RESP3, Redis 6.0 and later): every request reads its session from Redis"
                    );
                    self.connect(false).await
                }
                other => other,
            }
        });
        self.bounded(connect).await.cloned()
    }

    async fn connect(&self, tracked: bool) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let mut config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        if tracked {
            config = config.set_cache_config(
                redis::caching::CacheConfig::new()
                    .set_mode(redis::caching::CacheMode::OptIn)
                    .set_size(
                        std::num::NonZeroUsize::new(CACHE_SIZE)
                            .unwrap_or(std::num::NonZeroUsize::MIN),
                    )
                    .set_default_client_ttl(CACHE_TTL),
            );
        }
        redis::aio::ConnectionManager::new_with_config(self.client(tracked)?, config).await
    }

    /// Checks that Redis answers.
    pub(crate) async fn ping(&self) -> Result<(), CallError> {
        let mut c = self.connection().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut c))
            .await
            .map(|_| ())
    }

    fn key(&self, kind: &str, id: &str) -> String {
        let digest = Sha256::digest(id.as_bytes());
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + 64);
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push_str(&crate::util::hex(&digest));
        key
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::new(format!("Redis: {}", e.category()))),
            Err(_) => Err(CallError::new(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// The sealer of the value under (`kind`, `id`): its key is a hash of
    /// the id other than the one the Redis key holds, so only the id's
    /// holder opens it, and only under the store's binding; with a
    /// `secret`, an HMAC of the id with it, so that only who holds both
    /// seals one (else whoever writes to Redis can, under an id of theirs).
    fn value_sealer(&self, kind: &str, id: &str) -> Sealer {
        const DOMAIN: &[u8] = b"authchain oauth2 redis value\0";
        let key: Vec<u8> = match &self.secret {
            Some(secret) => {
                let mut mac = aws_lc_rs::hmac::Context::with_key(secret);
                mac.update(DOMAIN);
                mac.update(id.as_bytes());
                mac.sign().as_ref().to_vec()
            }
            None => {
                let mut hash = Sha256::new();
                hash.update(DOMAIN);
                hash.update(id.as_bytes());
                hash.finalize().to_vec()
            }
        };
        let binding = format!("{}{kind}\0{}", self.prefix, self.binding);
        Sealer::new(&key, &binding).expect("a 32-byte key")
    }

    /// Stores `value` under (`kind`, `id`) for `ttl`.
    pub(crate) async fn put<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CallError> {
        self.set(kind, id, value, ttl, false).await.map(|_| ())
    }

    /// Replaces the value under (`kind`, `id`) for `ttl`, if there is one
    /// still: whether there was (a session a logout removed stays gone).
    pub(crate) async fn replace<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<bool, CallError> {
        self.set(kind, id, value, ttl, true).await
    }

    async fn set<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        value: &T,
        ttl: Duration,
        existing: bool,
    ) -> Result<bool, CallError> {
        let mut c = self.connection().await?;
        let data = self.value_sealer(kind, id).seal("redis", value);
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(kind, id))
            .arg(data)
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        if existing {
            command.arg("XX");
        }
        let done: Option<String> = self.bounded(command.query_async(&mut c)).await?;
        Ok(done.is_some())
    }

    /// The sealer of logins in progress where no `cipherConfig` key is
    /// given: its key is 32 random bytes that the replicas share through
    /// Redis, made by the first that asks, kept with no expiry, and read
    /// at each login and callback (one `GET`: a Redis emptied since has
    /// another made, and a Redis down fails the login at once, whose
    /// callback could not work). With the client's secret, the key is an
    /// HMAC of it with those bytes, so that what Redis holds (a backup, a
    /// replica) opens and makes no login cookie alone.
    pub(crate) async fn login_sealer(
        &self,
        client_secret: Option<&str>,
    ) -> Result<Sealer, CallError> {
        let mut c = self.connection().await?;
        let name = self.key("key:", "login");
        let read = redis::cmd("GET").arg(&name).clone();
        let mut key: Option<String> = self.bounded(read.query_async(&mut c)).await?;
        if key.is_none() {
            let fresh = random_token(32);
            let mut make = redis::cmd("SET");
            make.arg(&name).arg(&fresh).arg("NX");
            let made: Option<String> = self.bounded(make.query_async(&mut c)).await?;
            key = match made {
                Some(_) => Some(fresh),
                // Another made it meanwhile.
                None => self.bounded(read.query_async(&mut c)).await?,
            };
        }
        let key = key
            .and_then(|key| B64.decode(key).ok())
            .filter(|key| key.len() == 32)
            .ok_or_else(|| {
                CallError::new(format!(
                    "Redis: the login key under {name} is not 32 bytes of base64url: delete it, and the next login makes another"
                ))
            })?;
        let key = match client_secret {
            Some(secret) => {
                use aws_lc_rs::hmac;
                let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &key));
                mac.update(b"authchain oauth2 login\0");
                mac.update(secret.as_bytes());
                mac.sign().as_ref().to_vec()
            }
            None => key,
        };
        Sealer::new(&key, &self.binding)
            .ok_or_else(|| CallError::new("Redis: the login key is no AES-256 key"))
    }

    /// Takes the lock named (`kind`, `id`) for `hold` as `holder` (a
    /// random token), unless another holds it: whether this caller has it.
    /// It goes with [`unlock`](Self::unlock), or when `hold` ends.
    pub(crate) async fn lock(
        &self,
        kind: &str,
        id: &str,
        holder: &str,
        hold: Duration,
    ) -> Result<bool, CallError> {
        let mut c = self.connection().await?;
        let hold = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(kind, id))
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(hold);
        let taken: Option<String> = self.bounded(command.query_async(&mut c)).await?;
        Ok(taken.is_some())
    }

    /// Whether someone holds the lock named (`kind`, `id`).
    pub(crate) async fn locked(&self, kind: &str, id: &str) -> Result<bool, CallError> {
        let mut c = self.connection().await?;
        let command = redis::cmd("EXISTS").arg(self.key(kind, id)).clone();
        self.bounded(command.query_async(&mut c)).await
    }

    /// Releases the lock named (`kind`, `id`) if `holder` still holds it
    /// (past its `hold`, another may).
    pub(crate) async fn unlock(&self, kind: &str, id: &str, holder: &str) -> Result<(), CallError> {
        const UNLOCK: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
        end
        return 0";
        let mut c = self.connection().await?;
        let script = redis::Script::new(UNLOCK);
        let mut call = script.key(self.key(kind, id));
        call.arg(holder);
        self.bounded(call.invoke_async::<i64>(&mut c))
            .await
            .map(|_| ())
    }

    /// How long one call may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The value under (`kind`, `id`), if any; with `take`, removed.
    pub(crate) async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
        id: &str,
        take: bool,
    ) -> Result<Option<T>, CallError> {
        self.get_with(kind, id, take, |data| self.open(kind, id, data))
            .await
    }

    /// The value sealed under (`kind`, `id`) in `data` (as Redis holds
    /// it), if it opens.
    pub(crate) fn open<T: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
        id: &str,
        data: &str,
    ) -> Option<T> {
        self.value_sealer(kind, id).open("redis", data)
    }

    /// As [`get`](Self::get), with what Redis holds opened by `open`
    /// (which may remember what [`open`](Self::open) gave for it).
    pub(crate) async fn get_with<T>(
        &self,
        kind: &str,
        id: &str,
        take: bool,
        open: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, CallError> {
        let mut c = self.connection().await?;
        let key = self.key(kind, id);
        let mut command = match take {
            true => redis::cmd("GETDEL"),
            false => redis::cmd("GET"),
        };
        command.arg(key);
        let prf = self.prf.hash(&[kind.as_bytes(), id.as_bytes()]);
        let known = !take && self.known.contains_key(&prf);
        if known {
            command.set_cache_config(redis::CommandCacheConfig::new().set_enable_cache(true));
        }
        let data: Option<String> = self.bounded(command.query_async(&mut c)).await?;
        let value = data.and_then(|d| open(&d));
        if !take && !known && value.is_some() {
            self.known.insert(prf, ());
        }
        Ok(value)
    }
}

/// Whether Redis itself refused what client-side caching needs (`HELLO 3`
/// or `CLIENT TRACKING`: unknown, renamed or not permitted), rather than
/// the network or another setting failing.
fn refuses_tracking(e: &redis::RedisError) -> bool {
    if e.kind() == redis::ErrorKind::RESP3NotSupported {
        return true;
    }
    let said = e.to_string().to_ascii_uppercase();
    ["HELLO", "TRACKING", "CACHING", "'CLIENT'", "`CLIENT`"]
        .iter()
        .any(|word| said.contains(word))
}

#[cfg(test)]
mod tests {
    use authchain_testkit::redis::Redis as Server;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn with_cookies(cookies: &[&str]) -> AuthorizationRequest {
        let mut request = AuthorizationRequest::new(http::Method::GET, "/");
        for cookie in cookies {
            request
                .headers
                .append(http::header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        request
    }

    #[test]
    fn a_split_cookie_is_joined_from_its_parts_in_one_pass() {
        let joined = |cookies: &[&str]| {
            let request = with_cookies(cookies);
            joined_cookie(&request, "s").map(|v| v.map(Cow::into_owned))
        };
        let ok = |v: &str| Ok(Some(v.to_owned()));
        assert_eq!(joined(&[]), Ok(None));
        assert_eq!(joined(&["s=abc"]), ok("abc"));
        assert_eq!(joined(&["s.1=def; s=abc", "s.2=\"g\""]), ok("abcdefg"));
        // The same part twice with one value is one part; the parts stop
        // at the first missing or empty one.
        assert_eq!(joined(&["s=abc; s.1=d; s=abc; s.3=z"]), ok("abcd"));
        assert_eq!(joined(&["s=abc; s.1=; s.2=z"]), ok("abc"));
        assert_eq!(joined(&["s.1=def"]), Ok(None));
        // Other names that start alike are not parts.
        assert_eq!(
            joined(&["sx=1; s.10=1; s.0=1; s.4=1; s.a=1; s=abc; S.1=2"]),
            ok("abc")
        );
        // Two values of a part that is read: refused; of one past the
        // parts read (after a missing one), not.
        assert_eq!(joined(&["s=abc; s=abd"]), Err(()));
        assert_eq!(joined(&["s=abc; s.1=d", "s.1=e"]), Err(()));
        assert_eq!(joined(&["s=abc; s.2=d; s.2=e"]), ok("abc"));
        assert_eq!(joined(&["s.1=d; s.1=e"]), Ok(None));
        // A part longer than this step writes one is not read.
        let long = format!("s=abc; s.1={}", "x".repeat(CHUNK + 1));
        assert_eq!(joined(&[&long]), Ok(None));
        let longest = format!("s={}", "x".repeat(CHUNK));
        assert_eq!(joined(&[&longest]), Ok(Some("x".repeat(CHUNK))));
        // A Cookie header past the longest read: refused.
        let huge = format!("s=abc; pad={}", "x".repeat(60 * 1024));
        assert_eq!(joined(&[&huge]), Err(()));
        // One part is borrowed from the request, not copied.
        let request = with_cookies(&["s=abc"]);
        assert!(matches!(
            joined_cookie(&request, "s"),
            Ok(Some(Cow::Borrowed("abc")))
        ));
    }

    async fn store(server: &Server) -> Redis {
        keyed_store(server, None)
    }

    fn keyed_store(server: &Server, secret: Option<&[u8]>) -> Redis {
        let host = server.addr().to_string();
        let timeout = Duration::from_secs(2);
        Redis::new(&host, 0, "t:".into(), "b".into(), secret, timeout).unwrap()
    }

    /// Whoever can write to Redis can seal a value that opens with no key
    /// (all that goes into it is public or theirs: the binding, an id);
    /// with `cipherConfig`'s key, what they write under their id opens
    /// nothing.
    #[tokio::test]
    async fn with_a_key_what_a_redis_writer_seals_opens_nothing() {
        let server = Server::start().await.unwrap();
        let forge = |store: &Redis| {
            store
                .value_sealer("session:", "mine")
                .seal("redis", &"admin")
        };
        let unkeyed = keyed_store(&server, None);
        let keyed = keyed_store(&server, Some(b"cipher-config-key-of-32-bytes!!!"));
        let forged = forge(&unkeyed);
        let key = unkeyed.key("session:", "mine");
        server.command(&["SET", &key, &forged]).await.unwrap();
        let opened = async |store: &Redis| store.get::<String>("session:", "mine", false).await;
        assert_eq!(opened(&unkeyed).await.unwrap().as_deref(), Some("admin"));
        assert_eq!(opened(&keyed).await.unwrap(), None);
        // What the keyed store seals itself opens, with it alone.
        keyed.put("session:", "ours", &"alice", TTL).await.unwrap();
        let ours = async |store: &Redis| store.get::<String>("session:", "ours", false).await;
        assert_eq!(ours(&keyed).await.unwrap().as_deref(), Some("alice"));
        assert_eq!(ours(&unkeyed).await.unwrap(), None);
    }

    /// A refreshed session replaces one that is still there, never one a
    /// logout removed meanwhile.
    #[tokio::test]
    async fn a_replacement_keeps_a_removed_value_removed() {
        let server = Server::start().await.unwrap();
        let store = store(&server).await;
        let get = |take| store.get::<String>("session:", "id", take);
        assert!(!store.replace("session:", "id", &"v1", TTL).await.unwrap());
        assert_eq!(get(false).await.unwrap(), None);
        store.put("session:", "id", &"v1", TTL).await.unwrap();
        assert!(store.replace("session:", "id", &"v2", TTL).await.unwrap());
        assert_eq!(get(true).await.unwrap().as_deref(), Some("v2"));
        assert!(!store.replace("session:", "id", &"v3", TTL).await.unwrap());
        assert_eq!(get(false).await.unwrap(), None);
    }

    /// Only an id that opened a value here is read through the kept
    /// copies, which Redis tracks: made-up ids cost Redis no tracking.
    #[tokio::test]
    async fn only_known_ids_are_kept_and_tracked() {
        let server = Server::start().await.unwrap();
        let store = store(&server).await;
        let tracked = || async {
            let keys = server.info("tracking_total_keys").await.unwrap();
            keys.unwrap().parse::<u64>().unwrap()
        };
        for i in 0..20 {
            let id = format!("made-up-{i}");
            let found = store.get::<String>("session:", &id, false).await.unwrap();
            assert_eq!(found, None);
        }
        assert_eq!(tracked().await, 0);
        store.put("session:", "id", &"v1", TTL).await.unwrap();
        for _ in 0..5 {
            let found = store.get::<String>("session:", "id", false).await.unwrap();
            assert_eq!(found.as_deref(), Some("v1"));
        }
        assert_eq!(tracked().await, 1);
        // Read twice from Redis: once to learn the id, once tracked.
        assert_eq!(server.calls("get").await.unwrap(), 22);
    }
}
