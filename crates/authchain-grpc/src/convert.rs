//! Translation between Envoy's ext_authz messages and authchain's model.
//!
//! Only translation lives here: no policy. What each direction does, and
//! why, is pinned against real Envoy 1.40 by the crate's end-to-end tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use authchain_core::{
    Allow, AuthorizationRequest, Decision, Deny, HeaderAction, HeaderMutation, Peer,
};
use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse, QueryParameter,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer as PbPeer, Request as PbRequest,
};
use envoy_types::pb::google::protobuf::{
    BoolValue, ListValue, Struct, Value as PbValue, value::Kind,
};
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use serde_json::{Map, Number, Value};

/// gRPC status codes used in `CheckResponse.status`.
pub(crate) mod code {
    pub(crate) const OK: i32 = 0;
    pub(crate) const INVALID_ARGUMENT: i32 = 3;
    pub(crate) const NOT_FOUND: i32 = 5;
    pub(crate) const PERMISSION_DENIED: i32 = 7;
    pub(crate) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(crate) const INTERNAL: i32 = 13;
    pub(crate) const UNAVAILABLE: i32 = 14;
    pub(crate) const UNAUTHENTICATED: i32 = 16;
}

/// What Envoy knows about the request beyond the HTTP view: the parts of
/// the `CheckRequest` that [`AuthorizationRequest`] has no field for. The
/// server puts it in the request's `extensions` for steps that need it.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct EnvoyAttributes {
    /// The client's certificate, URL-encoded PEM (`include_peer_certificate`).
    pub source_certificate: String,
    /// The TLS SNI the client sent, when the listener terminates TLS.
    pub tls_sni: String,
    /// The route's metadata (`route_metadata_context.filter_metadata`).
    pub route_metadata: Map<String, Value>,
    /// The request's size in bytes as Envoy saw it (`-1` when unknown).
    pub size: i64,
}

/// The header names Envoy sent in the `CheckRequest`: whether a header
/// exists at Envoy decides how an append is encoded in the answer.
///
/// The names are the `String`s the `CheckRequest` brought (moved, not
/// copied): as sent for the `headers` map, lower-cased for `header_map`.
/// A check usually sends a dozen or so headers and an answer sets one or
/// two, so a list is cheaper to build than a set; `upstream_headers`
/// indexes it when both are larger.
#[derive(Debug, Default)]
pub(crate) struct SentHeaders {
    names: Vec<String>,
}

impl SentHeaders {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

/// Why a `CheckRequest` cannot be translated. Its text names fields and
/// header names, never header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest(pub(crate) String);

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CheckRequest: {}", self.0)
    }
}

impl std::error::Error for InvalidRequest {}

/// Why a decision cannot be put on the wire: a value Envoy cannot carry.
/// Its text names header names and query keys, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDecision(pub(crate) String);

impl fmt::Display for InvalidDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "decision cannot be sent to Envoy: {}", self.0)
    }
}

impl std::error::Error for InvalidDecision {}

/// Translates a `CheckRequest` into the request the chain sees:
///
/// - `request.http`: `method`, `path` (with query), `host`, `scheme`,
///   `protocol`, `id`; pseudo-headers (`:method`, `:path`, `:authority`,
///   `:scheme`) fill those when the fields are empty and never land in
///   `headers`;
/// - `headers` (duplicates arrive comma-joined) or, when Envoy sends it
///   (`encode_raw_headers`), `header_map` with one entry per value and raw
///   bytes;
/// - `body` (UTF-8 text) or `raw_body` (`pack_as_bytes`);
/// - `source` / `destination` addresses and principals;
/// - `context_extensions` into `context`, `metadata_context.filter_metadata`
///   into `metadata` (one JSON object per namespace);
/// - the rest ([`EnvoyAttributes`]) into `extensions`.
pub fn to_authorization_request(
    check: CheckRequest,
) -> Result<AuthorizationRequest, InvalidRequest> {
    to_request(check).map(|(req, _)| req)
}

pub(crate) fn to_request(
    check: CheckRequest,
) -> Result<(AuthorizationRequest, SentHeaders), InvalidRequest> {
    let attributes = check.attributes.unwrap_or_default();
    let http = attributes
        .request
        .and_then(|r| r.http)
        .ok_or_else(|| InvalidRequest("attributes.request.http is missing".into()))?;
    let mut req = AuthorizationRequest::default();
    let mut sent = SentHeaders::default();
    let mut pseudo: [Option<String>; 5] = Default::default(); // method, path, authority, scheme, other
    let raw_entries = http.header_map.map(|m| m.headers).unwrap_or_default();
    // Names and values are moved out of the message, not copied: a value
    // becomes the `HeaderValue`'s buffer, a name the `SentHeaders` entry.
    if raw_entries.is_empty() {
        sent.names.reserve_exact(http.headers.len());
        for (name, value) in http.headers {
            if let Some(slot) = pseudo_slot(&name) {
                pseudo[slot] = Some(value);
                continue;
            }
            append(&mut req.headers, &name, value.into_bytes())?;
            sent.names.push(name);
        }
    } else {
        sent.names.reserve_exact(raw_entries.len());
        for entry in raw_entries {
            let HeaderValue {
                mut key,
                value,
                raw_value,
            } = entry;
            let bytes = if raw_value.is_empty() {
                value.into_bytes()
            } else {
                raw_value
            };
            if let Some(slot) = pseudo_slot(&key) {
                pseudo[slot] = Some(match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                });
                continue;
            }
            append(&mut req.headers, &key, bytes)?;
            key.make_ascii_lowercase();
            sent.names.push(key);
        }
    }
    let [p_method, p_path, p_authority, p_scheme, _] = pseudo;
    let method = non_empty(http.method)
        .or(p_method)
        .ok_or_else(|| InvalidRequest("request.http.method is missing".into()))?;
    req.method = Method::from_bytes(method.as_bytes())
        .map_err(|_| InvalidRequest("request.http.method is not a valid method".into()))?;
    // No path (a CONNECT) stays empty: the chain refuses it rather than
    // judge it as `/`.
    req.path = non_empty(http.path).or(p_path).unwrap_or_default();
    req.host = non_empty(http.host).or(p_authority).unwrap_or_default();
    req.scheme = non_empty(http.scheme).or(p_scheme).unwrap_or_default();
    req.protocol = http.protocol;
    req.id = http.id;
    req.body = if !http.raw_body.is_empty() {
        Some(Bytes::from(http.raw_body))
    } else if !http.body.is_empty() {
        Some(Bytes::from(http.body))
    } else {
        None
    };
    let mut extras = EnvoyAttributes {
        size: http.size,
        ..Default::default()
    };
    if let Some(mut source) = attributes.source {
        extras.source_certificate = std::mem::take(&mut source.certificate);
        req.source = peer(source);
    }
    if let Some(destination) = attributes.destination {
        req.destination = peer(destination);
    }
    req.context = attributes
        .context_extensions
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    if let Some(metadata) = attributes.metadata_context {
        req.metadata = metadata_to_json(metadata);
    }
    if let Some(route) = attributes.route_metadata_context {
        extras.route_metadata = metadata_to_json(route);
    }
    if let Some(tls) = attributes.tls_session {
        extras.tls_sni = tls.sni;
    }
    if extras != EnvoyAttributes::default() {
        req.extensions.insert(extras);
    }
    Ok((req, sent))
}

fn pseudo_slot(name: &str) -> Option<usize> {
    match name {
        ":method" => Some(0),
        ":path" => Some(1),
        ":authority" => Some(2),
        ":scheme" => Some(3),
        // Other pseudo-headers (`:protocol`, ...) are dropped.
        _ if name.starts_with(':') => Some(4),
        _ => None,
    }
}

/// Appends header `name: value` to `headers`: an invalid name or value,
/// or more names than a header map holds, is an invalid request.
fn append(headers: &mut HeaderMap, name: &str, value: Vec<u8>) -> Result<(), InvalidRequest> {
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        InvalidRequest(format!(
            "header name {:?} is not a valid HTTP header name",
            truncate(name)
        ))
    })?;
    // The same check as `HeaderValue::from_bytes`, over the moved buffer.
    // Boxed first: a `Bytes` from a `Vec` with spare capacity (a short
    // value decoded by prost) allocates a shared header, while shrinking
    // the buffer is done in place by the allocator.
    let value = Bytes::from(value.into_boxed_slice());
    let header_value = http::HeaderValue::from_maybe_shared(value).map_err(|_| {
        InvalidRequest(format!(
            "header '{header_name}' has a value that is not valid in HTTP"
        ))
    })?;
    let room = headers.keys_len() < authchain_core::transport::MAX_HEADER_NAMES
        || headers.contains_key(&header_name);
    let appended = room && headers.try_append(header_name, header_value).is_ok();
    match appended {
        true => Ok(()),
        false => Err(InvalidRequest(format!(
            "more than {} header names",
            authchain_core::transport::MAX_HEADER_NAMES
        ))),
    }
}

pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn peer(peer: PbPeer) -> Peer {
    let address = peer.address.and_then(|a| match a.address {
        Some(address::Address::SocketAddress(s)) => {
            let ip: IpAddr = s.address.parse().ok()?;
            let port = match s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p).ok()?,
                _ => 0,
            };
            Some(SocketAddr::new(ip.to_canonical(), port))
        }
        _ => None,
    });
    let mut out = Peer::default();
    out.address = address;
    out.principal = non_empty(peer.principal);
    out
}

fn metadata_to_json(metadata: Metadata) -> Map<String, Value> {
    metadata
        .filter_metadata
        .into_iter()
        .map(|(k, v)| (k, Value::Object(struct_to_json(v))))
        .collect()
}

/// Translates the chain's decision into Envoy's answer. `sent` says which
/// headers Envoy has, which decides how appends are encoded. Fails when a
/// value cannot be carried (a header value that is not UTF-8, a query
/// parameter that would break the URL): the caller must then deny, so
/// that an invalid mutation never reaches Envoy.
pub(crate) fn to_check_response(
    decision: Decision,
    sent: &SentHeaders,
) -> Result<CheckResponse, InvalidDecision> {
    match decision {
        Decision::Allow(allow) => allow_response(allow, sent),
        Decision::Deny(deny) => Ok(deny_response(deny)),
    }
}

/// Translates a decision for a request whose headers are given, as
/// [`ExtAuthzService`](crate::ExtAuthzService) does after the chain ran.
/// `request_headers` must be the headers Envoy sent (before the chain).
pub fn decision_to_check_response(
    decision: Decision,
    request_headers: &HeaderMap,
) -> Result<CheckResponse, InvalidDecision> {
    let sent = SentHeaders {
        names: request_headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect(),
    };
    to_check_response(decision, &sent)
}

fn allow_response(allow: Allow, sent: &SentHeaders) -> Result<CheckResponse, InvalidDecision> {
    let mut ok = OkHttpResponse {
        headers: upstream_headers(&allow, sent)?,
        headers_to_remove: allow
            .headers_to_remove
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect(),
        ..Default::default()
    };
    for m in &allow.response_headers {
        ok.response_headers_to_add.push(option(
            m,
            None,
            match m.action {
                HeaderAction::AppendIfExistsOrAdd => HeaderAppendAction::AppendIfExistsOrAdd,
                HeaderAction::AddIfAbsent => HeaderAppendAction::AddIfAbsent,
                HeaderAction::OverwriteIfExistsOrAdd => HeaderAppendAction::OverwriteIfExistsOrAdd,
                HeaderAction::OverwriteIfExists => HeaderAppendAction::OverwriteIfExists,
            },
        )?);
    }
    if let Some(problem) = allow.query_problem() {
        return Err(InvalidDecision(problem));
    }
    for (key, value) in allow.query_parameters_to_set {
        ok.query_parameters_to_set
            .push(QueryParameter { key, value });
    }
    ok.query_parameters_to_remove = allow.query_parameters_to_remove;
    Ok(CheckResponse {
        status: Some(rpc::Status {
            code: code::OK,
            ..Default::default()
        }),
        dynamic_metadata: (!allow.dynamic_metadata.is_empty())
            .then(|| json_to_struct(&allow.dynamic_metadata)),
        http_response: Some(HttpResponse::OkResponse(ok)),
    })
}

/// Encodes the upstream header mutations for what Envoy 1.40 really does
/// with `ok_response.headers`: it reads only the deprecated `append` flag.
/// Unset means set (replace every copy, or add); `true` means append with
/// a comma, and only when the header exists (otherwise it is dropped).
/// `append_action` is ignored there. So, per mutation, with "exists"
/// meaning Envoy has the header (the client sent it, or an earlier entry
/// of this answer set it):
///
/// | core action | exists | absent |
/// |---|---|---|
/// | `OverwriteIfExistsOrAdd` | set | set |
/// | `OverwriteIfExists` | set | (left out) |
/// | `AddIfAbsent` | (left out) | set |
/// | `AppendIfExistsOrAdd` | `append: true` | set |
///
/// A header the proxy did not send to the auth server (Envoy's
/// `allowed_headers`) looks absent, so an append to it replaces it.
fn upstream_headers(
    allow: &Allow,
    sent: &SentHeaders,
) -> Result<Vec<HeaderValueOption>, InvalidDecision> {
    let mut out: Vec<HeaderValueOption> = Vec::with_capacity(allow.headers.len());
    // Many sent headers and several mutations: index the names once.
    let index: Option<HashSet<&str>> = (sent.names.len() > 16 && allow.headers.len() > 1)
        .then(|| sent.names.iter().map(String::as_str).collect());
    for m in &allow.headers {
        let name = m.name.as_str();
        // Set by an earlier entry of this answer: `out` holds exactly those.
        let set_here = out
            .iter()
            .any(|o| o.header.as_ref().is_some_and(|h| h.key == name));
        let exists = set_here
            || match &index {
                Some(index) => index.contains(name),
                None => sent.contains(name),
            };
        let append = match (m.action, exists) {
            (HeaderAction::OverwriteIfExistsOrAdd, _) => false,
            (HeaderAction::OverwriteIfExists, true) => false,
            (HeaderAction::OverwriteIfExists, false) => continue,
            (HeaderAction::AddIfAbsent, true) => continue,
            (HeaderAction::AddIfAbsent, false) => false,
            (HeaderAction::AppendIfExistsOrAdd, exists) => exists,
        };
        out.push(option(
            m,
            append.then_some(true),
            HeaderAppendAction::AppendIfExistsOrAdd,
        )?);
    }
    Ok(out)
}

#[allow(deprecated)] // `append` is deprecated, and the only flag Envoy reads here.
fn option(
    m: &HeaderMutation,
    append: Option<bool>,
    action: HeaderAppendAction,
) -> Result<HeaderValueOption, InvalidDecision> {
    let value = std::str::from_utf8(m.value.as_bytes()).map_err(|_| {
        InvalidDecision(format!("header '{}' has a value that is not UTF-8", m.name))
    })?;
    Ok(HeaderValueOption {
        header: Some(HeaderValue {
            key: m.name.as_str().to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: append.map(|value| BoolValue { value }),
        append_action: action as i32,
        keep_empty_value: m.value.is_empty(),
    })
}

/// Encodes a deny. Envoy 1.40 adds every `denied_response.headers` entry
/// with `append` unset as its own header line, so each value of the
/// deny's headers is one entry. The body must be text: invalid UTF-8 is
/// replaced.
fn deny_response(deny: Deny) -> CheckResponse {
    let code = if deny.status == StatusCode::UNAUTHORIZED {
        code::UNAUTHENTICATED
    } else {
        code::PERMISSION_DENIED
    };
    denied(code, "", deny)
}

#[allow(deprecated)] // `append` left unset on purpose (see deny_response).
pub(crate) fn denied(code: i32, message: &str, deny: Deny) -> CheckResponse {
    let headers = deny
        .headers
        .iter()
        .filter_map(|(name, value)| {
            // A value that is not UTF-8 cannot be carried; leave it out
            // rather than corrupt it (the deny itself still holds).
            let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
                tracing::warn!(header = %name, "deny header value is not UTF-8; left out");
                return None;
            };
            Some(HeaderValueOption {
                header: Some(HeaderValue {
                    key: name.as_str().to_owned(),
                    value: value.to_owned(),
                    raw_value: Vec::new(),
                }),
                ..Default::default()
            })
        })
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: message.to_owned(),
            details: Vec::new(),
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(deny.status.as_u16()),
            }),
            headers,
            body: String::from_utf8_lossy(&deny.body).into_owned(),
        })),
    }
}

/// Translates the request the chain sees back into a `CheckRequest`, as
/// Envoy would have sent it: what the gRPC passthrough step forwards.
/// Headers with several values are comma-joined, pseudo-headers are added,
/// a UTF-8 body goes in `body` and any other in `raw_body`.
pub fn to_check_request(req: &AuthorizationRequest, metadata: &Map<String, Value>) -> CheckRequest {
    let headers: HashMap<String, String> = req.check_headers().into_iter().collect();
    let (body, raw_body) = match &req.body {
        None => (String::new(), Vec::new()),
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => (text.to_owned(), Vec::new()),
            Err(_) => (String::new(), b.to_vec()),
        },
    };
    let size = req
        .body
        .as_ref()
        .map_or(-1, |b| i64::try_from(b.len()).unwrap_or(i64::MAX));
    let filter_metadata = metadata
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Object(map) => Some((k.clone(), json_to_struct(map))),
            _ => None,
        })
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(pb_peer(&req.source)),
            destination: Some(pb_peer(&req.destination)),
            request: Some(PbRequest {
                time: None,
                http: Some(HttpRequest {
                    id: req.id.clone(),
                    method: req.method.as_str().to_owned(),
                    headers,
                    header_map: None,
                    path: req.path.clone(),
                    host: req.host.clone(),
                    scheme: req.scheme.clone(),
                    query: String::new(),
                    fragment: String::new(),
                    size,
                    protocol: req.protocol.clone(),
                    body,
                    raw_body,
                }),
            }),
            context_extensions: req
                .context
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            metadata_context: Some(Metadata {
                filter_metadata,
                typed_filter_metadata: HashMap::new(),
            }),
            route_metadata_context: None,
            tls_session: None,
        }),
    }
}

fn pb_peer(peer: &Peer) -> PbPeer {
    PbPeer {
        address: peer.address.map(|a| Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: a.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    a.port(),
                ))),
                ..Default::default()
            })),
        }),
        principal: peer.principal.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(map: &Map<String, Value>) -> Struct {
    fields_to_struct(map.iter().map(|(k, v)| (k.as_str(), v)))
}

/// A protobuf `Struct` of named JSON values (a JSON object's, or the
/// chain's `state`).
pub fn fields_to_struct<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> Struct {
    Struct {
        fields: fields.map(|(k, v)| (k.to_owned(), json_to_pb(v))).collect(),
    }
}

fn json_to_pb(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_pb).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    PbValue { kind: Some(kind) }
}

/// A protobuf `Struct` as a JSON object. Whole numbers within ±2^53 come
/// back as integers; NaN and infinities (which JSON lacks) as null.
pub fn struct_to_json(s: Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, pb_to_json(v)))
        .collect()
}

fn pb_to_json(v: PbValue) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            if n.fract() == 0.0 && n.abs() <= EXACT {
                #[allow(clippy::cast_possible_truncation)] // whole and within ±2^53
                Value::from(n as i64)
            } else {
                Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(pb_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue as HV;

    fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(PbRequest {
                    time: None,
                    http: Some(HttpRequest {
                        method: "POST".into(),
                        path: "/p?q=1".into(),
                        host: "example.com".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        body: "hi".into(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
        }
    }

    /// More names than the chain takes (8,192, a third of what an
    /// `http::HeaderMap` holds, leaving room for the chain's own) is an
    /// invalid request, in either header field; 24,577 made the
    /// conversion panic, and a full map the chain's merge after it.
    #[test]
    fn more_header_names_than_a_map_holds_is_invalid() {
        let names: Vec<String> = (0..=authchain_core::transport::MAX_HEADER_NAMES)
            .map(|i| format!("h{i}"))
            .collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let check = check_request(&headers);
        assert!(to_request(check.clone()).is_err());
        let mut raw = check;
        let http = raw.attributes.as_mut().unwrap().request.as_mut().unwrap();
        let http = http.http.as_mut().unwrap();
        use envoy_types::pb::envoy::config::core::v3::HeaderMap as PbHeaderMap;
        http.header_map = Some(PbHeaderMap {
            headers: std::mem::take(&mut http.headers)
                .into_iter()
                .map(|(key, value)| HeaderValue {
                    key,
                    value,
                    raw_value: Vec::new(),
                })
                .collect(),
        });
        assert!(to_request(raw).is_err());
    }

    #[test]
    fn pseudo_headers_stay_out_of_the_header_map() {
        let (req, sent) = to_request(check_request(&[
            (":path", "/other"),
            ("x-a", "1"),
            (":authority", "h"),
        ]))
        .unwrap();
        assert_eq!(req.path, "/p?q=1", "the field wins over the pseudo-header");
        assert_eq!(req.host, "example.com");
        assert_eq!(req.headers.len(), 1);
        assert_eq!(req.body.as_deref(), Some(&b"hi"[..]));
        assert!(sent.contains("x-a"));
    }

    #[test]
    fn missing_http_attributes_and_bad_headers_are_invalid() {
        assert!(to_request(CheckRequest::default()).is_err());
        let e = to_request(check_request(&[("bad name", "x")])).unwrap_err();
        assert!(e.to_string().contains("bad name"), "{e}");
        let e = to_request(check_request(&[("x-secret", "a\nb")])).unwrap_err();
        assert!(!e.to_string().contains("a\nb"), "no values in errors: {e}");
    }

    #[test]
    #[allow(deprecated)]
    fn appends_are_encoded_for_what_envoy_does() {
        let name = HeaderName::from_static("x-h");
        let mut sent = SentHeaders::default();
        let mut allow = Allow::new()
            .append_header(name.clone(), HV::from_static("a"))
            .append_header(name.clone(), HV::from_static("b"));
        let encode = |allow: &Allow, sent: &SentHeaders| -> Vec<Option<bool>> {
            upstream_headers(allow, sent)
                .unwrap()
                .iter()
                .map(|o| o.append.map(|b| b.value))
                .collect()
        };
        assert_eq!(
            encode(&allow, &sent),
            [None, Some(true)],
            "absent: set, then append"
        );
        sent.names.push("x-h".into());
        assert_eq!(
            encode(&allow, &sent),
            [Some(true), Some(true)],
            "present: append both"
        );
        allow = Allow::new().add_header_if_absent(name.clone(), HV::from_static("a"));
        assert!(
            encode(&allow, &sent).is_empty(),
            "present: add-if-absent is left out"
        );
        allow = Allow::new()
            .overwrite_header_if_exists(HeaderName::from_static("x-none"), HV::from_static("a"));
        assert!(
            encode(&allow, &sent).is_empty(),
            "absent: overwrite-if-exists is left out"
        );
    }

    #[test]
    #[allow(deprecated)]
    fn many_sent_headers_are_looked_up_like_few() {
        use envoy_types::pb::envoy::config::core::v3::HeaderMap as PbHeaderMap;
        let mut check = check_request(&[]);
        let http = check
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.header_map = Some(PbHeaderMap {
            headers: (0..20)
                .map(|i| HeaderValue {
                    key: format!("X-Sent-{i}"),
                    value: "v".into(),
                    raw_value: Vec::new(),
                })
                .collect(),
        });
        let (req, sent) = to_request(check).unwrap();
        assert_eq!(req.headers.len(), 20);
        assert!(sent.contains("x-sent-7"), "raw names are lower-cased");
        let allow = Allow::new()
            .append_header(HeaderName::from_static("x-sent-7"), HV::from_static("a"))
            .append_header(HeaderName::from_static("x-new"), HV::from_static("b"))
            .append_header(HeaderName::from_static("x-new"), HV::from_static("c"));
        let appends: Vec<_> = upstream_headers(&allow, &sent)
            .unwrap()
            .iter()
            .map(|o| o.append.map(|b| b.value))
            .collect();
        assert_eq!(appends, [Some(true), None, Some(true)]);
    }

    #[test]
    fn invalid_values_never_reach_the_wire() {
        let bad = HV::from_bytes(b"caf\xe9").unwrap();
        let allow = Allow::new().set_header(HeaderName::from_static("x"), bad);
        let e = to_check_response(allow.into(), &SentHeaders::default()).unwrap_err();
        assert!(e.to_string().contains("'x'"), "{e}");
        for (k, v) in [
            ("a b", "1"),
            ("k", "x&y"),
            ("k=", "1"),
            ("", "1"),
            ("k", "#frag"),
        ] {
            let allow = Allow::new().set_query_parameter(k, v);
            assert!(
                to_check_response(allow.into(), &SentHeaders::default()).is_err(),
                "{k:?}={v:?}"
            );
        }
        let ok = Allow::new().set_query_parameter("k", "%20a/b?c=d");
        assert!(to_check_response(ok.into(), &SentHeaders::default()).is_ok());
    }

    #[test]
    fn metadata_peers_raw_headers_and_raw_bodies_are_translated() {
        use envoy_types::pb::envoy::config::core::v3::HeaderMap as PbHeaderMap;
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::TlsSession;
        let mut check = check_request(&[]);
        let attributes = check.attributes.as_mut().unwrap();
        let http = attributes.request.as_mut().unwrap().http.as_mut().unwrap();
        http.header_map = Some(PbHeaderMap {
            headers: vec![
                HeaderValue {
                    key: "x-raw".into(),
                    value: String::new(),
                    raw_value: b"a".to_vec(),
                },
                HeaderValue {
                    key: "x-raw".into(),
                    value: "b".into(),
                    raw_value: Vec::new(),
                },
                HeaderValue {
                    key: ":method".into(),
                    value: "PATCH".into(),
                    raw_value: Vec::new(),
                },
            ],
        });
        http.method = String::new();
        http.raw_body = vec![0xff, 0x00];
        let mut ns = Map::new();
        ns.insert("k".into(), Value::from("v"));
        attributes.metadata_context = Some(Metadata {
            filter_metadata: [("ns".to_owned(), json_to_struct(&ns))]
                .into_iter()
                .collect(),
            typed_filter_metadata: HashMap::new(),
        });
        attributes.source = Some(PbPeer {
            principal: "spiffe://client".into(),
            certificate: "PEM".into(),
            ..pb_peer(&Peer::from_address("[::1]:9".parse().unwrap()))
        });
        attributes.tls_session = Some(TlsSession {
            sni: "api.example.com".into(),
        });
        attributes
            .context_extensions
            .insert("config_id".into(), "c".into());
        let (req, sent) = to_request(check).unwrap();
        assert_eq!(req.method, Method::PATCH, "from the :method pseudo-header");
        let raw: Vec<_> = req.headers.get_all("x-raw").iter().collect();
        assert_eq!(raw, ["a", "b"]);
        assert!(sent.contains("x-raw"));
        assert_eq!(req.body.as_deref(), Some(&[0xff, 0x00][..]));
        assert_eq!(req.metadata["ns"]["k"], "v");
        assert_eq!(req.source.principal.as_deref(), Some("spiffe://client"));
        assert_eq!(req.source.address, Some("[::1]:9".parse().unwrap()));
        assert_eq!(req.context["config_id"], "c");
        let extras = req.extensions.get::<EnvoyAttributes>().unwrap();
        assert_eq!(extras.tls_sni, "api.example.com");
        assert_eq!(extras.source_certificate, "PEM");
    }

    #[test]
    #[allow(deprecated)]
    fn denies_and_allows_carry_every_field() {
        let mut deny = Deny::new(StatusCode::UNAUTHORIZED).body("no");
        deny.headers
            .append("www-authenticate", HV::from_static("Basic"));
        deny.headers
            .append("www-authenticate", HV::from_static("Bearer"));
        let response = to_check_response(deny.into(), &SentHeaders::default()).unwrap();
        assert_eq!(response.status.unwrap().code, code::UNAUTHENTICATED);
        let Some(HttpResponse::DeniedResponse(d)) = response.http_response else {
            panic!()
        };
        assert_eq!(d.status.unwrap().code, 401);
        assert_eq!(d.headers.len(), 2);
        assert!(d.headers.iter().all(|h| h.append.is_none()));
        assert_eq!(d.body, "no");

        let allow = Allow::new()
            .remove_header(HeaderName::from_static("x-gone"))
            .response_header(HeaderName::from_static("x-r"), HV::from_static("1"))
            .set_query_parameter("a", "1")
            .remove_query_parameter("b")
            .metadata("ns", serde_json::json!({"user": "u"}));
        let response = to_check_response(allow.into(), &SentHeaders::default()).unwrap();
        assert_eq!(response.status.unwrap().code, code::OK);
        assert_eq!(
            struct_to_json(response.dynamic_metadata.unwrap())["ns"]["user"],
            "u"
        );
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!()
        };
        assert_eq!(ok.headers_to_remove, ["x-gone"]);
        assert_eq!(
            ok.response_headers_to_add[0].append_action,
            HeaderAppendAction::AppendIfExistsOrAdd as i32
        );
        assert_eq!(ok.query_parameters_to_set[0].key, "a");
        assert_eq!(ok.query_parameters_to_remove, ["b"]);
    }

    #[test]
    fn structs_round_trip() {
        let json = serde_json::json!({"a": 1, "b": [true, null, "s", 1.5], "c": {"d": -3}});
        let Value::Object(map) = json.clone() else {
            unreachable!()
        };
        assert_eq!(Value::Object(struct_to_json(json_to_struct(&map))), json);
    }

    /// Envoy listening on `[::]` names an IPv4 client `::ffff:a.b.c.d`:
    /// rules and policies see the IPv4 address.
    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let mut mapped = Peer::default();
        mapped.address = Some("[::ffff:10.0.0.1]:5".parse().unwrap());
        assert_eq!(
            peer(pb_peer(&mapped)).address,
            Some("10.0.0.1:5".parse().unwrap())
        );
    }

    #[test]
    fn a_request_round_trips_through_check_request() {
        let (mut req, _) = to_request(check_request(&[("x-a", "1")])).unwrap();
        req.headers.append("x-a", HV::from_static("2"));
        req.source = Peer::from_address("10.0.0.1:1234".parse().unwrap());
        let back = to_check_request(&req, &Map::new());
        let (again, _) = to_request(back).unwrap();
        assert_eq!(again.method, Method::POST);
        assert_eq!(again.path, "/p?q=1");
        assert_eq!(again.host, "example.com");
        assert_eq!(again.headers["x-a"], "1,2");
        assert_eq!(again.source, req.source);
        assert_eq!(again.body, req.body);
    }
}
