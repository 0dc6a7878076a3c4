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

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use super::connection::ClientCertificate;
    use crate::bindings::wasmgate::plugin::{connection, counters, host, types};

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
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub use crate::testing::host::{
        client_certificate, config_json, increment, is_tls, log, now_millis, server_name, set_var,
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
