use serde_json::{Value, json};
use wasmgate_plugin_sdk::{
    Aggregate, BackendResult, CallError, Context, Request, Response, parse_config,
};

use super::*;

fn config(config: Value) -> Config {
    let config: Config = parse_config(&config.to_string()).unwrap();
    JsonAggregator::validate(&config).unwrap();
    config
}

fn dashboard(extra: Value) -> Config {
    let mut base = json!({
        "calls": [
            { "name": "user", "upstream": "users", "uri": "/users/{id}" },
            { "name": "orders", "upstream": "orders", "uri": "/orders?user={id}&limit={query.limit}", "key": "recent_orders", "timeout-ms": 300 },
        ],
        "forward-headers": ["authorization"],
        "timeout-ms": 1000,
    });
    for (key, value) in extra.as_object().unwrap() {
        base[key] = value.clone();
    }
    config(base)
}

fn ctx() -> Context {
    Context {
        request_id: "r1".into(),
        params: vec![("id".into(), "42".into())],
        ..Context::default()
    }
}

fn ok(name: &str, body: Value) -> BackendResult {
    BackendResult {
        name: name.into(),
        outcome: Ok(Response::json(200, &body)),
    }
}

fn failed(name: &str, error: CallError) -> BackendResult {
    BackendResult {
        name: name.into(),
        outcome: Err(error),
    }
}

fn merge(config: &Config, results: Vec<BackendResult>) -> (u16, Option<String>, Value) {
    let response = JsonAggregator::merge(config, &Request::new("GET", "/"), &ctx(), results);
    let partial = response
        .header_str("x-aggregate-partial")
        .map(str::to_string);
    (response.status, partial, response.body_json().unwrap())
}

#[test]
fn plan_fills_templates_and_forwards_headers() {
    let config = dashboard(json!({}));
    let req = Request::new("GET", "/dashboard/42?limit=5")
        .with_header("authorization", "Bearer t")
        .with_header("cookie", "secret=1");
    let plan = JsonAggregator::plan(&config, &req, &ctx());
    assert_eq!(plan.len(), 2);
    assert_eq!(
        (plan[0].name.as_str(), plan[0].upstream.as_str()),
        ("user", "users")
    );
    assert_eq!(plan[0].uri, "/users/42");
    assert_eq!(plan[0].timeout_ms, Some(1000));
    assert_eq!(plan[0].headers.get_str("authorization"), Some("Bearer t"));
    assert_eq!(plan[0].headers.get("cookie"), None);
    assert_eq!(plan[1].uri, "/orders?user=42&limit=5");
    assert_eq!(plan[1].timeout_ms, Some(300));
    assert_eq!(plan[1].method, "GET");
    assert_eq!(plan[1].body, None);
}

#[test]
fn plan_can_forward_the_body() {
    let config = config(json!({ "calls": [
        { "name": "search", "upstream": "s", "uri": "/search", "method": "POST", "forward-body": true, "headers": { "x-source": "gw" } },
    ] }));
    let req = Request::new("POST", "/")
        .with_header("content-type", "application/json")
        .with_body("{\"q\":1}");
    let plan = JsonAggregator::plan(&config, &req, &ctx());
    assert_eq!(plan[0].method, "POST");
    assert_eq!(plan[0].body.as_deref(), Some(&b"{\"q\":1}"[..]));
    assert_eq!(
        plan[0].headers.get_str("content-type"),
        Some("application/json")
    );
    assert_eq!(plan[0].headers.get_str("x-source"), Some("gw"));
    assert_eq!(plan[0].timeout_ms, None);
}

#[test]
fn merge_under_keys() {
    let config = dashboard(json!({}));
    let (status, partial, body) = merge(
        &config,
        vec![
            ok("orders", json!([{ "id": 7 }])),
            ok("user", json!({ "name": "Al" })),
        ],
    );
    assert_eq!((status, partial), (200, None));
    assert_eq!(
        body,
        json!({ "user": { "name": "Al" }, "recent_orders": [{ "id": 7 }] })
    );
}

#[test]
fn deep_merge_in_plan_order() {
    let config = config(json!({ "merge": "deep", "calls": [
        { "name": "a", "upstream": "a", "uri": "/a" },
        { "name": "b", "upstream": "b", "uri": "/b" },
        { "name": "c", "upstream": "c", "uri": "/c" },
    ] }));
    let (_, _, body) = merge(
        &config,
        vec![
            ok(
                "a",
                json!({ "user": { "id": 1, "name": "Al" }, "tags": ["x"] }),
            ),
            ok(
                "b",
                json!({ "user": { "name": "Alice", "email": "a@x" }, "tags": ["y"] }),
            ),
            ok("c", json!([1, 2])),
        ],
    );
    assert_eq!(
        body,
        json!({ "user": { "id": 1, "name": "Alice", "email": "a@x" }, "tags": ["y"], "c": [1, 2] })
    );
}

#[test]
fn failure_policies() {
    let results = || {
        vec![
            ok("user", json!({ "name": "Al" })),
            failed("orders", CallError::Timeout),
        ]
    };
    let (status, partial, body) = merge(&dashboard(json!({})), results());
    assert_eq!((status, partial.as_deref()), (200, Some("true")));
    assert_eq!(body, json!({ "user": { "name": "Al" } }));

    let (_, partial, body) = merge(
        &dashboard(json!({ "on-error": "null", "errors-key": "_errors" })),
        results(),
    );
    assert_eq!(partial.as_deref(), Some("true"));
    assert_eq!(
        body,
        json!({ "user": { "name": "Al" }, "recent_orders": null, "_errors": { "orders": "timed out" } })
    );

    let (status, _, body) = merge(&dashboard(json!({ "on-error": "fail" })), results());
    assert_eq!(status, 502);
    assert_eq!(
        body,
        json!({ "error": "upstream_failed", "message": "call `orders` failed: timed out" })
    );
}

#[test]
fn bad_statuses_bad_json_and_missing_results_are_failures() {
    let config = config(
        json!({ "on-error": "null", "errors-key": "errors", "calls": [
        { "name": "a", "upstream": "a", "uri": "/a" },
        { "name": "b", "upstream": "b", "uri": "/b" },
        { "name": "c", "upstream": "c", "uri": "/c" },
        { "name": "d", "upstream": "d", "uri": "/d", "on-error": "omit" },
    ] }),
    );
    let (_, partial, body) = merge(
        &config,
        vec![
            BackendResult {
                name: "a".into(),
                outcome: Ok(Response::json(503, &json!({ "e": 1 }))),
            },
            BackendResult {
                name: "b".into(),
                outcome: Ok(Response::text(200, "<html>")),
            },
            failed("d", CallError::Unreachable("connection refused".into())),
        ],
    );
    assert_eq!(partial.as_deref(), Some("true"));
    assert_eq!(body["a"], Value::Null);
    assert_eq!(body["b"], Value::Null);
    assert_eq!(body["c"], Value::Null);
    assert!(body.get("d").is_none());
    assert_eq!(body["errors"]["a"], "answered 503");
    assert!(
        body["errors"]["b"]
            .as_str()
            .unwrap()
            .starts_with("answered invalid JSON")
    );
    assert_eq!(body["errors"]["c"], "no result came back");
    assert_eq!(body["errors"]["d"], "unreachable: connection refused");
}

#[test]
fn config_errors_name_the_field() {
    let error = |config: Value| match parse_config::<Config>(&config.to_string()) {
        Err(error) => error,
        Ok(config) => JsonAggregator::validate(&config).unwrap_err(),
    };
    assert_eq!(
        error(json!({ "calls": [] })),
        "calls: give at least one call"
    );
    assert!(
        error(json!({ "calls": [{ "name": "a", "upstream": "u", "uri": "a/{id}" }] }))
            .starts_with("calls[0].uri: `a/{id}` must start with `/`")
    );
    assert_eq!(
        error(json!({ "calls": [
            { "name": "a", "upstream": "u", "uri": "/a" },
            { "name": "a", "upstream": "u", "uri": "/b" },
        ] })),
        "calls[1].name: `a` is used twice"
    );
    assert_eq!(
        error(json!({ "calls": [
            { "name": "a", "upstream": "u", "uri": "/a", "key": "x" },
            { "name": "b", "upstream": "u", "uri": "/b", "key": "x" },
        ] })),
        "calls[1].key: `x` is already another call's key"
    );
    assert!(
        error(
            json!({ "on-error": "retry", "calls": [{ "name": "a", "upstream": "u", "uri": "/a" }] })
        )
        .starts_with("on-error: unknown variant `retry`")
    );
    assert!(
        error(json!({ "calls": [{ "name": "a", "upstream": "u", "uri": "/a", "method": "get" }] }))
            .starts_with("calls[0].method")
    );
}

// === the README's examples ===

#[path = "../../readme_examples.rs"]
mod readme_examples;

/// The `config` of every stage of `plugin` in this plugin's README examples.
fn readme_configs(plugin: &str) -> Vec<String> {
    readme_examples::stage_configs(include_str!("../README.md"), plugin)
}

#[test]
fn readme_examples_are_valid() {
    let configs = readme_configs("aggregate-json");
    assert!(
        !configs.is_empty(),
        "the README has no example of this plugin"
    );
    for config in configs {
        let parsed: Config = parse_config(&config).unwrap_or_else(|err| panic!("{err}\n{config}"));
        JsonAggregator::validate(&parsed).unwrap_or_else(|err| panic!("{err}\n{config}"));
    }
}
