//! `aggregate-json`: answers a request by calling several upstreams
//! concurrently (the host makes the calls) and merging their JSON answers into
//! one document, either each under its own key or deep-merged. A failed call
//! is omitted, becomes `null`, or fails the whole answer with a 502, by
//! policy; partial answers carry `x-aggregate-partial: true`. See `README.md`.

mod uri;

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value};
use wasmgate_plugin_sdk::{
    Aggregate, BackendCall, BackendResult, Context, Request, Response, debug,
};

use crate::uri::UriTemplate;

/// The stage config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The calls to make, in the order their answers are merged.
    calls: Vec<Call>,
    /// How answers are combined.
    #[serde(default)]
    merge: MergeMode,
    /// What a failed call does, unless the call says otherwise.
    #[serde(default)]
    on_error: OnError,
    /// Timeout of each call unless the call says otherwise (default: the
    /// gateway's timeout for the stage).
    #[serde(default)]
    timeout_ms: Option<u32>,
    /// Request headers copied onto every call (e.g. `authorization`).
    #[serde(default)]
    forward_headers: Vec<String>,
    /// When set, failed calls are described under this key of the answer.
    #[serde(default)]
    errors_key: Option<String>,
}

/// One upstream call.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Call {
    /// Names the call in the plan, logs and errors.
    name: String,
    /// The upstream, by its name in the gateway config.
    upstream: String,
    /// The path and query to call, with placeholders.
    uri: UriTemplate,
    /// The method (default `GET`).
    #[serde(default = "default_method")]
    method: String,
    /// Where the answer goes in the merged document (default: `name`).
    #[serde(default)]
    key: Option<String>,
    /// Overrides the stage's `on-error`.
    #[serde(default)]
    on_error: Option<OnError>,
    /// Overrides the stage's `timeout-ms`.
    #[serde(default)]
    timeout_ms: Option<u32>,
    /// Extra header fields for this call.
    #[serde(default)]
    headers: Map<String, Value>,
    /// Sends the client's (buffered) body along.
    #[serde(default)]
    forward_body: bool,
}

/// How answers are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MergeMode {
    /// `{ "<key>": <answer>, ... }`.
    #[default]
    Keys,
    /// The answers (JSON objects) merged recursively, later calls winning on
    /// conflicts; an answer that is not an object goes under its key.
    Deep,
}

/// What a failed call (no answer, a non-2xx status, or a body that is not
/// JSON) does to the whole answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OnError {
    /// Leave the call's key out; the answer is partial.
    #[default]
    Omit,
    /// Put `null` under the call's key; the answer is partial.
    Null,
    /// Answer 502 instead.
    Fail,
}

fn default_method() -> String {
    "GET".to_string()
}

impl Call {
    fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.name)
    }
}

/// Reads one call's outcome as JSON, or says why it failed.
fn answer(result: Option<&BackendResult>) -> Result<Value, String> {
    let result = result.ok_or("no result came back")?;
    let response = result.outcome.as_ref().map_err(ToString::to_string)?;
    if !response.is_success() {
        return Err(format!("answered {}", response.status));
    }
    match response.body.as_deref() {
        None | Some([]) => Ok(Value::Null),
        Some(body) => {
            serde_json::from_slice(body).map_err(|err| format!("answered invalid JSON: {err}"))
        }
    }
}

/// Merges `patch` into `target`: objects recursively, anything else replaced.
fn deep_merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

/// The plugin.
pub struct JsonAggregator;

impl Aggregate for JsonAggregator {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        if config.calls.is_empty() {
            return Err("calls: give at least one call".to_string());
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for (index, call) in config.calls.iter().enumerate() {
            if call.name.is_empty() {
                return Err(format!("calls[{index}].name: must not be empty"));
            }
            if !names.insert(call.name.as_str()) {
                return Err(format!(
                    "calls[{index}].name: `{}` is used twice",
                    call.name
                ));
            }
            if config.merge == MergeMode::Keys && !keys.insert(call.key()) {
                return Err(format!(
                    "calls[{index}].key: `{}` is already another call's key",
                    call.key()
                ));
            }
            if call.upstream.is_empty() {
                return Err(format!("calls[{index}].upstream: must not be empty"));
            }
            if call.method.is_empty() || !call.method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "calls[{index}].method: `{}` is not an upper-case HTTP method",
                    call.method
                ));
            }
            for (name, value) in &call.headers {
                if !value.is_string() {
                    return Err(format!("calls[{index}].headers.{name}: must be a string"));
                }
            }
        }
        if config.errors_key.as_deref() == Some("") {
            return Err("errors-key: must not be empty".to_string());
        }
        Ok(())
    }

    fn plan(config: &Config, req: &Request, ctx: &Context) -> Vec<BackendCall> {
        let query = req.query_pairs();
        config
            .calls
            .iter()
            .map(|call| {
                let mut planned =
                    BackendCall::get(&call.name, &call.upstream, call.uri.render(ctx, &query))
                        .with_method(&call.method);
                for name in &config.forward_headers {
                    for value in req.headers.get_all(name) {
                        planned.headers.append(name, value);
                    }
                }
                for (name, value) in &call.headers {
                    if let Some(value) = value.as_str() {
                        planned.headers.set(name, value);
                    }
                }
                if call.forward_body {
                    planned.body.clone_from(&req.body);
                    if let Some(content_type) = req.header("content-type") {
                        planned.headers.set("content-type", content_type);
                    }
                }
                planned.timeout_ms = call.timeout_ms.or(config.timeout_ms);
                planned
            })
            .collect()
    }

    fn merge(
        config: &Config,
        _req: &Request,
        ctx: &Context,
        results: Vec<BackendResult>,
    ) -> Response {
        let mut document = Value::Object(Map::new());
        let mut errors = Map::new();
        for call in &config.calls {
            let result = results.iter().find(|result| result.name == call.name);
            match answer(result) {
                Ok(value) => match config.merge {
                    MergeMode::Keys => {
                        document[call.key()] = value;
                    }
                    MergeMode::Deep if value.is_object() => deep_merge(&mut document, value),
                    MergeMode::Deep => {
                        document[call.key()] = value;
                    }
                },
                Err(why) => {
                    debug!(
                        "request {}: call `{}` failed: {why}",
                        ctx.request_id, call.name
                    );
                    match call.on_error.unwrap_or(config.on_error) {
                        OnError::Fail => {
                            return Response::deny(
                                502,
                                "upstream_failed",
                                &format!("call `{}` failed: {why}", call.name),
                            );
                        }
                        OnError::Null => document[call.key()] = Value::Null,
                        OnError::Omit => {}
                    }
                    errors.insert(call.name.clone(), Value::String(why));
                }
            }
        }
        let partial = !errors.is_empty();
        if let Some(key) = &config.errors_key
            && partial
        {
            document[key.as_str()] = Value::Object(errors);
        }
        let response = Response::json(200, &document);
        if partial {
            response.with_header("x-aggregate-partial", "true")
        } else {
            response
        }
    }
}

wasmgate_plugin_sdk::export_aggregate!(JsonAggregator);

#[cfg(test)]
mod tests;
