//! The admin API (keep it on loopback): `GET /status` with the loaded plugins, their worlds,
//! hashes, load times, routes and last errors, plus the reload generation; `GET /health/live`
//! (the process answers) and `GET /health/ready` (every route can serve; `/health` is an
//! alias), 503 with the reasons when not; `GET /metrics`, the Prometheus metrics (text
//! 0.0.4, or OpenMetrics 1.0 when the `Accept` header asks for
//! `application/openmetrics-text`); `POST /cache/purge?route=NAME&key=KEY` (or
//! `&prefix=PREFIX`, or neither: the whole route) removes cached responses and answers
//! `{"purged": N}`; `GET /cache` shows each route's cache (bytes held, bounds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use crate::body::{Body, full};
use crate::gateway::Gateway;
use crate::reload::{SharedStatus, routes_by_plugin};

/// Binds the admin listener and serves it in the background.
pub async fn spawn(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    status: SharedStatus,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (admin): {e}"))
    })?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let gateway = gateway.clone();
            let status = status.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (gateway, status) = (gateway.clone(), status.clone());
                    async move {
                        let response = if request.uri().path() == "/cache/purge" {
                            purge(&request, &gateway).await
                        } else if request.uri().path() == "/cache" {
                            caches(&gateway).await
                        } else {
                            answer(&request, &gateway, &status)
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

fn answer(request: &Request<Incoming>, gateway: &Gateway, status: &SharedStatus) -> Response<Body> {
    if request.method() == Method::POST
        && let Some(rest) = request.uri().path().strip_prefix("/upstreams/")
    {
        return drain(gateway, rest);
    }
    if request.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method_not_allowed", "message": "the admin API reads with GET; the one write is POST /upstreams/NAME/targets/HOST:PORT/drain (or /undrain)"}),
        );
    }
    match request.uri().path() {
        "/health/live" => json_response(StatusCode::OK, &json!({"live": true})),
        "/health/ready" | "/health" => readiness(gateway),
        "/status" => json_response(StatusCode::OK, &status_json(gateway, status)),
        "/metrics" => metrics(request, gateway),
        path => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": format!("no admin endpoint {path}; try /status")}),
        ),
    }
}

/// `POST /cache/purge?route=NAME[&key=KEY | &prefix=PREFIX]`: removes the route's cached
/// responses under one primary key, under a key prefix, or all of them.
async fn purge(request: &Request<Incoming>, gateway: &Gateway) -> Response<Body> {
    if request.method() != Method::POST {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method_not_allowed", "message": "purge with POST"}),
        );
    }
    let mut route = None;
    let mut target = None;
    for (name, value) in form_pairs(request.uri().query().unwrap_or_default()) {
        match name.as_str() {
            "route" => route = Some(value),
            "key" => target = Some((value, false)),
            "prefix" => target = Some((value, true)),
            _ => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "bad_request", "message": format!("unknown parameter `{name}`: expected route, key or prefix")}),
                );
            }
        }
    }
    let state = gateway.state();
    let Some(cache) = route.as_deref().and_then(|r| state.caches.routes.get(r)) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": "`route` must name a route with `cache`"}),
        );
    };
    let (key, prefix) = target.unwrap_or_default();
    let purged = cache.store.purge(&key, prefix || key.is_empty());
    json_response(StatusCode::OK, &json!({"purged": purged}))
}

/// `GET /cache`: each route's cache.
async fn caches(gateway: &Gateway) -> Response<Body> {
    let state = gateway.state();
    let mut routes = serde_json::Map::new();
    for (name, cache) in &state.caches.routes {
        routes.insert(
            name.clone(),
            json!({
                "bytes": cache.store.weighted_size(),
                "max_bytes": cache.store.config.max_bytes,
                "max_object_bytes": cache.store.config.max_object_bytes,
                "flights": cache.flights.len(),
                "followers": cache.flights.followers(),
            }),
        );
    }
    let budget = state.caches.budget();
    json_response(
        StatusCode::OK,
        &json!({"bytes": budget.used(), "max_bytes": budget.max(), "routes": routes}),
    )
}

/// The `name=value` pairs of a query, percent-decoded (`+` is a space).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() && text.is_char_boundary(i + 3) => {
                    match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                        Ok(byte) => {
                            out.push(byte);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// `/metrics`: the exposition, in the format the scraper asks for.
fn metrics(request: &Request<Incoming>, gateway: &Gateway) -> Response<Body> {
    let Some(metrics) = gateway.runtime().metrics() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": "metrics are off (`admin.metrics = false`)"}),
        );
    };
    let openmetrics = crate::metrics::wants_openmetrics(request.headers().get(header::ACCEPT));
    let content_type = if openmetrics {
        crate::metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        crate::metrics::PROMETHEUS_CONTENT_TYPE
    };
    let mut response = Response::new(full(metrics.encode(openmetrics)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// `POST /upstreams/NAME/targets/HOST:PORT/drain` (or `/undrain`): takes a target out of
/// rotation (requests in flight finish) or puts it back. It lasts until the upstream is
/// rebuilt by a reload that changes it.
fn drain(gateway: &Gateway, rest: &str) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (name, target, drained) = match parts.as_slice() {
        [name, "targets", target, "drain"] => (*name, *target, true),
        [name, "targets", target, "undrain"] => (*name, *target, false),
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "message": "expected POST /upstreams/NAME/targets/HOST:PORT/drain or /undrain"}),
            );
        }
    };
    let state = gateway.state();
    let Some(upstream) = state.upstreams.get(name) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": format!("no upstream `{}`", crate::text::escape_control(name))}),
        );
    };
    if !upstream.drain(target, drained) {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": format!("upstream `{name}` has no target `{}`", crate::text::escape_control(target))}),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"upstream": name, "target": target, "drained": drained}),
    )
}

/// `/health/ready`: 200 when every route can serve (every plugin a route names is loaded,
/// and every upstream with health checks has a target passing them), else 503 with the
/// reasons.
fn readiness(gateway: &Gateway) -> Response<Body> {
    let state = gateway.state();
    let mut reasons = Vec::new();
    for (name, upstream) in &state.upstreams {
        if upstream.config.health_check.is_some() && !upstream.health.any_usable() {
            reasons.push(format!("upstream `{name}` has no healthy target"));
        }
    }
    for route in &state.config.routes {
        for (index, stage) in route.stages.iter().enumerate() {
            if !state.plugins.loaded.contains_key(&stage.plugin) {
                let why = state
                    .plugins
                    .rejected
                    .get(&stage.plugin)
                    .map_or("its file is missing", |_| "it was rejected (see /status)");
                reasons.push(format!(
                    "route `{}` stage {index}: plugin `{}` is not loaded: {why}",
                    route.name, stage.plugin
                ));
            }
        }
    }
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({"ready": ready, "reasons": reasons}))
}

/// The `/status` document.
pub fn status_json(gateway: &Gateway, status: &SharedStatus) -> serde_json::Value {
    let state = gateway.state();
    let reload = status.lock().map(|s| s.clone()).unwrap_or_default();
    let routes = routes_by_plugin(&state);
    let mut names: Vec<&String> = state
        .plugins
        .loaded
        .keys()
        .chain(state.plugins.rejected.keys())
        .collect();
    names.sort();
    names.dedup();
    let plugins: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let loaded = state.plugins.loaded.get(name);
            json!({
                "name": name,
                "loaded": loaded.is_some(),
                "world": loaded.map(|p| p.kind.world()),
                "hash": loaded.map(|p| p.hash.clone()),
                "size": loaded.map(|p| p.size),
                "loaded_at_unix": loaded.map(|p| p.loaded_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())),
                "from_cache": loaded.map(|p| p.from_cache),
                "routes": routes.get(name).cloned().unwrap_or_default(),
                "last_error": state.plugins.rejected.get(name),
            })
        })
        .collect();
    let missing: Vec<&String> = routes
        .keys()
        .filter(|name| !state.plugins.loaded.contains_key(*name))
        .collect();
    let reuse: Vec<serde_json::Value> = state
        .pipelines
        .iter()
        .flat_map(|pipeline| {
            let stages = pipeline.stages.iter().filter_map(|stage| {
                let info = stage.info();
                Some((info.position?, info.plugin, info.pool))
            });
            let terminal = std::iter::once((
                pipeline.terminal_position(),
                pipeline.terminal.plugin(),
                pipeline.terminal.pool(),
            ));
            stages
                .chain(terminal)
                .filter_map(move |(index, plugin, pool)| {
                    let pool = pool?;
                    let (policy, stats) = (pool.policy(), pool.stats());
                    Some(json!({
                        "route": &*pipeline.route,
                        "stage": index,
                        "plugin": plugin,
                        "idle": pool.idle_count(),
                        "reused_calls": stats.reused.load(Ordering::Relaxed),
                        "recycled": stats.recycled.load(Ordering::Relaxed),
                        "max_calls": policy.max_calls,
                        "max_idle": policy.max_idle,
                    }))
                })
        })
        .collect();
    json!({
        "generation": gateway.version(),
        "last_swap_unix": reload.last_swap_unix,
        "config_file": state.config.file.display().to_string(),
        "config_error": reload.config_error,
        "restart_required": reload.restart_required,
        "routes": state.config.routes.len(),
        "plugins": plugins,
        "missing_plugins": missing,
        "reuse_pools": reuse,
        "upstreams": state.upstreams.iter().map(|(name, upstream)| json!({
            "name": name,
            "breaker": upstream.breaker.state(),
            "targets": upstream.status(),
        })).collect::<Vec<_>>(),
        "certificates": reload.certificates,
        "events": reload.events,
    })
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
