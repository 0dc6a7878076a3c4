//! gRPC and gRPC-Web through the real binary, against a Python `grpcio` server and client
//! (`tests/grpc/peer.py`) over an `h2c` upstream: every call kind streams frame by frame
//! with its trailers; the server's statuses and details reach the client; the errors the
//! gateway makes (no route, a refusing stage, an upstream down, a deadline) reach gRPC
//! clients as gRPC statuses; `grpc-timeout` bounds the upstream call; gRPC-Web clients
//! (sonora's, and base64 `-text` frames) reach the same server; the access log records the
//! gRPC status.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{TestGateway, client, closed_addr, full, h2_client, request, send};
use serde_json::Value;

const FX_AUTH: &str = wasmgate_fixtures::FX_AUTH_HEADER;

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/grpc/peer.py")
}

/// The tools venv's Python, with the gRPC test peers.
fn python() -> PathBuf {
    common::tools_python(
        "grpc, grpc_tools, grpc_status, grpc_health, sonora",
        "grpcio==1.76.0 grpcio-tools==1.76.0 grpcio-status==1.76.0 grpcio-health-checking==1.76.0 sonora==0.2.3",
    )
}

/// The Python gRPC server (Echo and grpc.health.v1), on a free port; killed when dropped.
pub struct GrpcServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pub addr: SocketAddr,
}

impl GrpcServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Over TLS with this certificate and key (PEM files).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(&[cert.as_os_str(), key.as_os_str()])
    }

    fn start_with(args: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(python())
            .arg(peer_script())
            .arg("server")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the Python gRPC server");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .expect("the server's first line")
            .expect("reading it");
        let port: u16 = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected `PORT n`, got {first:?}"));
        Self {
            child,
            stdin,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Sets the Echo service's health (`serving` or `not-serving`), once the server says so.
    pub fn set_health(&mut self, state: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{state}").expect("writing to the server");
        stdin.flush().expect("flushing");
        let line = self.lines.next().expect("an answer").expect("reading it");
        assert_eq!(line, format!("HEALTH {state}"));
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one scenario of the Python client against `addr` (`client`) or a gRPC-Web URL
/// (`web`), with `metadata` (`k=v,…`) on every call.
fn peer(mode: &str, target: &str, case: &str, metadata: &str) -> Value {
    let output = Command::new(python())
        .arg(peer_script())
        .args([mode, target, case])
        .env("GRPC_METADATA", metadata)
        .output()
        .expect("running the Python gRPC client");
    assert!(
        output.status.success(),
        "{mode} {case} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{case}: {e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn grpc_gateway(upstream: SocketAddr, stages: &str, extra: &str) -> TestGateway {
    let stages = if stages.is_empty() {
        String::new()
    } else {
        format!("stages = [{stages}]")
    };
    TestGateway::start_with_plugins(
        &format!(
            r#"
[upstreams.echo]
targets = ["{upstream}"]
protocol = "h2c"
{extra}

[[routes]]
name = "echo"
prefix = "/wasmgate.test.Echo"
upstream = "echo"
{stages}
"#
        ),
        &[("auth", std::path::Path::new(FX_AUTH))],
    )
}

/// The access-log records of requests to `path`.
fn access(gateway: &TestGateway, path: &str) -> Vec<Value> {
    gateway
        .log_records()
        .into_iter()
        .filter(|r| r["target"] == "wasmgate::access" && r["path"] == path)
        .collect()
}

#[test]
fn grpc_calls_of_every_kind_pass_through_with_trailers() {
    let server = GrpcServer::start();
    let gateway = grpc_gateway(server.addr, "", "");
    let addr = gateway.addr().to_string();
    let run = |case| peer("client", &addr, case, "");

    assert_eq!(run("unary")["ok"], "hello");
    let metadata = run("unary-metadata")["ok"].clone();
    let metadata: Vec<&str> = metadata
        .as_array()
        .expect("metadata")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(metadata.contains(&"x-test=yes"), "{metadata:?}");
    assert!(metadata.contains(&"via=2 wasmgate"), "{metadata:?}");

    let streamed = run("server-stream");
    assert_eq!(streamed["ok"].as_array().expect("messages").len(), 50);
    assert_eq!(streamed["ok"][49], "49:yyyyy");
    assert_eq!(
        run("client-stream")["ok"],
        serde_json::json!([
            "part0,part1,part2,part3,part4,part5,part6,part7,part8,part9,part10,part11,part12,part13,part14,part15,part16,part17,part18,part19",
            110
        ])
    );
    // Each answer is read before the next request is sent: frames cross one by one.
    assert_eq!(
        run("bidi")["ok"],
        serde_json::json!([
            "echo:m0", "echo:m1", "echo:m2", "echo:m3", "echo:m4", "echo:m5", "echo:m6", "echo:m7",
            "echo:m8", "echo:m9"
        ])
    );
    // 16 MiB each way, and 8 streamed messages of 2 MiB (plus their "n:" prefixes).
    assert_eq!(
        run("large")["ok"],
        serde_json::json!([16 << 20, 8 * (2 << 20) + 16])
    );

    // The server's status, message and details (grpc-status-details-bin) reach the client,
    // also after messages of a stream.
    let details = run("details");
    assert_eq!(details["code"], "NOT_FOUND");
    assert_eq!(details["message"], "failed as asked (5)");
    assert_eq!(
        details["details"],
        serde_json::json!(["type.googleapis.com/google.rpc.ErrorInfo"])
    );
    let failed = run("server-stream-fail");
    assert_eq!(failed["code"], "FAILED_PRECONDITION");
    assert_eq!(
        failed["details"],
        serde_json::json!(["type.googleapis.com/google.rpc.ErrorInfo"])
    );

    let unary = access(&gateway, "/wasmgate.test.Echo/Unary");
    let statuses: Vec<i64> = unary
        .iter()
        .filter_map(|r| r["grpc_status"].as_i64())
        .collect();
    assert!(statuses.contains(&0), "{unary:?}");
    assert!(statuses.contains(&5), "{unary:?}");
    let stream = access(&gateway, "/wasmgate.test.Echo/ServerStream");
    assert!(
        stream.iter().any(|r| r["grpc_status"] == 9),
        "the status in a stream's trailers is logged: {stream:?}"
    );
}

#[test]
fn errors_the_gateway_makes_reach_grpc_clients_as_grpc_statuses() {
    let server = GrpcServer::start();
    let stages = r#"{ plugin = "auth", config = {} }"#;
    let gateway = grpc_gateway(server.addr, stages, "");
    let addr = gateway.addr().to_string();

    // A refusing auth stage: its 401 becomes UNAUTHENTICATED.
    let refused = peer("client", &addr, "unary", "");
    assert_eq!(refused["code"], "UNAUTHENTICATED", "{refused}");
    assert_eq!(refused["message"], "unauthorized");
    assert_eq!(
        peer("client", &addr, "unary", "x-user=alice")["ok"],
        "hello"
    );
    // No route: UNIMPLEMENTED, naming the path.
    let unrouted = peer("client", &addr, "health", "");
    assert_eq!(unrouted["code"], "UNIMPLEMENTED");
    assert!(
        unrouted["message"]
            .as_str()
            .unwrap()
            .contains("/grpc.health.v1.Health/Check"),
        "{unrouted}"
    );
    drop(gateway);

    // An upstream that is down: UNAVAILABLE naming it.
    let down = grpc_gateway(closed_addr(), "", "");
    let unavailable = peer("client", &down.addr().to_string(), "unary", "");
    assert_eq!(unavailable["code"], "UNAVAILABLE", "{unavailable}");
    assert!(
        unavailable["message"].as_str().unwrap().contains("`echo`"),
        "{unavailable}"
    );
    let logged = access(&down, "/wasmgate.test.Echo/Unary");
    assert_eq!(logged[0]["grpc_status"], 14, "{logged:?}");
}

/// A client's `grpc-timeout` bounds the call even when the route allows far longer: an
/// upstream that accepts and never answers gets DEADLINE_EXCEEDED in the client's time.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_timeout_is_the_deadline_of_the_upstream_call() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let silent_addr = silent.local_addr().unwrap();
    let gateway =
        tokio::task::spawn_blocking(move || grpc_gateway(silent_addr, "", "timeout = \"30s\""))
            .await
            .unwrap();
    let frame = grpc_frame(&echo_request("late"));
    let started = Instant::now();
    let reply = send(
        &h2_client(),
        request(
            "POST",
            &gateway.url("/wasmgate.test.Echo/Unary"),
            &[
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", "300m"),
            ],
            full(frame),
        ),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), Some("4"), "{reply:?}");
    assert!(
        reply.header("grpc-message").unwrap().contains("300ms"),
        "{reply:?}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
    drop(silent);
}

#[test]
fn grpc_web_clients_reach_a_grpc_server() {
    let server = GrpcServer::start();
    let gateway = grpc_gateway(server.addr, "", "");
    let url = format!("http://{}", gateway.addr());

    // sonora's gRPC-Web client (binary frames over HTTP/1.1).
    assert_eq!(peer("web", &url, "unary", "")["ok"], "web");
    assert_eq!(
        peer("web", &url, "server-stream", "")["ok"],
        serde_json::json!(["0:yyyy", "1:yyyy", "2:yyyy", "3:yyyy", "4:yyyy"])
    );
    let denied = peer("web", &url, "details", "");
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");
    assert_eq!(denied["message"], "failed as asked (7)");

    // The base64 `-text` form, in two padded segments.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime.block_on(async {
        let frame = grpc_frame(&echo_request("text mode"));
        let (head, tail) = frame.split_at(4);
        let body = format!("{}{}", STANDARD.encode(head), STANDARD.encode(tail));
        send(
            &client(),
            request(
                "POST",
                &gateway.url("/wasmgate.test.Echo/Unary"),
                &[
                    ("content-type", "application/grpc-web-text+proto"),
                    ("accept", "application/grpc-web-text"),
                    ("x-grpc-web", "1"),
                ],
                full(body),
            ),
        )
        .await
    });
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/grpc-web-text")),
        "{reply:?}"
    );
    let decoded = decode_segments(&reply.body);
    let frames = split_frames(&decoded);
    assert_eq!(frames.len(), 2, "a message and the trailers: {frames:?}");
    assert_eq!(frames[0].0, 0);
    assert!(
        String::from_utf8_lossy(&frames[0].1).contains("text mode"),
        "{frames:?}"
    );
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8_lossy(&frames[1].1).to_string();
    assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers:?}");
}

/// `EchoRequest { text }` in protobuf: field 1, length-delimited.
fn echo_request(text: &str) -> Vec<u8> {
    let mut message = vec![0x0a, text.len() as u8];
    message.extend_from_slice(text.as_bytes());
    message
}

/// One uncompressed gRPC message frame.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// Base64 that may be several padded segments back to back.
fn decode_segments(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for (index, group) in text.chunks(4).enumerate() {
        if group.contains(&b'=') || (index + 1) * 4 >= text.len() {
            out.extend(
                STANDARD
                    .decode(&text[start..(index + 1) * 4])
                    .expect("base64"),
            );
            start = (index + 1) * 4;
        }
    }
    out
}

/// `(flags, payload)` of each gRPC(-Web) frame.
fn split_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        frames.push((bytes[0], bytes[5..5 + len].to_vec()));
        bytes = &bytes[5 + len..];
    }
    frames
}

/// `GET /status` of the admin API: whether each target of the first upstream passes its checks.
async fn checked_healthy(gateway: &TestGateway) -> Vec<bool> {
    let status = common::get(&format!("http://{}/status", gateway.admin_addr()))
        .await
        .json();
    status["upstreams"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["checked_healthy"].as_bool().expect("checked_healthy"))
        .collect()
}

/// Active gRPC health checks (`grpc.health.v1.Health/Check` for a service) take a target that
/// reports NOT_SERVING out of rotation and bring it back when it serves again.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_checks_follow_the_servers_serving_status() {
    let (mut a, b) = tokio::task::spawn_blocking(|| (GrpcServer::start(), GrpcServer::start()))
        .await
        .unwrap();
    let (a_addr, b_addr) = (a.addr, b.addr);
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start(&format!(
            r#"
[admin]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["{a_addr}", "{b_addr}"]
protocol = "h2c"
health-check = {{ kind = "grpc", service = "wasmgate.test.Echo", interval = "100ms", timeout = "1s", healthy-threshold = 1, unhealthy-threshold = 1 }}

[[routes]]
name = "echo"
prefix = "/wasmgate.test.Echo"
upstream = "echo"
"#
        ))
    })
    .await
    .unwrap();
    let until = |want: Vec<bool>| {
        let gateway = &gateway;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let now = checked_healthy(gateway).await;
                if now == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "health stayed {now:?}, wanted {want:?}; logs:\n{}",
                    gateway.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(vec![true, true]).await;
    let a = tokio::task::spawn_blocking(move || {
        a.set_health("not-serving");
        a
    })
    .await
    .unwrap();
    until(vec![false, true]).await;
    // Every call now goes to b, and succeeds.
    let addr = gateway.addr().to_string();
    let answers = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|_| peer("client", &addr, "unary", "")["ok"].clone())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(answers.iter().all(|a| a == "hello"), "{answers:?}");
    let mut a = a;
    // Kept alive until the end: dropping the server stops it.
    let _a = tokio::task::spawn_blocking(move || {
        a.set_health("serving");
        a
    })
    .await
    .unwrap();
    until(vec![true, true]).await;
}

/// `protocol = "h2"`: HTTP/2 over TLS, agreed by ALPN, to a gRPC server with a certificate
/// the upstream's `tls-ca` verifies; a gRPC health check over the same transport.
#[test]
fn h2_over_tls_reaches_a_grpc_server_verified_by_its_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = common::TempDir::new();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let server = GrpcServer::start_tls(&cert, &key);
    let gateway = TestGateway::start(&format!(
        r#"
[upstreams.echo]
targets = ["{addr}"]
tls = true
tls-ca = {ca:?}
tls-server-name = "localhost"
protocol = "h2"
health-check = {{ kind = "grpc", interval = "200ms" }}

[[routes]]
name = "echo"
prefix = "/wasmgate.test.Echo"
upstream = "echo"
"#,
        addr = server.addr,
        ca = ca.display().to_string(),
    ));
    let addr = gateway.addr().to_string();
    assert_eq!(peer("client", &addr, "unary", "")["ok"], "hello");
    assert_eq!(
        peer("client", &addr, "server-stream", "")["ok"]
            .as_array()
            .map(Vec::len),
        Some(50)
    );
    assert_eq!(peer("client", &addr, "details", "")["code"], "NOT_FOUND");
}

/// A body of one data frame and then trailers.
fn with_trailers(data: &'static str, trailers: http::HeaderMap) -> common::BoxBody {
    use http_body_util::BodyExt as _;
    let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
        Ok(http_body::Frame::data(bytes::Bytes::from_static(
            data.as_bytes(),
        ))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
        .map_err(|never| match never {})
        .boxed()
}

/// Trailers cross an HTTP/2 path end to end: the client's request trailers reach an h2c
/// upstream, and the upstream's response trailers reach the client.
#[tokio::test(flavor = "multi_thread")]
async fn trailers_cross_an_http2_path_both_ways() {
    use http_body_util::BodyExt as _;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let collected = request.into_body().collect().await.expect("request body");
                        let digest = collected
                            .trailers()
                            .and_then(|t| t.get("x-digest").cloned())
                            .unwrap_or_else(|| http::HeaderValue::from_static("none"));
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("x-echo-digest", digest);
                        trailers.insert("x-checksum", http::HeaderValue::from_static("c0ffee"));
                        Ok::<_, std::convert::Infallible>(http::Response::new(with_trailers(
                            "body", trailers,
                        )))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start(&format!(
            "[upstreams.up]\ntargets = [\"{upstream}\"]\nprotocol = \"h2c\"\n\n[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n"
        ))
    })
    .await
    .unwrap();
    let stream = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-digest", http::HeaderValue::from_static("sha-256=abc"));
    let request = http::Request::post(gateway.url("/t"))
        .header("te", "trailers")
        .header("trailer", "x-digest")
        .body(with_trailers("payload", trailers))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(collected.to_bytes(), "body");
    assert_eq!(trailers["x-echo-digest"], "sha-256=abc");
    assert_eq!(trailers["x-checksum"], "c0ffee");
}

/// `plugins/cors.wasm` (the C++ CORS plugin, built by `scripts/build-polyglot.sh`).
fn cors_plugin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/cors.wasm");
    assert!(
        path.is_file(),
        "{} is missing: build the non-Rust plugins first with `scripts/build-polyglot.sh`",
        path.display()
    );
    path
}

/// A browser's CORS preflight for a gRPC-Web call is answered by the route's CORS stage (it is
/// a plain OPTIONS request, not translated), and the gRPC-Web answer carries the CORS headers
/// that let the page read `grpc-status`.
#[test]
fn grpc_web_cors_preflights_run_through_the_route_stages() {
    let server = GrpcServer::start();
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("grpc-wasm-cache");
    let cors = cors_plugin();
    let gateway = TestGateway::start_with_plugins(
        &format!(
            r#"
[plugins]
dir = "plugins"
cache-dir = {cache:?}
watch = false

[upstreams.echo]
targets = ["{upstream}"]
protocol = "h2c"

[[routes]]
name = "echo"
prefix = "/wasmgate.test.Echo"
upstream = "echo"
stages = [{{ plugin = "cors", limits = {{ memory = "64MiB", deadline = "5s" }}, config = {{ allow-origins = ["https://app.example.com"], allow-methods = ["POST"], allow-headers = ["content-type", "x-grpc-web", "x-user-agent"], expose-headers = ["grpc-status", "grpc-message"], max-age = 600 }} }}]
"#,
            cache = cache.display().to_string(),
            upstream = server.addr,
        ),
        &[("cors", cors.as_path())],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = gateway.url("/wasmgate.test.Echo/Unary");
    let preflight = runtime.block_on(send(
        &client(),
        request(
            "OPTIONS",
            &url,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type,x-grpc-web"),
            ],
            common::empty(),
        ),
    ));
    assert_eq!(preflight.status, 204, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let frame = grpc_frame(&echo_request("from a page"));
    let call = runtime.block_on(send(
        &client(),
        request(
            "POST",
            &url,
            &[
                ("origin", "https://app.example.com"),
                ("content-type", "application/grpc-web-text"),
                ("x-grpc-web", "1"),
            ],
            full(STANDARD.encode(frame)),
        ),
    ));
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(
        call.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        call.header("access-control-expose-headers")
            .is_some_and(|h| h.contains("grpc-status")),
        "{call:?}"
    );
    let frames = split_frames(&decode_segments(&call.body));
    assert!(
        String::from_utf8_lossy(&frames[0].1).contains("from a page"),
        "{frames:?}"
    );
}

/// An HTTP/2 upstream connection is shared by the requests of a worker, and closed once it
/// has carried no stream for the upstream's `idle-timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn http2_upstream_connections_are_shared_and_closed_when_idle() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("ok")))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start(&format!(
            "[upstreams.up]\ntargets = [\"{upstream}\"]\nprotocol = \"h2c\"\nidle-timeout = \"1s\"\n\n[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n"
        ))
    })
    .await
    .unwrap();
    // One client connection: every request is served by the same worker.
    let client = h2_client();
    let get = || {
        send(
            &client,
            request("GET", &gateway.url("/x"), &[], common::empty()),
        )
    };
    for _ in 0..3 {
        assert_eq!(get().await.text(), "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one shared connection");
    // Idleness is the behaviour under test: wait out the idle timeout.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get().await.text(), "ok");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the idle connection was closed and a new one opened"
    );
}
