//! The host side of an aggregate stage: making the planned calls, concurrently, each with
//! its own timeout, and only to upstreams the stage's config lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use http::header::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::convert;
use crate::body::{Body, empty, full};
use crate::config::StageConfig;
use crate::gateway::LiveState;
use crate::proxy::{self, Forwarded, Outbound};
use crate::rescue::GatewayError;
use crate::runtime::bindings::types::{BackendCall, BackendResult, CallError, Response};

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
pub(super) struct CallResults {
    /// One result per planned call, in plan order.
    pub results: Vec<BackendResult>,
    _reserve: Option<OwnedSemaphorePermit>,
}

/// Makes every planned call concurrently and returns their outcomes in plan order. The
/// plan's length was checked when it was read from the plugin. Fails with 502 when the
/// calls return more than the per-request budget, 503 when the gateway-wide one is spent.
pub(super) async fn run_calls(
    state: &LiveState,
    stage: &StageConfig,
    plan: Vec<BackendCall>,
    request_id: &str,
    client_ip: &str,
) -> Result<CallResults, GatewayError> {
    let limit = state.config.plugins.output.aggregate_bytes;
    let budget = Budget {
        remaining: AtomicU64::new(limit),
        limit,
        total: state.aggregate_reserve.clone(),
        held: std::sync::Mutex::new(None),
    };
    let calls = plan.into_iter().map(|call| {
        let budget = &budget;
        async move {
            let name = call.name.clone();
            one_call(state, stage, call, request_id, client_ip, budget)
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

async fn one_call(
    state: &LiveState,
    stage: &StageConfig,
    call: BackendCall,
    request_id: &str,
    client_ip: &str,
    budget: &Budget,
) -> Result<Result<Response, CallError>, OverBudget> {
    let (response, timeout) = match send_call(state, stage, call, request_id, client_ip).await {
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
    state: &LiveState,
    stage: &StageConfig,
    call: BackendCall,
    request_id: &str,
    client_ip: &str,
) -> Result<(http::Response<Body>, Duration), CallError> {
    if !stage.upstreams.contains(&call.upstream) {
        return Err(CallError::Refused(format!(
            "upstream `{}` is not listed in this stage's `upstreams`",
            call.upstream
        )));
    }
    let upstream = state.upstreams.get(&call.upstream).ok_or_else(|| {
        CallError::Refused(format!("upstream `{}` is not defined", call.upstream))
    })?;
    let refused = |e: convert::InvalidOutput| CallError::Refused(e.0);
    let method = convert::method_from_wit(&call.method).map_err(refused)?;
    let path_and_query = convert::path_from_wit(&call.uri).map_err(refused)?;
    let limits = &state.config.plugins.output;
    let mut headers = convert::headers_from_wit(&call.headers, limits).map_err(refused)?;
    proxy::add_forwarding(
        &mut headers,
        &Forwarded {
            client_ip,
            host: None,
            proto: "http",
            via: proxy::VIA,
        },
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    let has_body = call.body.as_ref().is_some_and(|b| !b.is_empty());
    let body = call.body.map_or_else(empty, full);
    let timeout = call.timeout_ms.map_or(upstream.config.timeout, |ms| {
        Duration::from_millis(ms.into())
    });
    let retryable = !has_body && matches!(method, http::Method::GET | http::Method::HEAD);
    let outbound = Outbound {
        method,
        path_and_query,
        headers,
        body,
        retryable,
        preserve_host: false,
        timeout,
    };
    match proxy::forward(upstream, outbound).await {
        Ok(response) => Ok((response, timeout)),
        Err(GatewayError::UpstreamTimeout { .. }) => Err(CallError::Timeout),
        Err(error) => Err(CallError::Unreachable(error.to_string())),
    }
}
