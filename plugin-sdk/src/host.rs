//! What every plugin may ask of the host: logging, the clock, request
//! variables, the client's connection (TLS, client certificate) and, for
//! rate-limit plugins, shared counters.
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
/// The `rate-limit` world imports counters; the gateway provides them to
/// plugins of every kind.
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

/// What the host knows about the client's connection: whether it came over
/// TLS, the server name the client asked for (SNI) and the client certificate
/// the gateway verified (mutual TLS, on listeners with `client-auth`). An auth
/// plugin can make the certificate's subject the caller's identity.
///
/// A plugin that never calls these does not import the interface, so it loads
/// in gateways older than the interface too.
pub mod connection {
    /// A client certificate the gateway verified during the TLS handshake.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct ClientCertificate {
        /// The subject, as an RFC 4514 string such as `CN=alice, O=Example`.
        pub subject: String,
        /// Subject alternative names, each with its kind: `DNS:…`, `IP:…`,
        /// `email:…` or `URI:…`.
        pub sans: Vec<String>,
        /// SHA-256 of the DER-encoded certificate, lower-case hex.
        pub sha256: String,
    }

    /// Whether the request came over TLS.
    pub fn is_tls() -> bool {
        super::imp::is_tls()
    }

    /// The server name the client asked for (SNI, lower-case), if it came over
    /// TLS and sent one.
    pub fn server_name() -> Option<String> {
        super::imp::server_name()
    }

    /// The verified client certificate, if the client presented one.
    pub fn client_certificate() -> Option<ClientCertificate> {
        super::imp::client_certificate()
    }
}

/// Rate-limit primitives the host computes atomically on the state backend's
/// clock (Redis' clock when the gateway shares state through Redis), so
/// several gateways with skewed clocks still enforce one limit.
pub mod limiter {
    /// A fixed window's count and its predecessor's.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct WindowCount {
        /// The current window's count, this call's delta included.
        pub current: u64,
        /// The previous window's count.
        pub previous: u64,
        /// Milliseconds since the current window started.
        pub elapsed_ms: u64,
    }

    /// A GCRA verdict.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Decision {
        /// Whether the cost was taken.
        pub allowed: bool,
        /// Requests that could still go at once.
        pub remaining: u64,
        /// When refused: milliseconds until the same cost would be allowed.
        pub retry_after_ms: u64,
        /// Milliseconds until the full burst is available again.
        pub reset_after_ms: u64,
    }

    /// Adds `delta` to the current `window_ms` window of `key` (windows aligned
    /// to the backend's clock) and returns it with the previous window's count.
    pub fn window(key: &str, delta: u64, window_ms: u64) -> Result<WindowCount, String> {
        super::imp::window(key, delta, window_ms)
    }

    /// GCRA: `limit` requests per `period_ms`, spread evenly, with bursts of
    /// up to `burst` from idle; takes `cost` (at most `burst`) if it fits.
    pub fn gcra(
        key: &str,
        limit: u64,
        period_ms: u64,
        burst: u64,
        cost: u64,
    ) -> Result<Decision, String> {
        super::imp::gcra(key, limit, period_ms, burst, cost)
    }
}

/// A key-value store shared by every instance of this plugin (and by every
/// gateway when the gateway shares state through Redis). Plugins of every kind
/// may use it. Keys are at most 512 bytes, values 64 KiB, and every entry
/// lives `ttl_ms` (1 ms to 30 days). An `Err` means the store could not
/// answer; the text says why.
pub mod kv {
    /// The value of `key`, if it is there.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        super::imp::kv_get(key)
    }

    /// Sets `key` to `value` for `ttl_ms` milliseconds.
    pub fn set(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), String> {
        super::imp::kv_set(key, value, ttl_ms)
    }

    /// Sets `key` to `value` only if its value is `expected` (`None`: only if
    /// it is absent); returns whether it did.
    pub fn compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, String> {
        super::imp::kv_compare_and_set(key, expected, value, ttl_ms)
    }

    /// Removes `key`; returns whether it was there.
    pub fn delete(key: &str) -> Result<bool, String> {
        super::imp::kv_delete(key)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use super::connection::ClientCertificate;
    use super::limiter::{Decision, WindowCount};
    use crate::bindings::wasmgate::plugin::{connection, counters, host, kv, limiter, types};

    pub fn is_tls() -> bool {
        connection::is_tls()
    }

    pub fn server_name() -> Option<String> {
        connection::server_name()
    }

    pub fn client_certificate() -> Option<ClientCertificate> {
        connection::client_certificate().map(|cert| ClientCertificate {
            subject: cert.subject,
            sans: cert.sans,
            sha256: cert.sha256,
        })
    }

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

    pub fn window(key: &str, delta: u64, window_ms: u64) -> Result<WindowCount, String> {
        limiter::window(key, delta, window_ms).map(|w| WindowCount {
            current: w.current,
            previous: w.previous,
            elapsed_ms: w.elapsed_ms,
        })
    }

    pub fn gcra(
        key: &str,
        limit: u64,
        period_ms: u64,
        burst: u64,
        cost: u64,
    ) -> Result<Decision, String> {
        limiter::gcra(key, limit, period_ms, burst, cost).map(|d| Decision {
            allowed: d.allowed,
            remaining: d.remaining,
            retry_after_ms: d.retry_after_ms,
            reset_after_ms: d.reset_after_ms,
        })
    }

    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, String> {
        kv::get(key)
    }

    pub fn kv_set(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), String> {
        kv::set(key, value, ttl_ms)
    }

    pub fn kv_compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, String> {
        kv::compare_and_set(key, expected, value, ttl_ms)
    }

    pub fn kv_delete(key: &str) -> Result<bool, String> {
        kv::delete(key)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub use crate::testing::host::{
        client_certificate, config_json, gcra, increment, is_tls, kv_compare_and_set, kv_delete,
        kv_get, kv_set, log, now_millis, server_name, set_var, window,
    };
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::connection::{self, ClientCertificate};
    use crate::testing;

    #[test]
    fn the_connection_stand_in_is_plain_until_tls_is_set() {
        testing::reset();
        assert!(!connection::is_tls());
        assert_eq!(connection::server_name(), None);
        assert_eq!(connection::client_certificate(), None);
        let cert = ClientCertificate {
            subject: "CN=alice".into(),
            sans: vec!["email:alice@example.test".into()],
            sha256: "00".repeat(32),
        };
        testing::set_tls(Some("api.example.test"), Some(cert.clone()));
        assert!(connection::is_tls());
        assert_eq!(
            connection::server_name().as_deref(),
            Some("api.example.test")
        );
        assert_eq!(connection::client_certificate(), Some(cert));
        testing::reset();
        assert!(!connection::is_tls());
    }
}
