//! The `transcode` terminal: answers an HTTP/JSON request with a gRPC call to the route's
//! upstream, made through the upstream machinery (balancing, retries, breakers, tracing,
//! metrics), and the call's answer as JSON. The mapping itself is [`crate::transcode`].

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use prost::Message as _;

use super::Terminal;
use crate::body::{Body, full};
use crate::pipeline::Flow;
use crate::pipeline::stage::{RequestParts, StageFuture};
use crate::proxy::{self, Forwarded, Outbound, Upstream};
use crate::rescue::GatewayError;
use crate::transcode::{Api, Lookup, request, response, wire};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Serves a gRPC upstream's annotated methods as JSON.
pub struct TranscodeTerminal {
    /// The upstream's name.
    pub name: String,
    /// The live upstream.
    pub upstream: Arc<Upstream>,
    /// The compiled service.
    pub api: Arc<Api>,
}

impl Terminal for TranscodeTerminal {
    fn serve<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: RequestParts,
    ) -> StageFuture<'s, Response<Body>> {
        Box::pin(async move {
            let RequestParts { mut parts, body } = request;
            // The path a transform stage set, if one did.
            let target = flow.path(&parts).to_string();
            let (path, query) = match target.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (target.as_str(), None),
            };
            let (binding, variables) = match self.api.lookup(&parts.method, path) {
                Lookup::Found(binding, variables) => (binding, variables),
                Lookup::WrongMethod(allow) => {
                    return Err(GatewayError::MethodNotAllowed {
                        method: parts.method,
                        allow,
                    });
                }
                Lookup::NotFound => {
                    return Ok(not_found(
                        &parts.method,
                        path,
                        &self.api,
                        flow.client.request_id,
                    ));
                }
            };
            // The body becomes one message: no larger than a message may be.
            let limit = flow
                .route
                .max_body_bytes
                .unwrap_or(u64::MAX)
                .min(wire::MAX_MESSAGE_BYTES as u64);
            let body = proxy::limit_body(body.into_body(), limit);
            let body = body.collect().await.map_err(|error| {
                if proxy::is_body_limit(&*error) {
                    GatewayError::BodyTooLarge { limit }
                } else {
                    GatewayError::BadRequest(format!(
                        "reading the request body failed: {}",
                        crate::text::untrusted(&error.to_string())
                    ))
                }
            })?;
            let message = request::build(binding, variables, query, &body.to_bytes())
                .map_err(|error| GatewayError::BadRequest(error.0))?;
            let accept = parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let format = self.api.stream_format_for(accept.as_deref());
            flow.upstream_used = Some(self.name.clone());
            let client = &flow.client;
            grpc_headers(&mut parts.headers);
            proxy::add_forwarding(
                &mut parts.headers,
                &Forwarded {
                    client_ip: client.ip,
                    host: client.host,
                    proto: client.proto,
                    via: proxy::VIA,
                },
            );
            if let Ok(value) = HeaderValue::from_str(client.request_id) {
                parts.headers.insert(X_REQUEST_ID, value);
            }
            let route = flow.route;
            let timeout = route.timeout.unwrap_or(self.upstream.config.timeout);
            // A unary call's server learns the deadline too (milliseconds, at most 8 digits);
            // a stream may outlive it, as the timeout only bounds the wait for its head.
            if !binding.rpc.is_server_streaming()
                && let Ok(value) =
                    HeaderValue::from_str(&format!("{}m", timeout.as_millis().min(99_999_999)))
            {
                parts.headers.insert(GRPC_TIMEOUT, value);
            }
            let outbound = Outbound {
                method: Method::POST,
                path_and_query: binding.grpc_path.clone(),
                headers: parts.headers,
                body: full(wire::frame(&message.encode_to_vec())),
                retry: route.retry.clone(),
                hash_key: None,
                preserve_host: false,
                timeout,
                trace: flow.trace.clone(),
            };
            let answer =
                proxy::forward(&self.upstream, outbound, &mut flow.upstream_attempts).await?;
            let mut answer = response::answer(&self.api, binding, answer, format).await;
            if parts.method == Method::HEAD {
                *answer.body_mut() = crate::body::empty();
            }
            Ok(answer)
        })
    }

    fn kind(&self) -> &'static str {
        "transcode"
    }
}

/// The client's headers as the gRPC call's metadata: hop-by-hop fields, the body's
/// framing and content negotiation go; the gRPC ones come in.
fn grpc_headers(headers: &mut HeaderMap) {
    proxy::strip_hop_by_hop(headers);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::ACCEPT,
        header::ACCEPT_ENCODING,
        header::EXPECT,
        header::HOST,
    ] {
        headers.remove(name);
    }
    remove_grpc_reserved(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
}

/// Removes `grpc-*` fields a client could send to forge the call's framing or status.
fn remove_grpc_reserved(headers: &mut HeaderMap) {
    let reserved: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("grpc-"))
        .cloned()
        .collect();
    for name in reserved {
        headers.remove(name);
    }
}

/// A 404 naming what the route serves.
fn not_found(method: &Method, path: &str, api: &Api, request_id: &str) -> Response<Body> {
    let served = api.served();
    let shown: Vec<&str> = served.iter().take(20).map(String::as_str).collect();
    let more = served.len().saturating_sub(shown.len());
    let message = format!(
        "no gRPC method is bound to {method} {}; this route serves: {}{}",
        crate::text::untrusted(path),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
    let body = serde_json::json!({
        "error": "not_found",
        "message": message,
        "request_id": request_id,
    });
    let mut response = Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
