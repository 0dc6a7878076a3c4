//! The worker threads: how many serve requests, and which one runs the current code.
//!
//! Each worker is one OS thread with its own single-threaded async runtime (the model of
//! nginx's worker processes): a connection, its requests, its WASM stage calls and the
//! upstream connections it uses all stay on one thread, so the hot path needs no cross-thread
//! wake-ups. State that must be per worker (upstream connection pools) is indexed by
//! [`current`].

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Sets how many workers the process runs (at least one). Call it once at startup, before
/// the gateway's state is built: per-worker state is sized from it.
pub fn set_count(count: usize) {
    COUNT.store(count.max(1), Ordering::Relaxed);
}

/// How many workers the process runs.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// The worker running the calling thread; 0 on threads that are not workers.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the calling thread as worker `index`.
pub(crate) fn enter(index: usize) {
    INDEX.with(|cell| cell.set(index));
}
