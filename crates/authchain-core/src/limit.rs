//! What a listener bounds, for the transports: the checks in flight (shed
//! beyond the limit), the bytes of the checks it reads (shed beyond the
//! budget), the connections open, and how long a connection may sit idle.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// A limit on the checks in flight. A check beyond the limit is not
/// queued: the transport answers it at once (HTTP 429, gRPC
/// `RESOURCE_EXHAUSTED`), so an overloaded server stays fast at saying no,
/// and the proxy can retry elsewhere. The `authchain` server gives each
/// listener its own, so that one protocol's clients cannot take the
/// other's places.
///
/// Metric: `authchain_shed_total{transport}`.
#[derive(Clone)]
pub struct ConcurrencyLimit {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("max", &self.max)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// A place among the checks in flight, given back on drop.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
}

impl ConcurrencyLimit {
    /// At most `max` checks in flight (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConcurrencyLimit {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The checks in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }

    /// A place, once one is free (for a connection: a listener waits for
    /// one before it accepts).
    pub async fn acquire(&self) -> Permit {
        match Arc::clone(&self.semaphore).acquire_owned().await {
            Ok(permit) => Permit { _permit: permit },
            // The semaphore is never closed.
            Err(_) => unreachable!("the limit's semaphore is never closed"),
        }
    }

    /// A place for one check, or `None` when the limit is reached; a
    /// refusal is counted under `transport`.
    pub fn try_acquire(&self, transport: &'static str) -> Option<Permit> {
        match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(permit) => Some(Permit { _permit: permit }),
            Err(_) => {
                metrics::counter!("authchain_shed_total", "transport" => transport).increment(1);
                None
            }
        }
    }
}

/// The connections a listener keeps open: how many at most, and how long
/// one may sit idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// The most connections open at once; beyond it, the listener accepts
    /// no more until one closes ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// A connection on which no byte has moved either way for this long is
    /// closed ([`DEFAULT_IDLE_TIMEOUT`]): keep it above the chains'
    /// deadlines, or a check waiting on a slow step loses its connection.
    pub idle_timeout: Duration,
    /// The most bytes of checks being read and answered at once, over all
    /// connections ([`DEFAULT_MAX_BUFFERED_BYTES`]; never below one
    /// check's size limit): see [`ByteBudget`].
    pub max_buffered_bytes: usize,
}

/// The default [`ConnectionLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The default [`ConnectionLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default [`ConnectionLimits::max_buffered_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

impl ConnectionLimits {
    /// Limits of `max_connections` (at least one) and `idle_timeout`.
    pub fn new(max_connections: usize, idle_timeout: Duration) -> Self {
        ConnectionLimits {
            max_connections,
            idle_timeout,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }

    /// At most `bytes` of checks read and answered at once.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// The [`ByteBudget`] of these limits for a listener whose largest
    /// check is `largest_check` bytes: room for one at least.
    pub fn byte_budget(&self, largest_check: usize, transport: &'static str) -> ByteBudget {
        ByteBudget::new(self.max_buffered_bytes.max(largest_check), transport)
    }
}

/// A bound on the bytes of the checks a listener reads and answers, over
/// all its connections. A check's body is read before the check takes a
/// place among those in flight (a slow client must hold no place another
/// check needs), so without it, clients that each start many large bodies
/// and finish none could fill the memory. Each check holds its bytes from
/// the first until it is answered; one whose next bytes would pass the
/// budget is shed at once, as beyond the [`ConcurrencyLimit`].
///
/// Metric: `authchain_shed_total{transport}`.
#[derive(Clone)]
pub struct ByteBudget {
    /// The bytes held now: a counter, as nothing ever waits for room.
    used: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
    transport: &'static str,
}

impl fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteBudget")
            .field("max", &self.max)
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl ByteBudget {
    /// At most `max` bytes held at once (at least one), shed checks
    /// counted under `transport`.
    pub fn new(max: usize, transport: &'static str) -> Self {
        ByteBudget {
            used: Arc::default(),
            max: max.max(1),
            transport,
        }
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The bytes held now.
    pub fn in_use(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Bytes held of a [`ByteBudget`], given back on drop.
#[derive(Debug, Default)]
pub struct Held(Option<(Arc<std::sync::atomic::AtomicUsize>, usize)>);

impl Held {
    /// Holds `n` more bytes of `budget`, or sheds.
    fn grow(&mut self, budget: &ByteBudget, n: usize) -> Result<(), BodyRefused> {
        use std::sync::atomic::Ordering::Relaxed;
        let taken = budget
            .used
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= budget.max)
            })
            .is_ok();
        if !taken {
            metrics::counter!("authchain_shed_total", "transport" => budget.transport).increment(1);
            return Err(BodyRefused::Shed);
        }
        match &mut self.0 {
            Some((_, held)) => *held += n,
            None => self.0 = Some((Arc::clone(&budget.used), n)),
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((used, held)) = &self.0 {
            used.fetch_sub(*held, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Why [`read_body`] read no body.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyRefused {
    /// Longer than the limit.
    TooLarge,
    /// Not whole within the timeout.
    Late,
    /// The [`ByteBudget`] has no room for it.
    Shed,
    /// The body failed (its connection broke, say).
    Unreadable(BoxError),
}

/// Reads a check's `body` whole: at most `limit` bytes, within `timeout`,
/// each byte held of `budget` when given. The bytes are copied as they
/// come (a frame's bytes point into the connection's read buffer, which
/// keeping them would keep whole: many times the body, for a client that
/// sends a byte a frame). Keep the [`Held`] until the check is answered.
pub async fn read_body<B>(
    body: B,
    limit: usize,
    timeout: Duration,
    budget: Option<&ByteBudget>,
) -> Result<(Bytes, Held), BodyRefused>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyRefused::TooLarge);
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let (mut whole, mut held) = (BytesMut::new(), Held::default());
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let frame = frame.map_err(|e| BodyRefused::Unreadable(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let n = data.remaining();
            if whole.len().saturating_add(n) > limit {
                return Err(BodyRefused::TooLarge);
            }
            if let Some(budget) = budget {
                held.grow(budget, n)?;
            }
            whole.put(data);
        }
        Ok((whole.freeze(), held))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyRefused::Late))
}

/// How long a new connection may stay silent before it is closed (or the
/// idle timeout, if shorter): a proxy sends its request at once, and a
/// connection that says nothing must not hold a place for long.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection a listener accepted: its IO, closed with a `TimedOut`
/// error once no byte has moved either way for the idle timeout (or, for a
/// peer that has not sent one, whatever this side wrote, for
/// [`FIRST_BYTE_TIMEOUT`]), and its
/// place among the listener's connections, given back on drop.
pub struct Connection<T> {
    io: T,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// The task the timer wakes, once it was polled.
    waking: Option<std::task::Waker>,
    /// Whether a byte moved since the timer was last set.
    moved: bool,
    /// Whether the peer has sent a byte yet: until it has, bytes this side
    /// writes (an HTTP/2 server's SETTINGS) do not keep it open.
    heard: bool,
    _place: Permit,
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<T> Connection<T> {
    /// `io`, holding `place` until dropped, closed when idle for `idle`.
    pub fn new(io: T, idle: Duration, place: Permit) -> Self {
        Connection {
            io,
            idle,
            timer: Box::pin(tokio::time::sleep(idle.min(FIRST_BYTE_TIMEOUT))),
            waking: None,
            moved: false,
            heard: false,
            _place: place,
        }
    }

    /// The IO.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Called where the IO waits: an error once the connection has been
    /// idle too long, else the timer is set to wake the waiting task then.
    fn idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // A timer set to wake this task already will: most waits end here.
        if !self.timer.is_elapsed()
            && self
                .waking
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Ok(());
        }
        self.waking = Some(cx.waker().clone());
        while self.timer.as_mut().poll(cx).is_ready() {
            if !self.heard {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no byte from the peer in its first {:?}",
                        self.idle.min(FIRST_BYTE_TIMEOUT)
                    ),
                ));
            }
            if !std::mem::take(&mut self.moved) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no byte either way for {:?}", self.idle),
                ));
            }
            let next = Instant::now() + self.idle;
            self.timer.as_mut().reset(next);
        }
        Ok(())
    }

    /// Notes bytes moved by a ready IO call, or checks the idle time of a
    /// pending one.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
        moved: bool,
    ) -> Poll<io::Result<R>> {
        match poll {
            Poll::Pending => match self.idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => {
                self.moved |= moved;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        self.heard |= moved;
        self.watch(cx, poll, moved)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        self.watch(cx, poll, moved)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        self.watch(cx, poll, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_speaks_closes_within_the_first_byte_timeout() {
        use tokio::io::AsyncReadExt;
        let limit = ConcurrencyLimit::new(1);
        let (near, _far) = tokio::io::duplex(64);
        let mut conn = Connection::new(near, Duration::from_secs(3600), limit.acquire().await);
        let started = Instant::now();
        let error = conn.read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), FIRST_BYTE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn what_this_side_writes_does_not_keep_a_silent_peer_connected() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limit = ConcurrencyLimit::new(1);
        let (near, _far) = tokio::io::duplex(64);
        let mut conn = Connection::new(near, Duration::from_secs(3600), limit.acquire().await);
        // An HTTP/2 server writes its SETTINGS before it reads anything.
        conn.write_all(b"settings").await.unwrap();
        let started = Instant::now();
        let error = conn.read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), FIRST_BYTE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_closes_once_idle_and_not_while_bytes_move() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limit = ConcurrencyLimit::new(1);
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = Connection::new(near, Duration::from_secs(10), limit.acquire().await);
        assert_eq!(limit.in_flight(), 1, "the connection holds its place");
        // A byte every 6 s keeps it open past the idle time.
        let mut byte = [0u8; 1];
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(6)).await;
            far.write_all(b"x").await.unwrap();
            conn.read_exact(&mut byte).await.unwrap();
        }
        // Then nothing for 10 s (at most 20 s after the last byte, as the
        // timer is only pushed back when it fires): a timeout.
        let started = Instant::now();
        let error = conn.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= Duration::from_secs(20));
        drop(conn);
        assert_eq!(limit.in_flight(), 0, "and gives it back");
    }

    /// A body's bytes are held of the budget until the hold drops; a body
    /// that would pass it is shed, and one over the limit refused.
    #[tokio::test]
    async fn bodies_hold_their_bytes_of_the_budget() {
        use futures::StreamExt;
        use http_body_util::{Full, StreamBody};
        let budget = ByteBudget::new(10, "t");
        let read = |bytes: &'static [u8], limit| {
            let budget = budget.clone();
            async move {
                read_body(
                    Full::new(Bytes::from_static(bytes)),
                    limit,
                    Duration::from_secs(1),
                    Some(&budget),
                )
                .await
            }
        };
        let (body, held) = read(b"123456", 100).await.unwrap();
        assert_eq!(body, "123456");
        assert_eq!(budget.in_use(), 6);
        assert!(matches!(read(b"12345", 100).await, Err(BodyRefused::Shed)));
        assert!(matches!(read(b"1234", 3).await, Err(BodyRefused::TooLarge)));
        let (_, more) = read(b"1234", 100).await.unwrap();
        assert_eq!(budget.in_use(), 10);
        drop((held, more));
        assert_eq!(budget.in_use(), 0, "given back");

        // Frame by frame: the bytes of a body that stalls are held, and
        // given back when it is late.
        let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(Bytes::from_static(b"1234")),
        )])
        .chain(futures::stream::pending());
        let stalled = read_body(
            StreamBody::new(frames),
            100,
            Duration::from_millis(20),
            Some(&budget),
        );
        let watch = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            budget.in_use()
        };
        let (stalled, held_meanwhile) = tokio::join!(stalled, watch);
        assert!(matches!(stalled, Err(BodyRefused::Late)));
        assert_eq!(held_meanwhile, 4);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn sheds_beyond_the_limit_and_recovers() {
        let limit = ConcurrencyLimit::new(2);
        let a = limit.try_acquire("t").unwrap();
        let _b = limit.clone().try_acquire("t").unwrap();
        assert_eq!(limit.in_flight(), 2);
        assert!(limit.try_acquire("t").is_none());
        drop(a);
        assert!(limit.try_acquire("t").is_some());
        assert_eq!(ConcurrencyLimit::new(0).max(), 1);
    }
}
