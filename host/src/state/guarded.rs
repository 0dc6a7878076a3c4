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
        let refused = || Err(format!("shared state unavailable: {why}"));
        match (self.policy, op) {
            (Unavailable::Closed, _) => refused(),
            (Unavailable::Open, Op::Increment { .. }) => Ok(Outcome::Count(0)),
            (Unavailable::Open, Op::Window { .. }) => Ok(Outcome::Window(WindowCount::default())),
            (Unavailable::Open, Op::Gcra { burst, cost, .. }) => Ok(Outcome::Gcra(GcraDecision {
                allowed: true,
                remaining: burst.saturating_sub(cost),
                ..GcraDecision::default()
            })),
            // There is no value to make up for a key-value operation.
            (Unavailable::Open, _) => refused(),
            (Unavailable::Local, op) => self.fallback.run_scaled(plugin, op, self.instances),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Redis config for a port nothing listens on: every call fails fast (refused).
    fn unreachable(policy: Unavailable) -> Guarded {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = RedisConfig {
            url: format!("redis://:secret@127.0.0.1:{port}"),
            cluster: false,
            key_prefix: "t".into(),
            timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(100),
            connections: 1,
            on_unavailable: policy,
            instances: 2,
            breaker_failures: 2,
            breaker_cool_off: Duration::from_secs(60),
        };
        let redis = RedisState::new(&config).expect("settings");
        Guarded::new(redis, &config, LocalState::default(), None)
    }

    fn increment() -> Op {
        Op::Increment {
            key: "k".into(),
            delta: 1,
            window: Duration::from_secs(60),
        }
    }

    fn gcra() -> Op {
        Op::Gcra {
            key: "g".into(),
            limit: 10,
            period: Duration::from_secs(60),
            burst: 4,
            cost: 1,
        }
    }

    fn set() -> Op {
        Op::Set {
            key: "s".into(),
            value: b"v".to_vec(),
            ttl: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn closed_fails_every_operation_and_the_breaker_opens() {
        let state = unreachable(Unavailable::Closed);
        for op in [increment(), gcra(), set()] {
            let error = state.call("p", op).await.unwrap_err();
            assert!(error.starts_with("shared state unavailable"), "{error}");
            assert!(!error.contains("secret"), "{error}");
        }
        assert!(state.breaker.is_open(), "two failures open the breaker");
        let error = state.call("p", increment()).await.unwrap_err();
        assert!(error.contains("breaker open"), "{error}");
    }

    #[tokio::test]
    async fn open_lets_limits_pass_and_fails_key_values() {
        let state = unreachable(Unavailable::Open);
        assert_eq!(state.call("p", increment()).await, Ok(Outcome::Count(0)));
        match state.call("p", gcra()).await {
            Ok(Outcome::Gcra(decision)) => {
                assert!(decision.allowed);
                assert_eq!(decision.remaining, 3);
            }
            other => panic!("{other:?}"),
        }
        assert!(state.call("p", set()).await.is_err());
        assert!(state.call("p", Op::Get { key: "s".into() }).await.is_err());
    }

    #[tokio::test]
    async fn local_counts_here_with_limits_divided_by_instances() {
        let state = unreachable(Unavailable::Local);
        assert_eq!(state.call("p", increment()).await, Ok(Outcome::Count(2)));
        assert_eq!(state.call("p", increment()).await, Ok(Outcome::Count(4)));
        let allowed = {
            let mut allowed = 0;
            for _ in 0..4 {
                if let Ok(Outcome::Gcra(decision)) = state.call("p", gcra()).await
                    && decision.allowed
                {
                    allowed += 1;
                }
            }
            allowed
        };
        assert_eq!(allowed, 2, "a burst of 4 over 2 instances");
        assert_eq!(state.call("p", set()).await, Ok(Outcome::Done));
        assert_eq!(
            state.call("p", Op::Get { key: "s".into() }).await,
            Ok(Outcome::Value(Some(b"v".to_vec()))),
            "key-values live in this process meanwhile"
        );
    }

    #[tokio::test]
    async fn a_plugin_error_never_reaches_redis_or_the_breaker() {
        let state = unreachable(Unavailable::Open);
        let long = Op::Get {
            key: "k".repeat(600),
        };
        for _ in 0..3 {
            let error = state.call("p", long.clone()).await.unwrap_err();
            assert!(error.contains("keys are limited"), "{error}");
        }
        assert!(!state.breaker.is_open());
    }
}
