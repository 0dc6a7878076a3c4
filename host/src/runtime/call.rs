//! One plugin call: a fresh `Store` and instance with the stage's limits, the call itself,
//! and the classification of what went wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::Runtime;
use super::bindings::types::{BackendCall, BackendResult, Context, Identity, Request, Response};
use super::host::{CallerInfo, StageState};
use super::plugin::{Plugin, PluginPre};
use crate::config::StageLimits;

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
    /// The plugin does not implement the world this stage needs.
    #[error("plugin implements `{found}`, not `{expected}`")]
    WrongKind {
        /// The world the stage needs.
        expected: &'static str,
        /// The world the plugin implements.
        found: &'static str,
    },
}

/// Everything one call needs besides its arguments.
pub struct Call<'a> {
    /// The plugin.
    pub plugin: &'a Arc<Plugin>,
    /// The route it runs for (empty while validating config).
    pub route: &'a Arc<str>,
    /// The stage's config, as JSON.
    pub config_json: &'a Arc<str>,
    /// The stage's limits.
    pub limits: StageLimits,
    /// The request's variables before the call.
    pub vars: Vec<(String, String)>,
}

/// A call's answer and the request variables after it.
pub type Answer<T> = Result<(T, Vec<(String, String)>), StageError>;

impl Runtime {
    fn store(&self, call: &Call<'_>) -> Store<StageState> {
        let caller = Arc::new(CallerInfo {
            plugin: call.plugin.name.as_str().into(),
            route: call.route.clone(),
            log_budget: call.plugin.log_budget.clone(),
        });
        let state = StageState::new(
            caller,
            call.config_json.clone(),
            call.vars.clone(),
            call.limits.memory_bytes,
            self.counters.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let _ = store.set_fuel(call.limits.fuel.unwrap_or(u64::MAX));
        // Yield to tokio every ~100k instructions, not only at 2ms epoch ticks: tokio polls
        // I/O and timers once per 61 task polls, so 2ms polls starve every other request.
        let _ = store.fuel_async_yield_interval(Some(100_000));
        let deadline = Instant::now() + call.limits.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Runs `validate-config` for a stage config.
    pub async fn validate_config(&self, call: Call<'_>) -> Answer<Result<(), String>> {
        let mut store = self.store(&call);
        let config = call.config_json.clone();
        let limits = call.limits;
        let outcome = guarded(limits.deadline, async {
            match &call.plugin.pre {
                PluginPre::Auth(pre) => {
                    let i = pre.instantiate_async(&mut store).await?;
                    i.wasmgate_plugin_config_check()
                        .call_validate_config(&mut store, &config)
                        .await
                }
                PluginPre::RateLimit(pre) => {
                    let i = pre.instantiate_async(&mut store).await?;
                    i.wasmgate_plugin_config_check()
                        .call_validate_config(&mut store, &config)
                        .await
                }
                PluginPre::Transform(pre) => {
                    let i = pre.instantiate_async(&mut store).await?;
                    i.wasmgate_plugin_config_check()
                        .call_validate_config(&mut store, &config)
                        .await
                }
                PluginPre::Aggregate(pre) => {
                    let i = pre.instantiate_async(&mut store).await?;
                    i.wasmgate_plugin_config_check()
                        .call_validate_config(&mut store, &config)
                        .await
                }
            }
        })
        .await;
        finish(store, limits, outcome)
    }

    /// Runs an auth stage.
    pub async fn authenticate(
        &self,
        call: Call<'_>,
        req: &Request,
        ctx: &Context,
    ) -> Answer<Result<Identity, Response>> {
        let PluginPre::Auth(pre) = &call.plugin.pre else {
            return Err(wrong_kind(&call, "auth"));
        };
        let mut store = self.store(&call);
        let outcome = guarded(call.limits.deadline, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_authenticate(&mut store, req, ctx).await
        })
        .await;
        finish(store, call.limits, outcome)
    }

    /// Runs a rate-limit stage.
    pub async fn check_rate(
        &self,
        call: Call<'_>,
        req: &Request,
        ctx: &Context,
    ) -> Answer<Result<Vec<(String, Vec<u8>)>, Response>> {
        let PluginPre::RateLimit(pre) = &call.plugin.pre else {
            return Err(wrong_kind(&call, "rate-limit"));
        };
        let mut store = self.store(&call);
        let outcome = guarded(call.limits.deadline, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_check(&mut store, req, ctx).await
        })
        .await;
        finish(store, call.limits, outcome)
    }

    /// Runs a transform stage's `on-request`.
    pub async fn on_request(
        &self,
        call: Call<'_>,
        req: &Request,
        ctx: &Context,
    ) -> Answer<Result<Request, Response>> {
        let PluginPre::Transform(pre) = &call.plugin.pre else {
            return Err(wrong_kind(&call, "transform"));
        };
        let mut store = self.store(&call);
        let outcome = guarded(call.limits.deadline, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_on_request(&mut store, req, ctx).await
        })
        .await;
        finish(store, call.limits, outcome)
    }

    /// Runs a transform stage's `on-response`.
    pub async fn on_response(
        &self,
        call: Call<'_>,
        resp: &Response,
        ctx: &Context,
    ) -> Answer<Response> {
        let PluginPre::Transform(pre) = &call.plugin.pre else {
            return Err(wrong_kind(&call, "transform"));
        };
        let mut store = self.store(&call);
        let outcome = guarded(call.limits.deadline, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_on_response(&mut store, resp, ctx).await
        })
        .await;
        finish(store, call.limits, outcome)
    }

    /// Runs an aggregate stage's `plan`.
    pub async fn plan(
        &self,
        call: Call<'_>,
        req: &Request,
        ctx: &Context,
    ) -> Answer<Vec<BackendCall>> {
        let PluginPre::Aggregate(pre) = &call.plugin.pre else {
            return Err(wrong_kind(&call, "aggregate"));
        };
        let mut store = self.store(&call);
        let outcome = guarded(call.limits.deadline, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_plan(&mut store, req, ctx).await
        })
        .await;
        finish(store, call.limits, outcome)
    }

    /// Runs an aggregate stage's `merge`.
    pub async fn merge(
        &self,
        call: Call<'_>,
        req: &Request,
        ctx: &Context,
        results: &[BackendResult],
    ) -> Answer<Response> {
        let PluginPre::Aggregate(pre) = &call.plugin.pre else {
            return Err(wrong_kind(&call, "aggregate"));
        };
        let mut store = self.store(&call);
        let outcome = guarded(call.limits.deadline, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_merge(&mut store, req, ctx, results).await
        })
        .await;
        finish(store, call.limits, outcome)
    }
}

fn wrong_kind(call: &Call<'_>, expected: &'static str) -> StageError {
    StageError::WrongKind {
        expected,
        found: call.plugin.kind.world(),
    }
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

fn finish<T>(store: Store<StageState>, limits: StageLimits, outcome: Guarded<T>) -> Answer<T> {
    let state = store.into_data();
    match outcome {
        Some(Ok(value)) => Ok((value, state.vars)),
        None => Err(StageError::Deadline(limits.deadline)),
        Some(Err(error)) => Err(classify(&error, &state, limits)),
    }
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
    StageError::Trap(format!("{error:?}"))
}
