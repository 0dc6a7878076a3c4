//! A route's stages around the upstream call: request phase (auth, rate limit,
//! `on-request`), the aggregate stage when there is one, and response phase (`on-response`
//! in reverse order). A stage that answers short-circuits the pipeline.

mod aggregate;
pub mod convert;

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http_body_util::BodyExt;

use crate::body::{Body, full};
use crate::config::{OnError, OutputLimits, StageConfig};
use crate::gateway::LiveState;
use crate::rescue::GatewayError;
use crate::runtime::bindings::types;
use crate::runtime::{Call, InstancePool, Plugin, PluginKind, Runtime, StageError};
use convert::InvalidOutput;

/// Header carrying the authenticated subject to the upstream.
pub const SUBJECT_HEADER: &str = "x-auth-subject";
/// Prefix of headers carrying identity claims to the upstream.
pub const CLAIM_HEADER_PREFIX: &str = "x-auth-claim-";

/// A route's stage with its plugin resolved (or missing).
#[derive(Debug)]
pub struct ResolvedStage {
    /// Position in the route (0-based).
    pub index: usize,
    /// The stage as configured.
    pub config: StageConfig,
    /// The loaded plugin, `None` when its file is missing or was rejected.
    pub plugin: Option<Arc<Plugin>>,
    /// Idle instances kept for reuse, when the stage's limits enable it.
    pub pool: Option<InstancePool>,
}

/// A route's pipeline.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// The route's name, shared with every call.
    pub route: Arc<str>,
    /// Stages in configured order.
    pub stages: Vec<ResolvedStage>,
}

impl Pipeline {
    /// Whether the route has any stage.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The aggregate stage, which the config check guarantees is last.
    pub fn aggregate(&self) -> Option<&ResolvedStage> {
        self.stages.last().filter(|s| {
            s.plugin
                .as_ref()
                .is_some_and(|p| p.kind == PluginKind::Aggregate)
        })
    }

    /// Whether any stage is, or may be, an auth stage: a plugin of kind auth, or a plugin
    /// that is not loaded (its kind is unknown). Identity headers are then the gateway's to
    /// set, never the client's.
    pub fn has_auth(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.plugin.as_ref().is_none_or(|p| p.kind == PluginKind::Auth))
    }
}

/// A request body as the pipeline holds it: still streaming, or read into memory for a stage.
pub enum RequestBody {
    /// Untouched, streaming.
    Streaming(Body),
    /// Read whole.
    Buffered(Bytes),
}

impl RequestBody {
    /// The body to send on.
    pub fn into_body(self) -> Body {
        match self {
            Self::Streaming(body) => body,
            Self::Buffered(bytes) => full(bytes),
        }
    }
}

/// One request's trip through a pipeline.
pub struct Flow<'a> {
    runtime: &'a Runtime,
    state: &'a LiveState,
    pipeline: &'a Pipeline,
    request_id: &'a str,
    ctx: types::Context,
    /// Headers added to the final response (from rate-limit stages).
    response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Transform stages whose `on-request` ran, for the response phase.
    transforms_run: Vec<usize>,
    /// A path set by a transform, which replaces the route's rewrite.
    pub path_override: Option<PathAndQuery>,
}

/// What the request phase decided.
pub enum Decision {
    /// Go on to the upstream (or aggregate).
    Continue,
    /// Answer with this response.
    Respond(Response<Body>),
}

impl<'a> Flow<'a> {
    /// Starts a flow for a matched request.
    pub fn new(
        runtime: &'a Runtime,
        state: &'a LiveState,
        pipeline: &'a Pipeline,
        request_id: &'a str,
        client_ip: String,
        params: Vec<(String, String)>,
    ) -> Self {
        let ctx = types::Context {
            route: pipeline.route.to_string(),
            client_ip,
            request_id: request_id.to_string(),
            identity: None,
            params,
            vars: Vec::new(),
        };
        Self {
            runtime,
            state,
            pipeline,
            request_id,
            ctx,
            response_headers: Vec::new(),
            transforms_run: Vec::new(),
            path_override: None,
        }
    }

    fn call<'s>(&'s self, stage: &'s ResolvedStage, plugin: &'s Arc<Plugin>) -> Call<'s> {
        Call {
            plugin,
            route: &self.pipeline.route,
            config_json: &stage.config.config_json,
            limits: stage.config.limits,
            vars: self.ctx.vars.clone(),
            pool: stage.pool.as_ref(),
        }
    }

    /// Runs auth, rate-limit and `on-request` stages in order.
    pub async fn request_phase(
        &mut self,
        parts: &mut Parts,
        body: &mut RequestBody,
    ) -> Result<Decision, GatewayError> {
        if self.pipeline.has_auth() {
            strip_identity_headers(&mut parts.headers);
        }
        for stage in &self.pipeline.stages {
            let Some(plugin) = &stage.plugin else {
                self.unavailable(stage)?;
                continue;
            };
            if plugin.kind == PluginKind::Aggregate {
                continue;
            }
            if let Some(limit) = stage.config.buffer_body {
                buffer_request(body, limit).await?;
            }
            let buffered = match &*body {
                RequestBody::Buffered(bytes) if stage.config.buffer_body.is_some() => Some(bytes),
                _ => None,
            };
            let path = self.path_override.as_ref().map_or_else(
                || parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
                PathAndQuery::as_str,
            );
            let request = convert::request_to_wit(&parts.method, path, &parts.headers, buffered);
            let call = self.call(stage, plugin);
            let outcome = match plugin.kind {
                PluginKind::Auth => self
                    .runtime
                    .authenticate(call, &request, &self.ctx)
                    .await
                    .map(|(answer, vars)| (answer.map(StageOk::Identity), vars)),
                PluginKind::RateLimit => self
                    .runtime
                    .check_rate(call, &request, &self.ctx)
                    .await
                    .map(|(answer, vars)| (answer.map(StageOk::Headers), vars)),
                PluginKind::Transform => self
                    .runtime
                    .on_request(call, &request, &self.ctx)
                    .await
                    .map(|(answer, vars)| (answer.map(|r| StageOk::Request(Box::new(r))), vars)),
                PluginKind::Aggregate => unreachable!("skipped above"),
            };
            let answer = match outcome {
                Ok((answer, vars)) => {
                    self.ctx.vars = vars;
                    answer
                }
                Err(error) => {
                    self.failed(stage, error)?;
                    continue;
                }
            };
            let applied = match answer {
                Err(response) => match self.stage_response(response) {
                    Ok(response) => return Ok(Decision::Respond(response)),
                    Err(invalid) => Err(invalid),
                },
                Ok(StageOk::Identity(identity)) => {
                    check_identity(&identity, self.limits()).map(|()| {
                        set_identity_headers(&mut parts.headers, &identity);
                        self.ctx.identity = Some(identity);
                    })
                }
                Ok(StageOk::Headers(headers)) => convert::headers_from_wit(&headers, self.limits())
                    .map(|headers| {
                        let mut last = None;
                        for (name, value) in headers {
                            let name = name
                                .or_else(|| last.clone())
                                .expect("the first header has a name");
                            last = Some(name.clone());
                            self.response_headers.push((name, value));
                        }
                    }),
                Ok(StageOk::Request(request)) => {
                    let applied = self.apply_request(*request, parts, body);
                    if applied.is_ok() {
                        self.transforms_run.push(stage.index);
                    }
                    applied
                }
            };
            if let Err(invalid) = applied {
                self.failed(stage, StageError::InvalidOutput(invalid.0))?;
            }
        }
        Ok(Decision::Continue)
    }

    fn apply_request(
        &mut self,
        request: types::Request,
        parts: &mut Parts,
        body: &mut RequestBody,
    ) -> Result<(), InvalidOutput> {
        let method = convert::method_from_wit(&request.method)?;
        let headers = convert::headers_from_wit(&request.headers, self.limits())?;
        let current = self.path_override.as_ref().map_or_else(
            || parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
            PathAndQuery::as_str,
        );
        if request.uri != current {
            self.path_override = Some(convert::path_from_wit(&request.uri)?);
        }
        if let Some(new_body) = request.body {
            *body = RequestBody::Buffered(Bytes::from(new_body));
        }
        parts.method = method;
        parts.headers = headers;
        Ok(())
    }

    /// Runs the aggregate stage: plan, concurrent calls, merge.
    pub async fn aggregate(
        &mut self,
        stage: &ResolvedStage,
        parts: &Parts,
        body: RequestBody,
    ) -> Result<Response<Body>, GatewayError> {
        let plugin = stage
            .plugin
            .as_ref()
            .expect("aggregate() is only called with a loaded plugin");
        let bytes = match body {
            RequestBody::Buffered(bytes) => Some(bytes),
            RequestBody::Streaming(_) => None,
        };
        let path = self.path_override.as_ref().map_or_else(
            || parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
            PathAndQuery::as_str,
        );
        let request = convert::request_to_wit(&parts.method, path, &parts.headers, bytes.as_ref());
        let plan = match self
            .runtime
            .plan(
                self.call(stage, plugin),
                &request,
                &self.ctx,
                self.limits().aggregate_calls,
            )
            .await
        {
            Ok((plan, vars)) => {
                self.ctx.vars = vars;
                plan
            }
            Err(error) => return Err(self.fatal(stage, error)),
        };
        let calls = aggregate::run_calls(
            self.state,
            &stage.config,
            plan,
            self.request_id,
            &self.ctx.client_ip,
        )
        .await?;
        let merged = match self
            .runtime
            .merge(
                self.call(stage, plugin),
                &request,
                &self.ctx,
                &calls.results,
            )
            .await
        {
            Ok((merged, vars)) => {
                self.ctx.vars = vars;
                merged
            }
            Err(error) => return Err(self.fatal(stage, error)),
        };
        self.stage_response(merged)
            .map_err(|invalid| self.fatal(stage, StageError::InvalidOutput(invalid.0)))
    }

    /// Runs `on-response` of the transforms that ran, in reverse order, and adds the
    /// headers rate-limit stages asked for.
    pub async fn response_phase(
        &mut self,
        response: Response<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let mut response = response;
        for &index in self.transforms_run.clone().iter().rev() {
            let stage = &self.pipeline.stages[index];
            let Some(plugin) = &stage.plugin else {
                continue;
            };
            let (mut parts, body) = response.into_parts();
            let (body, buffered) = match stage.config.buffer_body {
                Some(limit) => {
                    let bytes = buffer_response(body, limit, &parts.headers).await?;
                    (full(bytes.clone()), Some(bytes))
                }
                None => (body, None),
            };
            let wit = types::Response {
                status: parts.status.as_u16(),
                headers: convert::headers_to_wit(&parts.headers),
                body: buffered.map(|b| b.to_vec()),
            };
            let outcome = self
                .runtime
                .on_response(self.call(stage, plugin), &wit, &self.ctx)
                .await;
            let answer = match outcome {
                Ok((answer, vars)) => {
                    self.ctx.vars = vars;
                    answer
                }
                Err(error) => {
                    self.failed(stage, error)?;
                    response = Response::from_parts(parts, body);
                    continue;
                }
            };
            match apply_response(answer, &mut parts, self.limits()) {
                Ok(Some(new_body)) => response = Response::from_parts(parts, full(new_body)),
                Ok(None) => response = Response::from_parts(parts, body),
                Err(invalid) => {
                    self.failed(stage, StageError::InvalidOutput(invalid.0))?;
                    response = Response::from_parts(parts, body);
                }
            }
        }
        Ok(self.with_response_headers(response))
    }

    /// A response a stage answered with, checked, plus rate-limit headers.
    fn stage_response(&self, answer: types::Response) -> Result<Response<Body>, InvalidOutput> {
        let status = convert::status_from_wit(answer.status)?;
        let headers = convert::headers_from_wit(&answer.headers, self.limits())?;
        let body = answer.body.unwrap_or_default();
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(self.with_response_headers(response))
    }

    /// Adds the headers rate-limit stages asked for to any response.
    pub fn with_response_headers(&self, mut response: Response<Body>) -> Response<Body> {
        for (name, value) in &self.response_headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        response
    }

    fn limits(&self) -> &'a OutputLimits {
        &self.state.config.plugins.output
    }

    /// A stage whose plugin is not loaded: skipped if fail-open, else 503.
    fn unavailable(&self, stage: &ResolvedStage) -> Result<(), GatewayError> {
        tracing::warn!(route = %self.pipeline.route, stage = stage.index, plugin = %stage.config.plugin, request_id = self.request_id, "stage plugin is not loaded");
        match stage.config.on_error {
            OnError::FailOpen => Ok(()),
            OnError::FailClosed => Err(GatewayError::PluginUnavailable {
                plugin: stage.config.plugin.clone(),
                stage: stage.index,
            }),
        }
    }

    /// A stage that failed: skipped if fail-open, else the mapped error.
    fn failed(&self, stage: &ResolvedStage, error: StageError) -> Result<(), GatewayError> {
        match stage.config.on_error {
            OnError::FailOpen => {
                tracing::warn!(route = %self.pipeline.route, stage = stage.index, plugin = %stage.config.plugin, request_id = self.request_id, error = %error, "stage failed; continuing (fail-open)");
                Ok(())
            }
            OnError::FailClosed => Err(self.fatal(stage, error)),
        }
    }

    /// Logs a stage failure and maps it to the client-facing error (without guest detail).
    fn fatal(&self, stage: &ResolvedStage, error: StageError) -> GatewayError {
        tracing::error!(route = %self.pipeline.route, stage = stage.index, plugin = %stage.config.plugin, request_id = self.request_id, error = %error, "stage failed");
        let plugin = stage.config.plugin.clone();
        let index = stage.index;
        match error {
            StageError::Deadline(_) | StageError::OutOfFuel => GatewayError::StageTimeout {
                plugin,
                stage: index,
            },
            StageError::Overloaded => GatewayError::Overloaded,
            StageError::Trap(_)
            | StageError::MemoryCap(_)
            | StageError::InvalidOutput(_)
            | StageError::WrongKind { .. } => GatewayError::StageFailed {
                plugin,
                stage: index,
            },
        }
    }
}

/// What a request-phase stage let through with.
enum StageOk {
    Identity(types::Identity),
    Headers(Vec<(String, Vec<u8>)>),
    Request(Box<types::Request>),
}

/// Applies an `on-response` answer to the response head; returns the new body if replaced.
fn apply_response(
    answer: types::Response,
    parts: &mut http::response::Parts,
    limits: &OutputLimits,
) -> Result<Option<Bytes>, InvalidOutput> {
    let status = convert::status_from_wit(answer.status)?;
    let mut headers = convert::headers_from_wit(&answer.headers, limits)?;
    let body = answer.body.map(Bytes::from);
    if body.is_none()
        && let Some(length) = parts.headers.get(http::header::CONTENT_LENGTH)
    {
        // The body stays the upstream's, and so does its length (it matters for HEAD).
        headers.insert(http::header::CONTENT_LENGTH, length.clone());
    }
    parts.status = status;
    parts.headers = headers;
    Ok(body)
}

/// Reads the request body into memory (once), refusing more than `limit` bytes with 413.
async fn buffer_request(body: &mut RequestBody, limit: u64) -> Result<(), GatewayError> {
    if let RequestBody::Streaming(stream) = body {
        let stream = std::mem::replace(stream, crate::body::empty());
        let collected = crate::proxy::limit_body(stream, limit).collect().await;
        match collected {
            Ok(collected) => *body = RequestBody::Buffered(collected.to_bytes()),
            Err(error) => {
                let too_large = crate::proxy::is_body_limit(error.as_ref());
                return Err(if too_large {
                    GatewayError::BodyTooLarge { limit }
                } else {
                    GatewayError::BadRequest(format!("could not read the request body: {error}"))
                });
            }
        }
    }
    Ok(())
}

/// Reads an upstream response body into memory for a stage, up to `limit` bytes.
async fn buffer_response(
    body: Body,
    limit: u64,
    _headers: &HeaderMap,
) -> Result<Bytes, GatewayError> {
    crate::proxy::limit_body(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|error| {
            tracing::warn!(%error, limit, "upstream response too large for a buffering stage");
            GatewayError::ResponseTooLarge { limit }
        })
}

/// Removes identity headers a client might send to impersonate someone.
fn strip_identity_headers(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            name.as_str() == SUBJECT_HEADER || name.as_str().starts_with(CLAIM_HEADER_PREFIX)
        })
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Refuses an identity whose claims would make more header fields or bytes than a
/// plugin may hand over.
fn check_identity(identity: &types::Identity, limits: &OutputLimits) -> Result<(), InvalidOutput> {
    let claims = &identity.claims;
    let bytes = claims
        .iter()
        .fold(identity.subject.len(), |sum, (name, value)| {
            sum.saturating_add(CLAIM_HEADER_PREFIX.len() + name.len() + value.len() + 4)
        });
    if claims.len() >= limits.header_fields || bytes > limits.header_bytes {
        return Err(InvalidOutput(format!(
            "an identity with {} claims and {bytes} bytes is over the limit of {} header fields and {} bytes",
            claims.len(),
            limits.header_fields,
            limits.header_bytes
        )));
    }
    Ok(())
}

/// Passes an identity on to the upstream as `x-auth-subject` and `x-auth-claim-NAME`.
fn set_identity_headers(headers: &mut HeaderMap, identity: &types::Identity) {
    if let Ok(value) = HeaderValue::from_str(&identity.subject) {
        headers.insert(HeaderName::from_static(SUBJECT_HEADER), value);
    }
    for (claim, value) in &identity.claims {
        let name: String = claim
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(format!("{CLAIM_HEADER_PREFIX}{name}").as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
}
