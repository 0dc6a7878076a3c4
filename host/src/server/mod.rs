//! The listening side: worker threads, accept loops, connection limits and graceful shutdown.

mod connection;
mod refusal;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::metrics::{ListenerMetrics, OpenConnection};
use crate::tls::TlsListener;
use crate::workers;

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<std::net::TcpListener>,
    /// Per listener (in the same order): its TLS certificates, for a TLS listener.
    tls: Vec<Option<Arc<TlsListener>>>,
    settings: ServerConfig,
    gateway: Arc<Gateway>,
}

/// What every worker serves with.
struct Shared {
    gateway: Arc<Gateway>,
    /// The process-wide connection limit.
    permits: Arc<Semaphore>,
    /// Per listener (in `listen` order), when metrics are on.
    listener_metrics: Vec<Option<Arc<ListenerMetrics>>>,
    /// Per listener: its TLS certificates, for a TLS listener.
    tls: Vec<Option<Arc<TlsListener>>>,
    builder: auto::Builder<TokioExecutor>,
}

impl Server {
    /// Binds every configured listen address (`server.listen`, then `[[listeners]]`) and
    /// loads the certificates of TLS listeners.
    pub async fn bind(settings: ServerConfig, gateway: Arc<Gateway>) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        let mut tls = Vec::new();
        let configured = settings.listen.iter().map(|addr| (*addr, None)).chain(
            settings
                .listeners
                .iter()
                .map(|l| (l.address, l.tls.as_ref())),
        );
        for (addr, tls_settings) in configured {
            let certificates = tls_settings
                .map(|t| TlsListener::new(addr, t).map(Arc::new))
                .transpose()
                .map_err(|e| std::io::Error::other(format!("listener {addr}: {e}")))?;
            let listener = TcpListener::bind(addr)
                .await
                .and_then(TcpListener::into_std)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
            listeners.push(listener);
            tls.push(certificates);
        }
        Ok(Self {
            listeners,
            tls,
            settings,
            gateway,
        })
    }

    /// The TLS listeners' certificates, for reloading and status.
    pub fn tls_listeners(&self) -> Vec<Arc<TlsListener>> {
        self.tls.iter().flatten().cloned().collect()
    }

    /// The addresses actually bound, each with whether it speaks TLS.
    pub fn bound(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners
            .iter()
            .zip(&self.tls)
            .filter_map(|(l, tls)| Some((l.local_addr().ok()?, tls.is_some())))
            .collect()
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Starts [`workers::count`] worker threads, each accepting on every listener and
    /// serving its connections on its own single-threaded runtime, and serves until
    /// `shutdown` completes. Then every worker stops accepting and waits up to the grace
    /// period for its in-flight requests. Returns `true` when every connection drained in
    /// time; fails only when the workers cannot be started.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<bool> {
        let metrics = self.gateway.runtime().metrics().cloned();
        let listener_metrics: Vec<Option<Arc<ListenerMetrics>>> = self
            .listeners
            .iter()
            .map(|listener| {
                let metrics = metrics.as_ref()?;
                let addr = listener.local_addr().ok()?;
                Some(metrics.listener(&addr.to_string()))
            })
            .collect();
        let shared = Arc::new(Shared {
            listener_metrics,
            tls: self.tls,
            permits: Arc::new(Semaphore::new(self.settings.max_connections)),
            builder: connection::builder(&self.settings),
            gateway: self.gateway,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut finished = Vec::new();
        for index in 0..workers::count() {
            let started = start_worker(index, &self.listeners, &shared, stop_rx.clone());
            match started {
                Ok(done) => finished.push(done),
                Err(error) => {
                    let _ = stop_tx.send(true);
                    return Err(error);
                }
            }
        }
        // The workers hold their own copies; the sockets close when the last worker stops.
        drop(self.listeners);
        shutdown.await;
        tracing::info!(
            grace_ms = shared
                .gateway
                .state()
                .config
                .server
                .shutdown_grace
                .as_millis() as u64,
            "shutting down: draining connections"
        );
        let _ = stop_tx.send(true);
        let mut drained = true;
        for done in finished {
            drained &= done.await.unwrap_or(false);
        }
        Ok(drained)
    }
}

/// Starts worker `index` on its own thread and runtime; the receiver reports whether its
/// connections drained in time once it stopped.
fn start_worker(
    index: usize,
    listeners: &[std::net::TcpListener],
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<oneshot::Receiver<bool>> {
    let listeners = listeners
        .iter()
        .map(std::net::TcpListener::try_clone)
        .collect::<std::io::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shared = shared.clone();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("wasmgate-worker-{index}"))
        .spawn(move || {
            workers::enter(index);
            let drained = runtime.block_on(run_worker(listeners, shared, stop));
            let _ = done_tx.send(drained);
        })?;
    Ok(done_rx)
}

/// One worker: accepts on its copies of the listeners and serves each connection on this
/// thread until `stop`, then drains.
async fn run_worker(
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let graceful = GracefulShutdown::new();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let mut accept_tasks = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        match TcpListener::from_std(listener) {
            Ok(listener) => accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                shared.permits.clone(),
                stop.clone(),
                conn_tx.clone(),
                shared.listener_metrics.get(index).cloned().flatten(),
                shared.tls.get(index).cloned().flatten(),
            ))),
            Err(error) => tracing::error!(%error, "a worker cannot use a listener"),
        }
    }
    drop(conn_tx);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            next = conn_rx.recv() => {
                let Some((stream, peer, permit, metrics, tls)) = next else { break };
                // Timeouts and head limits come from the live config, so a reload applies
                // them to the next connection.
                let settings = &shared.gateway.state().config.server;
                let open = metrics.map(OpenConnection::new);
                connection::spawn(stream, peer, permit, open, tls, &shared.gateway, settings, &shared.builder, &graceful);
            }
        }
    }
    for task in accept_tasks {
        let _ = task.await;
    }
    let grace = shared.gateway.state().config.server.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    let drained = tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_ok();
    // Tunnels (upgraded connections) have the same drain period; then they are closed,
    // each logged with the reason `shutdown`.
    let tunnels = shared.gateway.tunnels();
    let tunnels_drained = tokio::time::timeout_at(deadline, tunnels.all_closed())
        .await
        .is_ok();
    if !tunnels_drained {
        tunnels.close_all();
        let _ = tokio::time::timeout(TUNNEL_CLOSE_TIME, tunnels.all_closed()).await;
    }
    drained && tunnels_drained
}

/// How long the tunnels still open at the end of the drain period have to close.
const TUNNEL_CLOSE_TIME: std::time::Duration = std::time::Duration::from_secs(1);

type Accepted = (
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
    Option<Arc<ListenerMetrics>>,
    Option<Arc<TlsListener>>,
);

/// Accepts connections while a connection permit is free, until `stop`.
async fn accept_loop(
    listener: TcpListener,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    conn_tx: mpsc::UnboundedSender<Accepted>,
    metrics: Option<Arc<ListenerMetrics>>,
    tls: Option<Arc<TlsListener>>,
) {
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the limit: the listener stops accepting (new connections wait in the
                // backlog) until a connection ends.
                if let Some(metrics) = &metrics {
                    metrics.limit.inc();
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
                }
            }
        };
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if conn_tx
                    .send((stream, peer, permit, metrics.clone(), tls.clone()))
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
