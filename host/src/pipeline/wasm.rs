//! What every WASM stage shares: its plugin, config and limits, the call it makes with the
//! request's context, body buffering, and the fail-open / fail-closed policy.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use wasmtime::Store;

use super::stage::{Decision, RequestBody, RequestParts, StageInfo, ValidateFuture};
use super::{Flow, compress, convert};
use crate::body::Body;
use crate::config::{OnError, StageConfig};
use crate::metrics::{CallFailure, Export, Outcome, StageMetrics};
use crate::rescue::GatewayError;
use crate::runtime::bindings::trace::SpanContext;
use crate::runtime::bindings::types;
use crate::runtime::{
    Call, InstancePool, Plugin, PoolStatus, Runtime, StageError, StageState, World,
};
use crate::tls::TlsSession;
use crate::trace::Trace;

/// A stage that runs a plugin of world `W`.
pub struct WasmStage<W: World> {
    /// Position in the route (0-based).
    pub index: usize,
    /// The stage as configured.
    pub config: StageConfig,
    /// The plugin.
    pub plugin: Arc<Plugin>,
    pre: W::Pre,
    pool: Option<InstancePool<W::Instance>>,
    metrics: Option<StageMetrics>,
}

impl<W: World> WasmStage<W> {
    /// A stage at `index` running `plugin` (whose component is `pre`) with `config`,
    /// recording into `metrics` when given.
    pub fn new(
        index: usize,
        config: StageConfig,
        plugin: Arc<Plugin>,
        pre: W::Pre,
        metrics: Option<StageMetrics>,
    ) -> Self {
        let pool = config.limits.reuse.map(InstancePool::new);
        Self {
            index,
            config,
            plugin,
            pre,
            pool,
            metrics,
        }
    }

    fn call<'a>(
        &'a self,
        route: &'a Arc<str>,
        vars: Vec<(String, String)>,
        trace: Option<&Trace>,
        tls: Option<Arc<TlsSession>>,
    ) -> Call<'a, W> {
        Call {
            tls,
            plugin: &self.plugin,
            pre: &self.pre,
            route,
            config_json: &self.config.config_json,
            limits: self.config.limits,
            vars,
            pool: self.pool.as_ref(),
            metrics: self.metrics.as_ref(),
            span: trace.map(|trace| SpanContext {
                trace_id: trace.trace_id(),
                span_id: trace.span_id(),
                sampled: trace.is_sampled(),
            }),
        }
    }

    /// Runs `invoke` (a call of `export`) on an instance for this request, with the
    /// request's context; keeps the request variables the call set.
    pub async fn run<T>(
        &self,
        flow: &mut Flow<'_>,
        export: Export,
        invoke: impl AsyncFnOnce(
            &mut Store<StageState>,
            &W::Instance,
            &types::Context,
        ) -> wasmtime::Result<T>,
    ) -> Result<T, StageError> {
        let (runtime, route) = (flow.runtime, flow.route_name);
        let trace = flow.trace.clone();
        let tls = flow.client.tls.cloned();
        let ctx = flow.ctx();
        let call = self.call(route, ctx.vars.clone(), trace.as_ref(), tls);
        let ctx = &*ctx;
        let started = self.metrics.as_ref().map(|_| Instant::now());
        let outcome = runtime
            .run(call, async |store, instance| {
                invoke(store, instance, ctx).await
            })
            .await;
        if let (Some(metrics), Some(started)) = (&self.metrics, started) {
            metrics.call(export, started.elapsed(), flow.trace.as_ref());
        }
        let (value, vars) = outcome?;
        flow.set_vars(vars);
        Ok(value)
    }

    /// Runs the plugin's `validate-config` on this stage's config.
    pub fn validate<'s>(&'s self, runtime: &'s Runtime) -> ValidateFuture<'s> {
        Box::pin(async move {
            let route: Arc<str> = Arc::from("");
            let outcome = runtime
                .validate_config(self.call(&route, Vec::new(), None, None))
                .await;
            match outcome {
                Ok((Ok(()), _)) => Ok(()),
                Ok((Err(message), _)) => Err(format!(
                    "invalid config: {}",
                    crate::text::untrusted(&message)
                )),
                Err(error) => Err(format!("validate-config failed: {error}")),
            }
        })
    }

    /// The WIT request a stage sees, with the body read whole (see [`buffer_request`]) when
    /// the stage asks for it.
    pub async fn wit_request(
        &self,
        flow: &Flow<'_>,
        request: &mut RequestParts,
    ) -> Result<types::Request, GatewayError> {
        if let Some(limit) = self.config.buffer_body {
            buffer_request(request, limit).await?;
        }
        let body = match &request.body {
            RequestBody::Buffered(bytes) if self.config.buffer_body.is_some() => Some(bytes),
            _ => None,
        };
        let parts = &request.parts;
        Ok(convert::request_to_wit(
            &parts.method,
            flow.path(parts),
            &parts.headers,
            body,
        ))
    }

    /// Records what the stage decided for a request.
    pub fn outcome(&self, outcome: Outcome) {
        if let Some(metrics) = &self.metrics {
            metrics.outcome(outcome);
        }
    }

    /// Records a failed call (its kind, and the `failed` outcome).
    fn count_failure(&self, error: &StageError) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        metrics.failure(match error {
            StageError::Trap(_) => CallFailure::Trap,
            StageError::Deadline(_) => CallFailure::Deadline,
            StageError::OutOfFuel => CallFailure::Fuel,
            StageError::MemoryCap(_) => CallFailure::MemoryCap,
            StageError::InvalidOutput(_) => CallFailure::InvalidOutput,
            StageError::Overloaded => CallFailure::PoolExhausted,
        });
        metrics.outcome(Outcome::Failed);
    }

    /// The plugin's own answer to the request (a refusal, or a transform answering
    /// itself): checked and framed by the host and sent, or the stage fails.
    pub fn respond(
        &self,
        flow: &Flow<'_>,
        answer: types::Response,
        outcome: Outcome,
    ) -> Result<Decision, GatewayError> {
        match self::answer(flow, answer) {
            Ok(response) => {
                self.outcome(outcome);
                Ok(Decision::Respond(response))
            }
            Err(invalid) => self.failed(flow, StageError::InvalidOutput(invalid.0)),
        }
    }

    /// A call that failed: the stage is skipped if fail-open, else the mapped error.
    pub fn failed(&self, flow: &Flow<'_>, error: StageError) -> Result<Decision, GatewayError> {
        match self.config.on_error {
            OnError::FailOpen => {
                self.count_failure(&error);
                tracing::warn!(route = %flow.route_name, stage = self.index, plugin = %self.config.plugin, request_id = flow.client.request_id, error = %error, "stage failed; continuing (fail-open)");
                Ok(Decision::Skip)
            }
            OnError::FailClosed => Err(self.fatal(flow, error)),
        }
    }

    /// Logs a stage failure and maps it to the client-facing error (no guest detail).
    pub fn fatal(&self, flow: &Flow<'_>, error: StageError) -> GatewayError {
        self.count_failure(&error);
        tracing::error!(route = %flow.route_name, stage = self.index, plugin = %self.config.plugin, request_id = flow.client.request_id, error = %error, "stage failed");
        let (plugin, stage) = (self.config.plugin.clone(), self.index);
        match error {
            StageError::Deadline(_) | StageError::OutOfFuel => {
                GatewayError::StageTimeout { plugin, stage }
            }
            StageError::Overloaded => GatewayError::Overloaded,
            StageError::Trap(_) | StageError::MemoryCap(_) | StageError::InvalidOutput(_) => {
                GatewayError::StageFailed { plugin, stage }
            }
        }
    }

    /// What the admin API shows of this stage.
    pub fn info(&self) -> StageInfo<'_> {
        StageInfo {
            kind: self.plugin.kind.world(),
            plugin: Some(&self.config.plugin),
            pool: self.pool.as_ref().map(|pool| pool as &dyn PoolStatus),
            position: Some(self.index),
        }
    }
}

/// Implements [`World`] for a marker type over one `bindgen!` world (every world exports
/// `config-check`): `wasm_world!(AuthWorld, AuthPre<StageState>, Auth, "auth")`.
macro_rules! wasm_world {
    ($marker:ident, $pre:ty, $instance:ty, $name:literal) => {
        #[doc = concat!("The `", $name, "` world.")]
        pub struct $marker;

        impl $crate::runtime::World for $marker {
            type Pre = $pre;
            type Instance = $instance;

            fn instantiate<'a>(
                pre: &'a Self::Pre,
                store: &'a mut wasmtime::Store<$crate::runtime::StageState>,
            ) -> impl std::future::Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a
            {
                pre.instantiate_async(store)
            }

            fn validate_config<'a>(
                instance: &'a Self::Instance,
                store: &'a mut wasmtime::Store<$crate::runtime::StageState>,
                config: &'a str,
            ) -> impl std::future::Future<Output = wasmtime::Result<Result<(), String>>> + Send + 'a
            {
                instance
                    .wasmgate_plugin_config_check()
                    .call_validate_config(store, config)
            }
        }
    };
}
pub(crate) use wasm_world;

/// Reads the request body into memory (once), refusing more than `limit` bytes with 413.
///
/// A body in a content coding ([`compress::request_coding`]: `gzip`, `br` or `zstd`) is
/// decoded on the way, so that stages see what the client meant; `limit` bounds the decoded
/// bytes, while decoding. The request goes on without `Content-Encoding`, with the decoded
/// `Content-Length`. A coding the gateway cannot decode is refused with 415.
pub async fn buffer_request(request: &mut RequestParts, limit: u64) -> Result<(), GatewayError> {
    let RequestBody::Streaming(stream) = &mut request.body else {
        return Ok(());
    };
    let stream = std::mem::replace(stream, crate::body::empty());
    let headers = &mut request.parts.headers;
    let bytes = match compress::request_coding(headers)? {
        Some(coding) => {
            let decoded = compress::decode_request_body(stream, coding, limit).await?;
            headers.remove(header::CONTENT_ENCODING);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(decoded.len()));
            decoded
        }
        None => match crate::proxy::limit_body(stream, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let too_large = crate::proxy::is_body_limit(error.as_ref());
                return Err(if too_large {
                    GatewayError::BodyTooLarge { limit }
                } else {
                    GatewayError::BadRequest(format!("could not read the request body: {error}"))
                });
            }
        },
    };
    request.body = RequestBody::Buffered(bytes);
    Ok(())
}

/// Reads an upstream response body into memory for a stage, up to `limit` bytes.
pub async fn buffer_response(body: Body, limit: u64) -> Result<Bytes, GatewayError> {
    crate::proxy::limit_body(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|error| {
            tracing::warn!(%error, limit, "upstream response too large for a buffering stage");
            GatewayError::ResponseTooLarge { limit }
        })
}

/// A response a plugin answered with, checked and framed by the host.
pub fn answer(
    flow: &Flow<'_>,
    answer: types::Response,
) -> Result<http::Response<Body>, convert::InvalidOutput> {
    let status = convert::status_from_wit(answer.status)?;
    let headers: HeaderMap = convert::headers_from_wit(&answer.headers, flow.limits)?;
    let mut response = http::Response::new(crate::body::full(answer.body.unwrap_or_default()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(flow.with_response_headers(response))
}
