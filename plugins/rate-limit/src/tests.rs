//! The stage end to end, with the SDK's native stand-in for the host's
//! counters and clock.

use serde_json::{Value, json};
use wasmgate_plugin_sdk::{Context, Identity, RateLimit, Request, parse_config, testing};

use super::*;

/// 12:00:00.000 on some day; window boundaries fall on whole seconds.
const T0: u64 = 1_700_000_000_000;

fn config(config: Value) -> Config {
    let config: Config = parse_config(&config.to_string()).unwrap();
    RateLimiter::validate(&config).unwrap();
    config
}

fn ctx(route: &str, ip: &str) -> Context {
    Context {
        route: route.to_string(),
        client_ip: ip.to_string(),
        ..Context::default()
    }
}

fn check(config: &Config, ctx: &Context) -> Result<Headers, Response> {
    RateLimiter::check(config, &Request::new("GET", "/"), ctx)
}

fn header(headers: &Headers, name: &str) -> String {
    headers.get_str(name).unwrap_or_default().to_string()
}

fn start() {
    testing::reset();
    testing::set_now_millis(T0);
}

#[test]
fn fixed_window_allows_the_limit_then_refuses_until_the_next_window() {
    start();
    let config = config(json!({ "limits": [{ "requests": 3, "window": "1s" }] }));
    let client = ctx("orders", "203.0.113.7");
    for remaining in ["2", "1", "0"] {
        let headers = check(&config, &client).unwrap();
        assert_eq!(header(&headers, "ratelimit-limit"), "3");
        assert_eq!(header(&headers, "ratelimit-remaining"), remaining);
        assert_eq!(header(&headers, "ratelimit-reset"), "1");
        assert_eq!(header(&headers, "ratelimit-policy"), "3;w=1");
    }
    testing::advance_millis(400);
    let refusal = check(&config, &client).unwrap_err();
    assert_eq!(refusal.status, 429);
    assert_eq!(refusal.header_str("retry-after"), Some("1"));
    assert_eq!(refusal.header_str("ratelimit-remaining"), Some("0"));
    assert_eq!(refusal.header_str("ratelimit-limit"), Some("3"));
    let body: Value = refusal.body_json().unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(
        body["message"],
        "too many requests: the limit is 3 requests per 1s"
    );

    testing::advance_millis(600);
    assert_eq!(
        header(&check(&config, &client).unwrap(), "ratelimit-remaining"),
        "2"
    );
}

#[test]
fn clients_and_routes_have_their_own_counters_unless_scoped() {
    start();
    let config = config(json!({ "limits": [{ "requests": 1, "window": "1m" }] }));
    assert!(check(&config, &ctx("a", "10.0.0.1")).is_ok());
    assert!(check(&config, &ctx("a", "10.0.0.1")).is_err());
    assert!(check(&config, &ctx("a", "10.0.0.2")).is_ok());
    assert!(check(&config, &ctx("b", "10.0.0.1")).is_ok());

    let shared = config_with_scope();
    assert!(check(&shared, &ctx("c", "10.0.0.9")).is_ok());
    assert!(check(&shared, &ctx("d", "10.0.0.9")).is_err());
}

fn config_with_scope() -> Config {
    config(json!({ "limits": [{ "requests": 1, "window": "1m" }], "scope": "partner-api" }))
}

#[test]
fn several_limits_at_once() {
    start();
    let config = config(json!({
        "limits": [
            { "requests": 2, "window": "1s" },
            { "requests": 3, "window": "1m" },
        ],
    }));
    let client = ctx("r", "10.0.0.1");
    let first = check(&config, &client).unwrap();
    // The per-second limit is closest to exhaustion.
    assert_eq!(header(&first, "ratelimit-limit"), "2");
    assert_eq!(header(&first, "ratelimit-policy"), "2;w=1, 3;w=60");
    check(&config, &client).unwrap();
    let refusal = check(&config, &client).unwrap_err();
    assert_eq!(refusal.header_str("retry-after"), Some("1"));

    testing::advance_millis(1_000);
    // The fourth request, 21 s into the minute: the second is free again, but
    // the minute is used up for another 39 s.
    let refusal = check(&config, &client).unwrap_err();
    assert_eq!(refusal.header_str("ratelimit-limit"), Some("3"));
    assert_eq!(refusal.header_str("retry-after"), Some("39"));
}

#[test]
fn sliding_window_carries_part_of_the_previous_window() {
    start();
    let config =
        config(json!({ "limits": [{ "requests": 10, "window": "10s", "algorithm": "sliding" }] }));
    let client = ctx("r", "10.0.0.1");
    for _ in 0..10 {
        check(&config, &client).unwrap();
    }
    assert!(check(&config, &client).is_err());
    // Halfway into the next window the previous 11 weigh 5.5: four more fit.
    testing::advance_millis(15_000);
    for _ in 0..4 {
        check(&config, &client).unwrap();
    }
    let refusal = check(&config, &client).unwrap_err();
    assert_eq!(refusal.status, 429);
    // A fixed window would have let ten through.
}

#[test]
fn keys_from_headers_subjects_and_claims_fall_back_to_the_ip() {
    start();
    let by_header = config(
        json!({ "key": { "header": "X-Tenant" }, "limits": [{ "requests": 1, "window": "1h" }] }),
    );
    let tenant = |name: &str| Request::new("GET", "/").with_header("x-tenant", name);
    let client = ctx("r", "10.0.0.1");
    assert!(RateLimiter::check(&by_header, &tenant("acme"), &client).is_ok());
    assert!(RateLimiter::check(&by_header, &tenant("acme"), &ctx("r", "10.0.0.2")).is_err());
    assert!(RateLimiter::check(&by_header, &tenant("globex"), &client).is_ok());
    assert!(
        check(&by_header, &client).is_ok(),
        "no header: counted by IP"
    );

    let by_subject =
        config(json!({ "key": "subject", "limits": [{ "requests": 1, "window": "1h" }] }));
    let mut alice = ctx("r", "10.0.0.3");
    alice.identity = Some(Identity::new("alice").with_claim("tenant", "acme"));
    assert!(check(&by_subject, &alice).is_ok());
    alice.client_ip = "10.0.0.4".to_string();
    assert!(check(&by_subject, &alice).is_err());

    let by_claim = config(
        json!({ "key": { "claim": "tenant" }, "limits": [{ "requests": 1, "window": "1h" }] }),
    );
    assert!(check(&by_claim, &alice).is_ok());
    assert!(check(&by_claim, &alice).is_err());

    let by_route = config(json!({ "key": "route", "limits": [{ "requests": 1, "window": "1h" }] }));
    assert!(check(&by_route, &ctx("r", "10.0.0.5")).is_ok());
    assert!(check(&by_route, &ctx("r", "10.0.0.6")).is_err());
}

#[test]
fn counter_failures_fail_closed_by_default() {
    start();
    testing::set_counters_error(Some("redis: connection refused"));
    let closed = config(json!({ "limits": [{ "requests": 1, "window": "1s" }] }));
    let refusal = check(&closed, &ctx("r", "10.0.0.1")).unwrap_err();
    assert_eq!(refusal.status, 503);
    let open =
        config(json!({ "limits": [{ "requests": 1, "window": "1s" }], "on-error": "allow" }));
    assert!(check(&open, &ctx("r", "10.0.0.1")).unwrap().is_empty());
    assert!(
        testing::logs()
            .iter()
            .any(|(_, line)| line.contains("redis: connection refused"))
    );
}

#[test]
fn config_errors_name_the_field() {
    let error = |config: Value| match parse_config::<Config>(&config.to_string()) {
        Err(error) => error,
        Ok(config) => RateLimiter::validate(&config).unwrap_err(),
    };
    assert_eq!(error(json!({})), "missing field `limits`");
    assert_eq!(
        error(json!({ "limits": [] })),
        "limits: give at least one limit"
    );
    assert_eq!(
        error(json!({ "limits": [{ "requests": 5, "window": "5 parsecs" }] })),
        "limits[0].window: unknown unit `parsecs` in `5 parsecs`: use ms, s, m, h or d"
    );
    assert!(
        error(json!({ "limits": [{ "requests": 0, "window": "1s" }] }))
            .starts_with("limits[0].requests: must be at least 1")
    );
    assert!(
        error(json!({ "limits": [{ "requests": 1, "window": "1s" }, { "requests": 1, "window": "1000ms" }] }))
            .contains("two limits are both `1/1000`")
    );
    assert!(
        error(json!({ "key": "cookie", "limits": [{ "requests": 1, "window": "1s" }] }))
            .starts_with("key: unknown key `cookie`")
    );
    assert!(
        error(json!({ "limits": [{ "requests": 1, "window": "1s", "algorithm": "leaky" }] }))
            .starts_with("limits[0].algorithm: unknown variant `leaky`")
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
    let configs = readme_configs("rate-limit");
    assert!(
        !configs.is_empty(),
        "the README has no example of this plugin"
    );
    for config in configs {
        let parsed: Config = parse_config(&config).unwrap_or_else(|err| panic!("{err}\n{config}"));
        RateLimiter::validate(&parsed).unwrap_or_else(|err| panic!("{err}\n{config}"));
    }
}

#[test]
fn gcra_allows_a_burst_then_spreads_requests_evenly() {
    start();
    // 10 per second, bursts of 3: after the burst, one every 100 ms.
    let config = config(
        json!({ "algorithm": "gcra", "limits": [{ "requests": 10, "window": "1s", "burst": 3 }] }),
    );
    let client = ctx("orders", "203.0.113.7");
    for remaining in ["2", "1", "0"] {
        let headers = check(&config, &client).unwrap();
        assert_eq!(header(&headers, "ratelimit-remaining"), remaining);
    }
    let refusal = check(&config, &client).unwrap_err();
    assert_eq!(refusal.status, 429);
    assert_eq!(
        refusal.header_str("retry-after"),
        Some("1"),
        "100 ms, in whole seconds"
    );
    testing::advance_millis(100);
    assert!(
        check(&config, &client).is_ok(),
        "one interval later, one more"
    );
    assert!(check(&config, &client).is_err(), "and only one");
    testing::advance_millis(300);
    let headers = check(&config, &client).unwrap();
    assert_eq!(header(&headers, "ratelimit-remaining"), "2");
}

#[test]
fn gcra_refusals_do_not_count_and_the_burst_defaults_to_the_limit() {
    start();
    let config =
        config(json!({ "limits": [{ "requests": 2, "window": "1s", "algorithm": "gcra" }] }));
    let client = ctx("orders", "203.0.113.7");
    assert!(check(&config, &client).is_ok());
    assert!(check(&config, &client).is_ok());
    for _ in 0..5 {
        assert!(check(&config, &client).is_err());
    }
    testing::advance_millis(500);
    assert!(
        check(&config, &client).is_ok(),
        "hammering did not push the client back"
    );
}

#[test]
fn only_gcra_takes_a_burst() {
    let error = |config: Value| {
        let config: Config = parse_config(&config.to_string()).unwrap();
        RateLimiter::validate(&config).unwrap_err()
    };
    assert!(
        error(json!({ "limits": [{ "requests": 2, "window": "1s", "burst": 5 }] }))
            .contains("only the `gcra` algorithm takes a burst")
    );
    assert!(
        error(json!({ "algorithm": "gcra", "limits": [{ "requests": 2, "window": "1s", "burst": 0 }] }))
            .contains("must be at least 1")
    );
}
