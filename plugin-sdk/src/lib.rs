//! Write wasmgate gateway plugins in Rust.
//!
//! A wasmgate plugin is a WebAssembly component that runs as one stage of a
//! route's request pipeline. There are four kinds, one per WIT world in the
//! gateway's `wit/plugin.wit`:
//!
//! | kind | trait | export macro | runs |
//! |---|---|---|---|
//! | auth | [`Auth`] | [`export_auth!`] | before everything else; returns an [`Identity`] or refuses |
//! | rate limit | [`RateLimit`] | [`export_rate_limit!`] | after auth; lets through (adding headers) or refuses |
//! | transform | [`Transform`] | [`export_transform!`] | rewrites the request on the way in, the response on the way out |
//! | aggregate | [`Aggregate`] | [`export_aggregate!`] | plans calls to several upstreams, then merges their answers |
//!
//! You implement the trait on a type of your own and name that type in the
//! export macro. The SDK does the rest: it generates the world's bindings,
//! converts to and from the types here ([`Request`], [`Response`],
//! [`Context`], ...), parses the stage's config into your `Config` type for
//! every call, and implements `validate-config` — which the gateway runs when
//! it loads the plugin or the config — from that same deserialization plus
//! your optional `validate` hook. Config errors name the offending field
//! (`limits[1].window: ...`); the gateway adds the route and stage.
//!
//! Every call runs on a fresh instance, so nothing survives in memory from
//! one call to the next. To share state across requests (and, with the
//! gateway's `[state]` in Redis, across gateways) use [`counters::increment`],
//! the rate-limit primitives in [`limiter`] (fixed windows and GCRA on the
//! backend's clock) or the key-value store in [`kv`] (any kind of plugin), and
//! to pass values to later
//! stages or phases of the same request use [`set_var`] and [`Context::vars`].
//!
//! # Five-minute quick start
//!
//! A transform plugin that adds a greeting header to every request.
//!
//! **1. Make a crate.** Next to the gateway's `plugins/` directory (any place
//! works; adjust the path to the SDK):
//!
//! ```text
//! cargo new --lib hello-header && cd hello-header
//! ```
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! # Its own workspace, even inside a checkout of the gateway.
//! [workspace]
//!
//! [dependencies]
//! wasmgate-plugin-sdk = { path = "../plugin-sdk" }
//! serde = { version = "1", features = ["derive"] }
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! strip = true
//! panic = "abort"
//! ```
//!
//! **2. Write the plugin** in `src/lib.rs`:
//!
//! ```
//! use serde::Deserialize;
//! use wasmgate_plugin_sdk::prelude::*;
//!
//! /// The stage's `config` table.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// Who to greet; `{subject}` is replaced with the caller's identity.
//!     greeting: String,
//! }
//!
//! struct HelloHeader;
//!
//! impl Transform for HelloHeader {
//!     type Config = Config;
//!
//!     fn validate(config: &Config) -> Result<(), String> {
//!         if config.greeting.is_empty() {
//!             return Err("greeting: must not be empty".to_string());
//!         }
//!         Ok(())
//!     }
//!
//!     fn on_request(config: &Config, mut req: Request, ctx: &Context) -> Result<Request, Response> {
//!         let who = ctx.subject().unwrap_or("stranger");
//!         req.headers.set("x-greeting", config.greeting.replace("{subject}", who));
//!         Ok(req)
//!     }
//! }
//!
//! wasmgate_plugin_sdk::export_transform!(HelloHeader);
//! # fn main() {}
//! ```
//!
//! **3. Build it** into a component:
//!
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! **4. Drop it into the plugins directory** — `plugins/` of the wasmgate
//! checkout, or whatever `[plugins] dir` says (relative to the config file).
//! The file name without `.wasm` is the plugin's name. A running gateway
//! picks it up within a moment, without a restart:
//!
//! ```text
//! cp target/wasm32-wasip2/release/hello_header.wasm ../plugins/hello-header.wasm
//! ```
//!
//! (Copying straight into a watched directory is safe — the gateway never
//! loads a half-written file — but `cp` to a temporary name and `mv` is
//! cheaper.)
//!
//! **5. Use it on a route** in the gateway config:
//!
//! ```toml
//! [plugins]
//! dir = "../plugins"
//!
//! [upstreams.backend]
//! targets = ["127.0.0.1:9000"]
//!
//! [[routes]]
//! name = "hello"
//! path = "/hello"
//! upstream = "backend"
//! stages = [{ plugin = "hello-header", config = { greeting = "hello, {subject}" } }]
//! ```
//!
//! `wasmgate check --config config/gateway.toml` runs every stage's
//! `validate-config`; a running gateway does the same when the file changes,
//! and keeps the previous config if the new one is refused. The problem is
//! reported with the file, route and stage, followed by your plugin's message:
//! `invalid config: greeting: must not be empty`.
//!
//! **6. Try it:**
//!
//! ```text
//! wasmgate run --config config/gateway.toml &
//! curl -i http://127.0.0.1:8080/hello
//! ```
//!
//! The upstream sees `x-greeting: hello, stranger`.
//!
//! # Testing plugin logic
//!
//! The SDK also compiles for the build machine, where the host functions
//! ([`now_millis`], [`counters::increment`], [`limiter`], [`kv`], [`set_var`], [`log`]) are served
//! by the in-process stand-in in [`testing`]. Call your trait functions
//! directly with a config from [`parse_config`]:
//!
//! ```text
//! cargo test --target x86_64-unknown-linux-gnu
//! ```
//!
//! # What a plugin can and cannot do
//!
//! A plugin gets no ambient authority: no files, sockets, environment or
//! clock beyond what the host offers here. An aggregate plugin does not call
//! upstreams itself: it returns [`BackendCall`]s naming upstreams from the
//! gateway config, and the host makes them concurrently, with timeouts.

#![deny(missing_docs)]

mod backend;
#[doc(hidden)]
#[allow(missing_docs, reason = "generated code")]
mod bindings;
mod config;
mod context;
mod export;
mod headers;
mod host;
mod http;
mod plugin;
pub mod query;
#[cfg(any(not(target_arch = "wasm32"), doc))]
pub mod testing;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

include!(concat!(env!("OUT_DIR"), "/generate_world.rs"));

pub use backend::{BackendCall, BackendResult, CallError};
pub use config::{NoConfig, parse_config};
pub use context::{Context, Identity};
pub use headers::Headers;
pub use host::{Level, config_json, connection, counters, kv, limiter, log, now_millis, set_var};
pub use http::{BodyError, Request, Response};
pub use plugin::{Aggregate, Auth, RateLimit, Transform};

/// The `serde` the SDK is built with.
pub use serde;
/// The `serde_json` the SDK is built with, for working with JSON bodies.
pub use serde_json;

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        Aggregate, Auth, BackendCall, BackendResult, CallError, Context, Headers, Identity, Level,
        NoConfig, RateLimit, Request, Response, Transform, connection, counters, debug, error,
        info, kv, limiter, log, now_millis, set_var, trace, warn,
    };
}
