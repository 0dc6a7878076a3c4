//! One plugin call: a `Store` and instance with the stage's limits (fresh, or from the
//! stage's reuse pool), the call itself, and the classification of what went wrong.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::Runtime;
use super::bindings::trace::SpanContext;
use super::host::{CallerInfo, StageState};
use super::plugin::Plugin;
use super::reuse::{InstancePool, Warm};
use crate::config::StageLimits;
use crate::metrics::StageMetrics;
use crate::tls::TlsSession;

/// Extra time past the deadline before the host gives up on a call that is blocked in a
/// host import (guest code itself is interrupted at the deadline by the epoch).
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// Why a stage could not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The guest trapped (panic, unreachable, out-of-bounds, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran past its wall-clock deadline.
    #[error("plugin ran past its {}ms deadline", .0.as_millis())]
    Deadline(Duration),
    /// The call used up its fuel.
    #[error("plugin ran out of fuel")]
    OutOfFuel,
    /// The guest tried to grow memory past its cap and failed.
    #[error("plugin exceeded its memory cap of {0} bytes")]
    MemoryCap(u64),
    /// The guest returned something the host cannot use.
    #[error("plugin returned an invalid answer: {0}")]
    InvalidOutput(String),
    /// No instance slot is free.
    #[error("no plugin instance slot is free")]
    Overloaded,
}

/// A WIT world the host runs: how to instantiate its pre-linked component and how to run
/// its `validate-config`. Each world's stage implements it for a marker type, so a call is
/// typed from the stage down to the export: no world can be called on another's instance.
pub trait World: Send + Sync + 'static {
    /// The pre-instantiated component (`AuthPre<StageState>`, ...).
    type Pre: Send + Sync + 'static;
    /// An instance (`Auth`, ...).
    type Instance: Send + Sync + 'static;

    /// Instantiates the component in `store`.
    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<StageState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a;

    /// Runs the instance's `validate-config` export.
    fn validate_config<'a>(
        instance: &'a Self::Instance,
        store: &'a mut Store<StageState>,
        config: &'a str,
    ) -> impl Future<Output = wasmtime::Result<Result<(), String>>> + Send + 'a;
}

/// Everything one call needs besides its arguments.
pub struct Call<'a, W: World> {
    /// The plugin (name and log budget).
    pub plugin: &'a Plugin,
    /// Its pre-instantiated component.
    pub pre: &'a W::Pre,
    /// The route it runs for (empty while validating config).
    pub route: &'a Arc<str>,
    /// The stage's config, as JSON.
    pub config_json: &'a Arc<str>,
    /// The stage's limits.
    pub limits: StageLimits,
    /// The request's variables before the call.
    pub vars: Vec<(String, String)>,
    /// The TLS session the request came over, for the `connection` interface.
    pub tls: Option<Arc<TlsSession>>,
    /// The stage's instance pool when it reuses instances; `None` for a fresh instance.
    pub pool: Option<&'a InstancePool<W::Instance>>,
    /// The stage's metrics (`None` while validating config, or with metrics off).
    pub metrics: Option<&'a StageMetrics>,
    /// The trace context of the call, when the request is traced.
    pub span: Option<SpanContext>,
}

/// A call's answer and the request variables after it.
pub type Answer<T> = Result<(T, Vec<(String, String)>), StageError>;

impl Runtime {
    /// A new store for a call, holding the request's variables: the stage's memory cap,
    /// fuel and deadline.
    fn store<W: World>(
        &self,
        call: &Call<'_, W>,
        vars: Vec<(String, String)>,
    ) -> Store<StageState> {
        let caller = Arc::new(CallerInfo {
            plugin: call.plugin.name.as_str().into(),
            route: call.route.clone(),
            log_budget: call.plugin.log_budget.clone(),
            counter_errors: call.metrics.map(|m| m.counter_errors.clone()),
            custom_metrics: self.metrics.as_ref().map(|m| m.custom.clone()),
        });
        let state = StageState::new(
            caller,
            call.config_json.clone(),
            vars,
            call.span.clone(),
            call.limits.memory_bytes,
            self.state.clone(),
            call.tls.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Yield to tokio every ~100k instructions, not only at 2ms epoch ticks: tokio polls
        // I/O and timers once per 61 task polls, so 2ms polls starve every other request.
        let _ = store.fuel_async_yield_interval(Some(100_000));
        arm(&mut store, call.limits);
        store
    }

    /// Runs one call: on an instance from the stage's pool, or on a fresh one. The instance
    /// goes back to the pool only after a call that succeeded within every limit.
    pub async fn run<W: World, T>(
        &self,
        mut call: Call<'_, W>,
        invoke: impl AsyncFnOnce(&mut Store<StageState>, &W::Instance) -> wasmtime::Result<T>,
    ) -> Answer<T> {
        let limits = call.limits;
        let vars = std::mem::take(&mut call.vars);
        let (mut store, reused, calls) = match call.pool.and_then(InstancePool::take) {
            Some(mut warm) => {
                warm.store
                    .data_mut()
                    .begin_call(vars, call.span.take(), call.tls.clone());
                arm(&mut warm.store, limits);
                (warm.store, Some(warm.instance), warm.calls)
            }
            None => (self.store(&call, vars), None, 0),
        };
        let metrics = call.metrics;
        if reused.is_some()
            && let Some(metrics) = metrics
        {
            metrics.reused();
        }
        let _ticking = self.ticker.enter();
        let outcome = guarded(limits.deadline, async {
            let instance = match reused {
                Some(instance) => instance,
                None => {
                    let started = metrics.map(|_| Instant::now());
                    let instance = W::instantiate(call.pre, &mut store).await?;
                    if let (Some(metrics), Some(started)) = (metrics, started) {
                        metrics.instantiated(started.elapsed());
                    }
                    instance
                }
            };
            let value = invoke(&mut store, &instance).await?;
            Ok((instance, value))
        })
        .await;
        if let Some(metrics) = metrics {
            metrics.memory(store.data().limiter.held_bytes);
        }
        match outcome {
            Some(Ok((instance, value))) => {
                let vars = std::mem::take(&mut store.data_mut().vars);
                if let Some(pool) = call.pool {
                    pool.put_back(Warm::new(store, instance, calls + 1));
                }
                Ok((value, vars))
            }
            None => Err(StageError::Deadline(limits.deadline)),
            Some(Err(error)) => Err(classify(&error, store.data(), limits)),
        }
    }

    /// Runs `validate-config` for a stage config, always on a fresh instance.
    pub async fn validate_config<W: World>(
        &self,
        mut call: Call<'_, W>,
    ) -> Answer<Result<(), String>> {
        call.pool = None;
        call.metrics = None;
        let config = call.config_json.clone();
        self.run(call, async |store, instance| {
            W::validate_config(instance, store, &config).await
        })
        .await
    }
}

/// Sets a store's per-call budget: fuel, and a wall-clock deadline checked at epoch ticks.
fn arm(store: &mut Store<StageState>, limits: StageLimits) {
    let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
    let deadline = Instant::now() + limits.deadline;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// Result of a guarded call: `None` when the host-side timeout fired.
type Guarded<T> = Option<wasmtime::Result<T>>;

/// Bounds a whole call (including time spent in async host imports) by the deadline plus slack.
async fn guarded<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> Guarded<T> {
    tokio::time::timeout(deadline + DEADLINE_SLACK, call)
        .await
        .ok()
}

fn classify(error: &wasmtime::Error, state: &StageState, limits: StageLimits) -> StageError {
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return StageError::Overloaded;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return StageError::Deadline(limits.deadline),
        Some(Trap::OutOfFuel) => return StageError::OutOfFuel,
        _ => {}
    }
    if state.limiter.hit_cap {
        return StageError::MemoryCap(limits.memory_bytes);
    }
    // Trap text can quote the guest's own function names: escaped, and bounded generously
    // enough to keep a backtrace.
    let text = format!("{error:?}");
    StageError::Trap(crate::text::escape_control(&crate::text::bounded(&text, 8192)).into_owned())
}
