//! Route terminals: what answers a request once its request-phase stages let it through.
//! Each route has exactly one, chosen in its config and checked by `wasmgate check`:
//!
//! - [`upstream`]: proxy to the route's upstream;
//! - [`aggregate`]: an aggregate plugin plans calls, the host makes them, the plugin merges;
//! - [`respond`]: a static answer or a redirect built from the path captures;
//! - [`transcode`]: an HTTP/JSON request answered by a gRPC call to the route's upstream.
//!
//! A new terminal (a wasi:http component, a gRPC transcoder) is one more file here
//! implementing [`Terminal`], and one arm where routes choose theirs (`Pipeline::build`).

pub mod aggregate;
pub mod respond;
pub mod transcode;
pub mod upstream;

use http::Response;

use super::Flow;
use super::stage::{RequestParts, StageFuture, ValidateFuture};
use crate::body::Body;
use crate::runtime::{PoolStatus, Runtime};

/// What answers a route's requests.
pub trait Terminal: Send + Sync {
    /// Answers the request.
    fn serve<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: RequestParts,
    ) -> StageFuture<'s, Response<Body>>;

    /// Checks the terminal's config once, when it is built.
    fn validate<'s>(&'s self, _runtime: &'s Runtime) -> ValidateFuture<'s> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The terminal kind, for the admin API.
    fn kind(&self) -> &'static str;

    /// The plugin it runs, if any.
    fn plugin(&self) -> Option<&str> {
        None
    }

    /// Its instance pool, when it reuses instances.
    fn pool(&self) -> Option<&dyn PoolStatus> {
        None
    }
}

/// The terminal of a route whose aggregate plugin is not loaded: every request is refused
/// with 503 until it arrives (fail-open cannot apply: there is nothing to answer with).
pub struct MissingPlugin {
    /// The plugin.
    pub plugin: String,
    /// Its stage position.
    pub stage: usize,
}

impl Terminal for MissingPlugin {
    fn serve<'s, 'f: 's>(
        &'s self,
        _flow: &'s mut Flow<'f>,
        _request: RequestParts,
    ) -> StageFuture<'s, Response<Body>> {
        Box::pin(std::future::ready(Err(
            crate::rescue::GatewayError::PluginUnavailable {
                plugin: self.plugin.clone(),
                stage: self.stage,
            },
        )))
    }

    fn kind(&self) -> &'static str {
        "missing"
    }

    fn plugin(&self) -> Option<&str> {
        Some(&self.plugin)
    }
}
