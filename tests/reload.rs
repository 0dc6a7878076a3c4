//! Hot reload through the real gateway: plugin swaps under load, partial copies, broken
//! files, deletion, config edits, in-flight requests across a swap, and memory over many
//! reloads. Waits are on the reload generation the admin API reports, never on a fixed sleep.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestGateway, TestUpstream, client, get, handler, request, send};
use http::StatusCode;

const VERSION_A: &str = wasmgate_fixtures::FX_VERSION_A;
const VERSION_B: &str = wasmgate_fixtures::FX_VERSION_B;

fn config(upstream: &TestUpstream) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[plugins]
dir = "plugins"
[admin]
listen = "127.0.0.1:0"
[upstreams.echo]
targets = ["{}"]
[[routes]]
name = "versioned"
prefix = "/v"
upstream = "echo"
stages = [{{ plugin = "versioned" }}]
[[routes]]
name = "plain"
prefix = "/plain"
upstream = "echo"
"#,
        upstream.addr()
    )
}

fn admin_addr(gateway: &TestGateway) -> SocketAddr {
    gateway.admin_addr()
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    get(&format!("http://{admin}/status")).await.json()
}

/// Waits until the reload generation passes `after`; returns how long it took.
async fn wait_generation(admin: SocketAddr, after: u64) -> Duration {
    let start = Instant::now();
    loop {
        if status(admin).await["generation"].as_u64().unwrap_or(0) > after {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no reload within 20s: {}",
            status(admin).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn generation(admin: SocketAddr) -> u64 {
    status(admin).await["generation"]
        .as_u64()
        .expect("generation")
}

/// Atomically replaces a plugin file (write to a temp name, then rename), as deploy tools do.
fn install(dir: &Path, name: &str, wasm: &str) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(wasm, &temp).expect("copy");
    std::fs::rename(&temp, dir.join(format!("{name}.wasm"))).expect("rename");
}

/// The versions a response reports: (upstream saw, on-request ran, on-response ran).
fn versions(reply: &common::Reply) -> (String, String, String) {
    let body = reply.json();
    let upstream = body["headers"]["x-plugin-version"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let on_request = reply.header("x-request-version").unwrap_or("").to_string();
    let on_response = reply.header("x-response-version").unwrap_or("").to_string();
    (upstream, on_request, on_response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_load_fails_no_request_and_never_mixes_versions() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway =
        TestGateway::start_with_plugins(&config(&upstream), &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let url = gateway.url("/v/load");
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (url, stop) = (url.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = send(&client, request("GET", &url, &[], common::empty())).await;
                assert_eq!(reply.status, StatusCode::OK, "a request failed during the swap: {}", reply.text());
                let (up, req, resp) = versions(&reply);
                assert!(up == req && req == resp, "one request saw several versions: upstream {up}, on-request {req}, on-response {resp}");
                seen.push(up);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = generation(admin).await;
    let written = Instant::now();
    install(&gateway.plugins_dir(), "versioned", VERSION_B);
    wait_generation(admin, before).await;
    let swapped = written.elapsed();
    // The new version serves new requests from now on.
    let reply = get(&url).await;
    assert_eq!(versions(&reply).0, "b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut saw = std::collections::BTreeSet::new();
    for client in clients {
        let seen = client.await.expect("client task");
        total += seen.len();
        saw.extend(seen);
    }
    assert!(
        saw.contains("a") && saw.contains("b"),
        "the load spanned both versions: {saw:?}"
    );
    assert!(
        swapped < Duration::from_secs(5),
        "the new version took {swapped:?} to go live"
    );
    eprintln!("{total} requests, 0 failed; file write to new version live: {swapped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_partial_copy_is_never_loaded_and_the_complete_file_is() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway =
        TestGateway::start_with_plugins(&config(&upstream), &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let bytes = std::fs::read(VERSION_B).expect("fixture");
    let target = gateway.plugins_dir().join("versioned.wasm");
    let before = generation(admin).await;
    // A copy in place that keeps writing for longer than the reloader's longest wait
    // (`MAX_WAIT`, 1s): the reloader starts reading while the file still grows, so only the
    // size-and-mtime stability guard keeps the partial file from being compiled.
    let copy = {
        let (target, bytes) = (target.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(&target).expect("create");
            let chunk = bytes.len().div_ceil(150);
            for piece in bytes.chunks(chunk) {
                file.write_all(piece).expect("write");
                file.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    while !copy.is_finished() {
        let reply = get(&gateway.url("/v/x")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(versions(&reply).0, "a", "the partial file must not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    copy.await.expect("copy");
    wait_generation(admin, before).await;
    let reply = get(&gateway.url("/v/x")).await;
    assert_eq!(versions(&reply).0, "b");
    let report = status(admin).await;
    let events: Vec<&str> = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        !events.iter().any(|e| e.contains("rejected")),
        "the partial file was never even tried: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_unrelated_file_never_delays_a_plugin_reload() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway =
        TestGateway::start_with_plugins(&config(&upstream), &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let stop = Arc::new(AtomicBool::new(false));
    // Another process keeps writing a file in the watched directory every 10ms.
    let noise = {
        let (stop, path) = (stop.clone(), gateway.plugins_dir().join("noise.log"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&path, n.to_string()).expect("noise");
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = generation(admin).await;
    install(&gateway.plugins_dir(), "versioned", VERSION_B);
    let took = wait_generation(admin, before).await;
    stop.store(true, Ordering::Relaxed);
    noise.join().expect("noise thread");
    assert_eq!(versions(&get(&gateway.url("/v/x")).await).0, "b");
    assert!(took < Duration::from_secs(5), "the reload waited {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_last_good_version_serving() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway =
        TestGateway::start_with_plugins(&config(&upstream), &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let dir = gateway.plugins_dir();
    std::fs::write(dir.join(".versioned.tmp"), b"\0asm this is not a component").expect("write");
    std::fs::rename(dir.join(".versioned.tmp"), dir.join("versioned.wasm")).expect("rename");
    let found = common::wait_until(Duration::from_secs(10), || {
        gateway
            .logs()
            .contains("the last good version keeps serving")
    });
    assert!(found, "the rejection is logged; logs:\n{}", gateway.logs());
    let reply = get(&gateway.url("/v/x")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(versions(&reply).0, "a");
    let status = status(admin).await;
    let plugin = status["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["name"] == "versioned")
        .cloned()
        .expect("listed");
    assert_eq!(plugin["loaded"], true);
    assert!(
        plugin["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not a valid WebAssembly component")),
        "{plugin}"
    );
    // A component of no wasmgate world, then one of another world: both refused, still a.
    for (wasm, expect) in [
        (
            wasmgate_fixtures::FX_WRONGWORLD,
            "implements no wasmgate world",
        ),
        (
            wasmgate_fixtures::FX_AUTH_HEADER,
            "the loaded version implements world `transform`",
        ),
    ] {
        install(&dir, "versioned", wasm);
        let found = common::wait_until(Duration::from_secs(10), || gateway.logs().contains(expect));
        assert!(
            found,
            "expected a rejection containing {expect:?}; logs:\n{}",
            gateway.logs()
        );
        assert_eq!(versions(&get(&gateway.url("/v/x")).await).0, "a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_503_naming_the_plugin_until_it_returns() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway =
        TestGateway::start_with_plugins(&config(&upstream), &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let before = generation(admin).await;
    std::fs::remove_file(gateway.plugins_dir().join("versioned.wasm")).expect("remove");
    wait_generation(admin, before).await;
    let reply = get(&gateway.url("/v/x")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"], "plugin_unavailable");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("versioned")
    );
    assert_eq!(
        get(&gateway.url("/plain/x")).await.status,
        StatusCode::OK,
        "other routes are unaffected"
    );
    let before = generation(admin).await;
    install(&gateway.plugins_dir(), "versioned", VERSION_B);
    wait_generation(admin, before).await;
    let reply = get(&gateway.url("/v/x")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(versions(&reply).0, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_edit_is_rejected_and_a_valid_one_applies() {
    let upstream = TestUpstream::start(handler::echo);
    let original = config(&upstream);
    let gateway =
        TestGateway::start_with_plugins(&original, &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let live = std::fs::read_to_string(gateway.config_path()).expect("config");
    let broken = live.replace(
        "upstream = \"echo\"\nstages",
        "upstream = \"nowhere\"\nstages",
    );
    assert_ne!(broken, live);
    std::fs::write(gateway.config_path(), &broken).expect("write");
    let rejected = common::wait_until(Duration::from_secs(10), || {
        gateway.logs().contains("config rejected")
    });
    assert!(rejected, "logs:\n{}", gateway.logs());
    let status_now = status(admin).await;
    assert!(
        status_now["config_error"].as_str().is_some_and(|e| e
            .contains("unknown upstream `nowhere`")
            && e.contains("gateway.toml:")),
        "{status_now}"
    );
    assert_eq!(
        get(&gateway.url("/v/x")).await.status,
        StatusCode::OK,
        "the old config keeps serving"
    );
    let before = generation(admin).await;
    let extended =
        format!("{live}\n[[routes]]\nname = \"added\"\npath = \"/added\"\nupstream = \"echo\"\n");
    std::fs::write(gateway.config_path(), extended).expect("write");
    wait_generation(admin, before).await;
    assert_eq!(get(&gateway.url("/added")).await.status, StatusCode::OK);
    assert_eq!(status(admin).await["config_error"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_during_a_swap_finishes_on_its_version() {
    let upstream = TestUpstream::start(|request| async move {
        if request.uri().path().contains("slow") {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        handler::echo(request).await
    });
    let gateway =
        TestGateway::start_with_plugins(&config(&upstream), &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let slow_url = gateway.url("/v/slow");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = generation(admin).await;
    install(&gateway.plugins_dir(), "versioned", VERSION_B);
    wait_generation(admin, before).await;
    assert_eq!(
        versions(&get(&gateway.url("/v/fast")).await).0,
        "b",
        "new requests use b"
    );
    let reply = slow.await.expect("slow request");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        versions(&reply),
        ("a".into(), "a".into(), "a".into()),
        "the in-flight request stays on a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_over_200_reloads() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway =
        TestGateway::start_with_plugins(&config(&upstream), &[("versioned", Path::new(VERSION_A))]);
    let admin = admin_addr(&gateway);
    let mut rss = Vec::new();
    for round in 0..200 {
        let before = generation(admin).await;
        install(
            &gateway.plugins_dir(),
            "versioned",
            if round % 2 == 0 { VERSION_B } else { VERSION_A },
        );
        wait_generation(admin, before).await;
        let reply = get(&gateway.url("/v/x")).await;
        assert_eq!(reply.status, StatusCode::OK);
        if round == 50 || round == 199 {
            rss.push(gateway.rss_kib());
        }
    }
    let (warm, end) = (rss[0], rss[1]);
    eprintln!("RSS after 50 reloads: {warm} KiB, after 200: {end} KiB");
    // Old versions are freed once unused. The sandbox keeps at most 32 unused instance slots
    // warm, so memory rises over the first reloads and then stays flat. Allow allocator
    // noise, not growth per reload (a leak of one plugin version per reload would be
    // 150 x ~85 KB = 12 MiB here).
    assert!(
        end < warm + 6 * 1024,
        "RSS grew from {warm} KiB to {end} KiB over 150 reloads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_missing_plugins_and_recovers_when_they_arrive() {
    let upstream = TestUpstream::start(handler::echo);
    // The `versioned` plugin is not there yet.
    let gateway = TestGateway::start_with_plugins(&config(&upstream), &[]);
    let admin = admin_addr(&gateway);
    let live = get(&format!("http://{admin}/health/live")).await;
    assert_eq!(live.status, StatusCode::OK);
    let ready = get(&format!("http://{admin}/health/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let reasons = ready.json()["reasons"].to_string();
    assert!(
        reasons.contains("plugin `versioned` is not loaded"),
        "{reasons}"
    );
    let alias = get(&format!("http://{admin}/health")).await;
    assert_eq!(alias.status, StatusCode::SERVICE_UNAVAILABLE);
    let before = generation(admin).await;
    install(&gateway.plugins_dir(), "versioned", VERSION_A);
    wait_generation(admin, before).await;
    let ready = get(&format!("http://{admin}/health/ready")).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
}
