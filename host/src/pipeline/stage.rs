//! The one seam every stage implements, WASM or native: a request-phase hook and a
//! response-phase hook, both doing nothing unless a stage says otherwise (the shape of
//! Pingora's `ProxyHttp` phases).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::Response;
use http::request::Parts;

use super::Flow;
use crate::body::{Body, full};
use crate::rescue::GatewayError;
use crate::runtime::{PoolStatus, Runtime};

/// The future a stage hook returns.
pub type StageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// The future of a stage's config check: why the config is refused, if it is.
pub type ValidateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What a request-phase hook decided.
pub enum Decision {
    /// Go on; this stage's response hook runs on the way out.
    Continue,
    /// Go on without this stage: its response hook does not run (a fail-open stage that
    /// could not run, or a stage with nothing to do for this request).
    Skip,
    /// Answer with this response; later stages and the terminal do not run.
    Respond(Response<Body>),
    /// Answer with this response in place of the terminal's (a cached one): later stages
    /// and the terminal do not run, but the response hooks of the stages before this one
    /// do, as on any response.
    Serve(Response<Body>),
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

/// A request on its way through the pipeline.
pub struct RequestParts {
    /// Method, URI, headers.
    pub parts: Parts,
    /// The body.
    pub body: RequestBody,
}

/// What the admin API shows of a stage.
pub struct StageInfo<'a> {
    /// The stage kind: a WIT world (`auth`, …) or a native stage (`compress`).
    pub kind: &'static str,
    /// The plugin a WASM stage runs.
    pub plugin: Option<&'a str>,
    /// Its instance pool, when it reuses instances.
    pub pool: Option<&'a dyn PoolStatus>,
    /// Its position in the route's `stages`; `None` for a native stage a route key adds.
    pub position: Option<usize>,
}

/// One stage of a route. Hooks default to "continue" and "pass the response on".
pub trait Stage: Send + Sync {
    /// Runs in configured order before the terminal.
    fn on_request<'s, 'f: 's>(
        &'s self,
        _flow: &'s mut Flow<'f>,
        _request: &'s mut RequestParts,
    ) -> StageFuture<'s, Decision> {
        Box::pin(std::future::ready(Ok(Decision::Continue)))
    }

    /// Runs in reverse order after the terminal, for stages whose request hook continued.
    fn on_response<'s, 'f: 's>(
        &'s self,
        _flow: &'s mut Flow<'f>,
        response: Response<Body>,
    ) -> StageFuture<'s, Response<Body>> {
        Box::pin(std::future::ready(Ok(response)))
    }

    /// Offers a response in place of a failed terminal's error answer (a cache's stale
    /// response, `stale-if-error`), for stages whose request hook continued; the response
    /// hooks of the stages before this one run on it.
    fn on_terminal_error(
        &self,
        _flow: &mut Flow<'_>,
        _error: &GatewayError,
    ) -> Option<Response<Body>> {
        None
    }

    /// Checks the stage's config once, when it is built (a plugin's `validate-config`).
    fn validate<'s>(&'s self, _runtime: &'s Runtime) -> ValidateFuture<'s> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether the stage may establish an identity. Identity headers a client sends are
    /// removed on routes that have one.
    fn may_authenticate(&self) -> bool {
        false
    }

    /// What the admin API shows.
    fn info(&self) -> StageInfo<'_>;
}
