//! HTTP/JSON → gRPC transcoding through the real gateway, against a real gRPC server: the
//! bookstore service of `tests/transcode/peer.py` (Python, PyPI `grpcio`), reached over h2c.
//! Each test drives the gateway with an HTTP/1.1 client and checks bodies and statuses:
//! path templates, query parameters, bodies, `response_body`, error mapping with details,
//! server streaming (NDJSON and SSE, message by message), and the hot reload of the
//! `.proto` file.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::json;

use common::{TempDir, TestGateway, client, empty, full, request, send};

/// The directory of the bookstore `.proto` and peer.
fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/transcode")
}

/// The tools venv's Python, with grpcio.
fn python() -> PathBuf {
    common::tools_python(
        "grpc, grpc_tools, grpc_status",
        "grpcio==1.76.0 grpcio-tools==1.76.0 grpcio-status==1.76.0",
    )
}

/// The bookstore gRPC server, killed on drop.
struct Bookstore {
    child: Child,
    port: u16,
}

impl Bookstore {
    /// Starts the server on the `.proto` in `proto_dir` and waits for its port.
    fn start(proto_dir: &Path) -> Self {
        let mut child = Command::new(python())
            .arg(peer_dir().join("peer.py"))
            .arg(proto_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the bookstore peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("PORT ") {
                    let _ = tx.send(port.trim().parse::<u16>().expect("a port"));
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the bookstore peer did not print its port within 60s");
        Self { child, port }
    }
}

impl Drop for Bookstore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway config with one transcoding route for the bookstore at `proto`.
fn config(port: u16, proto: &Path, extra: &str) -> String {
    format!(
        r#"
[upstreams.bookstore]
targets = ["127.0.0.1:{port}"]
protocol = "h2c"

[[routes]]
name = "bookstore"
prefix = "/v1"
transcode = {{ upstream = "bookstore", protos = ["{}"]{extra} }}

[[routes]]
name = "bookstore-v2"
prefix = "/v2"
transcode = {{ upstream = "bookstore", protos = ["{}"] }}
"#,
        proto.display(),
        proto.display()
    )
}

/// The bookstore and a gateway in front of it, on the repository's `.proto`.
fn start() -> (Bookstore, TestGateway) {
    let bookstore = Bookstore::start(&peer_dir());
    let gateway = TestGateway::start(&config(
        bookstore.port,
        &peer_dir().join("bookstore.proto"),
        "",
    ));
    (bookstore, gateway)
}

async fn call(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> common::Reply {
    let body = body.map_or_else(empty, |b| full(b.to_string()));
    send(
        &client(),
        request(
            method,
            &gateway.url(path),
            &[("content-type", "application/json")],
            body,
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_methods_map_path_query_and_body() {
    let (_bookstore, gateway) = tokio::task::spawn_blocking(start).await.expect("start");

    let shelf = call(&gateway, "GET", "/v1/shelves/1", None).await;
    assert_eq!(shelf.status, 200, "{}", shelf.text());
    assert_eq!(shelf.header("content-type"), Some("application/json"));
    assert_eq!(
        shelf.json(),
        json!({"id": "1", "theme": "Fiction", "bookCount": 2})
    );
    // The server's own response metadata comes along; gRPC's does not.
    assert_eq!(shelf.header("x-shelf-source"), Some("memory"));
    assert_eq!(shelf.header("grpc-status"), Some("0"));
    assert_eq!(shelf.header("grpc-encoding"), None);

    // Nested and repeated query parameters, by `.proto` or JSON name.
    let listed = call(
        &gateway,
        "GET",
        "/v1/shelves?filter.theme=Fiction&ids=1&ids=2&ids=3",
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(
        listed.json(),
        json!({"shelves": [
            {"id": "1", "theme": "Fiction", "bookCount": 2},
            {"id": "3", "theme": "Fiction", "bookCount": 5},
        ]})
    );
    let listed = call(
        &gateway,
        "GET",
        "/v1/shelves?filter.minBooks=3&page_size=1",
        None,
    )
    .await;
    assert_eq!(
        listed.json(),
        json!({"shelves": [{"id": "3", "theme": "Fiction", "bookCount": 5}]})
    );

    // `body: "*"`, with camelCase input.
    let created = call(
        &gateway,
        "POST",
        "/v1/shelves",
        Some(r#"{"theme": "Poetry", "bookCount": 4}"#),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(
        created.json(),
        json!({"id": "100", "theme": "Poetry", "bookCount": 4})
    );
    let created = call(
        &gateway,
        "POST",
        "/v1/shelves",
        Some(r#"{"theme": "Plays", "book_count": 1, "id": "7"}"#),
    )
    .await;
    assert_eq!(
        created.json(),
        json!({"id": "7", "theme": "Plays", "bookCount": 1})
    );

    // `body: "book"`, with the shelf from the path.
    let book = call(
        &gateway,
        "POST",
        "/v1/shelves/3/books",
        Some(r#"{"title": "Dune", "author": "Herbert", "pages": 412}"#),
    )
    .await;
    assert_eq!(book.status, 200, "{}", book.text());
    assert_eq!(
        book.json(),
        json!({"name": "shelves/3/books/dune", "title": "Dune", "author": "Herbert", "pages": 412})
    );

    // A multi-segment variable, and the method's additional binding (`**`).
    let book = call(&gateway, "GET", "/v1/shelves/1/books/2", None).await;
    assert_eq!(book.json()["name"], "shelves/1/books/2", "{}", book.text());
    let book = call(&gateway, "GET", "/v1/books/a/b%20c/d", None).await;
    assert_eq!(book.json()["name"], "a/b c/d", "{}", book.text());

    // A custom verb.
    let cleared = call(&gateway, "POST", "/v1/shelves/3:clear", None).await;
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    assert_eq!(cleared.json(), json!({"id": "3", "theme": "Fiction"}));

    // `response_body`: the field alone.
    let theme = call(&gateway, "GET", "/v1/shelves/2/theme", None).await;
    assert_eq!(theme.json(), json!("History"), "{}", theme.text());

    // An empty response message.
    let deleted = call(&gateway, "DELETE", "/v1/shelves/2", None).await;
    assert_eq!((deleted.status.as_u16(), deleted.json()), (200, json!({})));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_become_status_json_with_details_and_bad_requests_are_400s() {
    let (_bookstore, gateway) = tokio::task::spawn_blocking(start).await.expect("start");

    // NOT_FOUND from the server (a trailers-only answer), with its details decoded.
    let missing = call(&gateway, "GET", "/v1/shelves/9", None).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.header("grpc-status"), Some("5"));
    assert_eq!(
        missing.json(),
        json!({
            "code": 5,
            "message": "shelf 9 not found",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SHELF_NOT_FOUND",
                    "domain": "bookstore.test",
                    "metadata": {"shelf": "shelf 9"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "shelf", "description": "no such shelf"}],
                },
            ],
        })
    );

    // The same status arriving in trailers, after the response headers.
    let in_trailers = call(&gateway, "GET", "/v1/shelves/8", None).await;
    assert_eq!(in_trailers.status, 404, "{}", in_trailers.text());
    assert_eq!(in_trailers.json()["message"], "shelf 8 not found");
    assert_eq!(
        in_trailers.json()["details"][0]["reason"],
        "SHELF_NOT_FOUND",
        "{}",
        in_trailers.text()
    );

    // Bad JSON: a wrong type, an unknown field, not JSON at all; each names what is wrong.
    let wrong_type = call(&gateway, "POST", "/v1/shelves", Some(r#"{"theme": 5}"#)).await;
    assert_eq!(wrong_type.status, 400, "{}", wrong_type.text());
    let message = wrong_type.json()["message"]
        .as_str()
        .expect("a message")
        .to_string();
    assert!(message.contains("`theme`"), "{message}");
    let unknown = call(
        &gateway,
        "POST",
        "/v1/shelves",
        Some(r#"{"colour": "red"}"#),
    )
    .await;
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    assert!(unknown.text().contains("colour"), "{}", unknown.text());
    let nested = call(
        &gateway,
        "POST",
        "/v1/shelves/1/books",
        Some(r#"{"pages": "many"}"#),
    )
    .await;
    assert_eq!(nested.status, 400, "{}", nested.text());
    assert!(nested.text().contains("book.pages"), "{}", nested.text());
    let garbage = call(&gateway, "POST", "/v1/shelves", Some("{not json")).await;
    assert_eq!(garbage.status, 400, "{}", garbage.text());
    // A body larger than one message may be (4 MiB).
    let huge = format!(r#"{{"theme": "{}"}}"#, "x".repeat(5 << 20));
    let huge = call(&gateway, "POST", "/v1/shelves", Some(&huge)).await;
    assert_eq!(huge.status, 413, "{}", huge.text());

    // Query parameters the request message has no field for.
    let unknown = call(&gateway, "GET", "/v1/shelves?colour=red", None).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    assert!(
        unknown.json()["message"]
            .as_str()
            .expect("a message")
            .contains("`colour`")
    );
    let bad_value = call(&gateway, "GET", "/v1/shelves?page_size=ten", None).await;
    assert_eq!(bad_value.status, 400, "{}", bad_value.text());
    let with_star_body = call(&gateway, "POST", "/v1/shelves?theme=x", Some("{}")).await;
    assert_eq!(with_star_body.status, 400, "{}", with_star_body.text());

    // A path the route matches but no binding does: 404 naming what it serves.
    let nothing = call(&gateway, "GET", "/v1/nothing/here", None).await;
    assert_eq!(nothing.status, 404, "{}", nothing.text());
    let message = nothing.json()["message"]
        .as_str()
        .expect("a message")
        .to_string();
    assert!(message.contains("GET /v1/shelves/{shelf}"), "{message}");
    // A bound path with another method: 405 with Allow.
    let wrong_method = call(&gateway, "PUT", "/v1/shelves", None).await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text());
    let allow = wrong_method.header("allow").unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    // The access log has the call's gRPC status.
    let logged = common::eventually(Duration::from_secs(5), || {
        gateway.log_records().iter().any(|r| {
            r["message"] == "request" && r["path"] == "/v1/shelves/9" && r["grpc_status"] == 5
        })
    })
    .await;
    assert!(
        logged,
        "no access log line with grpc_status 5:\n{}",
        gateway.logs()
    );
}

/// Reads a streaming body one frame at a time until `until` is in what arrived.
async fn read_until(body: &mut hyper::body::Incoming, got: &mut String, until: &str) {
    let wait = async {
        while !got.contains(until) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                Some(Err(error)) => panic!("the stream failed: {error}; so far: {got}"),
                None => panic!("the stream ended before {until:?}; got: {got}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("{until:?} did not arrive within 20s; got: {got}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_streaming_is_ndjson_or_sse_message_by_message() {
    let (_bookstore, gateway) = tokio::task::spawn_blocking(start).await.expect("start");

    let ndjson = call(&gateway, "GET", "/v1/shelves/2/books:stream?count=3", None).await;
    assert_eq!(ndjson.status, 200);
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = ndjson
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"name": "shelves/2/books/0", "title": "Book 0"}),
            json!({"name": "shelves/2/books/1", "title": "Book 1", "pages": 1}),
            json!({"name": "shelves/2/books/2", "title": "Book 2", "pages": 2}),
        ]
    );

    // SSE by the client's Accept; an error after the first messages ends the stream.
    let sse = send(
        &client(),
        request(
            "GET",
            &gateway.url("/v1/shelves/2/books:stream?count=5&failAfter=2"),
            &[("accept", "text/event-stream")],
            empty(),
        ),
    )
    .await;
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        sse.text(),
        "data: {\"name\":\"shelves/2/books/0\",\"title\":\"Book 0\"}\n\n\
         data: {\"name\":\"shelves/2/books/1\",\"title\":\"Book 1\",\"pages\":1}\n\n\
         event: error\ndata: {\"code\":8,\"details\":[],\"message\":\"no more books today\"}\n\n"
    );
    // An error before the first message has its own HTTP status.
    let missing = call(&gateway, "GET", "/v1/shelves/9/books:stream?count=2", None).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["code"], 5);
    let empty_stream = call(&gateway, "GET", "/v1/shelves/2/books:stream?count=0", None).await;
    assert_eq!(
        (empty_stream.status.as_u16(), empty_stream.text()),
        (200, String::new())
    );
    let failing = call(
        &gateway,
        "GET",
        "/v1/shelves/2/books:stream?count=5&fail_after=1",
        None,
    )
    .await;
    let last = failing
        .text()
        .lines()
        .last()
        .map(str::to_string)
        .unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&last).expect("JSON"),
        json!({"error": {"code": 8, "message": "no more books today", "details": []}})
    );

    // Message by message: the first book arrives while the server holds the second back
    // until the test releases it.
    let response = client()
        .request(request(
            "GET",
            &gateway.url("/v1/shelves/1/books:stream?count=2&hold=true"),
            &[],
            empty(),
        ))
        .await
        .expect("the streaming call");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, "Book 0\"}\n").await;
    assert!(!got.contains("Book 1"), "{got}");
    let released = call(&gateway, "POST", "/v1/release", None).await;
    assert_eq!(released.status, 200, "{}", released.text());
    read_until(&mut body, &mut got, "\"Book 1\",\"pages\":1}\n").await;
    assert!(body.frame().await.is_none_or(|frame| frame.is_ok()));
}

/// The `.proto` with `GetShelf` also bound to `extra` (a second `get`).
fn proto_with_binding(extra: &str) -> String {
    let original = std::fs::read_to_string(peer_dir().join("bookstore.proto")).expect("the proto");
    let old = r#"option (google.api.http) = { get: "/v1/shelves/{shelf}" };"#;
    assert!(original.contains(old));
    original.replace(
        old,
        &format!(
            r#"option (google.api.http) = {{ get: "/v1/shelves/{{shelf}}" additional_bindings {{ get: "{extra}" }} }};"#
        ),
    )
}

fn count(logs: &str, needle: &str) -> usize {
    logs.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_proto_is_recompiled_and_a_broken_one_keeps_the_last_good() {
    let protos = TempDir::new();
    let proto = protos.path().join("bookstore.proto");
    std::fs::write(
        &proto,
        std::fs::read(peer_dir().join("bookstore.proto")).expect("the proto"),
    )
    .expect("copying the proto");
    let bookstore_port = {
        let dir = protos.path().to_path_buf();
        tokio::task::spawn_blocking(move || Bookstore::start(&dir))
            .await
            .expect("peer")
    };
    let config = config(bookstore_port.port, &proto, "");
    let gateway = tokio::task::spawn_blocking(move || TestGateway::start(&config))
        .await
        .expect("gateway");
    assert_eq!(
        call(&gateway, "GET", "/v2/shelves/1", None).await.status,
        404
    );

    // A new binding: served once the file is recompiled.
    let reloads = count(&gateway.logs(), "config reloaded");
    std::fs::write(&proto, proto_with_binding("/v2/shelves/{shelf}")).expect("editing the proto");
    assert!(
        common::eventually(Duration::from_secs(20), || count(
            &gateway.logs(),
            "config reloaded"
        ) > reloads)
        .await,
        "no reload; logs:\n{}",
        gateway.logs()
    );
    let shelf = call(&gateway, "GET", "/v2/shelves/1", None).await;
    assert_eq!(shelf.status, 200, "{}", shelf.text());
    assert_eq!(shelf.json()["theme"], "Fiction");

    // A syntax error: rejected, logged at its line, and the last good version keeps serving.
    let rejected = count(&gateway.logs(), "config rejected");
    let broken = proto_with_binding("/v2/shelves/{shelf}")
        .replace("int32 book_count = 3;", "int32 book_count = 3");
    std::fs::write(&proto, broken).expect("breaking the proto");
    assert!(
        common::eventually(Duration::from_secs(20), || count(
            &gateway.logs(),
            "config rejected"
        ) > rejected)
        .await,
        "no rejection; logs:\n{}",
        gateway.logs()
    );
    let logs = gateway.logs();
    let line = std::fs::read_to_string(&proto)
        .expect("the proto")
        .lines()
        .position(|l| l.contains("int32 book_count = 3"))
        .expect("the broken line")
        + 1;
    let (shown, next) = (
        format!("bookstore.proto:{line}:"),
        format!("bookstore.proto:{}:", line + 1),
    );
    assert!(
        logs.contains(&shown) || logs.contains(&next),
        "no {shown} in the logs:\n{logs}"
    );
    let shelf = call(&gateway, "GET", "/v2/shelves/1", None).await;
    assert_eq!(shelf.status, 200, "{}", shelf.text());
    let shelf = call(&gateway, "GET", "/v1/shelves/3", None).await;
    assert_eq!(shelf.json()["bookCount"], 5);
}

#[test]
fn check_names_proto_file_and_line_and_unknown_services() {
    let protos = TempDir::new();
    let proto = protos.path().join("shop.proto");
    std::fs::write(
        &proto,
        "syntax = \"proto3\";\npackage shop;\nmessage Item {\n  string name = 1;\n  Price price = 2;\n}\nservice Shop { rpc Get(Item) returns (Item); }\n",
    )
    .expect("writing the proto");
    let toml = format!(
        r#"
[upstreams.shop]
targets = ["127.0.0.1:1"]
protocol = "h2c"

[[routes]]
name = "shop"
prefix = "/shop"
transcode = {{ upstream = "shop", protos = ["{}"] }}
"#,
        proto.display()
    );
    let output = common::check(&toml);
    assert_eq!(output.code, Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains(&format!(
            "{}:5:3: routes[0].transcode.protos:",
            proto.display()
        )),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains("Price"), "{}", output.stderr);

    std::fs::write(
        &proto,
        "syntax = \"proto3\";\npackage shop;\nmessage Item { string name = 1; }\nservice Shop { rpc Get(Item) returns (Item); }\n",
    )
    .expect("writing the proto");
    let toml = toml.replace(
        "protos = [",
        "services = [\"shop.Shop\", \"shop.Shop.Missing\", \"shop.Nope\"], protos = [",
    );
    let output = common::check(&toml);
    assert_eq!(output.code, Some(1), "{}", output.stderr);
    for expected in [
        "service `shop.Shop` has no method with a `google.api.http` option",
        "`shop.Shop.Missing` is neither a service nor a method",
        "`shop.Nope` is neither a service nor a method",
    ] {
        assert!(
            output.stderr.contains(expected),
            "{expected}: {}",
            output.stderr
        );
    }
}

#[test]
fn the_upstream_of_a_transcode_route_must_speak_http2() {
    let toml = format!(
        r#"
[upstreams.plain]
targets = ["127.0.0.1:1"]

[[routes]]
name = "shop"
prefix = "/v1"
transcode = {{ upstream = "plain", protos = ["{}"] }}
"#,
        peer_dir().join("bookstore.proto").display()
    );
    let output = common::check(&toml);
    assert_eq!(output.code, Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains("routes[0].transcode.upstream"),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains("h2c"), "{}", output.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn stages_run_around_the_transcoder() {
    let bookstore = tokio::task::spawn_blocking(|| Bookstore::start(&peer_dir()))
        .await
        .expect("peer");
    let toml = format!(
        r#"
[upstreams.bookstore]
targets = ["127.0.0.1:{}"]
protocol = "h2c"

[[routes]]
name = "bookstore"
prefix = "/v1"
compress = {{ min-bytes = 0, encodings = ["gzip"] }}
transcode = {{ upstream = "bookstore", protos = ["{}"], emit-defaults = true, proto-field-names = true }}
"#,
        bookstore.port,
        peer_dir().join("bookstore.proto").display()
    );
    let gateway = tokio::task::spawn_blocking(move || TestGateway::start(&toml))
        .await
        .expect("gateway");
    let reply = send(
        &client(),
        request(
            "GET",
            &gateway.url("/v1/shelves/2"),
            &[("accept-encoding", "gzip")],
            empty(),
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(reply.body.as_ref()),
        &mut text,
    )
    .expect("gzip");
    // `.proto` names, and the zero count written out.
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON"),
        json!({"id": "2", "theme": "History", "book_count": 0})
    );
}
