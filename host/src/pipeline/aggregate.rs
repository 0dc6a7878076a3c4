//! The host side of an aggregate stage: making the planned calls, concurrently, each with
//! its own timeout, and only to upstreams the stage's config lists.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{HeaderName, HeaderValue};
use http_body_util::BodyExt;

use super::convert;
use crate::body::{empty, full};
use crate::config::StageConfig;
use crate::gateway::LiveState;
use crate::proxy::{self, Forwarded, Outbound};
use crate::rescue::GatewayError;
use crate::runtime::bindings::types::{BackendCall, BackendResult, CallError, Response};

/// Largest response body one planned call may return to `merge`.
const MAX_CALL_RESPONSE: u64 = 8 << 20;
/// Most calls one plan may make.
const MAX_CALLS: usize = 32;

/// Makes every planned call concurrently and returns their outcomes in plan order.
pub(super) async fn run_calls(
    state: &LiveState,
    stage: &StageConfig,
    plan: Vec<BackendCall>,
    request_id: &str,
    client_ip: &str,
) -> Vec<BackendResult> {
    if plan.len() > MAX_CALLS {
        tracing::warn!(
            calls = plan.len(),
            "aggregate plan had too many calls; the extra calls are refused"
        );
    }
    let mut calls = Vec::with_capacity(plan.len());
    for (index, call) in plan.into_iter().enumerate() {
        calls.push(named_call(state, stage, call, index, request_id, client_ip));
    }
    join_all(calls).await
}

async fn named_call(
    state: &LiveState,
    stage: &StageConfig,
    call: BackendCall,
    index: usize,
    request_id: &str,
    client_ip: &str,
) -> BackendResult {
    let name = call.name.clone();
    let outcome = if index >= MAX_CALLS {
        Err(CallError::Refused(format!(
            "a plan may make at most {MAX_CALLS} calls"
        )))
    } else {
        one_call(state, stage, call, request_id, client_ip).await
    };
    BackendResult { name, outcome }
}

async fn one_call(
    state: &LiveState,
    stage: &StageConfig,
    call: BackendCall,
    request_id: &str,
    client_ip: &str,
) -> Result<Response, CallError> {
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
    let mut headers = convert::headers_from_wit(&call.headers).map_err(refused)?;
    proxy::strip_hop_by_hop(&mut headers);
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
    let body = match call.body {
        Some(bytes) => {
            convert::set_body_headers(&mut headers, bytes.len());
            full(bytes)
        }
        None => empty(),
    };
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
    let response = match proxy::forward(upstream, outbound).await {
        Ok(response) => response,
        Err(GatewayError::UpstreamTimeout { .. }) => return Err(CallError::Timeout),
        Err(error) => return Err(CallError::Unreachable(error.to_string())),
    };
    let (parts, body) = response.into_parts();
    let bytes: Bytes = match tokio::time::timeout(
        timeout,
        proxy::limit_body(body, MAX_CALL_RESPONSE).collect(),
    )
    .await
    {
        Err(_) => return Err(CallError::Timeout),
        Ok(Err(error)) => {
            return Err(CallError::Unreachable(format!(
                "reading the response failed: {error}"
            )));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok(Response {
        status: parts.status.as_u16(),
        headers: convert::headers_to_wit(&parts.headers),
        body: Some(bytes.to_vec()),
    })
}
