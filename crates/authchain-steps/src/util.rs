//! Helpers the steps share: credential extraction, config checks, files.

use authchain_core::resources::{ResourceRef, Secret};
use authchain_core::{AuthorizationRequest, BuildContext, Decision, Deny, Error};
use http::{HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, Instant};

/// The longest credential (header value or cookie) a step looks at. A
/// longer one is a bad credential (401) without further work, so a huge
/// header costs nothing.
pub(crate) const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// Parses a header name from a config, as an error placed at `place`.
pub(crate) fn header_name(name: &str, place: &str) -> Result<HeaderName, Error> {
    HeaderName::try_from(name).map_err(|_| Error::config("not a valid header name").at(place))
}

/// Parses a header value from a config, as an error placed at `place`.
/// The value is not quoted in the error: it may be secret.
pub(crate) fn header_value(value: &str, place: &str) -> Result<HeaderValue, Error> {
    HeaderValue::try_from(value)
        .map_err(|_| Error::config("not a valid header value (visible ASCII only)").at(place))
}

/// A 401 that asks for a credential with `challenge` in
/// `WWW-Authenticate`.
pub(crate) fn challenge(challenge: &HeaderValue) -> Decision {
    Deny::new(StatusCode::UNAUTHORIZED)
        .header(http::header::WWW_AUTHENTICATE, challenge.clone())
        .into()
}

/// An HTTP and HTTPS connector with a connect timeout. TLS uses rustls
/// with the aws-lc-rs provider, named explicitly so that another crate's
/// choice of provider cannot change it; roots are the system's, or
/// Mozilla's (webpki-roots) where the system has none.
pub(crate) fn https_connector(
    timeout: std::time::Duration,
) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Error>
{
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(b) => b,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(Error::build)?,
    };
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

/// `bytes` in lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The Secret `reference` names from the step's AuthConfig, which must be
/// of type `kind`; an error is placed at `place` and names no value.
pub(crate) fn typed_secret<'c>(
    context: &BuildContext<'c>,
    reference: &ResourceRef,
    kind: &str,
    place: &str,
) -> Result<&'c Secret, Error> {
    let secret = context
        .resources
        .secret_ref(reference, context.namespace)
        .map_err(|e| e.at(place))?;
    if secret.kind != kind {
        return Err(Error::config(format!("expected a Secret of type `{kind}`")).at(place));
    }
    Ok(secret)
}

/// The data entry `entry` of `secret`; an error names the Secret and the
/// entry, never a value.
pub(crate) fn secret_bytes<'s>(secret: &'s Secret, entry: &str) -> Result<&'s [u8], Error> {
    secret.data.get(entry).map(Vec::as_slice).ok_or_else(|| {
        Error::config(format!(
            "the Secret {}/{} has no `{entry}`",
            secret.namespace, secret.name
        ))
    })
}

/// The data entry `entry` of `secret` as text; an error names the Secret
/// and the entry, never a value.
pub(crate) fn secret_text(secret: &Secret, entry: &str) -> Result<String, Error> {
    String::from_utf8(secret_bytes(secret, entry)?.to_vec()).map_err(|_| {
        Error::config(format!(
            "the Secret {}/{}: `{entry}` is not UTF-8",
            secret.namespace, secret.name
        ))
    })
}

/// The value of a header after a case-insensitive scheme prefix
/// (`Bearer `, `Basic `), if the first value of `name` has it.
///
/// `Ok(None)`: no such header. `Err(())`: present but not usable
/// (sent twice, too long, not visible ASCII, another scheme, empty
/// credential), or sent under another spelling too. A header sent twice
/// is refused: the app behind may read the other one (`Authorization` is
/// one value, not a list); so is one under another spelling
/// (`x_access_token` for `x-access-token`), which a CGI-style app reads
/// as the same.
pub(crate) fn scheme_credential<'a>(
    request: &'a AuthorizationRequest,
    name: &HeaderName,
    scheme: &str,
) -> Result<Option<&'a str>, ()> {
    if request.other_spellings(name).next().is_some() {
        return Err(());
    }
    let mut all = request.headers.get_all(name).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(());
    }
    if value.len() > MAX_CREDENTIAL_LEN {
        return Err(());
    }
    // Trimmed as an HTTP parser does (RFC 9110 5.5), not of Unicode's
    // spaces, which an app keeps.
    let value = value.to_str().map_err(|_| ())?;
    strip_prefix_ignore_case(value, scheme)
        .map(|v| v.trim_matches([' ', '\t']))
        .filter(|v| !v.is_empty())
        .map(Some)
        .ok_or(())
}

/// Whether header `name` is one value of another scheme than `scheme`'s
/// (`Basic abc` for `Bearer `): no credential of the step's (RFC 6750
/// 3.1), where [`scheme_credential`] refuses it with the unusable ones.
/// Only a value that reads `word credentials` is another scheme's: not a
/// bare one (`eyJ...`, which an app may take for a token), not one with
/// a piece that starts with the scheme's word (`Bearer`, `bearerX`; a
/// proxy joins a repeated header with `,`, as Envoy does `Basic a` and
/// `Bearer x`), and not a second value or another spelling.
pub(crate) fn other_scheme(
    request: &AuthorizationRequest,
    name: &HeaderName,
    scheme: &str,
) -> bool {
    let word = scheme.trim_end().as_bytes();
    let mut all = request.headers.get_all(name).iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return false;
    };
    let value = value.as_bytes().trim_ascii_start();
    let scheme_shaped = value.contains(&b' ');
    let starts_with_word = |piece: &[u8]| {
        let piece = piece.trim_ascii_start();
        piece
            .get(..word.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(word))
    };
    !word.is_empty()
        && scheme_shaped
        && !value.split(|&b| b == b',').any(starts_with_word)
        && request.other_spellings(name).next().is_none()
}

/// `value` without `prefix`, compared ASCII-case-insensitively.
pub(crate) fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The longest `Cookie` header read: Envoy's default limit on all the
/// request's headers, room for a session in four parts and the site's
/// other cookies.
const MAX_COOKIE_HEADER: usize = 60 * 1024;

/// The value of cookie `name` in the request's `Cookie` headers.
/// `Err(())` when a `Cookie` header is too long, or when two copies have
/// different values: another subdomain or a plain-HTTP page may have
/// planted one, and the order a browser sends them in does not say
/// which this site set.
pub(crate) fn cookie<'a>(
    request: &'a AuthorizationRequest,
    name: &str,
) -> Result<Option<&'a str>, ()> {
    let [value] = cookie_parts::<1>(request, name);
    value
}

/// [`cookie`] for cookie `name` and its parts `name.1` to `name.{N-1}`,
/// read in one pass: part `i`'s value at `i`, each as [`cookie`] gives it.
pub(crate) fn cookie_parts<'a, const N: usize>(
    request: &'a AuthorizationRequest,
    name: &str,
) -> [Result<Option<&'a str>, ()>; N] {
    const { assert!(N <= 10, "a part's number is one digit") };
    let mut parts = [Ok(None); N];
    if refuse_long_cookies(request).is_err() {
        return [Err(()); N];
    }
    for (n, value) in request.cookie_pairs() {
        let i = match n.strip_prefix(name.as_bytes()) {
            Some([]) => 0,
            Some([b'.', d @ b'1'..=b'9']) => usize::from(d - b'0'),
            _ => continue,
        };
        let (Some(part), Ok(value)) = (parts.get_mut(i), cookie_text(value)) else {
            continue;
        };
        match *part {
            Ok(None) => *part = Ok(Some(value)),
            Ok(Some(first)) if first != value => *part = Err(()),
            _ => {}
        }
    }
    parts
}

/// [`cookie`], for a credential: a second copy with another value, or
/// another value under another spelling of the name (PHP reads
/// `access.token` as `access_token`), is `Err(())` too, since the app
/// behind may read that one (Django takes the last).
pub(crate) fn credential_cookie<'a>(
    request: &'a AuthorizationRequest,
    name: &str,
) -> Result<Option<&'a str>, ()> {
    refuse_long_cookies(request)?;
    // Not text: no credential, but maybe the copy the app reads.
    the_one(
        request
            .cookies_spelled_like(name)
            .map(|(_, value)| cookie_text(value).map_err(|_| ())),
    )
}

/// The value all of `values` are, if any; `Err(())` at an error among
/// them or at two that differ.
fn the_one<'a>(values: impl Iterator<Item = Result<&'a str, ()>>) -> Result<Option<&'a str>, ()> {
    let mut found = None;
    for value in values {
        let value = value?;
        match found {
            None => found = Some(value),
            Some(first) if first != value => return Err(()),
            Some(_) => {}
        }
    }
    Ok(found)
}

/// The names of the cookies `request` carries that are text and that
/// `wanted` takes, each once, in the order first sent: the first `most`
/// of them (a client sends thousands of names in a few kilobytes).
pub(crate) fn cookie_names(
    request: &AuthorizationRequest,
    wanted: impl Fn(&str) -> bool,
    most: usize,
) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in request.cookie_pairs() {
        if names.len() == most {
            break;
        }
        if let Ok(name) = std::str::from_utf8(name)
            && wanted(name)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// `Err(())` when a `Cookie` header is longer than [`MAX_COOKIE_HEADER`].
fn refuse_long_cookies(request: &AuthorizationRequest) -> Result<(), ()> {
    let too_long = request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .any(|v| v.len() > MAX_COOKIE_HEADER);
    match too_long {
        true => Err(()),
        false => Ok(()),
    }
}

/// A cookie's value as text, without the quotes around it.
fn cookie_text(value: &[u8]) -> Result<&str, std::str::Utf8Error> {
    std::str::from_utf8(value).map(|v| v.trim_matches('"'))
}

/// A JSON value as a header value, if it makes one: strings as they are,
/// numbers and booleans printed, anything else as compact JSON. A string
/// with spaces or tabs around it makes none: the app's HTTP parser strips
/// them (RFC 9110 5.5), so it would read `admin` where the steps judged
/// ` admin`.
pub(crate) fn json_header_value(value: &serde_json::Value) -> Option<HeaderValue> {
    let text = match value {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.trim_matches([' ', '\t']) != text {
        return None;
    }
    HeaderValue::try_from(text).ok()
}

/// A keyed pseudo-random function with a secret, random, per-instance
/// key: SipHash (the standard library's randomly keyed hasher) over the
/// input, finished with two different domain bytes, for 128 bits.
///
/// Secrets are looked up and cached by their PRF value rather than by
/// their bytes: how long a lookup takes then depends on a value an
/// attacker cannot compute, not on how much of a real secret they have
/// guessed, and a cache holds no password or key, nor a fast unkeyed
/// hash of one. It is much cheaper per request than SHA-256.
#[derive(Clone)]
pub(crate) struct Prf(std::collections::hash_map::RandomState);

impl std::fmt::Debug for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prf(<secret key>)")
    }
}

impl Prf {
    /// A PRF with a fresh random key.
    pub(crate) fn new() -> Self {
        Prf(std::collections::hash_map::RandomState::new())
    }

    /// The 128-bit PRF of the concatenation of `parts`, each
    /// length-prefixed so that `("ab", "c")` and `("a", "bc")` differ.
    ///
    /// The input is absorbed once; the two 64-bit halves are SipHash of
    /// that input followed by two different final domain bytes (the
    /// hasher's state is copied after the shared prefix), so each half is
    /// the PRF of a distinct, unambiguous message.
    pub(crate) fn hash(&self, parts: &[&[u8]]) -> u128 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.0.build_hasher();
        h.write_u8(0xff);
        for p in parts {
            h.write_usize(p.len());
            h.write(p);
        }
        let mut lo = h.clone();
        h.write_u8(1);
        lo.write_u8(2);
        (u128::from(h.finish()) << 64) | u128::from(lo.finish())
    }

    /// A 64-bit PRF of `bytes`, for lookups that are confirmed by a
    /// constant-time comparison afterwards. One message per key: SipHash
    /// absorbs it in one call and binds its length in the last block, so
    /// no prefix is needed (a `Prf` used with both [`hash`](Self::hash)
    /// and this must not compare their outputs).
    pub(crate) fn hash64(&self, bytes: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.0.build_hasher();
        h.write(bytes);
        h.finish()
    }
}

/// The hasher of maps keyed by PRF values.
pub(crate) type PrfKeyed = std::hash::BuildHasherDefault<PassThrough>;

/// A hasher for keys that are PRF values already: it passes the value
/// through rather than hashing it again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is expected; fold anything else in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write_u128(&mut self, n: u128) {
        // Both halves of a 128-bit PRF value are uniformly random.
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

/// Values kept under PRF keys, each until a deadline of its own, within
/// a bound on their weight: quick_cache, as the decision cache, with the
/// deadline checked on read (a value past it is gone).
pub(crate) struct Kept<V> {
    entries: quick_cache::sync::Cache<u128, (V, Instant), Weigh<V>, PrfKeyed>,
}

/// What a kept value weighs.
pub(crate) struct Weigh<V>(fn(&V) -> u64);

impl<V> Clone for Weigh<V> {
    fn clone(&self) -> Self {
        Weigh(self.0)
    }
}

impl<V> quick_cache::Weighter<u128, (V, Instant)> for Weigh<V> {
    fn weight(&self, _: &u128, (value, _): &(V, Instant)) -> u64 {
        // A value of no weight would never be evicted.
        (self.0)(value).max(1)
    }
}

impl<V: Clone> Kept<V> {
    /// At most `count` values.
    pub(crate) fn new(count: u64) -> Self {
        Kept::weighed(count, count, |_| 1)
    }

    /// Values that weigh `capacity` at most in all, each what `weigh`
    /// says; `count` is about how many that makes.
    pub(crate) fn weighed(count: u64, capacity: u64, weigh: fn(&V) -> u64) -> Self {
        let items = usize::try_from(count.max(1)).unwrap_or(usize::MAX);
        // A few shards whatever the host: a value heavier than a shard's
        // share of `capacity` is never kept (quick_cache takes four per
        // CPU).
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity.max(1))
            .shards(16)
            .build();
        let entries = match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                Weigh(weigh),
                PrfKeyed::default(),
                Default::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with(
                items,
                capacity.max(1),
                Weigh(weigh),
                PrfKeyed::default(),
                Default::default(),
            ),
        };
        Kept { entries }
    }

    /// The value kept under `key`, unless its deadline has passed.
    pub(crate) fn get(&self, key: u128) -> Option<V> {
        let (value, until) = self.entries.get(&key)?;
        if until > Instant::now() {
            return Some(value);
        }
        self.entries
            .remove_if(&key, |(_, until)| *until <= Instant::now());
        None
    }

    /// Forgets the value under `key`.
    pub(crate) fn remove(&self, key: u128) {
        self.entries.remove(&key);
    }

    /// Keeps `value` under `key` for `keep`; a value for no time, or for
    /// longer than the clock counts, is not kept.
    pub(crate) fn insert(&self, key: u128, value: V, keep: Duration) {
        if let Some(until) = Instant::now().checked_add(keep)
            && !keep.is_zero()
        {
            self.entries.insert(key, (value, until));
        }
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths
/// only (`subtle`'s comparison).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// A decoded HTTP Basic credential (a secret: it lives no longer than the
/// check).
pub(crate) struct BasicCredential(Vec<u8>);

impl BasicCredential {
    /// `None` for text that is not base64.
    pub(crate) fn decode(encoded: &str) -> Option<BasicCredential> {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        STANDARD.decode(encoded).ok().map(BasicCredential)
    }

    /// The user and the password; `None` when malformed (no colon, a user
    /// that is empty or not UTF-8).
    pub(crate) fn split(&self) -> Option<(&str, &[u8])> {
        let decoded = &self.0[..];
        let colon = decoded.iter().position(|b| *b == b':')?;
        let user = std::str::from_utf8(&decoded[..colon]).ok()?;
        (!user.is_empty()).then_some((user, &decoded[colon + 1..]))
    }
}

/// `host` without its port (`a.example.com:8080`, `[::1]:80`).
pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8080
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.example.com:8080"), "a.example.com");
        assert_eq!(strip_port("a.example.com"), "a.example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"0123456789abcdefXYZ", b"0123456789abcdefXYZ"));
        assert!(!ct_eq(b"0123456789abcdefXYZ", b"0123456789abcdefXYz"));
        assert!(!ct_eq(b"0123456789abcdefXYZ", b"1123456789abcdefXYZ"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn kept_values_last_until_their_deadline() {
        let kept = Kept::new(16);
        kept.insert(1, "a", Duration::from_millis(500));
        kept.insert(2, "b", Duration::from_secs(60));
        kept.insert(3, "c", Duration::ZERO);
        kept.insert(4, "d", Duration::MAX);
        assert_eq!((kept.get(1), kept.get(2)), (Some("a"), Some("b")));
        assert_eq!((kept.get(3), kept.get(4)), (None, None));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!((kept.get(1), kept.get(2)), (None, Some("b")));
    }

    #[test]
    fn kept_values_stay_within_their_weight() {
        let kept: Kept<Vec<u8>> = Kept::weighed(4, 4096, |v| v.len() as u64);
        for key in 0..64 {
            kept.insert(key, vec![0; 512], Duration::from_secs(60));
        }
        let held = (0..64).filter(|k| kept.get(*k).is_some()).count();
        assert!(
            (1..=8).contains(&held),
            "{held} values of 512 bytes in 4096"
        );
    }

    #[test]
    fn prf_separates_parts_and_instances() {
        let p = Prf::new();
        assert_eq!(p.hash(&[b"ab", b"c"]), p.hash(&[b"ab", b"c"]));
        assert_ne!(p.hash(&[b"ab", b"c"]), p.hash(&[b"a", b"bc"]));
        assert_ne!(p.hash(&[b"ab"]), Prf::new().hash(&[b"ab"]));
    }

    #[test]
    fn another_scheme_is_only_one_that_reads_so() {
        let bearer = "Bearer ";
        let with = |values: &[&str]| {
            let mut req = AuthorizationRequest::new(http::Method::GET, "/");
            for v in values {
                req.headers.append(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            other_scheme(&req, &http::header::AUTHORIZATION, bearer)
        };
        for other in ["Basic abc", "Token x", " Digest a=1, b=2", "Basic "] {
            assert!(with(&[other]), "{other:?}");
        }
        for not in [
            "Bearer x",
            "bearer",
            "BearerX",
            "  Bearer x",
            "Basic a,Bearer x",
            "Basic a, bearer x",
            "eyJhbGciOiJub25lIn0",
            "",
        ] {
            assert!(!with(&[not]), "{not:?}");
        }
        assert!(!with(&[]));
        assert!(!with(&["Basic a", "Basic b"]));
        // No word, no other scheme (a custom header read whole).
        let req = AuthorizationRequest::new(http::Method::GET, "/").with_header(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic a"),
        );
        assert!(!other_scheme(&req, &http::header::AUTHORIZATION, ""));
    }

    #[test]
    fn schemes_and_cookies() {
        let req = AuthorizationRequest::new(http::Method::GET, "/")
            .with_header(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("bearer  abc "),
            )
            .with_header(
                http::header::COOKIE,
                HeaderValue::from_static("a=1; tok=\"xyz\""),
            );
        assert_eq!(
            scheme_credential(&req, &http::header::AUTHORIZATION, "Bearer "),
            Ok(Some("abc"))
        );
        assert_eq!(
            scheme_credential(&req, &http::header::AUTHORIZATION, "Basic "),
            Err(())
        );
        assert_eq!(
            scheme_credential(&req, &http::header::COOKIE.clone(), "x"),
            Err(())
        );
        assert_eq!(cookie(&req, "tok"), Ok(Some("xyz")));
        assert_eq!(cookie(&req, "b"), Ok(None));
        assert_eq!(strip_prefix_ignore_case("é", "e"), None);
        // Sent twice, even the same: the app may read the other one.
        let mut twice = req.clone();
        twice.headers.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            scheme_credential(&twice, &http::header::AUTHORIZATION, "Bearer "),
            Err(())
        );
        // Not visible ASCII: a no-break space after the token (which
        // `str::trim` took away) or any other byte past ASCII.
        for value in ["Bearer abc\u{a0}", "Bearer \u{3000}abc", "Bearer ab\u{e9}"] {
            let req = AuthorizationRequest::new(http::Method::GET, "/").with_header(
                http::header::AUTHORIZATION,
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
            let read = scheme_credential(&req, &http::header::AUTHORIZATION, "Bearer ");
            assert_eq!(read, Err(()), "{value:?}");
        }
    }
}
