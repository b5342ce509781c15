//! What a step, and a chain, answer: allow with mutations, or deny.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{Entry, IntoHeaderName};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};

/// What to do with a header, with Envoy's four `append_action`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HeaderAction {
    /// Add another value; add the header when it is absent
    /// (`APPEND_IF_EXISTS_OR_ADD`, Envoy's default).
    #[default]
    AppendIfExistsOrAdd,
    /// Add the header only when it is absent (`ADD_IF_ABSENT`).
    AddIfAbsent,
    /// Replace every value, or add the header (`OVERWRITE_IF_EXISTS_OR_ADD`).
    OverwriteIfExistsOrAdd,
    /// Replace every value, only when the header is present
    /// (`OVERWRITE_IF_EXISTS`).
    OverwriteIfExists,
}

impl HeaderAction {
    /// Whether what it does depends on the header being present.
    pub(crate) fn depends_on_presence(self) -> bool {
        matches!(
            self,
            HeaderAction::AddIfAbsent | HeaderAction::OverwriteIfExists
        )
    }

    /// Applies the action with `value` to one header's `entry` (one lookup
    /// of the name serves the check and the change); returns whether it
    /// changed the map.
    pub(crate) fn apply(self, entry: Entry<'_, HeaderValue>, value: HeaderValue) -> bool {
        use HeaderAction::*;
        match (self, entry) {
            (AppendIfExistsOrAdd | AddIfAbsent | OverwriteIfExistsOrAdd, Entry::Vacant(vacant)) => {
                vacant.insert(value);
            }
            (AppendIfExistsOrAdd, Entry::Occupied(mut occupied)) => {
                occupied.append(value);
            }
            (OverwriteIfExistsOrAdd | OverwriteIfExists, Entry::Occupied(mut occupied)) => {
                occupied.insert(value);
            }
            (AddIfAbsent, Entry::Occupied(_)) | (OverwriteIfExists, Entry::Vacant(_)) => {
                return false;
            }
        }
        true
    }

    /// Applies the action with `value` to the header `name` in `headers`;
    /// returns whether it changed the map.
    pub(crate) fn apply_to(
        self,
        headers: &mut HeaderMap,
        name: impl IntoHeaderName,
        value: HeaderValue,
    ) -> bool {
        match self {
            // The two actions that change the map whatever it holds: one
            // pass, where an entry's lookup and then its insert take two.
            HeaderAction::OverwriteIfExistsOrAdd => {
                headers.insert(name, value);
                true
            }
            HeaderAction::AppendIfExistsOrAdd => {
                headers.append(name, value);
                true
            }
            HeaderAction::AddIfAbsent | HeaderAction::OverwriteIfExists => {
                self.apply(headers.entry(name), value)
            }
        }
    }
}

/// A header to change on the upstream request or the client response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMutation {
    /// The header name.
    pub name: HeaderName,
    /// The value. `http::HeaderValue` admits no invalid byte, so a mutation
    /// can never put a malformed header on the wire.
    pub value: HeaderValue,
    /// How to apply it.
    pub action: HeaderAction,
}

impl HeaderMutation {
    /// A mutation.
    pub fn new(name: HeaderName, value: HeaderValue, action: HeaderAction) -> Self {
        HeaderMutation {
            name,
            value,
            action,
        }
    }

    /// Applies the mutation to `headers`; returns whether it changed them.
    pub fn apply(&self, headers: &mut HeaderMap) -> bool {
        self.action
            .apply_to(headers, &self.name, self.value.clone())
    }
}

/// Who the request is from, as a step established it.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct UserInfo {
    /// The user id (Gloo's `UserInfo.UserID`).
    pub user_id: String,
    /// Further claims or attributes a step chose to expose.
    pub attributes: Map<String, Value>,
}

impl UserInfo {
    /// A user with an id and no attributes.
    pub fn new(user_id: impl Into<String>) -> Self {
        UserInfo {
            user_id: user_id.into(),
            attributes: Map::new(),
        }
    }
}

/// An allow, with what to change on the way upstream and back.
///
/// A step's allow lists its own mutations, applied in order (header
/// mutations first, then removals). The chain's final allow carries the
/// merged result of all its steps, normalised so that each header name has
/// at most one entry that replaces it (`OverwriteIfExistsOrAdd`, first) or
/// only adding entries, and no name is both set and removed. See
/// [`Chain`](crate::Chain) for the merge rules.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Allow {
    /// Changes to the upstream request's headers, in order.
    pub headers: Vec<HeaderMutation>,
    /// Upstream request headers to remove.
    pub headers_to_remove: Vec<HeaderName>,
    /// Headers to add to the response the client gets.
    pub response_headers: Vec<HeaderMutation>,
    /// Query parameters to set on the upstream request.
    pub query_parameters_to_set: Vec<(String, String)>,
    /// Query parameters to remove from the upstream request.
    pub query_parameters_to_remove: Vec<String>,
    /// Metadata for the proxy (Envoy `dynamic_metadata`).
    pub dynamic_metadata: Map<String, Value>,
    /// The authenticated user, if a step established one.
    pub user_info: Option<UserInfo>,
    /// When the credential this allow was given for expires (a JWT's
    /// `exp`, an introspection's, a session's): a remembered allow is
    /// never kept past it. The chain's allow carries its steps' earliest.
    pub expires: Option<SystemTime>,
}

impl Allow {
    /// An allow that changes nothing.
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn mutate(mut self, name: HeaderName, value: HeaderValue, action: HeaderAction) -> Self {
        self.headers.push(HeaderMutation::new(name, value, action));
        self
    }

    /// Says when the credential this allow was given for expires.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// Sets an upstream header, replacing any value (`OverwriteIfExistsOrAdd`).
    #[inline]
    pub fn set_header(self, name: HeaderName, value: HeaderValue) -> Self {
        self.mutate(name, value, HeaderAction::OverwriteIfExistsOrAdd)
    }

    /// Appends an upstream header value (`AppendIfExistsOrAdd`).
    #[inline]
    pub fn append_header(self, name: HeaderName, value: HeaderValue) -> Self {
        self.mutate(name, value, HeaderAction::AppendIfExistsOrAdd)
    }

    /// Adds an upstream header only when absent (`AddIfAbsent`).
    #[inline]
    pub fn add_header_if_absent(self, name: HeaderName, value: HeaderValue) -> Self {
        self.mutate(name, value, HeaderAction::AddIfAbsent)
    }

    /// Replaces an upstream header only when present (`OverwriteIfExists`).
    #[inline]
    pub fn overwrite_header_if_exists(self, name: HeaderName, value: HeaderValue) -> Self {
        self.mutate(name, value, HeaderAction::OverwriteIfExists)
    }

    /// Removes an upstream header.
    #[inline]
    pub fn remove_header(mut self, name: HeaderName) -> Self {
        self.headers_to_remove.push(name);
        self
    }

    /// Adds a header to the response the client gets.
    #[inline]
    pub fn response_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.response_headers.push(HeaderMutation::new(
            name,
            value,
            HeaderAction::AppendIfExistsOrAdd,
        ));
        self
    }

    /// Sets a query parameter on the upstream request.
    pub fn set_query_parameter(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query_parameters_to_set
            .push((key.into(), value.into()));
        self
    }

    /// Removes a query parameter from the upstream request.
    pub fn remove_query_parameter(mut self, key: impl Into<String>) -> Self {
        self.query_parameters_to_remove.push(key.into());
        self
    }

    /// Why the allow's query changes cannot be carried out as given, if
    /// they cannot: a key or value that would change the URL's structure
    /// (a space, a control character, `#`, `&`, non-ASCII: percent-encode
    /// those; in a key also `=`, or none at all). The chain fails a step
    /// whose allow has one, closed, on every transport.
    pub fn query_problem(&self) -> Option<String> {
        let bad = |part: &str, is_key: bool| {
            (is_key && part.is_empty())
                || part.chars().any(|c| {
                    !c.is_ascii_graphic() || matches!(c, '#' | '&') || (is_key && c == '=')
                })
        };
        let name = |key: &str| key.chars().take(64).collect::<String>();
        for (key, value) in &self.query_parameters_to_set {
            if bad(key, true) {
                return Some(format!(
                    "query parameter {:?} is empty or has characters that must be percent-encoded",
                    name(key)
                ));
            }
            if bad(value, false) {
                return Some(format!(
                    "the value of query parameter {:?} has characters that must be percent-encoded",
                    name(key)
                ));
            }
        }
        let key = self
            .query_parameters_to_remove
            .iter()
            .find(|k| bad(k, true))?;
        Some(format!(
            "query parameter {:?} is empty or has characters that must be percent-encoded",
            name(key)
        ))
    }

    /// Adds an entry to the dynamic metadata.
    pub fn metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.dynamic_metadata.insert(key.into(), value);
        self
    }

    /// Records the authenticated user.
    pub fn user(mut self, user: UserInfo) -> Self {
        self.user_info = Some(user);
        self
    }

    /// Applies the upstream header changes to `headers`: mutations in
    /// order, then removals.
    pub fn apply_to_headers(&self, headers: &mut HeaderMap) {
        for m in &self.headers {
            m.apply(headers);
        }
        for name in &self.headers_to_remove {
            headers.remove(name);
        }
    }
}

/// A deny: what the client gets instead of the upstream response.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Deny {
    /// The status (403 unless a step says otherwise).
    pub status: StatusCode,
    /// Headers for the client (`WWW-Authenticate`, ...).
    pub headers: HeaderMap,
    /// The body for the client.
    pub body: Bytes,
}

impl Deny {
    /// Whether `status` can be a deny's: a redirect a step asks for (301,
    /// 302, 303, 307, 308), or a client or server error (4xx, 5xx).
    /// Forward-auth proxies let a request through on any 2xx, so a 1xx or
    /// 2xx "deny" would be an allow, and a 304 tells a browser or a cache
    /// to serve the copy it kept (as would 300, 305 and 306, which are
    /// no redirects either): the chain answers such a deny with 403
    /// instead, and configs refuse such statuses when they are built.
    pub fn is_deny_status(status: StatusCode) -> bool {
        matches!(status.as_u16(), 301..=303 | 307 | 308 | 400..=599)
    }

    /// Whether `status` can be the deny of an error (`statusOnError`): a
    /// client or server error. Not a redirect: it carries no `Location`,
    /// and a browser may keep a 301 or a 308.
    pub(crate) fn is_error_status(status: StatusCode) -> bool {
        status.is_client_error() || status.is_server_error()
    }

    /// A deny with a status, no headers and no body.
    pub fn new(status: StatusCode) -> Self {
        Deny {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header for the client.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// The answer of a step or a chain. A deny is a value, not an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Let the request through, with these changes.
    Allow(Allow),
    /// Stop the request with this response.
    Deny(Deny),
}

impl Decision {
    /// Allow with no changes (Gloo's `AuthorizedResponse()`).
    #[inline]
    pub fn authorized() -> Self {
        Decision::Allow(Allow::new())
    }

    /// Deny with 403 Forbidden (Gloo's `UnauthorizedResponse()`).
    #[inline]
    pub fn unauthorized() -> Self {
        Decision::Deny(Deny::new(StatusCode::FORBIDDEN))
    }

    /// Deny with 401 Unauthorized (Gloo's `UnauthenticatedResponse()`).
    #[inline]
    pub fn unauthenticated() -> Self {
        Decision::Deny(Deny::new(StatusCode::UNAUTHORIZED))
    }

    /// Deny with `status`.
    #[inline]
    pub fn deny(status: StatusCode) -> Self {
        Decision::Deny(Deny::new(status))
    }

    /// Whether this is an allow.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The allow, if this is one.
    pub fn as_allow(&self) -> Option<&Allow> {
        match self {
            Decision::Allow(a) => Some(a),
            Decision::Deny(_) => None,
        }
    }

    /// The deny, if this is one.
    pub fn as_deny(&self) -> Option<&Deny> {
        match self {
            Decision::Allow(_) => None,
            Decision::Deny(d) => Some(d),
        }
    }
}

impl From<Allow> for Decision {
    #[inline]
    fn from(a: Allow) -> Self {
        Decision::Allow(a)
    }
}

impl From<Deny> for Decision {
    #[inline]
    fn from(d: Deny) -> Self {
        Decision::Deny(d)
    }
}

/// The headers about the connection or the message's framing, which no
/// decision sets ([`is_framing`]).
pub(crate) const FRAMING: [HeaderName; 8] = [
    http::header::CONNECTION,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::TE,
    http::header::TRAILER,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is about the connection or the message's framing
/// (`connection`, `content-length`, `transfer-encoding`, `upgrade`, `te`,
/// `trailer`, `keep-alive`, `proxy-connection`): no decision sets one, on
/// the upstream request or on the client's answer, since a check server
/// writes an allow's headers on its own answer and a layer copies them
/// onto the app's. The chain leaves them out of every step's answer.
pub fn is_framing(name: &HeaderName) -> bool {
    // Their lengths first: most names are none of them.
    matches!(name.as_str().len(), 2 | 7 | 10 | 14 | 16 | 17) && FRAMING.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_four_actions_apply_as_envoy_defines_them() {
        let name = HeaderName::from_static("x");
        // (action, the values after it on a header with two, on none;
        // whether it changed each)
        let cases = [
            (
                HeaderAction::AppendIfExistsOrAdd,
                vec!["old", "older", "new"],
                vec!["new"],
                (true, true),
            ),
            (
                HeaderAction::AddIfAbsent,
                vec!["old", "older"],
                vec!["new"],
                (false, true),
            ),
            (
                HeaderAction::OverwriteIfExistsOrAdd,
                vec!["new"],
                vec!["new"],
                (true, true),
            ),
            (
                HeaderAction::OverwriteIfExists,
                vec!["new"],
                vec![],
                (true, false),
            ),
        ];
        for (action, when_present, when_absent, changed) in cases {
            let m = HeaderMutation::new(name.clone(), hv("new"), action);
            let mut present = HeaderMap::new();
            present.append(name.clone(), hv("old"));
            present.append(HeaderName::from_static("y"), hv("kept"));
            present.append(name.clone(), hv("older"));
            let mut absent = HeaderMap::new();
            absent.insert(HeaderName::from_static("y"), hv("kept"));
            let changed_present = m.apply(&mut present);
            let changed_absent = m.apply(&mut absent);
            let what = format!("{action:?}");
            assert_eq!(values(&present, "x"), when_present, "{what} on present");
            assert_eq!(values(&absent, "x"), when_absent, "{what} on absent");
            assert_eq!((changed_present, changed_absent), changed, "{what}");
            assert_eq!(values(&present, "y"), ["kept"], "{what}");
            assert_eq!(values(&absent, "y"), ["kept"], "{what}");
        }
    }

    #[test]
    fn gloo_style_helpers() {
        assert!(Decision::authorized().is_allow());
        assert_eq!(Decision::unauthorized().as_deny().unwrap().status, 403);
        assert_eq!(Decision::unauthenticated().as_deny().unwrap().status, 401);
        let d = Deny::new(StatusCode::IM_A_TEAPOT)
            .header(http::header::WWW_AUTHENTICATE, hv("Basic"))
            .body("no");
        assert_eq!(d.status, 418);
        assert_eq!(d.body, "no");
        assert_eq!(d.headers["www-authenticate"], "Basic");
    }

    #[test]
    fn allow_applies_mutations_then_removals() {
        let a = Allow::new()
            .set_header(HeaderName::from_static("a"), hv("1"))
            .append_header(HeaderName::from_static("a"), hv("2"))
            .set_header(HeaderName::from_static("gone"), hv("x"))
            .remove_header(HeaderName::from_static("gone"));
        let mut h = HeaderMap::new();
        a.apply_to_headers(&mut h);
        assert_eq!(values(&h, "a"), ["1", "2"]);
        assert!(!h.contains_key("gone"));
    }
}
