//! Opt-in instance reuse (`limits.reuse`), black-box: the real `wasmgate` binary, a real
//! loopback upstream and the real `fx-transform` fixture, which reports how many calls its
//! instance has served (`x-instance-calls`), can hold memory on purpose (`/leak/<kib>`) and
//! can trap (`/panic`).
//!
//! Covered: fresh instances by default, reuse up to `max-calls`, recycling at the
//! memory high-water mark, a failed call dropping its instance, concurrent calls each on
//! their own instance, request variables not leaking from one request to the next, and the
//! config checks.

mod common;

use std::path::Path;

use common::{TestGateway, TestUpstream, check_as, get, handler};
use wasmgate_fixtures as fx;

const PLUGIN_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/reuse-plugin-cache");

/// A gateway with one route per `(path, limits)` pair, each with an `fx-transform` stage in
/// front of an echo upstream.
fn gateway(upstream: &TestUpstream, routes: &[(&str, &str)]) -> TestGateway {
    let mut config = format!(
        "[plugins]\ncache-dir = {PLUGIN_CACHE:?}\nwatch = false\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstreams.echo]\ntargets = [\"{}\"]\n",
        upstream.addr()
    );
    for (i, (prefix, limits)) in routes.iter().enumerate() {
        config.push_str(&format!(
            "\n[[routes]]\nname = \"r{i}\"\nprefix = \"{prefix}\"\nupstream = \"echo\"\n\
             stages = [{{ plugin = \"transform\", config = {{ tag = \"t{i}\" }}, limits = {limits} }}]\n"
        ));
    }
    TestGateway::start_with_plugins(&config, &[("transform", Path::new(fx::FX_TRANSFORM))])
}

/// `x-instance-calls` as the upstream received it, for a GET of `path`.
async fn instance_calls(gateway: &TestGateway, path: &str) -> u32 {
    let reply = get(&gateway.url(path)).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    let echoed = reply.json();
    echoed["headers"]["x-instance-calls"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no x-instance-calls in {echoed}"))
}

async fn sequence(gateway: &TestGateway, path: &str, n: usize) -> Vec<u32> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        seen.push(instance_calls(gateway, path).await);
    }
    seen
}

#[tokio::test]
async fn instances_are_fresh_by_default_and_reused_up_to_max_calls_when_enabled() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway = gateway(
        &upstream,
        &[
            ("/fresh", "{}"),
            ("/reused", "{ reuse = { max-calls = 6 } }"),
        ],
    );
    assert_eq!(
        sequence(&gateway, "/fresh", 4).await,
        [1, 1, 1, 1],
        "without `reuse` every call gets a fresh instance"
    );
    assert_eq!(
        sequence(&gateway, "/reused", 7).await,
        [1, 2, 3, 1, 2, 3, 1],
        "an instance serves `max-calls` calls, then a fresh one takes over (a transform \
         stage makes two calls per request, on-request and on-response: 6 calls = 3 requests)"
    );

    // Request variables belong to their request: each response phase sees its own
    // request's variable, even on a reused instance.
    for _ in 0..3 {
        let reply = get(&gateway.url("/reused/vars")).await;
        assert_eq!(reply.header("x-seen-var"), Some("t1"), "{reply:?}");
    }
}

#[tokio::test]
async fn an_instance_that_grew_past_max_memory_is_recycled() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway = gateway(
        &upstream,
        &[
            ("/capped", "{ reuse = { max-memory = \"6MiB\" } }"),
            ("/uncapped", "{ reuse = {} }"),
        ],
    );
    // Each call keeps 1 MiB alive in the instance. Without a high-water mark the instance
    // lives on; with one it is dropped after the call that crossed the mark.
    assert_eq!(
        sequence(&gateway, "/uncapped/leak/1024", 8).await,
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    let capped = sequence(&gateway, "/capped/leak/1024", 8).await;
    let longest = capped.iter().copied().max().unwrap_or(0);
    assert!(
        (2..=6).contains(&longest) && capped.contains(&1) && capped[1..].contains(&1),
        "the instance must be recycled once it holds more than 6 MiB: {capped:?}"
    );
}

#[tokio::test]
async fn a_call_that_fails_drops_its_instance() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway = gateway(&upstream, &[("/r", "{ reuse = {} }")]);
    assert_eq!(sequence(&gateway, "/r", 3).await, [1, 2, 3]);
    let reply = get(&gateway.url("/r/panic")).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(
        sequence(&gateway, "/r", 2).await,
        [1, 2],
        "the trapped instance must not serve again"
    );
}

#[tokio::test]
async fn concurrent_calls_run_on_separate_instances_and_at_most_max_idle_are_kept() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway = gateway(&upstream, &[("/r", "{ reuse = { max-idle = 2 } }")]);
    let burst =
        futures_util::future::join_all((0..32).map(|_| instance_calls(&gateway, "/r"))).await;
    // Each instance numbers its calls 1, 2, 3…: whatever the interleaving, a call number k
    // can only appear as often as the numbers below it.
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for &n in &burst {
        *counts.entry(n).or_default() += 1;
    }
    assert!(counts.contains_key(&1), "{burst:?}");
    for (&n, &count) in &counts {
        let below = counts.get(&(n - 1)).copied().unwrap_or(usize::MAX);
        assert!(
            n == 1 || count <= below,
            "call {n} seen {count} times but call {} only {below}: {burst:?}",
            n - 1
        );
    }

    let status = get(&format!("http://{}/status", gateway.admin_addr()))
        .await
        .json();
    let pools = status["reuse_pools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pools.len(), 1, "{status}");
    let pool = &pools[0];
    assert_eq!(pool["route"], "r0", "{pool}");
    assert_eq!(pool["plugin"], "transform", "{pool}");
    let idle = pool["idle"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (1..=2).contains(&idle),
        "at most max-idle = 2 are kept: {pool}"
    );
    let reused = pool["reused_calls"].as_u64().unwrap_or(0);
    assert!(
        reused > 0 && reused < 64,
        "64 calls, some on kept instances: {pool}"
    );

    // A sequential client after the burst runs on one kept instance.
    let after = sequence(&gateway, "/r", 3).await;
    assert!(
        after.windows(2).all(|w| w[1] == w[0] + 1),
        "one instance serves a sequential client: {after:?}"
    );
}

#[test]
fn reuse_settings_are_checked() {
    let route = "[upstreams.echo]\ntargets = [\"127.0.0.1:9\"]\n\n\
                 [[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"echo\"\n\
                 stages = [{ plugin = \"transform\" }]\n";
    let plugins = [("transform", Path::new(fx::FX_TRANSFORM))];
    for (limits, key, message) in [
        (
            "reuse = { max-calls = 0 }",
            "plugins.limits.transform.reuse.max-calls",
            "must be at least 1",
        ),
        (
            "reuse = { max-idle = 0 }",
            "plugins.limits.transform.reuse.max-idle",
            "must be at least 1",
        ),
        (
            "reuse = { recycle-after = 5 }",
            "plugins.limits.transform.reuse",
            "unknown field `recycle-after`",
        ),
    ] {
        let config = format!("[plugins.limits.transform]\n{limits}\n\n{route}");
        let checked = check_as("gateway.toml", &config, &plugins);
        assert_ne!(checked.code, Some(0), "{limits}: {checked:?}");
        assert!(
            checked.stderr.contains(key) && checked.stderr.contains(message),
            "{limits}: expected `{key}`: {message}; got {checked:?}"
        );
        assert!(checked.stderr.contains("gateway.toml:"), "{checked:?}");
    }
}
