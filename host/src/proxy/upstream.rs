//! Upstreams: keep-alive connection pools, target health, balancing, the circuit breaker
//! and the retry budget.

use std::sync::{Arc, Weak};

use http::uri::Authority;

use super::balance::Balancer;
use super::breaker::{Breaker, Refusal};
use super::health::{self, Health, Observed, TargetStatus};
use super::limit::ConnectionLimit;
use super::pool::{PoolSettings, TargetPool, Transport};
use super::resolve::{self, Addresses};
use super::retry::Budget;
use crate::config::{HashOn, UpstreamConfig};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::tls::UpstreamTls;
use crate::workers;

/// One named upstream: its settings, connection pools and resilience state.
pub struct Upstream {
    /// The settings it was built from.
    pub config: Arc<UpstreamConfig>,
    /// Keep-alive connections per worker and target (`worker * targets + target`): a
    /// connection is only ever used by the worker thread that opened it.
    pools: Box<[Arc<TargetPool>]>,
    /// Per target, the connection the active checks use (on the control runtime).
    check_pools: Vec<Arc<TargetPool>>,
    /// Per target, what a hostname resolved to last (`None` for an IP address).
    addresses: Vec<Option<Arc<Addresses>>>,
    /// Per target, when metrics are on.
    metrics: Option<Vec<UpstreamMetrics>>,
    /// Which targets may take requests.
    pub health: Health,
    balancer: Balancer,
    /// The circuit breaker.
    pub breaker: Breaker,
    /// Requests and retries in flight.
    pub budget: Budget,
    /// Breaker refusals `[open, full, pending]`, when metrics are on.
    refusals: Option<[prometheus_client::metrics::counter::Counter; 3]>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the upstream of `config`, recording into `metrics` when given. Connection
    /// pools of targets that `previous` (the same upstream before a reload) already had,
    /// with the same pool settings, are kept: their connections survive the reload.
    pub fn new(
        config: Arc<UpstreamConfig>,
        metrics: Option<&Metrics>,
        previous: Option<&Upstream>,
    ) -> Self {
        let settings = PoolSettings {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_idle: config.max_idle_per_target,
            protocol: config.protocol,
            max_streams: config.max_concurrent_streams,
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
            Some(tls) => match UpstreamTls::new(tls, config.protocol.is_http2()) {
                Ok(tls) => Transport::Tls(tls),
                Err(error) => {
                    tracing::error!(upstream = %config.name, %error, "upstream TLS settings cannot be used; its requests fail with 502");
                    Transport::Broken(error.to_string())
                }
            },
        });
        // One connection limit for all workers' pools.
        let limit = config.breaker.max_connections.map(|max| {
            Arc::new(ConnectionLimit::new(
                max,
                config.breaker.max_pending_requests,
            ))
        });
        // Pools are kept across a reload only when nothing about how they connect changed
        // (and the upstream has no connection limit, which a new upstream starts afresh).
        let kept = |worker: usize, target: &Authority| {
            let previous = previous.filter(|p| {
                p.config.connect_timeout == config.connect_timeout
                    && p.config.idle_timeout == config.idle_timeout
                    && p.config.max_idle_per_target == config.max_idle_per_target
                    && p.config.protocol == config.protocol
                    && p.config.breaker.max_connections.is_none()
                    && config.breaker.max_connections.is_none()
                    && p.config.max_concurrent_streams == config.max_concurrent_streams
                    && format!("{:?}", p.config.tls) == format!("{:?}", config.tls)
            })?;
            let index = previous.config.targets.iter().position(|t| t == target)?;
            let count = previous.config.targets.len();
            previous.pools.get(worker * count + index).cloned()
        };
        // A hostname target's addresses, shared by its pools (those kept from `previous`
        // too, which is why they are the previous upstream's when it had the target).
        let addresses: Vec<Option<Arc<Addresses>>> = config
            .targets
            .iter()
            .map(|target| {
                resolve::is_hostname(target).then(|| {
                    previous
                        .and_then(|p| {
                            let index = p.config.targets.iter().position(|t| t == target)?;
                            p.addresses[index].clone()
                        })
                        .unwrap_or_default()
                })
            })
            .collect();
        // Checks keep one connection per target between probes, as a client would.
        let check_pools = if config.health_check.is_some() {
            let settings = PoolSettings {
                max_idle: 1,
                ..settings
            };
            config
                .targets
                .iter()
                .zip(&addresses)
                .map(|(target, addresses)| {
                    Arc::new(TargetPool::new(
                        target.clone(),
                        transport.clone(),
                        settings,
                        None,
                        addresses.clone(),
                        None,
                    ))
                })
                .collect()
        } else {
            Vec::new()
        };
        let pools = (0..workers::count())
            .flat_map(|worker| {
                config
                    .targets
                    .iter()
                    .enumerate()
                    .map(move |(index, target)| (worker, index, target))
            })
            .map(|(worker, index, target)| {
                kept(worker, target).unwrap_or_else(|| {
                    let metrics = target_metrics.as_ref().map(|m| m[index].clone());
                    Arc::new(TargetPool::new(
                        target.clone(),
                        transport.clone(),
                        settings,
                        limit.clone(),
                        addresses[index].clone(),
                        metrics,
                    ))
                })
            })
            .collect::<Box<[_]>>();
        if let Some(limit) = &limit {
            limit.register(&pools);
        }
        Self {
            health: Health::new(
                config.targets.len(),
                config.outlier.clone(),
                config.health_check.as_ref(),
            ),
            balancer: Balancer::new(&config.balance, &config.targets, &config.weights),
            breaker: Breaker::new(config.breaker.clone()),
            budget: Budget::new(config.retry_budget),
            refusals: metrics.map(|m| m.breaker_refusals(&config.name)),
            metrics: target_metrics,
            pools,
            check_pools,
            addresses,
            config,
        }
    }

    /// Resolves each hostname target again every `dns-refresh`, on the current tokio
    /// runtime, until the upstream is dropped; a change closes the idle connections to the
    /// addresses it had.
    pub fn start_resolving(self: &Arc<Self>) {
        for (index, target) in self.config.targets.iter().enumerate() {
            let Some(addresses) = self.addresses[index].clone() else {
                continue;
            };
            let upstream: Weak<Upstream> = Arc::downgrade(self);
            let (target, refresh) = (target.clone(), self.config.dns_refresh);
            tokio::spawn(async move {
                loop {
                    let resolved = resolve::resolve(&target).await;
                    let Some(upstream) = upstream.upgrade() else {
                        return;
                    };
                    let name = &upstream.config.name;
                    match resolved {
                        Ok(list) if !list.is_empty() => {
                            if addresses.set(list) {
                                tracing::info!(upstream = %name, %target, addresses = ?addresses.current(), "target resolved");
                                upstream.close_idle(index);
                            }
                        }
                        Ok(_) => {
                            tracing::warn!(upstream = %name, %target, "target resolved to no address; keeping the last known")
                        }
                        Err(error) => {
                            tracing::warn!(upstream = %name, %target, %error, "resolving target failed; keeping the last known addresses")
                        }
                    }
                    drop(upstream);
                    tokio::time::sleep(refresh).await;
                }
            });
        }
    }

    /// Closes the idle connections to a target, in every worker's pool.
    fn close_idle(&self, target: usize) {
        let targets = self.config.targets.len();
        for pool in self.pools.iter().skip(target).step_by(targets) {
            while pool.close_idle() {}
        }
    }

    /// Starts the active health checks, when configured, on the current tokio runtime.
    /// They stop when the upstream is dropped (a reload that replaces it).
    pub fn start_checks(self: &Arc<Self>) {
        let Some(check) = self.config.health_check.clone() else {
            return;
        };
        for (index, target) in self.config.targets.iter().enumerate() {
            let upstream: Weak<Upstream> = Arc::downgrade(self);
            let (check, target) = (check.clone(), target.clone());
            let pool = self.check_pools[index].clone();
            tokio::spawn(async move {
                let (mut passes, mut fails) = (0u32, 0u32);
                loop {
                    let jitter = check.interval.mul_f64(rand::random_range(0.0..0.1));
                    let passed = health::probe(&check, &pool).await;
                    let Some(upstream) = upstream.upgrade() else {
                        return;
                    };
                    if passed {
                        (passes, fails) = (passes + 1, 0);
                    } else {
                        (passes, fails) = (0, fails + 1);
                    }
                    let name = &upstream.config.name;
                    if passes == check.healthy_threshold {
                        tracing::info!(upstream = %name, %target, "target passed its health checks");
                        upstream.health.set_checked(index, true);
                    } else if fails == check.unhealthy_threshold {
                        tracing::warn!(upstream = %name, %target, "target failed its health checks");
                        upstream.health.set_checked(index, false);
                    }
                    if let Some(metrics) = upstream.metrics(index) {
                        metrics.set_healthy(upstream.health.is_healthy(index));
                    }
                    drop(upstream);
                    tokio::time::sleep(check.interval + jitter).await;
                }
            });
        }
    }

    /// The calling worker's connections to a target.
    pub fn pool(&self, target: usize) -> &Arc<TargetPool> {
        let targets = self.config.targets.len();
        let worker = workers::current() % (self.pools.len() / targets);
        &self.pools[worker * targets + target]
    }

    /// What a hashing balancer hashes, if this upstream hashes.
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.balancer.hash_on()
    }

    /// Picks the target for an attempt: the policy's choice among usable targets, not one
    /// of `tried` when another remains; `None` when every target is drained.
    pub fn pick(&self, tried: &[usize], key: Option<u64>) -> Option<usize> {
        let candidates = self.health.candidates(tried)?;
        Some(self.balancer.choose(
            &candidates,
            &self.config.weights,
            |t| {
                self.health
                    .target(t)
                    .in_flight
                    .load(std::sync::atomic::Ordering::Relaxed)
            },
            key,
        ))
    }

    /// Counts an attempt's result for outlier detection (and ejects, when it should).
    pub fn observe(&self, target: usize, observed: Observed) {
        if let Some(time) = self.health.observe(target, observed) {
            tracing::warn!(
                upstream = %self.config.name,
                target = %self.config.targets[target],
                seconds = time.as_secs_f64(),
                cause = ?observed,
                "target ejected"
            );
            if let Some(metrics) = self.metrics(target) {
                metrics.ejected();
            }
        }
    }

    /// Counts a breaker refusal.
    pub fn breaker_refused(&self, refusal: Refusal) {
        if let Some([open, full, pending]) = &self.refusals {
            match refusal {
                Refusal::Open => open.inc(),
                Refusal::Full(_) => full.inc(),
                Refusal::Pending(_) => pending.inc(),
            };
        }
    }

    /// Drains (or undrains) the target written `address`; false when there is none.
    pub fn drain(&self, address: &str, drained: bool) -> bool {
        let Some(index) = self.target_index(address) else {
            return false;
        };
        self.health.set_drained(index, drained);
        if let Some(metrics) = self.metrics(index) {
            metrics.set_healthy(self.health.is_healthy(index));
        }
        tracing::info!(upstream = %self.config.name, target = address, drained, "target drain changed by the operator");
        true
    }

    /// A target's metrics, when metrics are on.
    pub fn metrics(&self, target: usize) -> Option<&UpstreamMetrics> {
        self.metrics.as_ref().map(|m| &m[target])
    }

    /// The authority of a target.
    pub fn target(&self, index: usize) -> &Authority {
        &self.config.targets[index]
    }

    /// The index of the target written `address`.
    pub fn target_index(&self, address: &str) -> Option<usize> {
        self.config
            .targets
            .iter()
            .position(|t| t.as_str() == address)
    }

    /// Every target's state, for `/status`.
    pub fn status(&self) -> Vec<TargetStatus> {
        self.health.status(&self.config.targets)
    }
}
