//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! One [`Metrics`] is made at startup and shared (through the [`Runtime`]) by every live
//! state, so counters survive reloads. Label values are bounded: route, upstream, target and
//! plugin names come from the config and the plugin directory, hashes from plugin files, and
//! every other label from a fixed list; nothing a client sends becomes a label.
//!
//! The request path never looks a series up by its labels: live states resolve handles
//! ([`RouteMetrics`], [`UpstreamMetrics`], [`StageMetrics`]) when they are built, and the
//! request path only bumps atomics (or a histogram's short lock) through them. With metrics
//! off (`admin.metrics = false`, or no admin listener) there are no handles at all.
//!
//! [`Runtime`]: crate::runtime::Runtime

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::body::{BodyHook, BoxError};
use crate::custom_metrics::{CustomCollector, CustomMetrics, MAX_SERIES};
use crate::trace::Trace;
use crate::tunnel::{CloseReason, Moved};

/// `Content-Type` of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text exposition (0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Buckets of request and upstream latencies, in seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of plugin call and instantiation times, in seconds.
const CALL_BUCKETS: [f64; 14] = [
    0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
/// Buckets of plugin compile times, in seconds.
const COMPILE_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Characters of a plugin's content hash used as a label.
pub const HASH_LABEL_LEN: usize = 12;

// === Label sets ===

/// `route`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

/// `route`, `method`, `status`: method and status are classes from fixed lists.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: &'static str,
}

/// `route`, `result` (from a fixed list).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheResultLabels {
    route: Arc<str>,
    result: &'static str,
}

/// `route`, `reason` (from [`CloseReason::ALL`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelCloseLabels {
    route: Arc<str>,
    reason: &'static str,
}

/// `route`, `from` (`client` or `upstream`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelBytesLabels {
    route: Arc<str>,
    from: &'static str,
}

/// `listener`, `protocol`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    listener: Arc<str>,
    protocol: &'static str,
}

/// `listener`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    listener: Arc<str>,
    reason: &'static str,
}

/// `upstream`, `target`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    upstream: Arc<str>,
    target: Arc<str>,
}

/// `upstream`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    upstream: Arc<str>,
    reason: &'static str,
}

/// `upstream`, `target`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: Arc<str>,
    target: Arc<str>,
    kind: &'static str,
}

/// `upstream`, `target`, `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    upstream: Arc<str>,
    target: Arc<str>,
    state: &'static str,
}

/// A stage: `route`, `stage` (its position), `plugin`, `hash` (of the plugin file).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    route: Arc<str>,
    stage: u32,
    plugin: Arc<str>,
    hash: Arc<str>,
}

/// A stage and one more fixed-list label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageKindLabels {
    #[prometheus(flatten)]
    stage: StageLabels,
    kind: &'static str,
}

/// A stage and the export called.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    #[prometheus(flatten)]
    stage: StageLabels,
    export: &'static str,
}

/// A stage and a request-phase outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    #[prometheus(flatten)]
    stage: StageLabels,
    outcome: &'static str,
}

/// `plugin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: Arc<str>,
}

/// `op`: a state operation, from a fixed list.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateOpLabels {
    op: &'static str,
}

/// `kind`: a state error kind, from a fixed list.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateKindLabels {
    kind: &'static str,
}

/// `policy`: an `on-unavailable` policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatePolicyLabels {
    policy: &'static str,
}

/// `kind` (plugin or config), `outcome`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    kind: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
/// A latency histogram whose buckets keep the trace id of a sampled observation.
type TracedHistogram = HistogramWithExemplars<TraceExemplar>;
type TracedFamily<L> = Family<L, TracedHistogram, fn() -> TracedHistogram>;

/// The exemplar label of a latency observation: the trace it belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    trace_id: HexTraceId,
}

/// A trace id, written in hex only when the exposition is encoded (no text per request).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct HexTraceId(opentelemetry::trace::TraceId);

impl prometheus_client::encoding::EncodeLabelValue for HexTraceId {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{}", self.0)
    }
}

/// Observes `took` in `histogram`, with the trace as exemplar when it is sampled.
fn observe_traced(histogram: &TracedHistogram, took: Duration, trace: Option<&Trace>) {
    let exemplar = trace
        .filter(|trace| trace.is_sampled())
        .map(|trace| TraceExemplar {
            trace_id: HexTraceId(trace.id()),
        });
    histogram.observe(took.as_secs_f64(), exemplar, None);
}

fn latency_histogram() -> TracedHistogram {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

fn traced_call_histogram() -> TracedHistogram {
    HistogramWithExemplars::new(CALL_BUCKETS.into_iter())
}

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

fn compile_histogram() -> Histogram {
    Histogram::new(COMPILE_BUCKETS)
}

// === Metrics ===

/// Every metric family the gateway exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// Metrics plugins define (`wasmgate_custom_*`).
    pub custom: Arc<CustomMetrics>,
    requests: Family<RequestLabels, Counter>,
    request_duration: TracedFamily<RouteLabels>,
    request_bytes: Family<RouteLabels, Counter>,
    response_bytes: Family<RouteLabels, Counter>,
    connections_open: Family<ConnectionLabels, Gauge>,
    connections_refused: Family<RefusalLabels, Counter>,
    upstream_requests: Family<TargetLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_duration: TracedFamily<TargetLabels>,
    upstream_connections: Family<PoolLabels, Gauge>,
    upstream_usable: Family<TargetLabels, Gauge>,
    upstream_ejections: Family<TargetLabels, Counter>,
    upstream_retries: Family<TargetLabels, Counter>,
    upstream_retries_refused: Family<TargetLabels, Counter>,
    upstream_breaker_refusals: Family<BreakerLabels, Counter>,
    plugin_calls: Family<CallLabels, Counter>,
    plugin_duration: TracedFamily<StageLabels>,
    plugin_outcomes: Family<OutcomeLabels, Counter>,
    plugin_errors: Family<StageKindLabels, Counter>,
    plugin_memory: Family<StageLabels, Gauge>,
    plugin_instantiate: HistogramFamily<StageLabels>,
    plugin_reused: Family<StageLabels, Counter>,
    plugin_counter_errors: Family<StageLabels, Counter>,
    plugin_compile: HistogramFamily<PluginLabels>,
    reloads: Family<ReloadLabels, Counter>,
    state_calls: Family<StateOpLabels, Counter>,
    state_duration: Histogram,
    state_errors: Family<StateKindLabels, Counter>,
    state_fallbacks: Family<StatePolicyLabels, Counter>,
    state_breaker_open: Gauge,
    cache_lookups: Family<CacheResultLabels, Counter>,
    cache_evictions: Family<RouteLabels, Counter>,
    cache_bytes: Family<RouteLabels, Gauge>,
    tunnels_open: Family<RouteLabels, Gauge>,
    tunnels_closed: Family<TunnelCloseLabels, Counter>,
    tunnel_bytes: Family<TunnelBytesLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, registered under the `wasmgate_` prefix.
    pub fn new() -> Self {
        let metrics = Self {
            registry: Registry::with_prefix("wasmgate"),
            custom: Arc::new(CustomMetrics::new(MAX_SERIES)),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            connections_open: Family::default(),
            connections_refused: Family::default(),
            upstream_requests: Family::default(),
            upstream_errors: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_connections: Family::default(),
            upstream_usable: Family::default(),
            upstream_ejections: Family::default(),
            upstream_retries: Family::default(),
            upstream_retries_refused: Family::default(),
            upstream_breaker_refusals: Family::default(),
            plugin_calls: Family::default(),
            plugin_duration: Family::new_with_constructor(traced_call_histogram),
            plugin_outcomes: Family::default(),
            plugin_errors: Family::default(),
            plugin_memory: Family::default(),
            plugin_instantiate: Family::new_with_constructor(call_histogram),
            plugin_reused: Family::default(),
            plugin_counter_errors: Family::default(),
            plugin_compile: Family::new_with_constructor(compile_histogram),
            reloads: Family::default(),
            state_calls: Family::default(),
            state_duration: call_histogram(),
            state_errors: Family::default(),
            state_fallbacks: Family::default(),
            state_breaker_open: Gauge::default(),
            cache_lookups: Family::default(),
            cache_evictions: Family::default(),
            cache_bytes: Family::default(),
            tunnels_open: Family::default(),
            tunnels_closed: Family::default(),
            tunnel_bytes: Family::default(),
        };
        metrics.registered()
    }

    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register_collector(Box::new(CustomCollector(self.custom.clone())));
        r.register(
            "cache_lookups",
            "Requests the response cache saw, by route and result: hit (fresh, or stale as allowed), miss (went upstream), stale (served stale: while revalidating or on an upstream error), revalidated (a stale response the upstream confirmed with 304), coalesced (streamed from another request's upstream response), pass (not cacheable: method, request directives or hit-for-pass)",
            self.cache_lookups.clone(),
        );
        r.register(
            "cache_evictions",
            "Cached responses evicted to keep a route's cache within its bytes",
            self.cache_evictions.clone(),
        );
        r.register_with_unit(
            "cache",
            "Bytes of responses a route's cache holds",
            Unit::Bytes,
            self.cache_bytes.clone(),
        );
        r.register(
            "tunnels_open",
            "Upgraded connections (WebSocket) open through the gateway, by route",
            self.tunnels_open.clone(),
        );
        r.register(
            "tunnels_closed",
            "Upgraded connections closed, by route and reason: client_closed, upstream_closed, idle_timeout, max_lifetime, shutdown, error",
            self.tunnels_closed.clone(),
        );
        r.register_with_unit(
            "tunnel",
            "Bytes carried by closed tunnels, by route and the side that sent them (client or upstream)",
            Unit::Bytes,
            self.tunnel_bytes.clone(),
        );
        r.register(
            "requests",
            "Requests answered, by route (empty: no route matched), method class and status class",
            self.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a request's arrival to the end of its response body, by route",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register_with_unit(
            "request_body",
            "Request body bytes read from clients, by route",
            Unit::Bytes,
            self.request_bytes.clone(),
        );
        r.register_with_unit(
            "response_body",
            "Response body bytes sent to clients, by route",
            Unit::Bytes,
            self.response_bytes.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open, by listener and protocol (pending: no request yet)",
            self.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections refused or cut, by listener and reason: limit (max-connections reached, the listener waits), header_timeout, bad_head (400), head_too_large (431)",
            self.connections_refused.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests sent to an upstream target (each attempt counts)",
            self.upstream_requests.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream attempts by kind: connect, timeout, reset (the exchange broke off), 5xx (the target answered 5xx)",
            self.upstream_errors.clone(),
        );
        r.register_with_unit(
            "upstream_duration",
            "Time from sending a request to a target to its response head",
            Unit::Seconds,
            self.upstream_duration.clone(),
        );
        r.register(
            "upstream_connections",
            "Keep-alive connections to a target, by state: idle (pooled) or active (carrying a request)",
            self.upstream_connections.clone(),
        );
        r.register(
            "upstream_target_healthy",
            "Whether a target passes its active health checks and is not drained (1) or not (0); ejections count in upstream_ejections",
            self.upstream_usable.clone(),
        );
        r.register(
            "upstream_ejections",
            "Times outlier detection ejected a target",
            self.upstream_ejections.clone(),
        );
        r.register(
            "upstream_retries",
            "Attempts retried after a failed attempt on this target",
            self.upstream_retries.clone(),
        );
        r.register(
            "upstream_retries_refused",
            "Retries the upstream's retry budget did not allow after a failed attempt on this target",
            self.upstream_retries_refused.clone(),
        );
        r.register(
            "upstream_breaker_refusals",
            "Requests the upstream's circuit breaker refused at once (503), by reason: open, full",
            self.upstream_breaker_refusals.clone(),
        );
        r.register(
            "plugin_calls",
            "Plugin calls by stage (route, position, plugin, content hash) and export",
            self.plugin_calls.clone(),
        );
        r.register_with_unit(
            "plugin_call_duration",
            "Time of one plugin call, instantiation included",
            Unit::Seconds,
            self.plugin_duration.clone(),
        );
        r.register(
            "plugin_outcomes",
            "What a stage decided for a request: continue, answered (the plugin answered, or an aggregate merged), refused (an auth or rate-limit refusal), failed (the call failed)",
            self.plugin_outcomes.clone(),
        );
        r.register(
            "plugin_errors",
            "Failed plugin calls by kind: trap, deadline, fuel, memory_cap, invalid_output, pool_exhausted",
            self.plugin_errors.clone(),
        );
        r.register_with_unit(
            "plugin_memory_high_water",
            "The most linear memory one instance of a stage has held",
            Unit::Bytes,
            self.plugin_memory.clone(),
        );
        r.register_with_unit(
            "plugin_instantiate",
            "Time to instantiate a plugin for a call (calls on a reused instance do not count)",
            Unit::Seconds,
            self.plugin_instantiate.clone(),
        );
        r.register(
            "plugin_reuse_hits",
            "Calls served by an instance from the stage's reuse pool",
            self.plugin_reused.clone(),
        );
        r.register(
            "plugin_increment_errors",
            "Errors the shared counter store returned to a stage's counters.increment",
            self.plugin_counter_errors.clone(),
        );
        r.register_with_unit(
            "plugin_compile",
            "Time to compile a plugin (loads from the compile cache do not count)",
            Unit::Seconds,
            self.plugin_compile.clone(),
        );
        r.register(
            "reloads",
            "Hot reload results: kind (plugin, config), outcome (loaded, unloaded, rejected) and reason (read, compile, world, validate, config; empty unless rejected)",
            self.reloads.clone(),
        );
        r.register(
            "state_calls",
            "Calls to the shared state backend (Redis), by operation: increment, window, gcra, kv_get, kv_set, kv_compare_and_set, kv_delete",
            self.state_calls.clone(),
        );
        r.register_with_unit(
            "state_call_duration",
            "Time of one call to the shared state backend (Redis), timeouts included",
            Unit::Seconds,
            self.state_duration.clone(),
        );
        r.register(
            "state_errors",
            "Failed or refused calls to the shared state backend by kind: timeout, connection, server, answer, breaker_open (not called: the breaker is open)",
            self.state_errors.clone(),
        );
        r.register(
            "state_unavailable",
            "State operations answered by the on-unavailable policy (closed, open, local) because the backend failed or its breaker was open",
            self.state_fallbacks.clone(),
        );
        r.register(
            "state_breaker_open",
            "1 while the shared state backend's breaker is open (calls kept away from Redis), else 0",
            self.state_breaker_open.clone(),
        );
        self
    }

    /// Handles for the shared state backend.
    pub fn state(&self) -> StateMetrics {
        StateMetrics {
            inner: Arc::new(StateSeries {
                calls_family: self.state_calls.clone(),
                errors_family: self.state_errors.clone(),
                fallbacks_family: self.state_fallbacks.clone(),
                calls: std::array::from_fn(|_| OnceLock::new()),
                errors: std::array::from_fn(|_| OnceLock::new()),
                fallbacks: std::array::from_fn(|_| OnceLock::new()),
                duration: self.state_duration.clone(),
                breaker_open: self.state_breaker_open.clone(),
            }),
        }
    }

    /// The exposition: OpenMetrics text when `openmetrics`, else Prometheus text 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut text = String::with_capacity(16 << 10);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        };
        // Writing to a String cannot fail.
        let _ = encoded;
        text
    }

    /// Handles for one route (`""` for requests no route matched).
    pub fn route(&self, route: &str) -> Arc<RouteMetrics> {
        let labels = RouteLabels {
            route: route.into(),
        };
        Arc::new(RouteMetrics {
            family: self.requests.clone(),
            duration: self.request_duration.get_or_create_owned(&labels),
            bytes_in: self.request_bytes.get_or_create_owned(&labels),
            bytes_out: self.response_bytes.get_or_create_owned(&labels),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            route: labels.route,
        })
    }

    /// Tunnel handles for one route (resolved when a tunnel opens: tunnels are rare next
    /// to requests, and most routes never have one).
    pub fn tunnel(&self, route: &str) -> TunnelMetrics {
        let route: Arc<str> = route.into();
        TunnelMetrics {
            open: self.tunnels_open.get_or_create_owned(&RouteLabels {
                route: route.clone(),
            }),
            closed: self.tunnels_closed.clone(),
            bytes: self.tunnel_bytes.clone(),
            route,
        }
    }

    /// Cache handles for one route.
    pub fn cache(&self, route: &str) -> CacheMetrics {
        let route: Arc<str> = route.into();
        let lookup = |result| {
            self.cache_lookups.get_or_create_owned(&CacheResultLabels {
                route: route.clone(),
                result,
            })
        };
        let labels = RouteLabels {
            route: route.clone(),
        };
        CacheMetrics {
            hits: lookup("hit"),
            misses: lookup("miss"),
            stale: lookup("stale"),
            revalidated: lookup("revalidated"),
            coalesced: lookup("coalesced"),
            passes: lookup("pass"),
            evictions: self.cache_evictions.get_or_create_owned(&labels),
            bytes: self.cache_bytes.get_or_create_owned(&labels),
        }
    }

    /// Handles for one listener.
    pub fn listener(&self, listener: &str) -> Arc<ListenerMetrics> {
        let listener: Arc<str> = listener.into();
        let open = |protocol| {
            self.connections_open
                .get_or_create_owned(&ConnectionLabels {
                    listener: listener.clone(),
                    protocol,
                })
        };
        let refused = |reason| {
            self.connections_refused
                .get_or_create_owned(&RefusalLabels {
                    listener: listener.clone(),
                    reason,
                })
        };
        Arc::new(ListenerMetrics {
            open: [open("pending"), open("http1"), open("http2")],
            limit: refused("limit"),
            header_timeout: refused("header_timeout"),
            bad_head: refused("bad_head"),
            head_too_large: refused("head_too_large"),
        })
    }

    /// Handles for one upstream target.
    pub fn target(&self, upstream: &str, target: &str) -> UpstreamMetrics {
        let labels = TargetLabels {
            upstream: upstream.into(),
            target: target.into(),
        };
        let error = |kind| {
            self.upstream_errors
                .get_or_create_owned(&UpstreamErrorLabels {
                    upstream: labels.upstream.clone(),
                    target: labels.target.clone(),
                    kind,
                })
        };
        let pool = |state| {
            self.upstream_connections.get_or_create_owned(&PoolLabels {
                upstream: labels.upstream.clone(),
                target: labels.target.clone(),
                state,
            })
        };
        UpstreamMetrics {
            requests: self.upstream_requests.get_or_create_owned(&labels),
            duration: self.upstream_duration.get_or_create_owned(&labels),
            errors: [
                error("connect"),
                error("timeout"),
                error("reset"),
                error("5xx"),
            ],
            idle: pool("idle"),
            active: pool("active"),
            usable: {
                let gauge = self.upstream_usable.get_or_create_owned(&labels);
                gauge.set(1);
                gauge
            },
            ejections: self.upstream_ejections.get_or_create_owned(&labels),
            retries: self.upstream_retries.get_or_create_owned(&labels),
            retries_refused: self.upstream_retries_refused.get_or_create_owned(&labels),
        }
    }

    /// Counters of breaker refusals for `upstream`: `[open, full]`.
    pub fn breaker_refusals(&self, upstream: &str) -> [Counter; 3] {
        let upstream: Arc<str> = upstream.into();
        ["open", "full", "pending"].map(|reason| {
            self.upstream_breaker_refusals
                .get_or_create_owned(&BreakerLabels {
                    upstream: upstream.clone(),
                    reason,
                })
        })
    }

    /// Handles for one stage: `plugin` (whose file has content hash `hash`) at position
    /// `stage` of `route`.
    pub fn stage(&self, route: &str, stage: usize, plugin: &str, hash: &str) -> StageMetrics {
        let labels = StageLabels {
            route: route.into(),
            stage: u32::try_from(stage).unwrap_or(u32::MAX),
            plugin: plugin.into(),
            hash: hash.get(..HASH_LABEL_LEN).unwrap_or(hash).into(),
        };
        StageMetrics {
            calls_family: self.plugin_calls.clone(),
            outcomes_family: self.plugin_outcomes.clone(),
            errors_family: self.plugin_errors.clone(),
            calls: std::array::from_fn(|_| OnceLock::new()),
            outcomes: std::array::from_fn(|_| OnceLock::new()),
            errors: std::array::from_fn(|_| OnceLock::new()),
            duration: self.plugin_duration.get_or_create_owned(&labels),
            instantiate: self.plugin_instantiate.get_or_create_owned(&labels),
            memory: self.plugin_memory.get_or_create_owned(&labels),
            reused: self.plugin_reused.get_or_create_owned(&labels),
            counter_errors: self.plugin_counter_errors.get_or_create_owned(&labels),
            labels,
        }
    }

    /// Records a plugin compilation.
    pub fn compiled(&self, plugin: &str, took: Duration) {
        self.plugin_compile
            .get_or_create(&PluginLabels {
                plugin: plugin.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records a reload result.
    pub fn reload(&self, kind: ReloadKind, outcome: ReloadOutcome) {
        let (outcome, reason) = match outcome {
            ReloadOutcome::Loaded => ("loaded", ""),
            ReloadOutcome::Unloaded => ("unloaded", ""),
            ReloadOutcome::Rejected(reason) => ("rejected", reason.label()),
        };
        let kind = match kind {
            ReloadKind::Plugin => "plugin",
            ReloadKind::Config => "config",
        };
        self.reloads
            .get_or_create(&ReloadLabels {
                kind,
                outcome,
                reason,
            })
            .inc();
    }
}

/// What a reload was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadKind {
    /// A plugin file.
    Plugin,
    /// The config file.
    Config,
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new version serves.
    Loaded,
    /// A plugin's file was removed and the plugin unloaded.
    Unloaded,
    /// The last good version keeps serving.
    Rejected(RejectReason),
}

/// Why a reload was rejected, as a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The file could not be read (or is not a regular file).
    Read,
    /// The bytes did not compile.
    Compile,
    /// The component implements no world, or not the one it had.
    World,
    /// A stage's `validate-config` (or building a route) refused it.
    Validate,
    /// The config file did not parse or check.
    Config,
}

impl RejectReason {
    fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Compile => "compile",
            Self::World => "world",
            Self::Validate => "validate",
            Self::Config => "config",
        }
    }
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&http::HeaderValue>) -> bool {
    accept
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                params
                    .next()
                    .is_some_and(|media| media.eq_ignore_ascii_case("application/openmetrics-text"))
                    && params.all(|param| {
                        !param
                            .split_once('=')
                            .is_some_and(|(k, v)| k.trim() == "q" && v.trim().parse() == Ok(0.0))
                    })
            })
        })
}

// === Requests ===

/// Method classes: the common methods by name, everything else as `other`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];
/// Status classes.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_class(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// One route's request metrics. Request counters are created on first use, so only the
/// method and status classes a route has seen are exported.
pub struct RouteMetrics {
    family: Family<RequestLabels, Counter>,
    route: Arc<str>,
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHODS.len()],
    duration: TracedHistogram,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl RouteMetrics {
    fn requests(&self, method: usize, status: usize) -> &Counter {
        self.requests[method][status].get_or_init(|| {
            self.family.get_or_create_owned(&RequestLabels {
                route: self.route.clone(),
                method: METHODS[method],
                status: STATUS_CLASSES[status],
            })
        })
    }

    /// A hook that counts a request body's bytes.
    pub fn request_body(&self) -> BytesIn {
        BytesIn(self.bytes_in.clone())
    }

    /// A hook for the response body that records the request when the body ends (or is
    /// dropped): its count, duration and the bytes sent.
    pub fn response(
        self: &Arc<Self>,
        method: &Method,
        status: StatusCode,
        started: Instant,
        trace: Option<&Trace>,
    ) -> ResponseRecord {
        ResponseRecord {
            route: self.clone(),
            method: method_class(method) as u8,
            status: status_class(status) as u8,
            started,
            bytes: 0,
            recorded: false,
            trace: trace.filter(|t| t.is_sampled()).cloned(),
        }
    }
}

/// Counts request body bytes (a [`BodyHook`]).
pub struct BytesIn(Counter);

impl BodyHook for BytesIn {
    fn on_data(&mut self, len: usize) -> Result<(), BoxError> {
        self.0.inc_by(len as u64);
        Ok(())
    }
}

/// Records one request when its response body ends (a [`BodyHook`]).
pub struct ResponseRecord {
    route: Arc<RouteMetrics>,
    method: u8,
    status: u8,
    started: Instant,
    bytes: u64,
    recorded: bool,
    trace: Option<Trace>,
}

impl ResponseRecord {
    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let route = &self.route;
        route
            .requests(usize::from(self.method), usize::from(self.status))
            .inc();
        observe_traced(&route.duration, self.started.elapsed(), self.trace.as_ref());
        if self.bytes > 0 {
            route.bytes_out.inc_by(self.bytes);
        }
    }
}

impl BodyHook for ResponseRecord {
    fn on_data(&mut self, len: usize) -> Result<(), BoxError> {
        self.bytes += len as u64;
        Ok(())
    }

    fn on_end(&mut self, _clean: bool) {
        self.record();
    }
}

impl Drop for ResponseRecord {
    fn drop(&mut self) {
        self.record();
    }
}

// === Connections ===

/// One listener's connection metrics.
pub struct ListenerMetrics {
    /// Open connections: pending (no request yet), HTTP/1, HTTP/2.
    open: [Gauge; 3],
    /// Times the listener stopped accepting at the connection limit.
    pub limit: Counter,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeout: Counter,
    /// Connections refused for a head that is not valid HTTP/1.1 (400).
    pub bad_head: Counter,
    /// Connections refused for a head over hyper's backstop (431).
    pub head_too_large: Counter,
}

/// A connection's protocol, as far as the gateway knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// No request has arrived yet.
    Pending = 0,
    /// HTTP/1.x.
    Http1 = 1,
    /// HTTP/2.
    Http2 = 2,
}

/// Counts one connection as open (under its protocol) until dropped.
pub struct OpenConnection {
    listener: Arc<ListenerMetrics>,
    protocol: std::sync::atomic::AtomicU8,
}

impl OpenConnection {
    /// Counts a new connection (protocol pending).
    pub fn new(listener: Arc<ListenerMetrics>) -> Self {
        listener.open[Protocol::Pending as usize].inc();
        Self {
            listener,
            protocol: std::sync::atomic::AtomicU8::new(Protocol::Pending as u8),
        }
    }

    /// The connection's protocol is now known (its first request arrived).
    pub fn identified(&self, protocol: Protocol) {
        let before = self.protocol.swap(protocol as u8, Ordering::AcqRel);
        if before != protocol as u8 {
            self.listener.open[usize::from(before)].dec();
            self.listener.open[protocol as usize].inc();
        }
    }

    /// The listener's metrics.
    pub fn listener(&self) -> &ListenerMetrics {
        &self.listener
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let protocol = usize::from(self.protocol.load(Ordering::Acquire));
        self.listener.open[protocol].dec();
    }
}

// === Upstreams ===

/// Why an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection could be opened.
    Connect = 0,
    /// No response head within the timeout.
    Timeout = 1,
    /// The exchange broke off after the connection was opened.
    Reset = 2,
    /// The target answered with a 5xx status.
    ServerError = 3,
}

/// One upstream target's metrics.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// Requests sent (attempts).
    pub requests: Counter,
    /// Time to the response head.
    duration: TracedHistogram,
    errors: [Counter; 4],
    /// Idle pooled connections.
    pub idle: Gauge,
    /// Connections carrying a request.
    pub active: Gauge,
    usable: Gauge,
    ejections: Counter,
    retries: Counter,
    retries_refused: Counter,
}

impl UpstreamMetrics {
    /// Counts a failed attempt.
    pub fn error(&self, kind: UpstreamError) {
        self.errors[kind as usize].inc();
    }

    /// Records whether the target passes its health checks and is not drained.
    pub fn set_healthy(&self, usable: bool) {
        self.usable.set(i64::from(usable));
    }

    /// Counts an ejection (the target is unusable until it ends).
    pub fn ejected(&self) {
        self.ejections.inc();
    }

    /// Counts a retry after a failed attempt on this target.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// Counts a retry the budget refused.
    pub fn retry_refused(&self) {
        self.retries_refused.inc();
    }

    /// Records the time an attempt took to its response head.
    pub fn observe(&self, took: Duration, trace: Option<&Trace>) {
        observe_traced(&self.duration, took, trace);
    }
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamMetrics").finish_non_exhaustive()
    }
}

/// Counts a connection as active until dropped.
pub struct ActiveConnection(Gauge);

impl ActiveConnection {
    /// Counts one more active connection on `gauge`.
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// === Plugins ===

/// A plugin export, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// `authenticate` (auth).
    Authenticate = 0,
    /// `check` (rate-limit).
    Check = 1,
    /// `on-request` (transform).
    OnRequest = 2,
    /// `on-response` (transform).
    OnResponse = 3,
    /// `plan` (aggregate).
    Plan = 4,
    /// `merge` (aggregate).
    Merge = 5,
}

const EXPORTS: [&str; 6] = [
    "authenticate",
    "check",
    "on-request",
    "on-response",
    "plan",
    "merge",
];

/// What a stage decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request goes on.
    Continue = 0,
    /// The plugin answered the request (a transform's answer, an aggregate's merge).
    Answered = 1,
    /// An auth or rate-limit plugin refused the request.
    Refused = 2,
    /// The call failed (the stage then refused the request, or was skipped if fail-open).
    Failed = 3,
}

const OUTCOMES: [&str; 4] = ["continue", "answered", "refused", "failed"];

/// Kinds of failed plugin calls, in the order of [`ERROR_KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The guest trapped.
    Trap = 0,
    /// The wall-clock deadline passed.
    Deadline = 1,
    /// Fuel ran out.
    Fuel = 2,
    /// Memory growth past the cap was refused.
    MemoryCap = 3,
    /// The answer was unusable.
    InvalidOutput = 4,
    /// No instance slot was free.
    PoolExhausted = 5,
}

const ERROR_KINDS: [&str; 6] = [
    "trap",
    "deadline",
    "fuel",
    "memory_cap",
    "invalid_output",
    "pool_exhausted",
];

/// Operations of the state backend, the `op` label's values.
const STATE_OPS: [&str; 7] = [
    "increment",
    "window",
    "gcra",
    "kv_get",
    "kv_set",
    "kv_compare_and_set",
    "kv_delete",
];
/// Kinds of state errors, the `kind` label's values.
const STATE_ERRORS: [&str; 6] = [
    "timeout",
    "connection",
    "server",
    "answer",
    "settings",
    "breaker_open",
];
/// `on-unavailable` policies, the `policy` label's values.
const STATE_POLICIES: [&str; 3] = ["closed", "open", "local"];

/// The shared state backend's metrics. Label values come from fixed lists; each series is
/// resolved once, on first use.
#[derive(Clone)]
pub struct StateMetrics {
    inner: Arc<StateSeries>,
}

struct StateSeries {
    calls_family: Family<StateOpLabels, Counter>,
    errors_family: Family<StateKindLabels, Counter>,
    fallbacks_family: Family<StatePolicyLabels, Counter>,
    calls: [OnceLock<Counter>; STATE_OPS.len()],
    errors: [OnceLock<Counter>; STATE_ERRORS.len()],
    fallbacks: [OnceLock<Counter>; STATE_POLICIES.len()],
    duration: Histogram,
    breaker_open: Gauge,
}

/// The series of `label` in `slots` (one per value of `values`), made on first use; `None`
/// for a value not in the list.
fn fixed_series<'a>(
    values: &[&'static str],
    slots: &'a [OnceLock<Counter>],
    label: &str,
    make: impl FnOnce(&'static str) -> Counter,
) -> Option<&'a Counter> {
    let index = values.iter().position(|value| *value == label)?;
    Some(slots[index].get_or_init(|| make(values[index])))
}

impl StateMetrics {
    /// A call to the backend, of `op`, that took `elapsed`.
    pub fn call(&self, op: &'static str, elapsed: Duration) {
        let s = &self.inner;
        if let Some(counter) = fixed_series(&STATE_OPS, &s.calls, op, |op| {
            s.calls_family.get_or_create_owned(&StateOpLabels { op })
        }) {
            counter.inc();
        }
        s.duration.observe(elapsed.as_secs_f64());
    }

    /// A failed or refused call.
    pub fn error(&self, kind: &'static str) {
        let s = &self.inner;
        if let Some(counter) = fixed_series(&STATE_ERRORS, &s.errors, kind, |kind| {
            s.errors_family
                .get_or_create_owned(&StateKindLabels { kind })
        }) {
            counter.inc();
        }
    }

    /// An operation answered by the `on-unavailable` policy.
    pub fn fallback(&self, policy: &'static str) {
        let s = &self.inner;
        if let Some(counter) = fixed_series(&STATE_POLICIES, &s.fallbacks, policy, |policy| {
            s.fallbacks_family
                .get_or_create_owned(&StatePolicyLabels { policy })
        }) {
            counter.inc();
        }
    }

    /// The breaker opened (`true`) or closed.
    pub fn breaker_open(&self, open: bool) {
        self.inner.breaker_open.set(i64::from(open));
    }
}

/// One stage's plugin metrics. Counters with a fixed-list label are created on first use.
pub struct StageMetrics {
    labels: StageLabels,
    calls_family: Family<CallLabels, Counter>,
    outcomes_family: Family<OutcomeLabels, Counter>,
    errors_family: Family<StageKindLabels, Counter>,
    calls: [OnceLock<Counter>; EXPORTS.len()],
    outcomes: [OnceLock<Counter>; OUTCOMES.len()],
    errors: [OnceLock<Counter>; ERROR_KINDS.len()],
    duration: TracedHistogram,
    instantiate: Histogram,
    memory: Gauge,
    reused: Counter,
    /// Errors the counter store returned to this stage.
    pub counter_errors: Counter,
}

impl std::fmt::Debug for StageMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageMetrics")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl StageMetrics {
    /// Records a call of `export` that took `took`, under `trace` when it is traced.
    pub fn call(&self, export: Export, took: Duration, trace: Option<&Trace>) {
        let index = export as usize;
        self.calls[index]
            .get_or_init(|| {
                self.calls_family.get_or_create_owned(&CallLabels {
                    stage: self.labels.clone(),
                    export: EXPORTS[index],
                })
            })
            .inc();
        observe_traced(&self.duration, took, trace);
    }

    /// Records a request-phase decision.
    pub fn outcome(&self, outcome: Outcome) {
        let index = outcome as usize;
        self.outcomes[index]
            .get_or_init(|| {
                self.outcomes_family.get_or_create_owned(&OutcomeLabels {
                    stage: self.labels.clone(),
                    outcome: OUTCOMES[index],
                })
            })
            .inc();
    }

    /// Records a failed call.
    pub fn failure(&self, kind: CallFailure) {
        let index = kind as usize;
        self.errors[index]
            .get_or_init(|| {
                self.errors_family.get_or_create_owned(&StageKindLabels {
                    stage: self.labels.clone(),
                    kind: ERROR_KINDS[index],
                })
            })
            .inc();
    }

    /// Records an instantiation.
    pub fn instantiated(&self, took: Duration) {
        self.instantiate.observe(took.as_secs_f64());
    }

    /// Records a call served by a reused instance.
    pub fn reused(&self) {
        self.reused.inc();
    }

    /// Raises the memory high-water mark to `bytes` if it is higher.
    pub fn memory(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        if self.memory.get() < bytes {
            self.memory.inner().fetch_max(bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        let wants = |v: &str| wants_openmetrics(Some(&http::HeaderValue::from_str(v).unwrap()));
        assert!(wants("application/openmetrics-text; version=1.0.0"));
        assert!(wants(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
        ));
        assert!(!wants("text/plain"));
        assert!(!wants("*/*"));
        assert!(!wants("application/openmetrics-text; q=0"));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn classes_are_bounded() {
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::OK)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::BAD_GATEWAY)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::CONTINUE)], "1xx");
        let custom = StatusCode::from_u16(999).unwrap();
        assert_eq!(STATUS_CLASSES[status_class(custom)], "5xx");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(METHODS[method_class(&odd)], "other");
    }

    #[test]
    fn both_expositions_name_every_family() {
        let metrics = Metrics::new();
        let route = metrics.route("r");
        drop(route.response(&Method::GET, StatusCode::OK, Instant::now(), None));
        let prometheus = metrics.encode(false);
        assert!(
            prometheus
                .contains("wasmgate_requests_total{route=\"r\",method=\"GET\",status=\"2xx\"} 1"),
            "{prometheus}"
        );
        assert!(prometheus.contains("# TYPE wasmgate_request_duration_seconds histogram"));
        let openmetrics = metrics.encode(true);
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        assert!(openmetrics.contains("# TYPE wasmgate_requests counter"));
    }
}

/// A route's cache counters (`wasmgate_cache_*`).
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    /// Answered from the cache.
    pub hits: Counter,
    /// Went to the upstream.
    pub misses: Counter,
    /// Answered stale (while revalidating, or on an upstream error).
    pub stale: Counter,
    /// Answered from the cache after a 304 from the upstream.
    pub revalidated: Counter,
    /// Streamed from another request's upstream response.
    pub coalesced: Counter,
    /// Not cacheable.
    pub passes: Counter,
    /// Evicted for size.
    pub evictions: Counter,
    /// Bytes held.
    pub bytes: Gauge,
}

// === Tunnels ===

/// A route's tunnel metrics (`wasmgate_tunnels_*`, `wasmgate_tunnel_bytes_total`).
#[derive(Clone, Debug)]
pub struct TunnelMetrics {
    open: Gauge,
    closed: Family<TunnelCloseLabels, Counter>,
    bytes: Family<TunnelBytesLabels, Counter>,
    route: Arc<str>,
}

impl TunnelMetrics {
    /// Counts a tunnel as open.
    pub fn opened(&self) {
        self.open.inc();
    }

    /// Counts a tunnel as closed for `reason`, with what it carried.
    pub fn closed(&self, reason: CloseReason, moved: &Moved) {
        self.open.dec();
        self.closed
            .get_or_create(&TunnelCloseLabels {
                route: self.route.clone(),
                reason: reason.as_str(),
            })
            .inc();
        for (from, bytes) in [
            ("client", moved.from_client),
            ("upstream", moved.from_upstream),
        ] {
            self.bytes
                .get_or_create(&TunnelBytesLabels {
                    route: self.route.clone(),
                    from,
                })
                .inc_by(bytes);
        }
    }
}
