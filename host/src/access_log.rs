//! One access-log line per request, written when the response body is done (or dropped).
//! Its fields are documented in `docs/access-log.schema.json`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};

use crate::body::{Body, BodyHook, BoxError, Hooked, boxed};

/// What the access log records about a request; it is written when the response ends.
#[derive(Debug)]
pub struct AccessLog {
    enabled: bool,
    method: String,
    path: String,
    request_id: String,
    client_ip: String,
    protocol: &'static str,
    tls: bool,
    sni: String,
    trace_id: String,
    route: String,
    upstream: String,
    upstream_target: String,
    upstream_attempts: u32,
    upstream_ms: Option<f64>,
    stages: String,
    status: u16,
    grpc_status: Option<u16>,
    bytes: u64,
    started: Instant,
    /// For a request whose connection was upgraded: what the tunnel did.
    tunnel: Option<TunnelSummary>,
}

/// What an upgraded connection's tunnel did, for its line.
#[derive(Debug)]
struct TunnelSummary {
    close: &'static str,
    client_bytes: u64,
    upstream_bytes: u64,
    millis: f64,
}

impl AccessLog {
    /// Starts a record for `request` from `client_ip`. Costs nothing when access logging
    /// is off.
    pub fn start<B>(
        request: &Request<B>,
        request_id: &str,
        client_ip: &str,
        started: Instant,
    ) -> Self {
        let enabled = tracing::enabled!(target: "wasmgate::access", tracing::Level::INFO);
        let (method, path, request_id, client_ip) = if enabled {
            (
                request.method().to_string(),
                request.uri().path().to_string(),
                request_id.to_string(),
                client_ip.to_string(),
            )
        } else {
            Default::default()
        };
        Self {
            enabled,
            method,
            path,
            request_id,
            client_ip,
            protocol: protocol(request.version()),
            tls: false,
            sni: String::new(),
            trace_id: String::new(),
            route: String::new(),
            upstream: String::new(),
            upstream_target: String::new(),
            upstream_attempts: 0,
            upstream_ms: None,
            stages: String::new(),
            status: 0,
            grpc_status: None,
            bytes: 0,
            started,
            tunnel: None,
        }
    }

    /// Whether the line will be written (callers skip work for it otherwise).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records that the request came over TLS, and the server name the client asked for.
    pub fn tls(&mut self, server_name: Option<&str>) {
        if self.enabled {
            self.tls = true;
            self.sni = crate::text::escape_control(server_name.unwrap_or_default()).into_owned();
        }
    }

    /// Records the trace the request belongs to.
    pub fn trace_id(&mut self, trace_id: String) {
        if self.enabled {
            self.trace_id = trace_id;
        }
    }

    /// Records how the upstream call went: the target of its last attempt, the number of
    /// attempts and the time to the response head.
    pub fn upstream_call(&mut self, attempts: &crate::proxy::Attempts) {
        if self.enabled {
            self.upstream_target = attempts.target.clone().unwrap_or_default();
            self.upstream_attempts = attempts.count;
            self.upstream_ms = attempts.waited.map(|t| t.as_secs_f64() * 1000.0);
        }
    }

    /// Records the time spent in each stage, as `label=milliseconds` pairs.
    pub fn stage_times<'l>(&mut self, times: impl Iterator<Item = (&'l str, Duration)>) {
        if !self.enabled {
            return;
        }
        for (label, time) in times {
            if !self.stages.is_empty() {
                self.stages.push(' ');
            }
            let _ = write!(self.stages, "{label}={:.3}", time.as_secs_f64() * 1000.0);
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

    /// Records the status of an answer that has no body to end the record: the `101` of an
    /// upgrade, whose line is written when its tunnel closes.
    pub fn status(&mut self, status: StatusCode) {
        self.status = status.as_u16();
    }

    /// Records how the tunnel of an upgraded request ended (`close` is the reason), the
    /// bytes it carried each way and how long it was open.
    pub fn tunnel_closed(
        &mut self,
        close: &'static str,
        moved: &crate::tunnel::Moved,
        lasted: Duration,
    ) {
        if self.enabled {
            self.tunnel = Some(TunnelSummary {
                close,
                client_bytes: moved.from_client,
                upstream_bytes: moved.from_upstream,
                millis: lasted.as_secs_f64() * 1000.0,
            });
        }
    }

    /// Attaches the record to the response body; the line is written when the body ends.
    pub fn finish(self, response: Response<Body>) -> Response<Body> {
        match self.into_hook(response.status(), response.headers()) {
            Some(hook) => response.map(|inner| boxed(Hooked::new(inner, hook))),
            None => response,
        }
    }

    /// The record as a hook for a response body with `status` (which writes the line when
    /// the body ends), or `None` when access logging is off. A gRPC status in `headers` (a
    /// trailers-only answer) is logged; one in the trailers replaces it.
    pub fn into_hook(mut self, status: StatusCode, headers: &http::HeaderMap) -> Option<Logged> {
        if !self.enabled {
            return None;
        }
        self.status = status.as_u16();
        self.grpc_status = grpc_status(headers);
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
                protocol = self.protocol,
                tls = self.tls,
                sni = %self.sni,
                client_ip = %self.client_ip,
                route = %self.route,
                upstream = %self.upstream,
                upstream_target = %self.upstream_target,
                upstream_attempts = self.upstream_attempts,
                upstream_ms = self.upstream_ms,
                stages = %self.stages,
                status = self.status,
                grpc_status = self.grpc_status,
                bytes = self.bytes,
                duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                request_id = %self.request_id,
                trace_id = %self.trace_id,
                tunnel_close = self.tunnel.as_ref().map(|t| t.close),
                tunnel_client_bytes = self.tunnel.as_ref().map(|t| t.client_bytes),
                tunnel_upstream_bytes = self.tunnel.as_ref().map(|t| t.upstream_bytes),
                tunnel_ms = self.tunnel.as_ref().map(|t| t.millis),
                "request"
            );
        }
    }
}

/// The protocol field: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Logs a request refused before its head could be read (so without method or path).
pub fn refused(status: u16, request_id: &str, client_ip: &str, started: Instant, bytes: usize) {
    tracing::info!(
        target: "wasmgate::access",
        method = "",
        path = "",
        protocol = "HTTP/1.1",
        client_ip,
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

    fn on_trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(log) = &mut self.0
            && let Some(status) = grpc_status(trailers)
        {
            log.grpc_status = Some(status);
        }
    }

    fn on_end(&mut self, _clean: bool) {
        drop(self.0.take());
    }
}

/// The `grpc-status` field, if present and a number.
fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get(crate::grpc::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
