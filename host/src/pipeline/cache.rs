//! The `cache` stage: a shared HTTP cache (RFC 9111) on the one [`Stage`] seam.
//!
//! A route's `cache` key adds it after the configured stages, so its lookup runs after
//! authentication and rate limiting, and a stored response goes back through the response
//! hooks of the stages before it (transforms, compression) like an upstream's would.
//!
//! - `GET` and `HEAD` are looked up ([`crate::cache::key`]). A fresh response answers
//!   ([`Decision::Serve`]) with `Age` and `Cache-Status: wasmgate; hit; ttl=N`; the client's
//!   `If-None-Match` / `If-Modified-Since` are answered with 304 from it.
//! - A stale one within `stale-while-revalidate` answers too, and is refreshed in the
//!   background (routes with an `upstream`). Otherwise it is revalidated: the request goes
//!   on with its validators; a 304 updates the stored response's header fields and it
//!   answers (`fwd=stale; fwd-status=304`). Within `stale-if-error`, a 5xx or a failed
//!   upstream is answered with the stale response; an upstream that cannot be reached is,
//!   unless the response forbids serving it stale (`must-revalidate`, `no-cache`, …).
//! - A miss goes to the upstream, coalesced with concurrent misses for the key
//!   ([`crate::cache::coalesce`]); a storable response (`http-cache-semantics` decides:
//!   status, `no-store`, `private`, `Authorization`, …) no larger than `max-object-bytes`
//!   is teed into the store as it streams to the client. One that cannot be stored marks
//!   the key "hit-for-pass" for `hit-for-pass`, so later requests neither queue nor look.
//! - A successful unsafe request (`POST`, `PUT`, `DELETE`, …) invalidates the stored
//!   responses for its URI and for same-host `Location` and `Content-Location` (§4.4).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::Flow;
use super::stage::{Decision, RequestParts, Stage, StageFuture, StageInfo};
use crate::body::{Body, BodyHook, BoxError, Hooked, boxed, empty, full};
use crate::cache::coalesce::{Event, FollowerBody, Lead, Role, SharedHead};
use crate::cache::freshness::{self, Object, StaleRules, Usable};
use crate::cache::store::Slot;
use crate::cache::{Caches, RouteCache, key};
use crate::config::RouteConfig;
use crate::metrics::CacheMetrics;
use crate::proxy::{self, Attempts, Forwarded, Outbound};
use crate::rescue::GatewayError;

/// `Cache-Status` (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// This cache's name in `Cache-Status`.
const CACHE_NAME: &str = "wasmgate";

/// The `cache` stage of a route.
pub struct CacheStage {
    cache: Arc<RouteCache>,
}

/// Why a request went to the upstream, for `Cache-Status: fwd=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forward {
    /// Nothing stored.
    Miss,
    /// Stored but stale (or the request asked for revalidation).
    Stale,
    /// The key is hit-for-pass.
    Bypass,
}

impl Forward {
    fn token(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }
}

/// What the request hook leaves for the response hook of a lookup that went on.
struct Pending {
    primary: Arc<str>,
    /// Method, URI and header fields of the request, for the response's policy.
    request: Parts,
    forward: Forward,
    /// The stale response being revalidated, and its key.
    stale: Option<(Arc<str>, Arc<Object>)>,
    /// The flight that concurrent misses follow.
    lead: Option<Lead>,
    /// Whether the response may be stored.
    store: bool,
}

/// An unsafe request: what to invalidate once it succeeds.
struct Invalidate {
    host: Option<String>,
    request: Parts,
}

/// What is stored under a request's key.
enum Lookup {
    Miss,
    Pass,
    Found(Arc<str>, Arc<Object>),
}

impl CacheStage {
    /// The stage a route's `cache` key asks for, if any.
    pub fn for_route(route: &RouteConfig, caches: &Caches) -> Option<Box<dyn Stage>> {
        route.cache.as_ref()?;
        let cache = caches.routes.get(&route.name)?.clone();
        Some(Box::new(Self { cache }))
    }

    fn lookup(&self, primary: &Arc<str>, headers: &HeaderMap) -> Lookup {
        let store = &self.cache.store;
        match store.get(primary) {
            None => Lookup::Miss,
            Some(Slot::Pass(until)) if until > std::time::Instant::now() => Lookup::Pass,
            Some(Slot::Pass(_)) => Lookup::Miss,
            Some(Slot::Object(object)) => Lookup::Found(primary.clone(), object),
            Some(Slot::Vary { names, epoch }) => {
                let variant: Arc<str> = key::variant(primary, epoch, &names, headers).into();
                match store.get(&variant) {
                    Some(Slot::Object(object)) => Lookup::Found(variant, object),
                    _ => Lookup::Miss,
                }
            }
        }
    }

    /// Answers a request from a stored response.
    fn answer(
        &self,
        object: &Object,
        request: &Parts,
        now: SystemTime,
        status: String,
    ) -> Response<Body> {
        let mut headers = object.headers.clone();
        if let Ok(age) = HeaderValue::from_str(&object.age(now).as_secs().to_string()) {
            headers.insert(header::AGE, age);
        }
        add_cache_status(&mut headers, &status);
        let not_modified =
            object.status == StatusCode::OK && not_modified(&request.headers, &headers);
        let mut response = Response::new(if request.method == Method::HEAD || not_modified {
            empty()
        } else {
            full(object.body.clone())
        });
        *response.status_mut() = if not_modified {
            headers.remove(header::CONTENT_LENGTH);
            StatusCode::NOT_MODIFIED
        } else {
            object.status
        };
        *response.headers_mut() = headers;
        response
    }

    /// Waits for the leader's response head, then streams its body. `Err(pass)` when the
    /// request must go to the upstream itself (`pass`: the response is not cacheable).
    async fn follow(
        &self,
        mut events: mpsc::UnboundedReceiver<Event>,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, bool> {
        let wait = self.cache.store.config.coalesce_wait;
        let head = match tokio::time::timeout(wait, events.recv()).await {
            Ok(Some(Event::Head(head))) => head,
            Ok(Some(Event::Pass)) => return Err(true),
            _ => return Err(false),
        };
        if !head.vary.is_empty() && key::vary_values(&head.vary, headers) != head.vary_values {
            return Err(false);
        }
        let mut response = Response::new(boxed(FollowerBody::new(events)));
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers.clone();
        add_cache_status(
            response.headers_mut(),
            &format!("{CACHE_NAME}; fwd=miss; collapsed"),
        );
        Ok(response)
    }

    /// Refreshes a stale response in the background (`stale-while-revalidate`), one refresh
    /// per key at a time. Only routes that proxy to an upstream can.
    fn refresh(&self, flow: &Flow<'_>, request: &Parts, key: Arc<str>, object: Arc<Object>) {
        let route = flow.route;
        let Some(upstream) = route
            .upstream
            .as_ref()
            .and_then(|name| flow.upstreams.get(name))
            .cloned()
        else {
            return;
        };
        let Ok(path_and_query) = route.upstream_path(&request.uri, flow.params()) else {
            return;
        };
        {
            let mut refreshing = self
                .cache
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !refreshing.insert(key.clone()) {
                return;
            }
        }
        let mut headers = revalidation_headers(&object, request);
        proxy::strip_hop_by_hop(&mut headers);
        proxy::add_forwarding(
            &mut headers,
            &Forwarded {
                client_ip: flow.client.ip,
                host: flow.client.host,
                proto: flow.client.proto,
                via: proxy::VIA,
            },
        );
        if route.preserve_host
            && let Some(value) = flow.client.host.and_then(|h| HeaderValue::from_str(h).ok())
        {
            headers.insert(header::HOST, value);
        }
        let outbound = Outbound {
            method: Method::GET,
            path_and_query,
            headers,
            body: empty(),
            retry: route.retry.clone(),
            hash_key: None,
            preserve_host: route.preserve_host,
            timeout: route.timeout.unwrap_or(upstream.config.timeout),
            trace: None,
        };
        let cache = self.cache.clone();
        let mut policy_request = request.clone();
        policy_request.method = Method::GET;
        tokio::spawn(async move {
            let mut attempts = Attempts::default();
            if let Ok(response) = proxy::forward(&upstream, outbound, &mut attempts).await {
                let now = SystemTime::now();
                let (parts, body) = response.into_parts();
                if let Some(updated) = merge_304(&cache, &object, &policy_request, &parts, now) {
                    cache
                        .store
                        .insert(key.clone(), Slot::Object(Arc::new(updated)));
                } else if let Some(policy) = storable(&cache, &policy_request, &parts, now)
                    && let Some(collected) =
                        read_limited(body, cache.store.config.max_object_bytes).await
                {
                    let object = new_object(&cache, parts, collected, policy, now);
                    cache
                        .store
                        .insert(key.clone(), Slot::Object(Arc::new(object)));
                }
            }
            cache
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }
}

/// A body read whole, unless it fails or is longer than `limit`.
async fn read_limited(mut body: Body, limit: u64) -> Option<Bytes> {
    let mut whole = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if whole.len() as u64 + data.len() as u64 > limit {
                return None;
            }
            whole.extend_from_slice(&data);
        }
    }
    Some(whole.freeze())
}

/// State a hook hands to a later hook through `Flow::extensions` (which holds `Clone`
/// values): taken once.
struct Carried<T>(Arc<std::sync::Mutex<Option<T>>>);

impl<T> Clone for Carried<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Carried<T> {
    fn new(value: T) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(value))))
    }

    fn take(self) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Bumps one of the route's cache counters, when metrics are on.
fn count(metrics: Option<&CacheMetrics>, counter: impl FnOnce(&CacheMetrics) -> &Counter) {
    if let Some(metrics) = metrics {
        counter(metrics).inc();
    }
}

impl Stage for CacheStage {
    fn on_request<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: &'s mut RequestParts,
    ) -> StageFuture<'s, Decision> {
        Box::pin(async move {
            // A handshake is the start of a tunnel: never answered from, nor coalesced
            // with, another request.
            if request
                .parts
                .extensions
                .get::<crate::tunnel::UpgradeRequest>()
                .is_some()
            {
                return Ok(Decision::Skip);
            }
            let method = request.parts.method.clone();
            if method != Method::GET && method != Method::HEAD {
                if !method.is_safe() {
                    flow.extensions.insert(Carried::new(Invalidate {
                        host: flow.client.host.map(str::to_string),
                        request: head_of(&request.parts),
                    }));
                    return Ok(Decision::Continue);
                }
                return Ok(Decision::Skip);
            }
            let config = &self.cache.store.config;
            let parts = &mut request.parts;
            let primary: Arc<str> =
                key::primary(config, flow.client.host, &parts.uri, &parts.headers).into();
            let now = SystemTime::now();
            let metrics = self.cache.store.metrics();
            // The request as the client sent it, for the response's policy; taken only on
            // the way to the upstream (a hit needs none of it).
            let mut client_head = None;
            let mut forward = Forward::Miss;
            let mut stale = None;
            match self.lookup(&primary, &parts.headers) {
                Lookup::Pass => {
                    count(metrics, |m| &m.passes);
                    let pending = Pending {
                        primary,
                        request: head_of(parts),
                        forward: Forward::Bypass,
                        stale: None,
                        lead: None,
                        store: false,
                    };
                    flow.extensions.insert(Carried::new(pending));
                    return Ok(Decision::Continue);
                }
                Lookup::Found(key, object) => match object.usable(&parts.headers, now) {
                    Usable::Fresh => {
                        count(metrics, |m| &m.hits);
                        let status = format!("{CACHE_NAME}; hit; ttl={}", object.ttl_seconds(now));
                        return Ok(Decision::Serve(self.answer(&object, parts, now, status)));
                    }
                    Usable::StaleWhileRevalidate => {
                        count(metrics, |m| &m.stale);
                        self.refresh(flow, parts, key, object.clone());
                        let status = format!(
                            "{CACHE_NAME}; hit; ttl={}; detail=stale-while-revalidate",
                            object.ttl_seconds(now)
                        );
                        return Ok(Decision::Serve(self.answer(&object, parts, now, status)));
                    }
                    Usable::Revalidate => {
                        forward = Forward::Stale;
                        client_head = Some(head_of(parts));
                        if method == Method::GET && object.has_validator() {
                            let validators = revalidation_headers(&object, parts);
                            for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                                match validators.get(&name) {
                                    Some(value) => parts.headers.insert(name, value.clone()),
                                    None => parts.headers.remove(name),
                                };
                            }
                        }
                        stale = Some((key, object));
                    }
                },
                Lookup::Miss => {}
            }
            let mut pending = Pending {
                primary: primary.clone(),
                request: client_head.unwrap_or_else(|| head_of(parts)),
                forward,
                stale,
                lead: None,
                store: method == Method::GET,
            };
            if freshness::directives(&parts.headers)
                .iter()
                .any(|(name, _)| name == "only-if-cached")
            {
                // Nothing stored may answer, and the client asked not to go further.
                let mut response = Response::new(empty());
                *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                add_cache_status(
                    response.headers_mut(),
                    &format!("{CACHE_NAME}; fwd=miss; detail=only-if-cached"),
                );
                return Ok(Decision::Respond(response));
            }
            let conditional = [
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                header::IF_MATCH,
                header::IF_UNMODIFIED_SINCE,
                header::IF_RANGE,
                header::RANGE,
            ]
            .iter()
            .any(|name| parts.headers.contains_key(name));
            if pending.store && pending.stale.is_none() && !conditional {
                match self.cache.flights.join(&primary) {
                    Role::Leader(lead) => pending.lead = Some(lead),
                    Role::Follower(events) => match self.follow(events, &parts.headers).await {
                        Ok(response) => {
                            count(metrics, |m| &m.coalesced);
                            return Ok(Decision::Serve(response));
                        }
                        Err(pass) => pending.store = !pass,
                    },
                }
            }
            count(metrics, |m| &m.misses);
            flow.extensions.insert(Carried::new(pending));
            Ok(Decision::Continue)
        })
    }

    fn on_response<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        response: Response<Body>,
    ) -> StageFuture<'s, Response<Body>> {
        Box::pin(async move {
            if let Some(invalidate) = flow
                .extensions
                .remove::<Carried<Invalidate>>()
                .and_then(Carried::take)
            {
                self.invalidate(&invalidate, &response);
                return Ok(response);
            }
            let Some(pending) = flow
                .extensions
                .remove::<Carried<Pending>>()
                .and_then(Carried::take)
            else {
                return Ok(response);
            };
            Ok(self.complete(pending, response).await)
        })
    }

    fn on_terminal_error(
        &self,
        flow: &mut Flow<'_>,
        _error: &GatewayError,
    ) -> Option<Response<Body>> {
        let pending = flow
            .extensions
            .remove::<Carried<Pending>>()
            .and_then(Carried::take)?;
        let (_, object) = pending.stale.as_ref()?;
        let now = SystemTime::now();
        // The upstream could not be reached: a disconnected cache may serve stale unless
        // the response forbids it (RFC 9111 §4.2.4), `stale-if-error` or not.
        let detail = if object.usable_on_error(now) {
            "stale-if-error"
        } else if !object.stale.must_revalidate {
            "disconnected"
        } else {
            return None;
        };
        count(self.cache.store.metrics(), |m| &m.stale);
        let status = format!(
            "{CACHE_NAME}; fwd=stale; ttl={}; detail={detail}",
            object.ttl_seconds(now)
        );
        Some(self.answer(object, &pending.request, now, status))
    }

    fn info(&self) -> StageInfo<'_> {
        StageInfo {
            kind: "cache",
            plugin: None,
            pool: None,
            position: None,
        }
    }
}

impl CacheStage {
    /// The response hook of a lookup that went to the upstream.
    async fn complete(&self, pending: Pending, response: Response<Body>) -> Response<Body> {
        let now = SystemTime::now();
        let status = response.status();
        let forward = pending.forward.token();
        let (mut parts, body) = response.into_parts();
        if let Some((key, object)) = &pending.stale {
            if status == StatusCode::NOT_MODIFIED
                && let Some(updated) = merge_304(&self.cache, object, &pending.request, &parts, now)
            {
                let updated = Arc::new(updated);
                count(self.cache.store.metrics(), |m| &m.revalidated);
                self.cache
                    .store
                    .insert(key.clone(), Slot::Object(updated.clone()));
                let status = format!("{CACHE_NAME}; fwd=stale; fwd-status=304; stored");
                return self.answer(&updated, &pending.request, now, status);
            }
            if matches!(status.as_u16(), 500 | 502 | 503 | 504) && object.usable_on_error(now) {
                count(self.cache.store.metrics(), |m| &m.stale);
                let status = format!(
                    "{CACHE_NAME}; fwd=stale; fwd-status={}; detail=stale-if-error",
                    status.as_u16()
                );
                return self.answer(object, &pending.request, now, status);
            }
        }
        let policy = pending
            .store
            .then(|| storable(&self.cache, &pending.request, &parts, now))
            .flatten();
        let known_too_big = body
            .size_hint()
            .exact()
            .is_some_and(|len| len > self.cache.store.config.max_object_bytes);
        let (Some(policy), false) = (policy, known_too_big) else {
            // Hit-for-pass, when the response itself (not this request) is not cacheable.
            if pending.store
                && pending.request.method == Method::GET
                && (known_too_big
                    || uncacheable_for_anyone(&self.cache, &pending.request, &parts, now))
            {
                self.cache.mark_pass(&pending.primary);
            }
            if let Some(lead) = pending.lead {
                lead.pass();
            }
            add_cache_status(&mut parts.headers, &format!("{CACHE_NAME}; fwd={forward}"));
            return Response::from_parts(parts, body);
        };
        let vary = key::vary_names(&parts.headers).unwrap_or_default();
        let key = if vary.is_empty() {
            pending.primary.clone()
        } else {
            let store = &self.cache.store;
            let epoch = match store.get(&pending.primary) {
                Some(Slot::Vary { names, epoch }) if *names == *vary => epoch,
                _ => {
                    let epoch = store.next_epoch();
                    let marker = Slot::Vary {
                        names: vary.clone().into(),
                        epoch,
                    };
                    store.insert(pending.primary.clone(), marker);
                    epoch
                }
            };
            key::variant(&pending.primary, epoch, &vary, &pending.request.headers).into()
        };
        if body.is_end_stream() {
            // Nothing will be polled: store it now.
            let object = new_object(&self.cache, parts.clone(), Bytes::new(), policy, now);
            self.cache.store.insert(key, Slot::Object(Arc::new(object)));
            if let Some(lead) = pending.lead {
                lead.head(SharedHead {
                    status,
                    headers: parts.headers.clone(),
                    vary_values: key::vary_values(&vary, &pending.request.headers),
                    vary,
                });
                lead.finish();
            }
            add_cache_status(
                &mut parts.headers,
                &format!("{CACHE_NAME}; fwd={forward}; stored"),
            );
            return Response::from_parts(parts, body);
        }
        if let Some(lead) = &pending.lead {
            lead.head(SharedHead {
                status,
                headers: parts.headers.clone(),
                vary_values: key::vary_values(&vary, &pending.request.headers),
                vary,
            });
        }
        let expected = body.size_hint().exact().or_else(|| {
            parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        let tee = Tee {
            expected,
            cache: self.cache.clone(),
            primary: pending.primary.clone(),
            key,
            head: Some((status, parts.headers.clone(), policy)),
            lead: pending.lead,
            chunks: Vec::new(),
            size: 0,
        };
        add_cache_status(
            &mut parts.headers,
            &format!("{CACHE_NAME}; fwd={forward}; stored"),
        );
        Response::from_parts(parts, boxed(Hooked::new(body, tee)))
    }

    /// Invalidates what a successful unsafe request changed (RFC 9111 §4.4).
    fn invalidate(&self, invalidate: &Invalidate, response: &Response<Body>) {
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return;
        }
        let config = &self.cache.store.config;
        let host = invalidate.host.as_deref();
        let request = &invalidate.request;
        let mut keys = vec![key::primary(config, host, &request.uri, &request.headers)];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = response
                .headers()
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = uri
                .host()
                .is_none_or(|h| Some(h) == host.map(|h| h.split(':').next().unwrap_or(h)));
            if same_host {
                keys.push(key::primary(config, host, &uri, &request.headers));
            }
        }
        for key in keys {
            self.cache.store.invalidate(&key);
        }
    }
}

/// The method, URI and header fields of a request, without extensions.
fn head_of(parts: &Parts) -> Parts {
    let mut head = http::Request::new(()).into_parts().0;
    head.method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    head.uri = parts.uri.clone();
    head.headers = parts.headers.clone();
    head
}

/// Whether a response could not be stored whatever the request had been: not for its
/// `Authorization`, its `no-store`, or its own validators (a 304 or 206 answers those).
fn uncacheable_for_anyone(
    cache: &RouteCache,
    request: &Parts,
    response: &http::response::Parts,
    now: SystemTime,
) -> bool {
    if matches!(
        response.status,
        StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
    ) {
        return false;
    }
    let mut plain = head_of(request);
    for name in [
        header::AUTHORIZATION,
        header::CACHE_CONTROL,
        header::PRAGMA,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::RANGE,
    ] {
        plain.headers.remove(name);
    }
    storable(cache, &plain, response, now).is_none()
}

/// The policy of a response that may be stored, or `None`.
fn storable(
    cache: &RouteCache,
    request: &Parts,
    response: &http::response::Parts,
    now: SystemTime,
) -> Option<CachePolicy> {
    if response.status == StatusCode::PARTIAL_CONTENT
        || response.status == StatusCode::NOT_MODIFIED
        || key::vary_names(&response.headers).is_none()
    {
        return None;
    }
    let policy = policy_of(request, response, now);
    if !policy.is_storable() {
        return None;
    }
    let headers = &response.headers;
    let public = freshness::directives(headers)
        .iter()
        .any(|(name, _)| name == "public");
    if headers.contains_key(header::SET_COOKIE) && !public {
        return None;
    }
    let lifetime = freshness::lifetime(&policy, headers, &cache.store.config, now);
    let validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    (!lifetime.is_zero() || validator).then_some(policy)
}

/// The RFC 9111 policy of a response. `http-cache-semantics` stores only the statuses it
/// lists; any final status with explicit freshness may be stored (RFC 9111 §3), so such a
/// response is judged as if it were a 200.
fn policy_of(request: &Parts, response: &http::response::Parts, now: SystemTime) -> CachePolicy {
    const UNDERSTOOD: &[u16] = &[
        200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
    ];
    let status = response.status.as_u16();
    let cc = freshness::directives(&response.headers);
    let explicit = response.headers.contains_key(header::EXPIRES)
        || cc
            .iter()
            .any(|(name, _)| name == "max-age" || name == "s-maxage");
    // `must-understand`: only statuses the cache knows may be stored (RFC 9111 §5.2.2.3).
    let must_understand = cc.iter().any(|(name, _)| name == "must-understand");
    let mut judged = Response::new(()).into_parts().0;
    judged.status =
        if status >= 200 && !UNDERSTOOD.contains(&status) && explicit && !must_understand {
            StatusCode::OK
        } else {
            response.status
        };
    // Directive names are case-insensitive; the crate reads them lower-case only.
    judged.headers = response.headers.clone();
    lower_cache_control(&mut judged.headers);
    let mut asked = http::Request::new(()).into_parts().0;
    asked.method = request.method.clone();
    asked.uri = request.uri.clone();
    asked.headers = request.headers.clone();
    lower_cache_control(&mut asked.headers);
    CachePolicy::new_options(&asked, &judged, now, CacheOptions::default())
}

/// Makes the `Cache-Control` fields lower-case.
fn lower_cache_control(headers: &mut HeaderMap) {
    let lowered: Vec<HeaderValue> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| HeaderValue::from_str(&value.to_str().ok()?.to_ascii_lowercase()).ok())
        .collect();
    if lowered.is_empty() {
        return;
    }
    headers.remove(header::CACHE_CONTROL);
    for value in lowered {
        headers.append(header::CACHE_CONTROL, value);
    }
}

/// A stored response made from a response head and its whole body.
fn new_object(
    cache: &RouteCache,
    mut parts: http::response::Parts,
    body: Bytes,
    policy: CachePolicy,
    now: SystemTime,
) -> Object {
    proxy::strip_hop_by_hop(&mut parts.headers);
    let lifetime = freshness::lifetime(&policy, &parts.headers, &cache.store.config, now);
    Object {
        status: parts.status,
        stale: StaleRules::of(&parts.headers),
        headers: parts.headers,
        body,
        policy,
        lifetime,
    }
}

/// The stored response a 304 confirms, with its header fields updated; `None` when the
/// 304 does not match it (it answers the client's own validators).
fn merge_304(
    cache: &RouteCache,
    object: &Object,
    request: &Parts,
    response: &http::response::Parts,
    now: SystemTime,
) -> Option<Object> {
    if response.status != StatusCode::NOT_MODIFIED {
        return None;
    }
    let mut answer = object.policy.after_response(request, response, now);
    if matches!(answer, AfterResponse::Modified(..)) && !response_names_validator(response) {
        // A 304 without a validator answers the only validators sent: the stored response's.
        let mut confirmed = response.clone();
        for name in [header::ETAG, header::LAST_MODIFIED] {
            if let Some(value) = object.headers.get(&name) {
                confirmed.headers.insert(name, value.clone());
            }
        }
        answer = object.policy.after_response(request, &confirmed, now);
    }
    match answer {
        AfterResponse::NotModified(policy, mut merged) => {
            merged.headers.remove(header::AGE);
            let lifetime = freshness::lifetime(&policy, &merged.headers, &cache.store.config, now);
            Some(Object {
                status: object.status,
                stale: StaleRules::of(&merged.headers),
                headers: merged.headers,
                body: object.body.clone(),
                policy,
                lifetime,
            })
        }
        AfterResponse::Modified(..) => None,
    }
}

/// Whether a response carries a validator.
fn response_names_validator(response: &http::response::Parts) -> bool {
    response.headers.contains_key(header::ETAG)
        || response.headers.contains_key(header::LAST_MODIFIED)
}

/// The request's header fields with the stored response's validators added.
fn revalidation_headers(object: &Object, request: &Parts) -> HeaderMap {
    match object.policy.before_request(request, SystemTime::now()) {
        BeforeRequest::Stale { request, .. } => request.headers,
        BeforeRequest::Fresh(_) => request.headers.clone(),
    }
}

/// Appends this cache's entry to `Cache-Status` (the last entry is the cache nearest the
/// client).
fn add_cache_status(headers: &mut HeaderMap, status: &str) {
    if let Ok(value) = HeaderValue::from_str(status) {
        headers.append(CACHE_STATUS, value);
    }
}

/// Whether the client's conditional request is satisfied by a response with these fields
/// (RFC 9110 §13.1.2, §13.1.3): it is then answered with 304.
fn not_modified(request: &HeaderMap, response: &HeaderMap) -> bool {
    let etag = response.get(header::ETAG).and_then(|v| v.to_str().ok());
    if let Some(if_none_match) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
        return match etag {
            _ if if_none_match.trim() == "*" => true,
            Some(etag) => if_none_match
                .split(',')
                .any(|tag| opaque(tag) == opaque(etag)),
            None => false,
        };
    }
    let Some(since) = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(freshness::http_date)
    else {
        return false;
    };
    // Without `Last-Modified`, the response's `Date` stands in (RFC 9110 §13.1.3).
    let modified = response
        .get(header::LAST_MODIFIED)
        .or_else(|| response.get(header::DATE))
        .and_then(freshness::http_date);
    modified.is_some_and(|modified| modified <= since)
}

/// Tees a response body into the store as it streams to the client, and shares it with the
/// flight's followers.
struct Tee {
    cache: Arc<RouteCache>,
    /// The request's primary key (hit-for-pass is marked there).
    primary: Arc<str>,
    /// Where the response is stored (its secondary key when it varies).
    key: Arc<str>,
    /// Status, fields and policy; `None` once the body proved too large.
    head: Option<(StatusCode, HeaderMap, CachePolicy)>,
    lead: Option<Lead>,
    chunks: Vec<Bytes>,
    size: u64,
    /// The body's length when known: the body is complete once that many bytes passed
    /// (the client may have it all before the body is polled for its end).
    expected: Option<u64>,
}

impl BodyHook for Tee {
    fn on_bytes(&mut self, data: &Bytes) -> Result<(), BoxError> {
        if self.head.is_none() {
            return Ok(());
        }
        self.size += data.len() as u64;
        if self.size > self.cache.store.config.max_object_bytes {
            // Too large to store: stop holding it (followers cannot be fed any further), and
            // let the next requests for the key go straight to the upstream.
            self.head = None;
            self.chunks = Vec::new();
            self.lead = None;
            self.cache.mark_pass(&self.primary);
            return Ok(());
        }
        self.chunks.push(data.clone());
        if let Some(lead) = &self.lead {
            lead.data(data);
        }
        if self.expected == Some(self.size) {
            self.on_end(true);
        }
        Ok(())
    }

    fn on_end(&mut self, clean: bool) {
        let (Some((status, headers, policy)), true) = (self.head.take(), clean) else {
            return;
        };
        let body = match self.chunks.len() {
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut whole = BytesMut::with_capacity(self.size as usize);
                for chunk in self.chunks.drain(..) {
                    whole.extend_from_slice(&chunk);
                }
                whole.freeze()
            }
        };
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.headers = headers;
        let now = SystemTime::now();
        let object = new_object(&self.cache, parts, body, policy, now);
        let (cache, key, lead) = (self.cache.clone(), self.key.clone(), self.lead.take());
        tokio::spawn(async move {
            cache.store.insert(key, Slot::Object(Arc::new(object)));
            if let Some(lead) = lead {
                lead.finish();
            }
        });
    }
}
