//! Connections to one upstream target, for one worker thread: keep-alive HTTP/1.1
//! connections, or shared HTTP/2 connections ([`Multiplexed`]) for an HTTP/2 upstream.
//!
//! An HTTP/1.1 request takes the most recently used idle connection (or opens one), sends, and gets
//! the connection back into the idle list the moment the response body has been read to
//! its end: no task per request and no connection shared between threads. A request that
//! a reused connection closed before writing it (the upstream timed the connection out as
//! it was taken) is sent again on another connection. Idle connections are closed after
//! the idle timeout by a sweeper task that runs only while the list is not empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::limit::ConnectionLimit;
use super::multiplex::{Multiplexed, StreamEnd};
use super::resolve::Addresses;
use crate::body::{Body, BodyHook, Hooked, boxed};
use crate::config::UpstreamProtocol;
use crate::metrics::{ActiveConnection, UpstreamMetrics};
use crate::tls::UpstreamTls;
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// How often an HTTP/2 connection is pinged (while it carries streams or not), and how long
/// an answer may take before the connection is closed as dead.
const H2_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(10));

/// Idle time after which the kernel starts probing an upstream connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection to the target could be opened; nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake with the target failed (for instance, its certificate did not
    /// verify); nothing was sent.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The exchange failed after the connection was opened.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// `max-connections` are open and this many requests already wait for one
    /// (`max-pending-requests`); nothing was sent.
    #[error("{0} requests already wait for a connection")]
    Overflow(usize),
}

/// How a pool keeps connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// How many idle connections are kept (HTTP/1.1).
    pub max_idle: usize,
    /// The HTTP version spoken.
    pub protocol: UpstreamProtocol,
    /// Streams one HTTP/2 connection carries at once.
    pub max_streams: u32,
}

/// How a pool's connections are made.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS over TCP.
    Tls(UpstreamTls),
    /// TLS whose settings could not be put to use (a file changed since the config was
    /// checked): every connection fails with this reason.
    Broken(String),
}

/// The idle connections to one target, for one worker.
pub struct TargetPool {
    authority: Authority,
    transport: Arc<Transport>,
    /// `authority` as a `Host` header value, built once.
    host: Option<HeaderValue>,
    settings: PoolSettings,
    idle: Mutex<Idle>,
    /// The HTTP/2 connections, for an HTTP/2 upstream.
    shared: Multiplexed,
    /// The upstream's connection limit, if it has one.
    limit: Option<Arc<ConnectionLimit>>,
    /// What a hostname target resolved to last (shared by the target's pools).
    addresses: Option<Arc<Addresses>>,
    /// Told each time a connection comes back idle (a request waiting for one may take it).
    returned: Notify,
    metrics: Option<UpstreamMetrics>,
}

/// Where a request that found no idle connection gets one.
enum Capacity<S> {
    /// A connection that came back while it waited.
    Idle(S),
    /// Room for a new connection, with its permit when the upstream limits connections.
    New(Option<OwnedSemaphorePermit>),
}

/// A connected stream, before HTTP starts on it.
enum Opened {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

#[derive(Default)]
struct Idle {
    /// Oldest first; each with the time it became idle.
    connections: VecDeque<(SendRequest<Body>, Instant)>,
    sweeping: bool,
    /// How many idle connections the metrics count for this pool.
    counted: usize,
}

impl Idle {
    /// Brings the idle-connections gauge up to date after the list changed.
    fn sync(&mut self, metrics: Option<&UpstreamMetrics>) {
        let now = self.connections.len();
        if let Some(metrics) = metrics
            && now != self.counted
        {
            metrics.idle.inc_by(now as i64 - self.counted as i64);
            self.counted = now;
        }
    }

    fn evict_expired(&mut self, idle_timeout: Duration, now: Instant) {
        while self
            .connections
            .front()
            .is_some_and(|(sender, since)| now - *since >= idle_timeout || sender.is_closed())
        {
            self.connections.pop_front();
        }
    }
}

impl TargetPool {
    /// An empty pool for `authority`, counting its connections in `metrics` when given.
    pub fn new(
        authority: Authority,
        transport: Arc<Transport>,
        settings: PoolSettings,
        limit: Option<Arc<ConnectionLimit>>,
        addresses: Option<Arc<Addresses>>,
        metrics: Option<UpstreamMetrics>,
    ) -> Self {
        Self {
            host: HeaderValue::from_str(authority.as_str()).ok(),
            authority,
            transport,
            shared: Multiplexed::new(settings.max_streams, settings.idle_timeout),
            settings,
            idle: Mutex::new(Idle::default()),
            limit,
            addresses,
            returned: Notify::new(),
            metrics,
        }
    }

    /// The target.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The target as a `Host` header value.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// Sends `request` (origin-form URI, `Host` set) and returns the response head; the
    /// connection goes back to the pool when the response body ends.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        if self.settings.protocol.is_http2() {
            return self.send_http2(request).await;
        }
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => match self.capacity(&self.returned, || self.take_idle()).await? {
                    Capacity::Idle(sender) => (sender, true),
                    Capacity::New(permit) => (self.connect(permit, false).await?, false),
                },
            };
            let active = self
                .metrics
                .as_ref()
                .map(|m| ActiveConnection::new(&m.active));
            // A kept connection may still be finishing its previous exchange, or may have
            // been closed by the upstream meanwhile.
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.track(sender, response, active)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Http(error.into_error())),
                },
            }
        }
    }

    /// Sends `request` on a stream of a shared HTTP/2 connection. The `Host` header becomes
    /// the `:authority`; a request that a closing connection refused before taking it is sent
    /// again on another.
    async fn send_http2(&self, mut request: Request<Body>) -> Result<Response<Body>, SendError> {
        let host = request.headers_mut().remove(header::HOST);
        let authority = host
            .as_ref()
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<Authority>().ok())
            .unwrap_or_else(|| self.authority.clone());
        let scheme = match *self.transport {
            Transport::Plain => Scheme::HTTP,
            _ => Scheme::HTTPS,
        };
        let mut uri = std::mem::take(request.uri_mut()).into_parts();
        uri.scheme = Some(scheme);
        uri.authority = Some(authority);
        *request.uri_mut() = Uri::from_parts(uri).map_err(|e| {
            SendError::Connect(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })?;
        *request.version_mut() = Version::HTTP_2;
        loop {
            let (mut sender, stream, reused) = match self.shared.take() {
                Some((sender, stream)) => (sender, stream, true),
                None => match self
                    .capacity(&self.shared.freed, || self.shared.take())
                    .await?
                {
                    Capacity::Idle((sender, stream)) => (sender, stream, true),
                    Capacity::New(permit) => {
                        let sender = self.connect_http2(permit).await?;
                        let (sender, stream) = self.shared.add(sender);
                        (sender, stream, false)
                    }
                },
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(
                        response.map(|body| boxed(Hooked::new(body, StreamEnd(Some(stream)))))
                    );
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Http(error.into_error())),
                },
            }
        }
    }

    /// Room for a new connection, or (when the upstream's connection limit is reached) the
    /// first of a connection of this pool coming back (`returned` tells, `take` takes it)
    /// and a permit freeing up; refused when too many requests already wait.
    async fn capacity<S>(
        &self,
        returned: &Notify,
        take: impl Fn() -> Option<S>,
    ) -> Result<Capacity<S>, SendError> {
        let Some(limit) = &self.limit else {
            return Ok(Capacity::New(None));
        };
        if let Some(permit) = limit.try_open() {
            return Ok(Capacity::New(Some(permit)));
        }
        let _waiting = limit.wait().map_err(SendError::Overflow)?;
        // An idle connection anywhere (another worker's pool, another target) holds a
        // permit this request can use once it is closed.
        limit.reclaim();
        loop {
            tokio::select! {
                permit = limit.open() => return Ok(Capacity::New(Some(permit))),
                () = returned.notified() => {
                    if let Some(back) = take() {
                        return Ok(Capacity::Idle(back));
                    }
                }
                () = limit.idle.notified() => {
                    limit.reclaim();
                }
            }
        }
    }

    /// Closes the oldest idle connection (or an HTTP/2 connection without streams); false
    /// when there is none.
    pub fn close_idle(&self) -> bool {
        if self.settings.protocol.is_http2() {
            return self.shared.close_unused();
        }
        let mut idle = self.lock();
        let closed = idle.connections.pop_front().is_some();
        idle.sync(self.metrics.as_ref());
        closed
    }

    /// Opens a connection (and its TLS session) and closes it: whether the target takes
    /// connections.
    pub async fn connects(&self) -> Result<(), SendError> {
        self.open().await.map(drop)
    }

    /// Opens a TCP connection (and TLS over it) within the connect timeout.
    async fn open(&self) -> Result<Opened, SendError> {
        let resolved = self.addresses.as_ref().and_then(|a| a.next());
        let connect = async {
            match resolved {
                Some(address) => TcpStream::connect(address).await,
                None => TcpStream::connect(self.authority.as_str()).await,
            }
        };
        let stream = tokio::time::timeout(self.settings.connect_timeout, connect)
            .await
            .map_err(|_| {
                SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {} ms",
                        self.settings.connect_timeout.as_millis()
                    ),
                ))
            })?
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        // Probe a silent upstream so a dead peer under a long stream is noticed.
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        match &*self.transport {
            Transport::Plain => Ok(Opened::Plain(stream)),
            Transport::Tls(tls) => {
                let secured = tokio::time::timeout(
                    self.settings.connect_timeout,
                    tls.connect(&self.authority, stream),
                )
                .await
                .map_err(|_| {
                    SendError::Tls(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no TLS handshake within {} ms",
                            self.settings.connect_timeout.as_millis()
                        ),
                    ))
                })?
                .map_err(SendError::Tls)?;
                Ok(Opened::Tls(Box::new(secured)))
            }
            Transport::Broken(reason) => Err(SendError::Tls(std::io::Error::other(reason.clone()))),
        }
    }

    /// Opens a connection of its own (never pooled, HTTP/1.1 whatever the upstream's
    /// protocol) for an `Upgrade` handshake: plain or TLS as the pool's, driven on the current
    /// runtime, able to switch protocols. It does not count under `max-connections`.
    pub async fn connect_unpooled(&self) -> Result<SendRequest<Body>, SendError> {
        self.connect(None, true).await
    }

    /// Opens an HTTP/1.1 connection and starts driving it on the current runtime; it holds
    /// `permit` (of the upstream's connection limit) while open, and may switch protocols
    /// when `upgrades`.
    async fn connect(
        &self,
        permit: Option<OwnedSemaphorePermit>,
        upgrades: bool,
    ) -> Result<SendRequest<Body>, SendError> {
        match self.open().await? {
            Opened::Plain(stream) => self.handshake(stream, permit, upgrades).await,
            Opened::Tls(stream) => self.handshake(stream, permit, upgrades).await,
        }
    }

    /// Starts HTTP/1.1 on a connected stream and drives it on the current runtime.
    async fn handshake<S>(
        &self,
        stream: S,
        permit: Option<OwnedSemaphorePermit>,
        upgrades: bool,
    ) -> Result<SendRequest<Body>, SendError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            // A connection that may switch protocols hands its stream over instead of ending.
            // Only unpooled connections are driven so: a pooled one must close (and say so
            // to the pool) as soon as the upstream closes it.
            let ended = if upgrades {
                connection.with_upgrades().await
            } else {
                connection.await
            };
            if let Err(error) = ended {
                tracing::debug!(address = %authority, %error, "upstream connection ended with an error");
            }
            drop(permit);
        });
        Ok(sender)
    }

    /// Opens an HTTP/2 connection (a TLS target must agree to `h2` by ALPN) and drives it on
    /// the current runtime; it counts as active while open.
    async fn connect_http2(
        &self,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<http2::SendRequest<Body>, SendError> {
        match self.open().await? {
            Opened::Plain(stream) => self.handshake_http2(stream, permit).await,
            Opened::Tls(stream) => {
                if stream.get_ref().1.alpn_protocol() != Some(crate::tls::ALPN_H2) {
                    return Err(SendError::Tls(std::io::Error::other(
                        "the target did not agree to HTTP/2 (ALPN `h2`); set `protocol = \"http1\"` for this upstream",
                    )));
                }
                self.handshake_http2(*stream, permit).await
            }
        }
    }

    async fn handshake_http2<S>(
        &self,
        stream: S,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<http2::SendRequest<Body>, SendError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(H2_KEEPALIVE.0)
            .keep_alive_timeout(H2_KEEPALIVE.1)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await?;
        let authority = self.authority.clone();
        let active = self
            .metrics
            .as_ref()
            .map(|m| ActiveConnection::new(&m.active));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(address = %authority, %error, "upstream HTTP/2 connection ended with an error");
            }
            drop((active, permit));
        });
        Ok(sender)
    }

    /// The most recently used idle connection that is still open (the sweeper closes
    /// expired ones).
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let mut taken = None;
        while let Some((sender, _)) = idle.connections.pop_back() {
            if !sender.is_closed() {
                taken = Some(sender);
                break;
            }
        }
        idle.sync(self.metrics.as_ref());
        taken
    }

    /// Keeps `sender` for the next request, dropping (closing) the oldest idle connection
    /// when the pool is full.
    fn put(self: &Arc<Self>, sender: SendRequest<Body>) {
        if sender.is_closed() || self.settings.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        idle.evict_expired(self.settings.idle_timeout, now);
        if idle.connections.len() >= self.settings.max_idle {
            idle.connections.pop_front();
        }
        idle.connections.push_back((sender, now));
        idle.sync(self.metrics.as_ref());
        if let Some(limit) = &self.limit {
            self.returned.notify_one();
            // A request waiting in another pool may close it to open its own.
            if limit.has_waiting() {
                limit.idle.notify_waiters();
            }
        }
        if !idle.sweeping && tokio::runtime::Handle::try_current().is_ok() {
            idle.sweeping = true;
            tokio::spawn(sweep(self.clone()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The response with a body that returns `sender` to the pool once it has ended.
    fn track(
        self: &Arc<Self>,
        sender: SendRequest<Body>,
        response: Response<Incoming>,
        active: Option<ActiveConnection>,
    ) -> Response<Body> {
        if http_body::Body::is_end_stream(response.body()) {
            drop(active);
            self.put(sender);
            return response.map(boxed);
        }
        let pool = self.clone();
        response.map(|inner| boxed(Hooked::new(inner, Release(Some((pool, sender, active))))))
    }
}

/// Closes each idle connection when it reaches the idle timeout, until the list is empty.
async fn sweep(pool: Arc<TargetPool>) {
    let idle_timeout = pool.settings.idle_timeout;
    let mut wake = Instant::now() + idle_timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        let mut idle = pool.lock();
        idle.evict_expired(idle_timeout, Instant::now());
        idle.sync(pool.metrics.as_ref());
        match idle.connections.front() {
            Some((_, since)) => wake = *since + idle_timeout,
            None => {
                idle.sweeping = false;
                return;
            }
        }
    }
}

/// Gives an upstream connection back when its response body ends cleanly; dropped before
/// its end (or after an error), the body takes the connection with it: it cannot carry
/// another request.
struct Release(Option<(Arc<TargetPool>, SendRequest<Body>, Option<ActiveConnection>)>);

impl BodyHook for Release {
    fn on_end(&mut self, clean: bool) {
        if let Some((pool, sender, active)) = self.0.take() {
            drop(active);
            if clean {
                pool.put(sender);
            }
        }
    }
}

impl Drop for TargetPool {
    fn drop(&mut self) {
        // Its idle connections close with it.
        if let Some(metrics) = &self.metrics {
            let idle = self.lock();
            metrics.idle.dec_by(idle.counted as i64);
        }
    }
}
