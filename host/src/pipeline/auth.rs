//! Auth stages: a plugin of world `auth` decides who the caller is, or refuses the request.
//! The identity goes to later stages (in the context) and to the upstream
//! (`x-auth-subject`, `x-auth-claim-NAME`).

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::convert::InvalidOutput;
use super::stage::{Decision, RequestParts, Stage, StageFuture, StageInfo, ValidateFuture};
use super::wasm::{WasmStage, wasm_world};
use super::{CLAIM_HEADER_PREFIX, Flow, SUBJECT_HEADER};
use crate::config::OutputLimits;
use crate::metrics::{Export, Outcome};
use crate::runtime::bindings::{Auth, AuthPre, types};
use crate::runtime::{Runtime, StageError, StageState};

wasm_world!(AuthWorld, AuthPre<StageState>, Auth, "auth");

/// A stage running an auth plugin.
pub struct AuthStage(pub WasmStage<AuthWorld>);

impl Stage for AuthStage {
    fn on_request<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: &'s mut RequestParts,
    ) -> StageFuture<'s, Decision> {
        Box::pin(async move {
            let stage = &self.0;
            let wit = stage.wit_request(flow, request).await?;
            let outcome = stage
                .run(flow, Export::Authenticate, async |store, instance, ctx| {
                    instance.call_authenticate(store, &wit, ctx).await
                })
                .await;
            let identity = match outcome {
                Ok(Ok(identity)) => identity,
                Ok(Err(refusal)) => return stage.respond(flow, refusal, Outcome::Refused),
                Err(error) => return stage.failed(flow, error),
            };
            if let Err(invalid) = check_identity(&identity, flow.limits) {
                return stage.failed(flow, StageError::InvalidOutput(invalid.0));
            }
            set_identity_headers(&mut request.parts.headers, &identity);
            flow.ctx().identity = Some(identity);
            stage.outcome(Outcome::Continue);
            Ok(Decision::Continue)
        })
    }

    fn validate<'s>(&'s self, runtime: &'s Runtime) -> ValidateFuture<'s> {
        self.0.validate(runtime)
    }

    fn may_authenticate(&self) -> bool {
        true
    }

    fn info(&self) -> StageInfo<'_> {
        self.0.info()
    }
}

/// Refuses an identity whose claims would make more header fields or bytes than a plugin
/// may hand over.
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
