//! One access-log line per request, written when the response body is done (or dropped).

use std::time::Instant;

use http::{Request, Response, StatusCode};

use crate::body::{Body, BodyHook, BoxError, Hooked, boxed};

/// What the access log records about a request; it is written when the response ends.
#[derive(Debug)]
pub struct AccessLog {
    enabled: bool,
    method: String,
    path: String,
    request_id: String,
    route: String,
    upstream: String,
    status: u16,
    bytes: u64,
    started: Instant,
}

impl AccessLog {
    /// Starts a record for `request`. Costs nothing when access logging is off.
    pub fn start<B>(request: &Request<B>, request_id: &str, started: Instant) -> Self {
        let enabled = tracing::enabled!(target: "wasmgate::access", tracing::Level::INFO);
        let (method, path, request_id) = if enabled {
            (
                request.method().to_string(),
                request.uri().path().to_string(),
                request_id.to_string(),
            )
        } else {
            Default::default()
        };
        Self {
            enabled,
            method,
            path,
            request_id,
            route: String::new(),
            upstream: String::new(),
            status: 0,
            bytes: 0,
            started,
        }
    }

    /// Records the matched route.
    pub fn route(&mut self, name: &str) {
        if self.enabled {
            self.route = name.to_string();
        }
    }

    /// Records the upstream called.
    pub fn upstream(&mut self, name: &str) {
        if self.enabled {
            self.upstream = name.to_string();
        }
    }

    /// Attaches the record to the response body; the line is written when the body ends.
    pub fn finish(self, response: Response<Body>) -> Response<Body> {
        match self.into_hook(response.status()) {
            Some(hook) => response.map(|inner| boxed(Hooked::new(inner, hook))),
            None => response,
        }
    }

    /// The record as a hook for a response body with `status` (which writes the line when
    /// the body ends), or `None` when access logging is off.
    pub fn into_hook(mut self, status: StatusCode) -> Option<Logged> {
        if !self.enabled {
            return None;
        }
        self.status = status.as_u16();
        Some(Logged(Some(self)))
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if self.enabled && self.status != 0 {
            tracing::info!(
                target: "wasmgate::access",
                method = %self.method,
                path = %self.path,
                route = %self.route,
                upstream = %self.upstream,
                status = self.status,
                bytes = self.bytes,
                duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                request_id = %self.request_id,
                "request"
            );
        }
    }
}

/// Logs a request refused before its head could be read (so without method or path).
pub fn refused(status: u16, request_id: &str, started: Instant, bytes: usize) {
    tracing::info!(
        target: "wasmgate::access",
        method = "",
        path = "",
        route = "",
        upstream = "",
        status,
        bytes,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id,
        "request refused"
    );
}

/// Counts the response's bytes and writes the line when the body ends (or is dropped).
pub struct Logged(Option<AccessLog>);

impl BodyHook for Logged {
    fn on_data(&mut self, len: usize) -> Result<(), BoxError> {
        if let Some(log) = &mut self.0 {
            log.bytes += len as u64;
        }
        Ok(())
    }

    fn on_end(&mut self, _clean: bool) {
        drop(self.0.take());
    }
}
