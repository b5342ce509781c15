//! What the adapters (the gRPC and HTTP check servers, the tower layer)
//! need beyond [`Chain::authorize`]: a user who runs chains in code needs
//! none of it.
//!
//! - Limits a listener keeps: [`ConcurrencyLimit`] on the checks in
//!   flight, [`ByteBudget`] on the bytes of those it reads ([`read_body`]),
//!   [`ConnectionLimits`] and [`Connection`] on its connections.
//! - [`authorize_forwarded`], for a caller that sends the request itself
//!   on, and [`authorize_via`], for a check server (its [`Transport`] is
//!   in the decision log).
//! - [`empty_for_reuse`], for an adapter that reads the next request into
//!   the room of the last.
//! - [`strips`], for an adapter whose proxy cannot remove headers.
//! - [`AnswerBy`], when the caller stops waiting.
//! - [`LastAnswer`], for a step that calls a remote server.

use crate::{AuthorizationRequest, Chain, Decision};

#[doc(inline)]
pub use crate::chain::MAX_HEADER_NAMES;
#[doc(inline)]
pub use crate::decision::is_framing;
#[doc(inline)]
pub use crate::decision_log::Transport;

#[doc(inline)]
pub use crate::limit::{
    BodyRefused, ByteBudget, ConcurrencyLimit, Connection, ConnectionLimits, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS, FIRST_BYTE_TIMEOUT, Held, Permit,
    read_body,
};

/// When the caller stops waiting for the answer, as a request extension
/// an adapter inserts (the gRPC server, from Envoy's `grpc-timeout`; the
/// HTTP check server, from Envoy's `x-envoy-expected-rq-timeout-ms`): the
/// chain's deadline comes no later, so that a step still running then is
/// answered with a deny (`statusOnError`, whatever the step's
/// `failureModeAllow`), not by the caller giving up, which Envoy's
/// `failure_mode_allow` turns into a pass whatever the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerBy(pub std::time::Instant);

impl AnswerBy {
    /// For a caller that waits `timeout` from `start` (when its request
    /// arrived): a tenth before, so that the answer is on its way when the
    /// caller's timer ends.
    pub fn within(start: std::time::Instant, timeout: std::time::Duration) -> Option<AnswerBy> {
        start.checked_add(timeout - timeout / 10).map(AnswerBy)
    }

    /// The caller's deadline `request` carries, if any.
    pub(crate) fn of(request: &AuthorizationRequest) -> Option<tokio::time::Instant> {
        let by = request.extensions.get::<AnswerBy>()?;
        Some(tokio::time::Instant::from_std(by.0))
    }
}

/// When a remote server last answered a call, for a step that calls one
/// (a passthrough) and whose `failureModeAllow` rides out the remote's
/// outage: a call that gets no answer in time, or a gateway's for it (a
/// 502, 503, 504, UNAVAILABLE), while the remote answered another call
/// within the call's time, is no outage. The remote is up, and a client
/// can bring the failure about: a credential the remote is slow to
/// refuse, past its own time or a gateway's, or a flood that queues calls
/// behind the most the remote takes at once, or trips a rate limit in
/// front of it. Such a call fails closed. A remote that answers nothing
/// for a call's time is out.
#[derive(Debug)]
pub struct LastAnswer {
    /// When it was made: calls start later.
    base: tokio::time::Instant,
    /// Nanoseconds from `base` to the last answer, plus one (zero: none).
    last: std::sync::atomic::AtomicU64,
}

impl Default for LastAnswer {
    fn default() -> Self {
        LastAnswer {
            base: tokio::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl LastAnswer {
    /// The record of the remote at `origin` (its scheme, host and port,
    /// one way however a config writes them), shared by every step that
    /// calls it, of every AuthConfig and generation, while any holds it: a
    /// flood through one AuthConfig is no outage for another's
    /// `failureModeAllow`, and a reload forgets nothing.
    pub fn of(origin: &str) -> std::sync::Arc<LastAnswer> {
        use std::sync::{Arc, Mutex, Weak};
        type Remotes = std::collections::HashMap<String, Weak<LastAnswer>>;
        static REMOTES: std::sync::LazyLock<Mutex<Remotes>> =
            std::sync::LazyLock::new(Mutex::default);
        let mut remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
        remotes.retain(|_, answers| answers.strong_count() > 0);
        if let Some(answers) = remotes.get(origin).and_then(Weak::upgrade) {
            return answers;
        }
        let answers = Arc::new(LastAnswer::default());
        remotes.insert(origin.to_owned(), Arc::downgrade(&answers));
        answers
    }

    /// The remote answered a call now.
    pub fn heard(&self) {
        let now = self.ticks(tokio::time::Instant::now());
        self.last
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// The remote's call ended with `status`: heard, unless that is a
    /// gateway's for a remote it could not reach ([`is_gateway_failure`]).
    pub fn answered(&self, status: http::StatusCode) {
        if !is_gateway_failure(status) {
            self.heard();
        }
    }

    /// The error of a call `what` says got no answer of the remote's (a
    /// timeout, a gateway's or its own "unavailable", a connection not
    /// made): an outage ([`Error::step`], which `failureModeAllow` may
    /// ride out) when the remote answered no other call in the last
    /// `window` (a call's time), else an error that fails closed: the
    /// remote is up.
    pub fn unanswered(&self, window: std::time::Duration, what: String) -> crate::Error {
        match self.within(window) {
            true => {
                crate::Error::step_fail_closed(format!("{what}, while it answered other calls"))
            }
            false => crate::Error::step(what),
        }
    }

    /// Whether the remote answered a call in the last `window` (a call's
    /// time).
    pub fn within(&self, window: std::time::Duration) -> bool {
        let start = tokio::time::Instant::now()
            .checked_sub(window)
            .unwrap_or(self.base);
        self.last.load(std::sync::atomic::Ordering::Relaxed) > self.ticks(start)
    }

    fn ticks(&self, at: tokio::time::Instant) -> u64 {
        let since = at.saturating_duration_since(self.base);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }
}

/// Whether `status` is a gateway's for a remote it could not reach (502,
/// 503, 504): no answer of the remote's own, an outage unless the remote
/// answers other calls ([`LastAnswer::unanswered`]).
pub fn is_gateway_failure(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// [`Chain::authorize`] for a caller that sends the request itself on
/// (a tower layer), not the allow's changes to it: the request comes back
/// exactly as `authorize` leaves it, but the allow does not repeat its
/// header and query changes (its `headers`, `headers_to_remove` and query
/// lists may be empty). The allow still carries what the request cannot:
/// response headers, dynamic metadata, the user. A remembered answer of a
/// decision cache is replayed whole.
pub fn authorize_forwarded<'a>(
    chain: &'a Chain,
    request: &'a mut AuthorizationRequest,
) -> impl Future<Output = Decision> + Send + 'a {
    chain.answer(request, true, Transport::Layer)
}

/// [`Chain::authorize`] for a check server: the same answer, and a
/// decision log record (if the chain logs) that names the `transport`.
pub fn authorize_via<'a>(
    chain: &'a Chain,
    request: &'a mut AuthorizationRequest,
    transport: Transport,
) -> impl Future<Output = Decision> + Send + 'a {
    chain.answer(request, false, transport)
}

/// Whether `name` spells a header `chain` strips (rule 7): `x-user-id`,
/// `x_user_id` or `x.user.id` for `x-user-id`. For an adapter whose proxy
/// sends the app the client's headers and cannot remove one (forward
/// auth): its config replaces the headers it copies from the allow, by
/// their own name, and no other, so a client's copy of a header the allow
/// does not set (a `stripClientHeaders` entry), or another spelling that
/// an app folds into one it does (PHP, WSGI, Rack), would reach the app.
pub fn strips(chain: &Chain, name: &http::HeaderName) -> bool {
    chain
        .stripped_headers()
        .iter()
        .any(|stripped| crate::merge::same_folded(name.as_str(), stripped.as_str()))
}

/// Empties `request` as a new one is, keeping the room of its strings,
/// header map and state, for an adapter that reads its next request into
/// it. Every field is reset: a field added to [`AuthorizationRequest`]
/// does not compile here until it is.
pub fn empty_for_reuse(request: &mut AuthorizationRequest) {
    let AuthorizationRequest {
        method,
        scheme,
        host,
        path,
        headers,
        body,
        protocol,
        id,
        source,
        destination,
        context,
        metadata,
        state,
        extensions,
    } = request;
    *method = http::Method::default();
    for s in [scheme, host, path, protocol, id] {
        s.clear();
    }
    // Emptying an empty map still costs: its index, its tree.
    if !headers.is_empty() {
        headers.clear();
    }
    *body = None;
    for peer in [source, destination] {
        if *peer != crate::Peer::default() {
            *peer = crate::Peer::default();
        }
    }
    if !context.is_empty() {
        context.clear();
    }
    if !metadata.is_empty() {
        metadata.clear();
    }
    if !state.is_empty() {
        state.clear();
    }
    extensions.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_emptied_for_reuse_is_a_new_request() {
        let mut request = AuthorizationRequest {
            method: http::Method::POST,
            ..Default::default()
        };
        for s in [
            &mut request.scheme,
            &mut request.host,
            &mut request.path,
            &mut request.protocol,
            &mut request.id,
        ] {
            s.push_str("secret");
        }
        request
            .headers
            .insert("x-secret", http::HeaderValue::from_static("s"));
        request.body = Some(bytes::Bytes::from_static(b"secret"));
        request.source = crate::Peer::from_address(([10, 0, 0, 1], 1).into());
        request.destination = crate::Peer::from_address(([10, 0, 0, 2], 2).into());
        request.context.insert("k".into(), "secret".into());
        request.metadata.insert("k".into(), "secret".into());
        request.state.insert("k", serde_json::json!("secret"));
        request.extensions.insert(7u8);
        let room = request.path.capacity();

        empty_for_reuse(&mut request);
        assert_eq!(
            format!("{request:?}"),
            format!("{:?}", AuthorizationRequest::default())
        );
        assert!(request.body.is_none() && request.extensions.get::<u8>().is_none());
        assert_eq!(request.path.capacity(), room, "the room is kept");
    }
}
