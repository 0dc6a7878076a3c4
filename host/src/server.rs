//! The listening side: accept loop, connection limits and timeouts, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::config::ServerConfig;
use crate::gateway::Gateway;

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<TcpListener>,
    settings: ServerConfig,
    gateway: Arc<Gateway>,
}

impl Server {
    /// Binds every configured listen address.
    pub async fn bind(settings: ServerConfig, gateway: Arc<Gateway>) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        for addr in &settings.listen {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            listeners.push(listener);
        }
        Ok(Self {
            listeners,
            settings,
            gateway,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes, then stops accepting and waits up to the grace
    /// period for in-flight requests. Returns `true` when every connection drained in time.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> bool {
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(self.settings.max_connections));
        let builder = Arc::new(connection_builder(&self.settings));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut accept_tasks = Vec::new();
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
        for listener in self.listeners {
            let permits = permits.clone();
            let mut stop = stop_rx.clone();
            let conn_tx = conn_tx.clone();
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    let permit = tokio::select! {
                        _ = stop.changed() => return,
                        permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
                    };
                    let accepted = tokio::select! {
                        _ = stop.changed() => return,
                        accepted = listener.accept() => accepted,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            if conn_tx.send((stream, peer, permit)).is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
        drop(conn_tx);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                next = conn_rx.recv() => {
                    let Some((stream, peer, permit)) = next else { break };
                    let _ = stream.set_nodelay(true);
                    let io = TokioIo::new(IdleTimeout::new(stream, self.settings.idle_timeout));
                    let gateway = self.gateway.clone();
                    let service = service_fn(move |request| {
                        let gateway = gateway.clone();
                        async move { Ok::<_, std::convert::Infallible>(gateway.handle(request, peer).await) }
                    });
                    let connection = builder.serve_connection(io, service).into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, error = %error, "connection ended with an error");
                        }
                        drop(permit);
                    });
                }
            }
        }
        let _ = stop_tx.send(true);
        for task in accept_tasks {
            let _ = task.await;
        }
        tracing::info!(
            grace_ms = self.settings.shutdown_grace.as_millis() as u64,
            "shutting down: draining connections"
        );
        tokio::time::timeout(self.settings.shutdown_grace, graceful.shutdown())
            .await
            .is_ok()
    }
}

fn connection_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The gateway answers over-limit heads itself with a JSON 431; hyper's own limit, at
    // twice that, is only a backstop against unbounded buffering.
    let backstop = (settings.max_header_bytes * 2).max(8 << 10);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(backstop.max(64 << 10))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(backstop as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// A connection that fails its pending read once no bytes have moved either way for
/// `timeout`, which makes hyper close it.
struct IdleTimeout {
    stream: TcpStream,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    last_activity: Instant,
}

impl IdleTimeout {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            stream,
            sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
            timeout,
            last_activity: now,
        }
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.last_activity = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                ready!(this.sleep.as_mut().poll(cx));
                let deadline = this.last_activity + this.timeout;
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection idle",
                    )));
                }
                this.sleep.as_mut().reset(deadline);
            },
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = ready!(Pin::new(&mut self.stream).poll_write(cx, buf));
        self.last_activity = Instant::now();
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs));
        self.last_activity = Instant::now();
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
