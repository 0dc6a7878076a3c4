//! An upstream's connection limit (`breaker.max-connections`), shared by every worker's
//! pools: an open connection holds a permit. A request that needs a new connection when
//! none is left first closes an idle one of another pool (whose permit then frees up), and
//! waits, as one of at most `max-pending-requests`, for a connection of its pool to come
//! back idle (or a stream to free up) or for a permit; more are refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::TargetPool;

/// The connection limit of one upstream.
#[derive(Debug)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max_pending: Option<usize>,
    pending: AtomicUsize,
    /// Every pool under the limit, to close an idle connection of when permits run out.
    pools: OnceLock<Vec<Weak<TargetPool>>>,
    /// Told when a connection turns idle in any pool while requests wait.
    pub idle: Notify,
}

/// A request counted as waiting for a connection, until dropped.
pub struct Waiting<'a>(&'a ConnectionLimit);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionLimit {
    /// At most `max` connections open, and `max_pending` requests waiting (unlimited when
    /// `None`).
    pub fn new(max: usize, max_pending: Option<usize>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max_pending,
            pending: AtomicUsize::new(0),
            pools: OnceLock::new(),
            idle: Notify::new(),
        }
    }

    /// Whether requests wait for a connection now.
    pub fn has_waiting(&self) -> bool {
        self.pending.load(Ordering::Relaxed) > 0
    }

    /// Names the pools under the limit (once, when the upstream is built).
    pub fn register(&self, pools: &[Arc<TargetPool>]) {
        let _ = self.pools.set(pools.iter().map(Arc::downgrade).collect());
    }

    /// Closes one idle connection of any pool under the limit, so that its permit frees
    /// up; false when none is idle.
    pub fn reclaim(&self) -> bool {
        self.pools
            .get()
            .into_iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .any(|pool| pool.close_idle())
    }

    /// A permit for one more connection, if one is left.
    pub fn try_open(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Counts one more waiting request, or refuses it with the limit when the pending
    /// requests are at `max-pending-requests`.
    pub fn wait(&self) -> Result<Waiting<'_>, usize> {
        let Some(max) = self.max_pending else {
            self.pending.fetch_add(1, Ordering::Relaxed);
            return Ok(Waiting(self));
        };
        self.pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now < max).then_some(now + 1)
            })
            .map(|_| Waiting(self))
            .map_err(|_| max)
    }

    /// The next permit that frees up.
    pub async fn open(&self) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_and_pending_requests_are_bounded() {
        let limit = ConnectionLimit::new(1, Some(2));
        let first = limit.try_open().expect("one connection");
        assert!(limit.try_open().is_none());
        let a = limit.wait().expect("first waiter");
        let _b = limit.wait().expect("second waiter");
        assert_eq!(limit.wait().err(), Some(2));
        drop(a);
        assert!(limit.wait().is_ok());
        drop(first);
        assert!(limit.try_open().is_some());
    }
}
