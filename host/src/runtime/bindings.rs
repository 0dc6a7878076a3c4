//! Every `bindgen!` for the WIT package, in one place.
//!
//! The `auth` world generates the shared `types`, `host`, `trace`, `metrics` and
//! `connection` interfaces; the other worlds reuse them through `with`, so there is one
//! `Request` type and one `Host` trait of each.

mod generated {
    /// The `auth` world, and the shared interfaces.
    pub mod auth {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "auth",
            imports: { default: trappable },
            exports: { default: async },
        });
    }

    /// The `rate-limit` world and the `counters`, `limiter` and `kv` interfaces.
    pub mod rate_limit {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "rate-limit",
            imports: {
                default: async | trappable,
            },
            exports: { default: async },
            with: {
                "wasmgate:plugin/types": super::auth::wasmgate::plugin::types,
                "wasmgate:plugin/host": super::auth::wasmgate::plugin::host,
                "wasmgate:plugin/trace": super::auth::wasmgate::plugin::trace,
                "wasmgate:plugin/metrics": super::auth::wasmgate::plugin::metrics,
                "wasmgate:plugin/connection": super::auth::wasmgate::plugin::connection,
            },
        });
    }

    /// The `transform` world.
    pub mod transform {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "transform",
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "wasmgate:plugin/types": super::auth::wasmgate::plugin::types,
                "wasmgate:plugin/host": super::auth::wasmgate::plugin::host,
                "wasmgate:plugin/trace": super::auth::wasmgate::plugin::trace,
                "wasmgate:plugin/metrics": super::auth::wasmgate::plugin::metrics,
                "wasmgate:plugin/connection": super::auth::wasmgate::plugin::connection,
            },
        });
    }

    /// The `aggregate` world.
    pub mod aggregate {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "aggregate",
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "wasmgate:plugin/types": super::auth::wasmgate::plugin::types,
                "wasmgate:plugin/host": super::auth::wasmgate::plugin::host,
                "wasmgate:plugin/trace": super::auth::wasmgate::plugin::trace,
                "wasmgate:plugin/metrics": super::auth::wasmgate::plugin::metrics,
                "wasmgate:plugin/connection": super::auth::wasmgate::plugin::connection,
            },
        });
    }
}

pub use generated::aggregate::{Aggregate, AggregatePre};
pub use generated::auth::wasmgate::plugin::connection;
pub use generated::auth::wasmgate::plugin::host;
pub use generated::auth::wasmgate::plugin::metrics;
pub use generated::auth::wasmgate::plugin::trace;
pub use generated::auth::wasmgate::plugin::types;
pub use generated::auth::{Auth, AuthPre};
pub use generated::rate_limit::wasmgate::plugin::{counters, kv, limiter};
pub use generated::rate_limit::{RateLimit, RateLimitPre};
pub use generated::transform::{Transform, TransformPre};
