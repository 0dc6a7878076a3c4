//! Glue between the raw WIT bindings and the SDK's types, used by the export
//! macros. Not part of the public API: it changes without notice.

pub use wit_bindgen;

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use serde::de::DeserializeOwned;

use crate::{
    Aggregate, Auth, BackendCall, BackendResult, CallError, Context, Headers, Identity, Level,
    RateLimit, Request, Response, Transform, parse_config,
};

/// The raw bindings of the shared interfaces. The export macros point each
/// plugin's own world bindings here (`with:`), so every world uses these types.
pub mod raw {
    pub use crate::bindings::wasmgate::plugin::{counters, host, kv, limiter, types};
}

use raw::types as wit;

type Fields = Vec<(String, Vec<u8>)>;

// === conversions ===

fn request_from_wit(req: wit::Request) -> Request {
    Request {
        method: req.method,
        uri: req.uri,
        headers: Headers::from(req.headers),
        body: req.body,
    }
}

fn request_to_wit(req: Request) -> wit::Request {
    wit::Request {
        method: req.method,
        uri: req.uri,
        headers: req.headers.into_vec(),
        body: req.body,
    }
}

fn response_from_wit(resp: wit::Response) -> Response {
    Response {
        status: resp.status,
        headers: Headers::from(resp.headers),
        body: resp.body,
    }
}

fn response_to_wit(resp: Response) -> wit::Response {
    wit::Response {
        status: resp.status,
        headers: resp.headers.into_vec(),
        body: resp.body,
    }
}

fn identity_from_wit(identity: wit::Identity) -> Identity {
    Identity {
        subject: identity.subject,
        claims: identity.claims,
    }
}

fn identity_to_wit(identity: Identity) -> wit::Identity {
    wit::Identity {
        subject: identity.subject,
        claims: identity.claims,
    }
}

fn context_from_wit(ctx: wit::Context) -> Context {
    Context {
        route: ctx.route,
        client_ip: ctx.client_ip,
        request_id: ctx.request_id,
        identity: ctx.identity.map(identity_from_wit),
        params: ctx.params,
        vars: ctx.vars,
    }
}

fn call_to_wit(call: BackendCall) -> wit::BackendCall {
    wit::BackendCall {
        name: call.name,
        upstream: call.upstream,
        method: call.method,
        uri: call.uri,
        headers: call.headers.into_vec(),
        body: call.body,
        timeout_ms: call.timeout_ms,
    }
}

fn result_from_wit(result: wit::BackendResult) -> BackendResult {
    BackendResult {
        name: result.name,
        outcome: match result.outcome {
            Ok(resp) => Ok(response_from_wit(resp)),
            Err(wit::CallError::Timeout) => Err(CallError::Timeout),
            Err(wit::CallError::Unreachable(why)) => Err(CallError::Unreachable(why)),
            Err(wit::CallError::Refused(why)) => Err(CallError::Refused(why)),
        },
    }
}

// === config ===

fn validate<C: DeserializeOwned>(
    json: &str,
    hook: fn(&C) -> Result<(), String>,
) -> Result<(), String> {
    hook(&parse_config::<C>(json)?)
}

thread_local! {
    /// The last config parsed by this instance, with the JSON it came from. A fresh
    /// instance per call never hits it; an instance the host reuses (`limits.reuse`)
    /// parses its stage's config once instead of on every call.
    static PARSED: RefCell<Option<(String, Rc<dyn Any>)>> = const { RefCell::new(None) };
}

/// The stage's config for a call. It passed `validate-config` when it was
/// loaded, so an error here means the host skipped that step: refuse the
/// request (fail closed) and keep the details in the log, not the response.
fn load<C: DeserializeOwned + 'static>() -> Result<Rc<C>, Response> {
    let json = crate::config_json();
    let cached = PARSED.with_borrow(|parsed| match parsed {
        Some((seen, config)) if *seen == json => config.clone().downcast::<C>().ok(),
        _ => None,
    });
    if let Some(config) = cached {
        return Ok(config);
    }
    let config = Rc::new(parse_config::<C>(&json).map_err(|err| {
        crate::log(Level::Error, &format!("invalid stage config: {err}"));
        Response::deny(
            500,
            "stage_config_invalid",
            "the gateway's config for this stage is invalid",
        )
    })?);
    PARSED.set(Some((json, config.clone())));
    Ok(config)
}

// === one entry point per export ===

/// `validate-config` of an auth plugin.
pub fn validate_auth<P: Auth>(json: &str) -> Result<(), String> {
    validate::<P::Config>(json, P::validate)
}

/// `validate-config` of a rate-limit plugin.
pub fn validate_rate_limit<P: RateLimit>(json: &str) -> Result<(), String> {
    validate::<P::Config>(json, P::validate)
}

/// `validate-config` of a transform plugin.
pub fn validate_transform<P: Transform>(json: &str) -> Result<(), String> {
    validate::<P::Config>(json, P::validate)
}

/// `validate-config` of an aggregate plugin.
pub fn validate_aggregate<P: Aggregate>(json: &str) -> Result<(), String> {
    validate::<P::Config>(json, P::validate)
}

/// `authenticate`.
pub fn authenticate<P: Auth>(
    req: wit::Request,
    ctx: wit::Context,
) -> Result<wit::Identity, wit::Response> {
    let result = load::<P::Config>().and_then(|config| {
        P::authenticate(&config, &request_from_wit(req), &context_from_wit(ctx))
    });
    result.map(identity_to_wit).map_err(response_to_wit)
}

/// `check`.
pub fn check<P: RateLimit>(req: wit::Request, ctx: wit::Context) -> Result<Fields, wit::Response> {
    let result = load::<P::Config>()
        .and_then(|config| P::check(&config, &request_from_wit(req), &context_from_wit(ctx)));
    result.map(Headers::into_vec).map_err(response_to_wit)
}

/// `on-request`.
pub fn on_request<P: Transform>(
    req: wit::Request,
    ctx: wit::Context,
) -> Result<wit::Request, wit::Response> {
    let result = load::<P::Config>()
        .and_then(|config| P::on_request(&config, request_from_wit(req), &context_from_wit(ctx)));
    result.map(request_to_wit).map_err(response_to_wit)
}

/// `on-response`.
pub fn on_response<P: Transform>(resp: wit::Response, ctx: wit::Context) -> wit::Response {
    let resp = match load::<P::Config>() {
        Ok(config) => P::on_response(&config, response_from_wit(resp), &context_from_wit(ctx)),
        Err(refusal) => refusal,
    };
    response_to_wit(resp)
}

/// `plan`. With an invalid config it plans nothing, and `merge` refuses.
pub fn plan<P: Aggregate>(req: wit::Request, ctx: wit::Context) -> Vec<wit::BackendCall> {
    match load::<P::Config>() {
        Ok(config) => P::plan(&config, &request_from_wit(req), &context_from_wit(ctx))
            .into_iter()
            .map(call_to_wit)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `merge`.
pub fn merge<P: Aggregate>(
    req: wit::Request,
    ctx: wit::Context,
    results: Vec<wit::BackendResult>,
) -> wit::Response {
    let resp = match load::<P::Config>() {
        Ok(config) => P::merge(
            &config,
            &request_from_wit(req),
            &context_from_wit(ctx),
            results.into_iter().map(result_from_wit).collect(),
        ),
        Err(refusal) => refusal,
    };
    response_to_wit(resp)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::testing;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        subject: String,
    }

    struct Fixed;

    impl Auth for Fixed {
        type Config = Config;

        fn validate(config: &Config) -> Result<(), String> {
            if config.subject.is_empty() {
                return Err("subject: must not be empty".to_string());
            }
            Ok(())
        }

        fn authenticate(
            config: &Config,
            req: &Request,
            ctx: &Context,
        ) -> Result<Identity, Response> {
            match req.header_str("x-deny") {
                Some(why) => Err(Response::deny(403, "denied", why)),
                None => Ok(Identity::new(&config.subject).with_claim("route", &ctx.route)),
            }
        }
    }

    fn wit_request(headers: Vec<(&str, &str)>) -> wit::Request {
        wit::Request {
            method: "GET".into(),
            uri: "/".into(),
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
            body: None,
        }
    }

    fn wit_context() -> wit::Context {
        wit::Context {
            route: "orders".into(),
            client_ip: "10.0.0.1".into(),
            request_id: "r1".into(),
            identity: None,
            params: Vec::new(),
            vars: Vec::new(),
        }
    }

    #[test]
    fn validate_config_runs_serde_then_the_hook() {
        assert_eq!(validate_auth::<Fixed>(r#"{"subject": "svc"}"#), Ok(()));
        assert_eq!(
            validate_auth::<Fixed>(r#"{"subject": ""}"#),
            Err("subject: must not be empty".to_string())
        );
        assert_eq!(
            validate_auth::<Fixed>(r#"{"subject": 1}"#),
            Err("subject: invalid type: integer `1`, expected a string".to_string())
        );
    }

    #[test]
    fn calls_read_the_config_from_the_host() {
        testing::reset();
        testing::set_config(r#"{"subject": "svc"}"#);
        let identity = authenticate::<Fixed>(wit_request(vec![]), wit_context()).unwrap();
        assert_eq!(identity.subject, "svc");
        assert_eq!(
            identity.claims,
            vec![("route".to_string(), "orders".to_string())]
        );
        let refusal =
            authenticate::<Fixed>(wit_request(vec![("X-Deny", "no")]), wit_context()).unwrap_err();
        assert_eq!(refusal.status, 403);
    }

    #[test]
    fn an_invalid_config_at_call_time_fails_closed_without_leaking_details() {
        testing::reset();
        testing::set_config(r#"{"subjekt": "svc"}"#);
        let refusal = authenticate::<Fixed>(wit_request(vec![]), wit_context()).unwrap_err();
        assert_eq!(refusal.status, 500);
        let body = String::from_utf8(refusal.body.unwrap()).unwrap();
        assert!(
            body.contains("stage_config_invalid") && !body.contains("subjekt"),
            "{body}"
        );
        let logs = testing::logs();
        assert!(logs[0].1.contains("unknown field `subjekt`"), "{logs:?}");
        assert_eq!(logs[0].0, Level::Error);
    }

    thread_local! {
        static PARSES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// A config that counts how often it is deserialized (on this thread).
    struct Counted(String);

    impl<'de> Deserialize<'de> for Counted {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            PARSES.set(PARSES.get() + 1);
            String::deserialize(deserializer).map(Counted)
        }
    }

    #[derive(Deserialize)]
    struct CountedConfig {
        subject: Counted,
    }

    struct CountedAuth;

    impl Auth for CountedAuth {
        type Config = CountedConfig;

        fn authenticate(
            config: &CountedConfig,
            _: &Request,
            _: &Context,
        ) -> Result<Identity, Response> {
            Ok(Identity::new(&config.subject.0))
        }
    }

    #[test]
    fn a_reused_instance_parses_its_config_once_and_again_when_it_changes() {
        testing::reset();
        PARSES.set(0);
        testing::set_config(r#"{"subject": "a"}"#);
        for _ in 0..3 {
            let identity = authenticate::<CountedAuth>(wit_request(vec![]), wit_context()).unwrap();
            assert_eq!(identity.subject, "a");
        }
        assert_eq!(PARSES.get(), 1, "parsed once for three calls");
        testing::set_config(r#"{"subject": "b"}"#);
        let identity = authenticate::<CountedAuth>(wit_request(vec![]), wit_context()).unwrap();
        assert_eq!(identity.subject, "b", "a changed config is parsed again");
        assert_eq!(PARSES.get(), 2);
    }
}
