//! Connection lifecycle: graceful shutdown on SIGTERM, and the server's timeouts for slow
//! and idle clients.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    RawResponse, TestGateway, TestUpstream, drain, empty, eventually, get, handler, raw_connect,
    time_until_closed,
};
use http::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A gateway with one catch-all route to `upstream`, plus `server` settings.
fn gateway(server: &str, upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(&format!(
        "[server]\n{server}\n\n[upstreams.up]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"up\"\n",
        upstream.addr()
    ))
}

/// Whether a new TCP connection to the gateway is refused.
fn refused(gateway: &TestGateway) -> bool {
    matches!(TcpStream::connect(gateway.addr()), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let up = TestUpstream::start(handler::slow(Duration::from_secs(1)));
    let mut gateway = gateway("shutdown-grace = \"5s\"", &up);
    let url = gateway.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    assert!(
        eventually(Duration::from_secs(5), || up.requests() == 1).await,
        "the request reached the upstream"
    );

    let signalled = Instant::now();
    gateway.signal_term();
    assert!(
        eventually(Duration::from_millis(900), || refused(&gateway)).await,
        "new connections are refused soon after SIGTERM; logs:\n{}",
        gateway.logs()
    );
    let refused_after = signalled.elapsed();
    assert!(
        !in_flight.is_finished(),
        "refusing new connections while the slow request is still in flight"
    );

    let reply = in_flight.await.expect("the client task");
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request completes: {}",
        reply.text()
    );
    assert_eq!(reply.json()["path"], "/slow");

    let status = gateway.wait_exit(Duration::from_secs(5));
    let exited_after = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "logs:\n{}", gateway.logs());
    // Measured: refused within ~10ms of the signal; exit about 1s after it (the upstream's delay).
    assert!(
        exited_after < Duration::from_secs(3),
        "exits once drained, well within the grace: {exited_after:?}"
    );
    eprintln!("refused after {refused_after:?}, exited after {exited_after:?}");
    let logs = gateway.logs();
    assert!(logs.contains("shutdown signal received"), "logs:\n{logs}");
    assert!(logs.contains("shut down cleanly"), "logs:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_stuck_requests_after_the_grace_period() {
    let up = TestUpstream::start(handler::slow(Duration::from_secs(30)));
    let mut gateway = gateway("shutdown-grace = \"500ms\"", &up);
    let stuck = tokio::spawn(
        common::client().request(
            http::Request::get(gateway.url("/stuck"))
                .body(common::empty())
                .expect("a request"),
        ),
    );
    assert!(
        eventually(Duration::from_secs(5), || up.requests() == 1).await,
        "the request reached the upstream"
    );

    let signalled = Instant::now();
    gateway.signal_term();
    let status = gateway.wait_exit(Duration::from_secs(5));
    let exited_after = signalled.elapsed();
    assert!(
        exited_after >= Duration::from_millis(450),
        "waits for the grace period: {exited_after:?}"
    );
    assert!(
        exited_after < Duration::from_secs(2),
        "then stops waiting: {exited_after:?}"
    );
    assert_eq!(status.code(), Some(0), "logs:\n{}", gateway.logs());
    assert!(
        gateway.logs().contains("grace period over"),
        "logs:\n{}",
        gateway.logs()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("the client hears of it");
    assert!(
        outcome.expect("the client task").is_err(),
        "the stuck request is cut off, not answered"
    );
}

#[test]
fn slowloris_half_a_request_line_is_closed_at_the_header_read_timeout() {
    let up = TestUpstream::start(handler::echo);
    let gateway = gateway("header-read-timeout = \"300ms\"", &up);
    let mut stream = raw_connect(gateway.addr());
    stream
        .write_all(b"GET /slow HTT")
        .expect("writing half a request line");
    let closed = time_until_closed(&mut stream, Duration::from_secs(3))
        .expect("the gateway closes the connection");
    eprintln!("half a request line: closed after {closed:?}");
    // Measured: closed about 300ms after the first byte.
    assert!(
        closed >= Duration::from_millis(250),
        "not before the timeout: {closed:?}"
    );
    assert!(
        closed < Duration::from_millis(1500),
        "promptly after the timeout: {closed:?}"
    );
    assert_eq!(up.requests(), 0);
}

/// A connection that sends nothing is closed at `header-read-timeout`, counted from accept
/// (like nginx's `client_header_timeout`): hyper's own header timer starts only once the
/// protocol is detected, so the gateway enforces the first byte itself.
#[test]
fn a_connection_that_never_sends_is_closed_at_the_header_read_timeout() {
    let up = TestUpstream::start(handler::echo);
    let gateway = gateway("header-read-timeout = \"300ms\"", &up);
    let mut stream = raw_connect(gateway.addr());
    let closed = time_until_closed(&mut stream, Duration::from_secs(3))
        .expect("the gateway closes the connection");
    eprintln!("silent connection: closed after {closed:?}");
    assert!(
        closed < Duration::from_millis(1500),
        "promptly after the timeout: {closed:?}"
    );
}

#[test]
fn headers_trickled_byte_by_byte_are_cut_off_at_the_header_read_timeout() {
    let up = TestUpstream::start(handler::echo);
    let gateway = gateway("header-read-timeout = \"300ms\"", &up);
    let mut stream = raw_connect(gateway.addr());
    let started = Instant::now();
    // One byte every 50ms: each byte is progress, but the whole head is not there in time.
    let head = b"GET /trickle HTTP/1.1\r\nHost: gw.test\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = None;
    for &byte in head {
        if stream.write_all(&[byte]).is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cut_off = cut_off
        .or_else(|| {
            time_until_closed(&mut stream, Duration::from_secs(3)).map(|_| started.elapsed())
        })
        .expect("the gateway closes the connection");
    eprintln!("trickled head: cut off after {cut_off:?}");
    assert!(
        cut_off < Duration::from_millis(1500),
        "closed long before the head was complete: {cut_off:?}"
    );
    assert_eq!(up.requests(), 0);
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let up = TestUpstream::start(handler::fixed(200, "ok"));
    let gateway = gateway("idle-timeout = \"300ms\"", &up);
    let mut stream = raw_connect(gateway.addr());
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .expect("writing a request");
    let reply = RawResponse::read_from(&mut stream).expect("an answer");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, b"ok".as_slice())
    );
    // The connection is kept alive: a second request on it works.
    stream
        .write_all(b"GET /b HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .expect("writing a second request");
    assert_eq!(
        RawResponse::read_from(&mut stream)
            .expect("a second answer")
            .status,
        200
    );

    let closed = time_until_closed(&mut stream, Duration::from_secs(3))
        .expect("the idle connection is closed");
    eprintln!("idle keep-alive connection: closed after {closed:?}");
    // Measured: closed about 300ms after the last response.
    assert!(
        closed >= Duration::from_millis(250),
        "not before the idle timeout: {closed:?}"
    );
    assert!(
        closed < Duration::from_millis(1500),
        "promptly after the idle timeout: {closed:?}"
    );
}

/// Between requests the idle timeout applies, not the header-read timeout: a keep-alive
/// connection quiet for longer than `header-read-timeout` still serves its next request.
#[test]
fn a_keep_alive_connection_may_idle_longer_than_the_header_read_timeout() {
    let up = TestUpstream::start(handler::fixed(200, "ok"));
    let gateway = gateway(
        "header-read-timeout = \"300ms\"\nidle-timeout = \"5s\"",
        &up,
    );
    let mut stream = raw_connect(gateway.addr());
    for pause in [Duration::ZERO, Duration::from_millis(900)] {
        std::thread::sleep(pause);
        stream
            .write_all(b"GET /a HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .expect("writing a request");
        let reply = RawResponse::read_from(&mut stream)
            .unwrap_or_else(|e| panic!("an answer after a {pause:?} pause: {e:?}"));
        assert_eq!(reply.status, 200, "after a {pause:?} pause");
    }
    assert_eq!(up.requests(), 2);
}

/// The header-read timeout starts at a head's first byte, also for the second head on a
/// keep-alive connection (slowloris after one honest request).
#[test]
fn a_slow_second_head_is_cut_off_at_the_header_read_timeout_from_its_first_byte() {
    let up = TestUpstream::start(handler::fixed(200, "ok"));
    let gateway = gateway(
        "header-read-timeout = \"300ms\"\nidle-timeout = \"10s\"",
        &up,
    );
    let mut stream = raw_connect(gateway.addr());
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .expect("writing a request");
    assert_eq!(
        RawResponse::read_from(&mut stream)
            .expect("an answer")
            .status,
        200
    );
    // Quiet for longer than the header-read timeout: the timer has not started yet.
    std::thread::sleep(Duration::from_millis(600));
    stream
        .write_all(b"GET /slow HTT")
        .expect("writing half a second request line");
    let closed = time_until_closed(&mut stream, Duration::from_secs(5))
        .expect("the gateway closes the connection");
    eprintln!("half a second request line: closed after {closed:?}");
    // Measured: closed about 300ms after the first byte of the second head.
    assert!(
        closed >= Duration::from_millis(250),
        "not before the timeout: {closed:?}"
    );
    assert!(
        closed < Duration::from_millis(1500),
        "at the header-read timeout, long before the idle timeout: {closed:?}"
    );
    assert_eq!(up.requests(), 1);
}

/// A partial head pipelined behind a complete request, in the same write or while the
/// first request is in flight, is cut at the header-read timeout once the first request's
/// answer is sent, not at the much longer idle timeout.
#[test]
fn a_pipelined_stalled_partial_head_is_cut_at_the_header_read_timeout() {
    let up = TestUpstream::start(handler::fixed(200, "ok"));
    let gateway = gateway(
        "header-read-timeout = \"300ms\"\nidle-timeout = \"20s\"",
        &up,
    );
    for split in [false, true] {
        let mut stream = raw_connect(gateway.addr());
        let first = b"GET /a HTTP/1.1\r\nHost: gw.test\r\n\r\n";
        let partial = b"GET /slow HTTP/1.1\r\nHost: gw";
        if split {
            stream.write_all(first).expect("first request");
            std::thread::sleep(Duration::from_millis(20));
            stream.write_all(partial).expect("partial second head");
        } else {
            stream
                .write_all(&[&first[..], &partial[..]].concat())
                .expect("one write: a request and half of the next");
        }
        assert_eq!(
            RawResponse::read_from(&mut stream)
                .expect("an answer")
                .status,
            200
        );
        let closed = time_until_closed(&mut stream, Duration::from_secs(10))
            .expect("the gateway closes the connection");
        eprintln!("pipelined partial head (split: {split}): closed after {closed:?}");
        assert!(
            closed < Duration::from_secs(5),
            "at the header-read timeout, long before the idle timeout: {closed:?}"
        );
    }
}

/// An HTTP/2 connection's frames between requests (window updates, pings) are not request
/// heads: past the first request only the idle timeout applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_may_idle_longer_than_the_header_read_timeout() {
    let up = TestUpstream::start(handler::fixed(200, "ok"));
    let gateway = gateway(
        "header-read-timeout = \"300ms\"\nidle-timeout = \"5s\"",
        &up,
    );
    let stream = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .expect("connecting");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    for pause in [Duration::ZERO, Duration::from_millis(900)] {
        tokio::time::sleep(pause).await;
        let request = Request::get(gateway.url("/a"))
            .body(empty())
            .expect("a request");
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("an answer on the same connection after {pause:?}: {e}"));
        assert_eq!(response.status(), StatusCode::OK);
        drain(response.into_body()).await.expect("the body");
    }
    assert_eq!(up.requests(), 2);
}

/// `server.idle-timeout` applies only while no request is in flight (like Envoy's
/// `idle_timeout` and nginx's `keepalive_timeout`): a response slower than the idle timeout
/// still arrives.
#[test]
fn a_slow_upstream_response_is_not_cut_by_the_idle_timeout() {
    let up = TestUpstream::start(handler::slow(Duration::from_millis(800)));
    let gateway = gateway("idle-timeout = \"300ms\"", &up);
    let mut stream = raw_connect(gateway.addr());
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .expect("writing a request");
    let reply = RawResponse::read_from(&mut stream).expect("an answer, not a closed connection");
    assert_eq!(reply.status, 200);
}

/// `(thread name, voluntary + involuntary context switches)` of each thread of `pid`.
fn threads(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the gateway's threads") {
        let dir = task.expect("a thread").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter(|line| line.contains("ctxt_switches"))
            .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        threads.push((name.trim().to_string(), switches));
    }
    threads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_per_core_and_no_wake_ups_while_idle() {
    let up = TestUpstream::start(handler::fixed(200, "ok"));
    let gateway = gateway("", &up);
    for _ in 0..4 {
        assert_eq!(get(&gateway.url("/warm")).await.status, StatusCode::OK);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = threads(gateway.pid())
        .iter()
        .filter(|(name, _)| name.starts_with("wasmgate-worke"))
        .count();
    assert_eq!(workers, cores, "{:?}", threads(gateway.pid()));

    // Idle: no thread of the gateway (workers, the epoch ticker, the control thread) should
    // wake up; a ticking timer would show hundreds of switches per second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: u64 = threads(gateway.pid()).iter().map(|(_, n)| n).sum();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: u64 = threads(gateway.pid()).iter().map(|(_, n)| n).sum();
    assert!(
        after - before < 20,
        "{} context switches in 1 s of idleness: {:?}",
        after - before,
        threads(gateway.pid())
    );
}
