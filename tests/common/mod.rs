//! The black-box test harness: a real `wasmgate` process, real hyper upstreams on loopback,
//! and clients to talk to them.
//!
//! - [`TestUpstream`] is an HTTP/1.1 server on `127.0.0.1:0` running a handler (see
//!   [`handler`] for ready-made ones) on its own small tokio runtime. It counts requests and
//!   accepted connections.
//! - [`TestGateway`] writes a config into a fresh temporary directory, spawns
//!   `wasmgate run` on it and finds the port it bound from its JSON logs.
//!   [`check`] runs `wasmgate check` instead.
//! - [`client`], [`h2_client`], [`get`], [`send`] and [`Reply`] talk HTTP to either;
//!   [`RawResponse`] reads answers off a raw [`std::net::TcpStream`] for tests that must
//!   control the bytes on the wire.
//! - [`GeneratedBody`] and [`drain`] produce and consume large bodies on the fly, with a
//!   byte pattern that lets the receiver check nothing was lost, duplicated or reordered.
//! - [`tools_python`] is the venv Python the PyPI test peers (grpcio, websockets) run on.
//!
//! Every wait is bounded; nothing here uses a fixed port.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub mod redis;

/// The path of the `wasmgate` binary under test.
pub const WASMGATE: &str = env!("CARGO_BIN_EXE_wasmgate");

/// The binary [`TestGateway`] and [`check`] run: `$WASMGATE_BIN` when set, else
/// [`WASMGATE`]. Checkouts that share one target directory overwrite each other's
/// `target/debug/wasmgate`; the variable pins a copy of the build under test.
pub fn wasmgate_bin() -> String {
    std::env::var("WASMGATE_BIN").unwrap_or_else(|_| WASMGATE.to_string())
}

/// How long [`TestGateway::start`] waits for the `listening` log line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Any error a body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the harness builds.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body holding `bytes`, sent with a `Content-Length`.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Polls `condition` every 10ms until it holds; `false` if `timeout` passes first.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`wait_until`], for async tests: polls every 10ms without blocking the runtime.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === Temporary directories ===

/// A fresh directory under cargo's per-target temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty, uniquely named directory.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "wasmgate-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// === Generated bodies ===

/// Byte `i` of every generated body is `PATTERN[i % PERIOD]`; a prime period makes a lost,
/// doubled or reordered chunk show up.
const PERIOD: usize = 251;
/// Bytes per frame of a [`GeneratedBody`].
const CHUNK: usize = 64 << 10;

fn pattern_source() -> Bytes {
    static SOURCE: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    SOURCE
        .get_or_init(|| {
            (0..CHUNK + PERIOD)
                .map(|i| (i % PERIOD) as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .clone()
}

/// A body of `len` pattern bytes made on the fly in 64 KiB frames; never held in memory whole.
pub struct GeneratedBody {
    source: Bytes,
    sent: u64,
    len: u64,
    exact_size: bool,
}

impl GeneratedBody {
    /// `len` bytes announced up front (sent with `Content-Length`).
    pub fn new(len: u64) -> Self {
        Self {
            source: pattern_source(),
            sent: 0,
            len,
            exact_size: true,
        }
    }

    /// `len` bytes of unannounced length (sent with `Transfer-Encoding: chunked` over HTTP/1.1).
    pub fn chunked(len: u64) -> Self {
        Self {
            exact_size: false,
            ..Self::new(len)
        }
    }

    /// Boxed, for a request or response.
    pub fn boxed(self) -> BoxBody {
        BodyExt::boxed(self)
    }
}

impl hyper::body::Body for GeneratedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let left = self.len - self.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let size = left.min(CHUNK as u64) as usize;
        let start = (self.sent % PERIOD as u64) as usize;
        let chunk = self.source.slice(start..start + size);
        self.sent += size as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_size {
            SizeHint::with_exact(self.len - self.sent)
        } else {
            SizeHint::default()
        }
    }
}

/// What [`drain`] saw of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Data bytes received.
    pub bytes: u64,
    /// Whether every byte matched the [`GeneratedBody`] pattern.
    pub pattern_ok: bool,
}

/// Reads a body to its end frame by frame, counting bytes and checking them against the
/// [`GeneratedBody`] pattern, without keeping them.
pub async fn drain<B>(body: B) -> Result<Drained, B::Error>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut drained = Drained {
        bytes: 0,
        pattern_ok: true,
    };
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if drained.pattern_ok {
                let offset = drained.bytes as usize;
                drained.pattern_ok = data
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == ((offset + i) % PERIOD) as u8);
            }
            drained.bytes += data.len() as u64;
        }
    }
    Ok(drained)
}

// === Upstreams ===

/// A loopback HTTP/1.1 upstream (keep-alive on) that answers with a handler.
///
/// It runs on its own tokio runtime, so it keeps serving while a test blocks its thread (on a
/// raw socket, a child process or a sleep), and works from sync and async tests alike.
pub struct TestUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestUpstream {
    /// Starts serving `handler` on `127.0.0.1:0`.
    ///
    /// `handler` is any `Fn(Request<Incoming>) -> impl Future<Output = Response<BoxBody>>`:
    /// an `async fn` such as [`handler::echo`], a ready-made handler such as
    /// [`handler::fixed`], or a closure `|request| async move { … }`.
    pub fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-upstream")
            .enable_all()
            .build()
            .expect("building the upstream runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an upstream");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("upstream address");
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (requests_seen, connections_seen) = (requests.clone(), connections.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections_seen.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let requests_seen = requests_seen.clone();
                let service = service_fn(move |request| {
                    requests_seen.fetch_add(1, Ordering::SeqCst);
                    let response = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            connections,
            runtime: Some(runtime),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (counted when the head arrives, before the handler runs).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far; with keep-alive reuse this stays well below
    /// [`requests`](Self::requests).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An address on loopback where nothing listens (a port just bound and released), for
/// "upstream down" cases.
pub fn closed_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    listener.local_addr().expect("probe address")
}

/// Ready-made upstream handlers for [`TestUpstream::start`].
pub mod handler {
    use std::future::Future;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode, header};
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use serde_json::json;

    use super::{BoxBody, GeneratedBody, drain, full};

    /// Answers 200 with JSON describing the request as received:
    ///
    /// ```json
    /// {"method": "GET", "path": "/a", "query": "x=1" | null, "version": "HTTP/1.1",
    ///  "headers": {"name": "value", …}, "body": "…"}
    /// ```
    ///
    /// Header names are lower-case; a header sent several times is joined with `", "`.
    /// The body is read whole (keep echo bodies small) and given as UTF-8 (lossy).
    pub async fn echo(request: Request<Incoming>) -> Response<BoxBody> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut headers = serde_json::Map::new();
        for name in parts.headers.keys() {
            let values: Vec<String> = parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            headers.insert(name.to_string(), values.join(", ").into());
        }
        let description = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        json_response(StatusCode::OK, &description)
    }

    /// Always answers `status` with `body` (as `text/plain`).
    pub fn fixed(
        status: u16,
        body: &'static str,
    ) -> impl Fn(Request<Incoming>) -> std::future::Ready<Response<BoxBody>> + Send + Sync + 'static
    {
        move |_request| {
            let mut response = Response::new(full(body));
            *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                "text/plain".parse().expect("static value"),
            );
            std::future::ready(response)
        }
    }

    /// Waits `delay`, then answers like [`echo`].
    pub fn slow(
        delay: Duration,
    ) -> impl Fn(
        Request<Incoming>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>
    + Send
    + Sync
    + 'static {
        move |request| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                echo(request).await
            })
        }
    }

    /// Answers 200 with `len` bytes of the [`GeneratedBody`] pattern, made on the fly and sent
    /// with a `Content-Length`.
    pub fn huge(
        len: u64,
    ) -> impl Fn(Request<Incoming>) -> std::future::Ready<Response<BoxBody>> + Send + Sync + 'static
    {
        move |_request| std::future::ready(Response::new(GeneratedBody::new(len).boxed()))
    }

    /// Reads the request body to its end without keeping it and answers 200 with
    /// `{"bytes": N, "pattern_ok": bool}` (whether it matched the [`GeneratedBody`] pattern).
    /// A body that fails midway answers 400 with `{"error": "..."}`.
    pub async fn sink(request: Request<Incoming>) -> Response<BoxBody> {
        match drain(request.into_body()).await {
            Ok(seen) => json_response(
                StatusCode::OK,
                &json!({"bytes": seen.bytes, "pattern_ok": seen.pattern_ok}),
            ),
            Err(error) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": error.to_string()}),
            ),
        }
    }

    /// A response with a JSON body.
    pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<BoxBody> {
        let mut response = Response::new(full(Bytes::from(value.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("static value"),
        );
        response
    }
}

// === The gateway process ===

/// A running `wasmgate run` process, with its config in a temporary directory.
///
/// The directory holds `gateway.toml` and `plugins/` (where [`start_with_plugins`] copies
/// plugins as `NAME.wasm`). Stderr (JSON logs) is read continuously into a buffer, so the
/// pipe never fills; [`logs`](Self::logs) returns what was written so far. Dropping it kills
/// the process.
///
/// [`start_with_plugins`]: Self::start_with_plugins
pub struct TestGateway {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    dir: TempDir,
}

impl TestGateway {
    /// Writes `config_toml` as `gateway.toml` in a fresh directory and starts the gateway on
    /// it, returning once it listens. See [`start_with_plugins`](Self::start_with_plugins).
    pub fn start(config_toml: &str) -> Self {
        Self::start_with_plugins(config_toml, &[])
    }

    /// Like [`start`](Self::start), first copying each `(name, wasm_path)` to
    /// `plugins/NAME.wasm` next to the config (the default `[plugins] dir` is `"plugins"`,
    /// relative to the config file).
    ///
    /// The gateway must listen on `127.0.0.1:0`: when the config has no `[server]` table or
    /// no `listen` key in it, `listen = ["127.0.0.1:0"]` is added; an explicit `listen`
    /// is left alone. The process runs `wasmgate run --config FILE --log-format json` with
    /// `RUST_LOG=info` (unless the test's environment sets `RUST_LOG`); the bound address is
    /// taken from the `listening` log line. Panics, with the logs, if the process exits or
    /// does not listen within a minute.
    ///
    /// Blocking: call it before any async work, or from `spawn_blocking`.
    pub fn start_with_plugins(config_toml: &str, plugins: &[(&str, &Path)]) -> Self {
        Self::start_with_log_format(config_toml, plugins, "json")
    }

    /// Like [`start_with_plugins`](Self::start_with_plugins), with `--log-format
    /// log_format` (`json` or `pretty`).
    pub fn start_with_log_format(
        config_toml: &str,
        plugins: &[(&str, &Path)],
        log_format: &str,
    ) -> Self {
        let dir = TempDir::new();
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).expect("creating the plugin dir");
        for (name, wasm) in plugins {
            std::fs::copy(wasm, plugin_dir.join(format!("{name}.wasm")))
                .unwrap_or_else(|e| panic!("copying plugin {name} from {}: {e}", wasm.display()));
        }
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, with_ephemeral_listen(config_toml))
            .expect("writing the config");
        let mut child = Command::new(wasmgate_bin())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(["--log-format", log_format])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning wasmgate");
        let logs = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut logs = sink.lock().expect("log buffer");
                    logs.push_str(&line);
                    logs.push('\n');
                }
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            match addr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(50));
                    panic!(
                        "wasmgate exited ({status:?}) before listening; logs:\n{}",
                        logs.lock().expect("log buffer")
                    );
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "wasmgate exited ({status}) before listening; logs:\n{}",
                    logs.lock().expect("log buffer")
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "wasmgate did not listen within {START_TIMEOUT:?}; logs:\n{}",
                    logs.lock().expect("log buffer")
                );
            }
        };
        Self {
            child,
            addr,
            logs,
            dir,
        }
    }

    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// The temporary directory holding `gateway.toml` and `plugins/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the gateway was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    /// The plugin directory (`plugins/` next to the config).
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Everything the gateway wrote to stderr so far: one JSON object per line.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("log buffer").clone()
    }

    /// The log lines so far, parsed (lines that are not JSON are skipped).
    pub fn log_records(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The admin API's address, from the gateway's `admin API listening` log line (the
    /// config must have `[admin] listen = "127.0.0.1:0"`).
    pub fn admin_addr(&self) -> SocketAddr {
        let is_listening = |r: &serde_json::Value| {
            r["fields"]["message"] == "admin API listening" || r["message"] == "admin API listening"
        };
        let found = wait_until(Duration::from_secs(10), || {
            self.log_records().iter().any(is_listening)
        });
        assert!(found, "no admin listening line; logs:\n{}", self.logs());
        self.log_records()
            .iter()
            .find(|r| is_listening(r))
            .and_then(|r| {
                r["addr"]
                    .as_str()
                    .or(r["fields"]["addr"].as_str())
                    .map(str::to_string)
            })
            .expect("addr field")
            .parse()
            .expect("a socket address")
    }

    /// Waits until a log line contains `needle`; `false` after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.logs().contains(needle))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid()).expect("reading VmRSS of the gateway")
    }

    /// Starts sampling the gateway's RSS every 10ms on a thread; see [`RssSampler`].
    pub fn sample_rss(&self) -> RssSampler {
        RssSampler::start(self.pid())
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn signal_term(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit; panics, with the logs, after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the gateway") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "wasmgate did not exit within {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`); `None`
/// once it is gone.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS every 10ms on a background thread and keeps the peak.
pub struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<RssStats>>,
}

/// What an [`RssSampler`] saw, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct RssStats {
    /// The first sample.
    pub first_kib: u64,
    /// The highest sample.
    pub peak_kib: u64,
    /// The last sample.
    pub last_kib: u64,
    /// How many samples were taken.
    pub samples: usize,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let first = rss_kib_of(pid).unwrap_or(0);
            let mut stats = RssStats {
                first_kib: first,
                peak_kib: first,
                last_kib: first,
                samples: 1,
            };
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                let Some(now) = rss_kib_of(pid) else { break };
                stats.peak_kib = stats.peak_kib.max(now);
                stats.last_kib = now;
                stats.samples += 1;
            }
            stats
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling (after one last sample) and returns what was seen.
    pub fn stop(mut self) -> RssStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("not yet stopped")
            .join()
            .expect("the sampler thread")
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `addr` of a `{"message": "listening", "addr": "…"}` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.starts_with('{') {
        // The pretty format: `… INFO wasmgate: listening addr=127.0.0.1:PORT workers=…`.
        let rest = line.split_once(" listening addr=")?.1;
        return rest.split_whitespace().next()?.parse().ok();
    }
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = record.get("fields").unwrap_or(&record);
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// Makes sure the config listens on `127.0.0.1:0` unless it names its own `listen`.
fn with_ephemeral_listen(config: &str) -> String {
    const LISTEN: &str = "listen = [\"127.0.0.1:0\"]";
    let lines: Vec<&str> = config.lines().collect();
    let Some(server) = lines.iter().position(|line| line.trim() == "[server]") else {
        return format!("[server]\n{LISTEN}\n\n{config}");
    };
    let section_end = lines[server + 1..]
        .iter()
        .position(|line| line.trim_start().starts_with('['))
        .map_or(lines.len(), |i| server + 1 + i);
    let has_listen = lines[server + 1..section_end].iter().any(|line| {
        line.trim_start().starts_with("listen ") || line.trim_start().starts_with("listen=")
    });
    if has_listen {
        return config.to_string();
    }
    let mut out: Vec<&str> = lines[..=server].to_vec();
    out.push(LISTEN);
    out.extend(&lines[server + 1..]);
    out.join("\n") + "\n"
}

/// What `wasmgate check` printed and how it exited.
#[derive(Debug)]
pub struct CheckOutput {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The config file that was checked (in a directory that is gone by now); handy for
    /// normalising paths in the output.
    pub path: PathBuf,
}

/// Runs `wasmgate check` on `config_toml`, written as `gateway.toml` in a fresh directory
/// with an empty `plugins/` next to it.
pub fn check(config_toml: &str) -> CheckOutput {
    check_as("gateway.toml", config_toml, &[])
}

/// Runs `wasmgate check` on `config_toml` written as `file_name`, with plugins copied in
/// as for [`TestGateway::start_with_plugins`]. Gives up (panics) after a minute.
pub fn check_as(file_name: &str, config_toml: &str, plugins: &[(&str, &Path)]) -> CheckOutput {
    check_with_files(file_name, config_toml, plugins, &[])
}

/// Like [`check_as`], with more files written next to the config first: `(name, text)`,
/// such as the `.proto` files a `transcode` route compiles.
pub fn check_with_files(
    file_name: &str,
    config_toml: &str,
    plugins: &[(&str, &Path)],
    files: &[(&str, &str)],
) -> CheckOutput {
    let dir = TempDir::new();
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir_all(&plugin_dir).expect("creating the plugin dir");
    for (name, wasm) in plugins {
        std::fs::copy(wasm, plugin_dir.join(format!("{name}.wasm"))).expect("copying a plugin");
    }
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("writing a file next to the config");
    }
    let path = dir.path().join(file_name);
    std::fs::write(&path, config_toml).expect("writing the config");
    let mut child = Command::new(wasmgate_bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning wasmgate check");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling wasmgate check") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("wasmgate check did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CheckOutput {
        code: status.code(),
        stdout: out_thread.join().expect("stdout reader"),
        stderr: err_thread.join().expect("stderr reader"),
        path,
    }
}

// === Clients ===

/// An HTTP/1.1 client with a keep-alive pool (connections are reused between requests).
pub fn client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client speaking prior knowledge (h2c, no upgrade) over plain TCP.
pub fn h2_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// The protocol version the response came over.
    pub version: http::Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} (status {})",
                self.text(),
                self.status
            )
        })
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text (the first one, if sent several times).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, as text.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// Sends `request` with `client` and reads the whole response; panics on a transport error
/// or after 30 seconds.
pub async fn send(client: &Client<HttpConnector, BoxBody>, request: Request<BoxBody>) -> Reply {
    let what = format!("{} {}", request.method(), request.uri());
    let exchange = async {
        let response = client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"))
            .to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no complete answer within 30s"))
}

/// `GET url` with a fresh HTTP/1.1 client.
pub async fn get(url: &str) -> Reply {
    send(
        &client(),
        Request::get(url).body(empty()).expect("a valid request"),
    )
    .await
}

/// `method url` with `headers` and `body`, ready for [`send`].
pub fn request(
    method: &str,
    url: &str,
    header_pairs: &[(&str, &str)],
    body: BoxBody,
) -> Request<BoxBody> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in header_pairs {
        builder = builder.header(*name, *value);
    }
    builder.body(body).expect("a valid request")
}

// === Raw sockets ===

/// A response read off a raw socket: status, headers (names lower-cased) and the body,
/// framed by `Content-Length`, chunked encoding, or the end of the connection.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Reads one response from `stream` (which should have a read timeout set). It may read
    /// past the end of the response, so send the next request only after reading this one
    /// (no pipelining).
    pub fn read_from(stream: &mut TcpStream) -> std::io::Result<Self> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(length) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..])?;
                line.clear();
                reader.read_line(&mut line)?;
                if size == 0 {
                    break;
                }
            }
        } else if status != 204 && status != 304 {
            reader.read_to_end(&mut body)?;
        }
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    /// A header's value (the first, if sent several times).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Connects to `addr` with 5-second read and write timeouts.
pub fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream
}

/// Writes `request` (raw bytes) on a new connection and reads one response.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = raw_connect(addr);
    stream.write_all(request).expect("writing the request");
    RawResponse::read_from(&mut stream).expect("reading the response")
}

/// Waits up to `timeout` for the peer to close `stream` (EOF or reset), discarding anything
/// it sends. Returns how long it took, or `None` if it stayed open.
pub fn time_until_closed(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = timeout.checked_sub(started.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if started.elapsed() >= timeout {
                    return None;
                }
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

// === nginx, the reference peer ===

/// nginx (from Debian's packages) on a free loopback port, stopped on drop.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx with `http` (directives of its `http` block, e.g. `gzip on;`) and
    /// `locations` (its server's `location` blocks); `None` when nginx is not installed —
    /// callers fail in CI (`CI` is set there), where `scripts/test.sh` installs it.
    pub fn start(http: &str, locations: &str) -> Option<Self> {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {dir}; proxy_temp_path {dir};\n\
             fastcgi_temp_path {dir}; uwsgi_temp_path {dir}; scgi_temp_path {dir};\n{http}\n\
             server {{\n  listen 127.0.0.1:{port};\n{locations}\n }}\n}}\n",
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let nginx = Self {
            child,
            addr,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok());
        assert!(up, "nginx did not start");
        Some(nginx)
    }
}

/// The Python of the test-tools venv (`${WASMGATE_TOOLS:-~/.cache/wasmgate-tools}/venv`),
/// which must import `modules`; panics, saying how to install `packages` (pip requirement
/// specs), when it cannot. `scripts/test.sh` installs every Python test peer there.
pub fn tools_python(modules: &str, packages: &str) -> PathBuf {
    let tools = std::env::var_os("WASMGATE_TOOLS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/wasmgate-tools")
        },
        PathBuf::from,
    );
    let python = tools.join("venv/bin/python");
    let importable = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        importable,
        "{} cannot import {modules}: run scripts/test.sh, or `{} -m pip install {packages}`",
        python.display(),
        python.display()
    );
    python
}
