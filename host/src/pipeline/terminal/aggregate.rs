//! The `aggregate` terminal: an aggregate plugin plans calls (`plan`), the host makes them
//! concurrently, each with its own timeout and only to upstreams the stage's config lists,
//! within a byte budget, and the plugin builds the answer from their results (`merge`), on a
//! separate instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use http::header::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Terminal;
use crate::body::{Body, empty, full};
use crate::config::{OutputLimits, RetryPolicy, StageConfig};
use crate::metrics::{Export, Outcome};
use crate::pipeline::flow::UpstreamMap;
use crate::pipeline::stage::{RequestParts, StageFuture, ValidateFuture};
use crate::pipeline::wasm::{self, WasmStage, wasm_world};
use crate::pipeline::{Flow, convert};
use crate::proxy::{self, Forwarded, Outbound};
use crate::rescue::GatewayError;
use crate::runtime::bindings::types::{BackendCall, BackendResult, CallError, Response};
use crate::runtime::bindings::{Aggregate, AggregatePre};
use crate::runtime::{PoolStatus, Runtime, StageError, StageState};
use crate::trace::Trace;

wasm_world!(
    AggregateWorld,
    AggregatePre<StageState>,
    Aggregate,
    "aggregate"
);

/// A route answered by an aggregate plugin.
pub struct AggregateTerminal(pub WasmStage<AggregateWorld>);

impl Terminal for AggregateTerminal {
    fn serve<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        mut request: RequestParts,
    ) -> StageFuture<'s, http::Response<Body>> {
        Box::pin(async move {
            let stage = &self.0;
            let wit = stage.wit_request(flow, &mut request).await?;
            // The plan is lifted whole before its length can be checked: wasmtime runs the
            // guest's post-return (which frees the list) right after lifting a result. The
            // lift is bounded by the guest's memory cap: the host copy of a plan is a small
            // multiple of the guest memory it took.
            let plan = stage
                .run(flow, Export::Plan, async |store, instance, ctx| {
                    instance.call_plan(store, &wit, ctx).await
                })
                .await
                .map_err(|error| stage.fatal(flow, error))?;
            let max = flow.limits.aggregate_calls;
            if plan.len() > max {
                let error = StageError::InvalidOutput(format!(
                    "planned {} calls, over the limit of {max}",
                    plan.len()
                ));
                return Err(stage.fatal(flow, error));
            }
            let calls = run_calls(flow, &stage.config, plan).await?;
            let merged = stage
                .run(flow, Export::Merge, async |store, instance, ctx| {
                    instance.call_merge(store, &wit, ctx, &calls.results).await
                })
                .await
                .map_err(|error| stage.fatal(flow, error))?;
            let answer = wasm::answer(flow, merged)
                .map_err(|invalid| stage.fatal(flow, StageError::InvalidOutput(invalid.0)))?;
            stage.outcome(Outcome::Answered);
            Ok(answer)
        })
    }

    fn validate<'s>(&'s self, runtime: &'s Runtime) -> ValidateFuture<'s> {
        self.0.validate(runtime)
    }

    fn kind(&self) -> &'static str {
        "aggregate"
    }

    fn plugin(&self) -> Option<&str> {
        Some(&self.0.config.plugin)
    }

    fn pool(&self) -> Option<&dyn PoolStatus> {
        self.0.info().pool
    }
}

/// The response bytes one plan's calls may still read, and the gateway-wide reserve they
/// draw from. Reserved bytes are held until the results are dropped.
struct Budget {
    remaining: AtomicU64,
    limit: u64,
    total: Arc<Semaphore>,
    held: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

/// Why a plan's calls were cut short.
enum OverBudget {
    /// This request's calls returned more than `plugins.aggregate-bytes`.
    Request,
    /// The gateway-wide reserve (`plugins.aggregate-bytes-total`) is used up.
    Gateway,
}

impl Budget {
    fn take(&self, len: u64) -> Result<(), OverBudget> {
        let taken = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(len)
            });
        if taken.is_err() {
            return Err(OverBudget::Request);
        }
        let permits = u32::try_from(len).map_err(|_| OverBudget::Request)?;
        let permit = self
            .total
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| OverBudget::Gateway)?;
        let mut held = self.held.lock().map_err(|_| OverBudget::Gateway)?;
        match held.as_mut() {
            Some(all) => all.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// The results of a plan's calls, holding their share of the gateway-wide reserve.
struct CallResults {
    /// One result per planned call, in plan order.
    pub results: Vec<BackendResult>,
    _reserve: Option<OwnedSemaphorePermit>,
}

/// Makes every planned call concurrently and returns their outcomes in plan order. The
/// plan's length was checked when it was read from the plugin. Fails with 502 when the
/// calls return more than the per-request budget, 503 when the gateway-wide one is spent.
async fn run_calls(
    flow: &Flow<'_>,
    stage: &StageConfig,
    plan: Vec<BackendCall>,
) -> Result<CallResults, GatewayError> {
    let limit = flow.limits.aggregate_bytes;
    let budget = Budget {
        remaining: AtomicU64::new(limit),
        limit,
        total: flow.aggregate_reserve.clone(),
        held: std::sync::Mutex::new(None),
    };
    let target = Target {
        upstreams: flow.upstreams,
        limits: flow.limits,
        stage,
        request_id: flow.client.request_id,
        client_ip: flow.client.ip,
        trace: flow.trace.as_ref(),
    };
    let calls = plan.into_iter().map(|call| {
        let (budget, target) = (&budget, &target);
        async move {
            let name = call.name.clone();
            one_call(target, call, budget)
                .await
                .map(|outcome| BackendResult { name, outcome })
        }
    });
    let mut results = Vec::new();
    for result in join_all(calls).await {
        match result {
            Ok(result) => results.push(result),
            Err(OverBudget::Request) => {
                tracing::warn!(
                    limit = budget.limit,
                    "aggregate calls returned more than the per-request budget"
                );
                return Err(GatewayError::ResponseTooLarge {
                    limit: budget.limit,
                });
            }
            Err(OverBudget::Gateway) => {
                tracing::warn!("the gateway-wide reserve for aggregate responses is used up");
                return Err(GatewayError::Overloaded);
            }
        }
    }
    let reserve = budget.held.into_inner().ok().flatten();
    Ok(CallResults {
        results,
        _reserve: reserve,
    })
}

/// Where a plan's calls may go and what they carry.
struct Target<'a> {
    upstreams: &'a UpstreamMap,
    limits: &'a OutputLimits,
    stage: &'a StageConfig,
    request_id: &'a str,
    client_ip: &'a str,
    /// The aggregate stage's span: each call's attempts are its children.
    trace: Option<&'a Trace>,
}

async fn one_call(
    target: &Target<'_>,
    call: BackendCall,
    budget: &Budget,
) -> Result<Result<Response, CallError>, OverBudget> {
    let (response, timeout) = match send_call(target, call).await {
        Ok(sent) => sent,
        Err(error) => return Ok(Err(error)),
    };
    let (parts, body) = response.into_parts();
    let bytes = match tokio::time::timeout(timeout, read_within(body, budget)).await {
        Err(_) => return Ok(Err(CallError::Timeout)),
        Ok(Err(ReadError::Budget(over))) => return Err(over),
        Ok(Err(ReadError::Body(error))) => {
            return Ok(Err(CallError::Unreachable(format!(
                "reading the response failed: {error}"
            ))));
        }
        Ok(Ok(bytes)) => bytes,
    };
    Ok(Ok(Response {
        status: parts.status.as_u16(),
        headers: convert::headers_to_wit(&parts.headers),
        body: Some(bytes.to_vec()),
    }))
}

enum ReadError {
    Budget(OverBudget),
    Body(crate::body::BoxError),
}

/// Reads a response body, taking each chunk from the budget as it arrives.
async fn read_within(mut body: Body, budget: &Budget) -> Result<Bytes, ReadError> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        if let Some(data) = frame.data_ref() {
            budget.take(data.len() as u64).map_err(ReadError::Budget)?;
            collected.extend_from_slice(data);
        }
    }
    Ok(collected.freeze())
}

/// Sends one planned call; returns the response (its body still streaming) and the time
/// the call may take.
async fn send_call(
    target: &Target<'_>,
    call: BackendCall,
) -> Result<(http::Response<Body>, Duration), CallError> {
    if !target.stage.upstreams.contains(&call.upstream) {
        return Err(CallError::Refused(format!(
            "upstream `{}` is not listed in this stage's `upstreams`",
            call.upstream
        )));
    }
    let upstream = target.upstreams.get(&call.upstream).ok_or_else(|| {
        CallError::Refused(format!("upstream `{}` is not defined", call.upstream))
    })?;
    let refused = |e: convert::InvalidOutput| CallError::Refused(e.0);
    let method = convert::method_from_wit(&call.method).map_err(refused)?;
    let path_and_query = convert::path_from_wit(&call.uri).map_err(refused)?;
    let mut headers = convert::headers_from_wit(&call.headers, target.limits).map_err(refused)?;
    proxy::add_forwarding(
        &mut headers,
        &Forwarded {
            client_ip: target.client_ip,
            host: None,
            proto: "http",
            via: proxy::VIA,
        },
    );
    if let Ok(value) = HeaderValue::from_str(target.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    let body = call.body.map_or_else(empty, full);
    let timeout = call.timeout_ms.map_or(upstream.config.timeout, |ms| {
        Duration::from_millis(ms.into())
    });
    // Planned calls retry as a route does by default, within the same upstream budget.
    static RETRY: std::sync::LazyLock<Arc<RetryPolicy>> = std::sync::LazyLock::new(Arc::default);
    let outbound = Outbound {
        method,
        path_and_query,
        headers,
        body,
        retry: RETRY.clone(),
        hash_key: None,
        preserve_host: false,
        timeout,
        trace: target.trace.cloned(),
    };
    match proxy::forward(upstream, outbound, &mut proxy::Attempts::default()).await {
        Ok(response) => Ok((response, timeout)),
        Err(proxy::ProxyError::Timeout { .. }) => Err(CallError::Timeout),
        Err(error) => Err(CallError::Unreachable(error.to_string())),
    }
}
