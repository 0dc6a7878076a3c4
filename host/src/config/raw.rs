//! The config file as written: serde structs that mirror `gateway.toml` one to one.
//!
//! Unknown keys are rejected everywhere. Values that later checks refer back to are
//! wrapped in [`Spanned`] so that an error can point at the file, line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::resilience::{RawBreaker, RawHealthCheck, RawOutlier, RawRetry, RawRetryBudget};
use super::units::{ByteSize, ConfigDuration};

/// Declares a validated name type: letters, digits, `-` and `_`, not empty. A bad name is
/// a decode error that points at it.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(name: String) -> Result<Self, String> {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if valid {
                    Ok(Self(name))
                } else {
                    Err(format!(
                        "`{}` is not a valid {} name: use letters, digits, `-` and `_`",
                        crate::text::escape_control(&name),
                        $what
                    ))
                }
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A route's name.
    RouteName,
    "route"
);
name_type!(
    /// An upstream's name.
    UpstreamName,
    "upstream"
);
name_type!(
    /// A plugin's name (its file is `NAME.wasm`).
    PluginName,
    "plugin"
);

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// Listeners and connection hygiene.
    #[serde(default)]
    pub server: RawServer,
    /// Where plugins live.
    #[serde(default)]
    pub plugins: RawPlugins,
    /// Default sandbox limits for every stage.
    #[serde(default)]
    pub limits: RawLimits,
    /// The admin API.
    pub admin: Option<RawAdmin>,
    /// Distributed tracing (OTLP export).
    pub tracing: Option<RawTracing>,
    /// Listeners beyond `server.listen`: plain, or TLS when they have certificates.
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    /// The response cache shared by routes with `cache`.
    #[serde(default)]
    pub cache: RawCacheStore,
    /// Named upstreams.
    #[serde(default)]
    pub upstreams: BTreeMap<UpstreamName, Spanned<RawUpstream>>,
    /// Routes, matched most specific first.
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    /// Where state shared by plugin instances (and gateways) lives.
    pub state: Option<Spanned<RawState>>,
}

/// `[state]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawState {
    /// `"local"` (in-process, the default) or `"redis"`.
    pub backend: Option<Spanned<String>>,
    /// The Redis URL, `redis://[user:password@]host:port[/db]`.
    pub url: Option<Spanned<String>>,
    /// The URL names one node of a Redis Cluster.
    pub cluster: Option<bool>,
    /// Every key the gateway writes starts with this and `:`.
    pub key_prefix: Option<Spanned<String>>,
    /// The hard limit on one Redis call.
    pub timeout: Option<ConfigDuration>,
    /// Time allowed to open a connection to Redis.
    pub connect_timeout: Option<ConfigDuration>,
    /// Multiplexed connections each worker thread keeps open to Redis (to each node in a
    /// cluster).
    pub connections: Option<Spanned<u32>>,
    /// While Redis is unavailable: `"closed"`, `"open"` or `"local"`.
    pub on_unavailable: Option<Spanned<String>>,
    /// Gateways sharing the limits; `"local"` divides each limit by this.
    pub instances: Option<Spanned<u32>>,
    /// Consecutive failed calls that open the breaker.
    pub breaker_failures: Option<Spanned<u32>>,
    /// How long an open breaker keeps calls away from Redis.
    pub breaker_cool_off: Option<ConfigDuration>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawServer {
    /// Addresses to listen on (`"127.0.0.1:8080"`).
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Option<ConfigDuration>,
    /// A connection with no bytes moving either way for this long is closed.
    pub idle_timeout: Option<ConfigDuration>,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: Option<ByteSize>,
    /// Largest request body accepted on any route; larger gets 413. Unlimited when absent.
    pub max_body_bytes: Option<ByteSize>,
    /// Connections served at once; further connections wait in the listen backlog.
    pub max_connections: Option<u32>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Option<ConfigDuration>,
    /// What to do with `%2F` and `%5C` in request paths: `reject` (400), `keep`, `decode`.
    pub escaped_slashes: Option<Spanned<String>>,
    /// Merge runs of `/` in request paths into one before routing.
    pub merge_slashes: Option<bool>,
    /// Default for routes: an upgraded connection (WebSocket) with no bytes moving either
    /// way for this long is closed.
    pub tunnel_idle_timeout: Option<Spanned<ConfigDuration>>,
    /// Default for routes: an upgraded connection is closed this long after it opened.
    pub tunnel_max_lifetime: Option<Spanned<ConfigDuration>>,
}

/// `[[listeners]]`: one listen address, plain or TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawListener {
    /// The address (`"0.0.0.0:8443"`).
    pub address: Spanned<String>,
    /// The lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_tls_version: Option<Spanned<String>>,
    /// Certificates chosen by SNI; the listener speaks TLS when there is at least one.
    #[serde(default)]
    pub certificates: Vec<Spanned<RawCertificate>>,
}

/// `[[listeners.certificates]]`: a certificate, the names it serves and its client policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCertificate {
    /// PEM certificate chain, end-entity first (relative to the config file).
    pub cert: Spanned<String>,
    /// PEM private key (relative to the config file).
    pub key: Spanned<String>,
    /// SNI names served (`api.example.com`, `*.example.com`); default: the certificate's DNS names.
    pub names: Option<Vec<Spanned<String>>>,
    /// Serve clients that send no SNI, or a name no certificate has (default: the first).
    pub default: Option<bool>,
    /// Client certificates: `"off"` (default), `"optional"` or `"required"`.
    pub client_auth: Option<Spanned<String>>,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca: Option<Spanned<String>>,
}

/// `[plugins]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPlugins {
    /// The plugin directory, relative to the config file.
    pub dir: Option<String>,
    /// Where compiled plugins are cached, relative to the config file.
    pub cache_dir: Option<String>,
    /// Whether to watch the plugin directory and the config file for changes.
    pub watch: Option<bool>,
    /// Plugin instances alive at once across all stages (the sandbox pool size).
    pub max_instances: Option<u32>,
    /// Header fields one message from a plugin may hold (default: 100, as for clients).
    pub output_header_fields: Option<usize>,
    /// Bytes of header fields one message from a plugin may hold (default: `server.max-header-bytes`).
    pub output_header_bytes: Option<ByteSize>,
    /// Calls one aggregate plan may make.
    pub aggregate_calls: Option<usize>,
    /// Response body bytes the calls of one aggregate plan may return together.
    pub aggregate_bytes: Option<ByteSize>,
    /// Response body bytes all aggregate calls in flight may hold at once.
    pub aggregate_bytes_total: Option<ByteSize>,
    /// Counter keys one plugin may hold at once.
    pub counter_keys: Option<usize>,
    /// Bytes of counter keys one plugin may hold at once.
    pub counter_bytes: Option<ByteSize>,
    /// Per-plugin limit overrides, keyed by plugin name.
    #[serde(default)]
    pub limits: BTreeMap<PluginName, Spanned<RawLimits>>,
}

/// Sandbox limits: `[limits]`, `[plugins.limits.NAME]` or a stage's `limits`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLimits {
    /// Linear memory cap per instance.
    pub memory: Option<ByteSize>,
    /// Wall-clock deadline per call.
    pub deadline: Option<ConfigDuration>,
    /// Fuel (roughly, wasm instructions) per call; unlimited when absent.
    pub fuel: Option<u64>,
    /// Keep instances between calls instead of a fresh one per call (opt-in).
    pub reuse: Option<RawReuse>,
}

/// A `limits.reuse` table: the recycle policy of reused instances.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawReuse {
    /// Calls an instance serves before it is dropped.
    pub max_calls: Option<u32>,
    /// An instance whose linear memory grew past this is dropped after its call.
    pub max_memory: Option<ByteSize>,
    /// Idle instances kept per stage.
    pub max_idle: Option<u32>,
    /// An instance idle for this long is dropped.
    pub idle_timeout: Option<ConfigDuration>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAdmin {
    /// Address of the admin API (keep it on loopback).
    pub listen: Spanned<String>,
    /// Serve Prometheus metrics at `/metrics` (and collect them).
    pub metrics: Option<bool>,
}

/// `[tracing]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTracing {
    /// The OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`).
    pub endpoint: Spanned<String>,
    /// The share of new traces recorded, 0.0 to 1.0.
    pub sampling_ratio: Option<Spanned<f64>>,
    /// Follow an incoming `traceparent`'s sampled flag instead of deciding here.
    pub trust_incoming_sampled: Option<bool>,
    /// `service.name` of the exported spans.
    pub service_name: Option<Spanned<String>>,
    /// How often finished spans are exported.
    pub export_interval: Option<ConfigDuration>,
    /// How long one export may take.
    pub export_timeout: Option<ConfigDuration>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUpstream {
    /// `host:port` or `http://host:port` targets.
    pub targets: Spanned<Vec<Spanned<String>>>,
    /// `"least-request"` (default), `"round-robin"`, `"weighted-round-robin"`, `"random"`
    /// or `"hash"`.
    pub balance: Option<Spanned<String>>,
    /// What `balance = "hash"` hashes: `client-ip`, `header:NAME`, `cookie:NAME`, `param:NAME`.
    pub hash_on: Option<Spanned<String>>,
    /// Active health checks.
    pub health_check: Option<Spanned<RawHealthCheck>>,
    /// Passive outlier detection.
    pub outlier: Option<Spanned<RawOutlier>>,
    /// The circuit breaker.
    pub breaker: Option<Spanned<RawBreaker>>,
    /// Retries in flight allowed.
    pub retry_budget: Option<Spanned<RawRetryBudget>>,
    /// Time allowed to open a connection to a target.
    pub connect_timeout: Option<ConfigDuration>,
    /// Time allowed for the upstream's response headers.
    pub timeout: Option<ConfigDuration>,
    /// Idle keep-alive connections kept per target.
    pub max_idle_per_target: Option<usize>,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Option<ConfigDuration>,
    /// How often hostname targets are resolved again.
    pub dns_refresh: Option<ConfigDuration>,
    /// `"http1"` (default), `"h2c"` (HTTP/2 without TLS, prior knowledge) or `"h2"` (HTTP/2
    /// over TLS, agreed by ALPN).
    pub protocol: Option<Spanned<String>>,
    /// Streams one HTTP/2 connection carries at once before another is opened.
    pub max_concurrent_streams: Option<Spanned<u32>>,
    /// Speak TLS to `host:port` targets (`https://` targets always do).
    pub tls: Option<bool>,
    /// The name sent as SNI and verified in the certificate (default: the target's host).
    pub tls_server_name: Option<Spanned<String>>,
    /// PEM bundle of CAs to verify targets with, instead of the system's roots.
    pub tls_ca: Option<Spanned<String>>,
    /// PEM certificate chain presented to targets that ask for one (upstream mTLS).
    pub tls_client_cert: Option<Spanned<String>>,
    /// The private key of `tls-client-cert`.
    pub tls_client_key: Option<Spanned<String>>,
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRoute {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<RouteName>,
    /// Host names this route answers (`api.example.com`, `*.example.com`); any host when absent.
    pub hosts: Option<Vec<Spanned<String>>>,
    /// HTTP methods; any method when absent.
    pub methods: Option<Vec<Spanned<String>>>,
    /// A path pattern: exact, or with `{param}` and a trailing `{*rest}` capture.
    pub path: Option<Spanned<String>>,
    /// A path prefix, matched on segment boundaries.
    pub prefix: Option<Spanned<String>>,
    /// The upstream to proxy to (absent when an aggregate stage answers).
    pub upstream: Option<Spanned<UpstreamName>>,
    /// A literal prefix removed from the path before proxying.
    pub strip_prefix: Option<Spanned<String>>,
    /// A new path for the upstream, with `{param}` captures filled in.
    pub rewrite: Option<Spanned<String>>,
    /// Overrides the upstream's response timeout.
    pub timeout: Option<ConfigDuration>,
    /// How failed upstream attempts are retried.
    pub retry: Option<Spanned<RawRetry>>,
    /// Send the client's Host header to the upstream instead of the target's.
    pub preserve_host: Option<bool>,
    /// Overrides `server.max-body-bytes` for this route.
    pub max_body_bytes: Option<ByteSize>,
    /// A static answer (or redirect) instead of an upstream.
    pub respond: Option<Spanned<RawRespond>>,
    /// Serve a gRPC upstream as a JSON API from its `.proto` files.
    pub transcode: Option<Spanned<super::transcode::RawTranscode>>,
    /// Response compression: `true` for the defaults, or a table.
    pub compress: Option<Spanned<RawCompress>>,
    /// Response caching: `true` for the defaults, or a table.
    pub cache: Option<Spanned<RawCache>>,
    /// `Upgrade` protocols passed to the upstream (default `["websocket"]`; `[]` refuses all).
    pub upgrade: Option<Spanned<Vec<Spanned<String>>>>,
    /// Overrides `server.tunnel-idle-timeout` for this route.
    pub tunnel_idle_timeout: Option<Spanned<ConfigDuration>>,
    /// Overrides `server.tunnel-max-lifetime` for this route.
    pub tunnel_max_lifetime: Option<Spanned<ConfigDuration>>,
    /// The WASM stages, in order.
    #[serde(default)]
    pub stages: Vec<Spanned<RawStage>>,
}

/// A route's `respond`: a static answer, or a redirect when `location` is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRespond {
    /// Status code: 200 by default, 302 with `location`.
    pub status: Option<u16>,
    /// Response header fields.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Option<String>,
    /// A redirect target, with `{param}` captures of the route's path filled in.
    pub location: Option<String>,
}

/// One entry of a route's `stages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawStage {
    /// Plugin name: the file `NAME.wasm` in the plugin directory.
    pub plugin: Spanned<PluginName>,
    /// The stage's own settings, handed to the plugin as JSON.
    pub config: Option<toml::Table>,
    /// `"fail-closed"` (default) or `"fail-open"`.
    pub on_error: Option<Spanned<String>>,
    /// Body buffering for this stage.
    pub body: Option<RawBody>,
    /// Limit overrides for this stage.
    pub limits: Option<RawLimits>,
    /// Upstreams an aggregate stage may call.
    pub upstreams: Option<Vec<Spanned<UpstreamName>>>,
}

/// A stage's `body` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBody {
    /// Hand the whole body to the stage.
    #[serde(default)]
    pub buffer: bool,
    /// The largest body buffered; a larger one gets 413.
    pub max_bytes: Option<ByteSize>,
}

/// A route's `compress`: `true` (or `false`) for the defaults, or a table of settings.
#[derive(Debug)]
pub enum RawCompress {
    /// `compress = true` or `compress = false`.
    Enabled(bool),
    /// `compress = { … }`.
    Table(RawCompressTable),
}

impl<'de> Deserialize<'de> for RawCompress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CompressVisitor;
        impl<'de> Visitor<'de> for CompressVisitor {
            type Value = RawCompress;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true`, `false` or a table such as { encodings = [\"gzip\"] }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawCompress, E> {
                Ok(RawCompress::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCompress, A::Error> {
                // Through the table's own derive, so unknown keys are named as everywhere else.
                RawCompressTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawCompress::Table)
            }
        }
        deserializer.deserialize_any(CompressVisitor)
    }
}

/// The settings of a route's `compress` table; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCompressTable {
    /// Content codings offered (`br`, `zstd`, `gzip`), in the gateway's order of preference.
    pub encodings: Option<Spanned<Vec<Spanned<String>>>>,
    /// Compression level per coding.
    pub level: Option<RawCompressLevels>,
    /// Bodies known to be smaller than this are sent as they are.
    pub min_bytes: Option<ByteSize>,
    /// Media types worth compressing: `text/*`, `application/json`, `application/*+json`, …
    pub types: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A `compress.level` table: the level of each coding.
#[derive(Debug, Default)]
pub struct RawCompressLevels {
    /// gzip: 1 (fastest) to 9 (smallest).
    pub gzip: Option<Spanned<i64>>,
    /// Brotli: 0 (fastest) to 11 (smallest).
    pub br: Option<Spanned<i64>>,
    /// zstd: 1 (fastest) to 19 (smallest).
    pub zstd: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for RawCompressLevels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The table as written; the wrapper only words the error for anything else.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Levels {
            gzip: Option<Spanned<i64>>,
            br: Option<Spanned<i64>>,
            zstd: Option<Spanned<i64>>,
        }
        struct LevelsVisitor;
        impl<'de> Visitor<'de> for LevelsVisitor {
            type Value = RawCompressLevels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a level per coding, such as { gzip = 6, br = 4, zstd = 3 }")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCompressLevels, A::Error> {
                let Levels { gzip, br, zstd } =
                    Levels::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawCompressLevels { gzip, br, zstd })
            }
        }
        deserializer.deserialize_any(LevelsVisitor)
    }
}

/// `[cache]`: the memory all routes' cached responses share.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCacheStore {
    /// Bytes of cached responses, all routes together.
    pub max_bytes: Option<ByteSize>,
}

/// A route's `cache`: `true` (or `false`) for the defaults, or a table of settings.
#[derive(Debug)]
pub enum RawCache {
    /// `cache = true` or `cache = false`.
    Enabled(bool),
    /// `cache = { … }`.
    Table(RawCacheTable),
}

impl<'de> Deserialize<'de> for RawCache {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CacheVisitor;
        impl<'de> Visitor<'de> for CacheVisitor {
            type Value = RawCache;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true`, `false` or a table such as { max-bytes = \"64MiB\" }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawCache, E> {
                Ok(RawCache::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCache, A::Error> {
                RawCacheTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawCache::Table)
            }
        }
        deserializer.deserialize_any(CacheVisitor)
    }
}

/// The settings of a route's `cache` table; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCacheTable {
    /// Bytes of this route's cached responses.
    pub max_bytes: Option<ByteSize>,
    /// Larger responses are passed on, not stored.
    pub max_object_bytes: Option<ByteSize>,
    /// Freshness of a storable response that states none (no `max-age`, `Expires`, …).
    pub default_ttl: Option<ConfigDuration>,
    /// The longest a response stays fresh, whatever it states.
    pub max_ttl: Option<ConfigDuration>,
    /// Request header fields that are part of the key.
    pub key_headers: Option<Vec<Spanned<String>>>,
    /// Cookies that are part of the key.
    pub key_cookies: Option<Vec<Spanned<String>>>,
    /// How long a request waits for another one's response for the same key.
    pub coalesce_wait: Option<ConfigDuration>,
    /// How long a key whose response could not be stored skips the cache.
    pub hit_for_pass: Option<ConfigDuration>,
}
