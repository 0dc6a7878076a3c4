//! One request's trip through a route: what stages and the terminal share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use tokio::sync::Semaphore;

use crate::body::Body;
use crate::config::{OutputLimits, RouteConfig};
use crate::proxy::{Attempts, Upstream};
use crate::runtime::Runtime;
use crate::runtime::bindings::types;
use crate::tls::TlsSession;
use crate::trace::Trace;

/// Upstreams by name.
pub type UpstreamMap = BTreeMap<String, Arc<Upstream>>;

/// What the gateway knows of the client and the request it is serving.
pub struct Client<'a> {
    /// The client's IP address.
    pub ip: &'a str,
    /// The host it asked for (URI authority or `Host`).
    pub host: Option<&'a str>,
    /// The request id.
    pub request_id: &'a str,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The TLS session the request came over, if it came over TLS.
    pub tls: Option<&'a Arc<TlsSession>>,
}

/// The shared state of one request: the route, the live resources it may use, the WIT
/// context plugins see, and what stages left for later phases.
pub struct Flow<'a> {
    /// The sandbox runtime.
    pub runtime: &'a Runtime,
    /// The matched route.
    pub route: &'a RouteConfig,
    /// The route's name, shared with every plugin call.
    pub route_name: &'a Arc<str>,
    /// The live upstreams.
    pub upstreams: &'a UpstreamMap,
    /// Bounds on plugin output.
    pub limits: &'a OutputLimits,
    /// The gateway-wide reserve aggregate responses draw from.
    pub aggregate_reserve: &'a Arc<Semaphore>,
    /// The client and request.
    pub client: Client<'a>,
    /// Path captures of the route match, until the WIT context takes them.
    params: Vec<(String, String)>,
    /// The context plugins see, built at the first plugin call.
    ctx: Option<types::Context>,
    /// Headers added to the final response (rate-limit stages).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// A path a transform set, which replaces the route's rewrite.
    pub path_override: Option<PathAndQuery>,
    /// The upstream the terminal called, for the access log.
    pub upstream_used: Option<String>,
    /// How the terminal's upstream call went (target, attempts, time), for the access log.
    pub upstream_attempts: Attempts,
    /// The span now running (the request's, or a stage's while it runs) when tracing is on:
    /// the parent of spans started beneath it and the context sent upstream.
    pub trace: Option<Trace>,
    /// Time spent in each stage of the pipeline (both phases), when the access log wants it.
    pub stage_times: Option<Vec<Duration>>,
    /// What native stages carry from their request hook to their response hook, one value
    /// per type (a stage keeps a private type, so stages cannot see each other's).
    pub extensions: http::Extensions,
    /// The deadline a gRPC client set (`grpc-timeout`): the upstream call gets no longer.
    pub client_deadline: Option<Duration>,
}

impl<'a> Flow<'a> {
    /// A flow for a matched request.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one request's context, set once"
    )]
    pub fn new(
        runtime: &'a Runtime,
        route: &'a RouteConfig,
        route_name: &'a Arc<str>,
        upstreams: &'a UpstreamMap,
        limits: &'a OutputLimits,
        aggregate_reserve: &'a Arc<Semaphore>,
        client: Client<'a>,
        params: Vec<(String, String)>,
    ) -> Self {
        Self {
            runtime,
            route,
            route_name,
            upstreams,
            limits,
            aggregate_reserve,
            client,
            params,
            ctx: None,
            response_headers: Vec::new(),
            path_override: None,
            upstream_used: None,
            upstream_attempts: Attempts::default(),
            trace: None,
            stage_times: None,
            extensions: http::Extensions::new(),
            client_deadline: None,
        }
    }

    /// The WIT context, built on first use (routes without plugins never pay for it). It
    /// takes the path captures over; [`params`](Self::params) reads them from it then.
    pub fn ctx(&mut self) -> &mut types::Context {
        let (route, client, params) = (&self.route_name, &self.client, &mut self.params);
        self.ctx.get_or_insert_with(|| types::Context {
            route: route.to_string(),
            client_ip: client.ip.to_string(),
            request_id: client.request_id.to_string(),
            identity: None,
            params: std::mem::take(params),
            vars: Vec::new(),
        })
    }

    /// The path captures of the route match.
    pub fn params(&self) -> &[(String, String)] {
        self.ctx.as_ref().map_or(&self.params, |ctx| &ctx.params)
    }

    /// Stores the request variables after a call.
    pub fn set_vars(&mut self, vars: Vec<(String, String)>) {
        self.ctx().vars = vars;
    }

    /// The path and query stages see: a transform's override, else the request's.
    pub fn path<'p>(&'p self, parts: &'p http::request::Parts) -> &'p str {
        self.path_override.as_ref().map_or_else(
            || parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
            PathAndQuery::as_str,
        )
    }

    /// Adds the headers rate-limit stages asked for to a response.
    pub fn with_response_headers(&self, mut response: Response<Body>) -> Response<Body> {
        for (name, value) in &self.response_headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        response
    }
}
