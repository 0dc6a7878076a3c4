//! A TLS listener's certificates: chosen per connection by the server name the client asks
//! for (SNI), each with its own client-certificate policy, and reloaded from their files
//! without a restart.
//!
//! Every certificate entry has its own rustls `ServerConfig` (protocol floor, ALPN `h2` and
//! `http/1.1`, client verifier) whose certificate resolver reads the entry's current key
//! from an `ArcSwap`. A reload checks a new pair (key matches, valid now) before it swaps
//! it in; a handshake in progress and established sessions keep the key they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::certs::{self, CertifiedPair};
use super::{ClientCertificate, TlsError, TlsSession};
use crate::config::{CertificateConfig, ClientAuth, ListenerTls, TlsVersion};

/// The ALPN protocols offered, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The certificates of one TLS listener.
pub struct TlsListener {
    address: SocketAddr,
    sites: Vec<Site>,
    /// Exact server name → site.
    exact: HashMap<String, usize>,
    /// `example.com` of a `*.example.com` name → site.
    wildcard: HashMap<String, usize>,
    /// The site for clients without SNI and for unknown names.
    default: usize,
}

/// One certificate entry: its files, its current pair and the rustls config serving it.
struct Site {
    config: CertificateConfig,
    key: Arc<SiteKey>,
    server: Arc<rustls::ServerConfig>,
    /// Why the last reload of the files was refused, while the files stay refused.
    rejected: Mutex<Option<String>>,
}

/// The pair a site serves now; its resolver.
#[derive(Debug)]
struct SiteKey(ArcSwap<CertifiedPair>);

impl ResolvesServerCert for SiteKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().key.clone())
    }
}

/// What `/status` shows of one certificate entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertificateStatus {
    /// The listener's address.
    pub listener: String,
    /// The certificate file.
    pub cert: String,
    /// The key file.
    pub key: String,
    /// The SNI names it serves.
    pub names: Vec<String>,
    /// Whether it is served to clients without (or with an unknown) SNI.
    pub default: bool,
    /// The pair being served.
    pub serving: super::CertificateInfo,
    /// Why the files on disk are refused (the pair above keeps serving), if they are.
    pub last_error: Option<String>,
}

/// What a reload did to one certificate entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new pair is served.
    Swapped {
        /// The certificate file.
        cert: String,
        /// The new certificate's fingerprint.
        sha256: String,
    },
    /// The files were refused; the last good pair keeps serving.
    Rejected {
        /// The certificate file.
        cert: String,
        /// Why.
        reason: String,
    },
}

impl TlsListener {
    /// Loads every certificate of a listener at `address` and builds its rustls configs.
    pub fn new(address: SocketAddr, settings: &ListenerTls) -> Result<Self, TlsError> {
        let mut sites = Vec::with_capacity(settings.certificates.len());
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        let mut default = 0;
        for (index, config) in settings.certificates.iter().enumerate() {
            let pair = certs::load_pair(&config.cert, &config.key)?;
            let names = if config.names.is_empty() {
                pair.info.dns_names.clone()
            } else {
                config.names.clone()
            };
            for name in names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(name),
                };
                table.or_insert(index);
            }
            if config.default {
                default = index;
            }
            let key = Arc::new(SiteKey(ArcSwap::from_pointee(pair)));
            let server = server_config(settings.min_version, config, key.clone())?;
            sites.push(Site {
                config: config.clone(),
                key,
                server,
                rejected: Mutex::new(None),
            });
        }
        if sites.is_empty() {
            return Err(TlsError::Settings(format!(
                "TLS listener {address} has no certificate"
            )));
        }
        Ok(Self {
            address,
            sites,
            exact,
            wildcard,
            default,
        })
    }

    /// The listener's address as configured.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The certificate entry serving `server_name`: an exact name, else a `*.` wildcard
    /// one label up, else the default.
    pub(super) fn entry_for(&self, server_name: Option<&str>) -> usize {
        server_name
            .and_then(|name| {
                self.exact.get(name).or_else(|| {
                    let (_, parent) = name.split_once('.')?;
                    self.wildcard.get(parent)
                })
            })
            .copied()
            .unwrap_or(self.default)
    }

    /// Runs the server side of a handshake on `stream`, within `timeout`.
    pub async fn accept(
        self: &Arc<Self>,
        stream: TcpStream,
        timeout: Duration,
    ) -> std::io::Result<(TlsStream<TcpStream>, TlsSession)> {
        let handshake = async {
            refuse_plain_http(&stream).await?;
            let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
            let server_name = start
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase);
            let entry = self.entry_for(server_name.as_deref());
            let stream = start.into_stream(self.sites[entry].server.clone()).await?;
            let client_certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|der| certs::inspect(std::path::Path::new("client"), der).ok())
                .map(ClientCertificate::from);
            Ok((
                stream,
                TlsSession {
                    server_name,
                    client_certificate,
                    listener: self.clone(),
                    entry,
                },
            ))
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            })
    }

    /// Reads every certificate entry's files again and swaps in each pair that changed and
    /// passes the checks; refused pairs leave the last good one serving.
    pub fn reload(&self) -> Vec<Reloaded> {
        let mut done = Vec::new();
        for site in &self.sites {
            let cert = site.config.cert.display().to_string();
            let mut rejected = site.rejected.lock().unwrap_or_else(|p| p.into_inner());
            match certs::load_pair(&site.config.cert, &site.config.key) {
                Ok(pair) => {
                    *rejected = None;
                    if pair.info.sha256 == site.key.0.load().info.sha256 {
                        continue;
                    }
                    tracing::info!(listener = %self.address, cert = %cert, sha256 = %pair.info.sha256, not_after = %pair.info.not_after, "certificate reloaded");
                    done.push(Reloaded::Swapped {
                        cert,
                        sha256: pair.info.sha256.clone(),
                    });
                    site.key.0.store(Arc::new(pair));
                }
                Err(error) => {
                    let reason = error.to_string();
                    if rejected.as_deref() != Some(reason.as_str()) {
                        tracing::error!(listener = %self.address, cert = %cert, %reason, "certificate rejected; the last good one keeps serving");
                        done.push(Reloaded::Rejected {
                            cert,
                            reason: reason.clone(),
                        });
                        *rejected = Some(reason);
                    }
                }
            }
        }
        done
    }

    /// The directories holding the listener's certificate and key files (watched for
    /// changes: a rename or a symlink swap shows up as an event in the directory).
    pub fn watched_dirs(&self) -> Vec<std::path::PathBuf> {
        let mut dirs: Vec<std::path::PathBuf> = self
            .sites
            .iter()
            .flat_map(|site| [&site.config.cert, &site.config.key])
            .filter_map(|file| file.parent().map(std::path::Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Each certificate entry as `/status` shows it.
    pub fn status(&self) -> Vec<CertificateStatus> {
        self.sites
            .iter()
            .enumerate()
            .map(|(index, site)| {
                let pair = site.key.0.load();
                let mut names: Vec<String> = self
                    .exact
                    .iter()
                    .filter(|&(_, &i)| i == index)
                    .map(|(name, _)| name.clone())
                    .chain(
                        self.wildcard
                            .iter()
                            .filter(|&(_, &i)| i == index)
                            .map(|(name, _)| format!("*.{name}")),
                    )
                    .collect();
                names.sort();
                CertificateStatus {
                    listener: self.address.to_string(),
                    cert: site.config.cert.display().to_string(),
                    key: site.config.key.display().to_string(),
                    names,
                    default: index == self.default,
                    serving: pair.info.clone(),
                    last_error: site
                        .rejected
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                }
            })
            .collect()
    }
}

/// The body of the answer to plain HTTP on a TLS port (nginx answers such requests too).
const PLAIN_HTTP_BODY: &str =
    r#"{"error":"bad_request","message":"this port speaks TLS: use an https:// URL"}"#;

/// A TLS connection starts with a handshake record (byte 22); a request line starts with
/// an upper-case method. Answers the latter with a JSON 400 (and fails the connection)
/// instead of leaving the client with a TLS alert it cannot read.
async fn refuse_plain_http(stream: &TcpStream) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
            PLAIN_HTTP_BODY.len()
        );
        let answer = answer.as_bytes();
        let mut written = 0;
        while written < answer.len() {
            stream.writable().await?;
            match stream.try_write(&answer[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // Read what the client sent so far: closing with unread bytes would reset the
        // connection, and the client could lose the answer.
        let mut sink = [0u8; 4096];
        while matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {}
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "plain HTTP on a TLS listener",
        ));
    }
    Ok(())
}

/// The rustls config of one certificate entry.
fn server_config(
    min_version: TlsVersion,
    config: &CertificateConfig,
    key: Arc<SiteKey>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = super::provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Settings(e.to_string()))?;
    let builder = match &config.client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional { ca } | ClientAuth::Required { ca } => {
            let roots = Arc::new(certs::load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if matches!(config.client_auth, ClientAuth::Optional { .. }) {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Settings(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_cert_resolver(key);
    server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The server's order of cipher suites (strongest first), not whatever the client prefers.
    server.ignore_client_order = true;
    Ok(Arc::new(server))
}
