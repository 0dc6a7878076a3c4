//! Shared state behind the `counters`, `limiter` and `kv` WIT interfaces: counters, window
//! counts, GCRA limiter cells and plugin key-values, namespaced per plugin.
//!
//! `[state]` picks the backend. [`LocalState`] keeps everything in this process (the
//! default). [`RedisState`] keeps it in Redis or Redis Cluster, one atomic round trip per
//! operation on Redis' clock, so several gateways share one limit; [`Guarded`] wraps it
//! with a hard per-call timeout, a [`Breaker`] and the `on-unavailable` policy.

mod breaker;
mod counters;
mod guarded;
mod local;
mod op;
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{CounterBudget, StateConfig};
use crate::metrics::Metrics;

pub use breaker::{Admit, Breaker, Transition};
pub use counters::MemoryCounters;
pub use guarded::Guarded;
pub use local::LocalState;
pub use op::{GcraDecision, Op, Outcome, WindowCount};
pub use op::{MAX_KEY_BYTES, MAX_TTL_MS, MAX_VALUE_BYTES, MAX_WINDOW_MS};
pub use redis::{RedisError, RedisState};

/// A boxed future of a state operation. `Err` is text for the plugin: it never holds a
/// URL or a secret.
pub type StateFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, String>> + Send + 'a>>;

/// A store of state shared by every plugin instance (and, with Redis, every gateway).
pub trait SharedState: Send + Sync {
    /// Runs one operation in `plugin`'s namespace. The operation is already checked
    /// ([`Op::check`]).
    fn run<'a>(&'a self, plugin: &'a str, op: Op) -> StateFuture<'a>;

    /// Applies a new per-plugin budget of in-process state (from a config reload).
    fn set_budget(&self, budget: CounterBudget);

    /// Connects ahead of the first request (and loads scripts), logging the outcome. A
    /// backend that cannot connect yet keeps trying on use.
    fn warm_up(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

/// The backend `[state]` asks for, recording into `metrics` when given. Redis connects
/// lazily, on first use, so a gateway starts while Redis is down.
pub fn from_config(
    config: &StateConfig,
    budget: CounterBudget,
    metrics: Option<&Arc<Metrics>>,
) -> Result<Arc<dyn SharedState>, RedisError> {
    Ok(match config {
        StateConfig::Local => Arc::new(LocalState::new(budget)),
        StateConfig::Redis(redis) => Arc::new(Guarded::new(
            RedisState::new(redis)?,
            redis,
            LocalState::new(budget),
            metrics.map(|m| m.state()),
        )),
    })
}
