//! Shared HTTP/2 connections to one target, for one worker thread: a request opens a stream
//! on the least busy open connection below the stream limit, and a new connection is opened
//! only when every one is full (or closed). A connection without streams for the idle timeout
//! is closed when the pool is next used.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use hyper::client::conn::http2::SendRequest;

use crate::body::{Body, BodyHook};

/// The HTTP/2 connections of one target pool.
pub struct Multiplexed {
    connections: Mutex<Vec<Shared>>,
    max_streams: usize,
    idle_timeout: Duration,
    /// What connections' last activity is counted from.
    epoch: Instant,
    /// Told each time a stream ends (a request waiting for room may take it).
    pub freed: Arc<Notify>,
}

struct Shared {
    sender: SendRequest<Body>,
    use_: Arc<Use>,
}

/// How busy a connection is.
#[derive(Default)]
struct Use {
    streams: AtomicUsize,
    /// When its last stream ended, in milliseconds after the pool's epoch.
    last_end_ms: AtomicU64,
}

/// One stream's place on a connection, given back when dropped (the response body ended or
/// was dropped, or the request failed).
pub struct Stream {
    use_: Arc<Use>,
    freed: Arc<Notify>,
    epoch: Instant,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.use_.last_end_ms.store(now, Ordering::Relaxed);
        self.use_.streams.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }
}

/// Holds a [`Stream`] until the response body ends.
pub struct StreamEnd(pub Option<Stream>);

impl BodyHook for StreamEnd {
    fn on_end(&mut self, _clean: bool) {
        self.0.take();
    }
}

impl Multiplexed {
    /// No connections yet; each will carry up to `max_streams` streams at once, and is
    /// closed after `idle_timeout` without any.
    pub fn new(max_streams: u32, idle_timeout: Duration) -> Self {
        Self {
            connections: Mutex::new(Vec::new()),
            max_streams: max_streams.max(1) as usize,
            idle_timeout,
            epoch: Instant::now(),
            freed: Arc::new(Notify::new()),
        }
    }

    fn stream(&self, use_: &Arc<Use>) -> Stream {
        use_.streams.fetch_add(1, Ordering::Relaxed);
        Stream {
            use_: use_.clone(),
            freed: self.freed.clone(),
            epoch: self.epoch,
        }
    }

    /// A stream on the open connection with the fewest streams, if one has room; closed
    /// connections, and idle ones past the idle timeout, are forgotten (closed) on the way.
    pub fn take(&self) -> Option<(SendRequest<Body>, Stream)> {
        let mut connections = self.lock();
        let now = self.epoch.elapsed().as_millis() as u64;
        let idle_ms = self.idle_timeout.as_millis() as u64;
        connections.retain(|shared| {
            let idle = shared.use_.streams.load(Ordering::Relaxed) == 0
                && now.saturating_sub(shared.use_.last_end_ms.load(Ordering::Relaxed)) >= idle_ms;
            !shared.sender.is_closed() && !idle
        });
        let least = connections
            .iter()
            .map(|shared| (shared, shared.use_.streams.load(Ordering::Relaxed)))
            .filter(|(_, streams)| *streams < self.max_streams)
            .min_by_key(|(_, streams)| *streams)?
            .0;
        Some((least.sender.clone(), self.stream(&least.use_)))
    }

    /// Keeps a new connection for the requests to come, with one stream taken on it.
    pub fn add(&self, sender: SendRequest<Body>) -> (SendRequest<Body>, Stream) {
        let use_ = Arc::new(Use::default());
        let stream = self.stream(&use_);
        self.lock().push(Shared {
            sender: sender.clone(),
            use_,
        });
        (sender, stream)
    }

    /// Forgets (so closes) a connection that carries no stream; false when there is none.
    pub fn close_unused(&self) -> bool {
        let mut connections = self.lock();
        let unused = connections
            .iter()
            .position(|shared| shared.use_.streams.load(Ordering::Relaxed) == 0);
        unused.map(|index| connections.swap_remove(index)).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Shared>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
