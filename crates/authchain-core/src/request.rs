//! The request being authorized.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};

use crate::State;

/// The HTTP view of a request to authorize, as an adapter translated it
/// from Envoy's `CheckRequest`, a forward-auth hop or an in-process
/// `http::Request`.
///
/// Steps read it and may change it: a step sees the request as the steps
/// before it mutated it (the chain applies each allow's header and query
/// mutations before the next step runs). [`state`](Self::state) is the
/// scratch space the steps of one chain run share, like the `State` map of
/// Gloo's plugin API.
///
/// Its `Debug` shows no credential: header values, the query, the body
/// and the values of `context`, `metadata` and `state` are left out (their
/// names and sizes are shown), since `Authorization`, cookies, a
/// `?token=`, a posted password, a JWT's claims or a remote's state may be
/// among them.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// The request method.
    pub method: Method,
    /// `http` or `https`; empty when the transport did not say.
    pub scheme: String,
    /// The authority (`Host` / `:authority`), with port when given.
    pub host: String,
    /// The path with its query string (`/a/b?x=1`): as the transport
    /// received it, then in canonical form ([`crate::path`]) once the
    /// chain runs, which is all the steps ever see.
    pub path: String,
    /// Request headers. Names are lower case (as `http` keeps them).
    pub headers: HeaderMap,
    /// The request body, when the transport forwarded it.
    pub body: Option<Bytes>,
    /// The client's HTTP protocol (`HTTP/1.1`, `HTTP/2`), when known:
    /// Envoy's gRPC check and the layer tell it; a check over HTTP does
    /// not (its own version is the hop's).
    pub protocol: String,
    /// An id for the request (Envoy's stream id, or a request id header).
    pub id: String,
    /// The peer that sent the request.
    pub source: Peer,
    /// The peer that received it (the proxy's listener).
    pub destination: Peer,
    /// Per-route string settings (Envoy `context_extensions`).
    pub context: BTreeMap<String, String>,
    /// Filter metadata from the proxy (Envoy `metadata_context`), by namespace.
    pub metadata: Map<String, Value>,
    /// State shared by the steps of one chain run.
    pub state: State,
    /// Typed in-process values (identity objects, handles, ...).
    pub extensions: Extensions,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Header names, each with its number of values.
        struct Names<'a>(&'a HeaderMap);
        impl fmt::Debug for Names<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .keys()
                            .map(|k| (k, Redacted(self.0.get_all(k).iter().count()))),
                    )
                    .finish()
            }
        }
        /// What stands for a value left out.
        struct Redacted(usize);
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{} redacted>", self.0)
            }
        }
        /// Names alone, of a map whose values may hold credentials.
        struct Keys<I>(I);
        impl<I: Iterator<Item = K> + Clone, K: fmt::Debug> fmt::Debug for Keys<I> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_set().entries(self.0.clone()).finish()
            }
        }
        let query = self.query().map(|q| Redacted(q.len()));
        f.debug_struct("AuthorizationRequest")
            .field("method", &self.method)
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("path", &crate::decision_log::logged_path(&self.path))
            .field("query", &query)
            .field("headers", &Names(&self.headers))
            .field("body", &self.body.as_ref().map(|b| Redacted(b.len())))
            .field("protocol", &self.protocol)
            .field("id", &self.id)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("context", &Keys(self.context.keys()))
            .field("metadata", &Keys(self.metadata.keys()))
            .field("state", &Keys(self.state.iter().map(|(k, _)| k)))
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// One end of the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// The socket address, when it is an IP socket.
    pub address: Option<SocketAddr>,
    /// The TLS principal (certificate subject or SAN), when known.
    pub principal: Option<String>,
}

impl Peer {
    /// A peer with only an address; an IPv4-mapped IPv6 one
    /// (`[::ffff:10.1.2.3]:80`, as a socket bound to `[::]` sees an IPv4
    /// client) is the IPv4 address it maps, as rules and policies name it.
    pub fn from_address(address: SocketAddr) -> Self {
        Peer {
            address: Some(SocketAddr::new(address.ip().to_canonical(), address.port())),
            principal: None,
        }
    }
}

impl AuthorizationRequest {
    /// A request with a method and a path (with query); everything else empty.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        AuthorizationRequest {
            method,
            path: path.into(),
            ..Default::default()
        }
    }

    /// Adds a header value (builder style).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the host (builder style).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The first value of a header, if it is present and visible ASCII.
    pub fn header_str(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of cookie `name` in the `Cookie` headers, in order:
    /// each header split at `;`, a pair's name and value trimmed of
    /// spaces and tabs (RFC 6265's whitespace, nothing else), names
    /// compared byte for byte. A [decision cache](crate::cache) keys on
    /// this list; a step that reads a cookie reads it here, so that what
    /// it decides on is in the key.
    pub fn cookies<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.cookie_pairs()
            .filter_map(move |(n, value)| (n == name.as_bytes()).then_some(value))
    }

    /// Every cookie an app may read as cookie `name`, `name` itself
    /// included, as its name and value, in order. Besides the pairs
    /// [`cookies`](Self::cookies) reads, a `,` (Rack 2), a space or a tab
    /// (Python's `SimpleCookie`, ASP.NET Core, which look for a pair past
    /// a malformed one) ends a pair too, and a name is compared as PHP,
    /// Rack and ASP.NET Core read it: percent-decoded (`access%5Ftoken`, a
    /// `+` a space), then as PHP names a variable (`access.token`,
    /// `access[token`), in any case. A step that reads a credential from
    /// a cookie refuses another value under another spelling: the app may
    /// read that one.
    pub fn cookies_spelled_like<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a, 'n> {
        let wanted = php_key(name).to_ascii_lowercase();
        let pieces = self
            .cookie_pieces()
            .flat_map(|piece| split(piece, |b| memchr::memchr3(b',', b' ', b'\t', b)));
        pieces.filter_map(pair).filter(move |(n, _)| {
            // Decoding and PHP's folding only shorten a name; one with
            // nothing to fold is compared as it is.
            if n.len() < wanted.len() {
                return false;
            }
            if !n
                .iter()
                .any(|b| matches!(b, b'%' | b'+' | b'.' | b' ' | b'[' | 0))
            {
                return n.eq_ignore_ascii_case(wanted.as_bytes());
            }
            std::str::from_utf8(n).is_ok_and(|n| {
                php_key(&crate::path::percent_decode(n, true)).eq_ignore_ascii_case(&wanted)
            })
        })
    }

    /// The headers whose names an app that folds punctuation reads as
    /// `name`, `name` itself left out: PHP, WSGI and Rack make
    /// `x-api-key`, `x_api_key` and `x.api.key` all `HTTP_X_API_KEY`, and
    /// lighttpd folds every character but a letter or a digit. A step
    /// that reads a credential from a header refuses a request with any:
    /// the app may read that one.
    pub fn other_spellings<'a, 'n>(
        &'a self,
        name: &'n HeaderName,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + use<'a, 'n> {
        self.headers.iter().filter(move |(n, _)| {
            *n != name && crate::merge::same_folded(n.as_str(), name.as_str())
        })
    }

    /// Every cookie in the `Cookie` headers, as its name and value, in
    /// order, split and trimmed as [`cookies`](Self::cookies) says.
    pub fn cookie_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.cookie_pieces().filter_map(pair)
    }

    /// The `Cookie` headers split at each `;`.
    fn cookie_pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| split(v.as_bytes(), |b| memchr::memchr(b';', b)))
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        match self.path.find('?') {
            Some(i) => &self.path[..i],
            None => &self.path,
        }
    }

    /// The headers as Envoy's `CheckRequest` has them (what a Gloo
    /// passthrough or policy reads): one entry per name, its values joined
    /// with `,` (`cookie`'s with `; `, as HTTP/2 says), non-UTF-8 bytes
    /// replaced, and the pseudo-headers
    /// `:method`, `:path`, `:authority` and `:scheme` (the last two when
    /// known).
    pub fn check_headers(&self) -> BTreeMap<String, String> {
        let mut headers = BTreeMap::new();
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            let separator = match name == http::header::COOKIE {
                true => "; ",
                false => ",",
            };
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v: &mut String| {
                    v.push_str(separator);
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        headers.insert(":method".into(), self.method.as_str().to_owned());
        headers.insert(":path".into(), self.path.clone());
        if !self.host.is_empty() {
            headers.insert(":authority".into(), self.host.clone());
        }
        if !self.scheme.is_empty() {
            headers.insert(":scheme".into(), self.scheme.clone());
        }
        headers
    }

    /// The query string without the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.path.find('?').map(|i| &self.path[i + 1..])
    }

    /// The raw value of the first query parameter named `key`.
    pub fn query_parameter(&self, key: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// Whether the query has a parameter named `key`, in any
    /// percent-encoded or `+` spelling of the name (`tok%65n` for
    /// `token`), as an app that decodes the query would find it, or as
    /// PHP would (`access.token` for `access_token`).
    pub fn has_query_parameter(&self, key: &str) -> bool {
        self.query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| names_parameter(pair.split_once('=').map_or(pair, |(k, _)| k), key))
        })
    }

    /// Sets query parameter `key` to `value`, replacing every existing
    /// occurrence, in any percent-encoded or `+` spelling of the name, or
    /// one PHP reads as it (`user.id`, `user_id[]` for `user_id`; the
    /// first keeps its position, others go). Key and value are written as
    /// given: percent-encode them first if they need it.
    pub fn set_query_parameter(&mut self, key: &str, value: &str) {
        self.rewrite_query(key, Some(value));
    }

    /// Removes every occurrence of query parameter `key`, in any
    /// percent-encoded or `+` spelling of the name (`tok%65n` for
    /// `token`), or one PHP reads as it (`to.ken` for `to_ken`).
    pub fn remove_query_parameter(&mut self, key: &str) {
        self.rewrite_query(key, None);
    }

    /// Sets (`Some`) or removes query parameter `key` in every spelling,
    /// as [`set_query_parameter`](Self::set_query_parameter) and
    /// [`remove_query_parameter`](Self::remove_query_parameter) say; the
    /// names, as written, of the parameters it replaced, once each.
    pub(crate) fn rewrite_query(&mut self, key: &str, value: Option<&str>) -> Vec<String> {
        let mut replaced: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let (path, query) = match self.path.split_once('?') {
            Some((p, q)) => (p, q),
            None => (self.path.as_str(), ""),
        };
        let mut out = String::with_capacity(self.path.len() + key.len() + 8);
        out.push_str(path);
        let mut written = false;
        let mut sep = '?';
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let k = pair.split_once('=').map_or(pair, |(k, _)| k);
            if names_parameter(k, key) {
                if !k.is_empty() && seen.insert(k) {
                    replaced.push(k.to_owned());
                }
                if written {
                    continue;
                }
                match value {
                    Some(v) => {
                        written = true;
                        push_pair(&mut out, &mut sep, key, v);
                    }
                    None => continue,
                }
            } else {
                out.push(sep);
                sep = '&';
                out.push_str(pair);
            }
        }
        if let (Some(v), false) = (value, written) {
            push_pair(&mut out, &mut sep, key, v);
        }
        self.path = out;
        replaced
    }
}

/// `bytes` split at each separator `find` finds, as `<[u8]>::split`
/// splits it (`find` gives the first one's index).
fn split(bytes: &[u8], find: impl Fn(&[u8]) -> Option<usize>) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let bytes = rest?;
        let (piece, after) = match find(bytes) {
            Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
            None => (bytes, None),
        };
        rest = after;
        Some(piece)
    })
}

/// A cookie pair's name and value, trimmed of spaces and tabs; `None`
/// without a `=`.
fn pair(piece: &[u8]) -> Option<(&[u8], &[u8])> {
    fn trim(mut bytes: &[u8]) -> &[u8] {
        while let [b' ' | b'\t', rest @ ..] = bytes {
            bytes = rest;
        }
        while let [rest @ .., b' ' | b'\t'] = bytes {
            bytes = rest;
        }
        bytes
    }
    let eq = memchr::memchr(b'=', piece)?;
    Some((trim(&piece[..eq]), trim(&piece[eq + 1..])))
}

/// A key as PHP names a variable: leading spaces dropped, cut at a NUL,
/// `.` and spaces made `_` (`?.method=` is PHP's `$_GET['_method']`) up to
/// a `[`, which starts an array's index (`a[x]` is array `a`) or, with no
/// `]` after it, is made `_` too, the rest kept as it is (`a[b.c` is
/// `a_b.c`).
pub(crate) fn php_key(key: &str) -> String {
    let key = key.trim_start_matches(' ');
    let key = key.split('\0').next().unwrap_or_default();
    let (head, rest) = key.split_at(key.find('[').unwrap_or(key.len()));
    let mut name = head.replace(['.', ' '], "_");
    match rest.get(1..) {
        Some(after) if !after.contains(']') => {
            name.push('_');
            name.push_str(after);
        }
        _ => {}
    }
    name
}

/// Whether `raw`, a query parameter's name as written, is `key` in any
/// percent-encoded or `+` spelling (`tok%65n` is `token` to an app, or a
/// step, that decodes the query), or, for a `key` that is a plain name
/// to PHP, as PHP names a variable (`user.id` and `user_id[]` are its
/// `$_GET['user_id']`; `page[size]` is no spelling of `page[number]`).
pub(crate) fn names_parameter(raw: &str, key: &str) -> bool {
    if raw == key {
        return true;
    }
    let raw = crate::path::percent_decode(raw, true);
    let key = crate::path::percent_decode(key, true);
    raw == key
        || (raw.contains([' ', '.', '[', '\0']) && php_key(&key) == *key && php_key(&raw) == *key)
}

fn push_pair(out: &mut String, sep: &mut char, key: &str, value: &str) {
    out.push(*sep);
    *sep = '&';
    out.push_str(key);
    out.push('=');
    out.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let mapped = Peer::from_address("[::ffff:10.1.2.3]:80".parse().unwrap());
        assert_eq!(mapped.address, Some("10.1.2.3:80".parse().unwrap()));
        let v6 = Peer::from_address("[::1]:9".parse().unwrap());
        assert_eq!(v6.address, Some("[::1]:9".parse().unwrap()));
    }

    /// A parameter set or removed upstream goes in every spelling an app
    /// reads as its name: else `?user_id=alice&user.id=admin` is `admin`
    /// to PHP, which takes the last.
    #[test]
    fn query_changes_reach_every_spelling_an_app_reads() {
        let mut r = AuthorizationRequest::new(
            Method::GET,
            "/p?user%5Fid=x&user.id=admin&user+id=a&user_id[]=b&user_id[x=c&user_idx=1",
        );
        assert!(r.has_query_parameter("user_id"));
        r.set_query_parameter("user_id", "alice");
        // `user_id[x` is PHP's `user_id_x`.
        assert_eq!(r.path, "/p?user_id=alice&user_id[x=c&user_idx=1");
        let mut r = AuthorizationRequest::new(Method::GET, "/p?access.token=t&a=1");
        assert!(r.has_query_parameter("access_token"));
        r.remove_query_parameter("access_token");
        assert_eq!(r.path, "/p?a=1");
        // An index is no spelling of another index: JSON:API's pages.
        let mut r = AuthorizationRequest::new(Method::GET, "/p?page[number]=3&page[size]=500");
        r.set_query_parameter("page[size]", "50");
        assert_eq!(r.path, "/p?page[number]=3&page[size]=50");
        r.remove_query_parameter("page%5Bnumber%5D");
        assert_eq!(r.path, "/p?page[size]=50");
    }

    #[test]
    fn php_names_variables_so() {
        for (key, named) in [
            ("_method", "_method"),
            (" .method", "_method"),
            ("a.b c", "a_b_c"),
            ("a[b", "a_b"),
            ("a[b.c", "a_b.c"),
            ("a.b[c]", "a_b"),
            ("a\0b", "a"),
            ("[", "_"),
        ] {
            assert_eq!(php_key(key), named, "{key:?}");
        }
    }

    #[test]
    fn path_and_query_accessors() {
        let r = AuthorizationRequest::new(Method::GET, "/a/b?x=1&y&z=3");
        assert_eq!(r.path_only(), "/a/b");
        assert_eq!(r.query(), Some("x=1&y&z=3"));
        assert_eq!(r.query_parameter("x"), Some("1"));
        assert_eq!(r.query_parameter("y"), Some(""));
        assert_eq!(r.query_parameter("w"), None);
        assert!(r.has_query_parameter("y") && !r.has_query_parameter("w"));
        let r = AuthorizationRequest::new(Method::GET, "/a?b=1&access%5Ftok%65n=t");
        assert!(r.has_query_parameter("access_token"));
        let r = AuthorizationRequest::new(Method::GET, "/plain");
        assert_eq!(r.path_only(), "/plain");
        assert_eq!(r.query(), None);
    }

    #[test]
    fn check_headers_are_envoy_s() {
        let mut r = AuthorizationRequest::new(Method::GET, "/a?b=1").with_host("app.example");
        for (name, value) in [
            ("x-a", "1"),
            ("x-a", "2"),
            ("cookie", "s=1"),
            ("cookie", "t=2"),
        ] {
            r.headers
                .append(name, HeaderValue::from_str(value).unwrap());
        }
        let h = r.check_headers();
        assert_eq!(h["x-a"], "1,2");
        assert_eq!(h["cookie"], "s=1; t=2");
        assert_eq!(h[":authority"], "app.example");
        assert_eq!(h[":path"], "/a?b=1");
        assert_eq!(h[":method"], "GET");
        assert!(!h.contains_key(":scheme"));
    }

    #[test]
    fn debug_shows_no_credential() {
        let mut r = AuthorizationRequest::new(Method::POST, "/login?token=tok-s3cret")
            .with_header(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer bearer-s3cret"),
            )
            .with_header(
                http::header::COOKIE,
                HeaderValue::from_static("session=cookie-s3cret"),
            );
        r.body = Some(Bytes::from_static(b"password=body-s3cret"));
        r.state
            .insert("jwt", serde_json::json!({ "token": "state-s3cret" }));
        r.metadata
            .insert("envoy.filters.http.jwt_authn".into(), "meta-s3cret".into());
        r.context.insert("secret".into(), "context-s3cret".into());
        let shown = format!("{r:?} {r:#?}");
        assert!(
            shown.contains("jwt_authn") && shown.contains("\"jwt\""),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("authorization") && shown.contains("/login"),
            "{shown}"
        );
    }

    #[test]
    fn query_rewrites_keep_order_and_replace_every_copy() {
        let mut r = AuthorizationRequest::new(Method::GET, "/p?a=1&b=2&a=3");
        r.set_query_parameter("a", "9");
        assert_eq!(r.path, "/p?a=9&b=2");
        r.set_query_parameter("c", "x");
        assert_eq!(r.path, "/p?a=9&b=2&c=x");
        r.remove_query_parameter("a");
        assert_eq!(r.path, "/p?b=2&c=x");
        r.remove_query_parameter("b");
        r.remove_query_parameter("c");
        assert_eq!(r.path, "/p");
        r.set_query_parameter("k", "v");
        assert_eq!(r.path, "/p?k=v");
        // Every spelling of the name goes, as an app that decodes the
        // query reads them all as one.
        let mut r = AuthorizationRequest::new(Method::GET, "/p?via=x&v%69a=evil&v+a=1&token=t");
        r.set_query_parameter("via", "authchain");
        assert_eq!(r.path, "/p?via=authchain&v+a=1&token=t");
        let mut r = AuthorizationRequest::new(Method::GET, "/p?tok%65n=s&a=1&%74oken=u");
        r.remove_query_parameter("token");
        assert_eq!(r.path, "/p?a=1");
    }
}
