//! The Redis backend as plugins see it: every call bounded by `state.timeout`, a breaker
//! that keeps calls away from a failing Redis for a cool-off, and the `on-unavailable`
//! policy for calls that fail or are kept away.

use std::time::{Duration, Instant};

use super::breaker::{Admit, Breaker, Transition};
use super::local::LocalState;
use super::op::{GcraDecision, Op, Outcome, WindowCount};
use super::redis::{RedisError, RedisState};
use super::{SharedState, StateFuture};
use crate::config::{CounterBudget, RedisConfig, Unavailable};
use crate::metrics::StateMetrics;

/// [`RedisState`] with a timeout, a breaker and a failure policy.
pub struct Guarded {
    redis: RedisState,
    breaker: Breaker,
    fallback: LocalState,
    policy: Unavailable,
    instances: u64,
    timeout: Duration,
    connect_timeout: Duration,
    /// The URL without its password, for logs.
    url: String,
    metrics: Option<StateMetrics>,
}

impl Guarded {
    /// Wraps `redis`; `fallback` serves `on-unavailable = "local"`.
    pub fn new(
        redis: RedisState,
        config: &RedisConfig,
        fallback: LocalState,
        metrics: Option<StateMetrics>,
    ) -> Self {
        Self {
            redis,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cool_off),
            fallback,
            policy: config.on_unavailable,
            instances: u64::from(config.instances),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            url: config.redacted_url(),
            metrics,
        }
    }

    async fn call(&self, plugin: &str, op: Op) -> Result<Outcome, String> {
        op.check()?;
        let name = op.name();
        let admit = self.breaker.admit();
        if admit == Admit::Reject {
            if let Some(metrics) = &self.metrics {
                metrics.error("breaker_open");
            }
            return self.unavailable(plugin, op, "Redis is unavailable (breaker open)");
        }
        // A probe whose request is cancelled before Redis answers must not leave the breaker
        // waiting for it forever.
        let probe = ProbeGuard {
            breaker: &self.breaker,
            armed: admit == Admit::Probe,
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.redis.run(plugin, &op)).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout),
        };
        if let Some(metrics) = &self.metrics {
            metrics.call(name, started.elapsed());
        }
        probe.disarm();
        match result {
            Ok(outcome) => {
                if self.breaker.success() == Transition::Closed {
                    tracing::info!(url = %self.url, "Redis answers again: shared state is back");
                    self.set_gauge();
                }
                Ok(outcome)
            }
            Err(error) => {
                if let Some(metrics) = &self.metrics {
                    metrics.error(error.kind());
                }
                tracing::debug!(url = %self.url, op = name, %error, "Redis call failed");
                if self.breaker.failure() == Transition::Opened {
                    tracing::warn!(
                        url = %self.url,
                        %error,
                        policy = policy_name(self.policy),
                        "Redis is failing: calls stop for the breaker's cool-off"
                    );
                    self.set_gauge();
                }
                self.unavailable(plugin, op, &error.to_string())
            }
        }
    }

    /// What `op` gets while Redis cannot answer, by policy.
    fn unavailable(&self, plugin: &str, op: Op, why: &str) -> Result<Outcome, String> {
        if let Some(metrics) = &self.metrics {
            metrics.fallback(policy_name(self.policy));
        }
        let is_kv = matches!(
            op,
            Op::Get { .. } | Op::Set { .. } | Op::CompareAndSet { .. } | Op::Delete { .. }
        );
        match self.policy {
            Unavailable::Closed => Err(format!("shared state unavailable: {why}")),
            Unavailable::Open if is_kv => Err(format!("shared state unavailable: {why}")),
            Unavailable::Open => Ok(match op {
                Op::Increment { .. } => Outcome::Count(0),
                Op::Window { .. } => Outcome::Window(WindowCount::default()),
                _ => Outcome::Gcra(GcraDecision {
                    allowed: true,
                    ..GcraDecision::default()
                }),
            }),
            Unavailable::Local => self.fallback.run_scaled(plugin, op, self.instances),
        }
    }

    fn set_gauge(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.breaker_open(self.breaker.is_open());
        }
    }
}

/// Gives an abandoned probe back to the breaker when dropped armed.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl ProbeGuard<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.abandon_probe();
        }
    }
}

fn policy_name(policy: Unavailable) -> &'static str {
    match policy {
        Unavailable::Closed => "closed",
        Unavailable::Open => "open",
        Unavailable::Local => "local",
    }
}

impl SharedState for Guarded {
    fn run<'a>(&'a self, plugin: &'a str, op: Op) -> StateFuture<'a> {
        Box::pin(self.call(plugin, op))
    }

    fn set_budget(&self, budget: CounterBudget) {
        self.fallback.set_budget(budget);
    }

    fn warm_up(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let bound = self.connect_timeout.saturating_mul(2);
            match tokio::time::timeout(bound, self.redis.warm_up()).await {
                Ok(Ok(())) => tracing::info!(url = %self.url, "shared state: Redis connected"),
                Ok(Err(error)) => tracing::warn!(
                    url = %self.url,
                    %error,
                    policy = policy_name(self.policy),
                    "shared state: Redis is not reachable yet; calls follow on-unavailable until it is"
                ),
                Err(_) => tracing::warn!(
                    url = %self.url,
                    policy = policy_name(self.policy),
                    "shared state: Redis did not answer within {}ms; calls follow on-unavailable until it does",
                    bound.as_millis()
                ),
            }
        })
    }
}
