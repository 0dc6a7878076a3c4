//! TLS with rustls (ring provider): listeners that terminate TLS with certificates chosen
//! by SNI and reloaded from their files ([`listener`]), the certificate files themselves
//! ([`certs`]), and TLS to upstreams ([`upstream`]).
//!
//! What a TLS connection tells the gateway about its client (the server name it asked for,
//! its verified certificate) travels with each request as a [`TlsSession`]: into the
//! `X-Forwarded-Proto` header and into the `connection` interface plugins may import.

pub mod certs;
pub mod listener;
pub mod upstream;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use certs::{CertError, CertificateInfo, CertifiedPair};
pub use listener::{CertificateStatus, TlsListener};
pub use upstream::{ALPN_H2, UpstreamTls};

/// Installs rustls' ring provider as the process default (once; later calls do nothing).
pub fn install_default_provider() {
    let _ = ring_provider().install_default();
}

/// The process's crypto provider: the installed default, else ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(ring_provider()))
}

#[expect(
    deprecated,
    reason = "ring is the chosen provider (no aws-lc build); rustls deprecates it only for lacking post-quantum key exchange"
)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// What a TLS handshake established about a client connection; shared by its requests.
#[derive(Clone)]
pub struct TlsSession {
    /// The server name the client asked for (SNI), lower-case.
    pub server_name: Option<String>,
    /// The verified client certificate, when the client presented one.
    pub client_certificate: Option<ClientCertificate>,
    /// The listener, and which of its certificate entries the handshake used.
    listener: Arc<TlsListener>,
    entry: usize,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.client_certificate)
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// Whether a request for `host` (a `Host` value, port allowed) belongs on this
    /// connection: the certificate entry its name selects is the one the handshake used.
    /// Otherwise the request could reach a name whose entry asks for a client certificate
    /// over a connection that never presented one.
    pub fn serves(&self, host: &str) -> bool {
        self.listener.entry_for(Some(&host_name(host))) == self.entry
    }
}

/// The name of a `Host` value: without the port, lower-case.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(ipv6) => ipv6.split(']').next().unwrap_or(ipv6),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A client certificate that passed verification against the listener's CA bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject, as an RFC 4514 string (`CN=alice, O=Example`).
    pub subject: String,
    /// Subject alternative names, each with its kind: `DNS:…`, `IP:…`, `email:…`, `URI:…`.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
}

impl From<CertificateInfo> for ClientCertificate {
    fn from(info: CertificateInfo) -> Self {
        Self {
            subject: info.subject,
            sans: info.sans,
            sha256: info.sha256,
        }
    }
}

/// Why TLS settings cannot be put to use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Settings(String),
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn a_host_value_is_matched_by_its_name() {
        assert_eq!(host_name("API.Example.com:8443"), "api.example.com");
        assert_eq!(host_name("api.example.com."), "api.example.com");
        assert_eq!(host_name("[::1]:8443"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }
}
