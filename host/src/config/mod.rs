//! The gateway config: `gateway.toml` parsed ([`raw`]), checked and resolved into [`Config`].
//!
//! Loading never stops at the first problem: every error found is reported, each naming the
//! file, line, column and key (see [`ConfigError`]).

mod compress;
mod decode;
mod error;
pub mod raw;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::Authority;
use toml::Spanned;

pub use compress::{CompressConfig, CompressLevels, ContentCoding, MediaRange};
pub use error::{ConfigError, Diagnostic, Diagnostics};
pub use units::{ByteSize, ConfigDuration};

use crate::normalize::{EscapedSlashes, PathPolicy};

use error::Reporter;
use raw::{RawConfig, RawLimits, RawPlugins, RawReuse, RawRoute, RawStage, RawUpstream};

/// A checked, resolved gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Listeners and connection hygiene.
    pub server: ServerConfig,
    /// The plugin directory and default sandbox limits.
    pub plugins: PluginsConfig,
    /// The admin API's address, when enabled.
    pub admin: Option<SocketAddr>,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
}

/// The most header fields a request head may have (431 above), as in Envoy.
pub const MAX_HEADER_FIELDS: usize = 100;

/// `[server]`, with defaults applied.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Connections with no traffic for this long are closed.
    pub idle_timeout: Duration,
    /// Largest request head accepted (431 above).
    pub max_header_bytes: usize,
    /// Largest request body accepted (413 above); `None` is unlimited.
    pub max_body_bytes: Option<u64>,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How request paths are normalized before routing.
    pub path_policy: PathPolicy,
}

/// `[plugins]` and `[limits]`, with defaults applied and paths resolved.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// The plugin directory.
    pub dir: PathBuf,
    /// Where compiled plugins are cached.
    pub cache_dir: PathBuf,
    /// Whether the plugin directory and config file are watched for changes.
    pub watch: bool,
    /// Plugin instances alive at once (the sandbox pool size).
    pub max_instances: u32,
    /// Bounds on what plugins hand the host.
    pub output: OutputLimits,
    /// Per-plugin budget of the shared counter store.
    pub counters: CounterBudget,
}

/// Calls one aggregate plan may make by default.
pub const DEFAULT_AGGREGATE_CALLS: usize = 32;
/// Response bytes the calls of one aggregate plan may return together, by default.
pub const DEFAULT_AGGREGATE_BYTES: u64 = 16 << 20;
/// Response bytes all aggregate calls in flight may hold at once, by default.
pub const DEFAULT_AGGREGATE_BYTES_TOTAL: u64 = 256 << 20;
/// Counter keys one plugin may hold at once, by default.
pub const DEFAULT_COUNTER_KEYS: usize = 100_000;
/// Bytes of counter keys one plugin may hold at once, by default.
pub const DEFAULT_COUNTER_BYTES: usize = 16 << 20;
/// The most header fields any limit may allow (the `http` crate's maps hold 32,768).
const HEADER_FIELDS_CEILING: usize = 10_000;

/// Bounds on what plugins may hand the host, checked before the host builds anything
/// from it; going past one fails the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Header fields in one message a plugin returns or plans.
    pub header_fields: usize,
    /// Bytes of header fields (names, values and 4 per field) in one such message.
    pub header_bytes: usize,
    /// Calls one aggregate plan may make.
    pub aggregate_calls: usize,
    /// Response body bytes the calls of one aggregate plan may return together.
    pub aggregate_bytes: u64,
    /// Response body bytes all aggregate calls in flight may hold at once.
    pub aggregate_bytes_total: u64,
}

/// What one plugin may keep in the shared counter store at once (expired keys do not
/// count); past it, `counters.increment` of a new key returns an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterBudget {
    /// Keys.
    pub keys: usize,
    /// Bytes of keys.
    pub bytes: usize,
}

/// Sandbox limits for one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLimits {
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline per call.
    pub deadline: Duration,
    /// Fuel per call; unlimited when `None`.
    pub fuel: Option<u64>,
    /// Instance reuse; `None` (the default) runs every call on a fresh instance.
    pub reuse: Option<ReusePolicy>,
}

impl Default for StageLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 32 << 20,
            deadline: Duration::from_millis(200),
            fuel: None,
            reuse: None,
        }
    }
}

impl StageLimits {
    /// A `reuse` table replaces the inherited policy as a whole.
    fn overridden_by(self, raw: &RawLimits) -> Self {
        Self {
            memory_bytes: raw.memory.map_or(self.memory_bytes, |m| m.0),
            deadline: raw.deadline.map_or(self.deadline, |d| d.0),
            fuel: raw.fuel.or(self.fuel),
            reuse: raw.reuse.as_ref().map(ReusePolicy::from_raw).or(self.reuse),
        }
    }
}

/// When a reused instance is dropped. A call that fails in the sandbox (trap, deadline,
/// fuel, memory cap) drops its instance too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReusePolicy {
    /// Calls an instance serves before it is dropped (every export call counts: a
    /// transform stage makes two per request).
    pub max_calls: u32,
    /// Linear memory high-water mark: an instance that grew past it is dropped after its
    /// call. `None`: only the stage's memory cap applies.
    pub max_memory: Option<u64>,
    /// Idle instances kept per stage; instances beyond this are dropped when they finish.
    pub max_idle: u32,
    /// An instance idle for this long is dropped instead of reused.
    pub idle_timeout: Duration,
}

impl ReusePolicy {
    fn from_raw(raw: &RawReuse) -> Self {
        Self {
            max_calls: raw.max_calls.unwrap_or(1000),
            max_memory: raw.max_memory.map(|m| m.0),
            max_idle: raw.max_idle.unwrap_or(8),
            idle_timeout: raw.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
        }
    }
}

/// How an upstream picks a target for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each target in turn.
    RoundRobin,
    /// A target chosen at random.
    Random,
}

/// `[upstreams.NAME]`, with defaults applied.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream's name.
    pub name: String,
    /// Targets, as `host:port`.
    pub targets: Vec<Authority>,
    /// Target selection.
    pub balance: Balance,
    /// Time allowed to connect to a target.
    pub connect_timeout: Duration,
    /// Time allowed for response headers.
    pub timeout: Duration,
    /// Idle keep-alive connections each worker thread keeps per target.
    pub max_idle_per_target: usize,
    /// How long idle connections are kept.
    pub idle_timeout: Duration,
}

/// What part of the path a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// A `matchit` pattern: literal segments, `{param}` and a trailing `{*rest}`.
    Pattern(String),
    /// A prefix on segment boundaries; the remainder is captured as `rest`.
    Prefix(String),
}

/// A path template for rewrites: literal text with `{name}` captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// Literal text and capture names, in order.
    pub parts: Vec<TemplatePart>,
}

/// One piece of a [`PathTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Copied as is.
    Literal(String),
    /// Replaced by the named capture.
    Capture(String),
}

impl PathTemplate {
    /// Parses `"/v1/users/{id}"`; `{*rest}` and `{rest}` are the same capture.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            let name = rest[open + 1..open + close].trim_start_matches('*');
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("invalid capture name `{name}` in `{text}`"));
            }
            parts.push(TemplatePart::Capture(name.to_string()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in `{text}`"));
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Capture names used by the template.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Capture(name) => Some(name.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }
}

/// Whether a stage that cannot run refuses the request or lets it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse the request (the default).
    FailClosed,
    /// Skip the stage and go on.
    FailOpen,
}

/// One stage of a route's pipeline.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// The plugin's name (`NAME.wasm` in the plugin directory).
    pub plugin: String,
    /// The stage's config, as the JSON text the plugin receives.
    pub config_json: Arc<str>,
    /// What happens when the stage cannot run.
    pub on_error: OnError,
    /// Buffer the body for this stage, up to this many bytes; `None` streams it past.
    pub buffer_body: Option<u64>,
    /// Sandbox limits, after plugin and stage overrides.
    pub limits: StageLimits,
    /// Upstreams an aggregate stage may call (host-enforced).
    pub upstreams: Vec<String>,
    /// Where the stage is written (`file:line:column`), for error messages.
    pub location: String,
}

/// A route's static answer (`respond`).
#[derive(Debug, Clone)]
pub struct RespondConfig {
    /// Status code.
    pub status: http::StatusCode,
    /// Header fields.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: bytes::Bytes,
    /// A redirect target built from the path captures.
    pub location: Option<PathTemplate>,
}

/// `[[routes]]`, checked.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique route name.
    pub name: String,
    /// Host patterns (`api.example.com`, `*.example.com`), lower-case; empty is any host.
    pub hosts: Vec<String>,
    /// Allowed methods; `None` is any method.
    pub methods: Option<Vec<Method>>,
    /// The path match.
    pub path: PathMatch,
    /// The upstream to proxy to; `None` when `respond` or an aggregate stage answers.
    pub upstream: Option<String>,
    /// A static answer instead of an upstream.
    pub respond: Option<RespondConfig>,
    /// A literal prefix removed before proxying.
    pub strip_prefix: Option<String>,
    /// A new upstream path built from captures.
    pub rewrite: Option<PathTemplate>,
    /// Response timeout override.
    pub timeout: Option<Duration>,
    /// Send the client's Host header upstream.
    pub preserve_host: bool,
    /// Body size limit for this route; `None` is unlimited.
    pub max_body_bytes: Option<u64>,
    /// The stages, in order.
    pub stages: Vec<StageConfig>,
    /// Response compression; `None` sends responses as the terminal and stages leave them.
    pub compress: Option<CompressConfig>,
    /// Where the route is written (`file:line:column`).
    pub location: String,
}

impl RouteConfig {
    /// The path and query the upstream receives: the request's, after `strip-prefix` or
    /// `rewrite` (filled in from the path captures `params`).
    pub fn upstream_path(
        &self,
        uri: &http::Uri,
        params: &[(String, String)],
    ) -> Result<http::uri::PathAndQuery, http::uri::InvalidUri> {
        let path = uri.path();
        let new_path = if let Some(template) = &self.rewrite {
            let mut out = String::with_capacity(path.len());
            for part in &template.parts {
                match part {
                    TemplatePart::Literal(text) => out.push_str(text),
                    TemplatePart::Capture(name) => {
                        if let Some((_, value)) = params.iter().find(|(k, _)| k == name) {
                            out.push_str(value);
                        }
                    }
                }
            }
            if matches!(self.path, PathMatch::Prefix(_)) || out.is_empty() {
                out = out.replace("//", "/");
            }
            if out.is_empty() { "/".to_string() } else { out }
        } else if let Some(prefix) = &self.strip_prefix {
            let rest = path.strip_prefix(prefix.as_str()).unwrap_or(path);
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        } else {
            return Ok(uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        };
        let with_query = match uri.query() {
            Some(query) => format!("{new_path}?{query}"),
            None => new_path,
        };
        http::uri::PathAndQuery::try_from(with_query)
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(path, &source)
    }

    /// Checks config text; `path` names it in errors and anchors relative paths.
    ///
    /// Every problem is reported: decode errors (unknown keys, wrong types) and, for what
    /// decodes, the checks after it. Checks inside a section with a decode error are left
    /// out, as the entry taken out of it could make them report what is not wrong.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        let mut report = Reporter::new(path, source);
        let decoded = decode::decode(source);
        let config = decoded.raw.and_then(|raw| {
            Checker {
                report: &mut report,
                path,
                source,
            }
            .check(raw)
        });
        if !decoded.errors.is_empty() {
            let sections: Vec<String> = decoded
                .errors
                .iter()
                .map(|error| section_of(&key_path_at(source, error.span.start)))
                .collect();
            report.retain(|found| !sections.iter().any(|section| within(&found.key, section)));
            for error in decoded.errors {
                let key = key_path_at(source, error.span.start);
                report.error(error.span, key, error.message);
            }
        }
        report.finish()?;
        Ok(config.expect("a clean report yields a config"))
    }
}

/// The section a key path belongs to: `routes[2]`, `upstreams.users`, `server`, …
fn section_of(key_path: &str) -> String {
    let mut parts = key_path.splitn(3, '.');
    let first = parts.next().unwrap_or_default();
    match (first, parts.next()) {
        ("upstreams", Some(name)) => {
            format!("upstreams.{}", name.split('[').next().unwrap_or(name))
        }
        _ => first.to_string(),
    }
}

/// Whether `key_path` is `section` or inside it.
fn within(key_path: &str, section: &str) -> bool {
    key_path
        .strip_prefix(section)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Turns a [`RawConfig`] into a [`Config`], recording every problem.
struct Checker<'r, 'a> {
    report: &'r mut Reporter<'a>,
    path: &'a Path,
    source: &'a str,
}

impl Checker<'_, '_> {
    fn location(&self, span: &Range<usize>) -> String {
        let start = span.start.min(self.source.len());
        let line = self.source[..start].matches('\n').count() + 1;
        let line_start = self.source[..start].rfind('\n').map_or(0, |i| i + 1);
        let column = self.source[line_start..start].chars().count() + 1;
        format!("{}:{line}:{column}", self.path.display())
    }

    fn check(mut self, raw: RawConfig) -> Option<Config> {
        let base = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let server = self.server(&raw);
        let defaults = StageLimits::default().overridden_by(&raw.limits);
        self.limits("limits", &raw.limits, 0..0);
        let plugin_limits: BTreeMap<String, StageLimits> = raw
            .plugins
            .limits
            .iter()
            .map(|(name, limits)| {
                self.limits(
                    &format!("plugins.limits.{name}"),
                    limits.get_ref(),
                    limits.span(),
                );
                (name.clone(), defaults.overridden_by(limits.get_ref()))
            })
            .collect();
        let dir = base.join(raw.plugins.dir.as_deref().unwrap_or("plugins"));
        let cache_dir = raw
            .plugins
            .cache_dir
            .as_deref()
            .map_or_else(default_cache_dir, |cache| base.join(cache));
        if inside(&cache_dir, &dir) {
            self.report.error(
                0..0,
                "plugins.cache-dir",
                format!(
                    "`{}` is inside the plugins directory; compiled code must live where only the gateway writes (leave the key out for the default, `$XDG_CACHE_HOME/wasmgate`)",
                    cache_dir.display()
                ),
            );
        }
        let max_instances = raw.plugins.max_instances.unwrap_or(1000);
        if max_instances == 0 {
            self.report
                .error(0..0, "plugins.max-instances", "must be at least 1");
        }
        let output = self.output_limits(&raw.plugins, &server);
        let plugins = PluginsConfig {
            dir,
            cache_dir,
            watch: raw.plugins.watch.unwrap_or(true),
            max_instances,
            output,
            counters: CounterBudget {
                keys: raw.plugins.counter_keys.unwrap_or(DEFAULT_COUNTER_KEYS),
                bytes: raw
                    .plugins
                    .counter_bytes
                    .map_or(DEFAULT_COUNTER_BYTES, |b| b.0 as usize),
            },
        };
        let admin = raw
            .admin
            .as_ref()
            .and_then(|admin| self.socket_addr(&admin.listen, "admin.listen"));
        let upstreams: BTreeMap<String, Arc<UpstreamConfig>> = raw
            .upstreams
            .iter()
            .filter_map(|(name, upstream)| {
                self.upstream(name, upstream)
                    .map(|u| (name.clone(), Arc::new(u)))
            })
            .collect();
        let routes = self.routes(&raw, &server, defaults, &plugin_limits);
        if !self.report.is_clean() {
            return None;
        }
        Some(Config {
            file: self.path.to_path_buf(),
            server,
            plugins,
            admin,
            upstreams,
            routes,
        })
    }

    fn server(&mut self, raw: &RawConfig) -> ServerConfig {
        let s = &raw.server;
        let listen = match &s.listen {
            None => vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.report
                        .error(list.span(), "server.listen", "needs at least one address");
                }
                list.get_ref()
                    .iter()
                    .filter_map(|addr| self.socket_addr(addr, "server.listen"))
                    .collect()
            }
        };
        let max_connections = s.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            self.report
                .error(0..0, "server.max-connections", "must be at least 1");
        }
        let escaped_slashes = match s
            .escaped_slashes
            .as_ref()
            .map(|e| (e.get_ref().as_str(), e.span()))
        {
            None | Some(("reject", _)) => EscapedSlashes::Reject,
            Some(("keep", _)) => EscapedSlashes::Keep,
            Some(("decode", _)) => EscapedSlashes::Decode,
            Some((other, span)) => {
                self.report.error(
                    span,
                    "server.escaped-slashes",
                    format!("unknown policy `{other}`: expected `reject`, `keep` or `decode`"),
                );
                EscapedSlashes::Reject
            }
        };
        ServerConfig {
            listen,
            header_read_timeout: s
                .header_read_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            idle_timeout: s.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
            max_header_bytes: s.max_header_bytes.map_or(16 << 10, |b| b.0 as usize),
            max_body_bytes: s.max_body_bytes.map(|b| b.0),
            max_connections: max_connections as usize,
            shutdown_grace: s.shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
            path_policy: PathPolicy {
                escaped_slashes,
                merge_slashes: s.merge_slashes.unwrap_or(true),
            },
        }
    }

    fn output_limits(&mut self, raw: &RawPlugins, server: &ServerConfig) -> OutputLimits {
        let header_fields = raw.output_header_fields.unwrap_or(MAX_HEADER_FIELDS);
        if header_fields == 0 || header_fields > HEADER_FIELDS_CEILING {
            self.report.error(
                0..0,
                "plugins.output-header-fields",
                format!("must be between 1 and {HEADER_FIELDS_CEILING}"),
            );
        }
        let aggregate_calls = raw.aggregate_calls.unwrap_or(DEFAULT_AGGREGATE_CALLS);
        if aggregate_calls == 0 || aggregate_calls > 1024 {
            self.report.error(
                0..0,
                "plugins.aggregate-calls",
                "must be between 1 and 1024",
            );
        }
        let aggregate_bytes = raw.aggregate_bytes.map_or(DEFAULT_AGGREGATE_BYTES, |b| b.0);
        let aggregate_bytes_total = raw
            .aggregate_bytes_total
            .map_or(DEFAULT_AGGREGATE_BYTES_TOTAL, |b| b.0);
        if aggregate_bytes > aggregate_bytes_total {
            self.report.error(
                0..0,
                "plugins.aggregate-bytes",
                "must not be more than `plugins.aggregate-bytes-total`",
            );
        }
        if aggregate_bytes_total > u64::from(u32::MAX) {
            self.report.error(
                0..0,
                "plugins.aggregate-bytes-total",
                "must be at most 4GiB",
            );
        }
        OutputLimits {
            header_fields,
            header_bytes: raw
                .output_header_bytes
                .map_or(server.max_header_bytes, |b| b.0 as usize),
            aggregate_calls,
            aggregate_bytes,
            aggregate_bytes_total,
        }
    }

    fn limits(&mut self, key: &str, raw: &RawLimits, span: Range<usize>) {
        if raw.memory.is_some_and(|m| m.0 < 64 << 10) {
            self.report.error(
                span.clone(),
                format!("{key}.memory"),
                "must be at least 64KiB (one wasm page)",
            );
        }
        if raw.deadline.is_some_and(|d| d.0.is_zero()) {
            self.report.error(
                span.clone(),
                format!("{key}.deadline"),
                "must be more than zero",
            );
        }
        let reuse = raw.reuse.unwrap_or_default();
        if reuse.max_calls == Some(0) {
            self.report.error(
                span.clone(),
                format!("{key}.reuse.max-calls"),
                "must be at least 1 (1 is a fresh instance per call)",
            );
        }
        if reuse.max_idle == Some(0) {
            self.report.error(
                span.clone(),
                format!("{key}.reuse.max-idle"),
                "must be at least 1; leave `reuse` out for a fresh instance per call",
            );
        }
        if reuse.max_memory.is_some_and(|m| m.0 < 64 << 10) {
            self.report.error(
                span,
                format!("{key}.reuse.max-memory"),
                "must be at least 64KiB (one wasm page)",
            );
        }
    }

    fn socket_addr(&mut self, text: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match text.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report.error(
                    text.span(),
                    key,
                    format!(
                        "`{}` is not an address: expected IP:PORT, such as 127.0.0.1:8080",
                        text.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn upstream(&mut self, name: &str, spanned: &Spanned<RawUpstream>) -> Option<UpstreamConfig> {
        let key = format!("upstreams.{name}");
        let raw = spanned.get_ref();
        if !valid_name(name) {
            self.report.error(
                spanned.span(),
                &key,
                "upstream names may use only letters, digits, `-` and `_`",
            );
        }
        if raw.targets.get_ref().is_empty() {
            self.report.error(
                raw.targets.span(),
                format!("{key}.targets"),
                "needs at least one target",
            );
        }
        let mut targets = Vec::new();
        for target in raw.targets.get_ref() {
            let text = target.get_ref();
            let bare = text
                .strip_prefix("http://")
                .unwrap_or(text)
                .trim_end_matches('/');
            if text.starts_with("https://") {
                self.report.error(
                    target.span(),
                    format!("{key}.targets"),
                    "TLS to upstreams is not supported yet; use an http:// target",
                );
                continue;
            }
            match bare.parse::<Authority>() {
                Ok(authority) if authority.port_u16().is_some() && !bare.contains('@') => {
                    targets.push(authority)
                }
                _ => self.report.error(
                    target.span(),
                    format!("{key}.targets"),
                    format!("`{text}` is not a target: expected HOST:PORT or http://HOST:PORT"),
                ),
            }
        }
        let balance = match raw.balance.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("round-robin") => Balance::RoundRobin,
            Some("random") => Balance::Random,
            Some(other) => {
                let span = raw.balance.as_ref().map_or(0..0, Spanned::span);
                self.report.error(
                    span,
                    format!("{key}.balance"),
                    format!("unknown policy `{other}`: expected `round-robin` or `random`"),
                );
                Balance::RoundRobin
            }
        };
        Some(UpstreamConfig {
            name: name.to_string(),
            targets,
            balance,
            connect_timeout: raw.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
            timeout: raw.timeout.map_or(Duration::from_secs(30), |d| d.0),
            max_idle_per_target: raw.max_idle_per_target.unwrap_or(64),
            idle_timeout: raw.idle_timeout.map_or(Duration::from_secs(90), |d| d.0),
        })
    }

    fn routes(
        &mut self,
        raw: &RawConfig,
        server: &ServerConfig,
        defaults: StageLimits,
        plugin_limits: &BTreeMap<String, StageLimits>,
    ) -> Vec<RouteConfig> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut routes = Vec::new();
        for (index, spanned) in raw.routes.iter().enumerate() {
            let route = spanned.get_ref();
            let key = format!("routes[{index}]");
            let name = route.name.get_ref();
            if !valid_name(name) {
                self.report.error(
                    route.name.span(),
                    format!("{key}.name"),
                    "route names may use only letters, digits, `-` and `_`, and must not be empty",
                );
            }
            if let Some(first) = seen.insert(name, index) {
                let other = self.location(&raw.routes[first].get_ref().name.span());
                self.report.error(
                    route.name.span(),
                    format!("{key}.name"),
                    format!("route name `{name}` is already used by routes[{first}] at {other}"),
                );
            }
            if let Some(built) = self.route(&key, spanned, raw, server, defaults, plugin_limits) {
                routes.push(built);
            }
        }
        self.conflicts(raw, &routes);
        routes
    }

    fn route(
        &mut self,
        key: &str,
        spanned: &Spanned<RawRoute>,
        raw: &RawConfig,
        server: &ServerConfig,
        defaults: StageLimits,
        plugin_limits: &BTreeMap<String, StageLimits>,
    ) -> Option<RouteConfig> {
        let route = spanned.get_ref();
        let path = match (&route.path, &route.prefix) {
            (Some(path), None) => {
                self.path_text(path, &format!("{key}.path"));
                PathMatch::Pattern(path.get_ref().clone())
            }
            (None, Some(prefix)) => {
                self.path_text(prefix, &format!("{key}.prefix"));
                if prefix.get_ref().contains(['{', '}']) {
                    self.report.error(
                        prefix.span(),
                        format!("{key}.prefix"),
                        "a prefix cannot hold captures; use `path` with `{*rest}`",
                    );
                }
                PathMatch::Prefix(prefix.get_ref().trim_end_matches('/').to_string())
            }
            (Some(path), Some(_)) => {
                self.report.error(
                    path.span(),
                    format!("{key}.path"),
                    "set either `path` or `prefix`, not both",
                );
                return None;
            }
            (None, None) => {
                self.report
                    .error(spanned.span(), key, "a route needs `path` or `prefix`");
                return None;
            }
        };
        let captures = path_captures(&path);
        let hosts = route
            .hosts
            .iter()
            .flatten()
            .filter_map(|host| {
                let text = host.get_ref().to_ascii_lowercase();
                let bare = text.strip_prefix("*.").unwrap_or(&text);
                let ok = !bare.is_empty()
                    && bare.parse::<Authority>().is_ok()
                    && !bare.contains(['*', ':', '/']);
                if !ok {
                    self.report.error(
                        host.span(),
                        format!("{key}.hosts"),
                        format!(
                            "`{text}` is not a host name (use `example.com` or `*.example.com`)"
                        ),
                    );
                }
                ok.then_some(text)
            })
            .collect();
        let methods = route.methods.as_ref().map(|methods| {
            methods
                .iter()
                .filter_map(|m| {
                    let text = m.get_ref();
                    match Method::from_bytes(text.as_bytes()) {
                        Ok(method) if text.chars().all(|c| c.is_ascii_uppercase()) => Some(method),
                        _ => {
                            self.report.error(
                                m.span(),
                                format!("{key}.methods"),
                                format!(
                                    "`{text}` is not an HTTP method: use an upper-case token such as GET"
                                ),
                            );
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        if let Some(upstream) = &route.upstream {
            if !raw.upstreams.contains_key(upstream.get_ref()) {
                let known: Vec<&str> = raw.upstreams.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                self.report.error(
                    upstream.span(),
                    format!("{key}.upstream"),
                    format!(
                        "unknown upstream `{}` (defined upstreams: {known})",
                        upstream.get_ref()
                    ),
                );
            }
        } else if route.stages.is_empty() && route.respond.is_none() {
            self.report.error(
                spanned.span(),
                key,
                "a route needs a terminal: `upstream`, `respond`, or an aggregate stage last in `stages`",
            );
        }
        if let (Some(_), Some(respond)) = (&route.upstream, &route.respond) {
            self.report.error(
                respond.span(),
                format!("{key}.respond"),
                "set either `upstream` or `respond`, not both",
            );
        }
        let respond = route
            .respond
            .as_ref()
            .and_then(|respond| self.respond(&format!("{key}.respond"), respond, &captures));
        let strip_prefix = route.strip_prefix.as_ref().map(|strip| {
            let text = strip.get_ref().trim_end_matches('/').to_string();
            let literal = match &path {
                PathMatch::Pattern(p) => p.split('{').next().unwrap_or(""),
                PathMatch::Prefix(p) => p.as_str(),
            };
            if !strip.get_ref().starts_with('/') || !literal.starts_with(&text) {
                self.report.error(
                    strip.span(),
                    format!("{key}.strip-prefix"),
                    format!("`{}` is not a prefix of the route's path", strip.get_ref()),
                );
            }
            text
        });
        let rewrite = route.rewrite.as_ref().and_then(|rewrite| match PathTemplate::parse(rewrite.get_ref()) {
            Ok(template) => {
                if !rewrite.get_ref().starts_with('/') {
                    self.report.error(rewrite.span(), format!("{key}.rewrite"), "must start with `/`");
                }
                for capture in template.captures() {
                    if !captures.iter().any(|c| c == capture) {
                        let known = if captures.is_empty() { "none".to_string() } else { captures.join(", ") };
                        self.report.error(rewrite.span(), format!("{key}.rewrite"), format!("`{{{capture}}}` is not captured by the route's path (captures: {known})"));
                    }
                }
                Some(template)
            }
            Err(message) => {
                self.report.error(rewrite.span(), format!("{key}.rewrite"), message);
                None
            }
        });
        if strip_prefix.is_some() && rewrite.is_some() {
            let span = route.rewrite.as_ref().map_or(0..0, Spanned::span);
            self.report.error(
                span,
                format!("{key}.rewrite"),
                "set either `strip-prefix` or `rewrite`, not both",
            );
        }
        let known_upstreams: BTreeSet<String> = raw.upstreams.keys().cloned().collect();
        let stages = route
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                self.stage(
                    &format!("{key}.stages[{i}]"),
                    stage,
                    defaults,
                    plugin_limits,
                    &known_upstreams,
                )
            })
            .collect();
        Some(RouteConfig {
            name: route.name.get_ref().clone(),
            hosts,
            methods,
            path,
            upstream: route.upstream.as_ref().map(|u| u.get_ref().clone()),
            respond,
            strip_prefix,
            rewrite,
            timeout: route.timeout.map(|d| d.0),
            preserve_host: route.preserve_host.unwrap_or(false),
            max_body_bytes: route.max_body_bytes.map(|b| b.0).or(server.max_body_bytes),
            stages,
            compress: route
                .compress
                .as_ref()
                .and_then(|compress| self.compress(&format!("{key}.compress"), compress)),
            location: self.location(&route.name.span()),
        })
    }

    fn respond(
        &mut self,
        key: &str,
        spanned: &Spanned<raw::RawRespond>,
        captures: &[String],
    ) -> Option<RespondConfig> {
        let raw = spanned.get_ref();
        let span = spanned.span();
        let location = raw
            .location
            .as_ref()
            .and_then(|text| match PathTemplate::parse(text) {
                Ok(template) => {
                    for capture in template.captures() {
                        if !captures.iter().any(|c| c == capture) {
                            self.report.error(
                                span.clone(),
                                format!("{key}.location"),
                                format!("`{{{capture}}}` is not captured by the route's path"),
                            );
                        }
                    }
                    Some(template)
                }
                Err(message) => {
                    self.report
                        .error(span.clone(), format!("{key}.location"), message);
                    None
                }
            });
        let default_status = if location.is_some() { 302 } else { 200 };
        let code = raw.status.unwrap_or(default_status);
        let status = match http::StatusCode::from_u16(code) {
            Ok(status) if location.is_some() && !status.is_redirection() => {
                self.report.error(
                    span.clone(),
                    format!("{key}.status"),
                    format!("a redirect (`location`) needs a 3xx status, not {code}"),
                );
                None
            }
            Ok(status) if (200..=599).contains(&code) => Some(status),
            _ => {
                self.report.error(
                    span.clone(),
                    format!("{key}.status"),
                    format!("{code} is not a status a route can answer with (200 to 599)"),
                );
                None
            }
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in &raw.headers {
            let field = (
                http::header::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            );
            match field {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => self.report.error(
                    span.clone(),
                    format!("{key}.headers"),
                    format!("`{name}: {value}` is not a valid header field"),
                ),
            }
        }
        let body = raw.body.clone().unwrap_or_default();
        if !body.is_empty() && !headers.contains_key(http::header::CONTENT_TYPE) {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        Some(RespondConfig {
            status: status?,
            headers,
            body: body.into(),
            location,
        })
    }

    fn path_text(&mut self, path: &Spanned<String>, key: &str) {
        let text = path.get_ref();
        if !text.starts_with('/') {
            self.report
                .error(path.span(), key, format!("`{text}` must start with `/`"));
        }
        if text.contains(['?', '#', ' ']) {
            self.report.error(
                path.span(),
                key,
                format!("`{text}` must be a path only, without query, fragment or spaces"),
            );
        }
    }

    fn stage(
        &mut self,
        key: &str,
        spanned: &Spanned<RawStage>,
        defaults: StageLimits,
        plugin_limits: &BTreeMap<String, StageLimits>,
        known_upstreams: &BTreeSet<String>,
    ) -> StageConfig {
        let stage = spanned.get_ref();
        let plugin = stage.plugin.get_ref().clone();
        if !valid_name(&plugin) {
            self.report.error(
                stage.plugin.span(),
                format!("{key}.plugin"),
                "plugin names may use only letters, digits, `-` and `_` (the file is NAME.wasm)",
            );
        }
        let on_error = match stage.on_error.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("fail-closed") => OnError::FailClosed,
            Some("fail-open") => OnError::FailOpen,
            Some(other) => {
                let span = stage.on_error.as_ref().map_or(0..0, Spanned::span);
                self.report.error(
                    span,
                    format!("{key}.on-error"),
                    format!("unknown policy `{other}`: expected `fail-closed` or `fail-open`"),
                );
                OnError::FailClosed
            }
        };
        let base = plugin_limits.get(&plugin).copied().unwrap_or(defaults);
        let limits = match &stage.limits {
            Some(raw) => {
                self.limits(&format!("{key}.limits"), raw, spanned.span());
                base.overridden_by(raw)
            }
            None => base,
        };
        let upstreams = stage
            .upstreams
            .iter()
            .flatten()
            .filter_map(|name| {
                if known_upstreams.contains(name.get_ref()) {
                    Some(name.get_ref().clone())
                } else {
                    self.report.error(
                        name.span(),
                        format!("{key}.upstreams"),
                        format!("unknown upstream `{}`", name.get_ref()),
                    );
                    None
                }
            })
            .collect();
        let config = stage.config.clone().unwrap_or_default();
        let config_json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_string());
        StageConfig {
            plugin,
            config_json: config_json.into(),
            on_error,
            buffer_body: stage
                .body
                .as_ref()
                .filter(|body| body.buffer)
                .map(|body| body.max_bytes.map_or(1 << 20, |b| b.0)),
            limits,
            upstreams,
            location: self.location(&stage.plugin.span()),
        }
    }

    /// Reports routes that the router could not tell apart, naming both sides.
    fn conflicts(&mut self, raw: &RawConfig, routes: &[RouteConfig]) {
        for conflict in crate::router::find_conflicts(routes) {
            let span_of = |name: &str| {
                raw.routes
                    .iter()
                    .find(|r| r.get_ref().name.get_ref() == name)
                    .map_or(0..0, |r| {
                        r.get_ref()
                            .path
                            .as_ref()
                            .or(r.get_ref().prefix.as_ref())
                            .map_or(r.span(), Spanned::span)
                    })
            };
            let (first, second) = (span_of(&conflict.first), span_of(&conflict.second));
            let index = raw
                .routes
                .iter()
                .position(|r| r.get_ref().name.get_ref() == &conflict.second)
                .unwrap_or(0);
            let message = format!(
                "route `{}` conflicts with route `{}` at {}: {}",
                conflict.second,
                conflict.first,
                self.location(&first),
                conflict.reason
            );
            self.report
                .error(second, format!("routes[{index}].path"), message);
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/wasmgate`, else `~/.cache/wasmgate`,
/// else a per-user directory under the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(cache) = from_env("XDG_CACHE_HOME") {
        return cache.join("wasmgate");
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".cache").join("wasmgate");
    }
    std::env::temp_dir().join(format!(
        "wasmgate-cache-{}",
        rustix::process::geteuid().as_raw()
    ))
}

/// Whether `path` is `dir` or inside it, comparing real paths where they exist.
fn inside(path: &Path, dir: &Path) -> bool {
    let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let (path, dir) = (real(path), real(dir));
    path.starts_with(&dir)
}

/// Capture names a path match provides.
pub fn path_captures(path: &PathMatch) -> Vec<String> {
    match path {
        PathMatch::Prefix(_) => vec!["rest".to_string()],
        PathMatch::Pattern(pattern) => PathTemplate::parse(pattern)
            .map(|t| t.captures().map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

/// The dotted key path (`routes[0].timeout`) of the key or value at byte `offset`.
fn key_path_at(source: &str, offset: usize) -> String {
    let Ok(root) = toml::de::DeTable::parse(source) else {
        return String::new();
    };
    let mut path = String::new();
    key_path_in_table(root.get_ref(), offset, &mut path);
    path
}

fn key_path_in_table(table: &toml::de::DeTable<'_>, offset: usize, path: &mut String) {
    for (key, value) in table {
        let (key_span, value_span) = (key.span(), value.span());
        let inside = key_span.contains(&offset)
            || value_span.contains(&offset)
            || (key_span.start <= offset && offset < value_span.end);
        if !inside
            && !matches!(
                value.get_ref(),
                toml::de::DeValue::Array(_) | toml::de::DeValue::Table(_)
            )
        {
            continue;
        }
        let mark = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        match value.get_ref() {
            toml::de::DeValue::Table(inner) if inside || table_contains(inner, offset) => {
                key_path_in_table(inner, offset, path);
                return;
            }
            toml::de::DeValue::Array(items) => {
                if let Some((index, item)) = items.iter().enumerate().find(|(_, item)| {
                    item.span().contains(&offset)
                        || matches!(item.get_ref(), toml::de::DeValue::Table(t) if table_contains(t, offset))
                }) {
                    path.push_str(&format!("[{index}]"));
                    if let toml::de::DeValue::Table(inner) = item.get_ref() {
                        key_path_in_table(inner, offset, path);
                    }
                    return;
                }
                if inside {
                    return;
                }
            }
            _ if inside => return,
            _ => {}
        }
        path.truncate(mark);
    }
}

/// Whether any key or value of `table` (at any depth) spans `offset`.
fn table_contains(table: &toml::de::DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(key, value)| {
        key.span().contains(&offset)
            || value.span().contains(&offset)
            || match value.get_ref() {
                toml::de::DeValue::Table(inner) => table_contains(inner, offset),
                toml::de::DeValue::Array(items) => items
                    .iter()
                    .any(|item| matches!(item.get_ref(), toml::de::DeValue::Table(t) if table_contains(t, offset))),
                _ => false,
            }
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
