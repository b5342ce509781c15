//! The forward-auth translation: a check request as Envoy (HTTP service
//! mode), nginx `auth_request`, Traefik ForwardAuth or Caddy `forward_auth`
//! send it → which AuthConfig and which original request; a decision →
//! the response each of them understands.
//!
//! Everything here is read from what the proxy's config writes, never from
//! what its client can: a client must neither pick the AuthConfig that
//! judges it nor describe its request as another.
//!
//! # Which AuthConfig
//!
//! A check's path is `{prefix}:{config}` (the prefix is `/check` by
//! default), optionally followed by the original path (Envoy). The `:`
//! right after the prefix is what makes the selector the proxy's: Envoy
//! appends the client's path, which always starts with `/`, so a client
//! can never write a `:` there. A check at `{prefix}` or `{prefix}/...`
//! names no AuthConfig by construction and runs the default AuthConfig, if
//! one is configured; a check outside the prefix is answered 404.
//!
//! | proxy | auth server address | AuthConfig |
//! |---|---|---|
//! | Envoy HTTP service | `path_prefix: /check:site` | `site` |
//! | Envoy HTTP service | `path_prefix: /check` | the default (the client's `/site/x` is only a path) |
//! | nginx | `proxy_pass http://authchain/check:site;` | `site` |
//! | Traefik | `address: http://authchain/check:site` | `site` |
//! | Caddy | `forward_auth authchain { uri /check:site }` | `site` |
//!
//! # Which original request
//!
//! Each trusted proxy (its address in `trusted_proxies`) is trusted for
//! one family of headers, the one it writes itself, and only that family
//! is read; the other family, which a client can send through it, is
//! ignored. A peer in several networks is trusted as the most specific
//! one says (nginx's `/32` within Traefik's `/8` is nginx):
//!
//! | proxy | [`ForwardedHeaders`] | read | required |
//! |---|---|---|---|
//! | nginx (`proxy_set_header X-Original-URI $request_uri; proxy_set_header X-Original-Method $request_method;`) | `XOriginal` | `X-Original-Method`, `X-Original-URI`; the host is the check's `Host` (`proxy_set_header Host $host;`) | method and URI |
//! | Traefik (with `trustForwardHeader` off, its default), Caddy: both overwrite these | `XForwarded` | `X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto` | method, URI and host |
//!
//! A trusted check that lacks a required header, or carries one of its
//! family twice or not as visible ASCII, is denied (403 and 400): its
//! original request is unknown, and it is never evaluated as `GET /`.
//!
//! From any other peer forwarded headers are ignored and the check itself
//! is the original request: its method, the path after the selector (what
//! Envoy sends), its `Host` (or HTTP/2 `:authority`). A check from such a
//! peer with no path after the selector (nginx, Traefik or Caddy at an
//! address that is not trusted) is denied with 403.
//!
//! Never trust an Envoy in HTTP service mode: it sends the original
//! method and path as the check's own, and with `allowed_headers` that let
//! its client's `x-` headers through, a client could describe its request.
//!
//! Whatever path is read is put in canonical form by the chain
//! ([`authchain_core::path`]) before any step sees it.
//!
//! # The answer
//!
//! - Allow: `200`, with the chain's upstream headers as response headers
//!   (overwrites and appends alike; list them in Envoy's
//!   `allowed_upstream_headers` / `allowed_upstream_headers_to_append`,
//!   nginx's `auth_request_set`, Traefik's `authResponseHeaders`, Caddy's
//!   `copy_headers`), removals in `x-envoy-auth-headers-to-remove`, and
//!   the client response headers as well (Envoy:
//!   `allowed_client_headers_on_success`). Envoy rejects any other 2xx.
//! - Deny: the chain's status (never a 1xx or 2xx), headers and body.
//!   nginx passes only 401 and 403 to the client (anything else becomes
//!   500): a check that carries [`LOGIN_AS_401`]` : 401` (which nginx's
//!   `auth_request` location sets) gets a redirect (a login's `302`) as a
//!   `401` with the same `Location` and `Set-Cookie`, which the location's
//!   `auth_request_set` and `error_page 401` turn back into the redirect
//!   (see the nginx guide). A client that sends the header itself only
//!   turns its own redirects into 401s.
//! - A decision the transport cannot carry (query parameter changes) is an
//!   error: `500`, which every proxy treats as a failed check.

use std::net::IpAddr;

use authchain_core::{Allow, AuthorizationRequest, Decision, Peer};
use bytes::Bytes;
use http::HeaderMap;
use http::header::Entry;
use http::header::{HOST, HeaderName};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use ipnet::IpNet;

use crate::head::{X_REQUEST_ID, plain};
use crate::layer::deny_response;

/// The header with which nginx's `auth_request` location asks for a
/// redirect deny as a `401` (see the [module docs](self)).
pub const LOGIN_AS_401: HeaderName = HeaderName::from_static("x-authchain-login");

/// Whether a check asks for redirects as 401s: `LOGIN_AS_401: 401`.
pub(crate) fn wants_login_as_401(headers: &HeaderMap) -> bool {
    headers.get(&LOGIN_AS_401).is_some_and(|v| v == "401")
}

/// A redirect deny as a `401` with the same headers and body, but its
/// first `Set-Cookie` alone (a login's own cookie, before the removals of
/// earlier ones): nginx passes one value of `$upstream_http_set_cookie`,
/// the first (1.22) or all of them joined by `, ` (1.23 and later), which
/// a browser reads as one cookie that the last removal's `Max-Age=0` ends.
pub(crate) fn login_as_401(decision: &mut Decision) {
    if let Decision::Deny(deny) = decision
        && deny.status.is_redirection()
    {
        deny.status = StatusCode::UNAUTHORIZED;
        if let http::header::Entry::Occupied(mut cookies) =
            deny.headers.entry(http::header::SET_COOKIE)
            && cookies.iter().nth(1).is_some()
        {
            let first = cookies.get().clone();
            cookies.insert(first);
        }
    }
}

/// The header listing upstream headers to remove, as Envoy reads it.
pub const HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// The family of forwarded headers a trusted proxy writes itself, and the
/// only one read from it (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeaders {
    /// nginx: `X-Original-Method` and `X-Original-URI`, which its config
    /// sets (`proxy_set_header` replaces a client's copy).
    XOriginal,
    /// Traefik and Caddy: `X-Forwarded-Method`, `X-Forwarded-Uri`,
    /// `X-Forwarded-Host` and `X-Forwarded-Proto`, which they overwrite.
    XForwarded,
}

/// nginx's forwarded headers, which its config sets.
static X_ORIGINAL: [HeaderName; 2] = [
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-original-uri"),
];

/// Traefik's and Caddy's: the family's four, then `X-Forwarded-For`,
/// which they write too.
static X_FORWARDED: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-for"),
];

impl ForwardedHeaders {
    /// The headers a proxy of the family writes into every check itself,
    /// whatever its client sent: nginx the `X-Original-*` its config
    /// sets; Traefik and Caddy both their `X-Forwarded-*` and
    /// `X-Forwarded-For` (Traefik's `X-Real-Ip`, which Caddy does not
    /// write, is a client's behind Caddy).
    pub(crate) fn written(self) -> &'static [HeaderName] {
        match self {
            ForwardedHeaders::XOriginal => &X_ORIGINAL,
            ForwardedHeaders::XForwarded => &X_FORWARDED,
        }
    }

    /// The headers of the family: method, URI, then host and scheme
    /// (which the check's own `Host` and nothing stand in for in
    /// `XOriginal`).
    fn names(self) -> &'static [HeaderName] {
        match self {
            ForwardedHeaders::XOriginal => &X_ORIGINAL,
            ForwardedHeaders::XForwarded => &X_FORWARDED[..4],
        }
    }
}

/// A network of proxies trusted for one family of forwarded headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedProxy {
    /// Where the proxy's checks come from (`127.0.0.1/32`).
    pub network: IpNet,
    /// The headers it writes itself.
    pub headers: ForwardedHeaders,
}

impl TrustedProxy {
    /// Proxies in `network` that write `headers`. An IPv4-mapped network
    /// (`::ffff:10.0.0.0/104`, as logs of a dual-stack listener show
    /// addresses) is taken as the IPv4 one, which peers are matched as.
    pub fn new(network: IpNet, headers: ForwardedHeaders) -> Self {
        let network = match network {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map(IpNet::V4)
                    .unwrap_or(network),
                None => network,
            },
            other => other,
        };
        TrustedProxy { network, headers }
    }
}

/// How checks are read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckConfig {
    /// The path after which `:{config}` selects an AuthConfig (`/check`).
    pub prefix: String,
    /// The AuthConfig for checks that name none.
    pub default_config: Option<String>,
    /// Proxies whose forwarded headers are believed, each for its family.
    pub trusted_proxies: Vec<TrustedProxy>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            prefix: "/check".to_owned(),
            default_config: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A check that cannot be read: answered with `status` and `reason`,
/// before any chain runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The status to answer with (400, 403 or 404).
    pub status: StatusCode,
    /// Why, for the log and the answer's body.
    pub reason: String,
}

impl Refused {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refused {
            status,
            reason: reason.into(),
        }
    }
}

impl CheckConfig {
    /// Sets the default AuthConfig, for checks that name none.
    pub fn default_config(mut self, name: impl Into<String>) -> Self {
        self.default_config = Some(name.into());
        self
    }

    /// Trusts the proxies in `networks` (`127.0.0.1/32`, ...) for the
    /// forwarded headers of `headers`, which they must write themselves
    /// (see the [module docs](self)).
    pub fn trust(
        mut self,
        networks: impl IntoIterator<Item = IpNet>,
        headers: ForwardedHeaders,
    ) -> Self {
        self.trusted_proxies.extend(
            networks
                .into_iter()
                .map(|network| TrustedProxy::new(network, headers)),
        );
        self
    }

    /// Sets the prefix after which `:{config}` selects an AuthConfig (a
    /// trailing `/` is dropped).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.ends_with('/') {
            prefix.pop();
        }
        self.prefix = prefix;
        self
    }

    /// The family of forwarded headers `peer` is trusted for, if any: that
    /// of the most specific network that holds it, the first listed of
    /// equal ones.
    fn trusted(&self, peer: Option<IpAddr>) -> Option<ForwardedHeaders> {
        // A dual-stack listener sees an IPv4 proxy as `::ffff:a.b.c.d`.
        let ip = peer?.to_canonical();
        self.trusted_proxies
            .iter()
            .filter(|p| p.network.contains(&ip))
            .min_by_key(|p| std::cmp::Reverse(p.network.prefix_len()))
            .map(|p| p.headers)
    }

    /// The AuthConfig a check's path names (`None`: it names none) and
    /// what follows the selector; `None` for a path outside the prefix.
    fn select<'p>(&self, target: &'p str) -> Option<(Option<&'p str>, &'p str)> {
        let after = target.strip_prefix(self.prefix.as_str())?;
        match after.as_bytes().first() {
            None | Some(b'/' | b'?') => Some((None, after)),
            Some(b':') => {
                let name = &after[1..];
                let end = name.find(['/', '?']).unwrap_or(name.len());
                Some((Some(&name[..end]), &name[end..]))
            }
            Some(_) => None,
        }
    }

    /// Reads a check: the AuthConfig it selects (`None`: it names none and
    /// there is no default) and the original request to authorize, which
    /// takes the check's headers; or why it cannot be read.
    pub fn read(
        &self,
        parts: &mut Parts,
        body: Option<Bytes>,
        peer: Peer,
    ) -> Result<(Option<String>, AuthorizationRequest), Refused> {
        let mut request = AuthorizationRequest::default();
        let (config, _) = self.read_into(parts, body, peer, &mut request)?;
        let config = config.map(str::to_owned);
        Ok((config, request))
    }

    /// [`read`](Self::read) into `request`, an empty one (whose room is
    /// reused); also whether a trusted forward-auth proxy sent it.
    pub(crate) fn read_into<'a>(
        &'a self,
        parts: &'a mut Parts,
        body: Option<Bytes>,
        peer: Peer,
        request: &mut AuthorizationRequest,
    ) -> Result<(Option<&'a str>, Option<ForwardedHeaders>), Refused> {
        let Parts {
            method: check_method,
            uri,
            headers: check_headers,
            ..
        } = parts;
        let uri: &'a http::Uri = uri;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let Some((named, rest)) = self.select(target) else {
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                format!("not a check: checks are under {}", self.prefix),
            ));
        };
        let config = match named {
            Some("") => {
                return Err(Refused::new(
                    StatusCode::FORBIDDEN,
                    "the check names an empty AuthConfig",
                ));
            }
            Some(name) => Some(name),
            None => self.default_config.as_deref(),
        };
        let headers = &*check_headers;
        let family = self.trusted(peer.address.map(|a| a.ip()));
        let found = Found::scan(headers, family.map_or(&[][..], ForwardedHeaders::names))?;
        let check_host = found.host.or_else(|| uri.authority().map(|a| a.as_str()));
        match family {
            // Envoy's HTTP service's shape, whose headers are the
            // client's: an Envoy in a trusted proxy's range would let a
            // client describe its own request.
            Some(_) if rest.starts_with('/') => {
                return Err(Refused::new(
                    StatusCode::FORBIDDEN,
                    "a trusted proxy's check carries a path after its selector: \
                     give the proxy the check's address without one (no trailing `/`)",
                ));
            }
            Some(family) => {
                let [method, uri, host, scheme] = found.forwarded;
                let (Some(method), Some(uri)) = (method, uri) else {
                    return Err(Refused::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "a trusted proxy's check lacks {}: its original request is unknown",
                            family.names()[usize::from(method.is_some())]
                        ),
                    ));
                };
                request.method = Method::from_bytes(method.as_bytes()).map_err(|_| {
                    Refused::new(
                        StatusCode::BAD_REQUEST,
                        "the original method is not a method",
                    )
                })?;
                request.path.push_str(uri);
                let host = match family {
                    // The check's, which nginx's config sets.
                    ForwardedHeaders::XOriginal => check_host,
                    // Traefik and Caddy always send it: one without it is
                    // not theirs to judge by host.
                    ForwardedHeaders::XForwarded if host.is_none() => {
                        return Err(Refused::new(
                            StatusCode::FORBIDDEN,
                            "a trusted proxy's check lacks x-forwarded-host: its original host is unknown",
                        ));
                    }
                    ForwardedHeaders::XForwarded => host,
                };
                request.host.push_str(host.unwrap_or_default());
                request.scheme.push_str(scheme.unwrap_or_default());
            }
            None => {
                if !rest.starts_with('/') {
                    return Err(Refused::new(
                        StatusCode::FORBIDDEN,
                        "the check carries no original path (is the proxy trusted?)",
                    ));
                }
                // A forward-auth proxy that is not trusted, its address
                // ending in `/`: its check is not the original request.
                let forward_auth = [ForwardedHeaders::XForwarded, ForwardedHeaders::XOriginal]
                    .iter()
                    .flat_map(|family| &family.names()[..2])
                    .find(|name| headers.contains_key(*name));
                if let Some(name) = forward_auth {
                    return Err(Refused::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "the check carries {name} from a peer not in trustedProxies (is the proxy trusted?)"
                        ),
                    ));
                }
                request.method = check_method.clone();
                request.path.push_str(rest);
                request.host.push_str(check_host.unwrap_or_default());
            }
        }
        request.id.push_str(found.id.unwrap_or_default());
        // The client, as far as the check tells: the peer, a proxy or a
        // gateway, is not it. Traefik and Caddy append the address they
        // saw to `X-Forwarded-For` (a client's own copy they drop or keep
        // ahead of it); nginx's and Envoy's checks carry none they vouch
        // for.
        request.source = match family {
            Some(ForwardedHeaders::XForwarded) => {
                last_forwarded_for(headers).map_or_else(Peer::default, Peer::from_address)
            }
            Some(ForwardedHeaders::XOriginal) | None => Peer::default(),
        };
        // Swapped, not taken: the check's headers for the request's empty
        // map. Its length and `Transfer-Encoding` frame the check (Envoy
        // sets its own; nginx may pass the client's along without the
        // body), and its version is the hop's: none of them tells what
        // the client sent. The length of a body the check carries is the
        // body's.
        std::mem::swap(&mut request.headers, check_headers);
        request.headers.remove(http::header::TRANSFER_ENCODING);
        // An empty body is none: nginx, Traefik and Caddy send none.
        let body = body.filter(|b| !b.is_empty());
        match &body {
            Some(body) => {
                request
                    .headers
                    .insert(http::header::CONTENT_LENGTH, body.len().into());
            }
            None => drop(request.headers.remove(http::header::CONTENT_LENGTH)),
        }
        request.body = body;
        Ok((config, family))
    }
}

/// The last address of the last `X-Forwarded-For` (port 0): the one the
/// proxy that wrote it saw.
fn last_forwarded_for(headers: &HeaderMap) -> Option<std::net::SocketAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    let hop = last.to_str().ok()?.rsplit(',').next()?.trim();
    let ip: IpAddr = hop.parse().ok()?;
    Some((ip.to_canonical(), 0).into())
}

/// What a check is read from, found in one pass over its headers (a
/// lookup each would hash every name): its `Host`, the first
/// `x-request-id`, and the values of the trusted family's headers, in the
/// order of [`ForwardedHeaders::names`].
struct Found<'h> {
    host: Option<&'h str>,
    id: Option<&'h str>,
    forwarded: [Option<&'h str>; 4],
}

impl<'h> Found<'h> {
    /// Scans `headers` for `Host` and `family`'s headers. Each of those
    /// must appear at most once, visible ASCII and not empty, or the check
    /// is refused (400): the proxy writes each once, so a second is the
    /// client's.
    fn scan(headers: &'h HeaderMap, family: &[HeaderName]) -> Result<Self, Refused> {
        let mut values: [Option<&'h HeaderValue>; 5] = [None; 5];
        let mut id = None;
        for (name, value) in headers {
            let slot = if *name == HOST {
                0
            } else if let Some(i) = family.iter().position(|n| n == name) {
                i + 1
            } else {
                if *name == X_REQUEST_ID && id.is_none() {
                    id = value.to_str().ok();
                }
                continue;
            };
            if values[slot].replace(value).is_some() {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name} appears more than once"),
                ));
            }
        }
        let mut text: [Option<&'h str>; 5] = [None; 5];
        for (slot, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            match value.to_str() {
                Ok(v) if !v.is_empty() => text[slot] = Some(v),
                _ => {
                    let name = if slot == 0 { &HOST } else { &family[slot - 1] };
                    return Err(Refused::new(
                        StatusCode::BAD_REQUEST,
                        format!("{name} is empty or not visible ASCII"),
                    ));
                }
            }
        }
        let [host, forwarded @ ..] = text;
        Ok(Found {
            host,
            id,
            forwarded,
        })
    }
}

/// The check response for a decision: an allow is a 200 with its headers
/// (and [`HEADERS_TO_REMOVE`]), a deny its status, headers and body. An
/// allow's headers are written into `room`, emptied first: the check's own
/// header map, done with.
pub(crate) fn respond(decision: Decision, room: HeaderMap) -> Response<Bytes> {
    match decision {
        Decision::Allow(allow) => allow_response(allow, room),
        Decision::Deny(deny) => deny_response(deny),
    }
}

/// The value of [`HEADERS_TO_REMOVE`]: the names, comma separated. One
/// name is its own value, shared.
fn removals_value(names: Vec<HeaderName>) -> Option<HeaderValue> {
    match <[HeaderName; 1]>::try_from(names) {
        Ok([one]) => Some(HeaderValue::from(one)),
        Err(names) if names.is_empty() => None,
        Err(names) => {
            let len = names.iter().map(|n| n.as_str().len() + 2).sum();
            let mut list = String::with_capacity(len);
            for name in &names {
                if !list.is_empty() {
                    list.push_str(", ");
                }
                list.push_str(name.as_str());
            }
            HeaderValue::try_from(list).ok()
        }
    }
}

fn allow_response(allow: Allow, mut headers: HeaderMap) -> Response<Bytes> {
    if !allow.query_parameters_to_set.is_empty() || !allow.query_parameters_to_remove.is_empty() {
        tracing::error!(
            "the chain changes query parameters, which forward auth cannot carry; failing the check"
        );
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "");
    }
    let removals = usize::from(!allow.headers_to_remove.is_empty());
    headers.clear();
    let _ = headers.try_reserve(allow.headers.len() + allow.response_headers.len() + removals);
    // One line per upstream header: Envoy's HTTP service sets each line
    // of an `allowed_upstream_headers` name in turn, so of a set and an
    // append only the last would reach the app.
    for m in allow.headers {
        match headers.entry(m.name) {
            Entry::Vacant(entry) => {
                entry.insert(m.value);
            }
            Entry::Occupied(mut entry) => {
                let separator: &[u8] = match entry.key() == http::header::COOKIE {
                    true => b"; ",
                    false => b", ",
                };
                let joined = [entry.get().as_bytes(), separator, m.value.as_bytes()].concat();
                if let Ok(mut value) = HeaderValue::from_bytes(&joined) {
                    value.set_sensitive(entry.get().is_sensitive() || m.value.is_sensitive());
                    entry.insert(value);
                }
            }
        }
    }
    // Each its own line: two `Set-Cookie`s are two cookies.
    for m in allow.response_headers {
        headers.append(m.name, m.value);
    }
    if let Some(value) = removals_value(allow.headers_to_remove) {
        headers.insert(HEADERS_TO_REMOVE, value);
    }
    let mut response = Response::new(Bytes::new());
    *response.headers_mut() = headers;
    response
}
