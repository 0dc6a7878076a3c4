//! Upstream resilience through the real binary, against real upstreams that die, stall or
//! fail on command: retries keep GETs whole while a target is killed, outlier detection and
//! active health checks take a bad target out and bring it back, the circuit breaker
//! answers at once while an upstream is down and closes after a good probe, the retry budget
//! caps amplification, least-request steers away from a slow target, consistent hashing
//! keeps keys on their targets when one joins, and the operator can drain a target.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BoxBody, TestGateway, TestUpstream, client, empty, eventually, full, request, send};
use http::{Response, StatusCode};

/// What a [`Switchable`] upstream does now.
const OK: u8 = 0;
const FAILING: u8 = 1;
const STALLED: u8 = 2;

/// An upstream whose behaviour a test switches: answering 200 with its name, answering 503
/// (with `retry-after: 0`), or stalling for 5 s. `/health` follows the same mode.
struct Switchable {
    upstream: TestUpstream,
    mode: Arc<AtomicU8>,
    served: Arc<AtomicUsize>,
}

impl Switchable {
    fn start(name: &'static str) -> Self {
        let mode = Arc::new(AtomicU8::new(OK));
        let served = Arc::new(AtomicUsize::new(0));
        let (m, s) = (mode.clone(), served.clone());
        let upstream = TestUpstream::start(move |request: http::Request<_>| {
            let (mode, served) = (m.clone(), s.clone());
            async move {
                let health = request.uri().path() == "/health";
                if !health {
                    served.fetch_add(1, Ordering::SeqCst);
                }
                match mode.load(Ordering::SeqCst) {
                    STALLED => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Response::new(full(name))
                    }
                    FAILING => {
                        let mut response = Response::new(full("failing"));
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        response
                            .headers_mut()
                            .insert("retry-after", "0".parse().unwrap());
                        response
                    }
                    _ => Response::new(full(name)) as Response<BoxBody>,
                }
            }
        });
        Self {
            upstream,
            mode,
            served,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.upstream.addr()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

fn gateway(config: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[plugins]\nwatch = false\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{config}"
    ))
}

async fn status(gateway: &TestGateway) -> serde_json::Value {
    common::get(&format!("http://{}/status", gateway.admin_addr()))
        .await
        .json()
}

/// `GET path` from `clients` concurrent clients until `stop` says so; returns the
/// statuses seen (and transport errors as 0).
async fn load(
    gateway: &TestGateway,
    path: &str,
    clients: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<u16> {
    let url = gateway.url(path);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(10),
                        client.request(request("GET", &url, &[], empty())),
                    )
                    .await;
                    statuses.push(match answer {
                        Ok(Ok(response)) => {
                            let status = response.status().as_u16();
                            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                            status
                        }
                        _ => 0,
                    });
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_targets_under_load_fails_no_get() {
    let targets: Vec<Switchable> = ["a", "b", "c"].into_iter().map(Switchable::start).collect();
    let mut targets: Vec<Option<Switchable>> = targets.into_iter().map(Some).collect();
    let list = targets
        .iter()
        .map(|t| format!("\"{}\"", t.as_ref().unwrap().addr()))
        .collect::<Vec<_>>()
        .join(", ");
    let gateway = gateway(&format!(
        r#"
[upstreams.api]
targets = [{list}]

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
"#
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load(&gateway, "/x", 8, stop.clone());
    let kill = async {
        let before = targets[1].as_ref().unwrap().served();
        assert!(
            eventually(Duration::from_secs(10), || targets[1]
                .as_ref()
                .unwrap()
                .served()
                >= before + 50)
            .await
        );
        // Kill b: its runtime, listener and open connections go away at once.
        drop(targets[1].take());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::SeqCst);
    };
    let (statuses, ()) = tokio::join!(load, kill);
    let failed: Vec<&u16> = statuses.iter().filter(|&&s| s != 200).collect();
    assert!(statuses.len() > 200, "{} requests", statuses.len());
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed: {:?}",
        failed.len(),
        statuses.len(),
        &failed[..failed.len().min(10)]
    );
    let status = status(&gateway).await;
    let b = &status["upstreams"][0]["targets"][1];
    assert_eq!(b["usable"], false, "the dead target is ejected: {b}");
    assert!(b["ejections"].as_u64().unwrap() >= 1, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_target_is_ejected_and_comes_back_after_it_recovers() {
    let a = Switchable::start("a");
    let b = Switchable::start("b");
    let gateway = gateway(&format!(
        r#"
[upstreams.api]
targets = ["{a}", "{b}"]
balance = "round-robin"
outlier = {{ consecutive-failures = 2, base-ejection = "1s" }}

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
retry = {{ on = ["connect-failure", "reset", "timeout"], per-try-timeout = "200ms" }}
"#,
        a = a.addr(),
        b = b.addr()
    ));
    let client = client();
    b.set(STALLED);
    let started = Instant::now();
    // Every GET still answers (the stalled attempt times out and is retried on `a`); after
    // two timeouts in a row `b` is ejected and no longer tried.
    for _ in 0..6 {
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "a");
    }
    let stalled_hits = b.served();
    assert_eq!(stalled_hits, 2, "b was tried twice, then ejected");
    for _ in 0..4 {
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        assert_eq!(reply.text(), "a");
    }
    assert_eq!(
        b.served(),
        stalled_hits,
        "no request reaches an ejected target"
    );
    let detection = started.elapsed();
    // Recovered, b takes traffic again once its ejection (1 s) is over.
    b.set(OK);
    let back = async {
        loop {
            let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
            if reply.text() == "b" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("b comes back after its ejection");
    eprintln!("stalled target detected in {detection:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_a_target_out_and_put_it_back() {
    let a = Switchable::start("a");
    let b = Switchable::start("b");
    let gateway = gateway(&format!(
        r#"
[upstreams.api]
targets = ["{a}", "{b}"]
balance = "round-robin"
health-check = {{ path = "/health", interval = "100ms", timeout = "500ms", healthy-threshold = 1, unhealthy-threshold = 2 }}
outlier = {{ consecutive-5xx = 0 }}

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
"#,
        a = a.addr(),
        b = b.addr()
    ));
    let admin = gateway.admin_addr();
    let usable = |status: &serde_json::Value, i: usize| {
        status["upstreams"][0]["targets"][i]["usable"]
            .as_bool()
            .unwrap()
    };
    b.set(FAILING);
    let out = async {
        while usable(&status(&gateway).await, 1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("b fails its checks");
    let served = b.served();
    let client = client();
    for _ in 0..6 {
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        assert_eq!(reply.text(), "a");
    }
    assert_eq!(
        b.served(),
        served,
        "no request reaches a target failing its checks"
    );
    let ready = common::get(&format!("http://{admin}/health/ready")).await;
    assert_eq!(ready.status, StatusCode::OK, "a is still healthy");
    b.set(OK);
    let back = async {
        while !usable(&status(&gateway).await, 1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("b passes its checks again");
    a.set(FAILING);
    b.set(FAILING);
    let unready = async {
        loop {
            let ready = common::get(&format!("http://{admin}/health/ready")).await;
            if ready.status == StatusCode::SERVICE_UNAVAILABLE {
                return ready.text();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let reasons = tokio::time::timeout(Duration::from_secs(5), unready)
        .await
        .expect("not ready without a healthy target");
    assert!(
        reasons.contains("upstream `api` has no healthy target"),
        "{reasons}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_answers_at_once_until_a_probe_succeeds() {
    let a = Switchable::start("a");
    let gateway = gateway(&format!(
        r#"
[upstreams.api]
targets = ["{a}"]
breaker = {{ failure-ratio = 0.5, minimum-requests = 4, recovery-timeout = "500ms" }}

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
retry = {{ attempts = 1 }}
"#,
        a = a.addr()
    ));
    let client = client();
    a.set(FAILING);
    for _ in 0..4 {
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.text(), "failing", "the upstream's own 503");
    }
    let served = a.served();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        let body = reply.json();
        assert_eq!(body["error"], "upstream_breaker_open", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("`api`"),
            "{body}"
        );
    }
    assert_eq!(a.served(), served, "an open breaker sends nothing upstream");
    eprintln!("slowest answer of the open breaker: {slowest:?}");
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    // The upstream recovers; after the recovery timeout one probe goes through and closes it.
    a.set(OK);
    let closed = async {
        loop {
            let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
            if reply.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the breaker closes after a good probe");
    for _ in 0..5 {
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_retry_budget_caps_amplification_when_everything_fails() {
    let a = Switchable::start("a");
    let b = Switchable::start("b");
    a.set(FAILING);
    b.set(FAILING);
    let config = |budget: &str| {
        format!(
            r#"
[upstreams.api]
targets = ["{a}", "{b}"]
outlier = {{ consecutive-5xx = 0 }}
{budget}

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
retry = {{ attempts = 5, on = [503], backoff = "1ms", max-backoff = "5ms" }}
"#,
            a = a.addr(),
            b = b.addr()
        )
    };
    let run = async |gateway: &TestGateway| {
        let before = a.served() + b.served();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                stop.store(true, Ordering::SeqCst);
            })
        };
        let statuses = load(gateway, "/x", 16, stop).await;
        stopper.await.unwrap();
        assert!(
            statuses.iter().all(|&s| s == 503),
            "every answer is the 503"
        );
        let sent = a.served() + b.served() - before;
        sent as f64 / statuses.len() as f64
    };
    let budgeted = gateway(&config("retry-budget = { percent = 20, min = 1 }"));
    let with_budget = run(&budgeted).await;
    drop(budgeted);
    let unbounded = gateway(&config("retry-budget = { percent = 100, min = 1000000 }"));
    let without_budget = run(&unbounded).await;
    eprintln!(
        "upstream requests per client request: {with_budget:.2} with the default-style budget, {without_budget:.2} without"
    );
    assert!(
        without_budget > 4.5,
        "5 attempts each without a budget: {without_budget}"
    );
    assert!(
        with_budget < 2.0,
        "the budget caps amplification: {with_budget}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_request_steers_away_from_a_slow_target() {
    let fast = TestUpstream::start(|_request| async { Response::new(full("fast")) });
    let slow = TestUpstream::start(|_request| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Response::new(full("slow"))
    });
    let gateway = gateway(&format!(
        r#"
[upstreams.api]
targets = ["{fast}", "{slow}"]

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
"#,
        fast = fast.addr(),
        slow = slow.addr()
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let statuses = load(&gateway, "/x", 8, stop).await;
    stopper.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 200));
    let (to_fast, to_slow) = (fast.requests(), slow.requests());
    eprintln!("least-request: {to_fast} to the fast target, {to_slow} to the slow one");
    assert!(
        to_fast > 10 * to_slow,
        "the fast target takes most requests: {to_fast} vs {to_slow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_keys_on_their_targets_when_one_joins() {
    let targets: Vec<TestUpstream> = (0..4)
        .map(|i| {
            TestUpstream::start(move |_request| async move { Response::new(full(format!("t{i}"))) })
        })
        .collect();
    let config = |count: usize| {
        let list = targets[..count]
            .iter()
            .map(|t| format!("\"{}\"", t.addr()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"
[admin]
listen = "127.0.0.1:0"

[upstreams.api]
targets = [{list}]
balance = "hash"
hash-on = "header:x-user"

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
"#
        )
    };
    let gateway = TestGateway::start(&config(3));
    let client = client();
    let placement = async |gateway: &TestGateway| -> HashMap<u32, String> {
        let mut placed = HashMap::new();
        for user in 0..300u32 {
            let reply = send(
                &client,
                request(
                    "GET",
                    &gateway.url("/x"),
                    &[("x-user", &format!("user-{user}"))],
                    empty(),
                ),
            )
            .await;
            placed.insert(user, reply.text());
        }
        placed
    };
    let before = placement(&gateway).await;
    // The same key again lands on the same target.
    assert_eq!(placement(&gateway).await, before);
    let generation = status(&gateway).await["generation"].as_u64().unwrap();
    std::fs::write(gateway.config_path(), config(4)).expect("rewriting the config");
    let reloaded = async {
        while status(&gateway).await["generation"].as_u64().unwrap() == generation {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reloaded)
        .await
        .expect("the config reloads");
    let after = placement(&gateway).await;
    let moved: Vec<u32> = (0..300).filter(|u| before[u] != after[u]).collect();
    assert!(
        moved.iter().all(|u| after[u] == "t3"),
        "keys only move to the new target"
    );
    let stayed = 300 - moved.len();
    eprintln!(
        "consistent hashing: {stayed} of 300 keys stayed, {} moved to the new target",
        moved.len()
    );
    assert!(moved.len() < 300 * 35 / 100, "{} moved", moved.len());
    let counts = after.values().fold(HashMap::new(), |mut counts, target| {
        *counts.entry(target.clone()).or_insert(0) += 1;
        counts
    });
    assert_eq!(counts.len(), 4, "every target has keys: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_the_weights_and_drain_takes_a_target_out() {
    let a = Switchable::start("a");
    let b = Switchable::start("b");
    let gateway = gateway(&format!(
        r#"
[upstreams.api]
targets = ["{a} weight=3", "{b}"]
balance = "weighted-round-robin"

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
"#,
        a = a.addr(),
        b = b.addr()
    ));
    let client = client();
    for _ in 0..40 {
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!((a.served(), b.served()), (30, 10));
    let admin = gateway.admin_addr();
    let drain = |what: &str| {
        request(
            "POST",
            &format!("http://{admin}/upstreams/api/targets/{}/{what}", b.addr()),
            &[],
            empty(),
        )
    };
    let reply = send(&client, drain("drain")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for _ in 0..10 {
        let reply = send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
        assert_eq!(reply.text(), "a");
    }
    assert_eq!(b.served(), 10, "a drained target gets nothing");
    let reply = send(&client, drain("undrain")).await;
    assert_eq!(reply.status, StatusCode::OK);
    for _ in 0..8 {
        send(&client, request("GET", &gateway.url("/x"), &[], empty())).await;
    }
    assert_eq!(b.served(), 12, "undrained, it takes its share again");
    let missing = send(
        &client,
        request(
            "POST",
            &format!("http://{admin}/upstreams/api/targets/10.9.9.9:1/drain"),
            &[],
            empty(),
        ),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// Envoy's connection limits: with `max-connections = 2` and `max-pending-requests = 2`, six
/// requests at once to an upstream that holds them get two connections, two requests wait
/// for one (and are served on it afterwards), and two are refused at once with 503.
#[tokio::test(flavor = "multi_thread")]
async fn connection_and_pending_limits_queue_then_refuse() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let up = TestUpstream::start(move |_request: http::Request<_>| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            Response::new(full("done")) as Response<BoxBody>
        }
    });
    let addr = up.addr();
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start(&format!(
            r#"
[upstreams.api]
targets = ["{addr}"]
breaker = {{ max-connections = 2, max-pending-requests = 2 }}

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
"#
        ))
    })
    .await
    .unwrap();
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    let client = client();
    for _ in 0..6 {
        let (client, url, done) = (client.clone(), gateway.url("/slow"), done.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = send(&client, request("GET", &url, &[], empty())).await;
            let _ = done.send((reply, started.elapsed()));
        });
    }
    // While the upstream holds every request, two are refused, at once.
    for _ in 0..2 {
        let (reply, took) = results.recv().await.expect("a refusal");
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text()
        );
        assert!(
            reply.text().contains("max-pending-requests"),
            "{}",
            reply.text()
        );
        assert!(took < Duration::from_secs(1), "refused after {took:?}");
    }
    assert!(
        eventually(Duration::from_secs(5), || up.requests() == 2).await,
        "two requests reach the upstream, on two connections"
    );
    assert!(results.try_recv().is_err(), "the other four wait");
    assert_eq!(
        up.connections(),
        2,
        "the waiting requests open no connection while two are open"
    );
    open.send(true).unwrap();
    // Then they are served, on a connection that came back idle (or one opened in its
    // place: a waiter in another worker closes an idle connection to open its own).
    for _ in 0..4 {
        let (reply, _) = results.recv().await.expect("an answer");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(up.requests(), 4);
}

/// A hostname target is resolved when the upstream starts and again every `dns-refresh`;
/// connections go to the addresses it resolved to.
#[tokio::test(flavor = "multi_thread")]
async fn hostname_targets_are_resolved_and_used() {
    let up = TestUpstream::start(|_request: http::Request<_>| async {
        Response::new(full("resolved")) as Response<BoxBody>
    });
    let port = up.addr().port();
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start(&format!(
            r#"
[upstreams.api]
targets = ["localhost:{port}"]
dns-refresh = "1s"

[[routes]]
name = "api"
prefix = "/"
upstream = "api"
"#
        ))
    })
    .await
    .unwrap();
    let resolved = gateway.wait_for_log("target resolved", Duration::from_secs(10));
    assert!(resolved, "no resolution logged: {}", gateway.logs());
    let line = gateway
        .log_records()
        .into_iter()
        .find(|r| r["message"] == "target resolved")
        .expect("the resolution line");
    assert!(
        line["addresses"]
            .as_str()
            .is_some_and(|a| a.contains(&format!("127.0.0.1:{port}"))),
        "{line}"
    );
    let reply = send(&client(), request("GET", &gateway.url("/x"), &[], empty())).await;
    assert_eq!(reply.text(), "resolved");
}
