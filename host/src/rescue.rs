//! The one place where a failure becomes an HTTP response.
//!
//! Every error the gateway answers with has a JSON body of a stable shape:
//! `{"error": "<code>", "message": "<what happened>", "request_id": "<id>"}`.
//! Guest internals (trap text, plugin messages) never reach the client; they go to the log.

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::body::{Body, full};
use crate::proxy::ProxyError;

/// Everything that makes the gateway answer a request itself.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the host and path.
    #[error("no route for {method} {path}")]
    NoRoute {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
    },
    /// A route matches the path but not the method.
    #[error("method {method} is not allowed here")]
    MethodNotAllowed {
        /// Request method.
        method: Method,
        /// Methods that are allowed.
        allow: Vec<Method>,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request head is larger than `server.max-header-bytes`.
    #[error(
        "request headers are over the limit of {limit} bytes or {} fields",
        crate::config::MAX_HEADER_FIELDS
    )]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body is larger than the route's limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A stage needs the request body, and it is in a content coding the gateway cannot
    /// decode (one other than `gzip`, `br` or `zstd`, or several).
    #[error("the request body's content coding `{coding}` is not supported: use gzip, br or zstd")]
    UnsupportedEncoding {
        /// The request's `Content-Encoding`.
        coding: String,
    },
    /// Proxying to the upstream failed (unreachable, timed out, or the request body
    /// passed its limit on the way).
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    /// The upstream's response is larger than a buffering stage accepts.
    #[error("the upstream response is larger than the {limit} bytes a stage may buffer")]
    ResponseTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A stage's plugin is not loaded (missing file, or rejected).
    #[error("plugin `{plugin}` of stage {stage} is not available")]
    PluginUnavailable {
        /// Plugin name.
        plugin: String,
        /// Stage position in the route (0-based).
        stage: usize,
    },
    /// A stage failed: trap, memory cap, invalid output.
    #[error("stage {stage} (plugin `{plugin}`) failed")]
    StageFailed {
        /// Plugin name.
        plugin: String,
        /// Stage position in the route (0-based).
        stage: usize,
    },
    /// A stage ran past its deadline or fuel.
    #[error("stage {stage} (plugin `{plugin}`) ran out of time")]
    StageTimeout {
        /// Plugin name.
        plugin: String,
        /// Stage position in the route (0-based).
        stage: usize,
    },
    /// No sandbox capacity is left for this request.
    #[error("the gateway is at capacity; retry shortly")]
    Overloaded,
    /// A request over TLS names a host that another certificate entry of the listener
    /// serves (the SNI name picked this connection's certificate and client policy).
    #[error(
        "host `{host}` is not served on this TLS connection; connect with it as the server name"
    )]
    Misdirected {
        /// The host the request named.
        host: String,
    },
}

impl GatewayError {
    /// The status code and stable error code for this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedEncoding { .. } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
            ),
            Self::Upstream(ProxyError::Unreachable { .. }) => {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable")
            }
            Self::Upstream(ProxyError::Timeout { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            }
            Self::Upstream(ProxyError::BodyTooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            Self::Upstream(ProxyError::Refused { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream_breaker_open")
            }
            Self::Upstream(ProxyError::NoTarget { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream_no_target")
            }
            Self::Upstream(ProxyError::ClientBody(_)) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Upstream(ProxyError::BadUpgrade { .. }) => {
                (StatusCode::BAD_GATEWAY, "upstream_bad_upgrade")
            }
            Self::ResponseTooLarge { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream_response_too_large")
            }
            Self::PluginUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "plugin_unavailable")
            }
            Self::StageFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "stage_failed"),
            Self::StageTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "stage_timeout"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Misdirected { .. } => (StatusCode::MISDIRECTED_REQUEST, "misdirected_request"),
        }
    }

    /// The JSON body: `{"error": code, "message": …, "request_id": …}`.
    pub fn json(&self, request_id: &str) -> String {
        serde_json::json!({
            "error": self.status_and_code().1,
            "message": self.to_string(),
            "request_id": request_id,
        })
        .to_string()
    }

    /// The JSON response for this error.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let (status, _) = self.status_and_code();
        let mut response = Response::new(full(self.json(request_id)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::MethodNotAllowed { allow, .. } = &self {
            let allow: Vec<&str> = allow.iter().map(Method::as_str).collect();
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                headers.insert(header::ALLOW, value);
            }
        }
        if let Self::UnsupportedEncoding { .. } = &self {
            // RFC 9110 §15.5.16: name the codings that would have been accepted.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip, br, zstd"),
            );
        }
        if matches!(
            self,
            Self::HeadersTooLarge { .. }
                | Self::BodyTooLarge { .. }
                | Self::Upstream(ProxyError::BodyTooLarge { .. })
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
