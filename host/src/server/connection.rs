//! One client connection: the hyper connection builder, the idle and first-byte timeouts,
//! and the in-flight accounting that keeps a connection open while a response streams.

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
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError, boxed};
use crate::config::ServerConfig;
use crate::gateway::Gateway;

/// Serves one accepted connection on the current runtime until the client or the idle
/// timeout ends it; `permit` (the connection limit) is held until then.
pub(super) fn spawn(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    gateway: &Arc<Gateway>,
    settings: &ServerConfig,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(IdleTimeout::new(
        stream,
        settings.idle_timeout,
        settings.header_read_timeout,
        activity.clone(),
    ));
    let gateway = gateway.clone();
    let client_ip: Arc<str> = peer.ip().to_string().into();
    let service = service_fn(move |request| {
        let gateway = gateway.clone();
        let client_ip = client_ip.clone();
        let guard = InFlight::enter(&activity);
        async move {
            let response = gateway.handle(request, &client_ip).await;
            Ok::<_, std::convert::Infallible>(response.map(|inner| {
                boxed(GuardedBody {
                    inner,
                    _guard: guard,
                })
            }))
        }
    });
    let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, error = %error, "connection ended with an error");
        }
        drop(permit);
    });
}

/// The HTTP/1.1 + HTTP/2 (prior knowledge) connection settings.
pub(super) fn builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
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
