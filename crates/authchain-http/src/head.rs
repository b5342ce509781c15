//! What the layer and the check server read alike from a request's head.

use http::{HeaderMap, HeaderName, Version};

/// The header a request's id is read from.
pub(crate) const REQUEST_ID: &str = "x-request-id";

static X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID);

/// The id a client or proxy gave the request in `x-request-id`, when it is
/// text.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// The protocol as [`AuthorizationRequest::protocol`] names it.
///
/// [`AuthorizationRequest::protocol`]: authchain_core::AuthorizationRequest::protocol
pub(crate) fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "",
    }
}
