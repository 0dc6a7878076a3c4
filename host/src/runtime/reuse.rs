//! Opt-in instance reuse: a stage keeps instances (each with its own `Store`) between calls
//! and recycles them by a hard policy, instead of instantiating afresh for every call.
//!
//! The trade-off is isolation: a reused instance keeps its linear memory, so whatever one
//! request leaves in the guest's globals or heap is visible to the next requests that
//! instance serves (on the same stage only: every stage has its own pool, and a reload
//! starts new pools). Runtime-language plugins (Python, JavaScript, Go) pay 0.2–7 ms to start
//! an instance, so for them this trades some isolation for most of that cost.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::Store;

use super::host::StageState;
use crate::config::ReusePolicy;

/// An instance (of world type `I`, such as `Auth`) with its store, between calls.
pub(crate) struct Warm<I> {
    pub(crate) store: Store<StageState>,
    pub(crate) instance: I,
    /// Calls this instance has served.
    pub(crate) calls: u32,
    idle_since: Instant,
}

impl<I> Warm<I> {
    pub(crate) fn new(store: Store<StageState>, instance: I, calls: u32) -> Self {
        Self {
            store,
            instance,
            calls,
            idle_since: Instant::now(),
        }
    }
}

/// One stage's idle instances (of world type `I`) and its recycle policy.
pub struct InstancePool<I> {
    policy: ReusePolicy,
    idle: Mutex<Vec<Warm<I>>>,
    stats: PoolStats,
}

/// What the admin API shows of a pool, whatever its world.
pub trait PoolStatus: Send + Sync {
    /// The recycle policy.
    fn policy(&self) -> &ReusePolicy;
    /// Counters of reuse and recycling.
    fn stats(&self) -> &PoolStats;
    /// Instances idle in the pool now.
    fn idle_count(&self) -> usize;
}

impl<I: Send> PoolStatus for InstancePool<I> {
    fn policy(&self) -> &ReusePolicy {
        &self.policy
    }

    fn stats(&self) -> &PoolStats {
        &self.stats
    }

    fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }
}

/// What a pool has done, for the admin API.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Calls served by an instance taken from the pool.
    pub reused: AtomicU64,
    /// Instances dropped by the policy (calls, memory, idle time, pool full).
    pub recycled: AtomicU64,
}

impl<I> InstancePool<I> {
    /// An empty pool with this policy.
    pub fn new(policy: ReusePolicy) -> Self {
        Self {
            policy,
            idle: Mutex::new(Vec::new()),
            stats: PoolStats::default(),
        }
    }

    /// The most recently used idle instance that has not idled past the timeout.
    pub(crate) fn take(&self) -> Option<Warm<I>> {
        let (warm, expired) = {
            let Ok(mut idle) = self.idle.lock() else {
                return None;
            };
            let timeout = self.policy.idle_timeout;
            // Oldest first: everything before the first fresh entry has expired.
            let fresh_from = idle
                .iter()
                .position(|w| w.idle_since.elapsed() < timeout)
                .unwrap_or(idle.len());
            let expired: Vec<Warm<I>> = idle.drain(..fresh_from).collect();
            (idle.pop(), expired)
        };
        self.count_recycled(expired.len());
        drop(expired); // outside the lock: dropping a store unmaps memory
        if warm.is_some() {
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
        }
        warm
    }

    /// Returns an instance after a successful call, unless the policy retires it.
    pub(crate) fn put_back(&self, mut warm: Warm<I>) {
        let policy = &self.policy;
        let worn_out = warm.calls >= policy.max_calls;
        let too_big = policy
            .max_memory
            .is_some_and(|max| warm.store.data().limiter.held_bytes as u64 > max);
        if worn_out || too_big {
            self.count_recycled(1);
            return;
        }
        warm.idle_since = Instant::now();
        let refused = match self.idle.lock() {
            Ok(mut idle) if idle.len() < policy.max_idle as usize => {
                idle.push(warm);
                None
            }
            _ => Some(warm),
        };
        if refused.is_some() {
            self.count_recycled(1);
        }
    }

    fn count_recycled(&self, n: usize) {
        if n > 0 {
            self.stats.recycled.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl<I: Send> std::fmt::Debug for InstancePool<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstancePool")
            .field("policy", &self.policy)
            .field("idle", &self.idle_count())
            .finish()
    }
}
