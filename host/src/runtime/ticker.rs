//! The epoch ticker: one thread that advances the engine's epoch every [`EPOCH_TICK`] while
//! guest code may be running, and sleeps while none is, so an idle or passthrough-only
//! gateway pays no timer wake-ups for the sandbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;

use wasmtime::Engine;

use super::EPOCH_TICK;

/// Handle to the ticker thread; stops it when dropped.
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
}

struct Shared {
    /// Calls between [`EpochTicker::enter`] and the end of their [`Ticking`] guard.
    active: AtomicUsize,
    stop: AtomicBool,
}

impl EpochTicker {
    /// Starts the thread for `engine`.
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let state = shared.clone();
        let handle = std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while !state.stop.load(Ordering::Acquire) {
                    if state.active.load(Ordering::Acquire) == 0 {
                        // Woken by the next `enter` (or by `drop`).
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Keeps the epoch advancing until the returned guard is dropped: hold it for as long
    /// as guest code of a call may run.
    pub fn enter(&self) -> Ticking<'_> {
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        Ticking(self)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// A call in progress; see [`EpochTicker::enter`].
pub struct Ticking<'a>(&'a EpochTicker);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}
