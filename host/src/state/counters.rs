//! Windowed counters in this process's memory, with a per-plugin budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{CounterBudget, DEFAULT_COUNTER_BYTES, DEFAULT_COUNTER_KEYS};

/// Counters in this process's memory, sharded to keep lock hold times short, with a
/// budget of keys and key bytes per plugin so that no plugin can grow the store without
/// limit.
pub struct MemoryCounters {
    shards: Vec<Mutex<Shard>>,
    /// Keys and key bytes each plugin holds (expired keys are released when swept).
    usage: Mutex<HashMap<String, Usage>>,
    max_keys: AtomicUsize,
    max_bytes: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    /// `(plugin, key)` → (value, expiry).
    entries: HashMap<(String, String), (u64, Instant)>,
    next_sweep: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    keys: usize,
    bytes: usize,
}

const SHARDS: usize = 16;
/// Room for the plugin's 512 bytes and the tag [`super::LocalState`] puts before them.
const MAX_KEY_BYTES: usize = 600;

impl Default for MemoryCounters {
    fn default() -> Self {
        Self::new(CounterBudget {
            keys: DEFAULT_COUNTER_KEYS,
            bytes: DEFAULT_COUNTER_BYTES,
        })
    }
}

impl MemoryCounters {
    /// An empty store with a per-plugin budget.
    pub fn new(budget: CounterBudget) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            usage: Mutex::new(HashMap::new()),
            max_keys: AtomicUsize::new(budget.keys),
            max_bytes: AtomicUsize::new(budget.bytes),
        }
    }

    /// Adds `delta` and returns the new value (synchronously).
    pub fn add(
        &self,
        plugin: &str,
        key: &str,
        delta: u64,
        window: Duration,
    ) -> Result<u64, String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("counter keys are limited to {MAX_KEY_BYTES} bytes"));
        }
        let shard_index = fxhash(plugin, key) % SHARDS;
        let now = Instant::now();
        let mut shard = self.lock_shard(shard_index)?;
        self.sweep(&mut shard, now, false);
        let id = (plugin.to_string(), key.to_string());
        if let Some(entry) = shard.entries.get_mut(&id) {
            if entry.1 <= now {
                *entry = (0, now + window);
            }
            entry.0 = entry.0.saturating_add(delta);
            return Ok(entry.0);
        }
        if !self.reserve(plugin, key.len()) {
            // Expired keys still count until swept: sweep every shard once, then retry.
            drop(shard);
            for index in 0..SHARDS {
                let mut other = self.lock_shard(index)?;
                self.sweep(&mut other, now, true);
            }
            shard = self.lock_shard(shard_index)?;
            if !self.reserve(plugin, key.len()) {
                return Err(format!(
                    "counter budget exhausted: plugin `{plugin}` may hold {} keys and {} bytes of keys at once",
                    self.max_keys.load(Ordering::Relaxed),
                    self.max_bytes.load(Ordering::Relaxed)
                ));
            }
        }
        shard.entries.insert(id, (delta, now + window));
        Ok(delta)
    }

    /// Applies a new per-plugin budget. Keys held over a lowered budget stay until they
    /// expire; new ones are refused until then.
    pub fn set_budget(&self, budget: CounterBudget) {
        self.max_keys.store(budget.keys, Ordering::Relaxed);
        self.max_bytes.store(budget.bytes, Ordering::Relaxed);
    }

    fn lock_shard(&self, index: usize) -> Result<std::sync::MutexGuard<'_, Shard>, String> {
        self.shards[index]
            .lock()
            .map_err(|_| "counter store poisoned".to_string())
    }

    /// Takes one key of `bytes` from `plugin`'s budget; `false` when it is spent.
    fn reserve(&self, plugin: &str, bytes: usize) -> bool {
        let Ok(mut usage) = self.usage.lock() else {
            return false;
        };
        let entry = usage.entry(plugin.to_string()).or_default();
        if entry.keys >= self.max_keys.load(Ordering::Relaxed)
            || entry.bytes + bytes > self.max_bytes.load(Ordering::Relaxed)
        {
            return false;
        }
        entry.keys += 1;
        entry.bytes += bytes;
        true
    }

    /// Drops expired entries (at most once a second unless `now_anyway`) and returns
    /// their keys to their plugins' budgets.
    fn sweep(&self, shard: &mut Shard, now: Instant, now_anyway: bool) {
        if !now_anyway && shard.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        shard.next_sweep = Some(now + Duration::from_secs(1));
        let mut released: HashMap<String, Usage> = HashMap::new();
        shard.entries.retain(|(plugin, key), (_, expires)| {
            let live = *expires > now;
            if !live {
                let freed = released.entry(plugin.clone()).or_default();
                freed.keys += 1;
                freed.bytes += key.len();
            }
            live
        });
        if released.is_empty() {
            return;
        }
        if let Ok(mut usage) = self.usage.lock() {
            for (plugin, freed) in released {
                if let Some(entry) = usage.get_mut(&plugin) {
                    entry.keys = entry.keys.saturating_sub(freed.keys);
                    entry.bytes = entry.bytes.saturating_sub(freed.bytes);
                }
            }
        }
    }
}

/// A small, fast, non-cryptographic hash for picking a shard.
fn fxhash(plugin: &str, key: &str) -> usize {
    plugin
        .bytes()
        .chain([0])
        .chain(key.bytes())
        .fold(0usize, |hash, byte| {
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
        assert_eq!(counters.add("p", "k", 1, window), Ok(1));
        assert_eq!(counters.add("p", "k", 2, window), Ok(3));
        assert_eq!(counters.add("p", "other", 0, window), Ok(0));
        assert_eq!(
            counters.add("q", "k", 5, window),
            Ok(5),
            "plugins never share keys"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(counters.add("p", "k", 1, window), Ok(1));
    }

    #[test]
    fn a_plugin_past_its_budget_gets_an_error_and_others_do_not() {
        let counters = MemoryCounters::new(CounterBudget {
            keys: 3,
            bytes: 1 << 20,
        });
        let hour = Duration::from_secs(3600);
        for key in ["a", "b", "c"] {
            assert!(counters.add("greedy", key, 1, hour).is_ok());
        }
        let refused = counters.add("greedy", "d", 1, hour).unwrap_err();
        assert!(refused.contains("budget exhausted"), "{refused}");
        assert_eq!(
            counters.add("greedy", "a", 1, hour),
            Ok(2),
            "existing keys still count"
        );
        assert_eq!(counters.add("modest", "a", 1, hour), Ok(1));
    }

    #[test]
    fn expired_keys_return_to_the_budget() {
        let counters = MemoryCounters::new(CounterBudget {
            keys: 2,
            bytes: 1 << 20,
        });
        let short = Duration::from_millis(20);
        assert!(counters.add("p", "a", 1, short).is_ok());
        assert!(counters.add("p", "b", 1, short).is_ok());
        assert!(counters.add("p", "c", 1, short).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(counters.add("p", "c", 1, short), Ok(1));
    }

    #[test]
    fn key_bytes_are_budgeted_too() {
        let counters = MemoryCounters::new(CounterBudget {
            keys: 100,
            bytes: 10,
        });
        let hour = Duration::from_secs(3600);
        assert!(counters.add("p", "12345", 1, hour).is_ok());
        assert!(counters.add("p", "67890", 1, hour).is_ok());
        assert!(counters.add("p", "x", 1, hour).is_err());
    }
}
