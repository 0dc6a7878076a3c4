//! The request handler: route match, limits, the route's pipeline, the upstream, access log.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Version};
use tokio::sync::Semaphore;

use crate::access_log::AccessLog;
use crate::body::{Body, boxed};
use crate::config::{Config, PathMatch, RouteConfig, TemplatePart};
use crate::framing;
use crate::normalize::{self, PathPolicy};
use crate::pipeline::{Decision, Flow, Pipeline, RequestBody, ResolvedStage};
use crate::plugins::PluginSet;
use crate::proxy::{self, Forwarded, Outbound, Upstream};
use crate::rescue::GatewayError;
use crate::router::{RouteMatch, Router};
use crate::runtime::{Call, InstancePool, PluginKind, Runtime};

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
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// One pipeline per route, in config order.
    pub pipelines: Vec<Pipeline>,
    /// The gateway-wide reserve of bytes that aggregate calls' responses draw from
    /// (`plugins.aggregate-bytes-total`), kept across reloads that leave it unchanged.
    pub aggregate_reserve: Arc<Semaphore>,
}

/// A stage that cannot serve with the plugin it names.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: route `{route}` stage {stage} (`{plugin}`): {message}")]
pub struct StageProblem {
    /// Where the stage is written.
    pub location: String,
    /// Route name.
    pub route: String,
    /// Stage position (0-based).
    pub stage: usize,
    /// Plugin name.
    pub plugin: String,
    /// What is wrong.
    pub message: String,
}

impl LiveState {
    /// Builds a version from a checked config and a plugin set: resolves each stage's
    /// plugin, checks stage kinds and runs every stage's `validate-config`. Upstream
    /// connection pools of `previous` are reused where their settings did not change.
    /// Stages whose plugin is missing are not problems: they answer 503 until it arrives.
    pub async fn build(
        config: Arc<Config>,
        plugins: Arc<PluginSet>,
        runtime: &Runtime,
        previous: Option<&LiveState>,
    ) -> Result<Self, Vec<StageProblem>> {
        let mut problems = Vec::new();
        let mut pipelines = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let route_name: Arc<str> = route.name.as_str().into();
            let mut stages = Vec::with_capacity(route.stages.len());
            for (index, stage) in route.stages.iter().enumerate() {
                let plugin = plugins.loaded.get(&stage.plugin).cloned();
                let problem = |message: String| StageProblem {
                    location: stage.location.clone(),
                    route: route.name.clone(),
                    stage: index,
                    plugin: stage.plugin.clone(),
                    message,
                };
                if let Some(plugin) = &plugin {
                    let last = index + 1 == route.stages.len();
                    if plugin.kind == PluginKind::Aggregate && !last {
                        problems.push(problem(
                            "an aggregate stage must be the route's last stage".into(),
                        ));
                    }
                    if plugin.kind == PluginKind::Aggregate && route.upstream.is_some() {
                        problems.push(problem("a route with an aggregate stage answers from it; remove the route's `upstream`".into()));
                    }
                    if plugin.kind != PluginKind::Aggregate && last && route.upstream.is_none() {
                        problems.push(problem(format!("the route has no `upstream`, so its last stage must be an aggregate plugin, not {}", plugin.kind)));
                    }
                    let call = Call {
                        plugin,
                        route: &route_name,
                        config_json: &stage.config_json,
                        limits: stage.limits,
                        vars: Vec::new(),
                        pool: None,
                    };
                    match runtime.validate_config(call).await {
                        Ok((Ok(()), _)) => {}
                        Ok((Err(message), _)) => problems.push(problem(format!(
                            "invalid config: {}",
                            crate::text::untrusted(&message)
                        ))),
                        Err(error) => {
                            problems.push(problem(format!("validate-config failed: {error}")))
                        }
                    }
                }
                let pool = plugin
                    .as_ref()
                    .and(stage.limits.reuse)
                    .map(InstancePool::new);
                stages.push(ResolvedStage {
                    index,
                    config: stage.clone(),
                    plugin,
                    pool,
                });
            }
            pipelines.push(Pipeline {
                route: route_name,
                stages,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let router = Router::new(&config.routes).unwrap_or_else(|conflicts| {
            tracing::error!(?conflicts, "route conflicts in a checked config");
            Router::default()
        });
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, settings)| {
                let reused = previous
                    .and_then(|p| p.upstreams.get(name))
                    .filter(|old| format!("{:?}", old.config) == format!("{settings:?}"))
                    .cloned();
                (
                    name.clone(),
                    reused.unwrap_or_else(|| Arc::new(Upstream::new(settings.clone()))),
                )
            })
            .collect();
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
        })
    }
}

/// The gateway: the sandbox runtime, the live state and the code that serves requests.
pub struct Gateway {
    runtime: Arc<Runtime>,
    state: ArcSwap<LiveState>,
}

impl Gateway {
    /// A gateway serving `state`.
    pub fn new(runtime: Arc<Runtime>, state: LiveState) -> Self {
        Self {
            runtime,
            state: ArcSwap::from_pointee(state),
        }
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
    }

    /// Serves one request from `client_ip`. Never fails: every error becomes a JSON response.
    /// The body may be any body (hyper's, or one a test builds in the same process).
    pub async fn handle<B>(&self, request: Request<B>, client_ip: &str) -> Response<Body>
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
        let mut log = AccessLog::start(&request, &request_id, started);
        let method = request.method().clone();
        let result = serve(
            &self.runtime,
            &state,
            request.map(boxed),
            client_ip,
            &request_id,
            &mut log,
        )
        .await;
        let mut response = result.unwrap_or_else(|error| error.into_response(&request_id));
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().entry(X_REQUEST_ID).or_insert(value);
        }
        log.finish(framing::frame_response(&method, response))
    }
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

async fn serve(
    runtime: &Runtime,
    state: &LiveState,
    request: Request<Body>,
    client_ip: &str,
    request_id: &str,
    log: &mut AccessLog,
) -> Result<Response<Body>, GatewayError> {
    let config = &state.config;
    if request_head_size(&request) > config.server.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            limit: config.server.max_header_bytes,
        });
    }
    let request = normalize_path(request, &config.server.path_policy)?;
    let host = request_host(&request);
    let path = request.uri().path();
    let (route_index, params) =
        match state
            .router
            .lookup(&config.routes, host.as_deref(), request.method(), path)
        {
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
    let (mut parts, mut body) = request.into_parts();
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
    if pipeline.is_empty() {
        let path_and_query = upstream_path(route, &parts.uri, &params)?;
        return send_upstream(
            state,
            route,
            parts,
            body,
            path_and_query,
            host.as_deref(),
            client_ip,
            request_id,
            log,
        )
        .await;
    }
    let mut flow = Flow::new(
        runtime,
        state,
        pipeline,
        request_id,
        client_ip.to_string(),
        params.clone(),
    );
    let mut body = RequestBody::Streaming(body);
    if let Decision::Respond(response) = flow.request_phase(&mut parts, &mut body).await? {
        return Ok(response);
    }
    let response = match pipeline.aggregate() {
        Some(stage) => flow.aggregate(stage, &parts, body).await?,
        None => {
            let path_and_query = match flow.path_override.take() {
                Some(path) => path,
                None => upstream_path(route, &parts.uri, &params)?,
            };
            let sent = send_upstream(
                state,
                route,
                parts,
                body.into_body(),
                path_and_query,
                host.as_deref(),
                client_ip,
                request_id,
                log,
            )
            .await;
            match sent {
                Ok(response) => response,
                Err(error) => {
                    return Ok(flow.with_response_headers(error.into_response(request_id)));
                }
            }
        }
    };
    flow.response_phase(response).await
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

/// Proxies the request to the route's upstream, with forwarding headers.
#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one request, passed once"
)]
async fn send_upstream(
    state: &LiveState,
    route: &RouteConfig,
    mut parts: http::request::Parts,
    body: Body,
    path_and_query: PathAndQuery,
    host: Option<&str>,
    client_ip: &str,
    request_id: &str,
    log: &mut AccessLog,
) -> Result<Response<Body>, GatewayError> {
    let Some(upstream_name) = &route.upstream else {
        // A route without an upstream is answered by its last (aggregate) stage; when that
        // plugin is not loaded there is nothing to answer with, fail-open or not.
        let last = route.stages.len().saturating_sub(1);
        return Err(GatewayError::PluginUnavailable {
            plugin: route
                .stages
                .last()
                .map_or_else(String::new, |s| s.plugin.clone()),
            stage: last,
        });
    };
    let upstream = &state.upstreams[upstream_name];
    log.upstream(upstream_name);
    let retryable = is_idempotent(&parts.method) && http_body::Body::is_end_stream(&body);
    let via = if parts.version == Version::HTTP_2 {
        "2 wasmgate"
    } else {
        proxy::VIA
    };
    proxy::strip_hop_by_hop(&mut parts.headers);
    proxy::add_forwarding(
        &mut parts.headers,
        &Forwarded {
            client_ip,
            host,
            proto: "http",
            via,
        },
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        parts.headers.insert(X_REQUEST_ID, value);
    }
    if route.preserve_host
        && !parts.headers.contains_key(header::HOST)
        && let Some(value) = host.and_then(|h| HeaderValue::from_str(h).ok())
    {
        parts.headers.insert(header::HOST, value);
    }
    let outbound = Outbound {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
        retryable,
        preserve_host: route.preserve_host,
        timeout: route.timeout.unwrap_or(upstream.config.timeout),
    };
    proxy::forward(upstream, outbound).await
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

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The path and query the upstream receives, after `strip-prefix` or `rewrite`.
fn upstream_path(
    route: &RouteConfig,
    uri: &http::Uri,
    params: &[(String, String)],
) -> Result<PathAndQuery, GatewayError> {
    let path = uri.path();
    let new_path = if let Some(template) = &route.rewrite {
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
        if matches!(route.path, PathMatch::Prefix(_)) || out.is_empty() {
            out = out.replace("//", "/");
        }
        if out.is_empty() { "/".to_string() } else { out }
    } else if let Some(prefix) = &route.strip_prefix {
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
            .unwrap_or_else(|| PathAndQuery::from_static("/")));
    };
    let with_query = match uri.query() {
        Some(query) => format!("{new_path}?{query}"),
        None => new_path,
    };
    PathAndQuery::try_from(with_query)
        .map_err(|e| GatewayError::BadRequest(format!("invalid rewritten path: {e}")))
}
