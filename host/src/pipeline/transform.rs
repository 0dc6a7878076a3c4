//! Transform stages: a plugin of world `transform` rewrites the request on its way in
//! (`on-request`, or answers it) and the response on its way out (`on-response`). The two
//! phases run on separate instances, so none is held while the upstream works.

use bytes::Bytes;
use http::Response;

use super::Flow;
use super::convert::{self, InvalidOutput};
use super::stage::{
    Decision, RequestBody, RequestParts, Stage, StageFuture, StageInfo, ValidateFuture,
};
use super::wasm::{self, WasmStage, wasm_world};
use crate::body::{Body, full};
use crate::config::OutputLimits;
use crate::metrics::{Export, Outcome};
use crate::runtime::bindings::{Transform, TransformPre, types};
use crate::runtime::{Runtime, StageError, StageState};

wasm_world!(
    TransformWorld,
    TransformPre<StageState>,
    Transform,
    "transform"
);

/// A stage running a transform plugin.
pub struct TransformStage(pub WasmStage<TransformWorld>);

impl Stage for TransformStage {
    fn on_request<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: &'s mut RequestParts,
    ) -> StageFuture<'s, Decision> {
        Box::pin(async move {
            let stage = &self.0;
            let wit = stage.wit_request(flow, request).await?;
            let outcome = stage
                .run(flow, Export::OnRequest, async |store, instance, ctx| {
                    instance.call_on_request(store, &wit, ctx).await
                })
                .await;
            let rewritten = match outcome {
                Ok(Ok(rewritten)) => rewritten,
                Ok(Err(answer)) => return stage.respond(flow, answer, Outcome::Answered),
                Err(error) => return stage.failed(flow, error),
            };
            match apply_request(flow, rewritten, request) {
                Ok(()) => {
                    stage.outcome(Outcome::Continue);
                    Ok(Decision::Continue)
                }
                Err(invalid) => stage.failed(flow, StageError::InvalidOutput(invalid.0)),
            }
        })
    }

    fn on_response<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        response: Response<Body>,
    ) -> StageFuture<'s, Response<Body>> {
        Box::pin(async move {
            let stage = &self.0;
            let (mut parts, body) = response.into_parts();
            let (body, buffered) = match stage.config.buffer_body {
                Some(limit) => {
                    let bytes = wasm::buffer_response(body, limit).await?;
                    (full(bytes.clone()), Some(bytes))
                }
                None => (body, None),
            };
            let wit = types::Response {
                status: parts.status.as_u16(),
                headers: convert::headers_to_wit(&parts.headers),
                body: buffered.map(|b| b.to_vec()),
            };
            let outcome = stage
                .run(flow, Export::OnResponse, async |store, instance, ctx| {
                    instance.call_on_response(store, &wit, ctx).await
                })
                .await;
            let answer = match outcome {
                Ok(answer) => answer,
                Err(error) => {
                    stage.failed(flow, error)?;
                    return Ok(Response::from_parts(parts, body));
                }
            };
            match apply_response(answer, &mut parts, flow.limits) {
                Ok(Some(new_body)) => Ok(Response::from_parts(parts, full(new_body))),
                Ok(None) => Ok(Response::from_parts(parts, body)),
                Err(invalid) => {
                    stage.failed(flow, StageError::InvalidOutput(invalid.0))?;
                    Ok(Response::from_parts(parts, body))
                }
            }
        })
    }

    fn validate<'s>(&'s self, runtime: &'s Runtime) -> ValidateFuture<'s> {
        self.0.validate(runtime)
    }

    fn info(&self) -> StageInfo<'_> {
        self.0.info()
    }
}

/// Applies an `on-request` answer: method, headers, a new path (which replaces the route's
/// rewrite) and a new body.
fn apply_request(
    flow: &mut Flow<'_>,
    rewritten: types::Request,
    request: &mut RequestParts,
) -> Result<(), InvalidOutput> {
    let method = convert::method_from_wit(&rewritten.method)?;
    let headers = convert::headers_from_wit(&rewritten.headers, flow.limits)?;
    if rewritten.uri != flow.path(&request.parts) {
        flow.path_override = Some(convert::path_from_wit(&rewritten.uri)?);
    }
    if let Some(body) = rewritten.body {
        request.body = RequestBody::Buffered(Bytes::from(body));
    }
    request.parts.method = method;
    request.parts.headers = headers;
    Ok(())
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
