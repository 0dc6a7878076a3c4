//! The stage pipeline, black-box: the real `wasmgate` binary, real loopback upstreams and
//! the real compiled fixture plugins (`tests/fixtures/guests`).
//!
//! Covered: auth (deny short-circuits, identity headers, spoofed headers stripped),
//! identity in later stages, rate limiting, request and response transforms with request
//! variables and body buffering, aggregate fan-out with timeouts, unreachable and refused
//! calls, and the sandbox and failure policy against hostile plugins (endless loop, memory
//! bomb, trap, invalid header, wrong world, config that never validates, fail-open and
//! fail-closed).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Reply, TempDir, TestGateway, TestUpstream, WASMGATE, check_as, client, empty, full, get,
    handler, request, send,
};
use serde_json::json;
use wasmgate_fixtures as fx;

/// Compiled plugins are cached here across every gateway these tests start, so each
/// fixture is compiled once per test run instead of once per gateway.
const PLUGIN_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/stages-plugin-cache");

/// `[plugins]` with the shared compile cache, then `config`.
fn with_cache(config: &str) -> String {
    format!("[plugins]\ncache-dir = {PLUGIN_CACHE:?}\nwatch = false\n\n{config}")
}

/// Starts a gateway on `config` (plus the shared cache) with `plugins` as `(name, wasm path)`.
fn start(config: &str, plugins: &[(&str, &str)]) -> TestGateway {
    let plugins: Vec<(&str, &Path)> = plugins
        .iter()
        .map(|(name, path)| (*name, Path::new(*path)))
        .collect();
    TestGateway::start_with_plugins(&with_cache(config), &plugins)
}

/// `[upstreams.NAME]` for a loopback address.
fn upstream_toml(name: &str, addr: std::net::SocketAddr, extra: &str) -> String {
    format!("[upstreams.{name}]\ntargets = [\"{addr}\"]\n{extra}\n")
}

/// Asserts the gateway's error shape `{"error", "message", "request_id"}` and returns the
/// JSON; `request_id` must match the response's `x-request-id`.
fn gateway_error(reply: &Reply, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(reply.status.as_u16(), status, "body: {}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    let body = reply.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let id = body["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_id in {body}"));
    assert_eq!(reply.header("x-request-id"), Some(id), "{reply:?}");
    body
}

/// The headers an echo upstream reports having received.
fn echoed_headers(reply: &Reply) -> serde_json::Value {
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    reply.json()["headers"].clone()
}

// === Auth ===

#[tokio::test]
async fn auth_deny_short_circuits_before_the_upstream() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"auth\"\nprefix = \"/\"\nupstream = \"echo\"\nstages = [{{ plugin = \"auth\" }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("auth", fx::FX_AUTH_HEADER)]);

    let reply = get(&gateway.url("/private")).await;
    assert_eq!(reply.status, 401, "body: {}", reply.text());
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"error": "unauthorized"}));
    assert!(
        reply.header("x-request-id").is_some(),
        "every answer carries a request id"
    );
    // A spoofed identity does not get a request through either.
    let spoofed = request(
        "GET",
        &gateway.url("/private"),
        &[("x-auth-subject", "admin")],
        empty(),
    );
    assert_eq!(send(&client(), spoofed).await.status, 401);
    assert_eq!(
        upstream.requests(),
        0,
        "a denied request must never reach the upstream"
    );
}

#[tokio::test]
async fn auth_allow_passes_the_identity_on_and_strips_spoofed_identity_headers() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"auth\"\nprefix = \"/\"\nupstream = \"echo\"\nstages = [{{ plugin = \"auth\" }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("auth", fx::FX_AUTH_HEADER)]);
    let client = client();

    let allowed = request(
        "GET",
        &gateway.url("/me"),
        &[("x-user", "alice"), ("x-role", "admin")],
        empty(),
    );
    let headers = echoed_headers(&send(&client, allowed).await);
    assert_eq!(headers["x-auth-subject"], "alice", "{headers}");
    assert_eq!(headers["x-auth-claim-role"], "admin", "{headers}");

    // Identity headers the client sends are removed before auth runs: only the plugin's
    // identity reaches the upstream, and a header the plugin does not set is not forwarded.
    let spoofing = request(
        "GET",
        &gateway.url("/me"),
        &[
            ("x-user", "bob"),
            ("x-auth-subject", "root"),
            ("x-auth-claim-role", "superuser"),
            ("x-auth-claim-tenant", "evil"),
        ],
        empty(),
    );
    let headers = echoed_headers(&send(&client, spoofing).await);
    assert_eq!(headers["x-auth-subject"], "bob", "{headers}");
    assert_eq!(
        headers["x-auth-claim-role"], "user",
        "the default role, not the spoofed one: {headers}"
    );
    assert!(
        headers.get("x-auth-claim-tenant").is_none(),
        "a spoofed claim reached the upstream: {headers}"
    );
    assert_eq!(upstream.requests(), 2);
}

#[tokio::test]
async fn the_identity_reaches_later_stages() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"chain\"\nprefix = \"/\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"auth\" }}, {{ plugin = \"transform\" }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(
        &config,
        &[
            ("auth", fx::FX_AUTH_HEADER),
            ("transform", fx::FX_TRANSFORM),
        ],
    );

    let reply = send(
        &client(),
        request("GET", &gateway.url("/x"), &[("x-user", "carol")], empty()),
    )
    .await;
    let headers = echoed_headers(&reply);
    assert_eq!(
        headers["x-identity"], "carol",
        "the transform saw the auth stage's identity: {headers}"
    );
    assert_eq!(headers["x-auth-subject"], "carol", "{headers}");
    assert_eq!(headers["x-transform-tag"], "v1", "{headers}");
}

// === Rate limit ===

#[tokio::test]
async fn rate_limit_counts_down_then_answers_429_with_retry_after() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"limited\"\npath = \"/limited\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"ratelimit\", config = {{ limit = 3, window_ms = 60000 }} }}]\n\
         \n[[routes]]\nname = \"per-user\"\npath = \"/per-user\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"auth\" }}, {{ plugin = \"ratelimit\", config = {{ limit = 1, window_ms = 60000 }} }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(
        &config,
        &[
            ("ratelimit", fx::FX_RATELIMIT),
            ("auth", fx::FX_AUTH_HEADER),
        ],
    );
    let client = client();

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = send(
            &client,
            request("GET", &gateway.url("/limited"), &[], empty()),
        )
        .await;
        assert_eq!(reply.status, 200, "body: {}", reply.text());
        remaining.push(
            reply
                .header("x-ratelimit-remaining")
                .expect("x-ratelimit-remaining")
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = send(
        &client,
        request("GET", &gateway.url("/limited"), &[], empty()),
    )
    .await;
    assert_eq!(refused.status, 429, "body: {}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(
        refused.json()["error"],
        "rate limited",
        "{}",
        refused.text()
    );
    assert_eq!(
        upstream.requests(),
        3,
        "the refused request must not reach the upstream"
    );

    // Behind an auth stage the limit is per subject: the identity reached the rate limiter.
    let as_user = |user: &'static str| {
        request(
            "GET",
            &gateway.url("/per-user"),
            &[("x-user", user)],
            empty(),
        )
    };
    assert_eq!(send(&client, as_user("alice")).await.status, 200);
    assert_eq!(send(&client, as_user("alice")).await.status, 429);
    assert_eq!(
        send(&client, as_user("bob")).await.status,
        200,
        "bob has his own budget"
    );
}

// === Transforms ===

#[tokio::test]
async fn transforms_rewrite_request_and_response_and_carry_request_variables() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"streamed\"\npath = \"/streamed\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"transform\", config = {{ tag = \"t1\" }} }}]\n\
         \n[[routes]]\nname = \"buffered\"\npath = \"/buffered\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"transform\", config = {{ tag = \"t2\" }}, body = {{ buffer = true, max-bytes = \"1MiB\" }} }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("transform", fx::FX_TRANSFORM)]);
    let client = client();

    let reply = send(
        &client,
        request(
            "POST",
            &gateway.url("/streamed"),
            &[],
            full("streamed body"),
        ),
    )
    .await;
    let echoed = reply.json();
    assert_eq!(reply.status, 200, "{echoed}");
    assert_eq!(echoed["headers"]["x-transform-tag"], "t1", "{echoed}");
    assert!(
        echoed["headers"].get("x-body-len").is_none(),
        "an unbuffered stage must not see the body: {echoed}"
    );
    assert_eq!(
        echoed["body"], "streamed body",
        "the body streams past untouched"
    );
    assert_eq!(reply.header("x-response-tag"), Some("t1"), "{reply:?}");
    assert_eq!(
        reply.header("x-seen-var"),
        Some("t1"),
        "request variable `tag` did not reach on-response: {reply:?}"
    );

    let reply = send(
        &client,
        request(
            "POST",
            &gateway.url("/buffered"),
            &[],
            full("hello, buffered"),
        ),
    )
    .await;
    let echoed = reply.json();
    assert_eq!(reply.status, 200, "{echoed}");
    assert_eq!(echoed["headers"]["x-transform-tag"], "t2", "{echoed}");
    assert_eq!(
        echoed["headers"]["x-body-len"], "15",
        "a buffering stage sees the whole body: {echoed}"
    );
    assert_eq!(echoed["headers"]["content-length"], "15", "{echoed}");
    assert_eq!(echoed["body"], "hello, buffered");
    assert_eq!(reply.header("x-response-tag"), Some("t2"));
    assert_eq!(reply.header("x-seen-var"), Some("t2"));
    // The response phase of a buffering stage keeps the upstream's body intact.
    assert_eq!(reply.json()["path"], "/buffered");

    // A body over a buffering stage's cap is refused with 413 before the upstream.
    let before = upstream.requests();
    let big = request(
        "POST",
        &gateway.url("/buffered"),
        &[],
        full(vec![b'x'; (1 << 20) + 1]),
    );
    let reply = send(&client, big).await;
    gateway_error(&reply, 413, "body_too_large");
    assert_eq!(upstream.requests(), before);
}

// === Aggregate ===

#[tokio::test]
async fn aggregate_fans_out_and_merges_partial_results() {
    let fast = TestUpstream::start(handler::echo);
    let slow = TestUpstream::start(handler::slow(Duration::from_secs(5)));
    let other = TestUpstream::start(handler::echo);
    let down = common::closed_addr();
    let config = format!(
        "{}{}{}{}\n[[routes]]\nname = \"agg\"\npath = \"/agg\"\n\
         stages = [{{ plugin = \"aggregate\", upstreams = [\"fast\", \"slow\", \"down\"], config = {{ calls = [\
           {{ name = \"a\", upstream = \"fast\", uri = \"/a?x=1\" }},\
           {{ name = \"b\", upstream = \"slow\", uri = \"/b\", timeout_ms = 300 }},\
           {{ name = \"c\", upstream = \"down\", uri = \"/c\" }},\
           {{ name = \"d\", upstream = \"other\", uri = \"/d\" }}] }} }}]\n",
        upstream_toml("fast", fast.addr(), ""),
        upstream_toml("slow", slow.addr(), ""),
        upstream_toml("down", down, ""),
        upstream_toml("other", other.addr(), ""),
    );
    let gateway = start(&config, &[("aggregate", fx::FX_AGGREGATE)]);

    let started = Instant::now();
    let reply = send(
        &client(),
        request(
            "GET",
            &gateway.url("/agg"),
            &[("authorization", "Bearer t0ken")],
            empty(),
        ),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert_eq!(reply.header("x-partial"), Some("true"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let merged = reply.json();
    assert_eq!(merged["a"]["path"], "/a", "{merged}");
    assert_eq!(merged["a"]["query"], "x=1", "{merged}");
    assert_eq!(
        merged["a"]["headers"]["authorization"], "Bearer t0ken",
        "the plan forwards authorization: {merged}"
    );
    assert_eq!(merged["b"], json!({"error": "timeout"}), "{merged}");
    assert_eq!(merged["c"], json!({"error": "unreachable"}), "{merged}");
    assert_eq!(
        merged["d"],
        json!({"error": "refused"}),
        "an upstream not in the stage's list: {merged}"
    );
    assert_eq!(
        other.requests(),
        0,
        "the host must not call an upstream the stage does not list"
    );
    assert_eq!(fast.requests(), 1);
    // The calls ran concurrently and the slow one was cut off at its own timeout.
    assert!(
        elapsed < Duration::from_secs(3),
        "the aggregate took {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "the slow call cannot have timed out in {elapsed:?}"
    );
}

// === Hostile plugins ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_gets_504_at_its_deadline() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"loop\"\npath = \"/loop\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"loop\", limits = {{ deadline = \"100ms\" }} }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("loop", fx::FX_LOOP)]);
    let url = gateway.url("/loop");

    // Two clients (as many as the gateway has worker threads), three loops each.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut answers = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let reply = send(&client, request("GET", &url, &[], empty())).await;
                answers.push((reply, started.elapsed()));
            }
            answers
        }));
    }
    let mut times = Vec::new();
    for task in clients {
        for (reply, elapsed) in task.await.expect("a loop client") {
            let body = gateway_error(&reply, 504, "stage_timeout");
            assert!(
                body["message"].as_str().is_some_and(|m| m.contains("loop")),
                "the message names the plugin: {body}"
            );
            times.push(elapsed);
        }
    }
    eprintln!("504s from the loop after {times:?}");
    for elapsed in times {
        assert!(
            elapsed >= Duration::from_millis(100),
            "answered before the deadline: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(500),
            "the deadline was not enforced promptly: {elapsed:?}"
        );
    }
    assert_eq!(
        upstream.requests(),
        0,
        "no looping request reached the upstream"
    );
    assert!(
        gateway.wait_for_log("deadline", Duration::from_secs(5)),
        "{}",
        gateway.logs()
    );
}

/// Sends `GET url` one request after another until `done` says stop (at least `min` times);
/// returns each status with its latency.
async fn keep_requesting(url: String, min: usize, done: impl Fn() -> bool) -> Vec<(u16, Duration)> {
    let client = client();
    let mut answers = Vec::new();
    while answers.len() < min || !done() {
        let sent = Instant::now();
        let reply = send(&client, request("GET", &url, &[], empty())).await;
        answers.push((reply.status.as_u16(), sent.elapsed()));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_plugins_do_not_starve_requests_on_other_routes() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"spin\"\npath = \"/spin\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"loop\", limits = {{ deadline = \"1s\" }} }}]\n\
         \n[[routes]]\nname = \"healthy\"\npath = \"/healthy\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"transform\", limits = {{ deadline = \"2s\" }} }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(
        &config,
        &[("loop", fx::FX_LOOP), ("transform", fx::FX_TRANSFORM)],
    );
    let healthy_url = gateway.url("/healthy");
    // The healthy route alone, warm: the yardstick.
    let alone = keep_requesting(healthy_url.clone(), 5, || true).await;
    assert!(alone.iter().all(|(status, _)| *status == 200), "{alone:?}");

    // One spinning plugin per gateway worker thread (one per core) for a whole second,
    // while another client sends healthy requests one after another.
    let spinning = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let mut spins = Vec::new();
    for _ in 0..2 {
        let (url, spinning) = (gateway.url("/spin"), spinning.clone());
        spins.push(tokio::spawn(async move {
            let reply = get(&url).await;
            spinning.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            reply
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let still_spinning = spinning.clone();
    let healthy = keep_requesting(healthy_url, 5, move || {
        still_spinning.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
    for spin in spins {
        gateway_error(&spin.await.expect("a spin client"), 504, "stage_timeout");
    }

    let mut times: Vec<Duration> = healthy.iter().map(|(_, t)| *t).collect();
    times.sort();
    let (median, slowest) = (times[times.len() / 2], times[times.len() - 1]);
    eprintln!(
        "healthy alone: {:?}; while spinning: {} answers, median {median:?}, slowest {slowest:?}",
        alone.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        healthy.len()
    );
    assert!(
        healthy.iter().all(|(status, _)| *status == 200),
        "{healthy:?}"
    );
    // A spinning guest must hand its worker thread back often enough for the gateway to
    // keep serving: requests elsewhere stay fast, not queued for a spin's whole second.
    assert!(
        median < Duration::from_millis(50),
        "healthy requests slowed to a median of {median:?} while plugins spun: {times:?}"
    );
    assert!(
        slowest < Duration::from_millis(750),
        "a healthy request took {slowest:?} while plugins spun: {times:?}"
    );
    assert_eq!(
        upstream.requests(),
        alone.len() + healthy.len(),
        "no spinning request reached the upstream"
    );
}

#[tokio::test]
async fn a_memory_bomb_hits_its_cap_and_the_gateway_memory_stays_bounded() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"bomb\"\npath = \"/bomb\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"membomb\", limits = {{ memory = \"16MiB\", deadline = \"5s\" }} }}]\n\
         \n[[routes]]\nname = \"healthy\"\npath = \"/healthy\"\nupstream = \"echo\"\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("membomb", fx::FX_MEMBOMB)]);
    let client = client();

    let first = send(&client, request("GET", &gateway.url("/bomb"), &[], empty())).await;
    let body = gateway_error(&first, 500, "stage_failed");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("membomb")),
        "{body}"
    );
    let baseline = gateway.rss_kib();
    for _ in 0..20 {
        let reply = send(&client, request("GET", &gateway.url("/bomb"), &[], empty())).await;
        gateway_error(&reply, 500, "stage_failed");
    }
    let after = gateway.rss_kib();
    eprintln!("gateway RSS: {baseline} KiB after the first bomb, {after} KiB after 20 more");
    // Each bomb fills 16 MiB; keeping any of it per request would add hundreds of MiB.
    assert!(
        after < baseline + 32 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB over 20 memory bombs"
    );
    assert!(after < 256 * 1024, "RSS is {after} KiB");
    assert!(
        gateway.wait_for_log("memory cap", Duration::from_secs(5)),
        "the log names the cause:\n{}",
        gateway.logs()
    );
    assert_eq!(
        get(&gateway.url("/healthy")).await.status,
        200,
        "the gateway still serves"
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn a_trap_answers_500_without_leaking_the_panic_text() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"trap\"\npath = \"/trap\"\nupstream = \"echo\"\nstages = [{{ plugin = \"trap\" }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("trap", fx::FX_TRAP)]);

    let reply = get(&gateway.url("/trap")).await;
    let body = gateway_error(&reply, 500, "stage_failed");
    let text = reply.text();
    assert!(
        !text.contains("deliberate panic") && !text.contains("panicked"),
        "guest detail leaked: {text}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("trap")),
        "the message names the plugin: {body}"
    );
    assert!(
        gateway.wait_for_log(
            "deliberate panic in on-request for /trap",
            Duration::from_secs(5)
        ),
        "the panic text belongs in the log:\n{}",
        gateway.logs()
    );
    assert_eq!(upstream.requests(), 0);
    // One trap ends one request: the next one is served (and traps) the same way.
    gateway_error(&get(&gateway.url("/trap")).await, 500, "stage_failed");
}

#[tokio::test]
async fn an_invalid_header_from_a_plugin_is_refused_with_500() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"badheader\"\npath = \"/bad\"\nupstream = \"echo\"\nstages = [{{ plugin = \"badheader\" }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("badheader", fx::FX_BADHEADER)]);

    let reply = get(&gateway.url("/bad")).await;
    let body = gateway_error(&reply, 500, "stage_failed");
    assert!(
        !reply.text().contains("x-bad name"),
        "guest detail leaked: {body}"
    );
    assert_eq!(
        upstream.requests(),
        0,
        "the invalid header must never be forwarded"
    );
    assert!(
        gateway.wait_for_log("invalid header name", Duration::from_secs(5)),
        "{}",
        gateway.logs()
    );
}

#[tokio::test]
async fn a_plugin_of_no_known_world_is_not_loaded_and_its_route_answers_503() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"wrong\"\npath = \"/wrong\"\nupstream = \"echo\"\nstages = [{{ plugin = \"wrongworld\" }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let plugins = [("wrongworld", fx::FX_WRONGWORLD)];

    let checked = check_as(
        "gateway.toml",
        &with_cache(&config),
        &[("wrongworld", Path::new(fx::FX_WRONGWORLD))],
    );
    assert_ne!(checked.code, Some(0), "check must fail: {checked:?}");
    let message = checked
        .stderr
        .lines()
        .find(|line| line.contains("`wrongworld`"))
        .unwrap_or_else(|| panic!("no line names the plugin: {checked:?}"));
    for expected in [
        "auth",
        "rate-limit",
        "transform",
        "aggregate",
        "authenticate",
        "on-request",
        "plan",
    ] {
        assert!(
            message.contains(expected),
            "the message should name the expected worlds ({expected}): {message}"
        );
    }
    assert!(
        message.contains("found: hello"),
        "the message should name the found export `hello`: {message}"
    );

    let gateway = start(&config, &plugins);
    let reply = get(&gateway.url("/wrong")).await;
    let body = gateway_error(&reply, 503, "plugin_unavailable");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("wrongworld")),
        "the message names the plugin: {body}"
    );
    assert_eq!(upstream.requests(), 0);
    assert!(
        gateway.wait_for_log("implements no wasmgate world", Duration::from_secs(5)),
        "{}",
        gateway.logs()
    );
}

/// Runs `wasmgate run` on `config` with `plugins` and expects it to exit on its own within a
/// minute; returns the exit code and everything it wrote to stderr.
fn run_until_exit(config: &str, plugins: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = TempDir::new();
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir_all(&plugin_dir).expect("creating the plugin dir");
    for (name, wasm) in plugins {
        std::fs::copy(wasm, plugin_dir.join(format!("{name}.wasm"))).expect("copying a plugin");
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n{}",
            with_cache(config)
        ),
    )
    .expect("writing the config");
    let mut child = Command::new(WASMGATE)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning wasmgate run");
    let stderr = child.stderr.take().expect("piped stderr");
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut text = sink.lock().expect("stderr buffer");
            text.push_str(&line);
            text.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling wasmgate run") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wasmgate run kept running on a config it should refuse:\n{}",
                text.lock().expect("stderr buffer")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().expect("the stderr reader");
    let text = text.lock().expect("stderr buffer").clone();
    (status.code(), text)
}

#[test]
fn a_config_the_plugin_rejects_fails_check_and_run() {
    let config = "[upstreams.echo]\ntargets = [\"127.0.0.1:9\"]\n\n\
                  [[routes]]\nname = \"ok\"\npath = \"/ok\"\nupstream = \"echo\"\n\n\
                  [[routes]]\nname = \"picky\"\npath = \"/picky\"\nupstream = \"echo\"\n\
                  stages = [{ plugin = \"badconfig\", config = { threshold = 0 } }]\n";
    let plugins = [("badconfig", fx::FX_BADCONFIG)];

    let checked = check_as(
        "gateway.toml",
        &with_cache(config),
        &[("badconfig", Path::new(fx::FX_BADCONFIG))],
    );
    assert_ne!(checked.code, Some(0), "check must fail: {checked:?}");
    let line = checked
        .stderr
        .lines()
        .find(|line| line.contains("threshold must be positive"))
        .unwrap_or_else(|| panic!("no line carries the plugin's message: {checked:?}"));
    for expected in ["route `picky`", "stage 0", "badconfig", "gateway.toml:"] {
        assert!(
            line.contains(expected),
            "the problem should name {expected}: {line}"
        );
    }

    let (code, stderr) = run_until_exit(config, &plugins);
    assert_ne!(code, Some(0), "run must refuse the config:\n{stderr}");
    assert!(
        stderr.contains("threshold must be positive"),
        "run names the problem:\n{stderr}"
    );
    assert!(
        stderr.contains("route `picky`") && stderr.contains("stage 0"),
        "run names route and stage:\n{stderr}"
    );
    assert!(
        !stderr.contains("\"listening\""),
        "run must not start serving:\n{stderr}"
    );
}

// === Failure policy ===

#[tokio::test]
async fn fail_open_lets_the_request_through_and_fail_closed_refuses_it() {
    let upstream = TestUpstream::start(handler::echo);
    let route = |name: &str, plugin: &str, policy: &str| {
        format!(
            "\n[[routes]]\nname = \"{name}\"\npath = \"/{name}\"\nupstream = \"echo\"\nstages = [{{ plugin = \"{plugin}\"{policy} }}]\n"
        )
    };
    let open = ", on-error = \"fail-open\"";
    let config = format!(
        "{}{}{}{}{}{}",
        upstream_toml("echo", upstream.addr(), ""),
        route("trap-open", "trap", open),
        route("trap-closed", "trap", ""),
        route(
            "trap-explicitly-closed",
            "trap",
            ", on-error = \"fail-closed\""
        ),
        route("missing-open", "absent", open),
        route("missing-closed", "absent", ""),
    );
    let gateway = start(&config, &[("trap", fx::FX_TRAP)]);
    let client = client();
    let fetch = |path: &str| send(&client, request("GET", &gateway.url(path), &[], empty()));

    let reply = fetch("/trap-open").await;
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert_eq!(reply.json()["path"], "/trap-open");
    gateway_error(&fetch("/trap-closed").await, 500, "stage_failed");
    gateway_error(&fetch("/trap-explicitly-closed").await, 500, "stage_failed");
    let reply = fetch("/missing-open").await;
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    let body = gateway_error(&fetch("/missing-closed").await, 503, "plugin_unavailable");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("absent")),
        "{body}"
    );
    assert_eq!(
        upstream.requests(),
        2,
        "only the fail-open requests reach the upstream"
    );
    assert!(
        gateway.wait_for_log("fail-open", Duration::from_secs(5)),
        "a skipped stage is logged:\n{}",
        gateway.logs()
    );
}

#[tokio::test]
async fn a_stage_out_of_fuel_answers_504_long_before_its_deadline() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"metered\"\npath = \"/metered\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"loop\", limits = {{ fuel = 1000000, deadline = \"10s\" }} }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[("loop", fx::FX_LOOP)]);

    let started = Instant::now();
    let reply = get(&gateway.url("/metered")).await;
    let elapsed = started.elapsed();
    gateway_error(&reply, 504, "stage_timeout");
    assert!(
        elapsed < Duration::from_secs(2),
        "fuel should stop the loop long before the 10s deadline: {elapsed:?}"
    );
    assert!(
        gateway.wait_for_log("out of fuel", Duration::from_secs(5)),
        "{}",
        gateway.logs()
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_instance_pool_answers_503_promptly() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "[plugins]\nmax-instances = 1\n\n{}\n[[routes]]\nname = \"loop\"\npath = \"/loop\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"loop\", limits = {{ deadline = \"1500ms\" }} }}]\n\
         \n[[routes]]\nname = \"healthy\"\npath = \"/healthy\"\nupstream = \"echo\"\nstages = [{{ plugin = \"transform\", limits = {{ deadline = \"2s\" }} }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    // `with_cache` adds its own `[plugins]` table; write this one whole instead.
    let config = config.replacen(
        "[plugins]\n",
        &format!("[plugins]\ncache-dir = {PLUGIN_CACHE:?}\nwatch = false\n"),
        1,
    );
    let plugins: Vec<(&str, &Path)> = vec![
        ("loop", Path::new(fx::FX_LOOP)),
        ("transform", Path::new(fx::FX_TRANSFORM)),
    ];
    let gateway = TestGateway::start_with_plugins(&config, &plugins);
    assert_eq!(
        get(&gateway.url("/healthy")).await.status,
        200,
        "one instance at a time is enough"
    );

    // The loop holds the only instance slot for 1.5s. Once it has the slot, a healthy
    // request is refused at once: the answer comes while the loop still runs (no queue).
    let loop_url = gateway.url("/loop");
    // The loop request may itself be refused while a healthy request holds the slot: it
    // retries until it runs.
    let looping = tokio::spawn(async move {
        loop {
            let reply = get(&loop_url).await;
            if reply.status != 503 {
                return reply;
            }
        }
    });
    let mut refused = None;
    while !looping.is_finished() {
        let reply = get(&gateway.url("/healthy")).await;
        if reply.status == 503 {
            refused = Some((reply, looping.is_finished()));
            break;
        }
    }
    let (reply, loop_done) = refused.expect("a healthy request was refused while the loop ran");
    gateway_error(&reply, 503, "overloaded");
    assert!(
        !loop_done,
        "the refusal did not wait for the slot to free up"
    );
    gateway_error(
        &looping.await.expect("the loop request"),
        504,
        "stage_timeout",
    );
    assert_eq!(
        get(&gateway.url("/healthy")).await.status,
        200,
        "the slot is free again"
    );
}

#[tokio::test]
async fn a_fail_open_stage_whose_plugin_is_missing_does_not_let_identity_headers_through() {
    let upstream = TestUpstream::start(handler::echo);
    // The auth plugin is configured but absent: its kind is unknown, so the gateway cannot
    // rule out that it is an auth stage and must treat identity headers as spoofed.
    let config = format!(
        "{}\n[[routes]]\nname = \"open\"\nprefix = \"/\"\nupstream = \"echo\"\n\
         stages = [{{ plugin = \"auth\", on-error = \"fail-open\" }}]\n",
        upstream_toml("echo", upstream.addr(), "")
    );
    let gateway = start(&config, &[]);

    let spoofing = request(
        "GET",
        &gateway.url("/me"),
        &[("x-auth-subject", "admin"), ("x-auth-claim-role", "admin")],
        empty(),
    );
    let headers = echoed_headers(&send(&client(), spoofing).await);
    assert!(
        headers.get("x-auth-subject").is_none(),
        "a client-chosen identity reached the upstream: {headers}"
    );
    assert!(
        headers.get("x-auth-claim-role").is_none(),
        "a client-chosen claim reached the upstream: {headers}"
    );
}

#[tokio::test]
async fn a_missing_fail_open_aggregate_answers_503_not_404() {
    let fast = TestUpstream::start(handler::echo);
    let config = format!(
        "{}\n[[routes]]\nname = \"agg\"\npath = \"/agg\"\n\
         stages = [{{ plugin = \"aggregate\", on-error = \"fail-open\", upstreams = [\"fast\"], config = {{ calls = [\
           {{ name = \"a\", upstream = \"fast\", uri = \"/a\" }}] }} }}]\n",
        upstream_toml("fast", fast.addr(), "")
    );
    let gateway = start(&config, &[]);

    // There is nothing to fall through to: the aggregate is the route's answer.
    let reply = get(&gateway.url("/agg")).await;
    let body = gateway_error(&reply, 503, "plugin_unavailable");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("aggregate")),
        "{body}"
    );
}
