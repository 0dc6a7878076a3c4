//! Plugins written in Python and JavaScript, built from source by `scripts/build-polyglot.sh`
//! into `plugins/<name>.wasm`, served by the real gateway in front of a real upstream:
//!
//! - `json-guard` (Python, componentize-py): redacts and requires JSON body fields;
//! - `response-envelope` (JavaScript, componentize-js / SpiderMonkey) and
//!   `response-envelope-qjs` (the same source, componentize-qjs / QuickJS): wrap JSON
//!   responses in `{"data": …, "meta": {"request_id": …, "route": …}}`.
//!
//! A missing plugin file fails the test with the command that builds it; nothing is skipped.
//!
//! These components are big (1.6–18 MB) and take seconds to compile, so every config here
//! points `[plugins] cache-dir` at one directory under the cargo target dir, and the first
//! test to run compiles them once (`wasmgate check`, which fills the cache); every gateway
//! after that loads them from the cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{TestGateway, TestUpstream, client, full, get, handler, request, send};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

/// The non-Rust plugins, by the name the build gives their file.
const PLUGINS: [&str; 3] = ["json-guard", "response-envelope", "response-envelope-qjs"];

/// Stage limits that fit these runtimes with room to spare. Measured needs (small bodies):
/// linear memory to instantiate is 13 MiB for Python, 10 MiB for SpiderMonkey and 2 MiB for
/// QuickJS, growing with the body (a 4 MiB JSON body needs 64 MiB in all three); a call
/// takes about 1 ms in a release gateway, tens of ms in a debug one on a loaded machine.
const LIMITS: &str = r#"{ memory = "64MiB", deadline = "5s" }"#;

/// `plugins/<name>.wasm`, which must have been built; fails with the build command if not.
fn plugin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the Python and JavaScript plugins first with \
         `scripts/build-polyglot.sh` (it installs componentize-py, componentize-js and \
         componentize-qjs from PyPI and npm into ~/.cache/wasmgate-tools)",
        path.display()
    );
    path
}

fn all_plugins() -> Vec<(&'static str, PathBuf)> {
    PLUGINS.iter().map(|name| (*name, plugin(name))).collect()
}

fn as_refs<'a>(plugins: &'a [(&'static str, PathBuf)]) -> Vec<(&'static str, &'a Path)> {
    plugins.iter().map(|(n, p)| (*n, p.as_path())).collect()
}

/// The compiled-artifact cache every gateway in this file shares.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")
}

/// The `[plugins]` table: the temp dir's `plugins/` and the shared cache.
fn plugins_table() -> String {
    format!(
        "[plugins]\ndir = \"plugins\"\ncache-dir = {:?}\nwatch = false\n",
        cache_dir().display().to_string()
    )
}

/// Compiles the plugins into the shared cache once per test run, with `wasmgate check`
/// (which loads every plugin and runs every stage's `validate-config`). Other tests wait
/// for it, so no two gateways compile the same 18 MB component at the same time.
fn warm_cache() {
    static WARM: OnceLock<Result<Duration, String>> = OnceLock::new();
    let outcome = WARM.get_or_init(|| {
        let plugins = all_plugins();
        let dir = common::TempDir::new();
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
        for (name, path) in &plugins {
            std::fs::copy(path, plugin_dir.join(format!("{name}.wasm"))).expect("copy a plugin");
        }
        let upstream = TestUpstream::start(handler::echo);
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, gateway_config(&upstream)).expect("write the config");
        let started = Instant::now();
        let mut child = Command::new(common::WASMGATE)
            .args(["check", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning wasmgate check");
        // Compiling 32 MB of components in a debug build on a busy 2-core machine can take
        // minutes; bound it generously.
        let limit = Duration::from_secs(600);
        loop {
            if child.try_wait().expect("polling wasmgate check").is_some() {
                break;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                return Err(format!("wasmgate check did not finish within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("wasmgate check output");
        if !output.status.success() {
            return Err(format!(
                "wasmgate check failed on the polyglot config:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(started.elapsed())
    });
    match outcome {
        Ok(took) => eprintln!(
            "polyglot plugins compiled or found in {} ({took:?})",
            cache_dir().display()
        ),
        Err(message) => panic!("{message}"),
    }
}

/// A gateway config with one route per behaviour under test.
fn gateway_config(upstream: &TestUpstream) -> String {
    format!(
        r#"
[server]
{plugins}
[upstreams.app]
targets = ["{addr}"]

[[routes]]
name = "guard"
prefix = "/guard"
upstream = "app"
stages = [
  {{ plugin = "json-guard", config = {{ redact = ["password", "ssn"], require = ["user"] }}, body = {{ buffer = true }}, limits = {LIMITS} }},
]

[[routes]]
name = "envelope-sm"
prefix = "/sm"
upstream = "app"
stages = [
  {{ plugin = "response-envelope", config = {{ meta = {{ version = "v1" }} }}, body = {{ buffer = true }}, limits = {LIMITS} }},
]

[[routes]]
name = "envelope-qjs"
prefix = "/qjs"
upstream = "app"
stages = [
  {{ plugin = "response-envelope-qjs", config = {{ meta = {{ version = "v1" }} }}, body = {{ buffer = true }}, limits = {LIMITS} }},
]

[[routes]]
name = "envelope-errors"
prefix = "/errors"
upstream = "app"
stages = [
  {{ plugin = "response-envelope-qjs", config = {{ wrap-errors = true, data-key = "error_body" }}, body = {{ buffer = true }}, limits = {LIMITS} }},
]

[[routes]]
name = "chain"
prefix = "/chain"
upstream = "app"
stages = [
  {{ plugin = "response-envelope", body = {{ buffer = true }}, limits = {LIMITS} }},
  {{ plugin = "json-guard", config = {{ redact = ["token"], require = ["user.id"], audit-header = "x-redactions" }}, body = {{ buffer = true }}, limits = {LIMITS} }},
]
"#,
        plugins = plugins_table(),
        addr = upstream.addr(),
    )
}

/// The upstream: `…/text` answers text, `…/missing` a JSON 404, `…/big` a JSON number too
/// big for a double; anything else is echoed as JSON.
async fn app(request: Request<Incoming>) -> Response<common::BoxBody> {
    let path = request.uri().path().to_string();
    if path.ends_with("/text") {
        return handler::fixed(200, "plain text, not JSON")(request).await;
    }
    if path.ends_with("/missing") {
        return handler::json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no such thing"}),
        );
    }
    if path.ends_with("/big") {
        let mut response = Response::new(full(r#"{"id": 12345678901234567890}"#));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("static"));
        return response;
    }
    handler::echo(request).await
}

fn start() -> (TestUpstream, TestGateway) {
    warm_cache();
    let upstream = TestUpstream::start(app);
    let plugins = all_plugins();
    let gateway = TestGateway::start_with_plugins(&gateway_config(&upstream), &as_refs(&plugins));
    (upstream, gateway)
}

async fn post_json(gateway: &TestGateway, path: &str, body: &str) -> common::Reply {
    send(
        &client(),
        request(
            "POST",
            &gateway.url(path),
            &[("content-type", "application/json")],
            full(body.to_string()),
        ),
    )
    .await
}

// === Python: json-guard ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_json_guard_redacts_fields_and_tells_upstream_and_client_how_many() {
    let (upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    let reply = post_json(
        &gateway,
        "/guard/signup",
        r#"{"user": "ann", "password": "hunter2", "profile": {"ssn": "078-05-1120", "city": "Oslo"}}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    let body: serde_json::Value = serde_json::from_str(seen["body"].as_str().expect("echoed body"))
        .expect("JSON upstream body");
    assert_eq!(
        body,
        serde_json::json!({"user": "ann", "password": "[redacted]", "profile": {"ssn": "[redacted]", "city": "Oslo"}}),
        "the upstream must never see the secrets"
    );
    assert_eq!(seen["headers"]["x-audit"], "2", "upstream sees the count");
    assert_eq!(
        seen["headers"]["content-length"].as_str(),
        Some(seen["body"].as_str().unwrap().len().to_string().as_str()),
        "content-length follows the rewritten body"
    );
    assert_eq!(
        reply.header("x-audit"),
        Some("2"),
        "the client sees the count (on-response, via a request variable)"
    );
    assert!(
        gateway.wait_for_log(
            "redacted 2 field(s) in POST /guard/signup: password, profile.ssn",
            Duration::from_secs(5)
        ),
        "host.log line missing; logs:\n{}",
        gateway.logs()
    );

    // Nothing to redact: the body goes on byte for byte, with x-audit: 0.
    let original = r#"{ "user": "bob",  "note": "spacing kept" }"#;
    let reply = post_json(&gateway, "/guard/x", original).await;
    assert_eq!(reply.json()["body"], original);
    assert_eq!(reply.header("x-audit"), Some("0"));

    // Methods outside the configured ones are not inspected.
    let reply = get(&gateway.url("/guard/read")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-audit"), None);
    assert!(reply.json()["headers"].get("x-audit").is_none());
    drop(upstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_json_guard_refuses_bad_bodies_with_json_errors_before_the_upstream() {
    let (upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    let before = upstream.requests();

    let reply = post_json(&gateway, "/guard/x", r#"{"password": "p"}"#).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let error = reply.json();
    assert_eq!(error["error"], "missing_fields");
    assert_eq!(error["missing"], serde_json::json!(["user"]));
    assert_eq!(
        error["request_id"].as_str(),
        reply.header("x-request-id"),
        "the error carries the request id the gateway gave the request"
    );

    let reply = post_json(&gateway, "/guard/x", r#"{"user": null}"#).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (StatusCode::BAD_REQUEST, "missing_fields".into())
    );

    let reply = post_json(&gateway, "/guard/x", "{not json").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_json");

    let reply = send(
        &client(),
        request(
            "PUT",
            &gateway.url("/guard/x"),
            &[("content-type", "text/plain")],
            full("user=ann"),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.json()["error"], "unsupported_media_type");

    assert_eq!(
        upstream.requests(),
        before,
        "no refused request reached the upstream"
    );
}

// === JavaScript: response-envelope, SpiderMonkey and QuickJS ===

async fn envelope_behaviour(prefix: &str, route: &str) {
    let (upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");

    let reply = get(&gateway.url(&format!("{prefix}/users/7?full=1"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    let envelope = reply.json();
    assert_eq!(
        envelope["data"]["path"],
        format!("{prefix}/users/7"),
        "data is the upstream's JSON"
    );
    assert_eq!(envelope["data"]["query"], "full=1");
    assert_eq!(
        envelope["meta"],
        serde_json::json!({
            "request_id": reply.header("x-request-id").expect("x-request-id"),
            "route": route,
            "version": "v1",
        })
    );
    let keys: Vec<&String> = envelope.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["data", "meta"]);

    // The upstream's bytes are kept: a number beyond 2^53 is not rounded.
    let reply = get(&gateway.url(&format!("{prefix}/big"))).await;
    assert!(
        reply
            .text()
            .starts_with(r#"{"data":{"id": 12345678901234567890},"meta":"#),
        "{}",
        reply.text()
    );

    // Not JSON, or not 2xx: untouched.
    let reply = get(&gateway.url(&format!("{prefix}/text"))).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "plain text, not JSON")
    );
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    let reply = get(&gateway.url(&format!("{prefix}/missing"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json(), serde_json::json!({"error": "no such thing"}));

    // A request body passes through on-request untouched.
    let reply = post_json(&gateway, &format!("{prefix}/echo"), r#"{"a": [1, 2]}"#).await;
    assert_eq!(reply.json()["data"]["body"], r#"{"a": [1, 2]}"#);
    assert!(upstream.requests() >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_spidermonkey_envelope_wraps_json_responses() {
    envelope_behaviour("/sm", "envelope-sm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_quickjs_envelope_wraps_json_responses() {
    envelope_behaviour("/qjs", "envelope-qjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_envelope_config_wraps_errors_under_another_key() {
    let (_upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    let reply = get(&gateway.url("/errors/missing")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let envelope = reply.json();
    assert_eq!(
        envelope["error_body"],
        serde_json::json!({"error": "no such thing"})
    );
    assert_eq!(envelope["meta"]["route"], "envelope-errors");
}

// === Both languages on one route ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_stages_chain_on_one_route() {
    let (_upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    // Request phase: envelope (no-op), then json-guard redacts. Response phase, in reverse:
    // json-guard adds its header, then the envelope wraps what the upstream said.
    let reply = post_json(
        &gateway,
        "/chain/login",
        r#"{"user": {"id": 3}, "token": "s3cret"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-redactions"), Some("1"));
    let envelope = reply.json();
    assert_eq!(envelope["meta"]["route"], "chain");
    assert_eq!(
        envelope["data"]["body"],
        r#"{"user":{"id":3},"token":"[redacted]"}"#
    );
    assert_eq!(envelope["data"]["headers"]["x-redactions"], "1");

    // A refusal by json-guard short-circuits the pipeline: the client gets json-guard's
    // answer as it is, with no response phase, so the envelope never wraps it.
    let reply = post_json(&gateway, "/chain/login", r#"{"user": {}}"#).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let error = reply.json();
    assert_eq!(error["missing"], serde_json::json!(["user.id"]));
    assert!(error.get("data").is_none(), "{error}");
}

// === Load-time checks ===

#[test]
fn every_plugin_loads_from_the_compiled_cache_after_the_first_compile() {
    let (_upstream, gateway) = start();
    let records = gateway.log_records();
    for name in PLUGINS {
        let loaded = records
            .iter()
            .find(|r| r["message"] == "plugin loaded" && r["plugin"] == name)
            .unwrap_or_else(|| {
                panic!(
                    "no `plugin loaded` line for {name}; logs:\n{}",
                    gateway.logs()
                )
            });
        assert_eq!(loaded["world"], "transform");
        assert_eq!(
            loaded["from_cache"], true,
            "{name} was compiled again: {loaded}"
        );
    }
}

#[test]
fn bad_stage_configs_fail_check_naming_route_stage_and_field() {
    warm_cache();
    let plugins = all_plugins();
    let config = format!(
        r#"
{plugins}
[upstreams.app]
targets = ["127.0.0.1:9"]

[[routes]]
name = "py-bad"
prefix = "/a"
upstream = "app"
stages = [{{ plugin = "json-guard", config = {{ redact = "password" }}, body = {{ buffer = true }}, limits = {LIMITS} }}]

[[routes]]
name = "py-unknown"
prefix = "/b"
upstream = "app"
stages = [{{ plugin = "json-guard", config = {{ require = ["user"], reqiure = ["id"] }}, limits = {LIMITS} }}]

[[routes]]
name = "sm-bad"
prefix = "/c"
upstream = "app"
stages = [{{ plugin = "response-envelope", config = {{ meta = {{ request_id = "fixed" }} }}, limits = {LIMITS} }}]

[[routes]]
name = "qjs-bad"
prefix = "/d"
upstream = "app"
stages = [
  {{ plugin = "response-envelope-qjs", limits = {LIMITS} }},
  {{ plugin = "response-envelope-qjs", config = {{ wrap-errors = "yes" }}, limits = {LIMITS} }},
]
"#,
        plugins = plugins_table()
    );
    let output = common::check_as("gateway.toml", &config, &as_refs(&plugins));
    assert_eq!(
        output.code,
        Some(1),
        "check must fail; stderr:\n{}",
        output.stderr
    );
    let expected = [
        "route `py-bad` stage 0 (`json-guard`): invalid config: `redact` must be a list of strings, got a string",
        "route `py-unknown` stage 0 (`json-guard`): invalid config: unknown field `reqiure`",
        "route `sm-bad` stage 0 (`response-envelope`): invalid config: `meta.request_id` is reserved",
        "route `qjs-bad` stage 1 (`response-envelope-qjs`): invalid config: `wrap-errors` must be a boolean, got a string",
    ];
    for message in expected {
        let line = output
            .stderr
            .lines()
            .find(|line| line.contains(message))
            .unwrap_or_else(|| panic!("missing {message:?} in:\n{}", output.stderr));
        // …and each is located: `error: …/gateway.toml:LINE:COLUMN: route …`.
        let at_line = line
            .split("gateway.toml:")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .is_some_and(|n| n.parse::<u32>().is_ok());
        assert!(at_line, "not located at a line of the file: {line}");
    }
    assert!(
        !output.stderr.contains("route `qjs-bad` stage 0"),
        "a stage with no config is valid:\n{}",
        output.stderr
    );
}

#[test]
fn a_memory_cap_below_what_the_runtime_needs_is_refused_at_load() {
    warm_cache();
    let plugins = all_plugins();
    // 8 MiB: too little for CPython (13 MiB) and SpiderMonkey (10 MiB); plenty for QuickJS.
    let config = format!(
        r#"
{plugins}
[limits]
memory = "8MiB"
deadline = "5s"
[upstreams.app]
targets = ["127.0.0.1:9"]
[[routes]]
name = "py"
prefix = "/a"
upstream = "app"
stages = [{{ plugin = "json-guard", config = {{ redact = ["x"] }} }}]
[[routes]]
name = "sm"
prefix = "/b"
upstream = "app"
stages = [{{ plugin = "response-envelope" }}]
[[routes]]
name = "qjs"
prefix = "/c"
upstream = "app"
stages = [{{ plugin = "response-envelope-qjs" }}]
"#,
        plugins = plugins_table()
    );
    let output = common::check_as("gateway.toml", &config, &as_refs(&plugins));
    assert_eq!(output.code, Some(1), "stderr:\n{}", output.stderr);
    assert!(output.stderr.contains("route `py` stage 0 (`json-guard`): validate-config failed: plugin exceeded its memory cap of 8388608 bytes"), "{}", output.stderr);
    assert!(output.stderr.contains("route `sm` stage 0 (`response-envelope`): validate-config failed: plugin exceeded its memory cap"), "{}", output.stderr);
    assert!(!output.stderr.contains("route `qjs`"), "{}", output.stderr);
}
