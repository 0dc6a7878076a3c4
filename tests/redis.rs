//! Shared state in Redis, black-box: real `wasmgate` processes sharing one real
//! `redis-server` (or a three-master Redis Cluster) started on free loopback ports.
//!
//! Covered: several gateways enforce one global limit (`counters.increment` through the
//! `fx-ratelimit` fixture, windows and GCRA through the bundled `rate-limit` plugin), the
//! `kv` interface across gateways, the failure policies while Redis is paused or killed
//! (and that counting resumes when it returns), a gateway started before Redis, and Redis
//! Cluster.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::redis::{RedisCluster, RedisServer};
use common::{Reply, TestGateway, client, empty, request, send};
use futures_util::future::join_all;
use wasmgate_fixtures as fx;

/// Compiled plugins are cached here across every gateway these tests start.
const PLUGIN_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/redis-plugin-cache");

/// A gateway config: the shared compile cache, a stage deadline that a debug build under
/// a burst of requests cannot miss, `state`, then `routes`.
fn config(state: &str, routes: &str) -> String {
    format!(
        "[plugins]\ncache-dir = {PLUGIN_CACHE:?}\n\n[limits]\ndeadline = \"5s\"\n\n[state]\n{state}\n\n{routes}"
    )
}

/// `[state]` for one Redis at `url`, with extra keys. The timeout is generous unless
/// `extra` sets one: these tests count, the outage tests below measure latency.
fn redis_state(url: &str, extra: &str) -> String {
    let timeout = if extra.contains("timeout") {
        ""
    } else {
        "timeout = \"2s\"\n"
    };
    format!("backend = \"redis\"\nurl = \"{url}\"\n{timeout}{extra}")
}

/// A route `/limited` answered by `respond` behind the `fx-ratelimit` fixture.
fn fixture_route(limit: u64, window_ms: u64) -> String {
    format!(
        "[[routes]]\nname = \"limited\"\npath = \"/limited\"\nrespond = {{ status = 200, body = \"ok\" }}\n\
         stages = [{{ plugin = \"ratelimit\", config = {{ limit = {limit}, window_ms = {window_ms} }} }}]\n"
    )
}

/// Starts `count` gateways on one config, each with `plugins` (`(name, wasm path)`).
fn start_gateways(count: usize, config: &str, plugins: &[(&str, &str)]) -> Vec<TestGateway> {
    let plugins: Vec<(&str, &Path)> = plugins
        .iter()
        .map(|(name, path)| (*name, Path::new(*path)))
        .collect();
    (0..count)
        .map(|_| {
            let gateway = TestGateway::start_with_plugins(config, &plugins);
            if config.contains("backend = \"redis\"") {
                assert!(
                    gateway.wait_for_log("shared state: Redis connected", Duration::from_secs(10)),
                    "the gateway did not connect to Redis; logs:\n{}",
                    gateway.logs()
                );
            }
            gateway
        })
        .collect()
}

/// Sends `total` GETs of `path` at once, spread round-robin over `gateways`.
async fn burst(gateways: &[TestGateway], path: &str, total: usize) -> Vec<Reply> {
    let client = client();
    join_all((0..total).map(|i| {
        let url = gateways[i % gateways.len()].url(path);
        let client = client.clone();
        async move { send(&client, request("GET", &url, &[], empty())).await }
    }))
    .await
}

fn statuses(replies: &[Reply]) -> (usize, usize, Vec<u16>) {
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    let other = replies
        .iter()
        .map(|r| r.status.as_u16())
        .filter(|s| *s != 200 && *s != 429)
        .collect();
    (ok, limited, other)
}

async fn one_global_limit(gateways: usize) {
    let redis = RedisServer::start();
    let config = config(&redis_state(&redis.url(), ""), &fixture_route(25, 60_000));
    let gateways = start_gateways(gateways, &config, &[("ratelimit", fx::FX_RATELIMIT)]);
    let replies = burst(&gateways, "/limited", 100).await;
    let (ok, limited, other) = statuses(&replies);
    assert_eq!(other, Vec::<u16>::new(), "only 200 and 429");
    assert_eq!(ok, 25, "exactly the limit passes across all gateways");
    assert_eq!(limited, 75);
    // Every gateway refuses now, whichever got the allowed requests.
    for gateway in &gateways {
        let reply = burst(std::slice::from_ref(gateway), "/limited", 1).await;
        assert_eq!(reply[0].status, 429);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_sharing_one_redis_enforce_one_limit() {
    one_global_limit(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_sharing_one_redis_enforce_one_limit() {
    one_global_limit(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_state_config_each_gateway_counts_alone() {
    // The control: the same two gateways without `[state]` let the limit through twice,
    // so the tests above would fail if Redis were not what shares the count.
    let config = format!(
        "[plugins]\ncache-dir = {PLUGIN_CACHE:?}\n\n[limits]\ndeadline = \"5s\"\n\n{}",
        fixture_route(25, 60_000)
    );
    let gateways = start_gateways(2, &config, &[("ratelimit", fx::FX_RATELIMIT)]);
    let (ok, _, _) = statuses(&burst(&gateways, "/limited", 100).await);
    assert_eq!(ok, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_namespaced_by_prefix_and_plugin_and_expire_with_the_window() {
    let redis = RedisServer::start();
    let config = config(
        &redis_state(&redis.url(), "key-prefix = \"edge\""),
        &fixture_route(5, 60_000),
    );
    let gateways = start_gateways(1, &config, &[("ratelimit", fx::FX_RATELIMIT)]);
    burst(&gateways, "/limited", 3).await;
    let mut connection = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    assert_eq!(keys, vec!["edge:c:{ratelimit|ip:127.0.0.1}".to_string()]);
    let value: u64 = redis::cmd("GET")
        .arg(&keys[0])
        .query(&mut connection)
        .unwrap();
    assert_eq!(value, 3);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query(&mut connection)
        .unwrap();
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "the window is the key's TTL: {ttl}"
    );
}

// === The bundled rate-limit plugin: windows on Redis' clock, GCRA ===

/// A route `/limited` behind the bundled `rate-limit` plugin with `stage_config` (TOML).
fn bundled_route(stage_config: &str) -> String {
    format!(
        "[[routes]]\nname = \"limited\"\npath = \"/limited\"\nrespond = {{ status = 200, body = \"ok\" }}\n\
         stages = [{{ plugin = \"rate-limit\", config = {stage_config} }}]\n"
    )
}

fn bundled() -> [(&'static str, &'static str); 1] {
    [("rate-limit", fx::PLUGIN_RATE_LIMIT)]
}

/// Redis' clock, in milliseconds.
fn redis_now_ms(connection: &mut redis::Connection) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(connection).unwrap();
    seconds * 1000 + micros / 1000
}

/// The window pairs of the bundled plugin in Redis: `(index, count)` of each limit's
/// previous and current windows (one hash per limit and client).
fn window_counts(connection: &mut redis::Connection) -> Vec<(u64, u64)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("wasmgate:w:*")
        .query(connection)
        .unwrap();
    let mut counts = Vec::new();
    for key in keys {
        let (index, current, previous): (u64, u64, u64) = redis::cmd("HMGET")
            .arg(&key)
            .arg("i")
            .arg("c")
            .arg("p")
            .query(connection)
            .unwrap();
        counts.push((index - 1, previous));
        counts.push((index, current));
    }
    counts.retain(|(_, count)| *count > 0);
    counts.sort();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_windows_hold_one_limit_across_gateways_through_a_boundary_burst() {
    let redis = RedisServer::start();
    let config = config(
        &redis_state(&redis.url(), ""),
        &bundled_route("{ limits = [{ requests = 10, window = \"1s\" }] }"),
    );
    let gateways = start_gateways(2, &config, &bundled());
    let mut connection = redis.connection();
    // From 800 ms into a window of Redis' clock, send bursts of 16 until 200 ms into the
    // next one: the burst straddles the boundary.
    while redis_now_ms(&mut connection) % 1000 < 800 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let boundary = redis_now_ms(&mut connection) / 1000 * 1000 + 1000;
    let mut replies = Vec::new();
    while redis_now_ms(&mut connection) < boundary + 200 {
        replies.extend(burst(&gateways, "/limited", 16).await);
    }
    let (ok, limited, other) = statuses(&replies);
    assert!(other.is_empty(), "only 200 and 429: {other:?}");
    let windows = window_counts(&mut connection);
    let counted: u64 = windows.iter().map(|(_, count)| count).sum();
    assert_eq!(
        counted,
        replies.len() as u64,
        "every request was counted once, in Redis: {windows:?}"
    );
    let allowed: u64 = windows.iter().map(|(_, count)| (*count).min(10)).sum();
    assert_eq!(
        ok as u64, allowed,
        "exactly the limit in each window, across both gateways: {windows:?}"
    );
    assert_eq!(ok + limited, replies.len());
    let full = windows.iter().filter(|(_, count)| *count >= 10).count();
    assert!(
        full >= 2 && ok == 10 * windows.len(),
        "the burst filled both windows around the boundary, each allowing exactly 10: {windows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcra_enforces_one_burst_across_gateways() {
    let redis = RedisServer::start();
    let config = config(
        &redis_state(&redis.url(), ""),
        &bundled_route(
            "{ algorithm = \"gcra\", limits = [{ requests = 10, window = \"1m\", burst = 5 }] }",
        ),
    );
    let gateways = start_gateways(2, &config, &bundled());
    let replies = burst(&gateways, "/limited", 40).await;
    let (ok, limited, other) = statuses(&replies);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(
        (ok, limited),
        (5, 35),
        "one burst of 5 for both gateways together"
    );
    let refused = replies.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(
        refused.header("retry-after"),
        Some("6"),
        "one request per 6 s after the burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sliding_windows_hold_one_limit_across_gateways() {
    let redis = RedisServer::start();
    let config = config(
        &redis_state(&redis.url(), ""),
        &bundled_route(
            "{ algorithm = \"sliding\", limits = [{ requests = 10, window = \"1m\" }] }",
        ),
    );
    let gateways = start_gateways(2, &config, &bundled());
    let (ok, limited, other) = statuses(&burst(&gateways, "/limited", 30).await);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((ok, limited), (10, 20));
}

// === The kv interface ===

fn kv_routes() -> String {
    "[[routes]]\nname = \"kv\"\nprefix = \"/kv\"\nrespond = { status = 500 }\n\
     stages = [{ plugin = \"kv\", body = { buffer = true } }]\n\n\
     [[routes]]\nname = \"other\"\nprefix = \"/other/kv\"\nstrip-prefix = \"/other\"\nrespond = { status = 500 }\n\
     stages = [{ plugin = \"kv-other\", body = { buffer = true } }]\n"
        .to_string()
}

fn kv_plugins() -> [(&'static str, &'static str); 2] {
    [("kv", fx::FX_KV), ("kv-other", fx::FX_KV)]
}

async fn kv_call(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let body = if body.is_empty() {
        empty()
    } else {
        common::full(body.to_string())
    };
    send(
        &client(),
        request(method, &gateway.url(path), headers, body),
    )
    .await
}

async fn kv_is_shared_between(a: &TestGateway, b: &TestGateway) {
    let put = kv_call(a, "PUT", "/kv/session-1", &[], "alice").await;
    assert_eq!(put.status, 204, "{}", put.text());
    let got = kv_call(b, "GET", "/kv/session-1", &[], "").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "alice"));
    let other = kv_call(b, "GET", "/other/kv/session-1", &[], "").await;
    assert_eq!(other.status, 404, "another plugin has its own namespace");

    let stale = kv_call(
        b,
        "POST",
        "/kv/session-1",
        &[("x-expect", "mallory")],
        "bob",
    )
    .await;
    assert_eq!(stale.status, 409);
    let swapped = kv_call(b, "POST", "/kv/session-1", &[("x-expect", "alice")], "bob").await;
    assert_eq!(swapped.status, 200);
    assert_eq!(
        kv_call(a, "GET", "/kv/session-1", &[], "").await.text(),
        "bob"
    );
    let taken = kv_call(
        a,
        "POST",
        "/kv/session-1",
        &[("x-expect-absent", "1")],
        "eve",
    )
    .await;
    assert_eq!(taken.status, 409, "set-if-absent refuses a present key");
    let claimed = kv_call(
        a,
        "POST",
        "/kv/idem-7",
        &[("x-expect-absent", "1")],
        "first",
    )
    .await;
    assert_eq!(claimed.status, 200);
    let again = kv_call(
        b,
        "POST",
        "/kv/idem-7",
        &[("x-expect-absent", "1")],
        "second",
    )
    .await;
    assert_eq!(
        again.status, 409,
        "an idempotency key is claimed once across gateways"
    );

    let deleted = kv_call(a, "DELETE", "/kv/session-1", &[], "").await;
    assert_eq!(deleted.text(), "deleted");
    assert_eq!(
        kv_call(b, "GET", "/kv/session-1", &[], "").await.status,
        404
    );
    assert_eq!(
        kv_call(b, "DELETE", "/kv/session-1", &[], "").await.text(),
        "absent"
    );

    let short = kv_call(a, "PUT", "/kv/short?ttl=300", &[], "soon gone").await;
    assert_eq!(short.status, 204);
    assert_eq!(kv_call(b, "GET", "/kv/short", &[], "").await.status, 200);
    let mut gone = false;
    for _ in 0..100 {
        if kv_call(b, "GET", "/kv/short", &[], "").await.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the entry expired after its TTL");

    let big = "x".repeat(64 * 1024 + 1);
    let refused = kv_call(a, "PUT", "/kv/big", &[], &big).await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().contains("values are limited to 65536 bytes"),
        "{}",
        refused.text()
    );
    let long_key = format!("/kv/{}", "k".repeat(513));
    let refused = kv_call(a, "GET", &long_key, &[], "").await;
    assert!(
        refused.text().contains("keys are limited to 512 bytes"),
        "{}",
        refused.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_entries_are_shared_by_two_gateways() {
    let redis = RedisServer::start();
    let config = config(&redis_state(&redis.url(), ""), &kv_routes());
    let gateways = start_gateways(2, &config, &kv_plugins());
    kv_is_shared_between(&gateways[0], &gateways[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_works_in_process_too() {
    let config = format!("[plugins]\ncache-dir = {PLUGIN_CACHE:?}\n\n{}", kv_routes());
    let gateways = start_gateways(1, &config, &kv_plugins());
    kv_is_shared_between(&gateways[0], &gateways[0]).await;
}

// === Failure: Redis paused, killed, and back ===

/// What one request saw: its status and how long it took.
struct Sample {
    status: u16,
    took: Duration,
}

/// Sends `count` sequential requests to `path` and times each.
async fn sequential(gateway: &TestGateway, path: &str, count: usize) -> Vec<Sample> {
    let client = client();
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let reply = send(&client, request("GET", &gateway.url(path), &[], empty())).await;
        samples.push(Sample {
            status: reply.status.as_u16(),
            took: started.elapsed(),
        });
    }
    samples
}

fn p99(samples: &[Sample]) -> Duration {
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort();
    took[(took.len() * 99).div_ceil(100) - 1]
}

fn count(samples: &[Sample], status: u16) -> usize {
    samples.iter().filter(|s| s.status == status).count()
}

/// The latency budget of a request while Redis is down: the state timeout plus what a
/// debug build of the gateway and the plugin take around it on a busy 2-core machine (the
/// pause lasts 1.5 s: a request that waited for Redis instead of the timeout would take that).
const TIMEOUT: Duration = Duration::from_millis(50);
const SLACK: Duration = Duration::from_millis(100);

/// One gateway on `redis` with `policy`, limit 10 per minute (fixed window), 2 instances.
fn outage_gateway(redis: &RedisServer, policy: &str) -> TestGateway {
    let state = redis_state(
        &redis.url(),
        &format!(
            "timeout = \"50ms\"\non-unavailable = \"{policy}\"\ninstances = 2\n\
             breaker-failures = 3\nbreaker-cool-off = \"300ms\""
        ),
    );
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
        config(
            &state,
            &bundled_route("{ limits = [{ requests = 10, window = \"1m\" }] }")
        )
    );
    start_gateways(1, &config, &bundled()).remove(0)
}

/// Runs the outage script on a gateway with `policy`: Redis paused (`CLIENT PAUSE`), then
/// killed, then back. Returns the samples of the paused and killed phases.
async fn outage(policy: &str) -> (Vec<Sample>, Vec<Sample>, TestGateway) {
    let mut redis = RedisServer::start();
    let gateway = outage_gateway(&redis, policy);
    let healthy = sequential(&gateway, "/limited", 3).await;
    assert_eq!(count(&healthy, 200), 3);

    let mut control = redis.connection();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query(&mut control)
        .unwrap();
    let paused = sequential(&gateway, "/limited", 20).await;

    redis.kill();
    let killed = sequential(&gateway, "/limited", 20).await;

    // Back, empty (nothing was saved): counting resumes without a gateway restart.
    redis.restart();
    let mut connection = redis.connection();
    let mut resumed = false;
    for _ in 0..100 {
        let reply = sequential(&gateway, "/limited", 1).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("wasmgate:*")
            .query(&mut connection)
            .unwrap();
        if reply[0].status == 200 && !keys.is_empty() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        resumed,
        "counting in Redis resumed; logs:\n{}",
        gateway.logs()
    );
    (paused, killed, gateway)
}

fn assert_bounded(phase: &str, samples: &[Sample]) {
    let p99 = p99(samples);
    let max = samples.iter().map(|s| s.took).max().unwrap_or_default();
    eprintln!(
        "{phase}: p99 {p99:?}, max {max:?} over {} requests",
        samples.len()
    );
    assert!(
        p99 <= TIMEOUT + SLACK,
        "{phase}: p99 {p99:?} is over the 50 ms timeout plus {SLACK:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_policy_refuses_while_redis_is_away_within_the_timeout() {
    let (paused, killed, gateway) = outage("closed").await;
    assert_eq!(
        count(&paused, 503),
        paused.len(),
        "fail closed while paused"
    );
    assert_eq!(
        count(&killed, 503),
        killed.len(),
        "fail closed while killed"
    );
    assert_bounded("paused", &paused);
    assert_bounded("killed", &killed);
    assert!(
        gateway.logs().contains("Redis is failing"),
        "the outage is logged"
    );
    assert!(
        gateway.logs().contains("Redis answers again"),
        "so is the recovery"
    );
    let metrics = common::get(&format!("http://{}/metrics", gateway.admin_addr()))
        .await
        .text();
    for needle in [
        "wasmgate_state_errors_total{kind=\"timeout\"}",
        "wasmgate_state_errors_total{kind=\"breaker_open\"}",
        "wasmgate_state_unavailable_total{policy=\"closed\"}",
        "wasmgate_state_calls_total{op=\"window\"}",
        "wasmgate_state_breaker_open 0",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_policy_lets_everything_through_while_redis_is_away() {
    let (paused, killed, _gateway) = outage("open").await;
    assert_eq!(count(&paused, 200), paused.len());
    assert_eq!(count(&killed, 200), killed.len());
    assert_bounded("paused", &paused);
    assert_bounded("killed", &killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_policy_counts_in_process_with_the_limit_divided_by_instances() {
    let (paused, killed, _gateway) = outage("local").await;
    // 10 per minute over 2 instances: 5 in this process, counted once across the pause and
    // the kill (one local window).
    assert_eq!(count(&paused, 200) + count(&killed, 200), 5);
    assert_eq!(count(&paused, 429) + count(&killed, 429), 35);
    assert_bounded("paused", &paused);
    assert_bounded("killed", &killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_started_before_redis_counts_once_redis_is_up() {
    let port = common::closed_addr().port();
    let state = redis_state(
        &format!("redis://127.0.0.1:{port}"),
        "timeout = \"50ms\"\nbreaker-cool-off = \"200ms\"",
    );
    let config = config(
        &state,
        &bundled_route("{ limits = [{ requests = 10, window = \"1m\" }] }"),
    );
    // Not `start_gateways`: it would wait for the connection.
    let gateway = TestGateway::start_with_plugins(
        &config,
        &[("rate-limit", Path::new(fx::PLUGIN_RATE_LIMIT))],
    );
    assert!(
        gateway.wait_for_log("Redis is not reachable yet", Duration::from_secs(10)),
        "{}",
        gateway.logs()
    );
    let refused = sequential(&gateway, "/limited", 3).await;
    assert_eq!(
        count(&refused, 503),
        3,
        "fail closed while Redis is not there"
    );

    let redis = RedisServer::start_on(port, &[]);
    let mut connection = redis.connection();
    let mut counted = false;
    for _ in 0..200 {
        let reply = sequential(&gateway, "/limited", 1).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("wasmgate:*")
            .query(&mut connection)
            .unwrap();
        if reply[0].status == 200 && !keys.is_empty() {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        counted,
        "the gateway connected by itself; logs:\n{}",
        gateway.logs()
    );
}

// === Redis Cluster ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_master_cluster_holds_one_limit_and_shares_kv() {
    let cluster = RedisCluster::start();
    let state = redis_state(&cluster.url(), "cluster = true");
    let routes = format!(
        "{}\n{}",
        bundled_route("{ key = \"route\", limits = [{ requests = 10, window = \"1m\" }] }"),
        kv_routes()
    );
    let mut plugins = bundled().to_vec();
    plugins.extend(kv_plugins());
    let gateways = start_gateways(2, &config(&state, &routes), &plugins);
    let (ok, limited, other) = statuses(&burst(&gateways, "/limited", 40).await);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((ok, limited), (10, 30));
    kv_is_shared_between(&gateways[0], &gateways[1]).await;
    // Keys spread over the masters: every node holds some of them.
    let written: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|node| {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("*")
                .query(&mut node.connection())
                .unwrap();
            keys.len()
        })
        .collect();
    assert!(written.iter().sum::<usize>() >= 2, "{written:?}");
}
