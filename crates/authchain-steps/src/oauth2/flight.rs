//! One call for many requests: the requests that want the same answer at
//! once (a token's introspection, a session's refresh) wait for one call.
//! The call runs as a task of its own, so it ends, and keeps its answer
//! where it keeps it, even when every request waiting for it gives up: a
//! refresh token the IdP took is not spent a second time by the next one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use authchain_core::Error;
use tokio::sync::watch;

type Calls<V> = Arc<Mutex<HashMap<u128, watch::Receiver<Option<V>>>>>;

/// The calls under way, one per key (a PRF value), at most `limit`; each
/// leaves when it ends.
pub(crate) struct Flights<V> {
    calls: Calls<V>,
    limit: usize,
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    pub(crate) fn new(limit: usize) -> Self {
        Flights {
            calls: Arc::new(Mutex::new(HashMap::new())),
            limit,
        }
    }

    /// The answer of the call under `key`: the one under way, else `call`
    /// started now; an error if its task failed (a panic), or when `limit`
    /// calls are under way already.
    pub(crate) async fn run<F>(&self, key: u128, call: impl FnOnce() -> F) -> Result<V, Error>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (mut answer, tell) = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            match calls.get(&key) {
                Some(answer) => (answer.clone(), None),
                None if calls.len() >= self.limit => {
                    return Err(Error::overloaded(format!(
                        "{} calls to the IdP under way already",
                        self.limit
                    )));
                }
                None => {
                    let (tell, answer) = watch::channel(None);
                    calls.insert(key, answer.clone());
                    (answer, Some(tell))
                }
            }
        };
        if let Some(tell) = tell {
            // Made after the lock is let go: whatever ends the call (a
            // panic in `call`, a runtime shutting down that drops the task
            // at once) takes it again to leave.
            let leave = Leave {
                calls: Arc::clone(&self.calls),
                key,
            };
            let work = call();
            tokio::spawn(async move {
                let _leave = leave;
                let _ = tell.send(Some(work.await));
            });
        }
        // Its sender gone with nothing sent: the task failed.
        let answer = answer.wait_for(Option::is_some).await;
        answer
            .map_err(|_| Error::panicked())?
            .clone()
            .ok_or_else(Error::panicked)
    }
}

/// Removes a call from those under way when its task ends, however.
struct Leave<V> {
    calls: Calls<V>,
    key: u128,
}

impl<V> Drop for Leave<V> {
    fn drop(&mut self) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// The requests that want one answer share one call; a call whose
    /// every waiter gave up still ends, once, and the next request for
    /// the key starts a new one only after it.
    #[tokio::test(start_paused = true)]
    async fn one_call_per_key_even_when_its_waiters_give_up() {
        let flights = Flights::<usize>::new(8);
        let made = Arc::new(AtomicUsize::new(0));
        let call = |made: Arc<AtomicUsize>| {
            move || async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                made.fetch_add(1, Ordering::SeqCst) + 1
            }
        };
        // The first request gives up half way; the second joins its call.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(500),
            flights.run(7, call(made.clone())),
        )
        .await;
        assert!(gave_up.is_err());
        let (a, b) = tokio::join!(
            flights.run(7, call(made.clone())),
            flights.run(7, call(made.clone()))
        );
        assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
        assert_eq!(made.load(Ordering::SeqCst), 1);
        // Done: it left, and another key never shared it.
        assert_eq!(flights.run(7, call(made.clone())).await.unwrap(), 2);
        assert_eq!(flights.run(8, call(made.clone())).await.unwrap(), 3);
        assert!(flights.calls.lock().unwrap().is_empty());
    }

    /// Past `limit` calls under way, a new key is refused at once; a key
    /// under way is still joined.
    #[tokio::test(start_paused = true)]
    async fn past_the_limit_a_new_key_is_refused() {
        let flights = Arc::new(Flights::<u128>::new(2));
        let slow = |key: u128| {
            move || async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                key
            }
        };
        let mut under_way = Vec::new();
        for key in [1, 2] {
            let flights = flights.clone();
            under_way.push(tokio::spawn(
                async move { flights.run(key, slow(key)).await },
            ));
        }
        tokio::task::yield_now().await;
        // Full: an error no failureModeAllow lets through (clients can
        // fill it).
        let full = flights.run(3, slow(3)).await.unwrap_err();
        assert!(full.is_step() && !full.is_panic(), "{full}");
        assert_eq!(flights.run(2, slow(2)).await.unwrap(), 2);
        for call in under_way {
            assert!(call.await.unwrap().is_ok());
        }
        assert_eq!(flights.run(3, slow(3)).await.unwrap(), 3);
    }

    /// A call whose task fails (a panic) answers a panic's error to its
    /// waiters and leaves.
    #[tokio::test]
    async fn a_failed_call_answers_a_panic_and_leaves() {
        let flights = Flights::<usize>::new(8);
        let answer = flights
            .run(1, || async {
                if true {
                    panic!("the call fails");
                }
                0
            })
            .await;
        assert!(answer.unwrap_err().is_panic());
        assert!(flights.calls.lock().unwrap().is_empty());
        assert_eq!(flights.run(1, || async { 5 }).await.unwrap(), 5);
    }
}
