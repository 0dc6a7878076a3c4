//! Calls an aggregate stage plans, and their outcomes.

use std::fmt;

use crate::{Headers, Response};

/// One call the host should make on an aggregate plugin's behalf.
///
/// ```
/// use wasmgate_plugin_sdk::BackendCall;
///
/// let call = BackendCall::get("user", "users", "/users/42")
///     .with_header("accept", "application/json")
///     .with_timeout_ms(250);
/// assert_eq!(call.method, "GET");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendCall {
    /// A label that names this call's result in `merge`.
    pub name: String,
    /// The upstream to call, by its name in the gateway config. The host
    /// refuses upstreams the stage's config does not list.
    pub upstream: String,
    /// The method of the call.
    pub method: String,
    /// The path and query of the call.
    pub uri: String,
    /// The header fields of the call.
    pub headers: Headers,
    /// The body of the call.
    pub body: Option<Vec<u8>>,
    /// A per-call timeout; the stage's default applies when `None`.
    pub timeout_ms: Option<u32>,
}

impl BackendCall {
    /// A `GET` of `uri` on `upstream`, labelled `name`.
    pub fn get(
        name: impl Into<String>,
        upstream: impl Into<String>,
        uri: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            upstream: upstream.into(),
            method: "GET".to_string(),
            uri: uri.into(),
            headers: Headers::new(),
            body: None,
            timeout_ms: None,
        }
    }

    /// Sets the method.
    pub fn with_method(mut self, method: impl Into<String>) -> Self {
        self.method = method.into();
        self
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets the timeout in milliseconds.
    pub fn with_timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

/// Why a planned call produced no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The call did not answer within its timeout.
    Timeout,
    /// The upstream could not be reached or broke off; the text says why.
    Unreachable(String),
    /// The call named an upstream the stage may not call, or was malformed.
    Refused(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timed out"),
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// The outcome of one planned call, under the name the plan gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendResult {
    /// The call's `name` from the plan.
    pub name: String,
    /// The upstream's response, or why there is none.
    pub outcome: Result<Response, CallError>,
}
