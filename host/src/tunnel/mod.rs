//! HTTP/1.1 `Upgrade` pass-through (WebSocket and any protocol a route allows).
//!
//! 1. At routing, [`take_upgrade`] turns an HTTP/1.1 request with `Connection: upgrade` and
//!    an `Upgrade` the route allows into an [`UpgradeRequest`] carried in the request's
//!    extensions (stages may rewrite headers; the extension survives them). A route that
//!    does not allow it leaves the request a plain one: the proxy strips `Upgrade` as a
//!    hop-by-hop field (RFC 9110 §7.8 lets a server ignore it).
//! 2. Request-phase stages run on the handshake like on any request; a refusal answers
//!    before any upstream connection exists.
//! 3. The upstream terminal sends the handshake on a fresh connection; a `101` comes back
//!    with a [`PendingTunnel`] in its extensions, and response-phase stages leave it alone.
//! 4. The gateway spawns [`PendingTunnel::run`]: once both sides have switched, bytes are
//!    copied both ways ([`pump`]) until a side closes, the route's idle timeout or maximum
//!    lifetime passes, or shutdown closes it; then the access-log line is written.

mod pump;

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Version, request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::config::{TunnelConfig, TunnelLimits};
use crate::metrics::TunnelMetrics;

pub use pump::Moved;

/// An upgrade the route lets through: the protocols the client offered (those the route
/// allows, as an `Upgrade` value) and the client connection's handle.
#[derive(Clone)]
pub struct UpgradeRequest {
    /// The `Upgrade` value sent to the upstream.
    pub protocols: HeaderValue,
    /// Resolves to the client connection once the `101` has been written.
    pub client: OnUpgrade,
}

/// Takes the upgrade out of an HTTP/1.1 request that asks for one the route allows
/// (`Connection: upgrade` and an `Upgrade` naming an allowed protocol). `None` for every
/// other request, and for requests the server cannot hand over (HTTP/2, HTTP/1.0, or a
/// request built in the same process).
pub fn take_upgrade(parts: &mut request::Parts, config: &TunnelConfig) -> Option<UpgradeRequest> {
    if parts.version != Version::HTTP_11 || config.protocols.is_empty() {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let allowed: Vec<&str> = parts
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| config.allows(protocol))
        .collect();
    if allowed.is_empty() {
        return None;
    }
    let protocols = HeaderValue::from_str(&allowed.join(", ")).ok()?;
    let client = parts.extensions.remove::<OnUpgrade>()?;
    Some(UpgradeRequest { protocols, client })
}

/// Both ends of a tunnel waiting to open: carried by the `101` the gateway sends.
#[derive(Clone)]
pub struct PendingTunnel {
    /// The client connection, once the `101` is written.
    pub client: OnUpgrade,
    /// The upstream connection, switched by its `101`.
    pub upstream: OnUpgrade,
    /// How long the tunnel may last.
    pub limits: TunnelLimits,
    /// Whatever must live as long as the tunnel (its load on the upstream target).
    pub hold: Arc<dyn std::any::Any + Send + Sync>,
}

/// Why a tunnel closed, as the access log and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its side first.
    ClientClosed,
    /// The upstream closed its side first.
    UpstreamClosed,
    /// No bytes moved either way for the idle timeout.
    IdleTimeout,
    /// The tunnel reached its maximum lifetime.
    MaxLifetime,
    /// The gateway shut down (after its drain period).
    Shutdown,
    /// A side failed (reset, TLS error) or never switched.
    Error,
}

impl CloseReason {
    /// Every reason, for metrics.
    pub const ALL: [CloseReason; 6] = [
        Self::ClientClosed,
        Self::UpstreamClosed,
        Self::IdleTimeout,
        Self::MaxLifetime,
        Self::Shutdown,
        Self::Error,
    ];

    /// The name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::UpstreamClosed => "upstream_closed",
            Self::IdleTimeout => "idle_timeout",
            Self::MaxLifetime => "max_lifetime",
            Self::Shutdown => "shutdown",
            Self::Error => "error",
        }
    }
}

/// The open tunnels of the process: their count, and the signal that closes them all at
/// the end of a shutdown's drain period.
#[derive(Debug)]
pub struct Tunnels {
    open: watch::Sender<usize>,
    closing: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(0),
            closing: watch::Sender::new(false),
        }
    }
}

impl Tunnels {
    /// How many tunnels are open (or switching).
    pub fn count(&self) -> usize {
        *self.open.borrow()
    }

    /// Tells every tunnel to close now.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Completes when no tunnel is open.
    pub async fn all_closed(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|count| *count == 0).await;
    }

    /// Counts one tunnel as open until the guard drops.
    fn enter(self: &Arc<Self>) -> OpenTunnel {
        self.open.send_modify(|count| *count += 1);
        OpenTunnel(self.clone())
    }
}

/// One open tunnel, counted in [`Tunnels`].
struct OpenTunnel(Arc<Tunnels>);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.open.send_modify(|count| *count -= 1);
    }
}

/// What is recorded about a tunnel when it closes; written on drop, so a tunnel cut short
/// (its worker stopped) is still logged and counted (as `shutdown`).
struct TunnelRecord {
    log: AccessLog,
    metrics: Option<TunnelMetrics>,
    opened: Instant,
    reason: CloseReason,
    moved: Moved,
    _open: OpenTunnel,
}

impl Drop for TunnelRecord {
    fn drop(&mut self) {
        let lasted = self.opened.elapsed();
        self.log
            .tunnel_closed(self.reason.as_str(), &self.moved, lasted);
        if let Some(metrics) = &self.metrics {
            metrics.closed(self.reason, &self.moved);
        }
        tracing::debug!(
            reason = self.reason.as_str(),
            client_bytes = self.moved.from_client,
            upstream_bytes = self.moved.from_upstream,
            lasted_ms = lasted.as_millis() as u64,
            "tunnel closed"
        );
    }
}

impl PendingTunnel {
    /// Opens the tunnel and copies bytes both ways until it closes; then writes `log` (the
    /// handshake's access-log record, status `101`) with what the tunnel moved and why it
    /// closed. Counted in `tunnels` (and `metrics`) while open.
    pub async fn run(self, log: AccessLog, metrics: Option<TunnelMetrics>, tunnels: Arc<Tunnels>) {
        let mut closing = tunnels.closing.subscribe();
        if let Some(metrics) = &metrics {
            metrics.opened();
        }
        let mut record = TunnelRecord {
            log,
            metrics,
            opened: Instant::now(),
            reason: CloseReason::Shutdown,
            moved: Moved::default(),
            _open: tunnels.enter(),
        };
        let switched = tokio::select! {
            sides = async { tokio::try_join!(self.client, self.upstream) } => sides,
            _ = closing.wait_for(|closing| *closing) => return,
        };
        let (client, upstream) = match switched {
            Ok(sides) => sides,
            Err(error) => {
                tracing::debug!(%error, "tunnel did not open");
                record.reason = CloseReason::Error;
                return;
            }
        };
        record.opened = Instant::now();
        let _hold = self.hold;
        let (reason, moved) = pump::pump(
            TokioIo::new(client),
            TokioIo::new(upstream),
            self.limits,
            closing,
        )
        .await;
        record.reason = reason;
        record.moved = moved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::builder().uri("/ws");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut parts = builder.body(()).expect("request").into_parts().0;
        // An upgrade handle that never resolves, as hyper's server would insert.
        parts
            .extensions
            .insert(hyper::upgrade::on(http::Request::new(())));
        parts
    }

    #[test]
    fn an_allowed_upgrade_is_taken() {
        let mut request = parts(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let upgrade = take_upgrade(&mut request, &TunnelConfig::default()).expect("upgrade");
        assert_eq!(upgrade.protocols, "websocket");
        assert!(request.extensions.get::<OnUpgrade>().is_none());
    }

    #[test]
    fn only_allowed_protocols_are_offered() {
        let mut request = parts(&[("connection", "upgrade"), ("upgrade", "foo/2, websocket")]);
        let upgrade = take_upgrade(&mut request, &TunnelConfig::default()).expect("upgrade");
        assert_eq!(upgrade.protocols, "websocket");
    }

    #[test]
    fn other_requests_are_left_alone() {
        let config = TunnelConfig::default();
        for headers in [
            &[("upgrade", "websocket")][..],
            &[("connection", "upgrade"), ("upgrade", "h2c")][..],
            &[("connection", "close")][..],
        ] {
            let mut request = parts(headers);
            assert!(take_upgrade(&mut request, &config).is_none(), "{headers:?}");
            assert!(request.extensions.get::<OnUpgrade>().is_some());
        }
        let refusing = TunnelConfig {
            protocols: Vec::new(),
            ..TunnelConfig::default()
        };
        let mut request = parts(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert!(take_upgrade(&mut request, &refusing).is_none());
        let mut request = parts(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        request.version = Version::HTTP_10;
        assert!(take_upgrade(&mut request, &config).is_none());
    }
}
