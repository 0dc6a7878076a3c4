//! TLS to upstream targets: a rustls client config per upstream (system roots or a CA
//! file, an optional client certificate, verification always on) and the server name
//! each target is verified against.

use std::sync::{Arc, OnceLock};

use http::uri::Authority;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{TlsError, certs};
use crate::config::UpstreamTlsConfig;

/// The ALPN protocol offered to HTTP/1.1 upstreams.
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// The ALPN protocol offered to HTTP/2 upstreams (the only one: a target that does not
/// agree is refused rather than spoken to in a version the upstream was not declared with).
pub const ALPN_H2: &[u8] = b"h2";

/// How an upstream's connections speak TLS.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The configured server name; `None`: each target's host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the client config: reads the CA bundle (or takes the system's roots) and the
    /// client certificate, if any; offers HTTP/2 by ALPN when `http2`, else HTTP/1.1.
    pub fn new(settings: &UpstreamTlsConfig, http2: bool) -> Result<Self, TlsError> {
        let roots = match &settings.ca {
            Some(ca) => Arc::new(certs::load_roots(ca)?),
            None => system_roots(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Settings(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &settings.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                // Checked as a pair first (key matches, valid now), then handed to rustls.
                certs::load_pair(cert, key)?;
                let chain = certs::read_chain(cert)?;
                let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    TlsError::Settings(format!("{}: no private key found: {e}", key.display()))
                })?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| TlsError::Settings(format!("{}: {e}", cert.display())))?
            }
        };
        config.alpn_protocols = vec![if http2 { ALPN_H2 } else { ALPN_HTTP1 }.to_vec()];
        let server_name = settings
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|e| TlsError::Settings(format!("`{name}`: {e}")))
            })
            .transpose()?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the client side of a handshake with `target` on `stream`.
    pub async fn connect(
        &self,
        target: &Authority,
        stream: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(target.host().trim_matches(['[', ']']).to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        };
        self.connector.connect(name, stream).await
    }
}

/// The system's trusted roots, read once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's trusted certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system trusted certificates loaded");
            Arc::new(roots)
        })
        .clone()
}
