//! What the layer and the check server read alike from a request, and
//! the plain answers both give.

use std::cell::Cell;

use authchain_core::{AuthorizationRequest, BoxError};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// The header a request's id is read from.
pub(crate) const REQUEST_ID: &str = "x-request-id";

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID);

/// Up to this many header values, [`host_and_id`] compares names rather
/// than looking both up. A lookup hashes what a name is made of (a
/// standard name's two enum tags, a custom one's length and bytes) one
/// byte at a time: about 110 instructions for `Host`, 170 for
/// `x-request-id`. A step of the scan costs about 25. Measured in the
/// layered bench app (`scripts/server-instructions.sh`): 143 instructions
/// against 276 at 4 values, 239 against 346 at 8.
const SCAN_VALUES: usize = 8;

/// The `Host` and `x-request-id` headers of a request (the first value of
/// each, as `HeaderMap::get` gives).
pub(crate) fn host_and_id(headers: &HeaderMap) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
    if headers.len() > SCAN_VALUES {
        return (headers.get(HOST), headers.get(&X_REQUEST_ID));
    }
    let (mut host, mut id) = (None, None);
    for (name, value) in headers {
        if *name == HOST {
            host.get_or_insert(value);
        } else if *name == X_REQUEST_ID {
            id.get_or_insert(value);
        }
    }
    (host, id)
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

/// Reads `body` whole, up to `limit` bytes. `Err` is how to answer a body
/// that cannot be had, a status and its reason: 413 over the limit, 400
/// when reading fails.
pub(crate) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, (StatusCode, &'static str)>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the request body");
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

/// Done with `request`: it becomes this thread's spare, a new request
/// with only the room of its strings, header map and state kept, emptied.
/// Every other field is a new request's: no field, however added later,
/// carries one request's data to the next.
pub(crate) fn give_back(mut request: Box<AuthorizationRequest>) {
    let oversized = [&request.path, &request.host, &request.scheme, &request.id]
        .iter()
        .any(|s| s.capacity() > SPARE_ROOM)
        || request.headers.capacity() > SPARE_ROOM / 64;
    if oversized {
        return;
    }
    let old = std::mem::take(&mut *request);
    let emptied = |mut s: String| {
        s.clear();
        s
    };
    request.scheme = emptied(old.scheme);
    request.host = emptied(old.host);
    request.path = emptied(old.path);
    request.id = emptied(old.id);
    let mut headers = old.headers;
    // An empty map's `clear` still resets every slot of its index.
    if !headers.is_empty() {
        headers.clear();
    }
    request.headers = headers;
    let mut state = old.state;
    state.clear();
    request.state = state;
    let _ = SPARE.try_with(|spare| spare.set(Some(request)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with `len` header values: `other-N` fillers, and `Host`
    /// or `x-request-id` values where `at` says.
    fn request_headers(len: usize, at: &[(usize, &'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for i in 0..len {
            match at.iter().find(|(index, ..)| *index == i) {
                Some((_, name, value)) => {
                    headers.append(*name, HeaderValue::from_static(value));
                }
                None => {
                    let name = HeaderName::try_from(format!("other-{i}")).expect("a name");
                    headers.append(name, HeaderValue::from_static("x"));
                }
            }
        }
        headers
    }

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

    #[test]
    fn host_and_id_are_the_first_values_whether_the_map_is_scanned_or_looked_up() {
        let placements: [&[(usize, &str, &str)]; 4] = [
            &[],
            &[(0, "host", "a.example"), (1, REQUEST_ID, "id-1")],
            &[
                (2, REQUEST_ID, "id-1"),
                (3, "host", "a.example"),
                (5, REQUEST_ID, "id-2"),
                (6, "host", "b.example"),
            ],
            &[(7, "host", "a.example"), (8, REQUEST_ID, "id-1")],
        ];
        // Both sides of SCAN_VALUES, and a map of repeated values only.
        for len in [0, 2, 4, 7, SCAN_VALUES, SCAN_VALUES + 1, 12] {
            for at in placements {
                let at: Vec<_> = at.iter().copied().filter(|(i, ..)| *i < len).collect();
                let headers = request_headers(len, &at);
                assert_eq!(
                    host_and_id(&headers),
                    (headers.get(HOST), headers.get(REQUEST_ID)),
                    "{len} values, {at:?}"
                );
            }
        }
        // Names are lowercase whatever case they were written in.
        let mut headers = HeaderMap::new();
        let name = HeaderName::try_from("X-Request-Id").expect("a name");
        headers.append(name, HeaderValue::from_static("id-1"));
        assert_eq!(host_and_id(&headers).1, headers.get(REQUEST_ID));
        assert!(host_and_id(&headers).1.is_some());

        for len in [SCAN_VALUES, SCAN_VALUES + 1] {
            let mut repeated = HeaderMap::new();
            for i in 0..len {
                let id = HeaderValue::try_from(format!("id-{i}")).expect("a value");
                repeated.append(REQUEST_ID, id);
            }
            let (host, id) = host_and_id(&repeated);
            assert_eq!(
                (host, id.map(HeaderValue::as_bytes)),
                (None, Some(&b"id-0"[..]))
            );
        }
    }
}
