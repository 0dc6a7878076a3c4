//! Forwarding an `Upgrade` handshake: one attempt on a connection of its own (a connection
//! that switches protocols can never go back to the pool), with the upstream's breaker,
//! balancer, health, metrics and trace as for any request. No retries: a handshake is not
//! replayed on another target once bytes may have reached one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::{
    Attempts, Observed, Outbound, ProxyError, SendError, Upstream, VIA, append_via, attempt_span,
    end_attempt_span, error_chain, record_attempt, strip_hop_by_hop,
};
use crate::body::{Body, boxed, empty};

/// The upstream's answer to a handshake.
pub enum Switched {
    /// It switched: the `101` for the client (with `Connection: upgrade` and the chosen
    /// `Upgrade`), the upstream connection once hyper hands it over, and the tunnel's
    /// load on its target (to hold while the tunnel is open).
    Yes(Response<Body>, OnUpgrade, TunnelLoad),
    /// It answered otherwise: that answer goes to the client as any response would.
    No(Response<Body>),
}

/// Sends `outbound`, a handshake offering `protocols` (an `Upgrade` value), to a target of
/// `upstream` on a fresh connection and returns how the upstream answered; records in
/// `attempts_made` how it went.
pub async fn forward_upgrade(
    upstream: &Arc<Upstream>,
    outbound: Outbound,
    protocols: HeaderValue,
    attempts_made: &mut Attempts,
) -> Result<Switched, ProxyError> {
    let Outbound {
        method,
        path_and_query,
        mut headers,
        body,
        hash_key,
        preserve_host,
        timeout,
        trace,
        retry: _,
    } = outbound;
    crate::framing::unframe_request(&mut headers);
    let name = || upstream.config.name.clone();
    let mut permit = upstream.breaker.admit().map_err(|refusal| {
        upstream.breaker_refused(refusal);
        ProxyError::Refused {
            upstream: name(),
            refusal,
        }
    })?;
    let target = upstream
        .pick(&[], hash_key)
        .ok_or_else(|| ProxyError::NoTarget { upstream: name() })?;
    let authority = upstream.target(target);
    let pool = upstream.pool(target);
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.version_mut() = Version::HTTP_11;
    *request.uri_mut() = Uri::from(path_and_query);
    *request.headers_mut() = headers;
    let headers = request.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocols.clone());
    if (!preserve_host || !headers.contains_key(header::HOST))
        && let Some(host) = pool.host()
    {
        headers.insert(header::HOST, host.clone());
    }
    let span = trace.as_ref().map(|parent| {
        attempt_span(
            parent,
            &upstream.config.name,
            authority.as_str(),
            1,
            request.headers_mut(),
        )
    });
    let metrics = upstream.metrics(target);
    if let Some(metrics) = metrics {
        metrics.requests.inc();
    }
    let sent_at = Instant::now();
    let load = TunnelLoad::enter(upstream, target);
    let exchange = async {
        let mut sender = pool.connect_unpooled().await?;
        sender.send_request(request).await.map_err(SendError::Http)
    };
    let outcome = tokio::time::timeout(timeout, exchange)
        .await
        .map(|result| result.map(|response| response.map(boxed)));
    *attempts_made = Attempts {
        count: 1,
        target: Some(authority.to_string()),
        waited: Some(sent_at.elapsed()),
    };
    if let Some(metrics) = metrics {
        record_attempt(metrics, &outcome, sent_at, trace.as_ref());
    }
    if let Some(span) = span {
        end_attempt_span(span, &outcome);
    }
    let observed = match &outcome {
        Ok(Ok(response)) if response.status().is_server_error() => Observed::ServerError,
        Ok(Ok(_)) => Observed::Success,
        Ok(Err(SendError::Tls(_))) => {
            permit.record(false);
            return Err(unreachable(upstream, authority, outcome));
        }
        _ => Observed::GatewayFailure,
    };
    upstream.observe(target, observed);
    permit.record(observed == Observed::Success);
    let mut response = match outcome {
        Ok(Ok(response)) => response,
        Err(_) => {
            return Err(ProxyError::Timeout {
                upstream: name(),
                timeout,
            });
        }
        failed => return Err(unreachable(upstream, authority, failed)),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(response.headers_mut());
        append_via(response.headers_mut(), VIA);
        return Ok(Switched::No(response));
    }
    let chosen = response.headers().get(header::UPGRADE).cloned();
    let offered = |chosen: &HeaderValue| {
        let chosen = chosen.to_str().unwrap_or_default().trim();
        protocols
            .to_str()
            .unwrap_or_default()
            .split(',')
            .any(|offered| offered.trim().eq_ignore_ascii_case(chosen))
    };
    let Some(chosen) = chosen.filter(offered) else {
        tracing::warn!(upstream = %upstream.config.name, address = %authority, "upstream switched to a protocol the request did not offer");
        return Err(ProxyError::BadUpgrade {
            upstream: name(),
            reason: "switched to a protocol the request did not offer",
        });
    };
    let switched = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, chosen);
    append_via(&mut parts.headers, VIA);
    Ok(Switched::Yes(
        Response::from_parts(parts, empty()),
        switched,
        load,
    ))
}

/// A handshake, then its tunnel, counted as a request in flight on its target until
/// dropped: least-request balancing then spreads long-lived sockets, and the admin status
/// shows them.
pub struct TunnelLoad {
    upstream: Arc<Upstream>,
    target: usize,
}

impl TunnelLoad {
    fn enter(upstream: &Arc<Upstream>, target: usize) -> Self {
        upstream
            .health
            .target(target)
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Self {
            upstream: upstream.clone(),
            target,
        }
    }
}

impl Drop for TunnelLoad {
    fn drop(&mut self) {
        self.upstream
            .health
            .target(self.target)
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The error of a handshake that failed before any answer, logged with its cause.
fn unreachable<E>(
    upstream: &Upstream,
    authority: &http::uri::Authority,
    outcome: Result<Result<Response<Body>, SendError>, E>,
) -> ProxyError {
    let cause = match outcome {
        Ok(Err(cause)) => cause,
        _ => SendError::Connect(std::io::Error::other("no answer")),
    };
    tracing::warn!(upstream = %upstream.config.name, address = %authority, error = %error_chain(&cause), "upstream upgrade handshake failed");
    ProxyError::Unreachable {
        upstream: upstream.config.name.clone(),
        cause,
    }
}
