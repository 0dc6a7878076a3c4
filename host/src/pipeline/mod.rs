//! A route's pipeline: its stages around its one terminal.
//!
//! Request-phase hooks run in configured order; a stage that answers short-circuits the
//! rest. The route's [`terminal`] then answers (upstream, aggregate, or a static answer),
//! and response-phase hooks run in reverse order for the stages that continued. WASM stages
//! (one file per WIT world: [`auth`], [`rate_limit`], [`transform`]) and native stages
//! (one file each: [`compress`], [`cache`]) implement the one [`Stage`] seam. Native stages come
//! from route keys and run before the configured stages, so their response hooks run last;
//! the cache stage alone runs after them (it must not answer before authentication).

pub mod auth;
pub mod cache;
pub mod compress;
pub mod convert;
mod flow;
mod missing;
pub mod rate_limit;
pub mod stage;
pub mod terminal;
pub mod transform;
mod wasm;

use std::sync::Arc;
use std::time::Instant;

use http::Response;
use http::header::{HeaderMap, HeaderName};
use opentelemetry::KeyValue;

pub use flow::{Client, Flow, UpstreamMap};
pub use stage::{Decision, RequestBody, RequestParts, Stage, StageInfo};
pub use terminal::Terminal;

use crate::body::Body;
use crate::cache::Caches;
use crate::config::{RouteConfig, StageConfig};
use crate::metrics::{Metrics, RouteMetrics, StageMetrics};
use crate::rescue::GatewayError;
use crate::runtime::{Plugin, PluginKind, PluginPre, Runtime};
use crate::trace::{self, Trace};
use terminal::aggregate::AggregateTerminal;
use terminal::respond::RespondTerminal;
use terminal::transcode::TranscodeTerminal;
use terminal::upstream::UpstreamTerminal;
use wasm::WasmStage;

/// Header carrying the authenticated subject to the upstream.
pub const SUBJECT_HEADER: &str = "x-auth-subject";
/// Prefix of headers carrying identity claims to the upstream.
pub const CLAIM_HEADER_PREFIX: &str = "x-auth-claim-";

/// A route's stages and terminal.
pub struct Pipeline {
    /// The route's name, shared with every plugin call.
    pub route: Arc<str>,
    /// Stages in configured order.
    pub stages: Vec<Box<dyn Stage>>,
    /// What answers once the stages let a request through.
    pub terminal: Box<dyn Terminal>,
    /// Whether a stage may establish identity (client identity headers are then removed).
    may_authenticate: bool,
    /// The route's request metrics, when metrics are on.
    pub metrics: Option<Arc<RouteMetrics>>,
}

/// A stage or terminal that cannot serve as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildProblem {
    /// The stage's position, or `None` for the route itself.
    pub stage: Option<usize>,
    /// The plugin involved, if any.
    pub plugin: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Turns a loaded plugin into the stage of its world; `None` for an aggregate plugin,
/// which is a terminal, not a stage. A new WIT world is one more file and one more arm here.
fn wasm_stage(
    index: usize,
    config: &StageConfig,
    plugin: &Arc<Plugin>,
    metrics: Option<StageMetrics>,
) -> Option<Box<dyn Stage>> {
    let (config, owned) = (config.clone(), plugin.clone());
    Some(match &plugin.pre {
        PluginPre::Auth(pre) => Box::new(auth::AuthStage(WasmStage::new(
            index,
            config,
            owned,
            pre.clone(),
            metrics,
        ))),
        PluginPre::RateLimit(pre) => Box::new(rate_limit::RateLimitStage(WasmStage::new(
            index,
            config,
            owned,
            pre.clone(),
            metrics,
        ))),
        PluginPre::Transform(pre) => Box::new(transform::TransformStage(WasmStage::new(
            index,
            config,
            owned,
            pre.clone(),
            metrics,
        ))),
        PluginPre::Aggregate(_) => return None,
    })
}

impl Pipeline {
    /// Builds a route's pipeline from its config, the loaded plugins and the live
    /// upstreams, recording into `metrics` when given. Stages whose plugin is missing
    /// answer 503 until it arrives (or are skipped when fail-open); anything that cannot
    /// serve as configured is a problem.
    pub fn build(
        route: &RouteConfig,
        plugins: &std::collections::BTreeMap<String, Arc<Plugin>>,
        upstreams: &UpstreamMap,
        metrics: Option<&Metrics>,
        caches: &Caches,
    ) -> Result<Self, Vec<BuildProblem>> {
        let stage_metrics = |index: usize, plugin: &Plugin| {
            metrics.map(|m| m.stage(&route.name, index, &plugin.name, &plugin.hash))
        };
        let mut problems = Vec::new();
        let mut stage_configs: &[StageConfig] = &route.stages;
        // A route without `upstream` or `respond` is answered by its last stage, which must
        // be an aggregate plugin.
        let terminal: Option<Box<dyn Terminal>> = if let Some(name) = &route.upstream {
            let upstream = upstreams.get(name).map(|upstream| {
                Box::new(UpstreamTerminal {
                    name: name.clone(),
                    upstream: upstream.clone(),
                }) as Box<dyn Terminal>
            });
            if upstream.is_none() {
                problems.push(BuildProblem {
                    stage: None,
                    plugin: None,
                    message: format!("unknown upstream `{name}`"),
                });
            }
            upstream
        } else if let Some(respond) = &route.respond {
            Some(Box::new(RespondTerminal(respond.clone())))
        } else if let Some(transcode) = &route.transcode {
            let terminal = upstreams.get(&transcode.upstream).map(|upstream| {
                Box::new(TranscodeTerminal {
                    name: transcode.upstream.clone(),
                    upstream: upstream.clone(),
                    api: transcode.api.clone(),
                }) as Box<dyn Terminal>
            });
            if terminal.is_none() {
                problems.push(BuildProblem {
                    stage: None,
                    plugin: None,
                    message: format!("unknown upstream `{}`", transcode.upstream),
                });
            }
            terminal
        } else if let Some((last, rest)) = route.stages.split_last() {
            stage_configs = rest;
            let index = rest.len();
            match plugins.get(&last.plugin) {
                Some(plugin) => match &plugin.pre {
                    PluginPre::Aggregate(pre) => Some(Box::new(AggregateTerminal(WasmStage::new(
                        index,
                        last.clone(),
                        plugin.clone(),
                        pre.clone(),
                        stage_metrics(index, plugin),
                    ))) as Box<dyn Terminal>),
                    _ => {
                        problems.push(BuildProblem {
                            stage: Some(index),
                            plugin: Some(last.plugin.clone()),
                            message: format!(
                                "the route has no `upstream` or `respond`, so its last stage must be an aggregate plugin, not {}",
                                plugin.kind
                            ),
                        });
                        None
                    }
                },
                // Its world is unknown until it loads: the route answers 503 meanwhile.
                None => Some(Box::new(terminal::MissingPlugin {
                    plugin: last.plugin.clone(),
                    stage: index,
                })),
            }
        } else {
            problems.push(BuildProblem {
                stage: None,
                plugin: None,
                message: "the route has no terminal: set `upstream`, `respond`, or end `stages` with an aggregate plugin".into(),
            });
            None
        };
        let mut stages: Vec<Box<dyn Stage>> = Vec::with_capacity(stage_configs.len() + 2);
        // Native stages, from route keys.
        stages.extend(compress::CompressStage::for_route(route));
        for (index, config) in stage_configs.iter().enumerate() {
            let stage = match plugins.get(&config.plugin) {
                Some(plugin) if plugin.kind == PluginKind::Aggregate => {
                    let message = if route.upstream.is_some()
                        || route.respond.is_some()
                        || route.transcode.is_some()
                    {
                        "an aggregate plugin answers the route itself: remove the route's `upstream` (or `respond`) and make it the last stage"
                    } else {
                        "an aggregate stage must be the route's last stage"
                    };
                    problems.push(BuildProblem {
                        stage: Some(index),
                        plugin: Some(config.plugin.clone()),
                        message: message.into(),
                    });
                    None
                }
                Some(plugin) => wasm_stage(index, config, plugin, stage_metrics(index, plugin)),
                None => Some(Box::new(missing::MissingStage {
                    index,
                    config: config.clone(),
                }) as Box<dyn Stage>),
            };
            stages.extend(stage);
        }
        // The cache looks up after authentication and rate limiting, and what it serves goes
        // back through every response hook.
        stages.extend(cache::CacheStage::for_route(route, caches));
        let Some(terminal) = terminal.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        let may_authenticate = stages.iter().any(|s| s.may_authenticate());
        Ok(Self {
            route: route.name.as_str().into(),
            stages,
            terminal,
            may_authenticate,
            metrics: metrics.map(|m| m.route(&route.name)),
        })
    }

    /// Runs every stage's and the terminal's config check; returns the problems.
    pub async fn validate(&self, runtime: &Runtime) -> Vec<BuildProblem> {
        let mut problems = Vec::new();
        for stage in &self.stages {
            if let Err(message) = stage.validate(runtime).await {
                let info = stage.info();
                problems.push(BuildProblem {
                    stage: info.position,
                    plugin: info.plugin.map(str::to_string),
                    message,
                });
            }
        }
        if let Err(message) = self.terminal.validate(runtime).await {
            problems.push(BuildProblem {
                stage: Some(self.terminal_position()),
                plugin: self.terminal.plugin().map(str::to_string),
                message,
            });
        }
        problems
    }

    /// The terminal's position in the route's `stages` (an aggregate plugin is written last):
    /// the number of configured stages before it.
    pub fn terminal_position(&self) -> usize {
        self.stages
            .iter()
            .filter(|stage| stage.info().position.is_some())
            .count()
    }

    /// Serves a matched request: request-phase hooks, the terminal, response-phase hooks.
    pub async fn run(
        &self,
        flow: &mut Flow<'_>,
        mut request: RequestParts,
    ) -> Result<Response<Body>, GatewayError> {
        if self.may_authenticate {
            strip_identity_headers(&mut request.parts.headers);
        }
        let mut continued = Vec::with_capacity(self.stages.len());
        let mut served_by_stage = None;
        for (index, stage) in self.stages.iter().enumerate() {
            let span = StageSpan::enter(flow, index, stage.info(), "");
            let decision = stage.on_request(flow, &mut request).await;
            span.exit(flow, decision.as_ref().err());
            match decision? {
                Decision::Continue => continued.push((index, stage)),
                Decision::Skip => {}
                Decision::Respond(response) => return Ok(response),
                Decision::Serve(response) => {
                    served_by_stage = Some(response);
                    break;
                }
            }
        }
        let served = match served_by_stage {
            Some(response) => Ok(response),
            None => {
                let span = StageSpan::enter_terminal(flow, self.terminal.as_ref());
                let served = self.terminal.serve(flow, request).await;
                span.exit(flow, served.as_ref().err());
                served
            }
        };
        let mut remaining = continued.into_iter().rev();
        let mut response = match served {
            Ok(response) => response,
            // A failed terminal's answer still carries the headers rate-limit stages asked
            // for; response hooks do not run on it, unless a stage offers a response in its
            // place (then the hooks of the stages before that one run on that response).
            Err(error) => {
                let rescued = remaining
                    .by_ref()
                    .find_map(|(_, stage)| stage.on_terminal_error(flow, &error));
                match rescued {
                    Some(response) => response,
                    None => {
                        let response = error.into_response(flow.client.request_id);
                        return Ok(flow.with_response_headers(response));
                    }
                }
            }
        };
        // A `101` is the start of a tunnel, not a message: no stage may change (compress,
        // cache, transform) it.
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(flow.with_response_headers(response));
        }
        for (index, stage) in remaining {
            let span = StageSpan::enter(flow, index, stage.info(), " response");
            let answer = stage.on_response(flow, response).await;
            span.exit(flow, answer.as_ref().err());
            response = answer?;
        }
        Ok(flow.with_response_headers(response))
    }
}

/// One stage or terminal call as the request's trace and access log see it: a child span
/// of the request's (the parent of anything the call starts), and its time.
struct StageSpan {
    /// The request's span, restored when the call ends.
    parent: Option<Trace>,
    /// Where the call's time is added in `Flow::stage_times`.
    slot: Option<usize>,
    started: Option<Instant>,
}

impl StageSpan {
    /// A stage's hook; `phase` is `""` for the request hook, `" response"` for the other.
    fn enter(flow: &mut Flow<'_>, index: usize, info: StageInfo<'_>, phase: &str) -> Self {
        Self::start(flow, Some(index), info.kind, info.plugin, phase)
    }

    /// A terminal that runs a plugin (an aggregate) is a span of its own, the parent of the
    /// calls it plans; a proxying terminal is not (its attempts are the request's children).
    fn enter_terminal(flow: &mut Flow<'_>, terminal: &dyn Terminal) -> Self {
        match terminal.plugin() {
            Some(plugin) => Self::start(flow, None, terminal.kind(), Some(plugin), ""),
            None => Self {
                parent: None,
                slot: None,
                started: None,
            },
        }
    }

    /// Starts the span `KIND [PLUGIN][ response]` when the request is traced, and the clock
    /// when stage times are kept.
    fn start(
        flow: &mut Flow<'_>,
        slot: Option<usize>,
        kind: &'static str,
        plugin: Option<&str>,
        phase: &str,
    ) -> Self {
        let parent = flow.trace.as_mut().map(|request| {
            let child = match plugin {
                Some(plugin) => {
                    let name = format!("{kind} {plugin}{phase}");
                    let child = request.child(name, trace::Kind::Internal);
                    child.set(KeyValue::new("wasmgate.plugin", plugin.to_string()));
                    child
                }
                None if phase.is_empty() => request.child(kind, trace::Kind::Internal),
                None => request.child(format!("{kind}{phase}"), trace::Kind::Internal),
            };
            std::mem::replace(request, child)
        });
        let timed = flow.stage_times.is_some();
        Self {
            parent,
            slot: slot.filter(|_| timed),
            started: timed.then(Instant::now),
        }
    }

    fn exit(self, flow: &mut Flow<'_>, error: Option<&GatewayError>) {
        if let (Some(slot), Some(started), Some(times)) =
            (self.slot, self.started, flow.stage_times.as_mut())
            && let Some(time) = times.get_mut(slot)
        {
            *time += started.elapsed();
        }
        if let Some(parent) = self.parent
            && let Some(span) = flow.trace.replace(parent)
        {
            if let Some(error) = error {
                let status = error.status_and_code().0;
                span.set(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                span.fail(error.to_string());
            }
            span.end();
        }
    }
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
