//! wasmgate: an API gateway whose request pipeline is made of sandboxed WebAssembly components.
//!
//! A request flows through the crate like this:
//!
//! 1. [`server`] accepts the connection (HTTP/1.1 or HTTP/2) and hands each request to
//!    [`gateway::Gateway::handle`], which takes the current [`gateway::LiveState`] once.
//! 2. The path is put in normal form ([`normalize`]) and [`router`] matches host, path and
//!    method to one of the [`config`] routes.
//! 3. The route's [`pipeline`] runs: request-phase hooks of its stages in order (auth, rate
//!    limit, transform, native stages), each WASM call on a fresh sandboxed instance; a
//!    stage may answer the request itself.
//! 4. The route's one terminal answers: [`proxy`] to the upstream (streaming both ways), an
//!    aggregate plugin's plan and merge, a static `respond`, or a gRPC call made from an
//!    HTTP/JSON request ([`transcode`]).
//! 5. Response-phase hooks run in reverse order (native ones such as compression last);
//!    [`framing`] frames the answer from its body;
//!    [`access_log`] writes one line when the body ends.
//!
//! Plugins that count, limit or keep key-values do so through [`state`]: in this process, or
//! in Redis shared by every gateway. Every failure becomes a JSON response in exactly one
//! place, [`rescue`]. Along the way,
//! handles resolved when the live state was built count the request, its upstream attempts
//! and its plugin calls in [`metrics`], which the [`admin`] listener serves to Prometheus,
//! and [`trace`] records the request, its stage calls and upstream attempts as spans.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cache;
pub mod config;
pub mod custom_metrics;
pub mod framing;
pub mod gateway;
pub mod grpc;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod plugins;
pub mod proxy;
pub mod reload;
pub mod rescue;
pub mod router;
pub mod runtime;
pub mod server;
pub mod state;
pub mod text;
pub mod tls;
pub mod trace;
pub mod transcode;
pub mod tunnel;
pub mod workers;
