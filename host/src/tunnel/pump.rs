//! The byte copy of an open tunnel: each direction on its own (a side that blocks on
//! writing never stops the other direction), a half-close passed on as a half-close, and
//! the tunnel's idle timeout, maximum lifetime and shutdown signal around both.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::CloseReason;
use crate::config::TunnelLimits;

/// Bytes read from each side of a tunnel (and written to the other).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Client → upstream.
    pub from_client: u64,
    /// Upstream → client.
    pub from_upstream: u64,
}

/// The size of each direction's buffer.
const BUFFER: usize = 16 << 10;

/// Copies bytes between `client` and `upstream` until both directions ended, one failed,
/// no byte moved for `limits.idle_timeout`, `limits.max_lifetime` passed, or `closing`
/// turns true. Returns why it stopped (the side that ended first, when both ended) and what
/// moved. Dropping the two streams afterwards closes both connections.
pub async fn pump<C, U>(
    client: C,
    upstream: U,
    limits: TunnelLimits,
    mut closing: watch::Receiver<bool>,
) -> (CloseReason, Moved)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let opened = Instant::now();
    let expires = opened + limits.max_lifetime;
    let activity = Activity {
        opened,
        last_ms: AtomicU64::new(0),
    };
    let from_client = AtomicU64::new(0);
    let from_upstream = AtomicU64::new(0);
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = one_way(client_read, upstream_write, &from_client, &activity);
    let down = one_way(upstream_read, client_write, &from_upstream, &activity);
    tokio::pin!(up, down);
    let idle = tokio::time::sleep_until(opened + limits.idle_timeout);
    tokio::pin!(idle);
    let (mut up_done, mut down_done) = (false, false);
    let mut first_end = None;
    let reason = loop {
        tokio::select! {
            ended = &mut up, if !up_done => {
                up_done = true;
                match ended {
                    Ok(()) => { first_end.get_or_insert(CloseReason::ClientClosed); }
                    Err(error) => {
                        tracing::debug!(%error, "tunnel: client side failed");
                        break CloseReason::Error;
                    }
                }
            }
            ended = &mut down, if !down_done => {
                down_done = true;
                match ended {
                    Ok(()) => { first_end.get_or_insert(CloseReason::UpstreamClosed); }
                    Err(error) => {
                        tracing::debug!(%error, "tunnel: upstream side failed");
                        break CloseReason::Error;
                    }
                }
            }
            () = &mut idle => {
                let quiet_until = activity.last() + limits.idle_timeout;
                if Instant::now() >= quiet_until {
                    break CloseReason::IdleTimeout;
                }
                idle.as_mut().reset(quiet_until);
            }
            () = tokio::time::sleep_until(expires) => break CloseReason::MaxLifetime,
            _ = closing.wait_for(|closing| *closing) => break CloseReason::Shutdown,
        }
        if up_done && down_done {
            break first_end.unwrap_or(CloseReason::ClientClosed);
        }
    };
    let moved = Moved {
        from_client: from_client.load(Ordering::Relaxed),
        from_upstream: from_upstream.load(Ordering::Relaxed),
    };
    (reason, moved)
}

/// When bytes last moved, either way.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Copies `from` to `to` until `from` ends, then half-closes `to`.
async fn one_way<R, W>(
    mut from: R,
    mut to: W,
    moved: &AtomicU64,
    activity: &Activity,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        activity.touch();
        to.write_all(&buffer[..read]).await?;
        to.flush().await?;
        moved.fetch_add(read as u64, Ordering::Relaxed);
        activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(idle_ms: u64, lifetime_ms: u64) -> TunnelLimits {
        TunnelLimits {
            idle_timeout: Duration::from_millis(idle_ms),
            max_lifetime: Duration::from_millis(lifetime_ms),
        }
    }

    #[tokio::test]
    async fn copies_both_ways_and_names_the_side_that_closed_first() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let (_tx, closing) = watch::channel(false);
        let tunnel = tokio::spawn(pump(client, upstream, limits(60_000, 600_000), closing));
        client_peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        upstream_peer.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        client_peer.read_exact(&mut got).await.unwrap();
        client_peer.shutdown().await.unwrap();
        // The half-close reaches the upstream, which then closes too.
        let mut rest = Vec::new();
        upstream_peer.read_to_end(&mut rest).await.unwrap();
        drop(upstream_peer);
        let (reason, moved) = tunnel.await.unwrap();
        assert_eq!(reason, CloseReason::ClientClosed);
        assert_eq!(
            moved,
            Moved {
                from_client: 5,
                from_upstream: 2
            }
        );
    }

    #[tokio::test]
    async fn a_silent_tunnel_closes_at_the_idle_timeout_counted_from_the_last_byte() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let (_tx, closing) = watch::channel(false);
        let started = Instant::now();
        let tunnel = tokio::spawn(pump(client, upstream, limits(300, 600_000), closing));
        tokio::time::sleep(Duration::from_millis(200)).await;
        client_peer.write_all(b"x").await.unwrap();
        let (reason, _) = tunnel.await.unwrap();
        assert_eq!(reason, CloseReason::IdleTimeout);
        // The byte at 200 ms re-armed the timer.
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_tunnel_closes_at_its_lifetime_and_on_shutdown() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let (_tx, closing) = watch::channel(false);
        let (reason, _) = pump(client, upstream, limits(60_000, 100), closing).await;
        assert_eq!(reason, CloseReason::MaxLifetime);

        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let (tx, closing) = watch::channel(false);
        let tunnel = tokio::spawn(pump(client, upstream, limits(60_000, 600_000), closing));
        tx.send_replace(true);
        assert_eq!(tunnel.await.unwrap().0, CloseReason::Shutdown);
    }
}
