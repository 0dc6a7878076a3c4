//! Forwarding a request to an upstream and its response back: target choice, retries of
//! idempotent requests on connect failure, timeouts, and intermediary header rules.

mod headers;
mod pool;
mod upstream;

use std::time::Duration;

use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use tokio::time::Instant;

pub use headers::{Forwarded, add_forwarding, append_via, is_hop_by_hop, strip_hop_by_hop};
pub use pool::{PoolSettings, SendError, TargetPool, Transport};
pub use upstream::Upstream;

use crate::body::{Body, BodyHook, BoxError, Hooked, boxed, empty};
use crate::metrics::{UpstreamError, UpstreamMetrics};

/// The `Via` pseudonym the gateway adds.
pub const VIA: &str = "1.1 wasmgate";

/// One request on its way to an upstream.
pub struct Outbound {
    /// Method.
    pub method: Method,
    /// Path and query to send.
    pub path_and_query: PathAndQuery,
    /// Headers, already stripped of hop-by-hop fields and with forwarding fields added.
    pub headers: HeaderMap,
    /// The body (streamed).
    pub body: Body,
    /// Whether a connect failure may be retried on another target (idempotent, no body).
    pub retryable: bool,
    /// Keep the client's Host header instead of the target's.
    pub preserve_host: bool,
    /// Time allowed until the response headers arrive, retries included.
    pub timeout: Duration,
}

/// Why a request could not be proxied. `rescue` turns it into the client's answer; the
/// cause stays attached for the log.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream did not answer in time (retries included).
    #[error("upstream `{upstream}` did not answer within {}ms", timeout.as_millis())]
    Timeout {
        /// Upstream name.
        upstream: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// No target could be reached, or the exchange broke off.
    #[error("upstream `{upstream}` is unreachable")]
    Unreachable {
        /// Upstream name.
        upstream: String,
        /// What went wrong with the last target tried.
        #[source]
        cause: SendError,
    },
    /// The request body passed the route's size limit while it was being sent.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
}

/// Sends `outbound` to `upstream` and returns its response, with hop-by-hop fields removed
/// and `Via` added.
pub async fn forward(
    upstream: &Upstream,
    outbound: Outbound,
) -> Result<Response<Body>, ProxyError> {
    let Outbound {
        method,
        path_and_query,
        mut headers,
        body,
        retryable,
        preserve_host,
        timeout,
    } = outbound;
    // The client frames the request from its body; no header may say otherwise.
    crate::framing::unframe_request(&mut headers);
    let deadline = Instant::now() + timeout;
    let attempts = if retryable {
        upstream.config.targets.len().min(3)
    } else {
        1
    };
    let mut body = Some(body);
    let mut target = upstream.pick();
    let name = || upstream.config.name.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let authority = upstream.target(target);
        let last = attempt == attempts;
        let request_headers = if last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        let mut request = Request::new(body.take().unwrap_or_else(empty));
        *request.method_mut() = method.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.uri_mut() = Uri::from(path_and_query.clone());
        *request.headers_mut() = request_headers;
        let pool = upstream.pool(target);
        if (!preserve_host || !request.headers().contains_key(header::HOST))
            && let Some(host) = pool.host()
        {
            request.headers_mut().insert(header::HOST, host.clone());
        }
        let metrics = upstream.metrics(target);
        let sent_at = metrics.map(|m| {
            m.requests.inc();
            Instant::now()
        });
        let sent = pool.send(request);
        let outcome = tokio::time::timeout_at(deadline, sent).await;
        if let (Some(metrics), Some(sent_at)) = (metrics, sent_at) {
            record_attempt(metrics, &outcome, sent_at);
        }
        match outcome {
            Err(_) => {
                return Err(ProxyError::Timeout {
                    upstream: name(),
                    timeout,
                });
            }
            Ok(Ok(mut response)) => {
                upstream.restore(target);
                strip_hop_by_hop(response.headers_mut());
                append_via(response.headers_mut(), VIA);
                return Ok(response);
            }
            Ok(Err(SendError::Connect(error))) => {
                tracing::warn!(upstream = %upstream.config.name, address = %authority, %error, "upstream connect failed");
                upstream.eject(target);
                if last {
                    return Err(ProxyError::Unreachable {
                        upstream: name(),
                        cause: SendError::Connect(error),
                    });
                }
                target = upstream.next_after(target);
            }
            Ok(Err(SendError::Tls(error))) => {
                // A certificate that does not verify is no reason to try another target: the
                // settings, not the target, are at fault (and would fail the same way).
                tracing::error!(upstream = %upstream.config.name, address = %authority, %error, "upstream TLS handshake failed");
                return Err(ProxyError::Unreachable {
                    upstream: name(),
                    cause: SendError::Tls(error),
                });
            }
            Ok(Err(SendError::Http(error))) => {
                if let Some(limit) = body_limit_exceeded(&error) {
                    return Err(ProxyError::BodyTooLarge { limit });
                }
                tracing::warn!(upstream = %upstream.config.name, address = %authority, error = %error_chain(&error), "upstream request failed");
                return Err(ProxyError::Unreachable {
                    upstream: name(),
                    cause: SendError::Http(error),
                });
            }
        }
    }
}

/// Counts one attempt's result: its latency when the target answered, or why it failed.
fn record_attempt<E>(
    metrics: &UpstreamMetrics,
    outcome: &Result<Result<Response<Body>, SendError>, E>,
    sent_at: Instant,
) {
    match outcome {
        Err(_) => metrics.error(UpstreamError::Timeout),
        Ok(Ok(response)) => {
            metrics.duration.observe(sent_at.elapsed().as_secs_f64());
            if response.status().is_server_error() {
                metrics.error(UpstreamError::ServerError);
            }
        }
        Ok(Err(SendError::Connect(_) | SendError::Tls(_))) => metrics.error(UpstreamError::Connect),
        // A request body over the route's limit is the client's doing, not the target's.
        Ok(Err(SendError::Http(error))) if body_limit_exceeded(error).is_some() => {}
        Ok(Err(SendError::Http(_))) => metrics.error(UpstreamError::Reset),
    }
}

/// A request body that ended because it passed the route's size limit.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub struct BodyLimitExceeded {
    /// The limit in bytes.
    pub limit: u64,
}

/// Whether `error` (or a cause) is a [`BodyLimitExceeded`].
pub fn is_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    body_limit_exceeded(error).is_some()
}

fn body_limit_exceeded(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(exceeded) = current.downcast_ref::<BodyLimitExceeded>() {
            return Some(exceeded.limit);
        }
        source = current.source();
    }
    None
}

/// `error: cause: cause` on one line, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Wraps a body so that it fails with [`BodyLimitExceeded`] past `limit` bytes.
pub fn limit_body(body: Body, limit: u64) -> Body {
    boxed(Hooked::new(
        body,
        Limit {
            remaining: limit,
            limit,
        },
    ))
}

/// The hook of [`limit_body`].
struct Limit {
    remaining: u64,
    limit: u64,
}

impl BodyHook for Limit {
    fn on_data(&mut self, len: usize) -> Result<(), BoxError> {
        self.remaining = self
            .remaining
            .checked_sub(len as u64)
            .ok_or(BodyLimitExceeded { limit: self.limit })?;
        Ok(())
    }
}
