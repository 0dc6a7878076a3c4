//! Shared HTTP/2 connections to one target, for one worker thread: a request opens a stream
//! on the least busy open connection below the stream limit, and a new connection is opened
//! only when every one is full (or closed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use hyper::client::conn::http2::SendRequest;

use crate::body::{Body, BodyHook};

/// The HTTP/2 connections of one target pool.
pub struct Multiplexed {
    connections: Mutex<Vec<Shared>>,
    max_streams: usize,
    /// Told each time a stream ends (a request waiting for room may take it).
    pub freed: Arc<Notify>,
}

struct Shared {
    sender: SendRequest<Body>,
    streams: Arc<AtomicUsize>,
}

/// One stream's place on a connection, given back when dropped (the response body ended or
/// was dropped, or the request failed).
pub struct Stream(Arc<AtomicUsize>, Arc<Notify>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.notify_one();
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
    /// No connections yet; each will carry up to `max_streams` streams at once.
    pub fn new(max_streams: u32) -> Self {
        Self {
            connections: Mutex::new(Vec::new()),
            max_streams: max_streams.max(1) as usize,
            freed: Arc::new(Notify::new()),
        }
    }

    /// A stream on the open connection with the fewest streams, if one has room; closed
    /// connections are forgotten on the way.
    pub fn take(&self) -> Option<(SendRequest<Body>, Stream)> {
        let mut connections = self.lock();
        connections.retain(|shared| !shared.sender.is_closed());
        let least = connections
            .iter()
            .map(|shared| (shared, shared.streams.load(Ordering::Relaxed)))
            .filter(|(_, streams)| *streams < self.max_streams)
            .min_by_key(|(_, streams)| *streams)?
            .0;
        least.streams.fetch_add(1, Ordering::Relaxed);
        Some((
            least.sender.clone(),
            Stream(least.streams.clone(), self.freed.clone()),
        ))
    }

    /// Keeps a new connection for the requests to come, with one stream taken on it.
    pub fn add(&self, sender: SendRequest<Body>) -> (SendRequest<Body>, Stream) {
        let streams = Arc::new(AtomicUsize::new(1));
        self.lock().push(Shared {
            sender: sender.clone(),
            streams: streams.clone(),
        });
        (sender, Stream(streams, self.freed.clone()))
    }

    /// Forgets (so closes) a connection that carries no stream; false when there is none.
    pub fn close_unused(&self) -> bool {
        let mut connections = self.lock();
        let unused = connections
            .iter()
            .position(|shared| shared.streams.load(Ordering::Relaxed) == 0);
        unused.map(|index| connections.swap_remove(index)).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Shared>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
