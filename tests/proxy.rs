//! The reverse proxy, black box: a real gateway process between a hyper client and real
//! loopback upstreams. Routing, path rewriting, intermediary header rules, error answers,
//! balancing, body and header limits, keep-alive and HTTP/2.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    GeneratedBody, RawResponse, Reply, TestGateway, TestUpstream, client, closed_addr, empty,
    eventually, full, get, h2_client, handler, raw_connect, request, send,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::io::Write;

/// `[upstreams.NAME]` with these targets.
fn upstream(name: &str, targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[upstreams.{name}]\ntargets = [{}]\n\n", targets.join(", "))
}

/// `GET url` with a `Host` header.
async fn get_host(url: &str, host: &str) -> Reply {
    send(&client(), request("GET", url, &[("host", host)], empty())).await
}

/// What an echo upstream saw, from its reply.
fn seen(reply: &Reply) -> Value {
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "upstream reply: {}",
        reply.text()
    );
    reply.json()
}

/// Asserts the gateway's own JSON error shape and returns the body.
fn assert_error(reply: &Reply, status: StatusCode, code: &str) -> Value {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["error", "message", "request_id"], "body: {body}");
    assert_eq!(body["error"], code, "body: {body}");
    assert!(
        !body["message"].as_str().unwrap_or("").is_empty(),
        "body: {body}"
    );
    assert_eq!(
        body["request_id"].as_str(),
        reply.header("x-request-id"),
        "request id in body and header"
    );
    body
}

#[tokio::test]
async fn routes_by_exact_then_wildcard_then_any_host() {
    let exact = TestUpstream::start(handler::fixed(200, "exact"));
    let wild = TestUpstream::start(handler::fixed(200, "wild"));
    let any = TestUpstream::start(handler::fixed(200, "any"));
    let gateway = TestGateway::start(&format!(
        r#"{}{}{}
[[routes]]
name = "exact"
hosts = ["api.example.test"]
path = "/who"
upstream = "exact"

[[routes]]
name = "wild"
hosts = ["*.example.test"]
path = "/who"
upstream = "wild"

[[routes]]
name = "any"
path = "/who"
upstream = "any"
"#,
        upstream("exact", &[exact.addr()]),
        upstream("wild", &[wild.addr()]),
        upstream("any", &[any.addr()]),
    ));
    let url = gateway.url("/who");
    for (host, expected) in [
        ("api.example.test", "exact"),
        ("API.Example.TEST", "exact"),
        ("api.example.test:8080", "exact"),
        ("www.example.test", "wild"),
        ("a.b.example.test", "wild"),
        ("example.test", "any"),
        ("other.test", "any"),
    ] {
        let reply = get_host(&url, host).await;
        assert_eq!(reply.status, StatusCode::OK, "host {host}");
        assert_eq!(reply.text(), expected, "host {host}");
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_and_json() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        r#"{}
[[routes]]
name = "items"
methods = ["GET"]
path = "/items"
upstream = "up"

[[routes]]
name = "items-write"
methods = ["POST", "PUT"]
path = "/items"
upstream = "up"
"#,
        upstream("up", &[up.addr()])
    ));
    let reply = send(
        &client(),
        request("DELETE", &gateway.url("/items"), &[], empty()),
    )
    .await;
    let body = assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(
        reply.header("allow"),
        Some("GET, HEAD, POST, PUT"),
        "body: {body}"
    );
    assert_eq!(up.requests(), 0);

    // GET also allows HEAD; each method reaches its own route.
    let head = send(
        &client(),
        request("HEAD", &gateway.url("/items"), &[], empty()),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    let put = send(
        &client(),
        request("PUT", &gateway.url("/items"), &[], full("x")),
    )
    .await;
    assert_eq!(seen(&put)["method"], "PUT");
}

#[tokio::test]
async fn path_params_and_rewrites_with_captures() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        r#"{}
[[routes]]
name = "user"
path = "/users/{{id}}"
rewrite = "/v2/accounts/{{id}}/profile"
upstream = "up"

[[routes]]
name = "files"
path = "/files/{{*rest}}"
rewrite = "/store/{{rest}}"
upstream = "up"

[[routes]]
name = "order"
path = "/orders/{{id}}/lines/{{line}}"
upstream = "up"
"#,
        upstream("up", &[up.addr()])
    ));
    let user = seen(&get(&gateway.url("/users/42?full=1&x=%20y")).await);
    assert_eq!(user["path"], "/v2/accounts/42/profile");
    assert_eq!(user["query"], "full=1&x=%20y");

    let file = seen(&get(&gateway.url("/files/a/b/c.txt")).await);
    assert_eq!(file["path"], "/store/a/b/c.txt");
    assert_eq!(file["query"], Value::Null);

    // Without a rewrite the path goes up as sent.
    let order = seen(&get(&gateway.url("/orders/7/lines/3?expand")).await);
    assert_eq!(order["path"], "/orders/7/lines/3");
    assert_eq!(order["query"], "expand");

    // A param never spans segments.
    let reply = get(&gateway.url("/users/42/extra")).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "no_route");
}

#[tokio::test]
async fn prefix_routes_and_strip_prefix() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        r#"{}
[[routes]]
name = "api"
prefix = "/api"
strip-prefix = "/api"
upstream = "up"

[[routes]]
name = "static"
prefix = "/static/"
upstream = "up"

[[routes]]
name = "legacy"
prefix = "/old"
rewrite = "/new/{{rest}}"
upstream = "up"
"#,
        upstream("up", &[up.addr()])
    ));
    for (sent, path, query) in [
        ("/api/x/y?q=1&r=2", "/x/y", Value::from("q=1&r=2")),
        ("/api/", "/", Value::Null),
        ("/api", "/", Value::Null),
        ("/api?only=query", "/", Value::from("only=query")),
        ("/static/css/site.css", "/static/css/site.css", Value::Null),
        ("/static", "/static", Value::Null),
        ("/old/a/b?c=d", "/new/a/b", Value::from("c=d")),
    ] {
        let echo = seen(&get(&gateway.url(sent)).await);
        assert_eq!(echo["path"], path, "sent {sent}");
        assert_eq!(echo["query"], query, "sent {sent}");
    }
    // Prefixes match whole segments only.
    assert_error(
        &get(&gateway.url("/apix")).await,
        StatusCode::NOT_FOUND,
        "no_route",
    );
    assert_error(
        &get(&gateway.url("/staticky")).await,
        StatusCode::NOT_FOUND,
        "no_route",
    );
}

#[tokio::test]
async fn unknown_path_is_404_json() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"only\"\npath = \"/only\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let reply = get(&gateway.url("/nope?x=1")).await;
    let body = assert_error(&reply, StatusCode::NOT_FOUND, "no_route");
    assert!(
        body["message"].as_str().unwrap().contains("/nope"),
        "message names the path: {body}"
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let up = TestUpstream::start(|request: Request<Incoming>| async move {
        let mut response: Response<_> = handler::echo(request).await;
        let headers = response.headers_mut();
        for (name, value) in [
            ("connection", "x-upstream-secret"),
            ("x-upstream-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic dXA6c3RyZWFt"),
            ("x-upstream-kept", "yes"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        response
    });
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let sent_hop_by_hop = [
        ("connection", "x-client-secret"),
        ("x-client-secret", "1"),
        ("keep-alive", "timeout=300"),
        ("te", "trailers"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic Y2xpZW50OnNlY3JldA=="),
        ("proxy-connection", "keep-alive"),
    ];
    let mut headers = sent_hop_by_hop.to_vec();
    headers.push(("x-client-kept", "yes"));
    // `Trailer` is end to end (RFC 9110 §6.6.2): it announces trailers the gateway carries.
    headers.push(("trailer", "x-digest"));
    let reply = send(
        &client(),
        request("GET", &gateway.url("/h"), &headers, empty()),
    )
    .await;

    let upstream_saw = seen(&reply)["headers"].clone();
    for (name, _) in sent_hop_by_hop {
        assert!(
            upstream_saw.get(name).is_none(),
            "upstream got hop-by-hop `{name}`: {upstream_saw}"
        );
    }
    assert_eq!(upstream_saw["x-client-kept"], "yes");
    assert_eq!(upstream_saw["trailer"], "x-digest");

    for name in [
        "connection",
        "x-upstream-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            reply.header(name).is_none(),
            "client got hop-by-hop `{name}`: {:?}",
            reply.headers
        );
    }
    assert_eq!(reply.header("x-upstream-kept"), Some("yes"));
    assert_eq!(reply.header("trailer"), Some("x-checksum"));
}

#[tokio::test]
async fn forwarding_headers_and_via_both_ways() {
    let up = TestUpstream::start(|request: Request<Incoming>| async move {
        let mut response = handler::echo(request).await;
        response
            .headers_mut()
            .insert("via", "1.1 origin".parse().unwrap());
        response
    });
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let headers = [
        ("host", "shop.example.test"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "spoofed.test"),
        ("via", "1.0 client-proxy"),
    ];
    let reply = send(
        &client(),
        request("GET", &gateway.url("/f"), &headers, empty()),
    )
    .await;
    let saw = seen(&reply)["headers"].clone();
    assert_eq!(
        saw["x-forwarded-for"], "203.0.113.7, 10.0.0.1, 127.0.0.1",
        "appended: {saw}"
    );
    assert_eq!(
        saw["x-forwarded-proto"], "http",
        "set, not trusted from the client: {saw}"
    );
    assert_eq!(
        saw["x-forwarded-host"], "shop.example.test",
        "set from Host: {saw}"
    );
    assert_eq!(saw["via"], "1.0 client-proxy, 1.1 wasmgate");
    assert_eq!(
        saw["host"],
        up.addr().to_string(),
        "Host is the target's without preserve-host"
    );
    assert_eq!(
        reply.header_all("via").join(", "),
        "1.1 origin, 1.1 wasmgate",
        "Via on the way back"
    );

    // No X-Forwarded-For yet: the gateway starts one.
    let plain = seen(&get(&gateway.url("/f")).await)["headers"].clone();
    assert_eq!(plain["x-forwarded-for"], "127.0.0.1");
    assert_eq!(plain["x-forwarded-host"], gateway.addr().to_string());
    assert_eq!(plain["via"], "1.1 wasmgate");
}

#[tokio::test]
async fn request_id_is_generated_or_passed_through() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let first = get(&gateway.url("/r")).await;
    let second = get(&gateway.url("/r")).await;
    let id = first
        .header("x-request-id")
        .expect("a generated request id")
        .to_string();
    assert_eq!(id.len(), 32, "128 bits in hex: {id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "hex: {id}");
    assert_eq!(
        seen(&first)["headers"]["x-request-id"],
        id.as_str(),
        "the upstream sees the same id"
    );
    assert_ne!(
        second.header("x-request-id"),
        Some(id.as_str()),
        "a new id per request"
    );

    let given = send(
        &client(),
        request(
            "GET",
            &gateway.url("/r"),
            &[("x-request-id", "trace-abc-123")],
            empty(),
        ),
    )
    .await;
    assert_eq!(given.header("x-request-id"), Some("trace-abc-123"));
    assert_eq!(seen(&given)["headers"]["x-request-id"], "trace-abc-123");
}

#[tokio::test]
async fn upstream_down_is_502_json() {
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"down\"\nprefix = \"/\"\nupstream = \"down\"\n",
        upstream("down", &[closed_addr()])
    ));
    let started = Instant::now();
    let reply = get(&gateway.url("/x")).await;
    let body = assert_error(&reply, StatusCode::BAD_GATEWAY, "upstream_unreachable");
    assert!(
        body["message"].as_str().unwrap().contains("`down`"),
        "names the upstream: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection fails fast"
    );
    // A POST (not retried) gets the same answer.
    let post = send(
        &client(),
        request("POST", &gateway.url("/x"), &[], full("payload")),
    )
    .await;
    assert_error(&post, StatusCode::BAD_GATEWAY, "upstream_unreachable");
}

#[tokio::test]
async fn slow_upstream_is_504_json_after_route_timeout() {
    let up = TestUpstream::start(handler::slow(Duration::from_secs(3)));
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"slow\"\nprefix = \"/\"\ntimeout = \"200ms\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let started = Instant::now();
    let reply = get(&gateway.url("/slow")).await;
    let elapsed = started.elapsed();
    let body = assert_error(&reply, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout");
    assert!(
        body["message"].as_str().unwrap().contains("200ms"),
        "names the timeout: {body}"
    );
    assert!(
        elapsed >= Duration::from_millis(200),
        "not before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "promptly after the timeout: {elapsed:?}"
    );
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn round_robin_across_targets() {
    let one = TestUpstream::start(handler::fixed(200, "one"));
    let two = TestUpstream::start(handler::fixed(200, "two"));
    let gateway = TestGateway::start(&format!(
        "{}balance = \"round-robin\"\n[[routes]]\nname = \"rr\"\nprefix = \"/\"\nupstream = \"pair\"\n",
        upstream("pair", &[one.addr(), two.addr()])
    ));
    let http = client();
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(
            send(&http, request("GET", &gateway.url("/rr"), &[], empty()))
                .await
                .text(),
        );
    }
    assert_eq!(
        (one.requests(), two.requests()),
        (5, 5),
        "answers: {answers:?}"
    );
    assert!(
        answers.windows(2).all(|w| w[0] != w[1]),
        "alternating: {answers:?}"
    );
}

#[tokio::test]
async fn get_fails_over_to_the_next_target_on_connect_failure() {
    let good = TestUpstream::start(handler::fixed(200, "good"));
    let gateway = TestGateway::start(&format!(
        "{}balance = \"round-robin\"\n[[routes]]\nname = \"fo\"\nprefix = \"/\"\nupstream = \"pair\"\n",
        upstream("pair", &[closed_addr(), good.addr()])
    ));
    for i in 0..4 {
        let reply = get(&gateway.url("/fo")).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "good"),
            "request {i}"
        );
    }
    assert_eq!(good.requests(), 4);
    assert!(
        gateway.logs().contains("upstream attempt failed; retrying"),
        "the failover is logged"
    );
}

#[tokio::test]
async fn body_over_the_limit_by_content_length_is_413() {
    let up = TestUpstream::start(handler::sink);
    let gateway = TestGateway::start(&format!(
        "[server]\nmax-body-bytes = 1024\n\n{}[[routes]]\nname = \"up\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let at_limit = send(
        &client(),
        request(
            "POST",
            &gateway.url("/u"),
            &[],
            GeneratedBody::new(1024).boxed(),
        ),
    )
    .await;
    assert_eq!(seen(&at_limit)["bytes"], 1024);

    let over = send(
        &client(),
        request(
            "POST",
            &gateway.url("/u"),
            &[],
            GeneratedBody::new(1025).boxed(),
        ),
    )
    .await;
    let body = assert_error(&over, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert!(
        body["message"].as_str().unwrap().contains("1024"),
        "names the limit: {body}"
    );
    assert_eq!(up.requests(), 1, "refused before reaching the upstream");

    // The same over HTTP/2 (where the `Connection: close` the gateway adds must not break
    // the stream).
    let over_h2 = send(
        &h2_client(),
        request(
            "POST",
            &gateway.url("/u"),
            &[],
            GeneratedBody::new(1025).boxed(),
        ),
    )
    .await;
    assert_error(&over_h2, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let up = TestUpstream::start(handler::sink);
    let gateway = TestGateway::start(&format!(
        r#"[server]
max-body-bytes = "1MiB"

{}
[[routes]]
name = "small"
prefix = "/small"
max-body-bytes = "1KiB"
upstream = "up"

[[routes]]
name = "big"
prefix = "/big"
upstream = "up"
"#,
        upstream("up", &[up.addr()])
    ));
    let under = send(
        &client(),
        request(
            "POST",
            &gateway.url("/small"),
            &[],
            GeneratedBody::chunked(1000).boxed(),
        ),
    )
    .await;
    assert_eq!(seen(&under)["bytes"], 1000);

    // One frame past the route's limit: refused before anything reaches the upstream.
    let over = send(
        &client(),
        request(
            "POST",
            &gateway.url("/small"),
            &[],
            GeneratedBody::chunked(4096).boxed(),
        ),
    )
    .await;
    assert_error(&over, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // Many frames, the limit passed midway while the upstream is already reading.
    let over = send(
        &client(),
        request(
            "POST",
            &gateway.url("/big"),
            &[],
            GeneratedBody::chunked(4 << 20).boxed(),
        ),
    )
    .await;
    assert_error(&over, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    let ok = send(
        &client(),
        request(
            "POST",
            &gateway.url("/big"),
            &[],
            GeneratedBody::chunked(1 << 20).boxed(),
        ),
    )
    .await;
    assert_eq!(
        seen(&ok)["bytes"],
        1 << 20,
        "exactly at the server limit passes"
    );
}

#[tokio::test]
async fn oversized_request_headers_are_431_json() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        "[server]\nmax-header-bytes = \"4KiB\"\n\n{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let big = "a".repeat(6000);
    let mut stream = raw_connect(gateway.addr());
    write!(
        stream,
        "GET /h HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\r\n"
    )
    .unwrap();
    let reply = RawResponse::read_from(&mut stream).expect("an answer");
    assert_eq!(reply.status, 431);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"], "headers_too_large", "body: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("4096"),
        "names the limit: {body}"
    );
    assert_eq!(body["request_id"].as_str(), reply.header("x-request-id"));
    assert_eq!(up.requests(), 0);

    // Headers within the limit pass.
    let small = common::raw_exchange(
        gateway.addr(),
        b"GET /h HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(small.status, 200);

    // A head past hyper's own buffer limit is refused by hyper before the gateway sees a
    // request; the answer is still the gateway's JSON error.
    let huge = "a".repeat(200 << 10);
    let mut stream = raw_connect(gateway.addr());
    let _ = write!(
        stream,
        "GET /h HTTP/1.1\r\nHost: gw.test\r\nX-Huge: {huge}\r\n\r\n"
    );
    let reply = RawResponse::read_from(&mut stream).expect("an answer");
    assert_eq!(reply.status, 431);
    assert_eq!(reply.json()["error"], "headers_too_large");
    assert_eq!(
        reply.json()["request_id"].as_str(),
        reply.header("x-request-id")
    );
    assert_eq!(up.requests(), 1, "only the small request got through");
}

/// HTTP/2 requests over the head limits get the same JSON 431 as HTTP/1 ones, up to the
/// header list size the gateway advertises (4x the limit, 64 KiB at least).
#[tokio::test]
async fn oversized_http2_request_headers_are_431_json() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        "[server]\nmax-header-bytes = \"4KiB\"\n\n{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let client = common::h2_client();
    let big = common::request(
        "GET",
        &gateway.url("/h"),
        &[("x-big", &"a".repeat(12 << 10))],
        common::empty(),
    );
    let reply = common::send(&client, big).await;
    assert_eq!(reply.status, 431);
    assert_eq!(reply.json()["error"], "headers_too_large");
    let names: Vec<String> = (0..120).map(|i| format!("x-field-{i}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let many = common::send(
        &client,
        common::request("GET", &gateway.url("/h"), &fields, common::empty()),
    )
    .await;
    assert_eq!(many.status, 431);
    assert_eq!(many.json()["error"], "headers_too_large");
    assert_eq!(up.requests(), 0);
}

/// Heads hyper refuses by itself (not HTTP, more than 100 header fields) get the gateway's
/// JSON errors and access-log lines too, like every request it answers.
#[tokio::test]
async fn refused_heads_get_json_errors_and_access_log_lines() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let garbage = common::raw_exchange(gateway.addr(), b"GARBAGE\r\n\r\n");
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.header("content-type"), Some("application/json"));
    assert_eq!(
        garbage.json()["error"],
        "bad_request",
        "{:?}",
        garbage.json()
    );

    let fields: String = (0..101).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let many = common::raw_exchange(
        gateway.addr(),
        format!("GET /many HTTP/1.1\r\nHost: gw.test\r\n{fields}\r\n").as_bytes(),
    );
    assert_eq!(many.status, 431);
    let body = many.json();
    assert_eq!(body["error"], "headers_too_large", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("100 fields"),
        "{body}"
    );
    let many_id = many
        .header("x-request-id")
        .expect("a request id")
        .to_string();
    assert_eq!(body["request_id"], many_id.as_str());

    // Within the limits, a head goes through, and its log line names route and upstream.
    let fields: String = (0..90).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let ok = common::raw_exchange(
        gateway.addr(),
        format!("GET /ok HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n{fields}\r\n")
            .as_bytes(),
    );
    assert_eq!(ok.status, 200);
    let ok_id = ok.header("x-request-id").expect("a request id").to_string();
    assert_eq!(up.requests(), 1);

    let access = |id: &str| {
        gateway
            .log_records()
            .into_iter()
            .find(|r| r["target"] == "wasmgate::access" && r["request_id"] == id)
    };
    assert!(
        eventually(Duration::from_secs(5), || access(&ok_id).is_some()
            && access(&many_id).is_some())
        .await,
        "access-log lines for both; logs:\n{}",
        gateway.logs()
    );
    let line = access(&ok_id).unwrap();
    assert_eq!(
        (
            &line["method"],
            &line["path"],
            &line["route"],
            &line["upstream"],
            &line["status"]
        ),
        (
            &json!("GET"),
            &json!("/ok"),
            &json!("all"),
            &json!("up"),
            &json!(200)
        ),
        "{line}"
    );
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert_eq!(access(&many_id).unwrap()["status"], 431);
}

#[tokio::test]
async fn upstream_connections_are_kept_alive() {
    let up = TestUpstream::start(handler::fixed(200, "ok"));
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let http = client();
    for i in 0..100 {
        let reply = send(
            &http,
            request("GET", &gateway.url(&format!("/k/{i}")), &[], empty()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
    }
    assert_eq!(up.requests(), 100);
    // Measured: 1 connection for 100 sequential requests.
    assert!(
        up.connections() <= 2,
        "{} upstream connections for 100 requests",
        up.connections()
    );
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_proxied_over_http1() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        r#"{}
[[routes]]
name = "all"
prefix = "/"
upstream = "up"

[[routes]]
name = "keep"
prefix = "/keep"
preserve-host = true
upstream = "up"
"#,
        upstream("up", &[up.addr()])
    ));
    let h2 = h2_client();
    let reply = send(
        &h2,
        request("POST", &gateway.url("/two?x=1"), &[], full("hello over h2")),
    )
    .await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    let saw = seen(&reply);
    assert_eq!(saw["version"], "HTTP/1.1");
    assert_eq!(saw["path"], "/two");
    assert_eq!(saw["query"], "x=1");
    assert_eq!(saw["body"], "hello over h2");
    assert_eq!(saw["headers"]["via"], "2 wasmgate");
    assert_eq!(
        saw["headers"]["x-forwarded-host"],
        gateway.addr().to_string(),
        "from :authority"
    );
    assert_eq!(saw["headers"]["host"], up.addr().to_string());

    let kept = seen(&send(&h2, request("GET", &gateway.url("/keep/it"), &[], empty())).await);
    assert_eq!(
        kept["headers"]["host"],
        gateway.addr().to_string(),
        "preserve-host uses :authority"
    );

    // Many streams at once on the one connection.
    let requests = (0..20).map(|i| {
        send(
            &h2,
            request("GET", &gateway.url(&format!("/many/{i}")), &[], empty()),
        )
    });
    for (i, reply) in futures_util::future::join_all(requests)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(seen(&reply)["path"], format!("/many/{i}"));
    }
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let up = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&format!(
        r#"{}
[[routes]]
name = "keep"
prefix = "/keep"
preserve-host = true
upstream = "up"

[[routes]]
name = "default"
prefix = "/default"
upstream = "up"
"#,
        upstream("up", &[up.addr()])
    ));
    let kept = seen(&get_host(&gateway.url("/keep"), "public.example.test").await);
    assert_eq!(kept["headers"]["host"], "public.example.test");
    let replaced = seen(&get_host(&gateway.url("/default"), "public.example.test").await);
    assert_eq!(replaced["headers"]["host"], up.addr().to_string());
    assert_eq!(
        replaced["headers"]["x-forwarded-host"],
        "public.example.test"
    );
}

/// A bare-socket HTTP/1.1 upstream: answers every request head with `200 ok` and either
/// keeps the connection or closes it right after the answer (without `Connection: close`,
/// as an upstream whose keep-alive timeout fired would). Returns its address, the number
/// of connections accepted and the moments it saw a connection closed by the gateway.
fn bare_upstream(
    close_after_each_answer: bool,
) -> (
    SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
) {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed_by_peer = Arc::new(Mutex::new(Vec::new()));
    let (accepted_seen, closed_seen) = (accepted.clone(), closed_by_peer.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            accepted_seen.fetch_add(1, Ordering::SeqCst);
            let closed_seen = closed_seen.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    match stream.read(&mut byte) {
                        Ok(0) | Err(_) => {
                            closed_seen.lock().unwrap().push(Instant::now());
                            return;
                        }
                        Ok(_) => head.push(byte[0]),
                    }
                    if head.ends_with(b"\r\n\r\n") {
                        head.clear();
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).is_err() || close_after_each_answer {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted, closed_by_peer)
}

#[tokio::test]
async fn an_upstream_closing_kept_connections_costs_no_request() {
    let (addr, accepted, _) = bare_upstream(true);
    let gateway = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[addr])
    ));
    let http = client();
    for i in 0..30 {
        // Some requests come right after the previous answer, some after the close.
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let reply = send(
            &http,
            request(method, &gateway.url(&format!("/c/{i}")), &[], full("x")),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "ok");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        30,
        "one connection per answer"
    );
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_upstream_idle_timeout() {
    let (addr, accepted, closed_by_gateway) = bare_upstream(false);
    let gateway = TestGateway::start(&format!(
        "[upstreams.up]\ntargets = [\"{addr}\"]\nidle-timeout = \"600ms\"\n\n\
         [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n"
    ));
    let http = client();
    for _ in 0..3 {
        let reply = send(&http, request("GET", &gateway.url("/idle"), &[], empty())).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let answered = Instant::now();
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        common::wait_until(Duration::from_secs(5), || !closed_by_gateway
            .lock()
            .unwrap()
            .is_empty()),
        "the gateway kept an idle upstream connection open past its idle timeout"
    );
    let closed_after = closed_by_gateway.lock().unwrap()[0] - answered;
    // Measured: closed about 600ms after the last answer.
    assert!(
        closed_after >= Duration::from_millis(550),
        "closed after {closed_after:?}, before the idle timeout"
    );
    assert!(
        closed_after < Duration::from_millis(950),
        "closed after {closed_after:?}, well past the idle timeout"
    );
}

/// An answer sent while the client is still sending the body (the limit passed midway) is not
/// destroyed by a reset: the gateway reads and drops the rest of the body before it closes
/// (a lingering close), so the client finishes writing and reads the 413.
#[test]
fn a_413_sent_midway_survives_the_rest_of_the_body() {
    let up = TestUpstream::start(handler::sink);
    let gateway = TestGateway::start(&format!(
        "[server]\nmax-body-bytes = \"1MiB\"\n\n{}[[routes]]\nname = \"big\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream("up", &[up.addr()])
    ));
    let chunk = vec![b'x'; 4 << 20];
    for _ in 0..3 {
        let mut stream = common::raw_connect(gateway.addr());
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n400000\r\n")
            .expect("writing the head");
        // 4 MiB, of which the gateway reads 1 MiB before it answers: the rest is written
        // while (and after) the 413 goes out.
        stream.write_all(&chunk).expect("writing the whole body");
        stream
            .write_all(b"\r\n0\r\n\r\n")
            .expect("writing the last chunk");
        let answer = common::RawResponse::read_from(&mut stream).expect("the answer, not a reset");
        assert_eq!(answer.status, 413);
    }
}
