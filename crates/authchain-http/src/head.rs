//! What the layer and the check server read alike from a request, and
//! the plain answers both give.

use std::cell::Cell;

use authchain_core::transport::{BodyRefused, ByteBudget, Held};
use authchain_core::{AuthorizationRequest, BoxError};
use bytes::Bytes;
use http::{HeaderName, Response, StatusCode, Version};

/// The header a request's id is read from.
pub(crate) const REQUEST_ID: &str = "x-request-id";

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID);

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

/// How long a check's headers, and then its body, may take to arrive by
/// default (and a body the layer buffers): a client that sends less holds
/// a connection, never a permit, and not for longer than this.
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads `body` whole, up to `limit` bytes, within `timeout`, its bytes
/// held of `budget` when given (keep the [`Held`] until the answer). `Err`
/// is how to answer a body that cannot be had, a status and its reason:
/// 413 over the limit (at once when its length says so), 408 when it comes
/// too slowly, 429 past the budget (as past the concurrency limit), 400
/// when reading fails.
pub(crate) async fn read_body<B>(
    body: B,
    limit: usize,
    timeout: std::time::Duration,
    budget: Option<&ByteBudget>,
) -> Result<(Bytes, Held), (StatusCode, &'static str)>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    match authchain_core::transport::read_body(body, limit, timeout, budget).await {
        Ok(read) => Ok(read),
        Err(BodyRefused::TooLarge) => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))
        }
        Err(BodyRefused::Late) => {
            tracing::debug!("a request body did not arrive in time");
            Err((StatusCode::REQUEST_TIMEOUT, "request body too slow"))
        }
        Err(BodyRefused::Shed) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            "too many bytes of checks in flight",
        )),
        Err(e) => {
            tracing::debug!(error = ?e, "cannot read the request body");
            Err((StatusCode::BAD_REQUEST, "cannot read the request body"))
        }
    }
}

/// A response with `status` and a text body (empty: none).
pub(crate) fn plain<ResBody: From<Bytes>>(
    status: StatusCode,
    body: impl Into<Bytes>,
) -> Response<ResBody> {
    let mut response = Response::new(ResBody::from(body.into()));
    *response.status_mut() = status;
    response
}

thread_local! {
    /// The request this thread's last check or layer call was done with,
    /// emptied: the next one is read into it, so that its path, host,
    /// headers and state reuse their room instead of allocating afresh
    /// (without it, 3.5% more instructions per check and 6% more per layered
    /// request, by scripts/server-instructions.sh).
    static SPARE: Cell<Option<Box<AuthorizationRequest>>> = const { Cell::new(None) };
}

/// What a spare request may keep (each string's room, the header map's
/// entries): a request that grew past it is dropped instead.
const SPARE_ROOM: usize = 4096;

/// An empty request to read a request into: this thread's spare, or a new
/// one.
pub(crate) fn empty_request() -> Box<AuthorizationRequest> {
    // `try_with`: a thread tearing down its locals gets a new one.
    SPARE
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Done with `request`: it becomes this thread's spare, emptied as a new
/// request is, with only the room of its strings, header map and state
/// kept.
pub(crate) fn give_back(mut request: Box<AuthorizationRequest>) {
    let oversized = [
        &request.path,
        &request.host,
        &request.scheme,
        &request.id,
        &request.protocol,
    ]
    .iter()
    .any(|s| s.capacity() > SPARE_ROOM)
        || request.headers.capacity() > SPARE_ROOM / 64
        || request.state.len() > SPARE_ROOM / 64;
    if oversized {
        return;
    }
    authchain_core::transport::empty_for_reuse(&mut request);
    let _ = SPARE.try_with(|spare| spare.set(Some(request)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_comes_back_as_a_new_request_and_an_oversized_one_not_at_all() {
        let mut request = empty_request();
        request.path.push_str("/secret?token=abc");
        request.id.push_str("id-1");
        request.body = Some(Bytes::from_static(b"secret body"));
        request.context.insert("k".into(), "secret".into());
        request.state.insert("user", serde_json::json!("alice"));
        give_back(request);
        let spare = empty_request();
        assert!(
            spare.path.capacity() >= "/secret?token=abc".len(),
            "room kept"
        );
        assert!(spare.path.is_empty() && spare.id.is_empty() && spare.state.is_empty());
        assert!(spare.body.is_none() && spare.context.is_empty());
        assert_eq!(
            format!("{spare:?}"),
            format!("{:?}", AuthorizationRequest::default())
        );

        let mut big = spare;
        big.path = "x".repeat(SPARE_ROOM + 1);
        give_back(big);
        assert_eq!(empty_request().path.capacity(), 0, "not kept");
    }
}
