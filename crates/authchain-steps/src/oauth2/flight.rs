//! One call for many requests: the requests that want the same answer at
//! once (a token's introspection, a session's refresh) wait for one call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

/// The calls under way, one per key (a PRF value).
pub(crate) struct Flights<V> {
    cells: Mutex<HashMap<u128, Arc<OnceCell<V>>>>,
}

impl<V: Clone> Flights<V> {
    pub(crate) fn new() -> Self {
        Flights {
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// The answer of the call under `key`: the one under way, else `call`
    /// made now. When the request making the call gives up, one of those
    /// waiting makes it instead.
    pub(crate) async fn run<F>(&self, key: u128, call: impl FnOnce() -> F) -> V
    where
        F: Future<Output = V>,
    {
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let _leave = Leave {
            cells: &self.cells,
            key,
            cell: &cell,
        };
        cell.get_or_init(call).await.clone()
    }
}

/// Removes a call's cell when it is done, or when the request that made
/// it gave up and no other waits for it.
struct Leave<'a, V> {
    cells: &'a Mutex<HashMap<u128, Arc<OnceCell<V>>>>,
    key: u128,
    cell: &'a Arc<OnceCell<V>>,
}

impl<V> Drop for Leave<'_, V> {
    fn drop(&mut self) {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = cells.get(&self.key)
            && Arc::ptr_eq(current, self.cell)
            // Done, or no one else holds it (the map and this request).
            && (self.cell.initialized() || Arc::strong_count(self.cell) <= 2)
        {
            cells.remove(&self.key);
        }
    }
}
