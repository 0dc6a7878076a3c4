//! The checked config's types, with defaults applied and names resolved.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::Authority;

use super::raw::{RawLimits, RawReuse};
use super::template::PathTemplate;
use crate::normalize::PathPolicy;
use crate::router::RouteKey;

/// A checked, resolved gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Listeners and connection hygiene.
    pub server: ServerConfig,
    /// The plugin directory and default sandbox limits.
    pub plugins: PluginsConfig,
    /// The admin API, when enabled.
    pub admin: Option<AdminConfig>,
    /// Distributed tracing, when configured.
    pub tracing: Option<TracingConfig>,
    /// The memory cached responses share.
    pub cache: super::cache::CacheStoreConfig,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
}

/// `[admin]`, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// The admin API's address.
    pub listen: SocketAddr,
    /// Whether metrics are collected and served at `/metrics`.
    pub metrics: bool,
}

/// `[tracing]`, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans are exported (OTLP/HTTP, protobuf).
    pub endpoint: http::Uri,
    /// The share of new traces recorded.
    pub sampling_ratio: f64,
    /// Whether an incoming `traceparent`'s sampled flag decides instead of the ratio.
    pub trust_incoming_sampled: bool,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How often finished spans are exported.
    pub export_interval: Duration,
    /// How long one export may take.
    pub export_timeout: Duration,
}

/// `tracing.sampling-ratio` by default.
pub const DEFAULT_SAMPLING_RATIO: f64 = 1.0;
/// `tracing.trust-incoming-sampled` by default: an edge does not let clients decide.
pub const DEFAULT_TRUST_INCOMING_SAMPLED: bool = false;
/// `tracing.service-name` by default.
pub const DEFAULT_SERVICE_NAME: &str = "wasmgate";
/// `tracing.export-interval` by default.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
/// `tracing.export-timeout` by default.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// `server.listen` by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// `server.header-read-timeout` by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `server.idle-timeout` by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `server.max-header-bytes` by default.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 << 10;
/// `server.max-connections` by default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// `server.shutdown-grace` by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `admin.metrics` by default.
pub const DEFAULT_ADMIN_METRICS: bool = true;
/// `plugins.dir` by default (relative to the config file).
pub const DEFAULT_PLUGIN_DIR: &str = "plugins";
/// `plugins.max-instances` by default.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// `limits.memory` by default.
pub const DEFAULT_STAGE_MEMORY: u64 = 32 << 20;
/// `limits.deadline` by default.
pub const DEFAULT_STAGE_DEADLINE: Duration = Duration::from_millis(200);
/// A buffering stage's `body.max-bytes` by default.
pub const DEFAULT_BUFFER_BYTES: u64 = 1 << 20;
/// `reuse.max-calls` by default.
pub const DEFAULT_REUSE_MAX_CALLS: u32 = 1000;
/// `reuse.max-idle` by default.
pub const DEFAULT_REUSE_MAX_IDLE: u32 = 8;
/// `reuse.idle-timeout` by default.
pub const DEFAULT_REUSE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An upstream's `connect-timeout` by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An upstream's `timeout` by default.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// An upstream's `max-idle-per-target` by default.
pub const DEFAULT_MAX_IDLE_PER_TARGET: usize = 64;
/// An upstream's `idle-timeout` by default.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
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
pub(super) const HEADER_FIELDS_CEILING: usize = 10_000;

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
            memory_bytes: DEFAULT_STAGE_MEMORY,
            deadline: DEFAULT_STAGE_DEADLINE,
            fuel: None,
            reuse: None,
        }
    }
}

impl StageLimits {
    /// A `reuse` table replaces the inherited policy as a whole.
    pub(super) fn overridden_by(self, raw: &RawLimits) -> Self {
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
            max_calls: raw.max_calls.unwrap_or(DEFAULT_REUSE_MAX_CALLS),
            max_memory: raw.max_memory.map(|m| m.0),
            max_idle: raw.max_idle.unwrap_or(DEFAULT_REUSE_MAX_IDLE),
            idle_timeout: raw.idle_timeout.map_or(DEFAULT_REUSE_IDLE_TIMEOUT, |d| d.0),
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
    pub compress: Option<super::compress::CompressConfig>,
    /// Response caching; `None` never stores or serves cached responses.
    pub cache: Option<super::cache::CacheConfig>,
    /// Where the route is written (`file:line:column`).
    pub location: String,
}

impl RouteConfig {
    /// What the router needs of this route: a prefix matches itself, `prefix/` and
    /// `prefix/{*rest}` (on segment boundaries).
    pub fn route_key(&self) -> RouteKey {
        let patterns = match &self.path {
            PathMatch::Pattern(pattern) => vec![pattern.clone()],
            PathMatch::Prefix(prefix) => {
                let mut patterns = vec![format!("{prefix}/"), format!("{prefix}/{{*rest}}")];
                if !prefix.is_empty() {
                    patterns.insert(0, prefix.clone());
                }
                patterns
            }
        };
        RouteKey {
            name: self.name.clone(),
            hosts: self.hosts.clone(),
            methods: self.methods.clone(),
            patterns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, ConfigDuration};

    /// The README's table of defaults, `key → value` as written.
    fn readme_defaults() -> BTreeMap<String, String> {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let start = readme
            .find("| key | default |\n")
            .expect("the defaults table");
        readme[start..]
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                Some((
                    cells.get(1)?.replace('`', ""),
                    cells.get(2)?.trim_matches('`').to_string(),
                ))
            })
            .collect()
    }

    #[test]
    fn the_readme_table_of_defaults_matches_the_constants() {
        let table = readme_defaults();
        let duration =
            |key: &str| -> Duration { table[key].parse::<ConfigDuration>().expect(key).0 };
        let bytes = |key: &str| -> u64 { table[key].parse::<ByteSize>().expect(key).0 };
        let number = |key: &str| -> u64 { table[key].parse().expect(key) };
        assert_eq!(table["server.listen"], DEFAULT_LISTEN);
        assert_eq!(
            duration("server.header-read-timeout"),
            DEFAULT_HEADER_READ_TIMEOUT
        );
        assert_eq!(duration("server.idle-timeout"), DEFAULT_IDLE_TIMEOUT);
        assert_eq!(
            bytes("server.max-header-bytes"),
            DEFAULT_MAX_HEADER_BYTES as u64
        );
        assert_eq!(
            number("server.max-connections"),
            u64::from(DEFAULT_MAX_CONNECTIONS)
        );
        assert_eq!(duration("server.shutdown-grace"), DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(table["plugins.dir"], DEFAULT_PLUGIN_DIR);
        assert_eq!(table["admin.metrics"], DEFAULT_ADMIN_METRICS.to_string());
        assert_eq!(
            bytes("cache.max-bytes"),
            crate::config::DEFAULT_CACHE_TOTAL_BYTES
        );
        assert_eq!(
            number("plugins.max-instances"),
            u64::from(DEFAULT_MAX_INSTANCES)
        );
        assert_eq!(
            number("plugins.aggregate-calls"),
            DEFAULT_AGGREGATE_CALLS as u64
        );
        assert_eq!(bytes("plugins.aggregate-bytes"), DEFAULT_AGGREGATE_BYTES);
        assert_eq!(
            bytes("plugins.aggregate-bytes-total"),
            DEFAULT_AGGREGATE_BYTES_TOTAL
        );
        assert_eq!(number("plugins.counter-keys"), DEFAULT_COUNTER_KEYS as u64);
        assert_eq!(bytes("plugins.counter-bytes"), DEFAULT_COUNTER_BYTES as u64);
        assert_eq!(bytes("limits.memory"), DEFAULT_STAGE_MEMORY);
        assert_eq!(duration("limits.deadline"), DEFAULT_STAGE_DEADLINE);
        assert_eq!(
            number("limits.reuse.max-calls"),
            u64::from(DEFAULT_REUSE_MAX_CALLS)
        );
        assert_eq!(
            number("limits.reuse.max-idle"),
            u64::from(DEFAULT_REUSE_MAX_IDLE)
        );
        assert_eq!(
            duration("limits.reuse.idle-timeout"),
            DEFAULT_REUSE_IDLE_TIMEOUT
        );
        assert_eq!(bytes("stage body.max-bytes"), DEFAULT_BUFFER_BYTES);
        assert_eq!(
            duration("upstreams.NAME.connect-timeout"),
            DEFAULT_CONNECT_TIMEOUT
        );
        assert_eq!(duration("upstreams.NAME.timeout"), DEFAULT_UPSTREAM_TIMEOUT);
        assert_eq!(
            number("upstreams.NAME.max-idle-per-target"),
            DEFAULT_MAX_IDLE_PER_TARGET as u64
        );
        assert_eq!(
            duration("upstreams.NAME.idle-timeout"),
            DEFAULT_UPSTREAM_IDLE_TIMEOUT
        );
        assert_eq!(
            table["tracing.sampling-ratio"]
                .parse::<f64>()
                .expect("ratio"),
            DEFAULT_SAMPLING_RATIO
        );
        assert_eq!(
            table["tracing.trust-incoming-sampled"],
            DEFAULT_TRUST_INCOMING_SAMPLED.to_string()
        );
        assert_eq!(table["tracing.service-name"], DEFAULT_SERVICE_NAME);
        assert_eq!(duration("tracing.export-interval"), DEFAULT_EXPORT_INTERVAL);
        assert_eq!(duration("tracing.export-timeout"), DEFAULT_EXPORT_TIMEOUT);
        assert_eq!(table.len(), 30, "every row is checked: {table:?}");
    }
}
