//! A stage whose plugin is not loaded (its file is missing or was rejected). Fail-closed
//! (the default) refuses every request with 503 until the plugin arrives; fail-open skips it.
//! Its world is unknown, so it counts as a possible auth stage.

use super::Flow;
use super::stage::{Decision, RequestParts, Stage, StageFuture, StageInfo};
use crate::config::{OnError, StageConfig};
use crate::rescue::GatewayError;

/// A configured stage without its plugin.
pub struct MissingStage {
    /// Position in the route (0-based).
    pub index: usize,
    /// The stage as configured.
    pub config: StageConfig,
}

impl Stage for MissingStage {
    fn on_request<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        _request: &'s mut RequestParts,
    ) -> StageFuture<'s, Decision> {
        tracing::warn!(route = %flow.route_name, stage = self.index, plugin = %self.config.plugin, request_id = flow.client.request_id, "stage plugin is not loaded");
        let decision = match self.config.on_error {
            OnError::FailOpen => Ok(Decision::Skip),
            OnError::FailClosed => Err(GatewayError::PluginUnavailable {
                plugin: self.config.plugin.clone(),
                stage: self.index,
            }),
        };
        Box::pin(std::future::ready(decision))
    }

    fn may_authenticate(&self) -> bool {
        true
    }

    fn info(&self) -> StageInfo<'_> {
        StageInfo {
            kind: "missing",
            plugin: Some(&self.config.plugin),
            pool: None,
            position: Some(self.index),
        }
    }
}
