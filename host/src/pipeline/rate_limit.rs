//! Rate-limit stages: a plugin of world `rate-limit` lets a request through (adding headers
//! to its eventual response) or answers it with a refusal. It counts through the host's
//! shared `counters`.

use super::stage::{Decision, RequestParts, Stage, StageFuture, StageInfo, ValidateFuture};
use super::wasm::{WasmStage, wasm_world};
use super::{Flow, convert};
use crate::metrics::{Export, Outcome};
use crate::runtime::bindings::{RateLimit, RateLimitPre};
use crate::runtime::{Runtime, StageError, StageState};

wasm_world!(
    RateLimitWorld,
    RateLimitPre<StageState>,
    RateLimit,
    "rate-limit"
);

/// A stage running a rate-limit plugin.
pub struct RateLimitStage(pub WasmStage<RateLimitWorld>);

impl Stage for RateLimitStage {
    fn on_request<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: &'s mut RequestParts,
    ) -> StageFuture<'s, Decision> {
        Box::pin(async move {
            let stage = &self.0;
            let wit = stage.wit_request(flow, request).await?;
            let outcome = stage
                .run(flow, Export::Check, async |store, instance, ctx| {
                    instance.call_check(store, &wit, ctx).await
                })
                .await;
            let headers = match outcome {
                Ok(Ok(headers)) => headers,
                Ok(Err(refusal)) => return stage.respond(flow, refusal, Outcome::Refused),
                Err(error) => return stage.failed(flow, error),
            };
            match convert::header_fields_from_wit(&headers, flow.limits) {
                Ok(fields) => {
                    flow.response_headers.extend(fields);
                    stage.outcome(Outcome::Continue);
                    Ok(Decision::Continue)
                }
                Err(invalid) => stage.failed(flow, StageError::InvalidOutput(invalid.0)),
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
