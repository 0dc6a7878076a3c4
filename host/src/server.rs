//! The listening side: accept loop, connection limits and timeouts, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

use crate::body::{Body, BoxError, boxed};
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
                    let activity = Arc::new(Activity::new());
                    let io = TokioIo::new(IdleTimeout::new(
                        stream,
                        self.settings.idle_timeout,
                        self.settings.header_read_timeout,
                        activity.clone(),
                    ));
                    let gateway = self.gateway.clone();
                    let service = service_fn(move |request| {
                        let gateway = gateway.clone();
                        let guard = InFlight::enter(&activity);
                        async move {
                            let response = gateway.handle(request, peer).await;
                            Ok::<_, std::convert::Infallible>(response.map(|inner| boxed(GuardedBody { inner, _guard: guard })))
                        }
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
    // hyper needs room for at least one read of body data too.
    let read_buffer = backstop.max(16 << 10);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(read_buffer)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(backstop as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// A connection that fails its pending read (which makes hyper close it) once no request
/// has been in flight for `timeout`, or when nothing arrived within the first-byte timeout
/// (hyper's own header-read timeout starts only after the protocol is detected).
struct IdleTimeout {
    stream: TcpStream,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    /// Until the first byte arrives, the connection must speak within this.
    first_byte_timeout: Duration,
    received_any: bool,
    activity: Arc<Activity>,
}

/// What a connection's requests are doing, shared between the service and the connection.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request finished.
    quiet_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
        }
    }
}

impl IdleTimeout {
    fn new(
        stream: TcpStream,
        timeout: Duration,
        first_byte_timeout: Duration,
        activity: Arc<Activity>,
    ) -> Self {
        let first_byte_timeout = first_byte_timeout.min(timeout);
        Self {
            stream,
            sleep: Box::pin(tokio::time::sleep_until(
                activity.started + first_byte_timeout,
            )),
            timeout,
            first_byte_timeout,
            received_any: false,
            activity,
        }
    }

    /// When the connection is closed unless a request starts first; `None` while one runs.
    fn deadline(&self) -> Option<Instant> {
        if !self.received_any {
            return Some(self.activity.started + self.first_byte_timeout);
        }
        if self.activity.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let quiet_since =
            Duration::from_millis(self.activity.quiet_since_ms.load(Ordering::Acquire));
        Some(self.activity.started + quiet_since + self.timeout)
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
                this.received_any |= !buf.filled().is_empty();
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                ready!(this.sleep.as_mut().poll(cx));
                let now = Instant::now();
                let deadline = this.deadline().unwrap_or(now + this.timeout);
                if now >= deadline {
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

/// Counts a request as in flight on its connection until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.started.elapsed().as_millis() as u64;
        self.0.quiet_since_ms.fetch_max(now, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is dropped.
    struct GuardedBody {
        #[pin]
        inner: Body,
        _guard: InFlight,
    }
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
