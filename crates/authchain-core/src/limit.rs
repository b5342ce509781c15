//! Bounded concurrency with load shedding, shared by the transports.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A limit on the checks in flight, shared by every transport of a server
/// (clone it into each). A check beyond the limit is not queued: the
/// transport answers it at once (HTTP 503, gRPC `RESOURCE_EXHAUSTED`), so
/// an overloaded server stays fast at saying no, and the proxy can retry
/// elsewhere.
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

#[cfg(test)]
mod tests {
    use super::*;

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
