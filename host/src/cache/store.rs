//! A route's store: a `moka` cache weighted by bytes (bounded by the route's `max-bytes`)
//! that also draws from the gateway-wide [`Budget`] (`[cache] max-bytes`), so neither
//! bound can be passed. Entries leave when their freshness and stale allowances are over,
//! when evicted for size (least frequently and recently used first), or when purged.
//!
//! It is moka's synchronous cache: no operation waits on I/O, so a response is stored from
//! the body hook as its last bytes pass through, with nothing left to spawn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::HeaderName;
use moka::notification::RemovalCause;

use super::freshness::Object;
use super::key::VARIANT_SEPARATOR;
use crate::config::CacheConfig;
use crate::metrics::CacheMetrics;

/// How long an object is kept once it may no longer be served stale unasked: it can still
/// be revalidated with a conditional request instead of fetched again, or answer a request
/// that accepts it stale (`max-stale`).
const REVALIDATION_GRACE: Duration = Duration::from_secs(600);
/// How long a `Vary` marker is kept without being replaced.
const VARY_MARKER_TTL: Duration = Duration::from_secs(24 * 3600);
/// What an entry costs beyond its key and body: its header fields and bookkeeping.
const ENTRY_OVERHEAD: u64 = 256;

/// One entry under a key.
#[derive(Clone, Debug)]
pub enum Slot {
    /// A stored response.
    Object(Arc<Object>),
    /// The response for this primary key varies on these fields: its variants are stored
    /// under secondary keys made with `epoch` (a new marker orphans older variants).
    Vary {
        /// The fields, lower-case and sorted.
        names: Arc<[HeaderName]>,
        /// Part of every secondary key under this marker.
        epoch: u64,
    },
    /// The last response for this key could not be stored: requests go straight to the
    /// upstream ("hit-for-pass") until the entry expires.
    Pass(Instant),
}

impl Slot {
    /// Bytes the entry is counted for.
    fn weight(key: &str, slot: &Slot) -> u64 {
        let value = match slot {
            Slot::Object(object) => {
                let headers: usize = object
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len() + 32)
                    .sum();
                object.body.len() as u64 + headers as u64
            }
            Slot::Vary { names, .. } => names.len() as u64 * 32,
            Slot::Pass(_) => 0,
        };
        key.len() as u64 + value + ENTRY_OVERHEAD
    }
}

/// The bytes all routes' stores hold together, and their bound.
#[derive(Debug)]
pub struct Budget {
    max: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            used: AtomicU64::new(0),
        }
    }

    /// The bound.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, unless that would pass the bound.
    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Per-entry expiry: an object lives through its freshness and stale allowances (and a
/// grace to be revalidated, when it has a validator); a pass marker for its duration.
struct SlotExpiry;

impl moka::Expiry<Arc<str>, Slot> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        slot: &Slot,
        created: Instant,
    ) -> Option<Duration> {
        Some(match slot {
            Slot::Object(object) => {
                let remaining = object
                    .lifetime
                    .saturating_sub(object.age(std::time::SystemTime::now()));
                let stale = object.stale.while_revalidate.max(object.stale.if_error);
                remaining + stale + REVALIDATION_GRACE
            }
            Slot::Vary { .. } => VARY_MARKER_TTL,
            Slot::Pass(until) => until.saturating_duration_since(created),
        })
    }

    fn expire_after_update(
        &self,
        key: &Arc<str>,
        slot: &Slot,
        updated: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, slot, updated)
    }
}

/// A route's cached responses.
pub struct RouteStore {
    cache: moka::sync::Cache<Arc<str>, Slot>,
    /// The settings it was made with (a reload with other settings makes a new store).
    pub config: CacheConfig,
    budget: Arc<Budget>,
    metrics: Option<CacheMetrics>,
    epochs: AtomicU64,
}

impl RouteStore {
    /// An empty store for a route.
    pub fn new(config: CacheConfig, budget: Arc<Budget>, metrics: Option<CacheMetrics>) -> Self {
        let (listener_budget, listener_metrics) = (budget.clone(), metrics.clone());
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &Arc<str>, slot: &Slot| {
                u32::try_from(Slot::weight(key, slot)).unwrap_or(u32::MAX)
            })
            .expire_after(SlotExpiry)
            .eviction_listener(move |key: Arc<Arc<str>>, slot: Slot, cause| {
                let weight = Slot::weight(&key, &slot);
                listener_budget.release(weight);
                if let Some(metrics) = &listener_metrics {
                    metrics.bytes.dec_by(weight as i64);
                    if cause == RemovalCause::Size {
                        metrics.evictions.inc();
                    }
                }
            })
            .build();
        Self {
            cache,
            config,
            budget,
            metrics,
            epochs: AtomicU64::new(1),
        }
    }

    /// The route's cache counters, when metrics are on.
    pub fn metrics(&self) -> Option<&CacheMetrics> {
        self.metrics.as_ref()
    }

    /// The entry under `key`.
    pub fn get(&self, key: &str) -> Option<Slot> {
        self.cache.get(key)
    }

    /// Stores `slot` under `key`, if the route's and the gateway's bounds allow it.
    pub fn insert(&self, key: Arc<str>, slot: Slot) -> bool {
        let weight = Slot::weight(&key, &slot);
        if weight > self.config.max_bytes || !self.budget.reserve(weight) {
            return false;
        }
        if let Some(metrics) = &self.metrics {
            metrics.bytes.inc_by(weight as i64);
        }
        self.cache.insert(key, slot);
        true
    }

    /// A fresh epoch for a `Vary` marker.
    pub fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes the entry under a primary key (its variants become unreachable: a later
    /// `Vary` marker gets a new epoch).
    pub fn invalidate(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Removes every entry whose primary key is `key` (`prefix: false`) or starts with it;
    /// returns how many primary keys were removed.
    pub fn purge(&self, key: &str, prefix: bool) -> usize {
        let doomed: Vec<Arc<str>> = self
            .cache
            .iter()
            .map(|(key, _)| (*key).clone())
            .filter(|stored| {
                let primary = stored.split(VARIANT_SEPARATOR).next().unwrap_or_default();
                if prefix {
                    primary.starts_with(key)
                } else {
                    primary == key
                }
            })
            .collect();
        let primaries = doomed
            .iter()
            .filter(|k| !k.contains(VARIANT_SEPARATOR))
            .count();
        for stored in doomed {
            self.cache.invalidate(&stored);
        }
        self.cache.run_pending_tasks();
        primaries
    }

    /// Bytes the store holds (after pending evictions are applied).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}
