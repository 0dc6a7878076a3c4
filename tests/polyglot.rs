//! Plugins written in languages other than Rust, built from source by
//! `scripts/build-polyglot.sh` into `plugins/<name>.wasm`, served by the real gateway in front
//! of a real upstream:
//!
//! - `hmac-auth` (C, zig cc + wit-bindgen c): HMAC-SHA256 request signatures;
//! - `cors` (C++, zig c++ + wit-bindgen cpp): CORS preflights and response headers;
//! - `ip-filter` (Zig): client address allow/deny lists;
//! - `request-rewrite` (Go, wasip1 + wit-bindgen go): path, query and header rewriting;
//! - `server-timing` (AssemblyScript, hand-written canonical ABI): `server-timing` headers;
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

/// The non-Rust plugins, by the name the build gives their file, and their worlds.
const PLUGINS: [(&str, &str); 8] = [
    ("hmac-auth", "auth"),
    ("cors", "transform"),
    ("ip-filter", "auth"),
    ("request-rewrite", "transform"),
    ("server-timing", "transform"),
    ("json-guard", "transform"),
    ("response-envelope", "transform"),
    ("response-envelope-qjs", "transform"),
];

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
        "{} is missing: build the non-Rust plugins first with `scripts/build-polyglot.sh` \
         (it installs their toolchains from PyPI, npm and crates.io into \
         ~/.cache/wasmgate-tools)",
        path.display()
    );
    path
}

fn all_plugins() -> Vec<(&'static str, PathBuf)> {
    PLUGINS
        .iter()
        .map(|(name, _)| (*name, plugin(name)))
        .collect()
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
name = "signed"
prefix = "/signed"
upstream = "app"
stages = [
  {{ plugin = "hmac-auth", config = {{ keys = [{{ id = "partner-a", secret = "{HMAC_SECRET_A}" }}, {{ id = "partner-b", secret = "{HMAC_SECRET_B}", subject = "Partner B" }}], max-skew = "2m" }} }},
]

[[routes]]
name = "local-only"
prefix = "/local"
upstream = "app"
stages = [{{ plugin = "ip-filter", config = {{ allow = ["127.0.0.1/32", "::1/128"] }} }}]

[[routes]]
name = "office-only"
prefix = "/office"
upstream = "app"
stages = [{{ plugin = "ip-filter", config = {{ allow = ["10.0.0.0/8"], deny = ["10.66.0.0/16"], trust-forwarded-for = 1 }} }}]

[[routes]]
name = "rewrite"
prefix = "/v1"
upstream = "app"
stages = [{{ plugin = "request-rewrite", config = {REWRITE}, limits = {LIMITS} }}]

[[routes]]
name = "rewrite-reused"
prefix = "/v2"
upstream = "app"
stages = [{{ plugin = "request-rewrite", config = {REWRITE}, limits = {{ memory = "64MiB", deadline = "5s", reuse = {{ max-calls = 1000 }} }} }}]

[[routes]]
name = "cors"
prefix = "/cors"
upstream = "app"
stages = [{{ plugin = "cors", config = {{ allow-origins = ["https://app.example.com", "https://*.example.org"], allow-methods = ["GET", "PUT"], allow-headers = ["content-type"], expose-headers = ["x-request-id"], allow-credentials = true, max-age = 600 }} }}]

[[routes]]
name = "timing"
prefix = "/timing"
upstream = "app"
stages = [{{ plugin = "server-timing", config = {{ metric = "gw", timing-allow-origin = "*" }} }}]

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

// === C: hmac-auth ===

const HMAC_SECRET_A: &str = "6f1c0e9d2b7a48e3a5c4d1f0b9e8a7c6";
const HMAC_SECRET_B: &str = "0b9e8a7c66f1c0e9d2b7a48e3a5c4d1f";

/// HMAC-SHA256 in lower-case hex, computed independently of the plugin's C code.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// A GET signed the way hmac-auth's README tells clients to sign.
async fn signed_get(
    gateway: &TestGateway,
    uri: &str,
    key_id: &str,
    secret: &str,
    timestamp: u64,
) -> common::Reply {
    let signature = hmac_sha256_hex(
        secret.as_bytes(),
        format!("GET\n{uri}\n{timestamp}").as_bytes(),
    );
    let timestamp = timestamp.to_string();
    let headers = [
        ("x-key-id", key_id),
        ("x-timestamp", timestamp.as_str()),
        ("x-signature", signature.as_str()),
    ];
    send(
        &client(),
        request("GET", &gateway.url(uri), &headers, common::empty()),
    )
    .await
}

fn assert_refused(reply: &common::Reply, status: StatusCode, error: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["error"], error, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_hmac_auth_accepts_signed_requests_and_refuses_everything_else() {
    let (upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    let now = unix_seconds();

    let reply = signed_get(
        &gateway,
        "/signed/orders/42?verbose=1",
        "partner-b",
        HMAC_SECRET_B,
        now,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-auth-subject"], "Partner B", "{seen}");
    assert_eq!(
        seen["headers"]["x-auth-claim-key-id"], "partner-b",
        "{seen}"
    );
    let reply = signed_get(&gateway, "/signed/x", "partner-a", HMAC_SECRET_A, now).await;
    assert_eq!(reply.json()["headers"]["x-auth-subject"], "partner-a");

    let before = upstream.requests();
    let reply = get(&gateway.url("/signed/x")).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "missing_credentials");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("HMAC-SHA256")),
        "{reply:?}"
    );
    // Another key's secret, an unknown key, a signature for another URI: one answer.
    let reply = signed_get(&gateway, "/signed/x", "partner-a", HMAC_SECRET_B, now).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_signature");
    let reply = signed_get(&gateway, "/signed/x", "partner-z", HMAC_SECRET_A, now).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_signature");
    let forged = hmac_sha256_hex(
        HMAC_SECRET_A.as_bytes(),
        format!("GET\n/signed/y\n{now}").as_bytes(),
    );
    let now_text = now.to_string();
    let headers = [
        ("x-key-id", "partner-a"),
        ("x-timestamp", now_text.as_str()),
        ("x-signature", forged.as_str()),
    ];
    let reply = send(
        &client(),
        request("GET", &gateway.url("/signed/x"), &headers, common::empty()),
    )
    .await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_signature");
    // Outside the 2-minute skew, either way (the clock comes from host.now-millis).
    let reply = signed_get(&gateway, "/signed/x", "partner-a", HMAC_SECRET_A, now - 600).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "timestamp_out_of_range");
    let reply = signed_get(&gateway, "/signed/x", "partner-a", HMAC_SECRET_A, now + 600).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "timestamp_out_of_range");
    assert_eq!(
        upstream.requests(),
        before,
        "no refused request reached the upstream"
    );
}

// === C++: cors ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_cors_answers_preflights_and_tags_allowed_responses() {
    let (upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    let before = upstream.requests();
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        let url = gateway.url("/cors/items");
        async move {
            let mut fields = vec![
                ("origin", origin),
                ("access-control-request-method", method),
            ];
            if !headers.is_empty() {
                fields.push(("access-control-request-headers", headers));
            }
            send(
                &client(),
                request("OPTIONS", &url, &fields, common::empty()),
            )
            .await
        }
    };
    let reply = preflight("https://app.example.com", "PUT", "Content-Type").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    let methods = reply
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_string();
    assert!(methods.contains("PUT"), "{methods}");
    let reply = preflight("https://deep.sub.example.org", "GET", "").await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "a wildcard subdomain: {}",
        reply.text()
    );
    for (origin, method, headers, error) in [
        (
            "https://evil.example.net",
            "GET",
            "",
            "cors_origin_not_allowed",
        ),
        (
            "https://app.example.com",
            "DELETE",
            "",
            "cors_method_not_allowed",
        ),
        (
            "https://app.example.com",
            "GET",
            "x-debug",
            "cors_headers_not_allowed",
        ),
    ] {
        let reply = preflight(origin, method, headers).await;
        assert_refused(&reply, StatusCode::FORBIDDEN, error);
    }
    assert_eq!(
        upstream.requests(),
        before,
        "preflights are answered by the stage"
    );

    // An actual request from an allowed origin: on-response finds the origin through the
    // request variable on-request set, and adds the headers.
    let headers = [("origin", "https://app.example.com")];
    let reply = send(
        &client(),
        request(
            "GET",
            &gateway.url("/cors/items"),
            &headers,
            common::empty(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(
        reply
            .header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin"))
    );
    // From an origin that is not allowed: proxied, without CORS headers.
    let headers = [("origin", "https://evil.example.net")];
    let reply = send(
        &client(),
        request(
            "GET",
            &gateway.url("/cors/items"),
            &headers,
            common::empty(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

// === Zig: ip-filter ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zig_ip_filter_allows_and_denies_by_network() {
    let (upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    let reply = get(&gateway.url("/local/x")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-auth-subject"], "127.0.0.1");
    assert_eq!(reply.json()["headers"]["x-auth-claim-ip"], "127.0.0.1");

    // Behind one trusted proxy: the last X-Forwarded-For entry is the client.
    let from = |xff: &'static str| {
        let url = gateway.url("/office/x");
        async move {
            let headers: Vec<(&str, &str)> = if xff.is_empty() {
                vec![]
            } else {
                vec![("x-forwarded-for", xff)]
            };
            send(&client(), request("GET", &url, &headers, common::empty())).await
        }
    };
    let reply = from("203.0.113.9, 10.1.2.3").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-auth-subject"], "10.1.2.3");
    let before = upstream.requests();
    for (xff, why) in [
        ("10.66.1.1", "deny wins over allow"),
        ("8.8.8.8", "not in allow"),
        ("10.1.2.3, 8.8.8.8", "only the trusted hop counts"),
        ("garbage", "an address that does not parse fails closed"),
        ("", "no header: the client cannot be determined"),
    ] {
        let reply = from(xff).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{why}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["error"], "forbidden", "{why}");
    }
    assert_eq!(
        upstream.requests(),
        before,
        "no refused request reached the upstream"
    );
}

// === Go: request-rewrite ===

/// The request-rewrite config both Go routes use (`/v1` fresh instances, `/v2` reused).
const REWRITE: &str = r#"{
    path = { strip-prefix = "/v1", add-prefix = "/api", replace = [{ regex = "^/old/(.*)$", with = "/new/$1" }] },
    query = { set = { source = "gateway" }, remove = ["debug"] },
    request-headers = { set = { x-rid = "{request_id}", x-user = "{identity.subject}" }, remove = ["cookie"], rename = { x-old = "x-new" } },
    response-headers = { set = { x-original-uri = "{var.rewrite.original-uri}" }, remove = ["server"] },
}"#;

async fn rewrite_behaviour(gateway: &TestGateway, prefix: &str) {
    let uri = format!("{prefix}/old/users/42?debug=1&page=2");
    let headers = [("cookie", "a=b"), ("x-old", "1"), ("x-user", "forged")];
    let reply = send(
        &client(),
        request("GET", &gateway.url(&uri), &headers, common::empty()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    let expected_path = if prefix == "/v1" {
        "/api/new/users/42"
    } else {
        "/api/v2/old/users/42"
    };
    assert_eq!(seen["path"], expected_path, "{seen}");
    assert_eq!(seen["query"], "page=2&source=gateway", "{seen}");
    let upstream_headers = &seen["headers"];
    assert!(upstream_headers.get("cookie").is_none(), "{seen}");
    assert!(upstream_headers.get("x-old").is_none(), "{seen}");
    assert_eq!(upstream_headers["x-new"], "1", "{seen}");
    assert!(
        upstream_headers.get("x-user").is_none(),
        "no identity: the forged header is removed: {seen}"
    );
    assert_eq!(
        upstream_headers["x-rid"].as_str(),
        reply.header("x-request-id"),
        "{seen}"
    );
    // on-response reads the request variable on-request set.
    assert_eq!(reply.header("x-original-uri"), Some(uri.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_request_rewrite_rewrites_path_query_and_headers_both_ways() {
    let (_upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    rewrite_behaviour(&gateway, "/v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_request_rewrite_behaves_the_same_on_reused_instances() {
    let (_upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    // The strip-prefix is /v1, so /v2 paths keep theirs; everything else is the same, every
    // time, on instances that serve many requests each.
    for _ in 0..5 {
        rewrite_behaviour(&gateway, "/v2").await;
    }
}

// === AssemblyScript: server-timing ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assemblyscript_server_timing_times_the_request_across_both_phases() {
    let (_upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    let before_ms = u128::from(unix_seconds()) * 1000;
    let reply = send(
        &client(),
        request(
            "GET",
            &gateway.url("/timing/x"),
            &[("x-request-start", "t=1")],
            common::empty(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let timing = reply
        .header("server-timing")
        .expect("server-timing")
        .to_string();
    let dur: u64 = timing
        .strip_prefix("gw;dur=")
        .and_then(|rest| rest.strip_suffix(";desc=\"timing\""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server-timing: {timing}"));
    assert!(dur < 60_000, "{timing}");
    assert_eq!(reply.header("timing-allow-origin"), Some("*"));
    // The upstream saw the gateway's clock (host.now-millis), not the client's claim.
    let start = reply.json()["headers"]["x-request-start"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let millis: u128 = start
        .strip_prefix("t=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("x-request-start upstream: {start:?}"));
    assert!(
        millis >= before_ms && millis < before_ms + 60_000,
        "{start}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_loads_from_the_compiled_cache_and_answers_its_first_request_quickly() {
    let (_upstream, gateway) = tokio::task::spawn_blocking(start).await.expect("start");
    // The first request through each runtime-language plugin after a (cached) load: no
    // compile on the request path, so well under a second even in a debug build, where a
    // compile would take 5–20 s. Python, SpiderMonkey and Go are the heaviest.
    for path in ["/guard/first", "/sm/first", "/v1/first"] {
        let started = Instant::now();
        let reply = get(&gateway.url(path)).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert!(
            took < Duration::from_secs(2),
            "{path}: first request took {took:?}"
        );
    }
    let records = gateway.log_records();
    for (name, world) in PLUGINS {
        let loaded = records
            .iter()
            .find(|r| r["message"] == "plugin loaded" && r["plugin"] == name)
            .unwrap_or_else(|| {
                panic!(
                    "no `plugin loaded` line for {name}; logs:\n{}",
                    gateway.logs()
                )
            });
        assert_eq!(loaded["world"], world, "{loaded}");
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
name = "c-bad"
prefix = "/e"
upstream = "app"
stages = [{{ plugin = "hmac-auth", config = {{ keys = [{{ id = "a", secret = "short" }}] }} }}]

[[routes]]
name = "zig-bad"
prefix = "/f"
upstream = "app"
stages = [{{ plugin = "ip-filter", config = {{ allow = ["10.0.0.1/8"] }} }}]

[[routes]]
name = "as-bad"
prefix = "/g"
upstream = "app"
stages = [{{ plugin = "server-timing", config = {{ metric = "my metric" }} }}]

[[routes]]
name = "cpp-bad"
prefix = "/i"
upstream = "app"
stages = [{{ plugin = "cors", config = {{ allow-origins = ["*"], allow-credentials = true }} }}]

[[routes]]
name = "go-bad"
prefix = "/h"
upstream = "app"
stages = [{{ plugin = "request-rewrite", config = {{ path = {{ replace = [{{ regex = "(", with = "x" }}] }} }}, limits = {LIMITS} }}]

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
        "route `c-bad` stage 0 (`hmac-auth`): invalid config: keys[0].secret: must be at least 16 bytes, got 5",
        "route `zig-bad` stage 0 (`ip-filter`): invalid config: allow[0]: \"10.0.0.1/8\" has host bits set (bits past the prefix length); did you mean \"10.0.0.0/8\"?",
        "route `as-bad` stage 0 (`server-timing`): invalid config: `metric` must be an HTTP token",
        "route `cpp-bad` stage 0 (`cors`): invalid config: `allow-origins = [\"*\"]` cannot be combined with `allow-credentials = true`",
        "route `go-bad` stage 0 (`request-rewrite`): invalid config: path.replace[0].regex: invalid regex \"(\"",
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

/// `config/gateway.toml` (the Rust plugins) and `config/polyglot.toml` (every other
/// language) pass `wasmgate check` with the plugins built from this tree, laid out as in the
/// repository (`config/` next to `plugins/`).
#[test]
fn the_example_configs_pass_check() {
    warm_cache();
    let dir = common::TempDir::new();
    let (config_dir, plugin_dir) = (dir.path().join("config"), dir.path().join("plugins"));
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
    let bundled = wasmgate_fixtures::ALL
        .iter()
        .filter(|(name, _)| !name.starts_with("fx-"))
        .map(|(name, path)| (*name, PathBuf::from(path)));
    for (name, path) in bundled.chain(all_plugins()) {
        std::fs::copy(&path, plugin_dir.join(format!("{name}.wasm"))).expect("copy a plugin");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The .proto files the transcoding routes name, relative to the config.
    let protos = config_dir.join("protos");
    std::fs::create_dir_all(&protos).expect("protos dir");
    for entry in std::fs::read_dir(repo.join("config/protos")).expect("config/protos") {
        let entry = entry.expect("a proto");
        std::fs::copy(entry.path(), protos.join(entry.file_name())).expect("copy a proto");
    }
    for file in ["gateway.toml", "polyglot.toml"] {
        let text = std::fs::read_to_string(repo.join("config").join(file)).expect("example config");
        // The shared compile cache, so that the big components load instead of compiling.
        let cache = format!(
            "[plugins]\ncache-dir = {:?}\n",
            cache_dir().display().to_string()
        );
        let text = text.replacen("[plugins]\n", &cache, 1);
        let path = config_dir.join(file);
        std::fs::write(&path, text).expect("write the config");
        let output = Command::new(common::WASMGATE)
            .args(["check", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .output()
            .expect("wasmgate check");
        assert!(
            output.status.success(),
            "config/{file} fails check:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
