//! Large bodies stream through the gateway in both directions without being buffered: a
//! 100 MiB upload and a 100 MiB download, made and consumed on the fly, while the
//! gateway's resident memory is sampled.

mod common;

use std::time::Instant;

use common::{GeneratedBody, TestGateway, TestUpstream, client, drain, handler, request};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

const SIZE: u64 = 100 << 20;

/// The most the gateway's RSS may grow while 100 MiB pass through it.
///
/// Measured on a debug build (2 shared cores, 10ms samples, both tests at once): the peak
/// grew by 1.0–1.9 MiB in either direction over a baseline of about 34 MiB taken after a
/// 1 MiB warm-up request; 100 MiB took about 3s down and 5–7s up. A gateway that buffered
/// the body would grow by at least 100 MiB.
const MAX_GROWTH_KIB: u64 = 40 << 10;

fn gateway_for(upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(&format!(
        "[upstreams.up]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream.addr()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_100_mib_streams_in_bounded_memory() {
    let up = TestUpstream::start(handler::sink);
    let gateway = gateway_for(&up);
    let http = client();
    let warm_up = common::send(
        &http,
        request(
            "POST",
            &gateway.url("/up"),
            &[],
            GeneratedBody::new(1 << 20).boxed(),
        ),
    )
    .await;
    assert_eq!(warm_up.status, StatusCode::OK);

    let baseline = gateway.rss_kib();
    let sampler = gateway.sample_rss();
    let started = Instant::now();
    let reply = common::send(
        &http,
        request(
            "POST",
            &gateway.url("/up"),
            &[],
            GeneratedBody::new(SIZE).boxed(),
        ),
    )
    .await;
    let elapsed = started.elapsed();
    let rss = sampler.stop();

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["bytes"], SIZE, "the upstream got every byte");
    assert_eq!(seen["pattern_ok"], true, "in order, none lost or doubled");
    let growth = rss.peak_kib.saturating_sub(baseline);
    eprintln!(
        "upload: {SIZE} bytes in {elapsed:?}; RSS baseline {baseline} KiB, peak {} KiB, growth {growth} KiB ({} samples)",
        rss.peak_kib, rss.samples
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew by {growth} KiB during a 100 MiB upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_100_mib_streams_in_bounded_memory() {
    // 1 MiB for the warm-up request, 100 MiB for the one measured.
    let one_mib = handler::huge(1 << 20);
    let hundred_mib = handler::huge(SIZE);
    let up = TestUpstream::start(move |request: Request<Incoming>| {
        if request.uri().path() == "/warm" {
            one_mib(request)
        } else {
            hundred_mib(request)
        }
    });
    let gateway = gateway_for(&up);
    let http = client();
    let warm_up = common::send(
        &http,
        request("GET", &gateway.url("/warm"), &[], common::empty()),
    )
    .await;
    assert_eq!(warm_up.body.len(), 1 << 20);

    let baseline = gateway.rss_kib();
    let sampler = gateway.sample_rss();
    let started = Instant::now();
    let response = http
        .request(request("GET", &gateway.url("/down"), &[], common::empty()))
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        SIZE.to_string().as_str(),
        "the length is passed on"
    );
    let drained = drain(response.into_body().map_err(|e| e.to_string()))
        .await
        .expect("reading the body");
    let elapsed = started.elapsed();
    let rss = sampler.stop();

    assert_eq!(drained.bytes, SIZE);
    assert!(drained.pattern_ok, "in order, none lost or doubled");
    let growth = rss.peak_kib.saturating_sub(baseline);
    eprintln!(
        "download: {SIZE} bytes in {elapsed:?}; RSS baseline {baseline} KiB, peak {} KiB, growth {growth} KiB ({} samples)",
        rss.peak_kib, rss.samples
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew by {growth} KiB during a 100 MiB download"
    );
}
