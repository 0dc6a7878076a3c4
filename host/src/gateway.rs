//! The request handler: route match, limits, the route's pipeline, the upstream, access log.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response};
use tokio::sync::Semaphore;

use crate::access_log::AccessLog;
use crate::body::{Body, Hooked, boxed};
use crate::cache::Caches;
use crate::config::{Config, RouteConfig};
use crate::framing;
use crate::grpc;
use crate::metrics::RouteMetrics;
use crate::normalize::{self, PathPolicy};
use crate::pipeline::{
    BuildProblem, Client, Flow, Pipeline, RequestBody, RequestParts, UpstreamMap,
};
use crate::plugins::PluginSet;
use crate::proxy::{self, Upstream};
use crate::rescue::GatewayError;
use crate::router::{RouteMatch, Router};
use crate::runtime::Runtime;
use crate::tls::TlsSession;
use crate::trace::{self, Trace, Tracing};
use crate::tunnel::{self, PendingTunnel, Tunnels};
use opentelemetry::KeyValue;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One version of everything a request needs: config, router, upstream pools, plugins and
/// the pipelines built from them.
///
/// A request loads the current version once at entry and keeps it to the end, so a reload
/// never changes the rules (or the plugin code) under a request in flight.
pub struct LiveState {
    /// The config this version was built from.
    pub config: Arc<Config>,
    /// The plugins this version was built from.
    pub plugins: Arc<PluginSet>,
    /// The route table.
    pub router: Router,
    /// Upstreams by name.
    pub upstreams: UpstreamMap,
    /// One pipeline per route, in config order.
    pub pipelines: Vec<Pipeline>,
    /// The gateway-wide reserve of bytes that aggregate calls' responses draw from
    /// (`plugins.aggregate-bytes-total`), kept across reloads that leave it unchanged.
    pub aggregate_reserve: Arc<Semaphore>,
    /// The routes' response caches, kept across reloads that leave their settings unchanged.
    pub caches: Caches,
    /// Request metrics of requests no route matched (`route=""`), when metrics are on.
    pub unmatched: Option<Arc<RouteMetrics>>,
}

/// A route, stage or terminal that cannot serve as configured.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: route `{route}`{}: {message}", describe_stage(*.stage, .plugin.as_deref()))]
pub struct StageProblem {
    /// Where the stage (or route) is written.
    pub location: String,
    /// Route name.
    pub route: String,
    /// Stage position (0-based), if a stage is at fault.
    pub stage: Option<usize>,
    /// Plugin name, if one is involved.
    pub plugin: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn describe_stage(stage: Option<usize>, plugin: Option<&str>) -> String {
    match (stage, plugin) {
        (Some(stage), Some(plugin)) => format!(" stage {stage} (`{plugin}`)"),
        (Some(stage), None) => format!(" stage {stage}"),
        (None, Some(plugin)) => format!(" (`{plugin}`)"),
        (None, None) => String::new(),
    }
}

impl LiveState {
    /// Builds a version from a checked config and a plugin set: resolves each route's
    /// stages and terminal and runs every stage's `validate-config`. Upstream connection
    /// pools of `previous` are reused where their settings did not change. Stages whose
    /// plugin is missing are not problems: they answer 503 until it arrives.
    pub async fn build(
        config: Arc<Config>,
        plugins: Arc<PluginSet>,
        runtime: &Runtime,
        previous: Option<&LiveState>,
    ) -> Result<Self, Vec<StageProblem>> {
        let metrics = runtime.metrics().map(Arc::as_ref);
        let upstreams: UpstreamMap = config
            .upstreams
            .iter()
            .map(|(name, settings)| {
                let before = previous.and_then(|p| p.upstreams.get(name));
                let reused = before
                    .filter(|old| format!("{:?}", old.config) == format!("{settings:?}"))
                    .cloned();
                let upstream = reused.unwrap_or_else(|| {
                    let upstream = Arc::new(Upstream::new(
                        settings.clone(),
                        metrics,
                        before.map(Arc::as_ref),
                    ));
                    upstream.start_checks();
                    upstream.start_resolving();
                    upstream
                });
                (name.clone(), upstream)
            })
            .collect();
        let caches = Caches::build(&config, previous.map(|p| &p.caches), metrics);
        let mut problems = Vec::new();
        let mut pipelines = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let built = match Pipeline::build(route, &plugins.loaded, &upstreams, metrics, &caches)
            {
                Ok(pipeline) => {
                    let invalid = pipeline.validate(runtime).await;
                    if invalid.is_empty() {
                        Ok(pipeline)
                    } else {
                        Err(invalid)
                    }
                }
                Err(invalid) => Err(invalid),
            };
            match built {
                Ok(pipeline) => pipelines.push(pipeline),
                Err(invalid) => problems.extend(
                    invalid
                        .into_iter()
                        .map(|problem| StageProblem::new(route, problem)),
                ),
            }
        }
        let router = match Router::new(&config.route_keys()) {
            Ok(router) => router,
            Err(conflicts) => {
                problems.extend(conflicts.into_iter().map(|conflict| StageProblem {
                    location: config.file.display().to_string(),
                    route: conflict.second,
                    stage: None,
                    plugin: None,
                    message: format!(
                        "conflicts with route `{}`: {}",
                        conflict.first, conflict.reason
                    ),
                }));
                return Err(problems);
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let total = config.plugins.output.aggregate_bytes_total;
        let aggregate_reserve = previous
            .filter(|p| p.config.plugins.output.aggregate_bytes_total == total)
            .map_or_else(
                || Arc::new(Semaphore::new(usize::try_from(total).unwrap_or(usize::MAX))),
                |p| p.aggregate_reserve.clone(),
            );
        Ok(Self {
            config,
            plugins,
            router,
            upstreams,
            pipelines,
            aggregate_reserve,
            caches,
            unmatched: metrics.map(|m| m.route("")),
        })
    }
}

impl StageProblem {
    fn new(route: &RouteConfig, problem: BuildProblem) -> Self {
        let location = problem
            .stage
            .and_then(|i| route.stages.get(i))
            .map_or_else(|| route.location.clone(), |s| s.location.clone());
        Self {
            location,
            route: route.name.clone(),
            stage: problem.stage,
            plugin: problem.plugin,
            message: problem.message,
        }
    }
}

/// The gateway: the sandbox runtime, the live state and the code that serves requests.
pub struct Gateway {
    runtime: Arc<Runtime>,
    state: ArcSwap<LiveState>,
    /// The tracer, when `[tracing]` is configured.
    tracing: Option<Arc<Tracing>>,
    /// The version of the live state, bumped by every swap.
    version: tokio::sync::watch::Sender<u64>,
    /// The open tunnels (upgraded connections).
    tunnels: Arc<Tunnels>,
}

impl Gateway {
    /// A gateway serving `state` (version 0).
    pub fn new(runtime: Arc<Runtime>, state: LiveState) -> Self {
        Self {
            runtime,
            state: ArcSwap::from_pointee(state),
            tracing: None,
            version: tokio::sync::watch::Sender::new(0),
            tunnels: Arc::default(),
        }
    }

    /// The gateway, recording spans with `tracing`.
    pub fn with_tracing(mut self, tracing: Arc<Tracing>) -> Self {
        self.tracing = Some(tracing);
        self
    }

    /// The version of the live state: 0 at start, one more after every swap.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A receiver that sees every later swap (`changed().await`), for whoever must wait for
    /// a reload instead of polling.
    pub fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The open tunnels, which shutdown closes after its drain period.
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// The sandbox runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The version new requests use.
    pub fn state(&self) -> Arc<LiveState> {
        self.state.load_full()
    }

    /// Makes `state` the version new requests use; requests in flight keep theirs.
    pub fn swap(&self, state: LiveState) {
        self.state.store(Arc::new(state));
        self.version.send_modify(|version| *version += 1);
    }

    /// Serves one request from `client_ip`. Never fails: every error becomes a JSON response.
    /// The body may be any body (hyper's, or one a test builds in the same process).
    pub async fn handle<B>(&self, request: Request<B>, client_ip: &str) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        self.handle_tls(request, client_ip, None).await
    }

    /// Like [`handle`](Self::handle), for a request that came over TLS when `tls` is set:
    /// `X-Forwarded-Proto` is `https` and plugins see the session's facts.
    pub async fn handle_tls<B>(
        &self,
        request: Request<B>,
        client_ip: &str,
        tls: Option<&Arc<TlsSession>>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let state = self.state.load_full();
        let started = Instant::now();
        let request_id = request
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|v| is_request_id(v.as_bytes()))
            .and_then(|v| v.to_str().ok())
            .map_or_else(new_request_id, str::to_string);
        let mut log = AccessLog::start(&request, &request_id, client_ip, started);
        if let Some(session) = tls {
            log.tls(session.server_name.as_deref());
        }
        let trace = self
            .tracing
            .as_ref()
            .map(|tracing| start_request_span(tracing, &request, client_ip, &request_id));
        if let Some(trace) = trace.as_ref().filter(|_| log.enabled()) {
            log.trace_id(trace.trace_id());
        }
        let method = request.method().clone();
        let grpc = grpc::Client::of(request.headers());
        let mut matched = None;
        let result = serve(
            &self.runtime,
            &state,
            request.map(boxed),
            Peer {
                ip: client_ip,
                tls,
                grpc,
            },
            &request_id,
            &mut log,
            trace.as_ref(),
            &mut matched,
        )
        .await;
        let mut response = match (result, grpc) {
            (Ok(response), Some(client)) if !grpc::is_grpc_response(response.headers()) => {
                grpc::translate(client, response).await
            }
            (Ok(response), _) => response,
            (Err(error), Some(client)) => grpc::error_response(client, &error),
            (Err(error), None) => error.into_response(&request_id),
        };
        let tunnel = response.extensions_mut().remove::<PendingTunnel>();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().entry(X_REQUEST_ID).or_insert(value);
        }
        let response = framing::frame_response(&method, response);
        let status = response.status();
        let route_metrics = match matched {
            Some(index) => state.pipelines[index].metrics.as_ref(),
            None => state.unmatched.as_ref(),
        };
        let record = route_metrics.map(|m| m.response(&method, status, started, trace.as_ref()));
        let span = trace.map(|trace| {
            trace.set(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                trace.fail(status.to_string());
            }
            trace::EndWithBody(trace)
        });
        let log = match (tunnel, matched) {
            // The line is written when the tunnel closes.
            (Some(tunnel), Some(index)) => {
                log.status(status);
                let metrics = (self.runtime.metrics())
                    .map(|metrics| metrics.tunnel(&state.config.routes[index].name));
                tokio::spawn(tunnel.run(log, metrics, self.tunnels.clone()));
                None
            }
            _ => log.into_hook(status, response.headers()),
        };
        if log.is_none() && record.is_none() && span.is_none() {
            return response;
        }
        response.map(|body| boxed(Hooked::new(body, (log, (record, span)))))
    }
}

/// The server span of a request, with the attributes known before routing.
fn start_request_span<B>(
    tracing: &Tracing,
    request: &Request<B>,
    client_ip: &str,
    request_id: &str,
) -> Trace {
    let trace = tracing.request(request.method(), request.headers());
    if trace.is_recording() {
        let version = match request.version() {
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_10 => "1.0",
            _ => "1.1",
        };
        trace.set_all([
            KeyValue::new("http.request.method", request.method().to_string()),
            KeyValue::new(
                "url.path",
                crate::text::bounded(request.uri().path(), 1024).into_owned(),
            ),
            KeyValue::new("client.address", client_ip.to_string()),
            KeyValue::new("network.protocol.version", version),
            KeyValue::new("wasmgate.request_id", request_id.to_string()),
        ]);
    }
    trace
}

/// Whether a client's `x-request-id` may be kept: 1–200 characters from
/// `A-Z a-z 0-9 - _ . : + / =`, so it can never forge a log field or line.
fn is_request_id(id: &[u8]) -> bool {
    (1..=200).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(&b))
}

/// A fresh request id: 128 random bits in hex.
pub(crate) fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u128>();
    (0..32)
        .rev()
        .map(|nibble| char::from(HEX[(bits >> (nibble * 4)) as usize & 0xf]))
        .collect()
}

/// The client end of a request's connection.
struct Peer<'a> {
    ip: &'a str,
    /// The TLS session, for a request that came over TLS.
    tls: Option<&'a Arc<TlsSession>>,
    /// How the client speaks, when it is a gRPC client.
    grpc: Option<grpc::Client>,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one request's context, and the two records it fills in"
)]
async fn serve(
    runtime: &Runtime,
    state: &LiveState,
    request: Request<Body>,
    peer: Peer<'_>,
    request_id: &str,
    log: &mut AccessLog,
    trace: Option<&Trace>,
    matched: &mut Option<usize>,
) -> Result<Response<Body>, GatewayError> {
    let config = &state.config;
    // HTTP/1 heads over the field limit never get here (hyper refuses them); HTTP/2 ones do.
    if request_head_size(&request) > config.server.max_header_bytes
        || request.headers().len() > crate::config::MAX_HEADER_FIELDS
    {
        return Err(GatewayError::HeadersTooLarge {
            limit: config.server.max_header_bytes,
        });
    }
    let request = normalize_path(request, &config.server.path_policy)?;
    let host = request_host(&request);
    if let (Some(tls), Some(host)) = (peer.tls, &host)
        && !tls.serves(host)
    {
        return Err(GatewayError::Misdirected { host: host.clone() });
    }
    let path = request.uri().path();
    let (route_index, params) = match state.router.lookup(host.as_deref(), request.method(), path) {
        RouteMatch::Found { route, params } => (route, params),
        RouteMatch::MethodNotAllowed { allow } => {
            return Err(GatewayError::MethodNotAllowed {
                method: request.method().clone(),
                allow,
            });
        }
        RouteMatch::NotFound => {
            return Err(GatewayError::NoRoute {
                method: request.method().clone(),
                path: path.to_string(),
            });
        }
    };
    let route = &config.routes[route_index];
    let pipeline = &state.pipelines[route_index];
    log.route(&route.name);
    if let Some(trace) = trace {
        trace.name_route(request.method(), &route.name);
    }
    *matched = Some(route_index);
    let (mut parts, mut body) = request.into_parts();
    if let Some(upgrade) = tunnel::take_upgrade(&mut parts, &route.tunnel) {
        parts.extensions.insert(upgrade);
    }
    if let Some(metrics) = &pipeline.metrics
        && !http_body::Body::is_end_stream(&body)
    {
        body = boxed(Hooked::new(body, metrics.request_body()));
    }
    if let Some(limit) = route.max_body_bytes {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body = proxy::limit_body(body, limit);
    }
    let Peer {
        ip: client_ip,
        tls,
        grpc,
    } = peer;
    let client_deadline = grpc.and(grpc::timeout(&parts.headers));
    let client = Client {
        ip: client_ip,
        host: host.as_deref(),
        request_id,
        proto: if tls.is_some() { "https" } else { "http" },
        tls,
    };
    let mut flow = Flow::new(
        runtime,
        route,
        &pipeline.route,
        &state.upstreams,
        &config.plugins.output,
        &state.aggregate_reserve,
        client,
        params,
    );
    flow.trace = trace.cloned();
    flow.client_deadline = client_deadline;
    if log.enabled() {
        flow.stage_times = Some(vec![Duration::ZERO; pipeline.stages.len()]);
    }
    let request = RequestParts {
        parts,
        body: RequestBody::Streaming(body),
    };
    let result = pipeline.run(&mut flow, request).await;
    if let Some(upstream) = &flow.upstream_used {
        log.upstream(upstream);
        log.upstream_call(&flow.upstream_attempts);
    }
    if let Some(times) = &flow.stage_times {
        log.stage_times(pipeline.stages.iter().zip(times).map(|(stage, time)| {
            let info = stage.info();
            (info.plugin.unwrap_or(info.kind), *time)
        }));
    }
    result
}

/// Replaces the request's path with its normal form (see [`normalize`]), which routing,
/// stages and the upstream all see; refuses paths the policy does not accept.
fn normalize_path(
    mut request: Request<Body>,
    policy: &PathPolicy,
) -> Result<Request<Body>, GatewayError> {
    let normal = match normalize::normalize(request.uri().path(), policy) {
        Ok(Cow::Borrowed(_)) => return Ok(request),
        Ok(Cow::Owned(normal)) => normal,
        Err(error) => return Err(GatewayError::BadRequest(error.to_string())),
    };
    let uri = request.uri();
    let path_and_query = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|e| GatewayError::BadRequest(format!("invalid path: {e}")))?,
    );
    *request.uri_mut() = http::Uri::from_parts(parts)
        .map_err(|e| GatewayError::BadRequest(format!("invalid path: {e}")))?;
    Ok(request)
}

/// The host the client asked for: the URI authority (HTTP/2, absolute form) or `Host`.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// Approximate size of the request head as sent: request line plus header lines.
fn request_head_size<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let line = request.method().as_str().len() + target + 12;
    request.headers().iter().fold(line, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}
