//! Whether each target of an upstream may take requests, from three sources: active checks
//! (a probe on an interval), passive outlier detection (what real requests saw) and the
//! operator (drain through the admin API).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use http::Request;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, TE, USER_AGENT};
use http::uri::Authority;
use http_body_util::BodyExt as _;
use serde::Serialize;

use super::TargetPool;
use crate::body::BoxError;
use crate::config::{CheckKind, HealthCheck, Outlier};

/// What an attempt on a target came to, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A response below 500.
    Success,
    /// A 5xx response.
    ServerError,
    /// No response: connect failure, reset or timeout.
    GatewayFailure,
}

/// The health of one target.
#[derive(Debug, Default)]
pub struct TargetHealth {
    /// Requests in flight to the target (least-request balancing).
    pub in_flight: AtomicUsize,
    /// The active checks' verdict (true without checks).
    checked_healthy: AtomicBool,
    consecutive_5xx: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Milliseconds after the upstream's epoch until which the target is ejected.
    ejected_until: AtomicU64,
    /// Times ejected so far: each ejection lasts as long again as the first.
    ejections: AtomicU32,
    /// Taken out of rotation by the operator.
    drained: AtomicBool,
}

/// A target as `/status` shows it.
#[derive(Debug, Serialize)]
pub struct TargetStatus {
    /// `host:port`.
    pub target: String,
    /// Whether it takes new requests now.
    pub usable: bool,
    /// The active checks' verdict (true without checks).
    pub checked_healthy: bool,
    /// Milliseconds of ejection left (0: not ejected).
    pub ejected_ms: u64,
    /// Times ejected since the upstream was built.
    pub ejections: u32,
    /// Drained by the operator.
    pub drained: bool,
    /// Requests in flight.
    pub in_flight: usize,
}

/// The health of an upstream's targets.
#[derive(Debug)]
pub struct Health {
    targets: Vec<TargetHealth>,
    outlier: Outlier,
    epoch: Instant,
}

impl Health {
    /// Every target healthy, unless `start_unhealthy` (they then wait for a passing check).
    pub fn new(count: usize, outlier: Outlier, check: Option<&HealthCheck>) -> Self {
        let start_healthy = !check.is_some_and(|c| c.start_unhealthy);
        let targets = (0..count)
            .map(|_| TargetHealth {
                checked_healthy: AtomicBool::new(start_healthy),
                ..TargetHealth::default()
            })
            .collect();
        Self {
            targets,
            outlier,
            epoch: Instant::now(),
        }
    }

    /// One target's state.
    pub fn target(&self, index: usize) -> &TargetHealth {
        &self.targets[index]
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn usable_at(&self, index: usize, now: u64) -> bool {
        let t = &self.targets[index];
        !t.drained.load(Ordering::Relaxed)
            && t.checked_healthy.load(Ordering::Relaxed)
            && t.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// The targets a request may go to, leaving out `tried` when others remain. When the
    /// usable share falls under the panic threshold, every target not drained is used
    /// (better some errors than all traffic on the few left); `None` when every target is
    /// drained.
    pub fn candidates(&self, tried: &[usize]) -> Option<Vec<usize>> {
        let now = self.millis();
        let count = self.targets.len();
        let usable: Vec<usize> = (0..count).filter(|&i| self.usable_at(i, now)).collect();
        let mut chosen = if usable.len() * 100 < count * self.outlier.panic_threshold as usize
            || usable.is_empty()
        {
            (0..count)
                .filter(|&i| !self.targets[i].drained.load(Ordering::Relaxed))
                .collect()
        } else {
            usable
        };
        if chosen.is_empty() {
            return None;
        }
        if chosen.iter().any(|t| !tried.contains(t)) {
            chosen.retain(|t| !tried.contains(t));
        }
        Some(chosen)
    }

    /// Counts what an attempt on `index` came to; ejects the target when it passed a
    /// threshold and may be ejected. Returns the ejection time when it was ejected.
    pub fn observe(&self, index: usize, observed: Observed) -> Option<Duration> {
        let t = &self.targets[index];
        let (counter, threshold) = match observed {
            Observed::Success => {
                t.consecutive_5xx.store(0, Ordering::Relaxed);
                t.consecutive_failures.store(0, Ordering::Relaxed);
                return None;
            }
            Observed::ServerError => {
                t.consecutive_failures.store(0, Ordering::Relaxed);
                (&t.consecutive_5xx, self.outlier.consecutive_5xx)
            }
            Observed::GatewayFailure => {
                t.consecutive_5xx.store(0, Ordering::Relaxed);
                (&t.consecutive_failures, self.outlier.consecutive_failures)
            }
        };
        let streak = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || streak < threshold {
            return None;
        }
        counter.store(0, Ordering::Relaxed);
        self.eject(index)
    }

    /// Ejects a target unless that would pass the share that may be ejected, or leave no
    /// usable target.
    fn eject(&self, index: usize) -> Option<Duration> {
        let now = self.millis();
        let count = self.targets.len();
        if !self.usable_at(index, now) {
            return None;
        }
        let ejected = (0..count)
            .filter(|&i| self.targets[i].ejected_until.load(Ordering::Relaxed) > now)
            .count();
        let allowed = (count * self.outlier.max_ejected_percent as usize / 100).max(1);
        let usable_others = (0..count)
            .filter(|&i| i != index && self.usable_at(i, now))
            .count();
        if ejected >= allowed || usable_others == 0 {
            return None;
        }
        let t = &self.targets[index];
        let times = t.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let time = self
            .outlier
            .base_ejection
            .saturating_mul(times)
            .min(self.outlier.max_ejection);
        t.ejected_until
            .store(now + time.as_millis() as u64, Ordering::Relaxed);
        Some(time)
    }

    /// Records an active check's verdict (after the thresholds): the target is usable by
    /// the checks' account or not.
    pub fn set_checked(&self, index: usize, healthy: bool) {
        self.targets[index]
            .checked_healthy
            .store(healthy, Ordering::Relaxed);
    }

    /// Drains (or undrains) a target.
    pub fn set_drained(&self, index: usize, drained: bool) {
        self.targets[index]
            .drained
            .store(drained, Ordering::Relaxed);
    }

    /// Every target's state, for `/status`.
    pub fn status(&self, targets: &[Authority]) -> Vec<TargetStatus> {
        let now = self.millis();
        targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let t = &self.targets[i];
                TargetStatus {
                    target: target.to_string(),
                    usable: self.usable_at(i, now),
                    checked_healthy: t.checked_healthy.load(Ordering::Relaxed),
                    ejected_ms: t.ejected_until.load(Ordering::Relaxed).saturating_sub(now),
                    ejections: t.ejections.load(Ordering::Relaxed),
                    drained: t.drained.load(Ordering::Relaxed),
                    in_flight: t.in_flight.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Whether a target passes its active checks and is not drained.
    pub fn is_healthy(&self, index: usize) -> bool {
        let t = &self.targets[index];
        t.checked_healthy.load(Ordering::Relaxed) && !t.drained.load(Ordering::Relaxed)
    }

    /// Whether at least one target is usable.
    pub fn any_usable(&self) -> bool {
        let now = self.millis();
        (0..self.targets.len()).any(|i| self.usable_at(i, now))
    }
}

/// Runs one active check through `pool` (the target's own transport: TLS and HTTP/2 as
/// its upstream speaks): true when it passes within the check's timeout.
pub async fn probe(check: &HealthCheck, pool: &Arc<TargetPool>) -> bool {
    let why = match tokio::time::timeout(check.timeout, check_once(check, pool)).await {
        Ok(Ok(true)) => return true,
        Ok(Ok(false)) => "unexpected answer".to_string(),
        Ok(Err(error)) => super::error_chain(error.as_ref()),
        Err(_) => format!("no answer within {} ms", check.timeout.as_millis()),
    };
    tracing::debug!(target = %pool.authority(), reason = %why, "health check failed");
    false
}

async fn check_once(check: &HealthCheck, pool: &Arc<TargetPool>) -> Result<bool, BoxError> {
    let (path, expect) = match &check.kind {
        CheckKind::Tcp => return Ok(pool.connects().await.is_ok()),
        CheckKind::Http { path, expect, .. } => (path.as_str(), Some(expect)),
        CheckKind::Grpc { .. } => (GRPC_HEALTH_CHECK, None),
    };
    let mut request = Request::new(match &check.kind {
        CheckKind::Grpc { service } => crate::body::full(grpc_health_request(service)),
        _ => crate::body::empty(),
    });
    *request.uri_mut() = path.parse::<http::Uri>()?;
    let headers = request.headers_mut();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static("wasmgate-health-check"),
    );
    let host = match &check.kind {
        CheckKind::Http {
            host: Some(host), ..
        } => HeaderValue::from_str(host).ok(),
        _ => pool.host().cloned(),
    };
    if let Some(host) = host {
        headers.insert(HOST, host);
    }
    if let CheckKind::Grpc { .. } = &check.kind {
        *request.method_mut() = http::Method::POST;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    let response = pool.send(request).await?;
    let status = response.status().as_u16();
    if let Some(expect) = expect {
        // Read (a bounded part of) the body so the connection can serve the next check.
        let _ = super::limit_body(response.into_body(), CHECK_BODY_LIMIT)
            .collect()
            .await;
        return Ok(expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)));
    }
    let in_head = response.headers().get(crate::grpc::GRPC_STATUS).cloned();
    let Ok(collected) = super::limit_body(response.into_body(), CHECK_BODY_LIMIT)
        .collect()
        .await
    else {
        return Ok(false);
    };
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get(crate::grpc::GRPC_STATUS).cloned())
        .or(in_head);
    Ok(status == 200 && grpc_status.is_some_and(|s| s == "0") && is_serving(&collected.to_bytes()))
}

/// The gRPC health-checking protocol's method.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// The most of a check's answer that is read.
const CHECK_BODY_LIMIT: u64 = 64 * 1024;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (`status` 1 is `SERVING`).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `HealthCheckRequest { service }` as one gRPC frame.
fn grpc_health_request(service: &str) -> bytes::Bytes {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    crate::grpc::frame::frame(&prost::Message::encode_to_vec(&request))
}

/// Whether a body's first message is a `HealthCheckResponse` saying `SERVING`.
fn is_serving(body: &[u8]) -> bool {
    let mut messages = crate::grpc::frame::Deframer::default();
    messages.push(body);
    matches!(
        messages.next_message(),
        Ok(Some(message)) if <HealthCheckResponse as prost::Message>::decode(&message[..])
            .is_ok_and(|response| response.status == 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(count: usize) -> Health {
        Health::new(
            count,
            Outlier {
                consecutive_failures: 2,
                ..Outlier::default()
            },
            None,
        )
    }

    #[test]
    fn consecutive_failures_eject_and_the_last_target_never_is() {
        let health = health(2);
        assert_eq!(health.observe(0, Observed::GatewayFailure), None);
        assert!(health.observe(0, Observed::GatewayFailure).is_some());
        assert_eq!(health.candidates(&[]), Some(vec![1]));
        // The other target cannot be ejected too: it is the last usable one.
        health.observe(1, Observed::GatewayFailure);
        assert_eq!(health.observe(1, Observed::GatewayFailure), None);
        assert_eq!(health.candidates(&[]), Some(vec![1]));
    }

    #[test]
    fn a_success_resets_the_streak_and_ejections_grow() {
        let health = health(3);
        health.observe(0, Observed::GatewayFailure);
        health.observe(0, Observed::Success);
        assert_eq!(health.observe(0, Observed::GatewayFailure), None);
        let first = health.observe(0, Observed::GatewayFailure).unwrap();
        health.targets[0].ejected_until.store(0, Ordering::Relaxed);
        health.observe(0, Observed::GatewayFailure);
        let second = health.observe(0, Observed::GatewayFailure).unwrap();
        assert_eq!(second, first * 2);
    }

    #[test]
    fn under_the_panic_threshold_every_target_is_used() {
        let health = health(4);
        for i in 0..4 {
            health.set_checked(i, i == 0);
        }
        // One of four usable (25 % < 50 %): all four take traffic.
        assert_eq!(health.candidates(&[]), Some(vec![0, 1, 2, 3]));
        health.set_drained(1, true);
        assert_eq!(health.candidates(&[0]), Some(vec![2, 3]));
    }
}
