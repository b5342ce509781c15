//! `hmacAuth`: requests signed with a secret the client shares with the
//! server (HMAC, RFC 2104), as Gloo's `hmacAuth` with `parametersInHeaders`.
//!
//! ```yaml
//! hmacAuth:
//!   secretRefs:                    # Gloo's: the users' Secrets (one or more)
//!     secretRefs:
//!     - { name: alice-hmac, namespace: gloo-system }
//!   parametersInHeaders: {}        # Gloo's only implementation (also when left out)
//!   clockSkew: 5m                  # authchain's: how far `Date` may be from now (5m, at most 1h)
//!   algorithms: [hmac-sha256]      # authchain's: the algorithms accepted (all four)
//!   requiredHeaders: [host, digest]   # authchain's: headers every signature must cover too
//! ```
//!
//! Each Secret is Gloo's account credentials Secret (`glooctl create
//! secret authcredentials`): type `extauth.solo.io/accountcredentials`,
//! entries `username` and `password`, the password being the HMAC key.
//!
//! A signed request carries a `Date` and an `Authorization` header:
//!
//! ```text
//! Date: Thu, 22 Jun 2017 17:15:21 GMT
//! Authorization: hmac username="alice", algorithm="hmac-sha256", headers="date @request-target", signature="ujWCGHeec9Xd6UD2zlyxiNMCiXnDOWeVFMu5VeRUxtw="
//! ```
//!
//! `signature` is the base64 of the HMAC, keyed with the user's password,
//! of the signing string: one line for each name in `headers`, in its
//! order, joined by `\n` (none after the last). A header gives
//! `name: value` (the name in lower case; `host` is the original
//! request's authority, as the transport reports it); `@request-target` (or Kong's
//! name for it, `request-line`) gives the request line: the method, the
//! path with its query, and `HTTP/1.1`. For the request above, `GET
//! /requests` signed with the key `secret`:
//!
//! ```text
//! date: Thu, 22 Jun 2017 17:15:21 GMT
//! GET /requests HTTP/1.1
//! ```
//!
//! `algorithm` is `hmac-sha1`, `hmac-sha256`, `hmac-sha384` or
//! `hmac-sha512` (`algorithms` may narrow them).
//!
//! Each of these is a 401 with `WWW-Authenticate: hmac
//! headers="date @request-target"`: no `Authorization`, or more than one;
//! one that is not `hmac` with each of the four parameters exactly once
//! (and no other); an algorithm not accepted; a signature of the wrong
//! length; `headers` without `date`, without the request target, without
//! a `requiredHeaders` name, naming a header twice or one the request has
//! none or several of (another spelling, `x_tenant` for `x-tenant`,
//! counts: an app may read that one), or naming `authorization`; a `Date` more than
//! `clockSkew` away from now; an unknown user or a wrong signature.
//! Whatever the cause, the time taken does not tell whether the user
//! exists: an unknown user's signature is computed, with another user's
//! key, and compared as a known one's is.
//!
//! A verified user goes into `UserInfo` and `state.hmacAuth.user`. The
//! allow expires at once: no decision cache keeps it, as a signature
//! covers what its client chose to sign, which no key holds.
//!
//! The path signed is the canonical path the chain sees (see
//! `authchain_core::path`), with the query as it came: a client that
//! signs `/public/../admin` is refused, since the request is for
//! `/admin`; one that signs `/admin` is not. A signed `digest` header
//! (RFC 3230, `SHA-256=` or `SHA-512=`) or `content-digest` (RFC 9530,
//! `sha-256=:...:`) must be the body's, as the check
//! carries it: where the proxy does not send the body to the check, a
//! digest is refused unless the request says it has no body with
//! `Content-Length: 0` (HTTP/2 need not declare a body, and Envoy's
//! check leaves out `Transfer-Encoding: chunked`). A signature may be replayed
//! within `clockSkew` of its `Date` (to another host too, unless `host` is
//! signed): keep it short, require `host`, and keep TLS in front. A key
//! under 32 bytes is warned about: one signed request is enough to search
//! for it offline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use authchain_core::resources::ResourceRef;
use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, BuildContext, ConfigDuration, Decision,
    Error, ExtAuthPlugin, UserInfo,
};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use crate::util;

/// The step kind this module registers.
pub const KIND: &str = "hmacAuth";

/// The key under which the step writes the user into `state`.
pub const STATE_KEY: &str = "hmacAuth";

/// The type of the Secrets that hold the users, as Gloo names it.
pub const SECRET_TYPE: &str = authchain_core::resources::ACCOUNT_CREDENTIALS_TYPE;

/// What a refused request's `WWW-Authenticate` says: the scheme, and the
/// headers every signature must cover.
pub const CHALLENGE: &str = "hmac headers=\"date @request-target\"";

/// How far a request's `Date` may be from now by default (as Kong's
/// `clock_skew`).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The largest `clockSkew`: a signature replays for as long.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// A key shorter than this is weak against an offline search from one
/// signed request: a warning says so.
const WEAK_KEY_LEN: usize = 32;

/// The most names `headers` may list.
const MAX_SIGNED_HEADERS: usize = 32;

/// The longest signing string the step computes a signature over.
const MAX_SIGNING_STRING: usize = 64 * 1024;

/// The `hmacAuth` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HmacConfig {
    /// Gloo's: the Secrets that hold the users.
    pub secret_refs: SecretRefList,
    /// Gloo's: where the signature's parameters are (the only choice).
    #[serde(default)]
    pub parameters_in_headers: Option<ParametersInHeaders>,
    /// How far `Date` may be from now (5m).
    #[serde(default)]
    pub clock_skew: Option<ConfigDuration>,
    /// The algorithms accepted (all four).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Headers every signature must cover, beside `date` and the request
    /// target.
    #[serde(default)]
    pub required_headers: Vec<String>,
}

/// Gloo's `SecretRefList`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRefList {
    /// The Secrets.
    pub secret_refs: Vec<ResourceRef>,
}

/// Gloo's `HmacParametersInHeaders`: no fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParametersInHeaders {}

/// An HMAC algorithm, as a signature's `algorithm` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `hmac-sha1`.
    Sha1,
    /// `hmac-sha256`.
    Sha256,
    /// `hmac-sha384`.
    Sha384,
    /// `hmac-sha512`.
    Sha512,
}

impl Algorithm {
    /// Every algorithm, in the order of their names' list.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha384,
        Algorithm::Sha512,
    ];

    /// Its name (`hmac-sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "hmac-sha1",
            Algorithm::Sha256 => "hmac-sha256",
            Algorithm::Sha384 => "hmac-sha384",
            Algorithm::Sha512 => "hmac-sha512",
        }
    }

    /// The algorithm named `name` (ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The length of its signatures, in bytes.
    pub fn signature_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    /// Whether `signature` is the HMAC of `message` with `key`, compared
    /// in constant time.
    fn verify(self, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        match self {
            Algorithm::Sha1 => verify::<Hmac<sha1::Sha1>>(key, message, signature),
            Algorithm::Sha256 => verify::<Hmac<sha2::Sha256>>(key, message, signature),
            Algorithm::Sha384 => verify::<Hmac<sha2::Sha384>>(key, message, signature),
            Algorithm::Sha512 => verify::<Hmac<sha2::Sha512>>(key, message, signature),
        }
    }
}

fn verify<M: Mac + KeyInit>(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(message);
    util::ct_eq(&mac.finalize().into_bytes(), signature)
}

/// The plugin for step kind `hmacAuth`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HmacPlugin;

impl ExtAuthPlugin for HmacPlugin {
    type Config = HmacConfig;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: HmacConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        Ok(Arc::new(HmacAuth::new(config, context)?))
    }
}

/// One user: a name and a key (a secret: never printed).
struct Credential {
    user: String,
    key: Box<[u8]>,
}

/// The `hmacAuth` step.
pub struct HmacAuth {
    credentials: Vec<Credential>,
    prf: util::Prf,
    /// PRF of a user name → index in `credentials`.
    by_prf: HashMap<u64, usize, util::PrfKeyed>,
    clock_skew: Duration,
    algorithms: Vec<Algorithm>,
    required_headers: Vec<HeaderName>,
    challenge: HeaderValue,
}

impl std::fmt::Debug for HmacAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacAuth")
            .field("users", &self.credentials.len())
            .field("clock_skew", &self.clock_skew)
            .field("algorithms", &self.algorithms)
            .field("required_headers", &self.required_headers)
            .finish_non_exhaustive()
    }
}

/// Why a request is refused; logged (at debug), never sent.
type Refusal = &'static str;

impl HmacAuth {
    /// Builds the step from its config, its users from the Secrets in
    /// `context` that `secretRefs` names.
    pub fn new(config: HmacConfig, context: &BuildContext<'_>) -> Result<Self, Error> {
        let refs = &config.secret_refs.secret_refs;
        if refs.is_empty() {
            return Err(Error::config("name at least one Secret").at("secretRefs.secretRefs"));
        }
        let prf = util::Prf::new();
        let mut credentials: Vec<Credential> = Vec::with_capacity(refs.len());
        let mut by_prf = HashMap::with_capacity_and_hasher(refs.len(), Default::default());
        for (i, reference) in refs.iter().enumerate() {
            let at = format!("secretRefs.secretRefs[{i}]");
            let secret = util::typed_secret(context, reference, SECRET_TYPE, &at)?;
            let user = util::secret_text(secret, "username").map_err(|e| e.at(&at))?;
            let key = util::secret_bytes(secret, "password").map_err(|e| e.at(&at))?;
            if !is_plain(&user) || user.is_empty() {
                return Err(Error::config(format!(
                    "the Secret {}/{}: `username` must be printable ASCII without `\"` or `\\`",
                    secret.namespace, secret.name
                ))
                .at(at));
            }
            if key.is_empty() {
                return Err(Error::config(format!(
                    "the Secret {}/{}: `password` is empty",
                    secret.namespace, secret.name
                ))
                .at(at));
            }
            if key.len() < WEAK_KEY_LEN {
                tracing::warn!(
                    secret = %format!("{}/{}", secret.namespace, secret.name),
                    "hmacAuth: a key under {WEAK_KEY_LEN} bytes can be found offline from one signed request; make one with `openssl rand -base64 32`"
                );
            }
            if credentials.iter().any(|c| c.user == user) {
                return Err(Error::config("the same username is in two Secrets").at(at));
            }
            // Names that share a PRF value (chance 2^-64): the second is
            // never found, so never allowed.
            by_prf
                .entry(prf.hash64(user.as_bytes()))
                .or_insert(credentials.len());
            credentials.push(Credential {
                user,
                key: key.into(),
            });
        }
        let clock_skew = config.clock_skew.map_or(DEFAULT_CLOCK_SKEW, |d| d.0);
        if clock_skew.is_zero() {
            return Err(Error::config("must be more than 0").at("clockSkew"));
        }
        if clock_skew > MAX_CLOCK_SKEW {
            return Err(
                Error::config("at most 1h: a signature may be replayed for that long")
                    .at("clockSkew"),
            );
        }
        let algorithms = match &config.algorithms {
            None => Algorithm::ALL.to_vec(),
            Some(names) if names.is_empty() => {
                return Err(Error::config("name at least one algorithm").at("algorithms"));
            }
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    Algorithm::from_name(name).ok_or_else(|| {
                        Error::config("expected hmac-sha1, hmac-sha256, hmac-sha384 or hmac-sha512")
                            .at(format!("algorithms[{i}]"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut required_headers = Vec::new();
        for (i, name) in config.required_headers.iter().enumerate() {
            let at = format!("requiredHeaders[{i}]");
            let name = util::header_name(name, &at)?;
            if name == http::header::AUTHORIZATION {
                return Err(Error::config("`authorization` cannot be signed").at(at));
            }
            required_headers.push(name);
        }
        let mut challenge = String::from("hmac headers=\"date @request-target");
        for name in &required_headers {
            challenge.push(' ');
            challenge.push_str(name.as_str());
        }
        challenge.push('"');
        Ok(HmacAuth {
            credentials,
            prf,
            by_prf,
            clock_skew,
            algorithms,
            required_headers,
            challenge: util::header_value(&challenge, "requiredHeaders")?,
        })
    }

    /// The answer for `request` at time `now`; also writes
    /// `state.hmacAuth` on an allow.
    pub fn decide_at(&self, request: &mut AuthorizationRequest, now: SystemTime) -> Decision {
        match self.verify(request, now) {
            Ok(user) => {
                let user = user.to_owned();
                request.state.insert(STATE_KEY, json!({ "user": &user }));
                // For this request alone: its signature covers the headers
                // (and a digest, the body) that the client chose to sign,
                // which no decision cache's key holds.
                Allow::new()
                    .user(UserInfo::new(user))
                    .expires_at(now)
                    .into()
            }
            Err(reason) => {
                tracing::debug!(reason, "hmacAuth: refused");
                util::challenge(&self.challenge)
            }
        }
    }

    /// The verified user of `request`, or why there is none.
    fn verify(&self, request: &AuthorizationRequest, now: SystemTime) -> Result<&str, Refusal> {
        let mut values = request.headers.get_all(http::header::AUTHORIZATION).iter();
        let value = values.next().ok_or("no Authorization header")?;
        if values.next().is_some() {
            return Err("more than one Authorization header");
        }
        if value.len() > util::MAX_CREDENTIAL_LEN {
            return Err("an Authorization header too long");
        }
        let value = value
            .to_str()
            .map_err(|_| "an Authorization header that is not text")?;
        let params = Params::parse(value)?;
        let algorithm = Algorithm::from_name(params.algorithm)
            .filter(|a| self.algorithms.contains(a))
            .ok_or("an algorithm not accepted")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(params.signature)
            .map_err(|_| "a signature that is not base64")?;
        if signature.len() != algorithm.signature_len() {
            return Err("a signature of the wrong length");
        }
        let Signed {
            message,
            date,
            digests,
        } = self.signing_string(request, params.headers)?;
        let date = std::str::from_utf8(date)
            .ok()
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .ok_or("a Date that is not an HTTP date")?;
        let skew = now.duration_since(date).unwrap_or_else(|e| e.duration());
        if skew > self.clock_skew {
            return Err("a Date too far from now");
        }
        // From here on, as much work for an unknown user as for a known
        // one.
        let (credential, known) = self.credential(params.username);
        let good = algorithm.verify(&credential.key, &message, &signature);
        if !(good && known) {
            return Err("an unknown user or a wrong signature");
        }
        for digest in digests {
            check_digest(request, digest)?;
        }
        Ok(&credential.user)
    }

    /// The credential of `user` and whether it is `user`'s: an unknown
    /// user gets another user's (the same one each time, drawn by a keyed
    /// PRF), so that verifying takes as long.
    fn credential(&self, user: &str) -> (&Credential, bool) {
        let found = self
            .by_prf
            .get(&self.prf.hash64(user.as_bytes()))
            .map(|&i| &self.credentials[i])
            .filter(|c| util::ct_eq(c.user.as_bytes(), user.as_bytes()));
        match found {
            Some(credential) => (credential, true),
            None => {
                let draw = self.prf.hash(&[b"decoy", user.as_bytes()]) as u64;
                let at = draw % self.credentials.len() as u64;
                let at = usize::try_from(at).unwrap_or_default();
                (&self.credentials[at], false)
            }
        }
    }

    /// The signing string of `request` for the names in `headers`; an
    /// error when `headers` lacks a required name, names one twice, or
    /// names a header the request has none or several of.
    fn signing_string<'r>(
        &self,
        request: &'r AuthorizationRequest,
        headers: &str,
    ) -> Result<Signed<'r>, Refusal> {
        let mut message = Vec::with_capacity(256);
        let mut signed: Vec<HeaderName> = Vec::new();
        let mut target = false;
        let mut date = None;
        for (i, name) in headers.split_ascii_whitespace().enumerate() {
            if i == MAX_SIGNED_HEADERS {
                return Err("too many signed headers");
            }
            if i > 0 {
                message.push(b'\n');
            }
            if name.eq_ignore_ascii_case("@request-target")
                || name.eq_ignore_ascii_case("request-line")
            {
                if std::mem::replace(&mut target, true) {
                    return Err("the request target signed twice");
                }
                message.extend_from_slice(request.method.as_str().as_bytes());
                message.push(b' ');
                message.extend_from_slice(request.path.as_bytes());
                message.extend_from_slice(b" HTTP/1.1");
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| "a signed header name that is not one")?;
            if name == http::header::AUTHORIZATION {
                return Err("authorization signed");
            }
            if signed.contains(&name) {
                return Err("a header signed twice");
            }
            let value = if name == http::header::HOST {
                // The original request's authority, whatever carried it
                // (`:authority` in Envoy's check, `X-Forwarded-Host` in a
                // forward-auth hop, whose own `Host` names authchain).
                Some(request.host.as_bytes()).filter(|h| !h.is_empty())
            } else {
                let mut values = request.headers.get_all(&name).iter();
                let value = values.next();
                // A copy under another spelling (`x_tenant`), unsigned,
                // is the one a PHP or WSGI app may read.
                if values.next().is_some() || request.other_spellings(&name).next().is_some() {
                    return Err("a signed header the request has more than once");
                }
                value.map(HeaderValue::as_bytes)
            };
            let value = value.ok_or("a signed header the request lacks")?;
            message.extend_from_slice(name.as_str().as_bytes());
            message.extend_from_slice(b": ");
            message.extend_from_slice(value);
            if message.len() > MAX_SIGNING_STRING {
                return Err("a signing string too long");
            }
            if name == http::header::DATE {
                date = Some(value);
            }
            signed.push(name);
        }
        if !target {
            return Err("the request target not signed");
        }
        let date = date.ok_or("date not signed")?;
        if let Some(_missing) = self.required_headers.iter().find(|h| !signed.contains(h)) {
            return Err("a required header not signed");
        }
        Ok(Signed {
            message,
            date,
            digests: DIGESTS
                .iter()
                .filter(|d| signed.contains(&d.header))
                .collect(),
        })
    }
}

/// What a signature covers, read from its `headers` parameter once.
struct Signed<'r> {
    message: Vec<u8>,
    /// The value of the signed `Date`.
    date: &'r [u8],
    /// The digest headers signed, each of which must be the body's.
    digests: Vec<&'static DigestHeader>,
}

/// A header that gives digests of the body, as `algorithm=value` pairs
/// separated by commas.
struct DigestHeader {
    header: HeaderName,
    /// Whether each value is between colons (RFC 9530's byte sequences).
    colons: bool,
}

/// RFC 3230's `Digest` (`SHA-256=<base64>`) and RFC 9530's
/// `Content-Digest` (`sha-256=:<base64>:`). `Repr-Digest` is of the
/// representation before its content coding, which the check does not
/// undo: signed, it is text.
static DIGESTS: [DigestHeader; 2] = [
    DigestHeader {
        header: HeaderName::from_static("digest"),
        colons: false,
    },
    DigestHeader {
        header: HeaderName::from_static("content-digest"),
        colons: true,
    },
];

/// Whether a request whose body the check did not carry has none: it
/// says `Content-Length: 0` (and no `Transfer-Encoding`). Nothing else
/// tells: HTTP/2 and HTTP/3 need not declare a body, and Envoy's check
/// leaves out an HTTP/1.1 request's `Transfer-Encoding: chunked`.
fn says_it_has_no_body(request: &AuthorizationRequest) -> bool {
    let mut lengths = request
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .peekable();
    lengths.peek().is_some()
        && lengths.all(|v| v.as_bytes() == b"0")
        && !request
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
}

/// A signed `Digest` or `Content-Digest` must be the body's: each digest
/// of a known algorithm (SHA-256, SHA-512) matches, and there is one at
/// least. A request whose body did not come with the check is judged
/// with an empty body only when it says it has none; otherwise any digest
/// fails: what was not seen was not checked.
fn check_digest(request: &AuthorizationRequest, digest: &DigestHeader) -> Result<(), Refusal> {
    use sha2::Digest as _;
    // Envoy's `with_request_body { allow_partial_message: true }` sends the
    // first bytes alone, and says so: a digest of those says nothing of
    // the rest, which the app gets.
    if request
        .headers
        .get_all("x-envoy-auth-partial-body")
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"false"))
    {
        return Err("a Digest over a body the proxy cut short");
    }
    if request.body.is_none() && !says_it_has_no_body(request) {
        return Err("a Digest of a body the check did not see");
    }
    let value = request
        .headers
        .get(&digest.header)
        .and_then(|v| v.to_str().ok())
        .ok_or("a Digest that is not text")?;
    let body = request.body.as_deref().unwrap_or_default();
    let mut checked = false;
    // Each algorithm hashes the body once, however many entries name it
    // (a signed header holds a thousand in its 64 KiB).
    let (mut sha256, mut sha512) = (None, None);
    for part in value.split(',') {
        let Some((algorithm, encoded)) = part.trim().split_once('=') else {
            return Err("a malformed Digest");
        };
        let encoded = match digest.colons {
            true => encoded.strip_prefix(':').and_then(|v| v.strip_suffix(':')),
            false => Some(encoded),
        };
        let encoded = encoded.ok_or("a malformed Digest")?;
        let expected: &[u8] = if algorithm.eq_ignore_ascii_case("SHA-256") {
            sha256.get_or_insert_with(|| sha2::Sha256::digest(body).to_vec())
        } else if algorithm.eq_ignore_ascii_case("SHA-512") {
            sha512.get_or_insert_with(|| sha2::Sha512::digest(body).to_vec())
        } else {
            continue;
        };
        let given = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "a malformed Digest")?;
        if !util::ct_eq(&given, expected) {
            return Err("a Digest that is not the body's");
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err("a Digest of no known algorithm (SHA-256, SHA-512)")
    }
}

/// Whether `s` is made of what a quoted parameter may hold: printable
/// ASCII and space, without `"` or `\`.
fn is_plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// The parameters of an `Authorization: hmac` header.
#[derive(Debug, PartialEq, Eq)]
struct Params<'a> {
    username: &'a str,
    algorithm: &'a str,
    headers: &'a str,
    signature: &'a str,
}

impl<'a> Params<'a> {
    /// `hmac username="…", algorithm="…", headers="…", signature="…"`:
    /// the scheme in any case, each parameter once (its name in any case,
    /// in any order), its value quoted without `"` or `\`, commas between
    /// them, spaces around them; nothing else.
    fn parse(value: &'a str) -> Result<Params<'a>, Refusal> {
        let malformed = "a malformed Authorization header";
        let scheme = value.get(..5).ok_or(malformed)?;
        if !scheme.eq_ignore_ascii_case("hmac ") {
            return Err("not the hmac scheme");
        }
        let [mut username, mut algorithm, mut headers, mut signature] = [None; 4];
        let mut rest = value[5..].trim_start_matches(' ');
        loop {
            let (name, after) = rest.split_once('=').ok_or(malformed)?;
            let after = after
                .trim_start_matches(' ')
                .strip_prefix('"')
                .ok_or(malformed)?;
            let (param, after) = after.split_once('"').ok_or(malformed)?;
            if param.contains('\\') {
                return Err(malformed);
            }
            let name = name.trim_matches(' ');
            let slot = if name.eq_ignore_ascii_case("username") {
                &mut username
            } else if name.eq_ignore_ascii_case("algorithm") {
                &mut algorithm
            } else if name.eq_ignore_ascii_case("headers") {
                &mut headers
            } else if name.eq_ignore_ascii_case("signature") {
                &mut signature
            } else {
                return Err("an unknown parameter");
            };
            if slot.replace(param).is_some() {
                return Err("a parameter given twice");
            }
            rest = after.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            rest = rest
                .strip_prefix(',')
                .ok_or(malformed)?
                .trim_start_matches(' ');
        }
        let missing = "a parameter missing";
        Ok(Params {
            username: username.filter(|u| !u.is_empty()).ok_or(missing)?,
            algorithm: algorithm.ok_or(missing)?,
            headers: headers.ok_or(missing)?,
            signature: signature.filter(|s| !s.is_empty()).ok_or(missing)?,
        })
    }
}

impl AuthService for HmacAuth {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        self.decide_at(request, SystemTime::now()).into()
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        Some(authchain_core::CALLS_NO_SERVER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authchain_core::resources::Resources;

    #[test]
    fn every_digest_entry_must_be_the_body_s() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let (sha256, sha512) = (
            b64(&sha2::Sha256::digest(b"body")),
            b64(&sha2::Sha512::digest(b"body")),
        );
        let other = b64(&sha2::Sha256::digest(b"other"));
        let check = |value: &str| {
            let mut request = AuthorizationRequest::new(http::Method::POST, "/").with_header(
                HeaderName::from_static("digest"),
                HeaderValue::from_str(value).unwrap(),
            );
            request.body = Some(bytes::Bytes::from_static(b"body"));
            check_digest(&request, &DIGESTS[0])
        };
        let many = vec![format!("SHA-256={sha256}"); 1000].join(",");
        for good in [
            format!("SHA-256={sha256}"),
            format!("sha-256={sha256}, SHA-512={sha512}, md5=x"),
            many.clone(),
        ] {
            assert_eq!(check(&good), Ok(()), "{good:.80}");
        }
        for bad in [
            format!("SHA-256={sha256},SHA-256={other}"),
            format!("SHA-512={sha512},SHA-256={sha256},sha-256={other}"),
            format!("{many},SHA-256={other}"),
            "md5=x".to_owned(),
        ] {
            assert!(check(&bad).is_err(), "{bad:.80}");
        }
    }

    /// Alice's Secret (key `secret`, as in Gloo's own test) and bob's.
    fn resources() -> Resources {
        let yaml = "apiVersion: v1
kind: Secret
metadata: { name: alice, namespace: gloo-system }
type: extauth.solo.io/accountcredentials
stringData: { username: alice, password: secret }
---
apiVersion: v1
kind: Secret
metadata: { name: bob, namespace: gloo-system }
type: extauth.solo.io/accountcredentials
stringData: { username: bob, password: bob-s3cret }
";
        let docs =
            authchain_core::Documents::parse("s.yaml", yaml, authchain_core::Format::Yaml).unwrap();
        docs.resources
    }

    fn step(extra: serde_json::Value) -> HmacAuth {
        let mut doc = json!({
            "secretRefs": { "secretRefs": [{ "name": "alice" }, { "name": "bob" }] },
            "parametersInHeaders": {}
        });
        if let (Some(doc), serde_json::Value::Object(extra)) = (doc.as_object_mut(), extra) {
            doc.extend(extra);
        }
        let resources = resources();
        let context = BuildContext::new("c", "s", "p").with_resources(&resources, "gloo-system");
        HmacAuth::new(serde_json::from_value(doc).unwrap(), &context).unwrap()
    }

    fn gloo_request(authorization: &str) -> AuthorizationRequest {
        AuthorizationRequest::new(http::Method::GET, "/requests")
            .with_header(
                http::header::DATE,
                HeaderValue::from_static("Thu, 22 Jun 2017 17:15:21 GMT"),
            )
            .with_header(
                http::header::AUTHORIZATION,
                HeaderValue::try_from(authorization).unwrap(),
            )
    }

    fn gloo_date() -> SystemTime {
        httpdate::parse_http_date("Thu, 22 Jun 2017 17:15:21 GMT").unwrap()
    }

    fn status(d: &Decision) -> u16 {
        d.as_deny().map_or(200, |d| d.status.as_u16())
    }

    /// Gloo's end-to-end test of `hmacAuth`: its valid signature, the one
    /// made with the wrong key, and the valid one for an unknown user.
    #[test]
    fn gloo_s_own_test_vector() {
        let step = step(json!({}));
        let auth = |user: &str, sig: &str| {
            format!(
                "hmac username=\"{user}\", algorithm=\"hmac-sha256\", headers=\"date @request-target\", signature=\"{sig}\""
            )
        };
        let good = "ujWCGHeec9Xd6UD2zlyxiNMCiXnDOWeVFMu5VeRUxtw=";
        let mut r = gloo_request(&auth("alice", good));
        let d = step.decide_at(&mut r, gloo_date());
        assert!(d.is_allow(), "{d:?}");
        assert_eq!(
            d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
            "alice"
        );
        assert_eq!(r.state.get(STATE_KEY), Some(&json!({ "user": "alice" })));
        // For this request alone: no cache keeps it.
        assert_eq!(d.as_allow().unwrap().expires, Some(gloo_date()));
        for (user, sig) in [
            ("alice", "jypxis61NLyOvHGayXVvp/TiTR96d1as8cJLdqltIGk="),
            ("alice-invalid", good),
        ] {
            let d = step.decide_at(&mut gloo_request(&auth(user, sig)), gloo_date());
            assert_eq!(status(&d), 401, "{user}");
            let deny = d.as_deny().unwrap();
            assert_eq!(
                deny.headers.get(http::header::WWW_AUTHENTICATE).unwrap(),
                CHALLENGE
            );
        }
        // Kong's name for the request line signs the same string.
        let kong = auth("alice", good).replace("@request-target", "request-line");
        assert!(
            step.decide_at(&mut gloo_request(&kong), gloo_date())
                .is_allow()
        );
        // The same request, now: its Date is years away.
        let d = step.decide_at(&mut gloo_request(&auth("alice", good)), SystemTime::now());
        assert_eq!(status(&d), 401);
    }

    #[test]
    fn parameters_parse_strictly() {
        let ok = Params::parse(
            "HMAC  Signature=\"c2ln\" ,username=\"u\",  headers=\"date\", ALGORITHM = \"hmac-sha1\"",
        )
        .unwrap();
        assert_eq!(
            ok,
            Params {
                username: "u",
                algorithm: "hmac-sha1",
                headers: "date",
                signature: "c2ln"
            }
        );
        for bad in [
            "",
            "hmac",
            "hmac ",
            "Basic dTpw",
            "hmacusername=\"u\"",
            "hmac username=u, algorithm=\"a\", headers=\"h\", signature=\"s\"",
            "hmac username=\"u\", username=\"v\", algorithm=\"a\", headers=\"h\", signature=\"s\"",
            "hmac username=\"u\", algorithm=\"a\", headers=\"h\", signature=\"s\",",
            "hmac username=\"u\", algorithm=\"a\", headers=\"h\", signature=\"s\" x",
            "hmac username=\"u\", algorithm=\"a\", headers=\"h\", signature=\"\"",
            "hmac username=\"\", algorithm=\"a\", headers=\"h\", signature=\"s\"",
            "hmac username=\"u\", algorithm=\"a\", headers=\"h\"",
            "hmac username=\"u\\\"\", algorithm=\"a\", headers=\"h\", signature=\"s\"",
            "hmac keyId=\"u\", algorithm=\"a\", headers=\"h\", signature=\"s\"",
            "hmac username=\"u\", algorithm=\"a\", headers=\"h\", signature=\"s",
            "hmac é=\"u\"",
        ] {
            assert!(Params::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_users_are_verified_with_every_user_s_key() {
        let step = step(json!({}));
        let (alice, known) = step.credential("alice");
        assert!(known && alice.user == "alice");
        let drawn: std::collections::BTreeSet<&str> = (0..64)
            .map(|i| step.credential(&format!("nobody-{i}")))
            .map(|(c, known)| {
                assert!(!known);
                c.user.as_str()
            })
            .collect();
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), ["alice", "bob"]);
        // One name, one key: repeating a probe averages nothing out.
        let first = step.credential("mallory").0.user.clone();
        assert!((0..8).all(|_| step.credential("mallory").0.user == first));
    }

    #[test]
    fn debug_shows_no_key() {
        let step = step(json!({}));
        let shown = format!("{step:?}");
        assert!(shown.contains("users: 2"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("secret\""),
            "{shown}"
        );
    }
}
