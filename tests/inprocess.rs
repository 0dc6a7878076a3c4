//! The gateway core in the same process, without sockets: routing, rewrites, each route
//! terminal, stage order and short-circuits, through `Gateway::handle` with real compiled
//! plugins and real loopback upstreams. The process-level tests keep sockets, signals,
//! reload and protocol limits.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{TempDir, TestUpstream, handler};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmgate::config::Config;
use wasmgate::gateway::{Gateway, LiveState};
use wasmgate::plugins;
use wasmgate::runtime::{LocalState, Runtime, RuntimeSettings};

const CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/inprocess-plugin-cache");

/// A gateway built in this process from `config` (TOML), with `plugins` copied into its
/// plugin directory as `NAME.wasm`.
struct Core {
    gateway: Gateway,
    _dir: TempDir,
}

impl Core {
    async fn start(config: &str, plugin_files: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
        for (name, wasm) in plugin_files {
            std::fs::copy(wasm, plugin_dir.join(format!("{name}.wasm"))).expect("copy plugin");
        }
        let text = format!("[plugins]\ncache-dir = {CACHE:?}\nwatch = false\n{config}");
        let path = dir.path().join("gateway.toml");
        let config = Config::parse(&path, &text).unwrap_or_else(|e| panic!("config: {e}"));
        let settings = RuntimeSettings {
            max_instances: 64,
            cache_dir: Some(config.plugins.cache_dir.clone()),
            metrics: None,
        };
        let runtime =
            Arc::new(Runtime::new(&settings, Arc::new(LocalState::default())).expect("runtime"));
        let loaded = {
            let runtime = runtime.clone();
            let dir = config.plugins.dir.clone();
            tokio::task::spawn_blocking(move || plugins::load_dir(&runtime, &dir))
                .await
                .expect("loading plugins")
        };
        assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
        let state = LiveState::build(Arc::new(config), Arc::new(loaded), &runtime, None)
            .await
            .unwrap_or_else(|problems| panic!("{problems:?}"));
        Self {
            gateway: Gateway::new(runtime, state),
            _dir: dir,
        }
    }

    /// Sends a request through `Gateway::handle` and reads the whole answer.
    async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = self.gateway.handle(request, "192.0.2.7").await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(request("GET", uri, &[])).await
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

fn upstream_toml(name: &str, upstream: &TestUpstream) -> String {
    format!("[upstreams.{name}]\ntargets = [\"{}\"]\n", upstream.addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_by_host_path_and_method() {
    let up = TestUpstream::start(handler::echo);
    let config = format!(
        r#"{}
[[routes]]
name = "exact-host"
hosts = ["api.test"]
prefix = "/"
upstream = "app"
[[routes]]
name = "wildcard"
hosts = ["*.example.com"]
prefix = "/"
upstream = "app"
[[routes]]
name = "users"
path = "/users/{{id}}"
methods = ["GET"]
upstream = "app"
"#,
        upstream_toml("app", &up)
    );
    let core = Core::start(&config, &[]).await;
    let by_host = core
        .send(request("GET", "/anything", &[("host", "api.test")]))
        .await;
    assert_eq!(by_host.status, StatusCode::OK);
    assert_eq!(by_host.json()["path"], "/anything");
    let wildcard = core
        .send(request("GET", "/w", &[("host", "a.b.example.com:8080")]))
        .await;
    assert_eq!(wildcard.status, StatusCode::OK);
    let user = core.get("/users/42").await;
    assert_eq!(user.json()["path"], "/users/42");
    let head = core.send(request("HEAD", "/users/42", &[])).await;
    assert_eq!(head.status, StatusCode::OK, "HEAD follows GET");
    let post = core.send(request("POST", "/users/42", &[])).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let missing = core.get("/nothing/here").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "no_route");
    assert_eq!(up.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_strip_prefixes_and_normalized_paths_reach_the_upstream() {
    let up = TestUpstream::start(handler::echo);
    let config = format!(
        r#"{}
[[routes]]
name = "rewrite"
path = "/v1/users/{{id}}"
upstream = "app"
rewrite = "/internal/users/{{id}}/profile"
[[routes]]
name = "strip"
prefix = "/api"
strip-prefix = "/api"
upstream = "app"
"#,
        upstream_toml("app", &up)
    );
    let core = Core::start(&config, &[]).await;
    let rewritten = core.get("/v1/users/7?full=1").await;
    assert_eq!(rewritten.json()["path"], "/internal/users/7/profile");
    assert_eq!(rewritten.json()["query"], "full=1");
    let stripped = core.get("/api/orders/9").await;
    assert_eq!(stripped.json()["path"], "/orders/9");
    let dotted = core.get("/api/x/../%6frders//9").await;
    assert_eq!(
        dotted.json()["path"],
        "/orders/9",
        "normalized before stripping"
    );
    let forwarded = stripped.json()["headers"].clone();
    assert_eq!(forwarded["x-forwarded-for"], "192.0.2.7");
    assert_eq!(forwarded["via"], "1.1 wasmgate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_answers_statically_and_redirects_from_captures() {
    let config = r#"
[[routes]]
name = "static"
path = "/ping"
respond = { status = 200, body = "pong", headers = { "cache-control" = "no-store" } }
[[routes]]
name = "moved"
path = "/old/{id}"
respond = { status = 301, location = "https://new.example/items/{id}" }
[[routes]]
name = "empty"
path = "/gone"
respond = { status = 204 }
"#;
    let core = Core::start(config, &[]).await;
    let pong = core.get("/ping").await;
    assert_eq!(
        (pong.status, &pong.body[..]),
        (StatusCode::OK, &b"pong"[..])
    );
    assert_eq!(
        pong.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(pong.header("cache-control"), Some("no-store"));
    assert_eq!(pong.header("content-length"), Some("4"));
    let moved = core.get("/old/42").await;
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        moved.header("location"),
        Some("https://new.example/items/42")
    );
    let gone = core.get("/gone").await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert!(gone.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_terminal_fans_out_and_merges() {
    let users = TestUpstream::start(handler::fixed(200, r#"{"name":"ada"}"#));
    let orders = TestUpstream::start(handler::fixed(200, "[1,2]"));
    let config = format!(
        r#"{}{}
[[routes]]
name = "dashboard"
path = "/dashboard"
stages = [{{ plugin = "agg", upstreams = ["users", "orders"], config = {{ calls = [
  {{ name = "user", upstream = "users", uri = "/u" }},
  {{ name = "orders", upstream = "orders", uri = "/o" }},
] }} }}]
"#,
        upstream_toml("users", &users),
        upstream_toml("orders", &orders)
    );
    let core = Core::start(&config, &[("agg", wasmgate_fixtures::FX_AGGREGATE)]).await;
    let merged = core.get("/dashboard").await;
    assert_eq!(merged.status, StatusCode::OK, "{:?}", merged.body);
    assert_eq!(
        merged.json(),
        serde_json::json!({"user": {"name": "ada"}, "orders": [1, 2]})
    );
    assert_eq!((users.requests(), orders.requests()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_run_in_order_and_a_refusal_short_circuits_the_rest() {
    let up = TestUpstream::start(handler::echo);
    let config = format!(
        r#"{}
[[routes]]
name = "chain"
prefix = "/"
upstream = "app"
stages = [
  {{ plugin = "limit", config = {{ limit = 1000, window_ms = 60000 }} }},
  {{ plugin = "auth" }},
  {{ plugin = "tag", config = {{ tag = "first" }} }},
]
"#,
        upstream_toml("app", &up)
    );
    let core = Core::start(
        &config,
        &[
            ("limit", wasmgate_fixtures::FX_RATELIMIT),
            ("auth", wasmgate_fixtures::FX_AUTH_HEADER),
            ("tag", wasmgate_fixtures::FX_TRANSFORM),
        ],
    )
    .await;
    // Refused by auth: the transform and the upstream never run, and the rate-limit
    // stage's header still reaches the client.
    let refused = core
        .send(request("GET", "/x", &[("x-auth-subject", "mallory")]))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.header("x-ratelimit-remaining").is_some());
    assert!(refused.header("x-response-tag").is_none());
    assert_eq!(up.requests(), 0);
    // Let through: auth's identity reaches the transform, which tags both phases.
    let ok = core
        .send(request(
            "GET",
            "/x",
            &[("x-user", "ada"), ("x-auth-subject", "mallory")],
        ))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let seen = ok.json()["headers"].clone();
    assert_eq!(
        seen["x-auth-subject"], "ada",
        "the client's identity header is replaced"
    );
    assert_eq!(seen["x-identity"], "ada", "auth ran before the transform");
    assert_eq!(seen["x-transform-tag"], "first");
    assert_eq!(ok.header("x-response-tag"), Some("first"));
    assert_eq!(
        ok.header("x-seen-var"),
        Some("first"),
        "a variable crossed the phases"
    );
    assert!(ok.header("x-ratelimit-remaining").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_is_signalled_and_new_requests_see_the_new_config() {
    let core = Core::start(
        "[[routes]]\nname = \"r\"\npath = \"/v\"\nrespond = { body = \"one\" }\n",
        &[],
    )
    .await;
    let mut changed = core.gateway.changed();
    assert_eq!(core.gateway.version(), 0);
    assert_eq!(&core.get("/v").await.body[..], b"one");
    let current = core.gateway.state();
    let text = "[[routes]]\nname = \"r\"\npath = \"/v\"\nrespond = { body = \"two\" }\n";
    let config = Config::parse(Path::new("two.toml"), text).expect("config");
    let next = LiveState::build(
        Arc::new(config),
        current.plugins.clone(),
        core.gateway.runtime(),
        Some(&current),
    )
    .await
    .expect("built");
    core.gateway.swap(next);
    changed.changed().await.expect("a version signal");
    assert_eq!(*changed.borrow(), 1);
    assert_eq!(&core.get("/v").await.body[..], b"two");
}
