//! State in this process's memory: the default backend, and the fallback of the Redis
//! backend under `on-unavailable = "local"`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::counters::MemoryCounters;
use super::op::{Op, Outcome, WindowCount, emission_interval_us, gcra_step};
use super::{SharedState, StateFuture};
use crate::config::CounterBudget;

/// Counters, window counts, GCRA cells and key-values in memory, each bounded per plugin
/// by the `plugins.counter-keys` and `plugins.counter-bytes` budget.
pub struct LocalState {
    counters: MemoryCounters,
    cells: TtlMap<u64>,
    values: TtlMap<Vec<u8>>,
}

impl Default for LocalState {
    fn default() -> Self {
        Self::new(CounterBudget {
            keys: crate::config::DEFAULT_COUNTER_KEYS,
            bytes: crate::config::DEFAULT_COUNTER_BYTES,
        })
    }
}

impl LocalState {
    /// Empty state with a per-plugin budget.
    pub fn new(budget: CounterBudget) -> Self {
        Self {
            counters: MemoryCounters::new(budget),
            cells: TtlMap::new(budget),
            values: TtlMap::new(budget),
        }
    }

    /// Runs `op` as if this process had `1 / share` of every limit: counts are multiplied
    /// by `share` and GCRA rates and bursts divided by it. `share = 1` is plain local state.
    pub fn run_scaled(&self, plugin: &str, op: Op, share: u64) -> Result<Outcome, String> {
        let share = share.max(1);
        match op {
            Op::Increment { key, delta, window } => {
                let count = self.counters.add(plugin, &key, delta, window)?;
                Ok(Outcome::Count(count.saturating_mul(share)))
            }
            Op::Window { key, delta, window } => {
                let now = unix_ms();
                let length = window.as_millis().max(1) as u64;
                let index = now / length;
                let ttl = window.saturating_mul(2);
                let tagged = |index: u64| format!("\u{1}w|{key}|{index}");
                let current = self.counters.add(plugin, &tagged(index), delta, ttl)?;
                let previous = match index.checked_sub(1) {
                    Some(previous) => self.counters.add(plugin, &tagged(previous), 0, ttl)?,
                    None => 0,
                };
                Ok(Outcome::Window(WindowCount {
                    current: current.saturating_mul(share),
                    previous: previous.saturating_mul(share),
                    elapsed_ms: now - index * length,
                }))
            }
            Op::Gcra {
                key,
                limit,
                period,
                burst,
                cost,
            } => {
                let interval = emission_interval_us(limit, period).saturating_mul(share);
                let burst = (burst / share).max(1);
                let cost = cost.min(burst);
                let now = unix_us();
                self.cells.update(plugin, &key, |tat| {
                    let (decision, next) = gcra_step(now, tat.copied(), interval, burst, cost);
                    let change = next.map(|tat| {
                        let ttl = Duration::from_micros(tat - now) + Duration::from_millis(1);
                        (tat, ttl)
                    });
                    (change, Outcome::Gcra(decision))
                })
            }
            Op::Get { key } => self
                .values
                .update(plugin, &key, |value| (None, Outcome::Value(value.cloned()))),
            Op::Set { key, value, ttl } => self
                .values
                .update(plugin, &key, |_| (Some((value, ttl)), Outcome::Done)),
            Op::CompareAndSet {
                key,
                expected,
                value,
                ttl,
            } => self.values.update(plugin, &key, |current| {
                if current == expected.as_ref() {
                    (Some((value, ttl)), Outcome::Changed(true))
                } else {
                    (None, Outcome::Changed(false))
                }
            }),
            Op::Delete { key } => Ok(Outcome::Changed(self.values.remove(plugin, &key))),
        }
    }
}

impl SharedState for LocalState {
    fn run<'a>(&'a self, plugin: &'a str, op: Op) -> StateFuture<'a> {
        Box::pin(std::future::ready(self.run_scaled(plugin, op, 1)))
    }

    fn set_budget(&self, budget: CounterBudget) {
        self.counters.set_budget(budget);
        self.cells.set_budget(budget);
        self.values.set_budget(budget);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Values that expire, keyed by `(plugin, key)`, with a per-plugin budget of entries and
/// bytes (keys and values).
struct TtlMap<V> {
    inner: Mutex<TtlInner<V>>,
}

struct TtlInner<V> {
    entries: HashMap<(String, String), (V, Instant)>,
    usage: HashMap<String, (usize, usize)>,
    budget: CounterBudget,
    next_sweep: Instant,
}

/// Bytes an entry is charged for.
trait Charged {
    fn bytes(&self) -> usize;
}

impl Charged for u64 {
    fn bytes(&self) -> usize {
        8
    }
}

impl Charged for Vec<u8> {
    fn bytes(&self) -> usize {
        self.len()
    }
}

impl<V: Charged> TtlMap<V> {
    fn new(budget: CounterBudget) -> Self {
        Self {
            inner: Mutex::new(TtlInner {
                entries: HashMap::new(),
                usage: HashMap::new(),
                budget,
                next_sweep: Instant::now(),
            }),
        }
    }

    fn set_budget(&self, budget: CounterBudget) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.budget = budget;
        }
    }

    /// Looks the live entry up and lets `decide` replace it (`Some((value, ttl))`) or keep it.
    fn update(
        &self,
        plugin: &str,
        key: &str,
        decide: impl FnOnce(Option<&V>) -> (Option<(V, Duration)>, Outcome),
    ) -> Result<Outcome, String> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| "state store poisoned".to_string())?;
        let now = Instant::now();
        inner.sweep(now);
        let id = (plugin.to_string(), key.to_string());
        let live = inner
            .entries
            .get(&id)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value);
        let (change, outcome) = decide(live);
        if let Some((value, ttl)) = change {
            let old = inner.entries.get(&id).map(|(v, _)| key.len() + v.bytes());
            let new = key.len() + value.bytes();
            let budget = inner.budget;
            let usage = inner.usage.entry(plugin.to_string()).or_default();
            let (keys, bytes) = match old {
                Some(old) => (usage.0, usage.1 - old.min(usage.1) + new),
                None => (usage.0 + 1, usage.1 + new),
            };
            if keys > budget.keys || bytes > budget.bytes {
                return Err(format!(
                    "state budget exhausted: plugin `{plugin}` may hold {} keys and {} bytes at once",
                    budget.keys, budget.bytes
                ));
            }
            *usage = (keys, bytes);
            inner.entries.insert(id, (value, now + ttl));
        }
        Ok(outcome)
    }

    fn remove(&self, plugin: &str, key: &str) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        let now = Instant::now();
        let id = (plugin.to_string(), key.to_string());
        match inner.entries.remove(&id) {
            Some((value, expires)) => {
                inner.release(plugin, key.len() + value.bytes());
                expires > now
            }
            None => false,
        }
    }
}

impl<V: Charged> TtlInner<V> {
    /// Drops expired entries, at most once a second.
    fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + Duration::from_secs(1);
        let mut freed: Vec<(String, usize)> = Vec::new();
        self.entries.retain(|(plugin, key), (value, expires)| {
            let live = *expires > now;
            if !live {
                freed.push((plugin.clone(), key.len() + value.bytes()));
            }
            live
        });
        for (plugin, bytes) in freed {
            self.release(&plugin, bytes);
        }
    }

    fn release(&mut self, plugin: &str, bytes: usize) {
        if let Some(usage) = self.usage.get_mut(plugin) {
            usage.0 = usage.0.saturating_sub(1);
            usage.1 = usage.1.saturating_sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: usize) -> LocalState {
        LocalState::new(CounterBudget {
            keys,
            bytes: 1 << 20,
        })
    }

    fn set(key: &str, value: &[u8]) -> Op {
        Op::Set {
            key: key.into(),
            value: value.to_vec(),
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn key_values_are_per_plugin_and_compare_and_set_checks_the_current_value() {
        let state = state(100);
        assert_eq!(state.run_scaled("a", set("k", b"1"), 1), Ok(Outcome::Done));
        let get = Op::Get { key: "k".into() };
        assert_eq!(
            state.run_scaled("a", get.clone(), 1),
            Ok(Outcome::Value(Some(b"1".to_vec())))
        );
        assert_eq!(
            state.run_scaled("b", get.clone(), 1),
            Ok(Outcome::Value(None))
        );
        let cas = |expected: Option<&[u8]>, value: &[u8]| Op::CompareAndSet {
            key: "k".into(),
            expected: expected.map(<[u8]>::to_vec),
            value: value.to_vec(),
            ttl: Duration::from_secs(60),
        };
        assert_eq!(
            state.run_scaled("a", cas(None, b"2"), 1),
            Ok(Outcome::Changed(false))
        );
        assert_eq!(
            state.run_scaled("a", cas(Some(b"1"), b"2"), 1),
            Ok(Outcome::Changed(true))
        );
        assert_eq!(
            state.run_scaled("b", cas(None, b"x"), 1),
            Ok(Outcome::Changed(true))
        );
        let delete = Op::Delete { key: "k".into() };
        assert_eq!(
            state.run_scaled("a", delete.clone(), 1),
            Ok(Outcome::Changed(true))
        );
        assert_eq!(
            state.run_scaled("a", delete, 1),
            Ok(Outcome::Changed(false))
        );
        assert_eq!(state.run_scaled("a", get, 1), Ok(Outcome::Value(None)));
    }

    #[test]
    fn key_values_are_bounded_per_plugin() {
        let state = state(2);
        assert!(state.run_scaled("a", set("1", b""), 1).is_ok());
        assert!(state.run_scaled("a", set("2", b""), 1).is_ok());
        assert!(state.run_scaled("a", set("3", b""), 1).is_err());
        assert!(
            state.run_scaled("a", set("1", b"over"), 1).is_ok(),
            "replacing is fine"
        );
        assert!(state.run_scaled("b", set("3", b""), 1).is_ok());
    }

    #[test]
    fn a_share_divides_limits() {
        let state = state(100);
        let increment = Op::Increment {
            key: "k".into(),
            delta: 1,
            window: Duration::from_secs(60),
        };
        assert_eq!(state.run_scaled("a", increment, 3), Ok(Outcome::Count(3)));
        let gcra = Op::Gcra {
            key: "g".into(),
            limit: 60,
            period: Duration::from_secs(60),
            burst: 6,
            cost: 1,
        };
        let allowed = (0..10)
            .filter(|_| {
                matches!(state.run_scaled("a", gcra.clone(), 3), Ok(Outcome::Gcra(d)) if d.allowed)
            })
            .count();
        assert_eq!(allowed, 2, "a third of a burst of 6");
    }
}
