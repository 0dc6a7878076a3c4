//! The four stage kinds a plugin can implement, one trait per WIT world.
//!
//! Every trait has the same shape: an associated `Config` type that the
//! stage's `config` table is deserialized into, an optional `validate` hook
//! for checks serde cannot express, and the world's functions, which receive
//! the parsed config by reference. All functions are associated functions (no
//! `self`): each call runs on a fresh instance, so there is nothing to keep.

use serde::de::DeserializeOwned;

use crate::{BackendCall, BackendResult, Context, Headers, Identity, Request, Response};

/// An auth stage: decides who the caller is, or refuses the request.
///
/// Export an implementation with [`export_auth!`](crate::export_auth).
///
/// The identity returned goes to later stages in [`Context::identity`]. An
/// auth stage cannot change the request; the gateway sends the identity
/// upstream (`x-auth-subject`, `x-auth-claim-NAME`), and a later transform
/// stage can put it in headers of its own.
pub trait Auth {
    /// The stage's config, deserialized from the route's `config` table.
    /// Use [`NoConfig`](crate::NoConfig) when the plugin takes none.
    type Config: DeserializeOwned + 'static;

    /// Checks serde cannot express, run after deserializing at load time
    /// (`validate-config`). The message is shown with the route and stage.
    fn validate(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// `Ok(identity)` lets the request on; `Err(response)` answers the client
    /// with it, typically a 401.
    fn authenticate(
        config: &Self::Config,
        req: &Request,
        ctx: &Context,
    ) -> Result<Identity, Response>;
}

/// A rate-limit stage: lets a request through or refuses it (typically 429).
///
/// Export an implementation with [`export_rate_limit!`](crate::export_rate_limit).
/// Only this kind of plugin may use [`counters`](crate::counters).
pub trait RateLimit {
    /// The stage's config, deserialized from the route's `config` table.
    type Config: DeserializeOwned + 'static;

    /// Checks serde cannot express, run after deserializing at load time.
    fn validate(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// `Ok(headers)` lets the request on and adds `headers` to the eventual
    /// response (for example `ratelimit-remaining`); `Err(response)` answers
    /// the client with it.
    fn check(config: &Self::Config, req: &Request, ctx: &Context) -> Result<Headers, Response>;
}

/// A transform stage: rewrites the request on its way in and the response on
/// its way out. Both phases default to passing things through unchanged.
///
/// Export an implementation with [`export_transform!`](crate::export_transform).
/// The two phases run on separate instances; to carry state from one to the
/// other, use [`set_var`](crate::set_var) and read [`Context::vars`].
pub trait Transform {
    /// The stage's config, deserialized from the route's `config` table.
    type Config: DeserializeOwned + 'static;

    /// Checks serde cannot express, run after deserializing at load time.
    fn validate(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// `Ok(request)` continues with the rewritten request; `Err(response)`
    /// answers the client instead of calling the upstream.
    fn on_request(config: &Self::Config, req: Request, ctx: &Context) -> Result<Request, Response> {
        let _ = (config, ctx);
        Ok(req)
    }

    /// Rewrites the response before it goes to the client.
    fn on_response(config: &Self::Config, resp: Response, ctx: &Context) -> Response {
        let _ = (config, ctx);
        resp
    }
}

/// An aggregate stage: answers a request by calling several upstreams and
/// merging their answers.
///
/// Export an implementation with [`export_aggregate!`](crate::export_aggregate).
/// `plan` and `merge` run on separate instances, with the host's concurrent
/// calls in between.
pub trait Aggregate {
    /// The stage's config, deserialized from the route's `config` table.
    type Config: DeserializeOwned + 'static;

    /// Checks serde cannot express, run after deserializing at load time.
    fn validate(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// The calls to make; the host makes them concurrently.
    fn plan(config: &Self::Config, req: &Request, ctx: &Context) -> Vec<BackendCall>;

    /// Builds the client's response from every call's outcome, in plan order.
    fn merge(
        config: &Self::Config,
        req: &Request,
        ctx: &Context,
        results: Vec<BackendResult>,
    ) -> Response;
}
