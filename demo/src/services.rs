//! Request handlers of the demo services.
//!
//! Every service answers JSON with `content-type: application/json` and an
//! `x-served-by: <service>` header, plus three shared routes: `/health`, `/echo` (which
//! reflects the request, including the headers a gateway added) and `/ws` (a WebSocket
//! echo, see [`crate::websocket`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

/// The body type of every demo response.
pub type Body = Full<Bytes>;

/// Largest request body `POST /users` accepts.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest delay `GET /slow?ms=N` honours.
const MAX_SLOW_MS: u64 = 60_000;

/// One of the demo upstream services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `GET /users`, `GET /users/{id}`, `POST /users`.
    Users,
    /// `GET /orders?user={id}`, `GET /orders/{id}`.
    Orders,
    /// `GET /items/{sku}`, `GET /slow?ms=N`, `GET /status/{code}`.
    Inventory,
    /// Answers every request with `{"ok":true}`, as cheaply as possible.
    Fast,
    /// gRPC over h2c (`demo.greeter.v1.Greeter`): see [`crate::greeter`].
    Greeter,
}

impl Service {
    /// The service's name, as printed at start and sent in `x-served-by`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Orders => "orders",
            Service::Inventory => "inventory",
            Service::Fast => "fast",
            Service::Greeter => "greeter",
        }
    }
}

/// Handles one request for `service`. Never fails: errors become JSON responses.
pub async fn handle(
    service: Service,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if service == Service::Fast {
        return Ok(fast_response());
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = route(service, req).await;
    resp.headers_mut()
        .insert("x-served-by", HeaderValue::from_static(service.name()));
    eprintln!(
        "{} {method} {path} -> {}",
        service.name(),
        resp.status().as_u16()
    );
    Ok(resp)
}

/// The fixed answer of the `fast` service: no routing, no allocation beyond the response itself.
fn fast_response() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-served-by", HeaderValue::from_static("fast"));
    resp
}

/// Dispatches on the shared routes first, then on the service's own routes.
async fn route(service: Service, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();

    match (segments.as_slice(), &method) {
        (["health"], &Method::GET) => return json(StatusCode::OK, &json!({ "ok": true })),
        (["echo", ..], _) => return echo(service, &req),
        (["ws"], &Method::GET) => return crate::websocket::accept(service.name(), req),
        _ => {}
    }

    match service {
        Service::Users => users(req, &segments).await,
        Service::Orders => orders(&req, &segments),
        Service::Inventory => inventory(&req, &segments).await,
        // Served as gRPC by `crate::greeter`, never here.
        Service::Fast | Service::Greeter => fast_response(),
    }
}

// ---------------------------------------------------------------- users

/// The fixed user records: id, name, email, plan.
const USERS: [(u64, &str, &str, &str); 3] = [
    (1, "Ada Lovelace", "ada@example.com", "pro"),
    (2, "Alan Turing", "alan@example.com", "free"),
    (3, "Grace Hopper", "grace@example.com", "enterprise"),
];

/// Next id handed out by `POST /users` (nothing is stored: the body is echoed back).
static NEXT_USER_ID: AtomicU64 = AtomicU64::new(USERS.len() as u64 + 1);

fn user_json(&(id, name, email, plan): &(u64, &str, &str, &str)) -> Value {
    json!({ "id": id, "name": name, "email": email, "plan": plan })
}

async fn users(req: Request<Incoming>, segments: &[&str]) -> Response<Body> {
    match (segments, req.method()) {
        (["users"], &Method::GET) => json(
            StatusCode::OK,
            &Value::Array(USERS.iter().map(user_json).collect()),
        ),
        (["users"], &Method::POST) => create_user(req).await,
        (["users", id], &Method::GET) => match USERS.iter().find(|u| id.parse() == Ok(u.0)) {
            Some(user) => json(StatusCode::OK, &user_json(user)),
            None => error(StatusCode::NOT_FOUND, &format!("no user with id {id:?}")),
        },
        (["users"], _) => method_not_allowed("GET, POST"),
        (["users", _], _) => method_not_allowed("GET"),
        _ => not_found(req.uri().path()),
    }
}

/// `POST /users`: echoes the JSON object with a fresh `id`, answering 201.
async fn create_user(req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is unreadable or larger than {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let mut user = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "request body must be a JSON object",
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("request body is not JSON: {e}"),
            );
        }
    };
    let id = NEXT_USER_ID.fetch_add(1, Ordering::Relaxed);
    user.insert("id".into(), id.into());
    let mut resp = json(StatusCode::CREATED, &Value::Object(user));
    if let Ok(location) = HeaderValue::from_str(&format!("/users/{id}")) {
        resp.headers_mut().insert(LOCATION, location);
    }
    resp
}

// ---------------------------------------------------------------- orders

/// The fixed order records: id, user id, sku, quantity, total in cents, status.
const ORDERS: [(u64, u64, &str, u32, u64, &str); 5] = [
    (101, 1, "SKU-001", 2, 3998, "shipped"),
    (102, 1, "SKU-003", 1, 12900, "processing"),
    (103, 2, "SKU-002", 5, 2495, "delivered"),
    (104, 3, "SKU-001", 1, 1999, "delivered"),
    (105, 3, "SKU-004", 3, 8997, "cancelled"),
];

fn order_json(
    &(id, user, sku, quantity, total, status): &(u64, u64, &str, u32, u64, &str),
) -> Value {
    json!({
        "id": id,
        "user": user,
        "sku": sku,
        "quantity": quantity,
        "total_cents": total,
        "status": status,
    })
}

fn orders(req: &Request<Incoming>, segments: &[&str]) -> Response<Body> {
    match (segments, req.method()) {
        (["orders"], &Method::GET) => {
            let user = match query_param(req, "user").map(str::parse::<u64>) {
                None => None,
                Some(Ok(user)) => Some(user),
                Some(Err(_)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "query parameter `user` must be a number",
                    );
                }
            };
            let list = ORDERS
                .iter()
                .filter(|o| user.is_none_or(|u| o.1 == u))
                .map(order_json)
                .collect();
            json(StatusCode::OK, &Value::Array(list))
        }
        (["orders", id], &Method::GET) => match ORDERS.iter().find(|o| id.parse() == Ok(o.0)) {
            Some(order) => json(StatusCode::OK, &order_json(order)),
            None => error(StatusCode::NOT_FOUND, &format!("no order with id {id:?}")),
        },
        (["orders"] | ["orders", _], _) => method_not_allowed("GET"),
        _ => not_found(req.uri().path()),
    }
}

// ---------------------------------------------------------------- inventory

/// The fixed inventory records: sku, name, price in cents, stock.
const ITEMS: [(&str, &str, u64, u32); 4] = [
    ("SKU-001", "Mechanical keyboard", 1999, 42),
    ("SKU-002", "USB-C cable", 499, 310),
    ("SKU-003", "27\" monitor", 12900, 7),
    ("SKU-004", "Laptop stand", 2999, 0),
];

async fn inventory(req: &Request<Incoming>, segments: &[&str]) -> Response<Body> {
    match (segments, req.method()) {
        (["items", sku], &Method::GET) => match ITEMS.iter().find(|i| i.0 == *sku) {
            Some(&(sku, name, price, stock)) => json(
                StatusCode::OK,
                &json!({ "sku": sku, "name": name, "price_cents": price, "stock": stock }),
            ),
            None => error(StatusCode::NOT_FOUND, &format!("no item with sku {sku:?}")),
        },
        (["slow"], &Method::GET) => {
            let ms = match query_param(req, "ms").map(str::parse::<u64>) {
                None => 1000,
                Some(Ok(ms)) if ms <= MAX_SLOW_MS => ms,
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("query parameter `ms` must be a number from 0 to {MAX_SLOW_MS}"),
                    );
                }
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(StatusCode::OK, &json!({ "slept_ms": ms }))
        }
        (["status", code], &Method::GET) => status(code),
        (["items", _] | ["slow"] | ["status", _], _) => method_not_allowed("GET"),
        _ => not_found(req.uri().path()),
    }
}

/// `GET /status/{code}`: answers with that status (200–599).
fn status(code: &str) -> Response<Body> {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "status code must be a number from 200 to 599",
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        // These statuses must not carry a body.
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = status;
        return resp;
    }
    json(status, &json!({ "status": status.as_u16() }))
}

// ---------------------------------------------------------------- shared

/// `/echo[/...]`: reflects method, path, query and headers so forwarded headers can be inspected.
fn echo(service: Service, req: &Request<Incoming>) -> Response<Body> {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            // A repeated header is shown once, its values joined as HTTP allows.
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    json(
        StatusCode::OK,
        &json!({
            "service": service.name(),
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "headers": headers,
        }),
    )
}

/// The raw value of query parameter `name`, if present.
fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(key, value)| (key == name).then_some(value))
}

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        &json!({ "error": message, "status": status.as_u16() }),
    )
}

fn not_found(path: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, &format!("no route for {path}"))
}

/// 405 with the `allow` header listing the methods the path does accept.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed on this path (allowed: {allow})"),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}
