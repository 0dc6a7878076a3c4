//! One client connection: the hyper connection builder, the header-read and idle timeouts,
//! and the in-flight accounting that keeps a connection open while a response streams.
//! A connection upgraded by a `101` becomes a tunnel's client side: its bytes are no longer
//! HTTP, so none of the connection's timers or head checks apply to it any more (the
//! tunnel has its own limits), and it keeps its place under `max-connections` until the
//! tunnel closes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Version;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::body::{BodyHook, Hooked, boxed};
use crate::config::{MAX_HEADER_FIELDS, ServerConfig};
use crate::gateway::Gateway;
use crate::metrics::{OpenConnection, Protocol};
use crate::tls::{TlsListener, TlsSession};

use super::refusal;

/// Serves one accepted connection on the current runtime until the client or the idle
/// timeout ends it; `permit` (the connection limit) is held until then. On a TLS listener
/// the handshake comes first, bounded by the header-read timeout.
#[expect(
    clippy::too_many_arguments,
    reason = "the connection, what it holds while open, and the worker's shared parts"
)]
pub(super) fn spawn(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    open: Option<OpenConnection>,
    tls: Option<Arc<TlsListener>>,
    gateway: &Arc<Gateway>,
    settings: &ServerConfig,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        serve(
            stream,
            peer,
            permit,
            open,
            None,
            gateway,
            settings,
            builder,
            graceful.watcher(),
        );
        return;
    };
    let (gateway, settings, builder) = (gateway.clone(), settings.clone(), builder.clone());
    let watcher = graceful.watcher();
    tokio::spawn(async move {
        match tls.accept(stream, settings.header_read_timeout).await {
            Ok((stream, session)) => serve(
                stream,
                peer,
                permit,
                open,
                Some(Arc::new(session)),
                &gateway,
                &settings,
                &builder,
                watcher,
            ),
            Err(error) => {
                tracing::debug!(%peer, listener = %tls.address(), %error, "TLS handshake failed");
            }
        }
    });
}

/// Serves HTTP on an established connection (plain, or TLS with its `session`).
#[expect(
    clippy::too_many_arguments,
    reason = "the connection, what it holds while open, and the worker's shared parts"
)]
fn serve<S>(
    stream: S,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    open: Option<OpenConnection>,
    session: Option<Arc<TlsSession>>,
    gateway: &Arc<Gateway>,
    settings: &ServerConfig,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client_ip: Arc<str> = peer.ip().to_string().into();
    let activity = Arc::new(Activity::new(open, client_ip.clone()));
    let io = TokioIo::new(TimedStream::new(stream, settings, activity.clone(), permit));
    let gateway = gateway.clone();
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let gateway = gateway.clone();
        let client_ip = client_ip.clone();
        let session = session.clone();
        let guard = InFlight::enter(&activity, request.version());
        let request = request.map(|body| {
            if http_body::Body::is_end_stream(&body) {
                activity.body_done.store(true, Ordering::Release);
            } else {
                // Bytes after this head, read with it, were its body, not another head.
                activity.partial_head.store(false, Ordering::Release);
                activity.unread_body.store(true, Ordering::Release);
            }
            Hooked::new(body, BodyDone(activity.clone()))
        });
        let activity = activity.clone();
        async move {
            let response = gateway
                .handle_tls(request, &client_ip, session.as_ref())
                .await;
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                // What follows the 101 on this connection is the tunnel's.
                activity.upgraded.store(true, Ordering::Release);
            }
            Ok::<_, std::convert::Infallible>(
                response.map(|inner| boxed(Hooked::new(inner, guard))),
            )
        }
    });
    let connection = watcher.watch(
        builder
            .serve_connection_with_upgrades(io, service)
            .into_owned(),
    );
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, error = %error, "connection ended with an error");
        }
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
        // `TimedStream` times request heads.
        .header_read_timeout(None)
        .max_headers(MAX_HEADER_FIELDS)
        .max_buf_size(read_buffer)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // HTTP/2 peers learn this limit from SETTINGS; below it, the gateway's own check
        // answers over-limit requests with JSON 431s.
        .max_header_list_size(h2_backstop(settings.max_header_bytes))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// How long a connection closed before its request body was read keeps reading it.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much of such a body it reads at most.
const LINGER_BYTES: usize = 8 << 20;

/// The HTTP/2 header list size advertised to clients: room for 4× the gateway's limit
/// (64 KiB at least), so over-limit requests reach the gateway's JSON 431 instead of h2's
/// bare one.
fn h2_backstop(max_header_bytes: usize) -> u32 {
    u32::try_from((max_header_bytes * 4).max(64 << 10)).unwrap_or(u32::MAX)
}

/// A client connection that enforces the server's two connection timeouts by failing its
/// pending read (which makes hyper close the connection):
///
/// - header read: a request head must arrive in full within `header_read_timeout` of its
///   first byte (of the accept, for the first request), so a slow client cannot hold a
///   connection open by trickling a head (slowloris);
/// - idle: with no request in flight and no head being read, the connection is closed
///   `idle_timeout` after its last response ended.
///
/// hyper's own header-read timer is off: it starts as soon as the previous response ends,
/// so it would also cut idle keep-alive connections at the header-read timeout. HTTP/2
/// heads are frames among others (pings, window updates); after the first request of an
/// HTTP/2 connection only the idle timeout applies.
///
/// The timer is re-armed only when it fires, never per request: it always fires within
/// `recheck` of its last arming, and any deadline that appears later is at least that far
/// away, so no deadline is missed.
struct TimedStream<S> {
    stream: S,
    sleep: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    /// The longest the timer sleeps: the shorter of the two timeouts.
    recheck: Duration,
    /// When the head being read began (the accept, for the first request), and the
    /// request count then: the head is complete once the count moves.
    head: Option<(Instant, u64)>,

    activity: Arc<Activity>,
    /// For the JSON answer that replaces hyper's own answer to a refused head.
    max_header_bytes: usize,
    /// That answer, and how much of it is written.
    refusal: Option<(Vec<u8>, usize)>,
    /// While closing after an answer sent before the request body was read: until when
    /// the rest of the body is read and dropped, and how much was.
    linger: Option<(Pin<Box<Sleep>>, usize)>,
    /// The connection's place under `max-connections`, held as long as the stream lives
    /// (past the HTTP connection when a tunnel takes the stream over).
    _permit: OwnedSemaphorePermit,
}

/// What a connection's requests are doing, shared between the service and the connection.
struct Activity {
    started: Instant,
    /// Requests started so far.
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request finished.
    quiet_since_ms: AtomicU64,
    /// Whether the connection speaks HTTP/2 (known from its first request).
    http2: AtomicBool,
    /// Whether the request in flight has been read to its end: bytes that arrive after
    /// that are the next (pipelined) request's head.
    body_done: AtomicBool,
    /// Whether the request in flight has a body that was not read to its end (the gateway
    /// answered before it, as with a 413): closing then lingers (see `poll_shutdown`).
    unread_body: AtomicBool,
    /// Whether the last bytes read (between requests, or after the request in flight was
    /// read whole) ended inside a head: part of a pipelined request waits in hyper.
    partial_head: AtomicBool,
    /// Counts the connection as open until the connection is gone (metrics on).
    open: Option<OpenConnection>,
    /// The client's address, for the access log of a refused head.
    client_ip: Arc<str>,
    /// Whether a `101` was answered: the bytes after it are a tunnel's, not HTTP.
    upgraded: AtomicBool,
}

impl Activity {
    fn new(open: Option<OpenConnection>, client_ip: Arc<str>) -> Self {
        Self {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            body_done: AtomicBool::new(false),
            unread_body: AtomicBool::new(false),
            partial_head: AtomicBool::new(false),
            open,
            client_ip,
            upgraded: AtomicBool::new(false),
        }
    }

    /// Whether the connection is a tunnel now.
    fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TimedStream<S> {
    fn new(
        stream: S,
        settings: &ServerConfig,
        activity: Arc<Activity>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let (idle_timeout, header_read_timeout) =
            (settings.idle_timeout, settings.header_read_timeout);
        let recheck = idle_timeout.min(header_read_timeout);
        Self {
            stream,
            sleep: Box::pin(tokio::time::sleep_until(activity.started + recheck)),
            idle_timeout,
            header_read_timeout,
            recheck,
            head: Some((activity.started, 0)),
            activity,
            max_header_bytes: settings.max_header_bytes,
            refusal: None,
            linger: None,
            _permit: permit,
        }
    }

    /// When the head being read began, if no request has started since.
    fn head_began(&self) -> Option<Instant> {
        let (began, requests) = self.head?;
        (self.activity.requests.load(Ordering::Acquire) == requests).then_some(began)
    }

    /// When the head being read began, while no request is in flight.
    fn reading_head(&self) -> Option<Instant> {
        self.head_began()
            .filter(|_| self.activity.in_flight.load(Ordering::Acquire) == 0)
    }

    /// Starts answering with JSON when hyper writes its own answer to a refused head:
    /// nothing else is written while a head is being read.
    fn check_for_refusal(&mut self, bufs: &[std::io::IoSlice<'_>]) {
        if self.refusal.is_some() || self.activity.upgraded() {
            return;
        }
        if let Some(began) = self.reading_head() {
            let written: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            self.refusal = refusal::replacement(
                &written,
                self.max_header_bytes,
                &self.activity.client_ip,
                began.into_std(),
            )
            .map(|answer| (answer, 0));
            if let (Some((answer, _)), Some(open)) = (&self.refusal, &self.activity.open) {
                let listener = open.listener();
                if answer.starts_with(b"HTTP/1.1 431") {
                    listener.head_too_large.inc();
                } else {
                    listener.bad_head.inc();
                }
            }
        }
    }

    /// Writes the JSON answer, if there is one, to its end.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some((answer, written)) = &mut self.refusal else {
            return Poll::Ready(Ok(()));
        };
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Notes the start of a request head when bytes arrive between requests, and whether
    /// the bytes read end inside a head that hyper keeps for later (a pipelined request):
    /// heads end with an empty line, so a read of heads that does not leaves part of the
    /// next one waiting.
    fn received(&mut self, read: &[u8]) {
        let activity = &self.activity;
        if activity.http2.load(Ordering::Relaxed) || activity.upgraded() {
            return;
        }
        let requests = activity.requests.load(Ordering::Acquire);
        let idle = activity.in_flight.load(Ordering::Acquire) == 0;
        if self.head_began().is_none() && idle {
            self.head = Some((Instant::now(), requests));
        }
        if idle || activity.body_done.load(Ordering::Acquire) {
            let partial = !read.ends_with(b"\r\n\r\n");
            activity.partial_head.store(partial, Ordering::Release);
        }
    }

    /// Whether the connection waits for (the rest of) a request head, rather than idles.
    fn waiting_for_head(&self) -> bool {
        self.head_began().is_some()
            || (self.activity.partial_head.load(Ordering::Acquire)
                && !self.activity.http2.load(Ordering::Relaxed))
    }

    /// When the connection is closed unless something happens first; `None` while a
    /// request is in flight.
    fn deadline(&mut self) -> Option<Instant> {
        if let Some(began) = self.head_began() {
            return Some(began + self.header_read_timeout);
        }
        self.head = None;
        if self.activity.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let quiet_since = self.activity.started
            + Duration::from_millis(self.activity.quiet_since_ms.load(Ordering::Acquire));
        if self.activity.partial_head.load(Ordering::Acquire)
            && !self.activity.http2.load(Ordering::Relaxed)
        {
            // Part of the next head came with (or during) the last request: it has had
            // since that request ended to arrive whole.
            return Some(quiet_since + self.header_read_timeout);
        }
        Some(quiet_since + self.idle_timeout)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.received(read);
                }
                Poll::Ready(result)
            }
            // A tunnel's silences are the tunnel's to time.
            Poll::Pending if this.activity.upgraded() => Poll::Pending,
            Poll::Pending => loop {
                ready!(this.sleep.as_mut().poll(cx));
                let now = Instant::now();
                let deadline = this.deadline();
                if deadline.is_some_and(|deadline| now >= deadline) {
                    if let Some(open) = &this.activity.open
                        && this.waiting_for_head()
                    {
                        open.listener().header_timeout.inc();
                    }
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection timed out",
                    )));
                }
                let next = now + this.recheck;
                this.sleep
                    .as_mut()
                    .reset(deadline.map_or(next, |deadline| deadline.min(next)));
            },
        }
    }
}

/// Counts a request as in flight on its connection until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>, version: Version) -> Self {
        if version == Version::HTTP_2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        activity.body_done.store(false, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        let first = activity.requests.fetch_add(1, Ordering::AcqRel) == 0;
        if first && let Some(open) = &activity.open {
            open.identified(if version == Version::HTTP_2 {
                Protocol::Http2
            } else {
                Protocol::Http1
            });
        }
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

/// The response body keeps its request counted as in flight until it is dropped.
impl BodyHook for InFlight {}

/// Notes on the connection that the request in flight has been read to its end.
struct BodyDone(Arc<Activity>);

impl BodyHook for BodyDone {
    fn on_end(&mut self, clean: bool) {
        self.0.body_done.store(true, Ordering::Release);
        if clean {
            self.0.unread_body.store(false, Ordering::Release);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TimedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.check_for_refusal(&[std::io::IoSlice::new(buf)]);
        if this.refusal.is_some() {
            ready!(this.poll_refusal(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.check_for_refusal(bufs);
        if this.refusal.is_some() {
            ready!(this.poll_refusal(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_refusal(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Closes the write side; when the client is still sending a body the gateway did not
    /// read (it answered first, as with a 413), first reads and drops the rest for a while
    /// (nginx's lingering close): closing with unread bytes would reset the connection and
    /// could destroy the answer before the client reads it.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_refusal(cx))?;
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            if !this.activity.unread_body.load(Ordering::Acquire)
                || this.activity.http2.load(Ordering::Relaxed)
                || this.activity.upgraded()
            {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        }
        let Some((deadline, drained)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    *drained += buf.filled().len();
                    if *drained > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                // End of stream or an error: the client is done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}
