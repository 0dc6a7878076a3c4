//! The response cache, black-box: the real `wasmgate` binary, real loopback upstreams that
//! count what reaches them, the admin API for purges and the store's size.
//!
//! Covered: miss then hit (`Cache-Status`, `Age`, `HEAD` from a stored `GET`, 304 to a
//! client's validator), 100 concurrent misses coalesced into one upstream request with
//! every body whole, hit-for-pass, `stale-while-revalidate` refreshing in the background,
//! revalidation with `ETag` and a merged 304, `stale-if-error` (a 5xx and a dead upstream),
//! `no-store` / `private` / `Authorization`, `Vary: Accept-Encoding` normalised, unsafe
//! methods invalidating, the memory bound under a stream of unique keys, a 100 MiB response
//! streamed but not stored, purge by key and prefix, and a reload that keeps the cache.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{
    BoxBody, TestGateway, TestUpstream, client, empty, eventually, full, get, request, send,
};
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// A gateway config with one upstream and cached routes; `extra` is added to the route
/// `c` (`cache = { … }` settings), `tail` after everything.
fn config(upstream: SocketAddr, cache: &str, tail: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[plugins]
watch = false
[upstreams.up]
targets = ["{upstream}"]
[[routes]]
name = "c"
prefix = "/"
upstream = "up"
cache = {cache}
{tail}
"#
    )
}

fn response(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<BoxBody> {
    let mut response = Response::new(full(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

/// An upstream whose every answer carries `headers` and the body `v{N}` (N counts
/// requests from 1).
fn versioned(headers: &'static [(&'static str, &'static str)]) -> (TestUpstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let upstream = TestUpstream::start(move |_request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(response(200, headers, format!("v{n}")))
    });
    (upstream, count)
}

async fn cache_json(admin: SocketAddr) -> serde_json::Value {
    get(&format!("http://{admin}/cache")).await.json()
}

async fn metrics(admin: SocketAddr) -> String {
    get(&format!("http://{admin}/metrics")).await.text()
}

/// Waits until no upstream fetch of route `c` is in flight: a response whose body a client
/// has read is then stored (the store happens as its last bytes pass, which a client
/// reading a `Content-Length` body may see first).
async fn settled(gateway: &TestGateway) {
    let admin = gateway.admin_addr();
    for _ in 0..500 {
        if cache_json(admin).await["routes"]["c"]["flights"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("a fetch stayed in flight: {}", cache_json(admin).await);
}

fn cache_status(reply: &common::Reply) -> String {
    reply.header_all("cache-status").join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_response_is_served_from_the_cache_with_age_and_cache_status() {
    let (upstream, count) = versioned(&[("cache-control", "max-age=60"), ("etag", "\"e1\"")]);
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    let first = get(&gateway.url("/a?y=2&x=1")).await;
    assert_eq!(first.text(), "v1");
    assert_eq!(cache_status(&first), "wasmgate; fwd=miss; stored");
    settled(&gateway).await;
    let second = get(&gateway.url("/a?x=1&y=2")).await;
    assert_eq!(second.text(), "v1", "the same key, the query reordered");
    assert!(
        cache_status(&second).starts_with("wasmgate; hit; ttl="),
        "{second:?}"
    );
    assert!(second.header("age").is_some());
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let head = send(
        &client(),
        request("HEAD", &gateway.url("/a?x=1&y=2"), &[], empty()),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert!(cache_status(&head).contains("hit"));

    let conditional = send(
        &client(),
        request(
            "GET",
            &gateway.url("/a?x=1&y=2"),
            &[("if-none-match", "\"e1\"")],
            empty(),
        ),
    )
    .await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "all answered from the cache"
    );

    let other = get(&gateway.url("/b")).await;
    assert_eq!(other.text(), "v2");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_upstream_request_and_all_stream_the_whole_body() {
    // The upstream answers the head at once and the body when the test says so, so every
    // request is in flight before the body ends.
    let (release, releases) = mpsc::unbounded_channel::<()>();
    let releases = Arc::new(tokio::sync::Mutex::new(releases));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let chunk = Bytes::from(vec![b'x'; 64 << 10]);
    let upstream = TestUpstream::start(move |_request| {
        seen.fetch_add(1, Ordering::SeqCst);
        let (releases, chunk) = (releases.clone(), chunk.clone());
        async move {
            let (sender, receiver) =
                mpsc::unbounded_channel::<Result<Frame<Bytes>, std::convert::Infallible>>();
            let _ = sender.send(Ok(Frame::data(chunk.clone())));
            tokio::spawn(async move {
                releases.lock().await.recv().await;
                for _ in 0..3 {
                    let _ = sender.send(Ok(Frame::data(chunk.clone())));
                }
            });
            let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|frame| (frame, receiver))
            });
            let mut response = Response::new(
                StreamBody::new(stream)
                    .map_err(|never| match never {})
                    .boxed(),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, "max-age=60".parse().unwrap());
            response
        }
    });
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    let admin = gateway.admin_addr();
    let client = client();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            let url = gateway.url("/cold");
            tokio::spawn(async move { send(&client, request("GET", &url, &[], empty())).await })
        })
        .collect();
    // Wait until the 99 others follow the one in flight, then let the body finish.
    let mut followers = 0;
    for _ in 0..1000 {
        followers = cache_json(admin).await["routes"]["c"]["followers"]
            .as_u64()
            .unwrap_or(0);
        if followers == 99 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(followers, 99, "{}", cache_json(admin).await);
    release.send(()).unwrap();
    let mut collapsed = 0;
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), 4 * (64 << 10), "every body is whole");
        assert!(reply.body.iter().all(|b| *b == b'x'));
        collapsed += usize::from(cache_status(&reply).contains("collapsed"));
    }
    assert_eq!(count.load(Ordering::SeqCst), 1, "one upstream request");
    assert_eq!(collapsed, 99);
    let hit = get(&gateway.url("/cold")).await;
    assert!(cache_status(&hit).contains("hit"));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(
        metrics(admin)
            .await
            .contains(r#"wasmgate_cache_lookups_total{route="c",result="coalesced"} 99"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncacheable_response_marks_the_key_hit_for_pass() {
    let (upstream, count) = versioned(&[("cache-control", "private, max-age=60")]);
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    let first = get(&gateway.url("/p")).await;
    assert_eq!(cache_status(&first), "wasmgate; fwd=miss");
    let second = get(&gateway.url("/p")).await;
    assert_eq!(second.text(), "v2");
    assert_eq!(cache_status(&second), "wasmgate; fwd=bypass");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_and_authorization_are_not_shared() {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let upstream = TestUpstream::start(move |request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let cc = match request.uri().path() {
            "/nostore" => "no-store",
            "/public-auth" => "public, max-age=60",
            _ => "max-age=60",
        };
        std::future::ready(response(200, &[("cache-control", cc)], format!("v{n}")))
    });
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    get(&gateway.url("/nostore")).await;
    get(&gateway.url("/nostore")).await;
    assert_eq!(count.load(Ordering::SeqCst), 2, "no-store is never stored");
    let auth = |path: &str| {
        request(
            "GET",
            &gateway.url(path),
            &[("authorization", "Bearer a")],
            empty(),
        )
    };
    send(&client(), auth("/auth")).await;
    let again = get(&gateway.url("/auth")).await;
    assert_eq!(
        again.text(),
        "v4",
        "a response to an authorized request is not shared"
    );
    assert_eq!(
        cache_status(&again),
        "wasmgate; fwd=miss; stored",
        "nor does it make the key hit-for-pass for others"
    );
    send(&client(), auth("/public-auth")).await;
    let shared = get(&gateway.url("/public-auth")).await;
    assert_eq!(shared.text(), "v5", "unless it says public");
    let no_cache = send(
        &client(),
        request(
            "GET",
            &gateway.url("/public-auth"),
            &[("cache-control", "no-cache")],
            empty(),
        ),
    )
    .await;
    assert_eq!(
        no_cache.text(),
        "v6",
        "a request's no-cache goes to the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_stale_and_refreshes_in_the_background() {
    // The first answer is already stale (Age 5 > max-age 1), within stale-while-revalidate.
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let upstream = TestUpstream::start(move |_request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let headers: &[(&str, &str)] = if n == 1 {
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=60"),
                ("age", "5"),
            ]
        } else {
            &[("cache-control", "max-age=60")]
        };
        std::future::ready(response(200, headers, format!("v{n}")))
    });
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    assert_eq!(get(&gateway.url("/swr")).await.text(), "v1");
    settled(&gateway).await;
    let stale = get(&gateway.url("/swr")).await;
    assert_eq!(stale.text(), "v1", "answered stale at once");
    assert!(
        cache_status(&stale).contains("detail=stale-while-revalidate"),
        "{stale:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || count.load(Ordering::SeqCst)
            == 2)
        .await,
        "the background refresh reached the upstream"
    );
    let mut refreshed = String::new();
    for _ in 0..500 {
        let reply = get(&gateway.url("/swr")).await;
        refreshed = reply.text();
        if refreshed == "v2" {
            assert!(cache_status(&reply).contains("hit"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        refreshed, "v2",
        "the refreshed response replaced the stale one"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2, "one refresh, then hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_is_revalidated_and_a_304_merges_its_fields() {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let upstream = TestUpstream::start(move |request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let conditional = request
            .headers()
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_string());
        std::future::ready(match conditional.as_deref() {
            Some("\"e1\"") => response(
                304,
                &[
                    ("etag", "\"e1\""),
                    ("cache-control", "max-age=60"),
                    ("x-v", "2"),
                ],
                "",
            ),
            _ => response(
                200,
                &[
                    ("etag", "\"e1\""),
                    ("cache-control", "max-age=0"),
                    ("x-v", "1"),
                ],
                format!("body{n}"),
            ),
        })
    });
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    assert_eq!(get(&gateway.url("/r")).await.text(), "body1");
    settled(&gateway).await;
    let revalidated = get(&gateway.url("/r")).await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.text(), "body1", "the stored body");
    assert_eq!(revalidated.header("x-v"), Some("2"), "the 304's fields");
    assert_eq!(
        cache_status(&revalidated),
        "wasmgate; fwd=stale; fwd-status=304; stored"
    );
    let hit = get(&gateway.url("/r")).await;
    assert!(cache_status(&hit).contains("hit"), "fresh again: {hit:?}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_when_the_upstream_fails() {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let upstream = TestUpstream::start(move |_request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(if n == 1 {
            response(
                200,
                &[
                    ("cache-control", "max-age=0, stale-if-error=60"),
                    ("etag", "\"s\""),
                ],
                "good",
            )
        } else {
            response(503, &[], "down")
        })
    });
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    assert_eq!(get(&gateway.url("/e")).await.text(), "good");
    settled(&gateway).await;
    let rescued = get(&gateway.url("/e")).await;
    assert_eq!(rescued.status, StatusCode::OK);
    assert_eq!(rescued.text(), "good");
    assert!(
        cache_status(&rescued).contains("fwd-status=503; detail=stale-if-error"),
        "{rescued:?}"
    );
    drop(upstream);
    let dead = get(&gateway.url("/e")).await;
    assert_eq!(dead.text(), "good", "a dead upstream too: {dead:?}");
    assert!(cache_status(&dead).contains("detail=stale-if-error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_accept_encoding_is_normalised_and_unsafe_methods_invalidate() {
    let (upstream, count) =
        versioned(&[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")]);
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    let with = |encoding: &'static str| {
        request(
            "GET",
            &gateway.url("/v"),
            &[("accept-encoding", encoding)],
            empty(),
        )
    };
    assert_eq!(
        send(&client(), with("gzip, deflate, br")).await.text(),
        "v1"
    );
    assert_eq!(
        send(&client(), with("br;q=1.0, gzip;q=0.5")).await.text(),
        "v1",
        "both choose br"
    );
    assert_eq!(
        send(&client(), with("gzip")).await.text(),
        "v2",
        "another variant"
    );
    assert_eq!(send(&client(), with("gzip")).await.text(), "v2");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let post = send(
        &client(),
        request("POST", &gateway.url("/v"), &[], full("x")),
    )
    .await;
    assert_eq!(post.text(), "v3");
    assert_eq!(
        send(&client(), with("gzip")).await.text(),
        "v4",
        "the POST invalidated /v"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_bounds_hold_under_a_stream_of_unique_keys() {
    let upstream = TestUpstream::start(|_request| {
        std::future::ready(response(
            200,
            &[("cache-control", "max-age=600")],
            vec![b'k'; 10 << 10],
        ))
    });
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || {
            TestGateway::start(&format!(
                "[cache]\nmax-bytes = \"3MiB\"\n{}",
                config(
                    addr,
                    "{ max-bytes = \"1MiB\", max-object-bytes = \"64KiB\" }",
                    "[[routes]]\nname = \"d\"\nprefix = \"/d\"\nupstream = \"up\"\ncache = { max-bytes = \"4MiB\" }\n",
                )
            ))
        }
    })
    .await
    .unwrap();
    let admin = gateway.admin_addr();
    let client = client();
    for i in 0..400 {
        let reply = send(
            &client,
            request("GET", &gateway.url(&format!("/u{i}")), &[], empty()),
        )
        .await;
        assert_eq!(reply.body.len(), 10 << 10);
        let reply = send(
            &client,
            request("GET", &gateway.url(&format!("/d/u{i}")), &[], empty()),
        )
        .await;
        assert_eq!(reply.body.len(), 10 << 10);
    }
    let state = cache_json(admin).await;
    let route_c = state["routes"]["c"]["bytes"].as_u64().unwrap();
    let route_d = state["routes"]["d"]["bytes"].as_u64().unwrap();
    assert!(route_c <= 1 << 20, "route c holds {route_c} bytes: {state}");
    assert!(route_c >= 512 << 10, "and is not empty: {state}");
    assert!(route_d <= 4 << 20, "{state}");
    let total = state["bytes"].as_u64().unwrap();
    assert!(total <= 3 << 20, "the shared bound: {state}");
    assert!(
        metrics(admin)
            .await
            .contains("wasmgate_cache_evictions_total{route=\"c\"}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_response_streams_but_is_not_stored() {
    const HUGE: u64 = 100 << 20;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let upstream = TestUpstream::start(move |_request| {
        seen.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(common::GeneratedBody::chunked(HUGE).boxed());
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, "max-age=600".parse().unwrap());
        std::future::ready(response)
    });
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    let rss = gateway.sample_rss();
    for _ in 0..2 {
        let response = client()
            .request(request("GET", &gateway.url("/huge"), &[], empty()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let drained = common::drain(response.into_body()).await.unwrap();
        assert_eq!(drained.bytes, HUGE);
        assert!(drained.pattern_ok);
    }
    let stats = rss.stop();
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "not stored: both went upstream"
    );
    let growth = stats.peak_kib.saturating_sub(stats.first_kib);
    assert!(growth < 40 << 10, "memory stayed bounded: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_key_and_prefix_through_the_admin_api() {
    let (upstream, count) = versioned(&[("cache-control", "max-age=600")]);
    let gateway = tokio::task::spawn_blocking({
        let addr = upstream.addr();
        move || TestGateway::start(&config(addr, "true", ""))
    })
    .await
    .unwrap();
    let admin = gateway.admin_addr();
    let host = gateway.addr().to_string();
    for path in ["/p/a", "/p/b", "/q"] {
        get(&gateway.url(path)).await;
    }
    settled(&gateway).await;
    assert_eq!(count.load(Ordering::SeqCst), 3);
    let purge = |query: String| async move {
        send(
            &client(),
            request(
                "POST",
                &format!("http://{admin}/cache/purge?{query}"),
                &[],
                empty(),
            ),
        )
        .await
    };
    let one = purge(format!("route=c&key={host}/p/a")).await;
    assert_eq!(one.json()["purged"], 1, "{}", one.text());
    assert!(cache_status(&get(&gateway.url("/p/a")).await).contains("fwd=miss"));
    settled(&gateway).await;
    assert!(cache_status(&get(&gateway.url("/p/a")).await).contains("hit"));
    assert!(cache_status(&get(&gateway.url("/p/b")).await).contains("hit"));
    let prefix = purge(format!("route=c&prefix={host}/p/")).await;
    assert_eq!(prefix.json()["purged"], 2);
    assert!(cache_status(&get(&gateway.url("/p/b")).await).contains("fwd=miss"));
    assert!(cache_status(&get(&gateway.url("/q")).await).contains("hit"));
    assert_eq!(
        purge("route=nope".into()).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_leaves_the_cache_settings_keeps_the_cache() {
    let (upstream, count) = versioned(&[("cache-control", "max-age=600")]);
    let addr = upstream.addr();
    let watched = |cache: &str, tail: &str| {
        config(addr, cache, tail).replace("watch = false", "watch = true")
    };
    let gateway = tokio::task::spawn_blocking({
        let initial = watched("true", "");
        move || TestGateway::start(&initial)
    })
    .await
    .unwrap();
    let admin = gateway.admin_addr();
    let generation = || async move {
        get(&format!("http://{admin}/status")).await.json()["generation"]
            .as_u64()
            .unwrap()
    };
    get(&gateway.url("/k")).await;
    settled(&gateway).await;
    let before = generation().await;
    std::fs::write(
        gateway.config_path(),
        watched(
            "true",
            "[[routes]]\nname = \"other\"\npath = \"/other\"\nrespond = { body = \"o\" }\n",
        ),
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..2000 {
        if generation().await > before {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reloaded, "{}", gateway.logs());
    assert_eq!(
        get(&gateway.url("/other")).await.text(),
        "o",
        "the new config serves"
    );
    assert!(
        cache_status(&get(&gateway.url("/k")).await).contains("hit"),
        "the cache survived"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let before = generation().await;
    std::fs::write(
        gateway.config_path(),
        watched("{ max-bytes = \"2MiB\" }", ""),
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..2000 {
        if generation().await > before {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reloaded);
    assert!(
        cache_status(&get(&gateway.url("/k")).await).contains("fwd=miss"),
        "new settings, new store"
    );
}
