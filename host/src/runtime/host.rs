//! What a plugin instance may reach: the store data behind the host imports, the memory
//! limiter, and a WASI context with no authority (built only if the guest touches WASI).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{connection, counters, host, kv, limiter, metrics, trace, types};
use crate::custom_metrics::{CustomMetrics, Definition, Kind};
use crate::state::{Op, Outcome, SharedState};
use crate::text::escape_control;
use crate::tls::TlsSession;

/// Request variables a single request may hold.
pub const MAX_VARS: usize = 64;
const MAX_VAR_NAME: usize = 64;
const MAX_VAR_VALUE: usize = 4096;
/// Guest log lines per plugin per second before lines are dropped.
const LOG_LINES_PER_SECOND: u64 = 50;
/// Bytes of one guest log line kept.
const MAX_LOG_LINE: usize = 2048;

/// The data of one plugin call's `Store`.
pub struct StageState {
    /// Who is running: plugin and route, for logs and counter namespaces.
    pub(crate) identity: Arc<CallerInfo>,
    /// The stage's config as JSON.
    pub(crate) config_json: Arc<str>,
    /// Request variables: those the request already had, plus those set by this call.
    pub(crate) vars: Vec<(String, String)>,
    /// The trace context of this call, when the request is traced.
    pub(crate) span: Option<trace::SpanContext>,
    pub(crate) limiter: MemoryLimiter,
    /// The TLS session the request came over (`connection` interface); `None` for plain
    /// connections and config validation.
    pub(crate) tls: Option<Arc<TlsSession>>,
    state: Arc<dyn SharedState>,
    wasi: Option<Box<(WasiCtx, ResourceTable)>>,
}

/// The plugin and route a call runs for.
#[derive(Debug)]
pub struct CallerInfo {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Route name (empty while validating config).
    pub route: Arc<str>,
    /// Shared per-plugin log budget.
    pub log_budget: Arc<LogBudget>,
    /// Where errors of the counter store are counted (with metrics on).
    pub counter_errors: Option<prometheus_client::metrics::counter::Counter>,
    /// Where the plugin's own metrics go (with metrics on).
    pub custom_metrics: Option<Arc<CustomMetrics>>,
}

impl StageState {
    pub(crate) fn new(
        identity: Arc<CallerInfo>,
        config_json: Arc<str>,
        vars: Vec<(String, String)>,
        span: Option<trace::SpanContext>,
        memory_bytes: u64,
        state: Arc<dyn SharedState>,
        tls: Option<Arc<TlsSession>>,
    ) -> Self {
        Self {
            identity,
            config_json,
            vars,
            span,
            limiter: MemoryLimiter {
                max_bytes: memory_bytes as usize,
                hit_cap: false,
                held_bytes: 0,
            },
            tls,
            state,
            wasi: None,
        }
    }
}

impl StageState {
    /// Prepares a reused store for its next call: that request's variables, trace context
    /// and connection, and no leftovers from the previous call.
    pub(crate) fn begin_call(
        &mut self,
        vars: Vec<(String, String)>,
        span: Option<trace::SpanContext>,
        tls: Option<Arc<TlsSession>>,
    ) {
        self.vars = vars;
        self.span = span;
        self.tls = tls;
        self.limiter.hit_cap = false;
    }
}

impl WasiView for StageState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let identity = self.identity.clone();
        let wasi = self.wasi.get_or_insert_with(|| {
            let ctx = WasiCtx::builder()
                .stdout(GuestOutput {
                    caller: identity.clone(),
                    stream: "stdout",
                })
                .stderr(GuestOutput {
                    caller: identity,
                    stream: "stderr",
                })
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build();
            Box::new((ctx, ResourceTable::new()))
        });
        let (ctx, table) = &mut **wasi;
        WasiCtxView { ctx, table }
    }
}

impl types::Host for StageState {}

/// Whether the log filter lets plugin lines of this level through.
fn level_enabled(level: types::Level) -> bool {
    use tracing::{Level, enabled};
    match level {
        types::Level::Trace => enabled!(target: "wasmgate::plugin", Level::TRACE),
        types::Level::Debug => enabled!(target: "wasmgate::plugin", Level::DEBUG),
        types::Level::Info => enabled!(target: "wasmgate::plugin", Level::INFO),
        types::Level::Warn => enabled!(target: "wasmgate::plugin", Level::WARN),
        types::Level::Error => enabled!(target: "wasmgate::plugin", Level::ERROR),
    }
}

impl host::Host for StageState {
    fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        let caller = &self.identity;
        // Lines the log filter drops anyway cost nothing and use none of the budget.
        if !level_enabled(level) || !caller.log_budget.take(&caller.plugin) {
            return Ok(());
        }
        let message = escape_control(truncate(&message, MAX_LOG_LINE));
        let (plugin, route) = (&*caller.plugin, &*caller.route);
        match level {
            types::Level::Trace => {
                tracing::trace!(target: "wasmgate::plugin", plugin, route, "{message}")
            }
            types::Level::Debug => {
                tracing::debug!(target: "wasmgate::plugin", plugin, route, "{message}")
            }
            types::Level::Info => {
                tracing::info!(target: "wasmgate::plugin", plugin, route, "{message}")
            }
            types::Level::Warn => {
                tracing::warn!(target: "wasmgate::plugin", plugin, route, "{message}")
            }
            types::Level::Error => {
                tracing::error!(target: "wasmgate::plugin", plugin, route, "{message}")
            }
        }
        Ok(())
    }

    fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.config_json.to_string())
    }

    fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }

    fn set_var(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        if name.len() > MAX_VAR_NAME || value.len() > MAX_VAR_VALUE {
            wasmtime::bail!(
                "set-var: names are limited to {MAX_VAR_NAME} bytes and values to {MAX_VAR_VALUE}"
            );
        }
        if let Some(slot) = self.vars.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else if self.vars.len() < MAX_VARS {
            self.vars.push((name, value));
        } else {
            wasmtime::bail!("set-var: a request holds at most {MAX_VARS} variables");
        }
        Ok(())
    }
}

impl connection::Host for StageState {
    fn is_tls(&mut self) -> wasmtime::Result<bool> {
        Ok(self.tls.is_some())
    }

    fn server_name(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.tls.as_ref().and_then(|tls| tls.server_name.clone()))
    }

    fn client_certificate(&mut self) -> wasmtime::Result<Option<connection::Certificate>> {
        Ok(self
            .tls
            .as_ref()
            .and_then(|tls| tls.client_certificate.as_ref())
            .map(|cert| connection::Certificate {
                subject: cert.subject.clone(),
                sans: cert.sans.clone(),
                sha256: cert.sha256.clone(),
            }))
    }
}

impl StageState {
    /// Runs one state operation in this plugin's namespace; errors are counted on the stage.
    async fn state_op(&mut self, op: Op) -> Result<Outcome, String> {
        let result = match op.check() {
            Ok(()) => {
                let plugin = self.identity.plugin.clone();
                self.state.run(&plugin, op).await
            }
            Err(refused) => Err(refused),
        };
        if result.is_err()
            && let Some(errors) = &self.identity.counter_errors
        {
            errors.inc();
        }
        result
    }
}

/// The error a plugin sees when a backend answers an operation with the wrong outcome (a
/// host bug, never expected).
fn mismatch(outcome: &Outcome) -> String {
    tracing::error!(?outcome, "state backend answered with the wrong outcome");
    "internal error in the state backend".to_string()
}

impl counters::Host for StageState {
    async fn increment(
        &mut self,
        key: String,
        delta: u64,
        window_ms: u64,
    ) -> wasmtime::Result<Result<u64, String>> {
        let window = Duration::from_millis(window_ms.max(1));
        let op = Op::Increment { key, delta, window };
        Ok(self.state_op(op).await.and_then(|outcome| match outcome {
            Outcome::Count(count) => Ok(count),
            other => Err(mismatch(&other)),
        }))
    }
}

impl limiter::Host for StageState {
    async fn window(
        &mut self,
        key: String,
        delta: u64,
        window_ms: u64,
    ) -> wasmtime::Result<Result<limiter::WindowCount, String>> {
        let window = Duration::from_millis(window_ms);
        let op = Op::Window { key, delta, window };
        Ok(self.state_op(op).await.and_then(|outcome| match outcome {
            Outcome::Window(w) => Ok(limiter::WindowCount {
                current: w.current,
                previous: w.previous,
                elapsed_ms: w.elapsed_ms,
            }),
            other => Err(mismatch(&other)),
        }))
    }

    async fn gcra(
        &mut self,
        key: String,
        limit: u64,
        period_ms: u64,
        burst: u64,
        cost: u64,
    ) -> wasmtime::Result<Result<limiter::Decision, String>> {
        let op = Op::Gcra {
            key,
            limit,
            period: Duration::from_millis(period_ms),
            burst,
            cost,
        };
        Ok(self.state_op(op).await.and_then(|outcome| match outcome {
            Outcome::Gcra(d) => Ok(limiter::Decision {
                allowed: d.allowed,
                remaining: d.remaining,
                retry_after_ms: d.retry_after_ms,
                reset_after_ms: d.reset_after_ms,
            }),
            other => Err(mismatch(&other)),
        }))
    }
}

impl kv::Host for StageState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        Ok(self
            .state_op(Op::Get { key })
            .await
            .and_then(|outcome| match outcome {
                Outcome::Value(value) => Ok(value),
                other => Err(mismatch(&other)),
            }))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<(), String>> {
        let ttl = Duration::from_millis(ttl_ms);
        Ok(self
            .state_op(Op::Set { key, value, ttl })
            .await
            .and_then(|outcome| match outcome {
                Outcome::Done => Ok(()),
                other => Err(mismatch(&other)),
            }))
    }

    async fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<bool, String>> {
        let ttl = Duration::from_millis(ttl_ms);
        let op = Op::CompareAndSet {
            key,
            expected,
            value,
            ttl,
        };
        Ok(self.state_op(op).await.and_then(|outcome| match outcome {
            Outcome::Changed(changed) => Ok(changed),
            other => Err(mismatch(&other)),
        }))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, String>> {
        Ok(self
            .state_op(Op::Delete { key })
            .await
            .and_then(|outcome| match outcome {
                Outcome::Changed(changed) => Ok(changed),
                other => Err(mismatch(&other)),
            }))
    }
}

impl trace::Host for StageState {
    fn current(&mut self) -> wasmtime::Result<Option<trace::SpanContext>> {
        Ok(self.span.clone())
    }
}

/// Plugin metrics go nowhere (successfully) when the gateway collects no metrics.
impl metrics::Host for StageState {
    fn define(&mut self, definition: metrics::Definition) -> wasmtime::Result<Result<(), String>> {
        let Some(custom) = &self.identity.custom_metrics else {
            return Ok(Ok(()));
        };
        let definition = Definition {
            name: definition.name,
            help: definition.help,
            kind: match definition.kind {
                metrics::Kind::Counter => Kind::Counter,
                metrics::Kind::Histogram(buckets) => Kind::Histogram(buckets),
            },
            labels: definition.labels,
        };
        Ok(custom
            .define(&self.identity.plugin, definition)
            .map_err(|refused| refused.to_string()))
    }

    fn add(
        &mut self,
        name: String,
        label_values: Vec<String>,
        delta: u64,
    ) -> wasmtime::Result<Result<(), String>> {
        let caller = &self.identity;
        let Some(custom) = &caller.custom_metrics else {
            return Ok(Ok(()));
        };
        Ok(custom
            .add(&caller.plugin, &caller.route, &name, label_values, delta)
            .map_err(|refused| refused.to_string()))
    }

    fn observe(
        &mut self,
        name: String,
        label_values: Vec<String>,
        value: f64,
    ) -> wasmtime::Result<Result<(), String>> {
        let caller = &self.identity;
        let Some(custom) = &caller.custom_metrics else {
            return Ok(Ok(()));
        };
        Ok(custom
            .observe(&caller.plugin, &caller.route, &name, label_values, value)
            .map_err(|refused| refused.to_string()))
    }
}

/// Caps linear memory per instance and remembers whether the cap was hit.
pub struct MemoryLimiter {
    max_bytes: usize,
    /// Set when a growth past the cap was refused.
    pub hit_cap: bool,
    /// Linear memory this store holds, all its memories together (memory never shrinks).
    pub held_bytes: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit_cap = true;
            return Ok(false);
        }
        self.held_bytes += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A per-plugin budget of log lines per second, so a chatty plugin cannot flood the log.
#[derive(Debug, Default)]
pub struct LogBudget {
    /// `second << 32 | lines used in that second`.
    state: AtomicU64,
    dropped: AtomicU64,
}

impl LogBudget {
    /// Takes one line from this second's budget; `false` when it is spent. The first line
    /// of a new second reports how many lines of `plugin` were dropped before it.
    pub fn take(&self, plugin: &str) -> bool {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (at, used) = (current >> 32, current & 0xffff_ffff);
            let next = if at == second {
                (second << 32) | (used + 1)
            } else {
                (second << 32) | 1
            };
            if at == second && used >= LOG_LINES_PER_SECOND {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let dropped = if at != second {
                        self.dropped.swap(0, Ordering::Relaxed)
                    } else {
                        0
                    };
                    if dropped > 0 {
                        tracing::warn!(target: "wasmgate::plugin", plugin, dropped, "plugin log lines dropped (over {LOG_LINES_PER_SECOND}/s)");
                    }
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A guest's stdout or stderr: each line becomes a log event tagged with the plugin.
struct GuestOutput {
    caller: Arc<CallerInfo>,
    stream: &'static str,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            caller: self.caller.clone(),
            stream: self.stream,
            line: Vec::new(),
        })
    }
}

struct LineLogger {
    caller: Arc<CallerInfo>,
    stream: &'static str,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        if !self.line.is_empty()
            && level_enabled(types::Level::Info)
            && self.caller.log_budget.take(&self.caller.plugin)
        {
            let text = String::from_utf8_lossy(&self.line);
            let text = escape_control(truncate(&text, MAX_LOG_LINE));
            tracing::info!(target: "wasmgate::plugin", plugin = &*self.caller.plugin, route = &*self.caller.route, stream = self.stream, "{text}");
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LOG_LINE {
                self.line.push(byte);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_allows_its_lines_per_second_then_counts_the_dropped_ones() {
        let budget = LogBudget::default();
        // Retry if the second turns over mid-test: the budget is per wall-clock second.
        for _ in 0..3 {
            let second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let taken = (0..LOG_LINES_PER_SECOND + 5)
                .filter(|_| budget.take("p"))
                .count();
            let same_second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                == second;
            if same_second {
                assert_eq!(taken as u64, LOG_LINES_PER_SECOND);
                assert_eq!(budget.dropped.load(Ordering::Relaxed), 5);
                return;
            }
        }
        panic!("the clock kept turning over seconds");
    }
}
