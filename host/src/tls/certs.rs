//! Certificate files: a certificate chain and its private key read from PEM files and
//! checked before use (the key matches the certificate, the certificate is valid now), CA
//! bundles, and the facts of a certificate (names, subject, fingerprint) the gateway uses.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate, key or CA file cannot be used. Messages name the file and never
/// quote key material.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The file cannot be read.
    #[error("cannot read {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The file holds no usable PEM section of the expected kind.
    #[error("{}: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate cannot be parsed, or is not valid now.
    #[error("{}: {message}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The private key does not belong to the certificate, or cannot sign.
    #[error("{} does not fit {}: {message}", key.display(), cert.display())]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A certificate chain and key that passed every check, ready to serve.
#[derive(Debug, Clone)]
pub struct CertifiedPair {
    /// The chain and signing key for rustls.
    pub key: Arc<CertifiedKey>,
    /// Facts about the end-entity certificate.
    pub info: CertificateInfo,
}

/// What the gateway reports and matches on about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// The subject, as an RFC 4514 string (`CN=api.example.com, O=Example`).
    pub subject: String,
    /// Subject alternative names: DNS names, IP addresses, e-mail addresses and URIs.
    pub sans: Vec<String>,
    /// The DNS names among the SANs, lower-case (what SNI is matched against).
    #[serde(skip)]
    pub dns_names: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
    /// End of validity, as written in the certificate.
    pub not_after: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// Reads `cert` (a PEM chain, end-entity first) and `key` (a PEM private key) and checks
/// them: the key matches the certificate and the certificate is valid now.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedPair, CertError> {
    let chain = read_chain(cert)?;
    let info = inspect(cert, &chain[0])?;
    check_validity(cert, &chain[0])?;
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::Pem {
        path: key.to_path_buf(),
        message: format!("no private key found ({})", pem_reason(&e)),
    })?;
    let provider = super::provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        let message = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not match the certificate's public key".to_string()
            }
            other => other.to_string(),
        };
        CertError::Key {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            message,
        }
    })?;
    Ok(CertifiedPair {
        key: Arc::new(certified),
        info,
    })
}

/// Reads a PEM bundle of CA certificates into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, CertError> {
    let chain = read_chain(path)?;
    let mut roots = RootCertStore::empty();
    for cert in chain {
        roots.add(cert).map_err(|e| CertError::Certificate {
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Reads the certificates of a PEM file; at least one.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_path_buf(),
            message: format!("not a PEM certificate file ({})", pem_reason(&e)),
        })?;
    if chain.is_empty() {
        return Err(CertError::Pem {
            path: path.to_path_buf(),
            message: "no `BEGIN CERTIFICATE` section found".into(),
        });
    }
    Ok(chain)
}

/// The facts of a DER certificate (`path` names it in errors).
pub fn inspect(path: &Path, der: &CertificateDer<'_>) -> Result<CertificateInfo, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Certificate {
        path: path.to_path_buf(),
        message: format!("not an X.509 certificate: {e}"),
    })?;
    let mut sans = Vec::new();
    let mut dns_names = Vec::new();
    if let Ok(Some(extension)) = cert.subject_alternative_name() {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    dns_names.push(dns.to_ascii_lowercase());
                    sans.push(format!("DNS:{dns}"));
                }
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_of(bytes) {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                GeneralName::RFC822Name(mail) => sans.push(format!("email:{mail}")),
                GeneralName::URI(uri) => sans.push(format!("URI:{uri}")),
                _ => {}
            }
        }
    }
    let not_after = cert.validity().not_after;
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        sans,
        dns_names,
        sha256: sha256_hex(der),
        not_after: not_after.to_string(),
        not_after_unix: not_after.timestamp(),
    })
}

/// Refuses a certificate that is expired or not yet valid.
fn check_validity(path: &Path, der: &CertificateDer<'_>) -> Result<(), CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Certificate {
        path: path.to_path_buf(),
        message: format!("not an X.509 certificate: {e}"),
    })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(CertError::Certificate {
            path: path.to_path_buf(),
            message: format!("the certificate expired on {}", validity.not_after),
        });
    }
    if now < validity.not_before {
        return Err(CertError::Certificate {
            path: path.to_path_buf(),
            message: format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        });
    }
    Ok(())
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A PEM error, worded without any of the file's content.
fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::NoItemsFound => "no PEM section of the expected kind".into(),
        Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        Error::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        Error::Base64Decode(_) => "invalid base64 in a PEM section".into(),
        Error::Io(e) => e.to_string(),
        _ => "malformed PEM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, params: rcgen::CertificateParams) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        (cert_path, key_path)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wasmgate-certs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_good_pair_loads_with_its_names() {
        super::super::install_default_provider();
        let dir = temp_dir("good");
        let params = rcgen::CertificateParams::new(vec!["a.example".into(), "*.b.example".into()])
            .expect("params");
        let (cert, key) = write_pair(&dir, params);
        let pair = load_pair(&cert, &key).expect("loads");
        assert_eq!(pair.info.dns_names, ["a.example", "*.b.example"]);
        assert_eq!(pair.info.sha256.len(), 64);
    }

    #[test]
    fn an_expired_certificate_or_a_foreign_key_is_refused() {
        super::super::install_default_provider();
        let dir = temp_dir("bad");
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let (cert, key) = write_pair(&dir, params);
        let error = load_pair(&cert, &key).expect_err("expired").to_string();
        assert!(error.contains("expired"), "{error}");

        let params = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        let (cert, _) = write_pair(&dir, params);
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.join("other.pem"), other.serialize_pem()).expect("write");
        let error = load_pair(&cert, &dir.join("other.pem"))
            .expect_err("mismatch")
            .to_string();
        assert!(error.contains("does not match"), "{error}");
        assert!(!error.contains("PRIVATE KEY"), "{error}");
    }
}
