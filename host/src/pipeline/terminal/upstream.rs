//! The `upstream` terminal: proxies the request to the route's upstream, with the path the
//! route's `rewrite` or `strip-prefix` (or a transform) gives it and the intermediary's
//! forwarding headers. An upgrade the route allows (see [`crate::tunnel`]) goes on a
//! connection of its own, and a `101` carries the tunnel waiting to open.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::Terminal;
use crate::body::Body;
use crate::config::HashOn;
use crate::grpc::{self, Client};
use crate::pipeline::Flow;
use crate::pipeline::stage::{RequestParts, StageFuture};
use crate::proxy::{self, Forwarded, Outbound, ProxyError, Switched, Upstream};
use crate::rescue::GatewayError;
use crate::tunnel::{PendingTunnel, UpgradeRequest};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Proxies to one upstream.
pub struct UpstreamTerminal {
    /// The upstream's name.
    pub name: String,
    /// The live upstream.
    pub upstream: Arc<Upstream>,
}

impl Terminal for UpstreamTerminal {
    fn serve<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: RequestParts,
    ) -> StageFuture<'s, Response<Body>> {
        Box::pin(async move {
            flow.upstream_used = Some(self.name.clone());
            let RequestParts { mut parts, body } = request;
            let body = body.into_body();
            let upgrade = parts.extensions.remove::<UpgradeRequest>();
            let route = flow.route;
            let path_and_query = match flow.path_override.take() {
                Some(path) => path,
                None => route
                    .upstream_path(&parts.uri, flow.params())
                    .map_err(|e| {
                        GatewayError::BadRequest(format!("invalid rewritten path: {e}"))
                    })?,
            };
            let client = &flow.client;
            let hash_key = self
                .upstream
                .hash_on()
                .and_then(|on| hash_key(on, &parts, client.ip, flow.params()));
            let via = if parts.version == Version::HTTP_2 {
                "2 wasmgate"
            } else {
                proxy::VIA
            };
            // `TE: trailers` is hop-by-hop, but an HTTP/2 upstream (a gRPC server) needs to
            // hear it again: the gateway carries trailers end to end.
            let http2 = self.upstream.config.protocol.is_http2();
            let trailers = http2 && proxy::accepts_trailers(&parts.headers);
            proxy::strip_hop_by_hop(&mut parts.headers);
            if trailers {
                parts
                    .headers
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
            proxy::add_forwarding(
                &mut parts.headers,
                &Forwarded {
                    client_ip: client.ip,
                    host: client.host,
                    proto: client.proto,
                    via,
                },
            );
            if let Ok(value) = HeaderValue::from_str(client.request_id) {
                parts.headers.insert(X_REQUEST_ID, value);
            }
            if route.preserve_host
                && !parts.headers.contains_key(header::HOST)
                && let Some(value) = client.host.and_then(|h| HeaderValue::from_str(h).ok())
            {
                parts.headers.insert(header::HOST, value);
            }
            // A gRPC-Web client is answered by a gRPC server: translated both ways.
            let web = match Client::of(&parts.headers) {
                Some(Client::Web(encoding)) if http2 => Some(encoding),
                _ => None,
            };
            let body = match web {
                Some(encoding) => grpc::web::request(&mut parts.headers, body, encoding),
                None => body,
            };
            let timeout = route.timeout.unwrap_or(self.upstream.config.timeout);
            let outbound = Outbound {
                method: parts.method,
                path_and_query,
                headers: parts.headers,
                body,
                retry: route.retry.clone(),
                hash_key,
                preserve_host: route.preserve_host,
                timeout: flow.client_deadline.map_or(timeout, |d| d.min(timeout)),
                trace: flow.trace.clone(),
            };
            let attempts = &mut flow.upstream_attempts;
            let Some(upgrade) = upgrade else {
                let started = std::time::Instant::now();
                let response = match proxy::forward(&self.upstream, outbound, attempts).await {
                    // Past a gRPC client's deadline, a failure (the server resetting the
                    // stream as the deadline ran out) is the deadline's.
                    Err(ProxyError::Unreachable { upstream, .. })
                        if flow
                            .client_deadline
                            .is_some_and(|deadline| started.elapsed() >= deadline) =>
                    {
                        return Err(ProxyError::Timeout {
                            upstream,
                            timeout: flow.client_deadline.unwrap_or_default(),
                        }
                        .into());
                    }
                    result => result?,
                };
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(ProxyError::BadUpgrade {
                        upstream: self.name.clone(),
                        reason: "switched protocols on a request that asked for no upgrade",
                    }
                    .into());
                }
                return Ok(match web {
                    Some(encoding) => grpc::web::response(response, encoding),
                    None => response,
                });
            };
            let switched =
                proxy::forward_upgrade(&self.upstream, outbound, upgrade.protocols, attempts)
                    .await?;
            Ok(match switched {
                Switched::No(response) => response,
                Switched::Yes(mut response, upstream, load) => {
                    response.extensions_mut().insert(PendingTunnel {
                        client: upgrade.client,
                        upstream,
                        limits: route.tunnel.limits,
                        hold: Arc::new(load),
                    });
                    response
                }
            })
        })
    }

    fn kind(&self) -> &'static str {
        "upstream"
    }
}

/// The key a hashing upstream places the request by: the client IP, a header, a cookie
/// or a path parameter (`None` when the request has none: it is balanced at random).
fn hash_key(
    on: &HashOn,
    parts: &http::request::Parts,
    client_ip: &str,
    params: &[(String, String)],
) -> Option<u64> {
    let value: &[u8] = match on {
        HashOn::ClientIp => client_ip.as_bytes(),
        HashOn::Header(name) => parts.headers.get(name)?.as_bytes(),
        HashOn::Cookie(name) => parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)?
            .1
            .as_bytes(),
        HashOn::Param(name) => params.iter().find(|(k, _)| k == name)?.1.as_bytes(),
    };
    Some(proxy::hash_key(value))
}
