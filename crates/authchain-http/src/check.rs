//! The forward-auth translation: a check request as Envoy (HTTP service
//! mode), nginx `auth_request`, Traefik ForwardAuth or Caddy `forward_auth`
//! send it → which AuthConfig and which original request; a decision →
//! the response each of them understands.
//!
//! # Which AuthConfig
//!
//! By path: a check under `{prefix}/{config}` (the prefix is `/check` by
//! default) selects the AuthConfig named `{config}`; any other path selects
//! the default AuthConfig, if one is configured. The path is set by the
//! proxy's config, never by the client.
//!
//! | proxy | auth server address | AuthConfig |
//! |---|---|---|
//! | Envoy HTTP service | `path_prefix: /check/site` | `site` |
//! | nginx | `proxy_pass http://authchain/check/site;` | `site` |
//! | Traefik | `address: http://authchain/check/site` | `site` |
//! | Caddy | `forward_auth authchain { uri /check/site }` | `site` |
//! | any | a path outside `/check/` | the default |
//!
//! # Which original request
//!
//! From a trusted proxy (its address in `trusted_proxies`): the
//! `X-Forwarded-{Method,Proto,Host,Uri}` headers (Traefik, Caddy), else
//! `X-Original-{Method,URI,URL}` (nginx, as its config passes them), else
//! the check request itself. From any other peer, forwarded headers are
//! ignored and the check request itself is the original: its method, its
//! path after `{prefix}/{config}` (what Envoy sends), its Host.
//!
//! Trust only a proxy that sets these headers itself, overwriting what its
//! client sent (nginx with `proxy_set_header X-Original-URI $request_uri`,
//! Traefik, Caddy). Never trust an Envoy in HTTP service mode whose
//! `allowed_headers` lets its client's `x-` headers through: the client
//! could then name the path to check (`X-Forwarded-Uri: /public`) for a
//! request to another. Envoy needs no trust: it sends the original method
//! and path as the check's own.
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
//! - Deny: the chain's status, headers and body. nginx passes only 401 and
//!   403 to the client (anything else becomes 500).
//! - A decision the transport cannot carry (query parameter changes) is an
//!   error: `500`, which every proxy treats as a failed check.

use std::net::IpAddr;

use authchain_core::{Allow, AuthorizationRequest, Decision, Peer};
use bytes::Bytes;
use http::HeaderMap;
use http::header::HeaderName;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use ipnet::IpNet;

use crate::head::{REQUEST_ID, plain, protocol};
use crate::layer::deny_response;

/// The header listing upstream headers to remove, as Envoy reads it.
pub const HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// How checks are read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckConfig {
    /// The path under which `/{config}` selects an AuthConfig (`/check`).
    pub prefix: String,
    /// The AuthConfig for checks outside the prefix.
    pub default_config: Option<String>,
    /// Peers whose forwarded headers are believed.
    pub trusted_proxies: Vec<IpNet>,
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

impl CheckConfig {
    /// Sets the default AuthConfig.
    pub fn default_config(mut self, name: impl Into<String>) -> Self {
        self.default_config = Some(name.into());
        self
    }

    /// Trusts forwarded headers from these networks (`127.0.0.1/32`, ...):
    /// only forward-auth proxies that overwrite them (see the module docs).
    pub fn trust(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted_proxies.extend(networks);
        self
    }

    /// Sets the prefix under which `/{config}` selects an AuthConfig.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_proxies.iter().any(|n| n.contains(&ip)))
    }

    /// Reads a check: the AuthConfig it selects (`None`: no config and no
    /// default) and the original request to authorize, which takes the
    /// check's headers.
    ///
    /// The check's headers move into the request; the name of the
    /// AuthConfig is read from `parts` where it stands.
    pub fn read<'a>(
        &'a self,
        parts: &'a mut Parts,
        body: Option<Bytes>,
        peer: Peer,
    ) -> (Option<&'a str>, AuthorizationRequest) {
        let mut request = AuthorizationRequest::default();
        let config = self.read_into(parts, body, peer, &mut request);
        (config, request)
    }

    /// [`read`](Self::read) into `request`, an empty one (whose room is
    /// reused).
    pub(crate) fn read_into<'a>(
        &'a self,
        parts: &'a mut Parts,
        body: Option<Bytes>,
        peer: Peer,
        request: &mut AuthorizationRequest,
    ) -> Option<&'a str> {
        // Swapped, not taken: the check's headers for the request's empty
        // map.
        std::mem::swap(&mut request.headers, &mut parts.headers);
        let headers = &request.headers;
        let parts: &'a Parts = parts;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let (config, rest) = match path
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            Some(rest) if !self.prefix.is_empty() => {
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                (Some(&rest[..end]), &rest[end..])
            }
            _ => (self.default_config.as_deref(), path),
        };
        let config = config.filter(|c| !c.is_empty());

        let seen = Seen::scan(headers, self.trusts(peer.address.map(|a| a.ip())));
        let method = forwarded(seen.forwarded_method)
            .or_else(|| forwarded(seen.original_method))
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or_else(|| parts.method.clone());
        let original_url = forwarded(seen.original_url).and_then(|u| u.parse::<http::Uri>().ok());
        let path = forwarded(seen.forwarded_uri)
            .or_else(|| forwarded(seen.original_uri))
            .filter(|p| p.starts_with('/'))
            .or_else(|| original_url.as_ref()?.path_and_query().map(|p| p.as_str()));
        let host = forwarded(seen.forwarded_host)
            .or_else(|| original_url.as_ref()?.authority().map(|a| a.as_str()))
            .or_else(|| seen.host.and_then(|h| h.to_str().ok()))
            .unwrap_or_default();
        let scheme = forwarded(seen.forwarded_proto)
            .or_else(|| original_url.as_ref()?.scheme_str())
            .unwrap_or_default();
        let id = seen.request_id.and_then(|v| v.to_str().ok());

        match path {
            Some(path) => request.path.push_str(path),
            // What follows `{prefix}/{config}`, as Envoy sends it.
            None => {
                if !rest.starts_with('/') {
                    request.path.push('/');
                }
                request.path.push_str(rest);
            }
        }
        request.host.push_str(host);
        request.scheme.push_str(scheme);
        request.id.push_str(id.unwrap_or_default());
        request.method = method;
        request.protocol = protocol(parts.version).into();
        request.body = body;
        request.source = peer;
        config
    }
}

/// The headers a check is read from, found in one pass over its headers
/// (one lookup each would cost as much as the whole pass). Each is its
/// first value, as `HeaderMap::get` gives. Forwarded headers are read only
/// from a trusted peer.
#[derive(Default)]
struct Seen<'a> {
    forwarded_method: Option<&'a HeaderValue>,
    original_method: Option<&'a HeaderValue>,
    original_url: Option<&'a HeaderValue>,
    forwarded_uri: Option<&'a HeaderValue>,
    original_uri: Option<&'a HeaderValue>,
    forwarded_host: Option<&'a HeaderValue>,
    forwarded_proto: Option<&'a HeaderValue>,
    host: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
}

impl<'a> Seen<'a> {
    fn scan(headers: &'a HeaderMap, trusted: bool) -> Self {
        let mut seen = Seen::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                "host" => &mut seen.host,
                REQUEST_ID => &mut seen.request_id,
                _ if !trusted => continue,
                "x-forwarded-method" => &mut seen.forwarded_method,
                "x-original-method" => &mut seen.original_method,
                "x-original-url" => &mut seen.original_url,
                "x-forwarded-uri" => &mut seen.forwarded_uri,
                "x-original-uri" => &mut seen.original_uri,
                "x-forwarded-host" => &mut seen.forwarded_host,
                "x-forwarded-proto" => &mut seen.forwarded_proto,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        seen
    }
}

/// A forwarded header's value, when it is visible ASCII and not empty.
fn forwarded(value: Option<&HeaderValue>) -> Option<&str> {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The check response for a decision. An allow's headers are written
/// into `spare`, emptied first: the check's own headers, whose room then
/// serves again (hyper parses the connection's next request into the map
/// of the last response).
pub fn respond(decision: Decision, spare: HeaderMap) -> Response<Bytes> {
    match decision {
        Decision::Allow(allow) => allow_response(allow, spare),
        Decision::Deny(deny) => deny_response(deny),
    }
}

/// The value of [`HEADERS_TO_REMOVE`]: the names, comma separated. One
/// name (a chain's one stripped header, say) is its own value, shared.
fn removals_value(names: Vec<HeaderName>) -> Option<HeaderValue> {
    let mut names = names.into_iter();
    let first = names.next()?;
    let Some(second) = names.next() else {
        return Some(HeaderValue::from(first));
    };
    let mut list = String::from(first.as_str());
    for name in std::iter::once(second).chain(names) {
        list.push_str(", ");
        list.push_str(name.as_str());
    }
    HeaderValue::try_from(list).ok()
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
    headers.reserve(allow.headers.len() + allow.response_headers.len() + removals);
    for m in allow.headers.into_iter().chain(allow.response_headers) {
        headers.append(m.name, m.value);
    }
    if let Some(value) = removals_value(allow.headers_to_remove) {
        headers.insert(HEADERS_TO_REMOVE, value);
    }
    let mut response = Response::new(Bytes::new());
    *response.headers_mut() = headers;
    response
}
