//! The bundled plugins (built from `plugins/` by the fixtures crate) through the real gateway
//! with real upstreams: JWT and API-key auth, rate limiting, transforms and JSON aggregation,
//! and a bad stage config refused at load with route, stage and field named.

mod common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{
    TestGateway, TestUpstream, check_as, client, closed_addr, empty, full, handler, request, send,
};
use hmac::{Hmac, Mac};
use http::StatusCode;
use sha2::{Digest, Sha256};

const SECRET: &str = "bundled-plugin-test-secret-0123456789abcdef";

fn plugin(name: &str) -> &'static str {
    wasmgate_fixtures::ALL
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, path)| *path)
        .unwrap_or_else(|| panic!("bundled plugin {name} was not built"))
}

/// An HS256 JWT signed with `secret`, minted here independently of the plugin's code.
fn hs256(secret: &str, claims: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn gateway(upstream: &TestUpstream, routes: &str, plugins: &[&str]) -> TestGateway {
    let config = format!(
        "[plugins]\ndir = \"plugins\"\n[upstreams.echo]\ntargets = [\"{}\"]\n{routes}",
        upstream.addr()
    );
    let files: Vec<(&str, &Path)> = plugins
        .iter()
        .map(|name| (*name, Path::new(plugin(name))))
        .collect();
    TestGateway::start_with_plugins(&config, &files)
}

#[tokio::test]
async fn jwt_auth_checks_tokens_and_passes_the_identity_on() {
    let upstream = TestUpstream::start(handler::echo);
    let gw = gateway(
        &upstream,
        &format!(
            r#"[[routes]]
name = "jwt"
prefix = "/"
upstream = "echo"
stages = [{{ plugin = "jwt-auth", config = {{ keys = [{{ secret = "{SECRET}" }}], issuer = "tests", forward-claims = ["tenant"] }} }}]
"#
        ),
        &["jwt-auth"],
    );
    let http = client();
    let call = |token: Option<String>| {
        let headers: Vec<(String, String)> = token
            .map(|t| vec![("authorization".to_string(), format!("Bearer {t}"))])
            .unwrap_or_default();
        let url = gw.url("/orders");
        let http = http.clone();
        async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            send(&http, request("GET", &url, &pairs, empty())).await
        }
    };

    let missing = call(None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(
        missing
            .header("www-authenticate")
            .unwrap_or("")
            .starts_with("Bearer")
    );
    assert_eq!(
        upstream.requests(),
        0,
        "a refused request never reaches the upstream"
    );

    let good = hs256(
        SECRET,
        serde_json::json!({"sub": "alice", "tenant": "acme", "iss": "tests", "exp": now() + 600}),
    );
    let ok = call(Some(good)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let seen = ok.json();
    assert_eq!(seen["headers"]["x-auth-subject"], "alice");
    assert_eq!(seen["headers"]["x-auth-claim-tenant"], "acme");

    let expired = hs256(
        SECRET,
        serde_json::json!({"sub": "alice", "iss": "tests", "exp": now() - 3600}),
    );
    let refused = call(Some(expired)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .header("www-authenticate")
            .unwrap_or("")
            .contains("invalid_token"),
        "{:?}",
        refused.headers
    );

    let forged = hs256(
        "another-secret-of-at-least-thirty-two-bytes!",
        serde_json::json!({"sub": "mallory", "iss": "tests", "exp": now() + 600}),
    );
    assert_eq!(call(Some(forged)).await.status, StatusCode::UNAUTHORIZED);
    let wrong_issuer = hs256(
        SECRET,
        serde_json::json!({"sub": "alice", "iss": "elsewhere", "exp": now() + 600}),
    );
    assert_eq!(
        call(Some(wrong_issuer)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(upstream.requests(), 1, "only the valid token got through");
}

#[tokio::test]
async fn api_keys_from_header_or_query_and_a_rate_limit_per_key() {
    api_keys_and_rate_limit("").await;
}

/// The same on reused instances (the SDK keeps the parsed config per instance): the
/// answers must not change, and the count stays in the host's counters, not the guest.
#[tokio::test]
async fn api_keys_and_the_rate_limit_behave_the_same_on_reused_instances() {
    api_keys_and_rate_limit("[limits]\nreuse = { max-calls = 2 }\n").await;
}

async fn api_keys_and_rate_limit(limits: &str) {
    let upstream = TestUpstream::start(handler::echo);
    let digest: String = Sha256::digest(b"k-123")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let gw = gateway(
        &upstream,
        &format!(
            r#"{limits}
[[routes]]
name = "keyed"
prefix = "/"
upstream = "echo"
stages = [
  {{ plugin = "api-key-auth", config = {{ keys = [{{ name = "client-a", sha256 = "{digest}" }}], query = "api_key" }} }},
  {{ plugin = "rate-limit", config = {{ key = "subject", limits = [{{ requests = 2, window = "1m" }}] }} }},
]
"#
        ),
        &["api-key-auth", "rate-limit"],
    );
    let http = client();
    let wrong = send(
        &http,
        request("GET", &gw.url("/x"), &[("x-api-key", "nope")], empty()),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let first = send(
        &http,
        request("GET", &gw.url("/x"), &[("x-api-key", "k-123")], empty()),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json()["headers"]["x-auth-subject"], "client-a");
    assert_eq!(first.header("ratelimit-limit"), Some("2"));
    assert_eq!(first.header("ratelimit-remaining"), Some("1"));
    assert!(first.header("ratelimit-reset").is_some());

    let second = send(
        &http,
        request("GET", &gw.url("/x?api_key=k-123"), &[], empty()),
    )
    .await;
    assert_eq!(
        second.status,
        StatusCode::OK,
        "the key may come in the query"
    );
    assert_eq!(second.header("ratelimit-remaining"), Some("0"));

    let third = send(
        &http,
        request("GET", &gw.url("/x"), &[("x-api-key", "k-123")], empty()),
    )
    .await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        third
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok())
    );
    assert_eq!(third.header("ratelimit-remaining"), Some("0"));
    assert_eq!(upstream.requests(), 2);
}

#[tokio::test]
async fn transform_rewrites_headers_query_and_json_body_both_ways() {
    let upstream = TestUpstream::start(handler::echo);
    let gw = gateway(
        &upstream,
        r#"[[routes]]
name = "shaped"
prefix = "/"
upstream = "echo"
stages = [{ plugin = "transform", body = { buffer = true }, config = {
  request = {
    headers = { remove = ["x-internal-debug"], set = { "x-route" = "{route}" } },
    query = { remove = ["debug"], set = { "version" = "2" } },
    body = { remove = ["password"], rename = { "user.userName" = "user_name" } },
  },
  response = { headers = { remove = ["x-upstream-secret"], set = { "x-shaped" = "yes" } }, body = { set = { "meta.route" = "{route}" } } },
} }]
"#,
        &["transform"],
    );
    let body = serde_json::json!({"user": {"userName": "ada"}, "password": "hunter2"}).to_string();
    let reply = send(
        &client(),
        request(
            "POST",
            &gw.url("/users?debug=1&keep=1"),
            &[
                ("x-internal-debug", "1"),
                ("content-type", "application/json"),
            ],
            full(body),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-shaped"), Some("yes"));
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-route"], "shaped");
    assert!(seen["headers"].get("x-internal-debug").is_none());
    let query = seen["query"].as_str().unwrap_or("");
    assert!(
        query.contains("keep=1") && query.contains("version=2") && !query.contains("debug"),
        "{query}"
    );
    let sent: serde_json::Value =
        serde_json::from_str(seen["body"].as_str().expect("body")).expect("JSON body");
    assert_eq!(sent, serde_json::json!({"user": {"user_name": "ada"}}));
    assert_eq!(
        seen["meta"]["route"], "shaped",
        "the response body was rewritten too"
    );
}

#[tokio::test]
async fn aggregate_json_merges_answers_and_marks_partial_ones() {
    let users = TestUpstream::start(|_request| async {
        handler::json_response(StatusCode::OK, &serde_json::json!({"id": 1, "name": "Ada"}))
    });
    let orders = TestUpstream::start(|_request| async {
        handler::json_response(StatusCode::OK, &serde_json::json!([{"id": 7}]))
    });
    let config = format!(
        r#"[plugins]
dir = "plugins"
[upstreams.users]
targets = ["{}"]
[upstreams.orders]
targets = ["{}"]
[upstreams.down]
targets = ["{}"]
[[routes]]
name = "dashboard"
path = "/dashboard/{{id}}"
stages = [{{ plugin = "aggregate-json", upstreams = ["users", "orders", "down"], config = {{
  calls = [
    {{ name = "user", upstream = "users", uri = "/users/{{id}}" }},
    {{ name = "orders", upstream = "orders", uri = "/orders?user={{id}}" }},
    {{ name = "recs", upstream = "down", uri = "/recs", on-error = "null" }},
  ],
}} }}]
"#,
        users.addr(),
        orders.addr(),
        closed_addr()
    );
    let gw = TestGateway::start_with_plugins(
        &config,
        &[("aggregate-json", Path::new(plugin("aggregate-json")))],
    );
    let reply = common::get(&gw.url("/dashboard/1")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({"user": {"id": 1, "name": "Ada"}, "orders": [{"id": 7}], "recs": null})
    );
    assert_eq!(reply.header("x-aggregate-partial"), Some("true"));
    assert_eq!((users.requests(), orders.requests()), (1, 1));
}

#[test]
fn a_bad_stage_config_is_refused_naming_route_stage_and_field() {
    let config = r#"[plugins]
dir = "plugins"
[upstreams.echo]
targets = ["127.0.0.1:9"]
[[routes]]
name = "limited"
prefix = "/"
upstream = "echo"
stages = [{ plugin = "rate-limit", config = { limits = [{ requests = 10, window = "soon" }] } }]
"#;
    let out = check_as(
        "gateway.toml",
        config,
        &[("rate-limit", Path::new(plugin("rate-limit")))],
    );
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr
            .contains("route `limited` stage 0 (`rate-limit`)")
            && out.stderr.contains("limits[0].window"),
        "stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("gateway.toml:9:"),
        "the message points at the stage's line:\n{}",
        out.stderr
    );
}
