//! Forwarding a request to an upstream and its response back: target choice, retries of
//! idempotent requests on connect failure, timeouts, and intermediary header rules.

mod balance;
mod breaker;
mod headers;
mod health;
mod limit;
mod multiplex;
mod pool;
mod resolve;
mod retry;
mod upgrade;
mod upstream;

use std::time::Duration;

use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use tokio::time::Instant;

pub use balance::hash as hash_key;
pub use breaker::{Refusal, State as BreakerState};
pub use headers::{
    Forwarded, accepts_trailers, add_forwarding, append_via, is_hop_by_hop, strip_hop_by_hop,
};
pub use health::{Observed, TargetStatus};
pub use limit::ConnectionLimit;
pub use pool::{PoolSettings, SendError, TargetPool, Transport};
pub use upgrade::{Switched, TunnelLoad, forward_upgrade};
pub use upstream::Upstream;

use crate::body::{Body, BodyHook, BoxError, Hooked, boxed, empty};
use crate::config::RetryPolicy;
use crate::metrics::{UpstreamError, UpstreamMetrics};
use crate::trace::{self, Trace};
use opentelemetry::KeyValue;
use std::sync::Arc;

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
    /// How failed attempts are retried.
    pub retry: Arc<RetryPolicy>,
    /// The request's key on a hashing upstream's ring.
    pub hash_key: Option<u64>,
    /// Keep the client's Host header instead of the target's.
    pub preserve_host: bool,
    /// Time allowed until the response headers arrive, retries included.
    pub timeout: Duration,
    /// The span the call is made under, when tracing is on: each attempt is a child span,
    /// and its context is what the upstream receives as `traceparent`.
    pub trace: Option<Trace>,
}

/// How a call to an upstream went, for the access log.
#[derive(Debug, Default, Clone)]
pub struct Attempts {
    /// Attempts made (1 unless a connect failure was retried).
    pub count: u32,
    /// The target of the last attempt (`host:port`).
    pub target: Option<String>,
    /// Time from the last attempt's start to its response head (or failure).
    pub waited: Option<std::time::Duration>,
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
    /// The upstream's circuit breaker refused the request.
    #[error("upstream `{upstream}` is refusing requests: {}", describe_refusal(*.refusal))]
    Refused {
        /// Upstream name.
        upstream: String,
        /// Why.
        refusal: Refusal,
    },
    /// Every target of the upstream is drained.
    #[error("upstream `{upstream}` has no target taking requests (all drained)")]
    NoTarget {
        /// Upstream name.
        upstream: String,
    },
    /// The client's request body failed while it was read for a possible retry.
    #[error("reading the request body failed: {0}")]
    ClientBody(String),
    /// The upstream switched protocols when it should not have: unasked, or to a protocol
    /// the request did not offer.
    #[error("upstream `{upstream}` {reason}")]
    BadUpgrade {
        /// Upstream name.
        upstream: String,
        /// What it did.
        reason: &'static str,
    },
}

fn describe_refusal(refusal: Refusal) -> String {
    match refusal {
        Refusal::Open => "its circuit breaker is open".into(),
        Refusal::Full(max) => format!("{max} requests are in flight (breaker.max-requests)"),
        Refusal::Pending(max) => {
            format!("{max} requests already wait for a connection (breaker.max-pending-requests)")
        }
    }
}

/// Sends `outbound` to `upstream` and returns its response, with hop-by-hop fields removed
/// and `Via` added; records in `attempts_made` how it went.
///
/// The upstream's breaker admits the request first (or it is refused at once). Each attempt
/// goes to a target the balancer picks among usable ones, a different one on a retry when
/// another is usable. A failed attempt is retried as the route's policy says (what fails,
/// how often, after which backoff), while the upstream's retry budget allows, and only when
/// the request can be sent again: an idempotent method (unless the policy allows others)
/// and a body small enough to keep.
pub async fn forward(
    upstream: &Upstream,
    outbound: Outbound,
    attempts_made: &mut Attempts,
) -> Result<Response<Body>, ProxyError> {
    let Outbound {
        method,
        path_and_query,
        mut headers,
        body,
        retry,
        hash_key,
        preserve_host,
        timeout,
        trace,
    } = outbound;
    // The client frames the request from its body; no header may say otherwise.
    crate::framing::unframe_request(&mut headers);
    let name = || upstream.config.name.clone();
    upstream.budget.deposit();
    let mut permit = upstream.breaker.admit().map_err(|refusal| {
        upstream.breaker_refused(refusal);
        ProxyError::Refused {
            upstream: name(),
            refusal,
        }
    })?;
    let deadline = Instant::now() + timeout;
    let may_retry = retry.attempts > 1 && (retry.non_idempotent || is_idempotent(&method));
    let (mut body, replay) = if may_retry {
        keep_for_replay(body, retry.buffer_body).await?
    } else {
        (Some(body), None)
    };
    let attempts = if replay.is_some() { retry.attempts } else { 1 };
    let mut tried: Vec<usize> = Vec::with_capacity(attempts as usize);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let target = upstream
            .pick(&tried, hash_key)
            .ok_or_else(|| ProxyError::NoTarget { upstream: name() })?;
        tried.push(target);
        let authority = upstream.target(target);
        let mut request = Request::new(
            body.take()
                .or_else(|| replay.clone().map(crate::body::full))
                .unwrap_or_else(empty),
        );
        *request.method_mut() = method.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.uri_mut() = Uri::from(path_and_query.clone());
        *request.headers_mut() = if attempt == attempts {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        let pool = upstream.pool(target);
        if (!preserve_host || !request.headers().contains_key(header::HOST))
            && let Some(host) = pool.host()
        {
            request.headers_mut().insert(header::HOST, host.clone());
        }
        let span = trace.as_ref().map(|parent| {
            attempt_span(
                parent,
                &upstream.config.name,
                authority.as_str(),
                attempt as usize,
                request.headers_mut(),
            )
        });
        let metrics = upstream.metrics(target);
        if let Some(metrics) = metrics {
            metrics.requests.inc();
        }
        let try_deadline = retry
            .per_try_timeout
            .map_or(deadline, |per_try| deadline.min(Instant::now() + per_try));
        let sent_at = Instant::now();
        let in_flight = &upstream.health.target(target).in_flight;
        in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = tokio::time::timeout_at(try_deadline, pool.send(request)).await;
        in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        *attempts_made = Attempts {
            count: attempt,
            target: Some(authority.to_string()),
            waited: Some(sent_at.elapsed()),
        };
        // The upstream's own connection limit refused: not the target's doing, and not
        // worth a retry.
        if let Ok(Err(SendError::Overflow(max))) = &outcome {
            let refusal = Refusal::Pending(*max);
            upstream.breaker_refused(refusal);
            tracing::warn!(upstream = %upstream.config.name, "{}", describe_refusal(refusal));
            return Err(ProxyError::Refused {
                upstream: name(),
                refusal,
            });
        }
        if let Some(metrics) = metrics {
            record_attempt(metrics, &outcome, sent_at, trace.as_ref());
        }
        if let Some(span) = span {
            end_attempt_span(span, &outcome);
        }
        let failure = match &outcome {
            Ok(Ok(response)) if response.status().is_server_error() => {
                upstream.observe(target, Observed::ServerError);
                Some(Failure::Status(response.status().as_u16()))
            }
            Ok(Ok(_)) => {
                upstream.observe(target, Observed::Success);
                None
            }
            Ok(Err(SendError::Http(error))) if body_limit_exceeded(error).is_some() => None,
            Ok(Err(SendError::Connect(_))) => {
                upstream.observe(target, Observed::GatewayFailure);
                Some(Failure::Connect)
            }
            Ok(Err(SendError::Http(_))) => {
                upstream.observe(target, Observed::GatewayFailure);
                Some(Failure::Reset)
            }
            // A certificate that does not verify is the settings' fault, not the target's:
            // no ejection, and no retry (another target would fail the same way).
            Ok(Err(SendError::Tls(_))) => Some(Failure::Tls),
            // Answered above, before anything was counted.
            Ok(Err(SendError::Overflow(_))) => None,
            Err(_) => {
                upstream.observe(target, Observed::GatewayFailure);
                Some(Failure::Timeout)
            }
        };
        permit.record(failure.is_none());
        // Whether to try again, and after how long.
        let again = failure
            .filter(|failure| attempt < attempts && failure.retried_by(&retry))
            .and_then(|_| {
                let wait = match &outcome {
                    Ok(Ok(response)) => match retry::retry_after(&retry, response.headers()) {
                        Ok(Some(wait)) => wait,
                        Ok(None) => retry::backoff(&retry, attempt),
                        Err(()) => return None,
                    },
                    _ => retry::backoff(&retry, attempt),
                };
                (Instant::now() + wait < deadline).then_some(wait)
            })
            .filter(|_| {
                let allowed = upstream.budget.withdraw();
                if !allowed {
                    tracing::warn!(upstream = %upstream.config.name, "retry budget exhausted; not retrying");
                    if let Some(metrics) = metrics {
                        metrics.retry_refused();
                    }
                }
                allowed
            });
        if let Some(wait) = again {
            if let Some(metrics) = metrics {
                metrics.retried();
            }
            tracing::info!(upstream = %upstream.config.name, address = %authority, attempt, failure = ?failure, "upstream attempt failed; retrying");
            tokio::time::sleep(wait).await;
            continue;
        }
        return match outcome {
            Err(_) => Err(ProxyError::Timeout {
                upstream: name(),
                timeout,
            }),
            Ok(Err(SendError::Overflow(max))) => Err(ProxyError::Refused {
                upstream: name(),
                refusal: Refusal::Pending(max),
            }),
            Ok(Ok(mut response)) => {
                strip_hop_by_hop(response.headers_mut());
                append_via(response.headers_mut(), VIA);
                Ok(response)
            }
            Ok(Err(SendError::Connect(error))) => {
                tracing::warn!(upstream = %upstream.config.name, address = %authority, %error, "upstream connect failed");
                Err(ProxyError::Unreachable {
                    upstream: name(),
                    cause: SendError::Connect(error),
                })
            }
            Ok(Err(SendError::Tls(error))) => {
                // A certificate that does not verify is no reason to try another target: the
                // settings, not the target, are at fault (and would fail the same way).
                tracing::error!(upstream = %upstream.config.name, address = %authority, %error, "upstream TLS handshake failed");
                Err(ProxyError::Unreachable {
                    upstream: name(),
                    cause: SendError::Tls(error),
                })
            }
            Ok(Err(SendError::Http(error))) => {
                if let Some(limit) = body_limit_exceeded(&error) {
                    return Err(ProxyError::BodyTooLarge { limit });
                }
                tracing::warn!(upstream = %upstream.config.name, address = %authority, error = %error_chain(&error), "upstream request failed");
                Err(ProxyError::Unreachable {
                    upstream: name(),
                    cause: SendError::Http(error),
                })
            }
        };
    }
}

/// A failed attempt, as retry policies name them.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Connect,
    Reset,
    Timeout,
    Status(u16),
    Tls,
}

impl Failure {
    fn retried_by(self, policy: &RetryPolicy) -> bool {
        match self {
            Self::Connect => policy.on.connect_failure,
            Self::Reset => policy.on.reset,
            Self::Timeout => policy.on.timeout,
            Self::Status(status) => policy.on.statuses.contains(&status),
            Self::Tls => false,
        }
    }
}

/// Whether a method may be sent twice without changing the outcome (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Reads a request body that may have to be sent again: whole when it is known to fit in
/// `limit` bytes (kept for replays), else left streaming (no replay).
async fn keep_for_replay(
    body: Body,
    limit: u64,
) -> Result<(Option<Body>, Option<bytes::Bytes>), ProxyError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok((None, Some(bytes::Bytes::new())));
    }
    if body.size_hint().upper().is_none_or(|upper| upper > limit) {
        return Ok((Some(body), None));
    }
    match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => Ok((None, Some(collected.to_bytes()))),
        Err(error) => match body_limit_exceeded(error.as_ref()) {
            Some(limit) => Err(ProxyError::BodyTooLarge { limit }),
            None => Err(ProxyError::ClientBody(error.to_string())),
        },
    }
}

/// The span of one attempt, a child of `parent`, whose context replaces the client's
/// `traceparent` in `headers`.
fn attempt_span(
    parent: &Trace,
    upstream: &str,
    authority: &str,
    attempt: usize,
    headers: &mut HeaderMap,
) -> Trace {
    let span = parent.child(format!("upstream {upstream}"), trace::Kind::Client);
    if span.is_recording() {
        let resent =
            (attempt > 1).then(|| KeyValue::new("http.request.resend_count", attempt as i64 - 1));
        span.set_all(
            [
                KeyValue::new("wasmgate.upstream", upstream.to_string()),
                KeyValue::new("server.address", authority.to_string()),
                KeyValue::new("wasmgate.attempt", attempt as i64),
            ]
            .into_iter()
            .chain(resent),
        );
    }
    span.inject(headers);
    span
}

fn end_attempt_span<E>(span: Trace, outcome: &Result<Result<Response<Body>, SendError>, E>) {
    match outcome {
        Err(_) => span.fail("timeout"),
        Ok(Ok(response)) => {
            let status = response.status();
            span.set(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                span.fail(status.to_string());
            }
        }
        Ok(Err(error)) => span.fail(error_chain(error)),
    }
    span.end();
}

/// Counts one attempt's result: its latency when the target answered (with the trace as
/// exemplar), or why it failed.
fn record_attempt<E>(
    metrics: &UpstreamMetrics,
    outcome: &Result<Result<Response<Body>, SendError>, E>,
    sent_at: Instant,
    trace: Option<&Trace>,
) {
    match outcome {
        Err(_) => metrics.error(UpstreamError::Timeout),
        Ok(Ok(response)) => {
            metrics.observe(sent_at.elapsed(), trace);
            if response.status().is_server_error() {
                metrics.error(UpstreamError::ServerError);
            }
        }
        Ok(Err(SendError::Connect(_) | SendError::Tls(_))) => metrics.error(UpstreamError::Connect),
        // A request body over the route's limit is the client's doing, not the target's.
        Ok(Err(SendError::Http(error))) if body_limit_exceeded(error).is_some() => {}
        Ok(Err(SendError::Http(_))) => metrics.error(UpstreamError::Reset),
        // Counted as a breaker refusal instead.
        Ok(Err(SendError::Overflow(_))) => {}
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
