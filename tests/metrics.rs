//! Prometheus metrics through the real binary after real traffic: request counters and
//! histogram buckets match the requests made, hostile plugins (a trap, an endless loop)
//! show in the plugin metrics, a reload shows in the reload metrics, labels stay bounded
//! when clients send random paths, and the exposition passes `promtool check metrics`
//! (Debian's `prometheus` package; `scripts/test.sh` installs it, CI requires it).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    TempDir, TestGateway, TestUpstream, client, empty, full, get, handler, request, send,
};
use http::StatusCode;
use wasmgate_fixtures as fx;

// === Reading the exposition ===

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A scraped exposition.
#[derive(Debug, Clone)]
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")))
            .collect();
        Self { text, samples }
    }

    /// The samples of `name` whose labels include every pair of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// The sum of the samples of `name` whose labels include `labels` (0 when none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The distinct values label `label` takes in the samples of `name`.
    fn label_values(&self, name: &str, label: &str) -> std::collections::BTreeSet<String> {
        self.matching(name, &[])
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// `name{k="v",…} value` (no timestamps, no escapes in our label values).
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"")?;
                let end = after.find('"')?;
                labels.push((key.to_string(), after[..end].to_string()));
                rest = after[end + 1..].trim_start_matches(',');
            }
            (name, labels)
        }
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let reply = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(reply.text())
}

/// Scrapes until `done` holds (metrics are recorded as response bodies end, which may be
/// just after the client has its answer); returns the last scrape either way.
async fn scrape_until(admin: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scraped = scrape(admin).await;
        if done(&scraped) || Instant::now() >= deadline {
            return scraped;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `promtool`, if installed.
fn promtool() -> Option<&'static str> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
}

/// Runs `promtool check metrics` on `text`; panics with its output when it complains.
/// Without promtool the check is skipped, except in CI.
fn promtool_check(text: &str) {
    let Some(promtool) = promtool() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (scripts/test.sh installs Debian's `prometheus`)"
        );
        eprintln!("promtool not found; skipping `promtool check metrics`");
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("writing to promtool");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition:\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// === Gateways ===

/// Compiled plugins are cached here across the gateways these tests start.
const PLUGIN_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/metrics-plugin-cache");

fn start(config: &str, plugins: &[(&str, &str)]) -> (TestGateway, SocketAddr) {
    let plugins: Vec<(&str, &Path)> = plugins
        .iter()
        .map(|(name, path)| (*name, Path::new(*path)))
        .collect();
    let config = format!(
        "[plugins]\ncache-dir = {PLUGIN_CACHE:?}\nwatch = false\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{config}"
    );
    let gateway = TestGateway::start_with_plugins(&config, &plugins);
    let admin = gateway.admin_addr();
    (gateway, admin)
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_and_buckets_match_the_traffic_and_promtool_agrees() {
    let echo = TestUpstream::start(handler::echo);
    let slow = TestUpstream::start(handler::slow(Duration::from_millis(120)));
    let config = format!(
        r#"
[upstreams.echo]
targets = ["{echo}"]
[upstreams.slow]
targets = ["{slow}"]

[[routes]]
name = "api"
prefix = "/api"
upstream = "echo"

[[routes]]
name = "slow"
path = "/slow"
upstream = "slow"

[[routes]]
name = "pong"
path = "/ping"
respond = {{ status = 200, body = "pong" }}
"#,
        echo = echo.addr(),
        slow = slow.addr(),
    );
    let (gateway, admin) = start(&config, &[]);
    let client = client();

    for i in 0..7 {
        let reply = send(
            &client,
            request("GET", &gateway.url(&format!("/api/get/{i}")), &[], empty()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..3 {
        let reply = send(
            &client,
            request("POST", &gateway.url("/api/post"), &[], full("hello")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..2 {
        let reply = send(&client, request("GET", &gateway.url("/slow"), &[], empty())).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..4 {
        let reply = send(&client, request("GET", &gateway.url("/ping"), &[], empty())).await;
        assert_eq!(reply.text(), "pong");
    }
    // A client scanning random paths: every one is a 404 of no route.
    for i in 0..50u64 {
        let path = format!(
            "/scan-{:016x}/{i}?q={i}",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        let reply = send(
            &client,
            request("DELETE", &gateway.url(&path), &[], empty()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    let requests = "wasmgate_requests_total";
    let scraped = scrape_until(admin, |s| s.sum(requests, &[]) >= 66.0).await;
    let count = |labels: &[(&str, &str)]| scraped.sum(requests, labels);
    assert_eq!(
        count(&[("route", "api"), ("method", "GET"), ("status", "2xx")]),
        7.0
    );
    assert_eq!(
        count(&[("route", "api"), ("method", "POST"), ("status", "2xx")]),
        3.0
    );
    assert_eq!(
        count(&[("route", "slow"), ("method", "GET"), ("status", "2xx")]),
        2.0
    );
    assert_eq!(
        count(&[("route", "pong"), ("method", "GET"), ("status", "2xx")]),
        4.0
    );
    assert_eq!(
        count(&[("route", ""), ("method", "DELETE"), ("status", "4xx")]),
        50.0
    );
    assert_eq!(
        count(&[]),
        66.0,
        "nothing else was counted:\n{}",
        scraped.text
    );

    // Histograms: the count and the +Inf bucket are the requests; the slow route's
    // requests (120ms upstream) all fall above 0.1s and the static answers far below it.
    let duration = |suffix: &str, labels: &[(&str, &str)]| {
        scraped.sum(
            &format!("wasmgate_request_duration_seconds_{suffix}"),
            labels,
        )
    };
    for (route, n) in [("api", 10.0), ("slow", 2.0), ("pong", 4.0), ("", 50.0)] {
        assert_eq!(duration("count", &[("route", route)]), n, "route {route:?}");
        assert_eq!(duration("bucket", &[("route", route), ("le", "+Inf")]), n);
    }
    assert_eq!(duration("bucket", &[("route", "slow"), ("le", "0.1")]), 0.0);
    assert_eq!(duration("bucket", &[("route", "slow"), ("le", "30")]), 2.0);
    assert!(duration("sum", &[("route", "slow")]) >= 0.24);
    assert_eq!(duration("bucket", &[("route", "pong"), ("le", "0.1")]), 4.0);
    let mut previous = 0.0;
    for bucket in scraped.matching(
        "wasmgate_request_duration_seconds_bucket",
        &[("route", "api")],
    ) {
        assert!(
            bucket.value >= previous,
            "buckets are cumulative: {bucket:?}"
        );
        previous = bucket.value;
    }

    // Bytes: 3 × "hello" in; 4 × "pong" out on the static route.
    assert_eq!(
        scraped.sum("wasmgate_request_body_bytes_total", &[("route", "api")]),
        15.0
    );
    assert_eq!(
        scraped.sum("wasmgate_response_body_bytes_total", &[("route", "pong")]),
        16.0
    );
    assert!(scraped.sum("wasmgate_response_body_bytes_total", &[("route", "api")]) > 0.0);

    // Upstreams: one attempt per proxied request, each timed, no errors; the keep-alive
    // connections sit idle in the pool now.
    let echo_labels = [("upstream", "echo")];
    assert_eq!(
        scraped.sum("wasmgate_upstream_requests_total", &echo_labels),
        10.0
    );
    assert_eq!(
        scraped.sum("wasmgate_upstream_duration_seconds_count", &echo_labels),
        10.0
    );
    assert_eq!(scraped.sum("wasmgate_upstream_errors_total", &[]), 0.0);
    assert_eq!(
        scraped.sum(
            "wasmgate_upstream_duration_seconds_bucket",
            &[("upstream", "slow"), ("le", "0.1")]
        ),
        0.0
    );
    let pooled = scrape_until(admin, |s| {
        s.sum("wasmgate_upstream_connections", &[("state", "active")]) == 0.0
    })
    .await;
    assert!(
        pooled.sum(
            "wasmgate_upstream_connections",
            &[("upstream", "echo"), ("state", "idle")]
        ) >= 1.0
    );
    assert_eq!(
        pooled.sum("wasmgate_upstream_connections", &[("state", "active")]),
        0.0
    );

    // Connections: the test's keep-alive client holds at least one HTTP/1 connection open.
    assert!(scraped.sum("wasmgate_connections_open", &[("protocol", "http1")]) >= 1.0);

    // Bounded labels: the scanned paths appear nowhere, and every route label is a
    // configured name (or empty).
    assert!(
        !scraped.text.contains("scan-"),
        "a client path became a label"
    );
    let routes = scraped.label_values(requests, "route");
    let expected: std::collections::BTreeSet<String> = ["", "api", "pong", "slow"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(routes, expected);
    let series = scraped.matching(requests, &[]).count();
    assert_eq!(
        series, 5,
        "one series per route, method and status class seen"
    );

    promtool_check(&scraped.text);

    // OpenMetrics on request, ending with `# EOF`.
    let reply = send(
        &client,
        request(
            "GET",
            &format!("http://{admin}/metrics"),
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )],
            empty(),
        ),
    )
    .await;
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = reply.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE wasmgate_requests counter"), "{text}");
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_looping_and_healthy_plugins_show_in_their_metrics() {
    let echo = TestUpstream::start(handler::echo);
    let down = common::closed_addr();
    let config = format!(
        r#"
[upstreams.echo]
targets = ["{echo}"]
[upstreams.down]
targets = ["{down}"]

[[routes]]
name = "trap"
path = "/trap"
upstream = "echo"
stages = [{{ plugin = "trap" }}]

[[routes]]
name = "loop"
path = "/loop"
upstream = "echo"
stages = [{{ plugin = "loop", limits = {{ deadline = "50ms" }} }}]

[[routes]]
name = "metered"
path = "/metered"
upstream = "echo"
stages = [{{ plugin = "loop", limits = {{ fuel = 1000000, deadline = "10s" }} }}]

[[routes]]
name = "tagged"
path = "/tagged"
upstream = "echo"
stages = [{{ plugin = "transform", config = {{ tag = "t" }} }}]

[[routes]]
name = "down"
path = "/down"
upstream = "down"
"#,
        echo = echo.addr(),
    );
    let (gateway, admin) = start(
        &config,
        &[
            ("trap", fx::FX_TRAP),
            ("loop", fx::FX_LOOP),
            ("transform", fx::FX_TRANSFORM),
        ],
    );
    let client = client();
    let expect = |path: &'static str, status: u16, times: usize| {
        let (client, url) = (client.clone(), gateway.url(path));
        async move {
            for _ in 0..times {
                let reply = send(&client, request("GET", &url, &[], empty())).await;
                assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text());
            }
        }
    };
    expect("/trap", 500, 3).await;
    expect("/loop", 504, 2).await;
    expect("/metered", 504, 1).await;
    expect("/tagged", 200, 4).await;
    expect("/down", 502, 1).await;

    let scraped = scrape_until(admin, |s| s.sum("wasmgate_requests_total", &[]) >= 11.0).await;
    let stage = |route: &'static str| [("route", route), ("stage", "0")];
    let with = |route: &'static str, key: &'static str, value: &'static str| {
        let [a, b] = stage(route);
        [a, b, (key, value)]
    };
    let errors = "wasmgate_plugin_errors_total";
    assert_eq!(
        scraped.sum(errors, &with("trap", "kind", "trap")),
        3.0,
        "{}",
        scraped.text
    );
    assert_eq!(scraped.sum(errors, &with("loop", "kind", "deadline")), 2.0);
    assert_eq!(scraped.sum(errors, &with("metered", "kind", "fuel")), 1.0);
    assert_eq!(scraped.sum(errors, &stage("tagged")), 0.0);
    assert_eq!(scraped.sum(errors, &[]), 6.0);

    let outcomes = "wasmgate_plugin_outcomes_total";
    assert_eq!(
        scraped.sum(outcomes, &with("trap", "outcome", "failed")),
        3.0
    );
    assert_eq!(
        scraped.sum(outcomes, &with("loop", "outcome", "failed")),
        2.0
    );
    assert_eq!(
        scraped.sum(outcomes, &with("tagged", "outcome", "continue")),
        4.0
    );

    let calls = "wasmgate_plugin_calls_total";
    assert_eq!(
        scraped.sum(calls, &with("trap", "export", "on-request")),
        3.0
    );
    assert_eq!(
        scraped.sum(calls, &with("tagged", "export", "on-request")),
        4.0
    );
    assert_eq!(
        scraped.sum(calls, &with("tagged", "export", "on-response")),
        4.0
    );
    assert_eq!(
        scraped.sum(
            "wasmgate_plugin_call_duration_seconds_count",
            &stage("tagged")
        ),
        8.0
    );
    // The looping calls ran at least until their 50ms deadline.
    assert_eq!(
        scraped.sum(
            "wasmgate_plugin_call_duration_seconds_bucket",
            &[("route", "loop"), ("le", "0.025")]
        ),
        0.0
    );
    assert_eq!(
        scraped.sum(
            "wasmgate_plugin_instantiate_seconds_count",
            &stage("tagged")
        ),
        8.0
    );
    assert!(scraped.sum("wasmgate_plugin_memory_high_water_bytes", &stage("tagged")) > 0.0);
    assert_eq!(scraped.sum("wasmgate_plugin_reuse_hits_total", &[]), 0.0);

    // Plugin labels: the name and a 12-character content hash.
    let hashes = scraped.label_values(calls, "hash");
    assert!(
        !hashes.is_empty() && hashes.iter().all(|h| h.len() == 12),
        "{hashes:?}"
    );
    let plugins = scraped.label_values(calls, "plugin");
    assert!(plugins.contains("trap") && plugins.contains("loop") && plugins.contains("transform"));

    // The route whose upstream is down: the default retry policy's three attempts, each a
    // connect error, and two of them retries.
    assert_eq!(
        scraped.sum(
            "wasmgate_upstream_errors_total",
            &[("upstream", "down"), ("kind", "connect")]
        ),
        3.0
    );
    assert_eq!(
        scraped.sum("wasmgate_upstream_retries_total", &[("upstream", "down")]),
        2.0
    );
    assert_eq!(
        scraped.sum(
            "wasmgate_requests_total",
            &[("route", "trap"), ("status", "5xx")]
        ),
        3.0
    );
    promtool_check(&scraped.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_show_in_the_reload_metrics_and_counters_survive_them() {
    let echo = TestUpstream::start(handler::echo);
    // A fresh compile cache, so the reloaded plugin is compiled (and timed).
    let cache = TempDir::new();
    let config = format!(
        r#"[plugins]
cache-dir = {cache:?}

[admin]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["{echo}"]

[[routes]]
name = "versioned"
prefix = "/v"
upstream = "echo"
stages = [{{ plugin = "versioned" }}]
"#,
        cache = cache.path(),
        echo = echo.addr(),
    );
    let gateway =
        TestGateway::start_with_plugins(&config, &[("versioned", Path::new(fx::FX_VERSION_A))]);
    let admin = gateway.admin_addr();
    let url = gateway.url("/v/x");
    for _ in 0..3 {
        assert_eq!(get(&url).await.status, StatusCode::OK);
    }
    let before = scrape_until(admin, |s| s.sum("wasmgate_requests_total", &[]) >= 3.0).await;
    let old_hashes = before.label_values("wasmgate_plugin_calls_total", "hash");
    assert_eq!(old_hashes.len(), 1);
    assert_eq!(before.sum("wasmgate_reloads_total", &[]), 0.0);
    assert_eq!(
        before.sum(
            "wasmgate_plugin_compile_seconds_count",
            &[("plugin", "versioned")]
        ),
        1.0
    );

    // A new version: loaded.
    let plugins = gateway.plugins_dir();
    let temp = plugins.join(".versioned.tmp");
    std::fs::copy(fx::FX_VERSION_B, &temp).expect("copy");
    std::fs::rename(&temp, plugins.join("versioned.wasm")).expect("rename");
    let loaded = [("kind", "plugin"), ("outcome", "loaded")];
    let after = scrape_until(admin, |s| s.sum("wasmgate_reloads_total", &loaded) >= 1.0).await;
    assert_eq!(
        after.sum("wasmgate_reloads_total", &loaded),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.sum(
            "wasmgate_plugin_compile_seconds_count",
            &[("plugin", "versioned")]
        ),
        2.0
    );

    // Garbage: rejected as a compile failure; the last good version keeps serving.
    std::fs::write(plugins.join(".versioned.tmp"), b"\0asm not really").expect("write");
    std::fs::rename(
        plugins.join(".versioned.tmp"),
        plugins.join("versioned.wasm"),
    )
    .expect("rename");
    let rejected = [
        ("kind", "plugin"),
        ("outcome", "rejected"),
        ("reason", "compile"),
    ];
    let after = scrape_until(admin, |s| s.sum("wasmgate_reloads_total", &rejected) >= 1.0).await;
    assert_eq!(
        after.sum("wasmgate_reloads_total", &rejected),
        1.0,
        "{}",
        after.text
    );

    // A broken config edit: rejected as a config error.
    let edited = std::fs::read_to_string(gateway.config_path()).expect("config");
    std::fs::write(gateway.config_path(), format!("{edited}\n[nonsense]\n")).expect("write");
    let config_rejected = [
        ("kind", "config"),
        ("outcome", "rejected"),
        ("reason", "config"),
    ];
    let after = scrape_until(admin, |s| {
        s.sum("wasmgate_reloads_total", &config_rejected) >= 1.0
    })
    .await;
    assert_eq!(
        after.sum("wasmgate_reloads_total", &config_rejected),
        1.0,
        "{}",
        after.text
    );

    // The new version serves under its own hash label; the counts from before stay.
    assert_eq!(get(&url).await.status, StatusCode::OK);
    let after = scrape_until(admin, |s| s.sum("wasmgate_requests_total", &[]) >= 4.0).await;
    assert_eq!(
        after.sum("wasmgate_requests_total", &[("route", "versioned")]),
        4.0
    );
    let hashes = after.label_values("wasmgate_plugin_calls_total", "hash");
    assert_eq!(hashes.len(), 2, "{hashes:?}");
    for hash in &old_hashes {
        assert_eq!(
            after.sum(
                "wasmgate_plugin_calls_total",
                &[("hash", hash), ("export", "on-request")]
            ),
            3.0
        );
    }
    promtool_check(&after.text);
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let config = "[admin]\nlisten = \"127.0.0.1:0\"\nmetrics = false\n\n[[routes]]\nname = \"pong\"\npath = \"/ping\"\nrespond = { status = 200, body = \"pong\" }\n";
    let gateway = tokio::task::spawn_blocking(move || TestGateway::start(config))
        .await
        .expect("start");
    let admin = gateway.admin_addr();
    assert_eq!(get(&gateway.url("/ping")).await.text(), "pong");
    let reply = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    assert_eq!(reply.json()["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_timed_out_connections_are_counted() {
    let config = "[server]\nheader-read-timeout = \"300ms\"\nmax-connections = 1\n\n\
                  [[routes]]\nname = \"pong\"\npath = \"/ping\"\nrespond = { status = 200, body = \"pong\" }\n";
    let (gateway, admin) = start(config, &[]);
    let addr = gateway.addr();
    let refused = |scraped: &Scrape, reason: &str| {
        scraped.sum("wasmgate_connections_refused_total", &[("reason", reason)])
    };
    // hyper's own refusals, answered with the gateway's JSON: not HTTP (400), and more than
    // 100 header fields (431).
    let garbage =
        tokio::task::spawn_blocking(move || common::raw_exchange(addr, b"GARBAGE\r\n\r\n"))
            .await
            .expect("exchange");
    assert_eq!(garbage.status, 400);
    let fields: String = (0..101).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let head = format!("GET /ping HTTP/1.1\r\nHost: gw.test\r\n{fields}\r\n");
    let many = tokio::task::spawn_blocking(move || common::raw_exchange(addr, head.as_bytes()))
        .await
        .expect("exchange");
    assert_eq!(many.status, 431);
    // A head that never completes: closed at the header-read timeout.
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = common::raw_connect(addr);
        std::io::Write::write_all(&mut stream, b"GET /ping HTTP/1.1\r\nHost: gw").expect("write");
        common::time_until_closed(&mut stream, Duration::from_secs(5))
    })
    .await
    .expect("slow client");
    assert!(closed.is_some(), "the slow head was not cut off");
    let scraped = scrape_until(admin, |s| refused(s, "header_timeout") >= 1.0).await;
    assert_eq!(refused(&scraped, "bad_head"), 1.0, "{}", scraped.text);
    assert_eq!(refused(&scraped, "head_too_large"), 1.0);
    assert_eq!(refused(&scraped, "header_timeout"), 1.0);

    // At the connection limit (1) the listener stops accepting: one connection held open,
    // a second waits in the backlog until the first closes.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut stream = common::raw_connect(addr);
        std::io::Write::write_all(&mut stream, b"GET /ping HTTP/1.1\r\nHost: gw\r\n\r\n")
            .expect("write");
        let reply = common::RawResponse::read_from(&mut stream).expect("reply");
        assert_eq!(reply.status, 200);
        held_rx.recv().ok();
    });
    let open = scrape_until(admin, |s| {
        s.sum("wasmgate_connections_open", &[("protocol", "http1")]) >= 1.0
    })
    .await;
    assert_eq!(
        open.sum("wasmgate_connections_open", &[("protocol", "http1")]),
        1.0,
        "{}",
        open.text
    );
    let waiting = tokio::task::spawn_blocking(move || {
        common::raw_exchange(
            addr,
            b"GET /ping HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        )
    });
    let limited = scrape_until(admin, |s| refused(s, "limit") >= 1.0).await;
    assert!(refused(&limited, "limit") >= 1.0, "{}", limited.text);
    held_tx.send(()).expect("release");
    holder.join().expect("holder");
    assert_eq!(waiting.await.expect("second client").status, 200);
    let closed = scrape_until(admin, |s| s.sum("wasmgate_connections_open", &[]) == 0.0).await;
    assert_eq!(
        closed.sum("wasmgate_connections_open", &[]),
        0.0,
        "{}",
        closed.text
    );
    promtool_check(&closed.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_defined_metrics_are_exported_with_bounded_labels() {
    let echo = TestUpstream::start(handler::echo);
    let config = format!(
        r#"
[upstreams.echo]
targets = ["{echo}"]

[[routes]]
name = "observed"
prefix = "/observed"
upstream = "echo"
stages = [{{ plugin = "observe" }}]
"#,
        echo = echo.addr(),
    );
    let (_gateway, admin) = start(&config, &[("observe", fx::FX_OBSERVE)]);
    let gateway_url = |path: &str| format!("http://{}{path}", _gateway.addr());
    let client = client();
    // 105 distinct tags: the plugin chose a client-controlled label, and the host keeps the
    // metric to 100 label-value combinations (route included), refusing the rest.
    let mut refused = 0;
    for n in 0..105 {
        let tag = format!("t{n}");
        let reply = send(
            &client,
            request(
                "GET",
                &gateway_url("/observed/abc"),
                &[("x-tag", &tag)],
                empty(),
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = &reply.json()["headers"];
        if let Some(error) = seen["x-metric-error"].as_str() {
            assert!(error.contains("label-value combinations"), "{error}");
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "the 101st combination and later are refused");
    let seen = "wasmgate_custom_observe_seen_total";
    let scraped = scrape_until(admin, |s| s.sum(seen, &[]) >= 100.0).await;
    assert_eq!(
        scraped.matching(seen, &[("route", "observed")]).count(),
        100
    );
    assert_eq!(scraped.sum(seen, &[("tag", "t7"), ("method", "GET")]), 1.0);
    // The histogram: the fixture observes a 13-byte URI after each counted request (100).
    let buckets = "wasmgate_custom_observe_uri_bytes_bucket";
    assert_eq!(scraped.sum(buckets, &[("le", "8")]), 0.0);
    assert_eq!(
        scraped.sum(buckets, &[("le", "64"), ("method", "GET")]),
        100.0
    );
    promtool_check(&scraped.text);
}

/// A real Prometheus (Debian's `prometheus`, which `scripts/test.sh` installs with promtool)
/// scrapes the admin listener and answers a query with the gateway's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_gateway() {
    let Some(prometheus) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is required in CI (scripts/test.sh installs Debian's `prometheus`)"
        );
        eprintln!("prometheus not found; skipping the scrape");
        return;
    };
    let (gateway, admin) = start(
        r#"
[[routes]]
name = "pong"
path = "/ping"
respond = { status = 200, body = "pong" }
"#,
        &[],
    );
    for _ in 0..3 {
        assert_eq!(get(&gateway.url("/ping")).await.status, StatusCode::OK);
    }
    let dir = TempDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wasmgate\n    static_configs:\n      - targets: [\"{admin}\"]\n"
        ),
    )
    .expect("writing prometheus.yml");
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting prometheus");
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=wasmgate_requests_total%7Broute%3D%22pong%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let value = loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report the gateway's counter within 60s; last answer: {last}"
        );
        let answer = client().request(request("GET", &query, &[], empty())).await;
        if let Ok(answer) = answer {
            let body = http_body_util::BodyExt::collect(answer.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            last = String::from_utf8_lossy(&body).into_owned();
            let parsed: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            // The third request may be counted a moment after its answer arrived.
            if let Some(value) = parsed["data"]["result"][0]["value"][1].as_str()
                && value == "3"
            {
                break value.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(value, "3", "Prometheus saw the three requests");
    drop(gateway);
}

/// Every query of the Grafana dashboard in `docs/` parses as PromQL (`promtool check
/// rules`, with Grafana's interval variables filled in) and names only metrics the README
/// documents.
#[test]
fn the_grafana_dashboard_queries_are_valid_promql() {
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    )))
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().expect("targets").iter())
        .map(|target| {
            target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
        })
        .collect();
    assert!(exprs.len() >= 10);
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
    for expr in &exprs {
        let metric = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|word| word.starts_with("wasmgate_"))
            .expect("a wasmgate metric");
        let family = metric.trim_end_matches("_bucket");
        assert!(
            readme.contains(&format!("`{family}`")) || readme.contains(&format!("`{family}{{")),
            "{metric} in `{expr}` is not a documented metric"
        );
    }
    let Some(promtool) = promtool() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI"
        );
        return;
    };
    let dir = TempDir::new();
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| format!("      - record: dashboard:q{i}\n        expr: {expr:?}\n"))
        .collect();
    let file = dir.path().join("rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .expect("writing rules");
    let output = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
