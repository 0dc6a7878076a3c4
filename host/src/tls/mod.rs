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
pub use upstream::UpstreamTls;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSession {
    /// The server name the client asked for (SNI), lower-case.
    pub server_name: Option<String>,
    /// The verified client certificate, when the client presented one.
    pub client_certificate: Option<ClientCertificate>,
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
