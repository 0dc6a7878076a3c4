//! Response compression and request decompression, black-box: the real `wasmgate` binary,
//! a real loopback upstream, the real `fx-transform` fixture, and nginx (`gzip on`) as the
//! reference for sizes.
//!
//! Covered: `Accept-Encoding` negotiation (q-values, `*`, `identity`, nothing acceptable),
//! every coding decoding to the upstream's bytes, what is left alone (small bodies,
//! encoded ones, `no-transform`, images, `HEAD`, 204, 304), `Vary` and weak `ETag`s, a
//! 100 MiB response in bounded memory, a trickling response flushed as it comes, request
//! bodies decoded for a buffering stage, a decompression bomb stopped at the stage's cap,
//! gzip output the size of nginx's, and the positions of configured stages next to it.

mod common;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_compression::tokio::bufread::{
    BrotliDecoder, BrotliEncoder, GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder,
};
use bytes::Bytes;
use common::{Reply, TestGateway, TestUpstream, client, empty, full, request, send};
use futures_util::TryStreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::StreamReader;
use wasmgate_fixtures as fx;

/// Compiled plugins are cached here across the gateways these tests start.
const PLUGIN_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/compress-plugin-cache");

/// 100 MiB, for the memory test.
const HUGE: u64 = 100 << 20;

/// The most the gateway's RSS may grow while it compresses 100 MiB. A streaming encoder
/// holds its window and a few chunks (well under 1 MiB per response); buffering the body
/// would take 100 MiB.
const MAX_GROWTH_KIB: u64 = 40 << 10;

/// Byte `i` of the huge body is `i % PERIOD` (as the harness's generated bodies).
const PERIOD: u64 = 251;

/// A JSON array of `records` API-like records: what a JSON API answers, compressible as
/// such answers are. The same bytes every time.
fn json_body(records: usize) -> Bytes {
    let plans = ["free", "pro", "team", "enterprise"];
    let items: Vec<String> = (0..records)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"user-{i}","email":"user{i}@example.com","plan":"{}","score":{},"active":{},"created":"2026-{:02}-{:02}T{:02}:{:02}:00Z"}}"#,
                plans[i % plans.len()],
                (i * 7919) % 1000,
                i % 3 == 0,
                1 + i % 12,
                1 + (i * 7) % 28,
                (i * 13) % 24,
                (i * 17) % 60,
            )
        })
        .collect();
    Bytes::from(format!("[{}]", items.join(",")))
}

/// The `records` query parameter of `/json?records=N` (100 by default).
fn records_of(request: &Request<Incoming>) -> usize {
    request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("records="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
}

fn answer(
    status: u16,
    headers: &[(&str, &str)],
    body: common::BoxBody,
) -> Response<common::BoxBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).expect("a status");
    for (name, value) in headers {
        response.headers_mut().append(
            header::HeaderName::from_bytes(name.as_bytes()).expect("a name"),
            value.parse().expect("a value"),
        );
    }
    response
}

/// The upstream every test talks to, by path:
///
/// - `/json?records=N`: JSON, with `ETag: "v1"` and `Accept-Ranges: bytes`;
/// - `/png`, `/encoded` (already gzip), `/no-transform`: 4 KiB each, not to be compressed;
/// - `/status/204`, `/status/304`: no body, `ETag: "v1"`;
/// - `/huge`: 100 MiB of text made on the fly; `/warm`: 1 MiB of it;
/// - `/trickle`: an event stream whose second event waits for `release`;
/// - anything else: the echo handler (the request as received, as JSON).
fn upstream(release: Arc<tokio::sync::Notify>) -> TestUpstream {
    TestUpstream::start(move |request: Request<Incoming>| {
        let release = release.clone();
        async move {
            let filler = || full(vec![b'x'; 4096]);
            match request.uri().path() {
                "/json" => answer(
                    200,
                    &[
                        ("content-type", "application/json"),
                        ("etag", "\"v1\""),
                        ("accept-ranges", "bytes"),
                    ],
                    full(json_body(records_of(&request))),
                ),
                "/png" => answer(200, &[("content-type", "image/png")], filler()),
                "/encoded" => answer(
                    200,
                    &[("content-type", "text/plain"), ("content-encoding", "gzip")],
                    filler(),
                ),
                "/no-transform" => answer(
                    200,
                    &[
                        ("content-type", "text/plain"),
                        ("cache-control", "public, no-transform"),
                    ],
                    filler(),
                ),
                "/status/204" => answer(204, &[("etag", "\"v1\"")], empty()),
                "/status/304" => answer(
                    304,
                    &[("etag", "\"v1\""), ("content-type", "application/json")],
                    empty(),
                ),
                "/huge" | "/warm" => {
                    let len = if request.uri().path() == "/huge" {
                        HUGE
                    } else {
                        1 << 20
                    };
                    answer(
                        200,
                        &[("content-type", "text/plain")],
                        common::GeneratedBody::new(len).boxed(),
                    )
                }
                "/trickle" => {
                    let events = futures_util::stream::unfold(0, move |step| {
                        let release = release.clone();
                        async move {
                            let event = match step {
                                0 => "data: first\n\n",
                                1 => {
                                    release.notified().await;
                                    "data: second\n\n"
                                }
                                _ => return None,
                            };
                            Some((
                                Ok::<_, common::BoxError>(Frame::data(Bytes::from(event))),
                                step + 1,
                            ))
                        }
                    });
                    answer(
                        200,
                        &[("content-type", "text/event-stream")],
                        StreamBody::new(events).boxed(),
                    )
                }
                _ => common::handler::echo(request).await,
            }
        }
    })
}

/// A gateway in front of `up`: `/` compresses with the defaults, `/gzip/` offers gzip only,
/// `/buffered/` runs fx-transform with a 64 KiB buffered body and does not compress.
fn gateway(up: &TestUpstream) -> TestGateway {
    let config = format!(
        r#"[plugins]
cache-dir = {PLUGIN_CACHE:?}
watch = false

[upstreams.up]
targets = ["{addr}"]

[[routes]]
name = "all"
prefix = "/"
upstream = "up"
compress = true

[[routes]]
name = "gzip-only"
prefix = "/gzip"
strip-prefix = "/gzip"
upstream = "up"
compress = {{ encodings = ["gzip"], level = {{ gzip = 6 }}, min-bytes = "1KiB", types = ["application/json"] }}

[[routes]]
name = "buffered"
prefix = "/buffered"
strip-prefix = "/buffered"
upstream = "up"
stages = [{{ plugin = "transform", body = {{ buffer = true, max-bytes = "64KiB" }} }}]
"#,
        addr = up.addr()
    );
    TestGateway::start_with_plugins(&config, &[("transform", Path::new(fx::FX_TRANSFORM))])
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&client(), request("GET", url, headers, empty())).await
}

/// `bytes` decoded from `coding` (`None`: identity).
async fn decode(coding: Option<&str>, bytes: &[u8]) -> Vec<u8> {
    let mut reader: Pin<Box<dyn AsyncRead + Send + '_>> = match coding {
        None => return bytes.to_vec(),
        Some("gzip") => Box::pin(GzipDecoder::new(bytes)),
        Some("br") => Box::pin(BrotliDecoder::new(bytes)),
        Some("zstd") => Box::pin(ZstdDecoder::new(bytes)),
        Some(other) => panic!("unexpected coding {other}"),
    };
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.expect("decoding");
    out
}

/// `bytes` encoded with `coding` (default levels).
async fn encode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut reader: Pin<Box<dyn AsyncRead + Send + '_>> = match coding {
        "gzip" => Box::pin(GzipEncoder::new(bytes)),
        "br" => Box::pin(BrotliEncoder::new(bytes)),
        "zstd" => Box::pin(ZstdEncoder::new(bytes)),
        other => panic!("unexpected coding {other}"),
    };
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.expect("encoding");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_encoding_is_negotiated_with_q_values() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    let url = gateway.url("/json");
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (Some("gzip, deflate, br, zstd"), Some("br")),
        (Some("gzip, zstd"), Some("zstd")),
        (Some("gzip"), Some("gzip")),
        (Some("x-gzip"), Some("gzip")),
        (Some("br;q=0.5, gzip;q=1.0"), Some("gzip")),
        (Some("br;q=0.9, gzip;q=0.8"), Some("br")),
        (Some("*"), Some("br")),
        (Some("br;q=0, *;q=0.1"), Some("zstd")),
        (Some("gzip;q=0.5, identity"), None),
        (Some("identity"), None),
        (Some("identity;q=0, deflate"), None),
        (Some("br;q=0, zstd;q=0, gzip;q=0"), None),
        (Some(""), None),
        (None, None),
    ];
    let expected = json_body(100);
    for (accept, coding) in cases {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept-encoding", *a)).collect();
        let reply = get_with(&url, &headers).await;
        assert_eq!(reply.status, 200, "{accept:?}");
        assert_eq!(reply.header("content-encoding"), *coding, "{accept:?}");
        assert_eq!(
            reply.header_all("vary"),
            ["Accept-Encoding"],
            "{accept:?}: an eligible response varies, compressed or not"
        );
        assert_eq!(decode(*coding, &reply.body).await, expected, "{accept:?}");
    }
    // A route's list: only gzip is offered.
    let reply = get_with(
        &gateway.url("/gzip/json"),
        &[("accept-encoding", "br, zstd")],
    )
    .await;
    assert_eq!(reply.header("content-encoding"), None);
    let reply = get_with(
        &gateway.url("/gzip/json"),
        &[("accept-encoding", "br, gzip;q=0.1")],
    )
    .await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coding_decodes_to_the_upstream_bytes() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    let url = gateway.url("/json?records=300");
    let expected = json_body(300);

    let identity = get_with(&url, &[]).await;
    assert_eq!(identity.body, expected);
    assert_eq!(
        identity.header("etag"),
        Some("\"v1\""),
        "identity keeps the strong tag"
    );
    assert_eq!(
        identity.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(identity.header("accept-ranges"), Some("bytes"));

    for coding in ["gzip", "br", "zstd"] {
        let reply = get_with(&url, &[("accept-encoding", coding)]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some(coding));
        assert_eq!(
            reply.header("etag"),
            Some("W/\"v1\""),
            "{coding}: the tag is weakened"
        );
        assert_eq!(reply.header_all("vary"), ["Accept-Encoding"]);
        assert_eq!(
            reply.header("content-length"),
            None,
            "{coding}: framed from the body"
        );
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        assert_eq!(
            reply.header("accept-ranges"),
            None,
            "{coding}: no ranges of the coded bytes"
        );
        assert!(
            reply.body.len() * 4 < expected.len(),
            "{coding}: {} bytes from {}",
            reply.body.len(),
            expected.len()
        );
        assert_eq!(
            decode(Some(coding), &reply.body).await,
            expected,
            "{coding}"
        );
        eprintln!("{coding}: {} -> {} bytes", expected.len(), reply.body.len());
    }

    // HTTP/2 frames it by frames.
    let h2 = send(
        &common::h2_client(),
        request("GET", &url, &[("accept-encoding", "zstd")], empty()),
    )
    .await;
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(h2.header("content-encoding"), Some("zstd"));
    assert_eq!(decode(Some("zstd"), &h2.body).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_not_worth_compressing_pass_untouched() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    let accept = [("accept-encoding", "gzip, br, zstd")];

    // Smaller than min-bytes (1 KiB): 5 records are about 700 bytes.
    let small = get_with(&gateway.url("/json?records=5"), &accept).await;
    assert!(small.body.len() < 1024, "{}", small.body.len());
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body, json_body(5));
    assert_eq!(small.header("etag"), Some("\"v1\""));
    assert!(small.header("vary").is_none());

    let encoded = get_with(&gateway.url("/encoded"), &accept).await;
    assert_eq!(
        encoded.header("content-encoding"),
        Some("gzip"),
        "as the upstream sent it"
    );
    assert_eq!(encoded.body, vec![b'x'; 4096]);
    assert!(encoded.header("vary").is_none());

    for path in ["/no-transform", "/png"] {
        let reply = get_with(&gateway.url(path), &accept).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), None, "{path}");
        assert_eq!(reply.header("content-length"), Some("4096"), "{path}");
        assert_eq!(reply.body, vec![b'x'; 4096], "{path}");
        assert!(reply.header("vary").is_none(), "{path}");
    }

    // A route's own types: gzip-only compresses JSON only.
    let text = get_with(&gateway.url("/gzip/no-transform"), &accept).await;
    assert_eq!(text.header("content-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_are_untouched() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    let accept = [("accept-encoding", "gzip, br")];
    let expected = json_body(100);

    let head = send(
        &client(),
        request("HEAD", &gateway.url("/json"), &accept, empty()),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(
        head.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some("\"v1\""));
    assert!(head.body.is_empty());

    for status in [204, 304] {
        let reply = get_with(&gateway.url(&format!("/status/{status}")), &accept).await;
        assert_eq!(reply.status.as_u16(), status);
        assert_eq!(reply.header("content-encoding"), None, "{status}");
        assert_eq!(reply.header("etag"), Some("\"v1\""), "{status}");
        assert!(reply.header("vary").is_none(), "{status}");
        assert!(reply.body.is_empty(), "{status}");
    }
}

/// Reads `body` through a gzip decoder as it arrives, checking the pattern; returns the
/// decoded length and the compressed length.
async fn drain_gzip(body: Incoming) -> (u64, u64) {
    let compressed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = compressed.clone();
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let stream = stream.inspect_ok(move |chunk: &Bytes| {
        counted.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
    });
    let mut decoder = GzipDecoder::new(StreamReader::new(stream));
    let mut buffer = vec![0u8; 256 << 10];
    let mut offset = 0u64;
    loop {
        let n = decoder.read(&mut buffer).await.expect("decoding the body");
        if n == 0 {
            break;
        }
        let ok = buffer[..n]
            .iter()
            .enumerate()
            .all(|(i, &b)| u64::from(b) == (offset + i as u64) % PERIOD);
        assert!(ok, "the decoded bytes at {offset} are not the upstream's");
        offset += n as u64;
    }
    (
        offset,
        compressed.load(std::sync::atomic::Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_response_compresses_in_bounded_memory() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    let http = client();
    let accept = [("accept-encoding", "gzip")];
    let warm = http
        .request(request("GET", &gateway.url("/warm"), &accept, empty()))
        .await
        .expect("a response");
    assert_eq!(drain_gzip(warm.into_body()).await.0, 1 << 20);

    let baseline = gateway.rss_kib();
    let sampler = gateway.sample_rss();
    let started = Instant::now();
    let response = http
        .request(request("GET", &gateway.url("/huge"), &accept, empty()))
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert!(!response.headers().contains_key("content-length"));
    let (decoded, compressed) = drain_gzip(response.into_body()).await;
    let elapsed = started.elapsed();
    let rss = sampler.stop();
    assert_eq!(decoded, HUGE);
    let growth = rss.peak_kib.saturating_sub(baseline);
    eprintln!(
        "gzip of {HUGE} bytes: {compressed} bytes in {elapsed:?}; RSS baseline {baseline} KiB, peak {} KiB, growth {growth} KiB ({} samples)",
        rss.peak_kib, rss.samples
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew by {growth} KiB while compressing 100 MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_response_is_flushed_as_it_comes() {
    let release = Arc::new(tokio::sync::Notify::new());
    let up = upstream(release.clone());
    let gateway = gateway(&up);
    for coding in ["gzip", "br", "zstd"] {
        let response = client()
            .request(request(
                "GET",
                &gateway.url("/trickle"),
                &[("accept-encoding", coding)],
                empty(),
            ))
            .await
            .expect("a response");
        assert_eq!(response.headers()["content-encoding"], coding);
        let stream = response
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        let input = StreamReader::new(stream);
        let mut decoder: Pin<Box<dyn AsyncRead + Send>> = match coding {
            "gzip" => Box::pin(GzipDecoder::new(input)),
            "br" => Box::pin(BrotliDecoder::new(input)),
            _ => Box::pin(ZstdDecoder::new(input)),
        };
        // The first event arrives while the upstream still holds back the second.
        let mut seen = Vec::new();
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buffer = [0u8; 256];
            while !seen.ends_with(b"data: first\n\n") {
                let n = decoder.read(&mut buffer).await.expect("decoding");
                assert!(n > 0, "{coding}: the stream ended early");
                seen.extend_from_slice(&buffer[..n]);
            }
        })
        .await;
        assert!(
            first.is_ok(),
            "{coding}: the first event did not reach the client before the upstream finished (got {:?})",
            String::from_utf8_lossy(&seen)
        );
        release.notify_one();
        decoder.read_to_end(&mut seen).await.expect("the rest");
        assert_eq!(seen, b"data: first\n\ndata: second\n\n", "{coding}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_decoded_for_a_buffering_stage() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    let original = json_body(50);
    for coding in ["gzip", "br", "zstd"] {
        let encoded = encode(coding, &original).await;
        let reply = send(
            &client(),
            request(
                "POST",
                &gateway.url("/buffered/echo"),
                &[
                    ("content-encoding", coding),
                    ("content-type", "application/json"),
                ],
                full(encoded.clone()),
            ),
        )
        .await;
        assert_eq!(reply.status, 200, "{coding}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(
            seen["headers"]["x-body-len"],
            original.len().to_string(),
            "{coding}: the stage saw the decoded body"
        );
        assert!(
            seen["headers"]["content-encoding"].is_null(),
            "{coding}: {seen}"
        );
        assert_eq!(
            seen["headers"]["content-length"],
            original.len().to_string(),
            "{coding}"
        );
        assert_eq!(
            seen["body"].as_str().map(str::as_bytes),
            Some(&original[..]),
            "{coding}"
        );
    }

    // Without a buffering stage the body passes as it came.
    let encoded = encode("gzip", &original).await;
    let reply = send(
        &client(),
        request(
            "POST",
            &gateway.url("/echo"),
            &[("content-encoding", "gzip")],
            full(encoded),
        ),
    )
    .await;
    assert_eq!(reply.json()["headers"]["content-encoding"], "gzip");

    // A coding the gateway cannot decode is refused, naming the ones it can.
    let reply = send(
        &client(),
        request(
            "POST",
            &gateway.url("/buffered/echo"),
            &[("content-encoding", "deflate")],
            full("x"),
        ),
    )
    .await;
    assert_eq!(reply.status, 415, "{}", reply.text());
    assert_eq!(reply.json()["error"], "unsupported_content_encoding");
    assert_eq!(reply.header("accept-encoding"), Some("gzip, br, zstd"));

    // So is data that is not what it claims.
    let reply = send(
        &client(),
        request(
            "POST",
            &gateway.url("/buffered/echo"),
            &[("content-encoding", "gzip")],
            full("not gzip at all"),
        ),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_stops_at_the_stage_cap() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    // 64 MiB of zeros: about 64 KiB of gzip, 1,000 times the stage's 64 KiB cap decoded.
    let zeros = vec![0u8; 64 << 20];
    for coding in ["gzip", "br", "zstd"] {
        let bomb = encode(coding, &zeros).await;
        assert!(bomb.len() < 128 << 10, "{coding}: {} bytes", bomb.len());
        let before = up.requests();
        let started = Instant::now();
        let reply = send(
            &client(),
            request(
                "POST",
                &gateway.url("/buffered/echo"),
                &[("content-encoding", coding)],
                full(bomb),
            ),
        )
        .await;
        assert_eq!(reply.status, 413, "{coding}: {}", reply.text());
        assert_eq!(reply.json()["error"], "body_too_large");
        assert_eq!(
            up.requests(),
            before,
            "{coding}: nothing reached the upstream"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{coding}: took {:?}",
            started.elapsed()
        );
        let rss = gateway.rss_kib();
        assert!(rss < 200 << 10, "{coding}: the gateway holds {rss} KiB");
    }
}

// === nginx, the reference ===

/// A running nginx, stopped when dropped (also when an assertion fails).
/// nginx with `gzip on; gzip_comp_level 6;` in front of `upstream`.
fn start_nginx(upstream: std::net::SocketAddr) -> Option<common::Nginx> {
    common::Nginx::start(
        "gzip on; gzip_comp_level 6; gzip_types application/json; gzip_min_length 1024;\n\
         gzip_proxied any; gzip_vary on;",
        &format!("  location / {{ proxy_pass http://{upstream}; }}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_output_matches_nginx_gzip_on() {
    let up = upstream(Default::default());
    let gateway = gateway(&up);
    let Some(nginx) = start_nginx(up.addr()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is required in CI (scripts/test.sh installs it)"
        );
        eprintln!("nginx not found; skipping the comparison");
        return;
    };
    let accept = [("accept-encoding", "gzip")];
    let mut table = Vec::new();
    for records in [20, 140, 2000] {
        let path = format!("/json?records={records}");
        let expected = json_body(records);
        let ours = get_with(&gateway.url(&format!("/gzip{path}")), &accept).await;
        let theirs = get_with(&format!("http://{}{path}", nginx.addr), &accept).await;
        assert_eq!(
            theirs.header("content-encoding"),
            Some("gzip"),
            "nginx compressed it"
        );
        assert_eq!(ours.header("content-encoding"), Some("gzip"));
        assert_eq!(
            decode(Some("gzip"), &ours.body).await,
            expected,
            "{records}"
        );
        assert_eq!(
            decode(Some("gzip"), &theirs.body).await,
            expected,
            "{records}"
        );
        let ratio = ours.body.len() as f64 / theirs.body.len() as f64;
        table.push(format!(
            "{:>8} bytes JSON: gateway {:>7} bytes, nginx {:>7} bytes, ratio {ratio:.3}",
            expected.len(),
            ours.body.len(),
            theirs.body.len()
        ));
        // Both at level 6; zlib-rs (zlib-ng's strategies) finds a little more on long
        // bodies than nginx's zlib, never less.
        let allowed = if expected.len() < 64 << 10 {
            0.95..=1.05
        } else {
            0.90..=1.05
        };
        assert!(
            allowed.contains(&ratio),
            "{records} records: gateway {} bytes, nginx {} bytes",
            ours.body.len(),
            theirs.body.len()
        );
        assert_eq!(ours.header_all("vary"), theirs.header_all("vary"));
    }
    eprintln!("gzip level 6, gateway vs nginx:\n{}", table.join("\n"));
}

// === The compress stage next to configured stages ===

#[test]
fn a_compress_stage_does_not_shift_the_positions_of_configured_stages() {
    // A plugin's config error names its stage as written: 1, not 2.
    let config = format!(
        "[plugins]\ncache-dir = {PLUGIN_CACHE:?}\nwatch = false\n\n\
         [upstreams.echo]\ntargets = [\"127.0.0.1:9\"]\n\n\
         [[routes]]\nname = \"picky\"\npath = \"/picky\"\nupstream = \"echo\"\ncompress = true\n\
         stages = [{{ plugin = \"transform\" }}, {{ plugin = \"badconfig\", config = {{ threshold = 0 }} }}]\n"
    );
    let checked = common::check_as(
        "gateway.toml",
        &config,
        &[
            ("transform", Path::new(fx::FX_TRANSFORM)),
            ("badconfig", Path::new(fx::FX_BADCONFIG)),
        ],
    );
    assert_ne!(checked.code, Some(0), "check must fail: {checked:?}");
    let line = checked
        .stderr
        .lines()
        .find(|line| line.contains("threshold must be positive"))
        .unwrap_or_else(|| panic!("no line carries the plugin's message: {checked:?}"));
    assert!(
        line.contains("stage 1 (`badconfig`)") && line.contains("gateway.toml:13:"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_numbers_reused_stages_as_configured() {
    let up = upstream(Default::default());
    let config = format!(
        "[plugins]\ncache-dir = {PLUGIN_CACHE:?}\nwatch = false\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstreams.up]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"pooled\"\nprefix = \"/\"\nupstream = \"up\"\ncompress = true\n\
         stages = [{{ plugin = \"transform\", limits = {{ reuse = {{ max-calls = 10 }} }} }}]\n",
        up.addr()
    );
    let gateway =
        TestGateway::start_with_plugins(&config, &[("transform", Path::new(fx::FX_TRANSFORM))]);
    let reply = get_with(&gateway.url("/json"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(
        reply.header("x-response-tag"),
        Some("v1"),
        "the transform ran too"
    );
    let status = common::get(&format!("http://{}/status", gateway.admin_addr()))
        .await
        .json();
    let pools = status["reuse_pools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pools.len(), 1, "{status}");
    assert_eq!(pools[0]["stage"], 0, "{status}");
    assert_eq!(pools[0]["plugin"], "transform", "{status}");
}
