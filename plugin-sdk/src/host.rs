//! What every plugin may ask of the host: logging, the clock, request
//! variables and, for rate-limit plugins, shared counters.
//!
//! On `wasm32` these call the host's imports. On other targets (unit tests of
//! plugin logic) they use the in-process stand-in of [`testing`](crate::testing).

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes a line to the gateway's log, tagged with the plugin and route.
/// The [`info!`](crate::info) family of macros formats and calls this.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_millis() -> u64 {
    imp::now_millis()
}

/// Sets a request variable that later stages, and later phases of this
/// request, read from [`Context::vars`](crate::Context::vars). Names are at
/// most 64 bytes and values 4 KiB; a request holds at most 64 variables.
pub fn set_var(name: &str, value: &str) {
    imp::set_var(name, value);
}

/// This stage's raw `config` table, as the JSON text the host passes
/// (`{}` when the route gives none). Plugins normally receive it parsed, as
/// their `Config` type.
pub fn config_json() -> String {
    imp::config_json()
}

/// Counters shared by every instance of every plugin, and by every gateway
/// process when the gateway uses a shared backend (Redis).
///
/// Only rate-limit plugins may import counters: a plugin of another kind that
/// calls this will not load.
pub mod counters {
    /// Adds `delta` to the counter `key` and returns the new value.
    ///
    /// A counter is created at zero by its first increment and expires
    /// `window_ms` milliseconds after that; the next increment starts it again
    /// at zero. Keys are namespaced per plugin by the host. `delta` may be zero
    /// to read. An `Err` means the counter store could not answer (for example
    /// Redis is down); the text says why.
    pub fn increment(key: &str, delta: u64, window_ms: u64) -> Result<u64, String> {
        super::imp::increment(key, delta, window_ms)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::bindings::wasmgate::plugin::{counters, host, types};

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        };
        host::log(level, message);
    }

    pub fn now_millis() -> u64 {
        host::now_millis()
    }

    pub fn set_var(name: &str, value: &str) {
        host::set_var(name, value);
    }

    pub fn config_json() -> String {
        host::config()
    }

    pub fn increment(key: &str, delta: u64, window_ms: u64) -> Result<u64, String> {
        counters::increment(key, delta, window_ms)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub use crate::testing::host::{config_json, increment, log, now_millis, set_var};
}
