use serde_json::{Value, json};
use wasmgate_plugin_sdk::{Context, Identity, Request, Response, Transform, parse_config};

use super::*;

fn config(config: Value) -> Config {
    let config: Config = parse_config(&config.to_string()).unwrap();
    Transformer::validate(&config).unwrap();
    config
}

fn ctx() -> Context {
    Context {
        route: "users".into(),
        request_id: "req-1".into(),
        identity: Some(Identity::new("alice").with_claim("tenant", "acme")),
        params: vec![("id".into(), "42".into())],
        ..Context::default()
    }
}

#[test]
fn request_headers_in_order_remove_rename_set_add() {
    let config = config(json!({ "request": { "headers": {
        "remove": ["X-Internal", "x-user"],
        "rename": { "x-old": "X-New" },
        "set": { "x-user": "{identity.subject}", "x-tenant": "{identity.claims.tenant}", "x-new": "{header.x-new}!" },
        "add": { "via": "wasmgate", "x-id": "{params.id}" },
    } } }));
    let req = Request::new("GET", "/")
        .with_header("x-internal", "secret")
        .with_header("x-user", "mallory")
        .with_header("x-old", "v")
        .with_header("via", "1.1 proxy");
    let req = Transformer::on_request(&config, req, &ctx()).unwrap();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect();
    let expected = [
        ("x-new", "v!"),
        ("via", "1.1 proxy"),
        ("x-tenant", "acme"),
        ("x-user", "alice"),
        ("via", "wasmgate"),
        ("x-id", "42"),
    ];
    assert_eq!(
        headers,
        expected
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn identity_headers_cannot_be_spoofed_without_an_identity() {
    let config =
        config(json!({ "request": { "headers": { "set": { "x-user": "{identity.subject}" } } } }));
    let req = Request::new("GET", "/").with_header("x-user", "mallory");
    let anonymous = Context::default();
    let req = Transformer::on_request(&config, req, &anonymous).unwrap();
    assert_eq!(req.header("x-user"), None);
}

#[test]
fn header_values_with_control_characters_are_dropped() {
    let config = config(json!({ "request": { "headers": { "add": { "x-q": "{query.q}" } } } }));
    let req = Request::new("GET", "/?q=a%0D%0Aevil:%201");
    let req = Transformer::on_request(&config, req, &ctx()).unwrap();
    assert_eq!(req.header("x-q"), None);
}

#[test]
fn path_rewrite_with_captures() {
    let config = config(json!({ "request": { "path": {
        "pattern": "^/api/v1/users/(?P<id>[0-9]+)(/.*)?$",
        "replacement": "/internal/users/${id}$2",
    } } }));
    let rewrite = |uri: &str| {
        Transformer::on_request(&config, Request::new("GET", uri), &ctx())
            .unwrap()
            .uri
    };
    assert_eq!(
        rewrite("/api/v1/users/42/orders?x=1"),
        "/internal/users/42/orders?x=1"
    );
    assert_eq!(rewrite("/api/v1/users/42"), "/internal/users/42");
    assert_eq!(rewrite("/api/v1/teams/7"), "/api/v1/teams/7");
}

#[test]
fn query_parameters() {
    let config = config(json!({ "request": { "query": {
        "remove": ["debug"],
        "rename": { "q": "search" },
        "set": { "version": "2", "user": "{identity.subject}" },
        "add": { "tag": "gw" },
    } } }));
    let req = Request::new("GET", "/s?q=rust+wasm&debug=1&version=1&tag=a");
    let req = Transformer::on_request(&config, req, &ctx()).unwrap();
    assert_eq!(
        req.uri,
        "/s?search=rust%20wasm&tag=a&user=alice&version=2&tag=gw"
    );
}

#[test]
fn json_body_fields() {
    let config = config(json!({ "request": { "body": {
        "remove": ["password", "items.0.internal"],
        "rename": { "user.userName": "user_name" },
        "move": { "user.email": "contact.email" },
        "set": { "meta.via": "gateway", "meta.by": "{identity.subject}", "meta.version": 2, "meta.who": "{vars.none}" },
    } } }));
    let body = json!({
        "password": "hunter2",
        "user": { "userName": "al", "email": "al@example.com" },
        "items": [{ "id": 1, "internal": true }],
    });
    let req = Request::new("POST", "/")
        .with_header("content-length", "999")
        .with_body(body.to_string());
    let req = Transformer::on_request(&config, req, &ctx()).unwrap();
    let edited: Value = req.body_json().unwrap();
    assert_eq!(
        edited,
        json!({
            "user": { "user_name": "al" },
            "contact": { "email": "al@example.com" },
            "items": [{ "id": 1 }],
            "meta": { "via": "gateway", "by": "alice", "version": 2 },
        })
    );
    assert_eq!(
        req.header_str("content-length"),
        Some(req.body.as_ref().unwrap().len().to_string().as_str())
    );
}

#[test]
fn bodies_that_are_not_json_or_not_buffered_are_left_alone() {
    let config = config(json!({ "request": { "body": { "remove": ["a"] } } }));
    let text = Request::new("POST", "/").with_body("not json");
    let out = Transformer::on_request(&config, text.clone(), &ctx()).unwrap();
    assert_eq!(out.body, text.body);
    let streamed = Request::new("POST", "/");
    assert_eq!(
        Transformer::on_request(&config, streamed, &ctx())
            .unwrap()
            .body,
        None
    );
}

#[test]
fn responses_headers_body_and_status() {
    let config = config(json!({ "response": {
        "headers": { "remove": ["server"], "set": { "x-request-id": "{request-id}" } },
        "body": { "remove": ["debug"], "set": { "route": "{route}" } },
        "status": 200,
    } }));
    let upstream = Response::json(404, &json!({ "debug": "trace", "error": "nope" }))
        .with_header("server", "upstream/1.0");
    let resp = Transformer::on_response(&config, upstream, &ctx());
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("server"), None);
    assert_eq!(resp.header_str("x-request-id"), Some("req-1"));
    let body: Value = resp.body_json().unwrap();
    assert_eq!(body, json!({ "error": "nope", "route": "users" }));
}

#[test]
fn an_empty_config_passes_everything_through() {
    let config = config(json!({}));
    let req = Request::new("GET", "/a?b=c")
        .with_header("x", "y")
        .with_body("{}");
    assert_eq!(
        Transformer::on_request(&config, req.clone(), &ctx()).unwrap(),
        req
    );
    let resp = Response::text(201, "hi");
    assert_eq!(
        Transformer::on_response(&config, resp.clone(), &ctx()),
        resp
    );
}

#[test]
fn config_errors_name_the_field() {
    let error = |config: Value| match parse_config::<Config>(&config.to_string()) {
        Err(error) => error,
        Ok(config) => Transformer::validate(&config).unwrap_err(),
    };
    assert!(
        error(json!({ "request": { "path": { "pattern": "(", "replacement": "/" } } }))
            .starts_with("request.path.pattern: not a valid regex")
    );
    assert!(
        error(json!({ "request": { "headers": { "set": { "bad header": "x" } } } }))
            .starts_with("request.headers.set")
    );
    assert!(
        error(json!({ "request": { "headers": { "set": { "x-user": "{identity.sub}" } } } }))
            .starts_with("request.headers.set.x-user: in `{identity.sub}`: unknown placeholder")
    );
    assert!(
        error(json!({ "request": { "body": { "remove": ["a..b"] } } }))
            .starts_with("request.body.remove[0]: `a..b` is not a dot path")
    );
    assert!(
        error(json!({ "request": { "body": { "rename": { "a.b": "c.d" } } } }))
            .starts_with("request.body.rename.a.b: `c.d` is not a field name")
    );
    assert_eq!(
        error(json!({ "response": { "status": 700 } })),
        "response.status: 700 is not an HTTP status (100-599)"
    );
    assert!(
        error(json!({ "request": { "status": 200 } }))
            .starts_with("request.status: unknown field `status`")
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
    let configs = readme_configs("transform");
    assert!(
        !configs.is_empty(),
        "the README has no example of this plugin"
    );
    for config in configs {
        let parsed: Config = parse_config(&config).unwrap_or_else(|err| panic!("{err}\n{config}"));
        Transformer::validate(&parsed).unwrap_or_else(|err| panic!("{err}\n{config}"));
    }
}
