//! The checked config's types, with defaults applied and names resolved.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::Authority;

use super::raw::{RawLimits, RawReuse};
pub use super::resilience::*;
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
    /// Where shared state lives.
    pub state: StateConfig,
}

/// `[state]`: where counters, limiter state and plugin key-values live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StateConfig {
    /// In this process's memory (the default): nothing is shared between gateways.
    #[default]
    Local,
    /// In Redis, shared by every gateway that names the same Redis.
    Redis(RedisConfig),
}

/// What state operations do while Redis cannot be reached (or the breaker is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Operations fail; a rate limiter refuses (its own `on_error` decides how).
    Closed,
    /// Limits let every request through; key-value operations fail.
    Open,
    /// Operations run on this process's own state, with limits divided by `instances`.
    Local,
}

/// `[state]` with `backend = "redis"`, with defaults applied.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The URL, credentials included: never log it, log [`RedisConfig::redacted_url`].
    pub url: String,
    /// The URL names a node of a Redis Cluster.
    pub cluster: bool,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Hard limit on one call.
    pub timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Multiplexed connections each worker thread keeps open.
    pub connections: usize,
    /// The policy while Redis is unavailable.
    pub on_unavailable: Unavailable,
    /// Gateways sharing the limits (divides limits under `Unavailable::Local`).
    pub instances: u32,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one call probes Redis again.
    pub breaker_cool_off: Duration,
}

impl RedisConfig {
    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_unavailable", &self.on_unavailable)
            .finish_non_exhaustive()
    }
}

/// Every URL password in `text` (`scheme://user:password@host`) masked with one `*` per
/// character, so that a config line can be shown with its columns intact.
pub fn mask_url_passwords(text: &str) -> String {
    let mut out = text.to_string();
    let mut from = 0;
    while let Some(found) = out[from..].find("://") {
        let authority_start = from + found + 3;
        let authority_end = out[authority_start..]
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .map_or(out.len(), |i| authority_start + i);
        let authority = &out[authority_start..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            let (start, end) = (authority_start + colon + 1, authority_start + at);
            let stars = "*".repeat(out[start..end].chars().count());
            out.replace_range(start..end, &stars);
        }
        from = authority_start;
    }
    out
}

/// `scheme://user:password@host` → `scheme://user:***@host`; anything else as it is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
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

/// `[server]` and `[[listeners]]`, with defaults applied.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Plain listen addresses (`server.listen`).
    pub listen: Vec<SocketAddr>,
    /// `[[listeners]]`: more addresses, plain or TLS, after `listen`.
    pub listeners: Vec<ListenerConfig>,
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
    /// Routes' default tunnel limits.
    pub tunnel: super::tunnel::TunnelLimits,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How request paths are normalized before routing.
    pub path_policy: PathPolicy,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The address.
    pub address: SocketAddr,
    /// TLS settings; `None` is a plain listener.
    pub tls: Option<ListenerTls>,
}

/// A TLS listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The lowest protocol version accepted.
    pub min_version: TlsVersion,
    /// Certificates, in config order; at least one.
    pub certificates: Vec<CertificateConfig>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// A listener's certificate: files, the SNI names it serves and its client policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// PEM certificate chain (resolved path).
    pub cert: PathBuf,
    /// PEM private key (resolved path).
    pub key: PathBuf,
    /// SNI names (`api.example.com`, `*.example.com`), lower-case; empty: the
    /// certificate's own DNS names.
    pub names: Vec<String>,
    /// Served to clients without SNI and for names no certificate has.
    pub default: bool,
    /// Client certificates.
    pub client_auth: ClientAuth,
}

/// Whether clients must present a certificate, and what it must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    Off,
    /// A certificate is asked for; one that is sent must verify against the CA bundle.
    Optional {
        /// The CA bundle.
        ca: PathBuf,
    },
    /// A certificate that verifies against the CA bundle is required.
    Required {
        /// The CA bundle.
        ca: PathBuf,
    },
}

/// TLS to an upstream's targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// SNI and verified name; `None`: each target's host (never an IP address).
    pub server_name: Option<String>,
    /// CA bundle; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key presented to targets (upstream mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `listeners[].min-tls-version` by default.
pub const DEFAULT_MIN_TLS_VERSION: &str = "1.2";
/// `listeners[].certificates[].client-auth` by default.
pub const DEFAULT_CLIENT_AUTH: &str = "off";

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
/// An upstream's `dns-refresh` by default.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// An HTTP/2 upstream's `max-concurrent-streams` by default.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
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
/// `state.backend` by default.
pub const DEFAULT_STATE_BACKEND: &str = "local";
/// `state.cluster` by default.
pub const DEFAULT_STATE_CLUSTER: bool = false;
/// `state.key-prefix` by default.
pub const DEFAULT_STATE_KEY_PREFIX: &str = "wasmgate";
/// `state.timeout` by default: the most one Redis call may add to a request.
pub const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(50);
/// `state.connect-timeout` by default.
pub const DEFAULT_STATE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `state.connections` by default (per worker thread).
pub const DEFAULT_STATE_CONNECTIONS: u32 = 1;
/// `state.on-unavailable` by default.
pub const DEFAULT_STATE_ON_UNAVAILABLE: &str = "closed";
/// `state.instances` by default.
pub const DEFAULT_STATE_INSTANCES: u32 = 1;
/// `state.breaker-failures` by default.
pub const DEFAULT_STATE_BREAKER_FAILURES: u32 = 5;
/// `state.breaker-cool-off` by default.
pub const DEFAULT_STATE_BREAKER_COOL_OFF: Duration = Duration::from_secs(1);
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Of two targets picked at random, the one with fewer requests in flight per unit of
    /// weight (the default).
    LeastRequest,
    /// Each target in turn.
    RoundRobin,
    /// Each target in turn, as often as its weight says (smoothly interleaved).
    WeightedRoundRobin,
    /// A target chosen at random (weighted).
    Random,
    /// A consistent hash ring keyed by a property of the request: a key stays on its
    /// target, and a target leaving or joining moves only its share of keys.
    Hash(HashOn),
}

/// What a consistent-hash upstream hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's IP address.
    ClientIp,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A path parameter of the route.
    Param(String),
}

/// `[upstreams.NAME]`, with defaults applied.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream's name.
    pub name: String,
    /// Targets, as `host:port`.
    pub targets: Vec<Authority>,
    /// Each target's weight (1 unless written `host:port weight=N`).
    pub weights: Vec<u32>,
    /// Target selection.
    pub balance: Balance,
    /// The active health check, if any.
    pub health_check: Option<HealthCheck>,
    /// Passive outlier detection.
    pub outlier: Outlier,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Retries in flight allowed.
    pub retry_budget: RetryBudget,
    /// Time allowed to connect to a target.
    pub connect_timeout: Duration,
    /// Time allowed for response headers.
    pub timeout: Duration,
    /// Idle keep-alive connections each worker thread keeps per target.
    pub max_idle_per_target: usize,
    /// How long idle connections are kept.
    pub idle_timeout: Duration,
    /// TLS to the targets; `None` is plain HTTP.
    pub tls: Option<UpstreamTlsConfig>,
    /// The HTTP version spoken to the targets.
    pub protocol: UpstreamProtocol,
    /// How often hostname targets are resolved again.
    pub dns_refresh: Duration,
    /// Streams one HTTP/2 connection carries at once before another is opened.
    pub max_concurrent_streams: u32,
}

/// The HTTP version an upstream's targets speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (plain or over TLS).
    #[default]
    Http1,
    /// HTTP/2 without TLS, with prior knowledge (`h2c`).
    H2c,
    /// HTTP/2 over TLS, agreed by ALPN (`h2`).
    H2,
}

impl UpstreamProtocol {
    /// Whether this is HTTP/2 (either kind).
    pub fn is_http2(self) -> bool {
        !matches!(self, Self::Http1)
    }
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
    /// HTTP/JSON → gRPC transcoding to an upstream instead of proxying.
    pub transcode: Option<super::transcode::TranscodeConfig>,
    /// A literal prefix removed before proxying.
    pub strip_prefix: Option<String>,
    /// A new upstream path built from captures.
    pub rewrite: Option<PathTemplate>,
    /// Response timeout override.
    pub timeout: Option<Duration>,
    /// How failed upstream attempts are retried.
    pub retry: Arc<RetryPolicy>,
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
    /// Which `Upgrade` protocols pass to the upstream, and the tunnels' limits.
    pub tunnel: super::tunnel::TunnelConfig,
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
        assert_eq!(
            duration("server.tunnel-idle-timeout"),
            crate::config::DEFAULT_TUNNEL_IDLE_TIMEOUT
        );
        assert_eq!(
            duration("server.tunnel-max-lifetime"),
            crate::config::DEFAULT_TUNNEL_MAX_LIFETIME
        );
        assert_eq!(
            table["route upgrade"],
            format!("{:?}", crate::config::DEFAULT_UPGRADE).replace(' ', "")
        );
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
            number("upstreams.NAME.max-concurrent-streams"),
            u64::from(DEFAULT_MAX_CONCURRENT_STREAMS)
        );
        assert_eq!(table["upstreams.NAME.protocol"], "http1");
        assert_eq!(duration("upstreams.NAME.dns-refresh"), DEFAULT_DNS_REFRESH);
        assert_eq!(UpstreamProtocol::default(), UpstreamProtocol::Http1);
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
        let percent = |key: &str| -> u32 { table[key].parse().expect(key) };
        let up = |key: &str| format!("upstreams.NAME.{key}");
        assert_eq!(
            duration(&up("health-check.interval")),
            DEFAULT_CHECK_INTERVAL
        );
        assert_eq!(duration(&up("health-check.timeout")), DEFAULT_CHECK_TIMEOUT);
        assert_eq!(
            percent(&up("health-check.healthy-threshold")),
            DEFAULT_HEALTHY_THRESHOLD
        );
        assert_eq!(
            percent(&up("health-check.unhealthy-threshold")),
            DEFAULT_UNHEALTHY_THRESHOLD
        );
        assert_eq!(
            percent(&up("outlier.consecutive-5xx")),
            DEFAULT_CONSECUTIVE_5XX
        );
        assert_eq!(
            percent(&up("outlier.consecutive-failures")),
            DEFAULT_CONSECUTIVE_FAILURES
        );
        assert_eq!(
            duration(&up("outlier.base-ejection")),
            DEFAULT_BASE_EJECTION
        );
        assert_eq!(duration(&up("outlier.max-ejection")), DEFAULT_MAX_EJECTION);
        assert_eq!(
            percent(&up("outlier.max-ejected-percent")),
            DEFAULT_MAX_EJECTED_PERCENT
        );
        assert_eq!(
            percent(&up("outlier.panic-threshold")),
            DEFAULT_PANIC_THRESHOLD
        );
        assert_eq!(
            percent(&up("breaker.minimum-requests")),
            DEFAULT_BREAKER_MINIMUM_REQUESTS
        );
        assert_eq!(duration(&up("breaker.window")), DEFAULT_BREAKER_WINDOW);
        assert_eq!(
            duration(&up("breaker.recovery-timeout")),
            DEFAULT_RECOVERY_TIMEOUT
        );
        assert_eq!(
            percent(&up("retry-budget.percent")),
            DEFAULT_RETRY_BUDGET_PERCENT
        );
        assert_eq!(percent(&up("retry-budget.min")), DEFAULT_RETRY_BUDGET_MIN);
        assert_eq!(percent("route retry.attempts"), DEFAULT_RETRY_ATTEMPTS);
        assert_eq!(duration("route retry.backoff"), DEFAULT_RETRY_BACKOFF);
        assert_eq!(
            duration("route retry.max-backoff"),
            DEFAULT_RETRY_MAX_BACKOFF
        );
        assert_eq!(bytes("route retry.buffer-body"), DEFAULT_RETRY_BUFFER_BODY);
        assert_eq!(
            table["listeners[].min-tls-version"],
            DEFAULT_MIN_TLS_VERSION
        );
        assert_eq!(
            table["listeners[].certificates[].client-auth"],
            DEFAULT_CLIENT_AUTH
        );
        assert_eq!(table["state.backend"], DEFAULT_STATE_BACKEND);
        assert_eq!(table["state.url"], "none");
        assert_eq!(table["state.cluster"], DEFAULT_STATE_CLUSTER.to_string());
        assert_eq!(table["state.key-prefix"], DEFAULT_STATE_KEY_PREFIX);
        assert_eq!(duration("state.timeout"), DEFAULT_STATE_TIMEOUT);
        assert_eq!(
            duration("state.connect-timeout"),
            DEFAULT_STATE_CONNECT_TIMEOUT
        );
        assert_eq!(
            number("state.connections"),
            u64::from(DEFAULT_STATE_CONNECTIONS)
        );
        assert_eq!(table["state.on-unavailable"], DEFAULT_STATE_ON_UNAVAILABLE);
        assert_eq!(
            number("state.instances"),
            u64::from(DEFAULT_STATE_INSTANCES)
        );
        assert_eq!(
            number("state.breaker-failures"),
            u64::from(DEFAULT_STATE_BREAKER_FAILURES)
        );
        assert_eq!(
            duration("state.breaker-cool-off"),
            DEFAULT_STATE_BREAKER_COOL_OFF
        );
        assert_eq!(
            table["route transcode.stream-format"],
            crate::config::DEFAULT_STREAM_FORMAT
        );
        assert_eq!(
            table["route transcode.emit-defaults"],
            crate::config::DEFAULT_EMIT_DEFAULTS.to_string()
        );
        assert_eq!(
            table["route transcode.proto-field-names"],
            crate::config::DEFAULT_PROTO_FIELD_NAMES.to_string()
        );
        assert_eq!(table.len(), 71, "every row is checked: {table:?}");
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://app:s3cret@host/1"),
            "redis://app:***@host/1"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            mask_url_passwords(r#"url = "redis://u:pw@h:1/0" # and "redis://:x@y""#),
            r#"url = "redis://u:**@h:1/0" # and "redis://:*@y""#
        );
        assert_eq!(mask_url_passwords("no urls here"), "no urls here");
    }
}
