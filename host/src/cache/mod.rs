//! The HTTP response cache (RFC 9111, as a shared cache) behind the `cache` stage
//! ([`crate::pipeline::cache`]): keys ([`key`]), what a stored response may be used for
//! ([`freshness`]), the memory store ([`store`]) and request coalescing ([`coalesce`]).
//!
//! Every route with a `cache` key has its own store, bounded by its `max-bytes`, and all of
//! them draw from one budget (`[cache] max-bytes`). The [`Caches`] of a live state are
//! carried over by a reload: a route whose `cache` settings did not change keeps its store.

pub mod coalesce;
pub mod freshness;
pub mod key;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::config::{CacheStoreConfig, Config};
use crate::metrics::Metrics;
use coalesce::Flights;
use store::{Budget, RouteStore};

/// One route's cache: its store, its flights, and the keys being refreshed in the
/// background.
pub struct RouteCache {
    /// The stored responses.
    pub store: RouteStore,
    /// Upstream requests that concurrent misses share.
    pub flights: Arc<Flights>,
    /// Keys a background refresh is under way for (one at a time per key).
    pub refreshing: Mutex<HashSet<Arc<str>>>,
}

impl RouteCache {
    /// Marks a primary key "hit-for-pass": its requests go straight to the upstream for the
    /// route's `hit-for-pass`.
    pub fn mark_pass(&self, primary: &Arc<str>) {
        let until = std::time::Instant::now() + self.store.config.hit_for_pass;
        self.store.insert(primary.clone(), store::Slot::Pass(until));
    }
}

/// The caches of every route that has one, and the budget they share.
pub struct Caches {
    settings: CacheStoreConfig,
    budget: Arc<Budget>,
    /// By route name.
    pub routes: BTreeMap<String, Arc<RouteCache>>,
}

impl Caches {
    /// The caches `config` asks for, reusing those of `previous` whose settings (and the
    /// shared budget's) did not change.
    pub fn build(config: &Config, previous: Option<&Caches>, metrics: Option<&Metrics>) -> Self {
        let previous = previous.filter(|p| p.settings == config.cache);
        let budget = previous.map_or_else(
            || Arc::new(Budget::new(config.cache.max_bytes)),
            |p| p.budget.clone(),
        );
        let routes = config
            .routes
            .iter()
            .filter_map(|route| {
                let settings = route.cache.as_ref()?;
                let reused = previous
                    .and_then(|p| p.routes.get(&route.name))
                    .filter(|cache| cache.store.config == *settings)
                    .cloned();
                let cache = reused.unwrap_or_else(|| {
                    Arc::new(RouteCache {
                        store: RouteStore::new(
                            settings.clone(),
                            budget.clone(),
                            metrics.map(|m| m.cache(&route.name)),
                        ),
                        flights: Arc::default(),
                        refreshing: Mutex::default(),
                    })
                });
                Some((route.name.clone(), cache))
            })
            .collect();
        Self {
            settings: config.cache,
            budget,
            routes,
        }
    }

    /// The shared budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}
