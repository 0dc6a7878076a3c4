//! Shared counters behind the `counters` WIT interface.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A boxed future returned by [`Counters`].
pub type CounterFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'a>>;

/// A store of windowed counters shared by every plugin instance.
///
/// The in-process [`MemoryCounters`] is the default; a shared backend (Redis) implements the
/// same trait so several gateway processes enforce one limit.
pub trait Counters: Send + Sync {
    /// Adds `delta` to `key` and returns the new value. A counter starts at zero and expires
    /// `window` after its first increment.
    fn increment<'a>(&'a self, key: &'a str, delta: u64, window: Duration) -> CounterFuture<'a>;
}

/// Counters in this process's memory, sharded to keep lock hold times short.
pub struct MemoryCounters {
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, (u64, Instant)>,
    next_sweep: Option<Instant>,
}

const SHARDS: usize = 16;
const MAX_KEY_BYTES: usize = 512;

impl Default for MemoryCounters {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl MemoryCounters {
    /// Adds `delta` and returns the new value (synchronously).
    pub fn add(&self, key: &str, delta: u64, window: Duration) -> Result<u64, String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("counter keys are limited to {MAX_KEY_BYTES} bytes"));
        }
        let shard_index = fxhash(key) % SHARDS;
        let mut shard = self.shards[shard_index]
            .lock()
            .map_err(|_| "counter store poisoned".to_string())?;
        let now = Instant::now();
        if shard.next_sweep.is_none_or(|at| now >= at) {
            shard.entries.retain(|_, (_, expires)| *expires > now);
            shard.next_sweep = Some(now + Duration::from_secs(1));
        }
        let entry = shard
            .entries
            .entry(key.to_string())
            .or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 = entry.0.saturating_add(delta);
        Ok(entry.0)
    }
}

impl Counters for MemoryCounters {
    fn increment<'a>(&'a self, key: &'a str, delta: u64, window: Duration) -> CounterFuture<'a> {
        let result = self.add(key, delta, window);
        Box::pin(std::future::ready(result))
    }
}

/// A small, fast, non-cryptographic hash for picking a shard.
fn fxhash(key: &str) -> usize {
    key.bytes().fold(0usize, |hash, byte| {
        (hash.rotate_left(5) ^ byte as usize).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_a_window_and_restarts_after_it() {
        let counters = MemoryCounters::default();
        let window = Duration::from_millis(50);
        assert_eq!(counters.add("k", 1, window), Ok(1));
        assert_eq!(counters.add("k", 2, window), Ok(3));
        assert_eq!(counters.add("other", 0, window), Ok(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(counters.add("k", 1, window), Ok(1));
    }
}
