//! Upstreams: keep-alive connection pools and target selection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;

use super::pool::{PoolSettings, TargetPool, Transport};
use crate::config::{Balance, UpstreamConfig};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::tls::UpstreamTls;
use crate::workers;

/// How long a target that refused a connection is skipped by target selection.
const EJECTION: Duration = Duration::from_secs(5);

/// One named upstream: its settings, its connection pool and its balancing state.
pub struct Upstream {
    /// The settings it was built from.
    pub config: Arc<UpstreamConfig>,
    /// Keep-alive connections per worker and target (`worker * targets + target`): a
    /// connection is only ever used by the worker thread that opened it.
    pools: Box<[Arc<TargetPool>]>,
    /// Per target, when metrics are on.
    metrics: Option<Vec<UpstreamMetrics>>,
    next: AtomicUsize,
    /// Per target: milliseconds since `epoch` until which it is ejected (0: healthy).
    ejected_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds an empty connection pool per worker and target of `config`, recording into
    /// `metrics` when given.
    pub fn new(config: Arc<UpstreamConfig>, metrics: Option<&Metrics>) -> Self {
        let settings = PoolSettings {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_idle: config.max_idle_per_target,
        };
        let target_metrics: Option<Vec<UpstreamMetrics>> = metrics.map(|metrics| {
            config
                .targets
                .iter()
                .map(|target| metrics.target(&config.name, target.as_str()))
                .collect()
        });
        let transport = Arc::new(match &config.tls {
            None => Transport::Plain,
            Some(tls) => match UpstreamTls::new(tls) {
                Ok(tls) => Transport::Tls(tls),
                Err(error) => {
                    tracing::error!(upstream = %config.name, %error, "upstream TLS settings cannot be used; its requests fail with 502");
                    Transport::Broken(error.to_string())
                }
            },
        });
        let pools = (0..workers::count())
            .flat_map(|_| config.targets.iter().enumerate())
            .map(|(index, target)| {
                let metrics = target_metrics.as_ref().map(|m| m[index].clone());
                Arc::new(TargetPool::new(
                    target.clone(),
                    transport.clone(),
                    settings,
                    metrics,
                ))
            })
            .collect();
        let ejected_until = config.targets.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            config,
            metrics: target_metrics,
            pools,
            next: AtomicUsize::new(0),
            ejected_until,
            epoch: Instant::now(),
        }
    }

    /// The calling worker's connections to a target.
    pub fn pool(&self, target: usize) -> &Arc<TargetPool> {
        let targets = self.config.targets.len();
        let worker = workers::current() % (self.pools.len() / targets);
        &self.pools[worker * targets + target]
    }

    /// Picks the target for a new request: the balanced choice, skipping ejected targets
    /// while a healthy one remains.
    pub fn pick(&self) -> usize {
        let count = self.config.targets.len();
        let first = match self.config.balance {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % count,
            Balance::Random => rand::random_range(0..count),
        };
        if count == 1 {
            return first;
        }
        let now = self.millis();
        (0..count)
            .map(|k| (first + k) % count)
            .find(|&i| self.ejected_until[i].load(Ordering::Relaxed) <= now)
            .unwrap_or(first)
    }

    /// The target to try after `target` failed to connect.
    pub fn next_after(&self, target: usize) -> usize {
        (target + 1) % self.config.targets.len()
    }

    /// A target's metrics, when metrics are on.
    pub fn metrics(&self, target: usize) -> Option<&UpstreamMetrics> {
        self.metrics.as_ref().map(|m| &m[target])
    }

    /// The authority of a target.
    pub fn target(&self, index: usize) -> &Authority {
        &self.config.targets[index]
    }

    /// Marks a target as refusing connections for a while.
    pub fn eject(&self, target: usize) {
        let until = self.millis() + EJECTION.as_millis() as u64;
        self.ejected_until[target].store(until, Ordering::Relaxed);
    }

    /// Marks a target as healthy again.
    pub fn restore(&self, target: usize) {
        if self.ejected_until[target].load(Ordering::Relaxed) != 0 {
            self.ejected_until[target].store(0, Ordering::Relaxed);
        }
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
