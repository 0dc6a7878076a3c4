//! TLS, black-box: the real `wasmgate` binary terminating TLS with certificates generated
//! here (rcgen), real rustls clients, `openssl s_client` for what rustls cannot offer
//! (TLS 1.1), real TLS upstreams (hyper + rustls here, and nginx).
//!
//! Covered: SNI picks the certificate (exact and wildcard), clients without SNI get the
//! default; ALPN negotiates `h2` and `http/1.1`; `X-Forwarded-Proto: https`; plain HTTP on
//! a TLS port gets a JSON 400; TLS 1.1 is
//! refused and a 1.3 floor refuses 1.2; `wasmgate check` names a bad certificate file and
//! why; certificate rotation under load (no failed handshake or request, the new
//! certificate served within a second of the write), a broken pair keeping the last good
//! one (and `/status` showing the rejection); client certificates required and optional,
//! the verified subject reaching an auth plugin, a request for another entry's name over a
//! connection without a certificate refused with 421; TLS to upstreams (verification, a failed
//! verification as a 502 with the reason in the log, server-name rules, nginx).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::{TempDir, TestGateway, TestUpstream, check, handler, wait_until};

// === Certificates ===

/// A test CA that signs leaf certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A leaf certificate and its key, as PEM, with its DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names, or IP addresses) with common name `cn`.
    fn leaf(&self, cn: &str, names: &[&str]) -> Leaf {
        self.leaf_with(cn, names, |_| {})
    }

    fn leaf_with(
        &self,
        cn: &str,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("a DNS name")),
            });
        }
        edit(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA root");
        }
        roots
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("writing the CA");
    }
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME-key.pem` in `dir`; returns their paths.
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert, &self.cert_pem).expect("writing a certificate");
        std::fs::write(&key, &self.key_pem).expect("writing a key");
        (cert, key)
    }

    /// Replaces `NAME.pem` and `NAME-key.pem` in `dir` atomically (write aside, rename).
    fn replace(&self, dir: &Path, name: &str) {
        for (file, text) in [
            (format!("{name}-key.pem"), &self.key_pem),
            (format!("{name}.pem"), &self.cert_pem),
        ] {
            let aside = dir.join(format!(".{file}.tmp"));
            std::fs::write(&aside, text).expect("writing aside");
            std::fs::rename(&aside, dir.join(file)).expect("renaming into place");
        }
    }

    fn client_auth(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.der.clone()],
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM"),
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[expect(deprecated, reason = "the ring provider, as the gateway uses")]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

// === Clients ===

/// How a test client connects.
struct ClientSetup<'a> {
    roots: rustls::RootCertStore,
    alpn: &'a [&'a [u8]],
    client_cert: Option<&'a Leaf>,
    versions: &'a [&'static rustls::SupportedProtocolVersion],
}

impl<'a> ClientSetup<'a> {
    fn new(ca: &Ca) -> Self {
        Self {
            roots: ca.roots(),
            alpn: &[b"http/1.1"],
            client_cert: None,
            versions: rustls::ALL_VERSIONS,
        }
    }

    fn connector(&self) -> TlsConnector {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(self.versions)
            .expect("versions")
            .with_root_certificates(self.roots.clone());
        let mut config = match self.client_cert {
            Some(leaf) => {
                let (chain, key) = leaf.client_auth();
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client cert")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// What a handshake established.
struct Connected {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    served: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

/// Connects to `addr` and handshakes with server name `sni` (an IP address sends no SNI).
async fn handshake(
    setup: &ClientSetup<'_>,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<Connected> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).expect("a server name");
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        setup.connector().connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let (_, connection) = stream.get_ref();
    let served = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned();
    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
    Ok(Connected {
        stream,
        served,
        alpn,
    })
}

/// A response read whole.
struct Answer {
    status: StatusCode,
    version: http::Version,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `GET path` on an established connection: HTTP/2 when ALPN chose `h2`.
async fn get_on(connected: Connected, authority: &str, path: &str) -> Result<Answer, String> {
    let h2 = connected.alpn.as_deref() == Some(b"h2");
    let io = TokioIo::new(connected.stream);
    let request = |uri: String| {
        Request::get(uri)
            .header(http::header::HOST, authority)
            .body(Empty::<Bytes>::new())
            .expect("a request")
    };
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender
            .send_request(request(format!("https://{authority}{path}")))
            .await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender.send_request(request(path.to_string())).await
    }
    .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: parts.status,
        version: parts.version,
        body,
    })
}

/// One fresh connection, one `GET path`.
async fn https_get(
    setup: &ClientSetup<'_>,
    addr: SocketAddr,
    sni: &str,
    path: &str,
) -> Result<Answer, String> {
    let connected = handshake(setup, addr, sni)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), get_on(connected, sni, path))
        .await
        .map_err(|_| "no answer within 10s".to_string())?
}

// === Gateway configs ===

/// A config with one TLS listener on `127.0.0.1:0` whose certificate entries are
/// `certificates` (TOML of `[[listeners.certificates]]` tables), no plain listener, and
/// `rest` after it.
fn tls_config(min_version: &str, certificates: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = []\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\nmin-tls-version = \"{min_version}\"\n\n{certificates}\n{rest}"
    )
}

fn certificate_toml(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[[listeners.certificates]]\ncert = {:?}\nkey = {:?}\n{extra}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

const ECHO_ROUTE: &str = "[[routes]]\nname = \"echo\"\nprefix = \"/\"\nupstream = \"echo\"\n";

fn echo_upstream(addr: SocketAddr) -> String {
    format!("[upstreams.echo]\ntargets = [\"{addr}\"]\n\n{ECHO_ROUTE}")
}

/// The gateway's JSON log records whose message is `message`.
fn log_lines(gateway: &TestGateway, message: &str) -> Vec<serde_json::Value> {
    gateway
        .log_records()
        .into_iter()
        .filter(|r| r["message"] == message)
        .collect()
}

// === Listeners ===

#[tokio::test]
async fn sni_picks_the_certificate_and_clients_without_sni_get_the_default() {
    let dir = TempDir::new();
    let ca = Ca::new("test CA");
    let a = ca.leaf("a", &["a.test", "127.0.0.1"]);
    let b = ca.leaf("b", &["*.b.test"]);
    let c = ca.leaf("c", &["c.test"]);
    let (a_cert, a_key) = a.write(dir.path(), "a");
    let (b_cert, b_key) = b.write(dir.path(), "b");
    let (c_cert, c_key) = c.write(dir.path(), "c");
    let upstream = TestUpstream::start(handler::echo);
    let certificates = [
        certificate_toml(&a_cert, &a_key, ""),
        certificate_toml(&b_cert, &b_key, ""),
        // Named explicitly, and the default: clients without SNI get it.
        certificate_toml(
            &c_cert,
            &c_key,
            "names = [\"c.test\", \"other.test\"]\ndefault = true",
        ),
    ]
    .concat();
    let gateway = TestGateway::start(&tls_config(
        "1.2",
        &certificates,
        &echo_upstream(upstream.addr()),
    ));
    let setup = ClientSetup::new(&ca);
    let addr = gateway.addr();

    let served = |sni: &'static str| {
        let setup = &setup;
        async move {
            handshake(setup, addr, sni)
                .await
                .unwrap_or_else(|e| panic!("{sni}: {e}"))
                .served
        }
    };
    assert_eq!(served("a.test").await, a.der, "exact name");
    assert_eq!(served("x.b.test").await, b.der, "wildcard name");
    assert_eq!(served("c.test").await, c.der, "a name from `names`");
    // An IP address as the server name sends no SNI at all: the default certificate,
    // which the client then refuses (it has no IP address in it).
    let no_sni = handshake(&setup, addr, "127.0.0.1").await;
    let error = no_sni
        .err()
        .expect("c's certificate does not name 127.0.0.1")
        .to_string();
    assert!(error.contains("certificate"), "{error}");
    // The wildcard covers one label only; a deeper name falls back to the default too.
    let deeper = handshake(&setup, addr, "y.x.b.test").await;
    assert!(deeper.is_err(), "y.x.b.test must get c's certificate");
    drop(gateway);

    // With `a` (which names 127.0.0.1) as the default, a client without SNI verifies it.
    let certificates = [
        certificate_toml(&a_cert, &a_key, ""),
        certificate_toml(&b_cert, &b_key, ""),
    ]
    .concat();
    let gateway = TestGateway::start(&tls_config(
        "1.2",
        &certificates,
        &echo_upstream(upstream.addr()),
    ));
    let connected = handshake(&setup, gateway.addr(), "127.0.0.1")
        .await
        .expect("no SNI");
    assert_eq!(
        connected.served, a.der,
        "the first certificate is the default"
    );
}

#[tokio::test]
async fn alpn_negotiates_h2_and_http11_and_the_upstream_sees_https() {
    let dir = TempDir::new();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf("site", &["site.test"]).write(dir.path(), "site");
    let upstream = TestUpstream::start(handler::echo);
    let gateway = TestGateway::start(&tls_config(
        "1.2",
        &certificate_toml(&cert, &key, ""),
        &echo_upstream(upstream.addr()),
    ));
    let mut setup = ClientSetup::new(&ca);

    setup.alpn = &[b"h2", b"http/1.1"];
    let connected = handshake(&setup, gateway.addr(), "site.test")
        .await
        .expect("h2");
    assert_eq!(connected.alpn.as_deref(), Some(&b"h2"[..]));
    let answer = get_on(connected, "site.test", "/over-h2")
        .await
        .expect("an answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.version, http::Version::HTTP_2);
    let echoed = answer.json();
    assert_eq!(echoed["path"], "/over-h2");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");

    setup.alpn = &[b"http/1.1"];
    let connected = handshake(&setup, gateway.addr(), "site.test")
        .await
        .expect("http/1.1");
    assert_eq!(connected.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let answer = get_on(connected, "site.test", "/over-h1")
        .await
        .expect("an answer");
    assert_eq!(answer.version, http::Version::HTTP_11);
    assert_eq!(answer.json()["headers"]["x-forwarded-proto"], "https");

    // Plain HTTP on the TLS port: a readable 400, not a TLS alert.
    let plain = tokio::task::spawn_blocking({
        let addr = gateway.addr();
        move || common::raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
    })
    .await
    .expect("a raw exchange");
    assert_eq!(plain.status, 400);
    assert!(
        plain.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("https://"))
    );

    // No ALPN at all: HTTP/1.1.
    setup.alpn = &[];
    let answer = https_get(&setup, gateway.addr(), "site.test", "/no-alpn")
        .await
        .expect("an answer");
    assert_eq!(answer.version, http::Version::HTTP_11);

    // The access line says the request came over TLS, and for which name.
    let logged =
        |r: &serde_json::Value| r["target"] == "wasmgate::access" && r["path"] == "/no-alpn";
    assert!(
        common::eventually(Duration::from_secs(10), || gateway
            .log_records()
            .iter()
            .any(logged))
        .await
    );
    let records = gateway.log_records();
    let line = records.iter().find(|r| logged(r)).unwrap();
    assert_eq!(
        (&line["tls"], &line["sni"]),
        (&serde_json::json!(true), &serde_json::json!("site.test")),
        "{line}"
    );
}

/// Runs `openssl s_client` with `args` against `addr`; its output.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let output = std::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running openssl s_client (Debian package `openssl`)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn tls_1_1_is_refused_and_a_1_3_floor_refuses_1_2() {
    let dir = TempDir::new();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf("site", &["site.test"]).write(dir.path(), "site");
    let gateway = TestGateway::start(&tls_config(
        "1.2",
        &certificate_toml(&cert, &key, ""),
        "[[routes]]\nname = \"ok\"\nprefix = \"/\"\nrespond = { body = \"ok\" }\n",
    ));
    // SECLEVEL=0 lets openssl itself offer TLS 1.1, so the refusal is the gateway's.
    let old = s_client(
        gateway.addr(),
        &[
            "-servername",
            "site.test",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ],
    );
    // openssl sent its TLS 1.1 hello; the gateway answered with an alert, no session.
    assert!(
        old.contains("SSL alert number") && old.contains("Cipher is (NONE)"),
        "TLS 1.1 must be refused by the server:\n{old}"
    );
    let tls12 = s_client(gateway.addr(), &["-servername", "site.test", "-tls1_2"]);
    assert!(
        tls12.contains("Protocol  : TLSv1.2") || tls12.contains("TLSv1.2"),
        "{tls12}"
    );
    assert!(!tls12.contains("alert"), "{tls12}");
    drop(gateway);

    let gateway = TestGateway::start(&tls_config(
        "1.3",
        &certificate_toml(&cert, &key, ""),
        "[[routes]]\nname = \"ok\"\nprefix = \"/\"\nrespond = { body = \"ok\" }\n",
    ));
    static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    let mut setup = ClientSetup::new(&ca);
    setup.versions = &TLS12_ONLY;
    let refused = handshake(&setup, gateway.addr(), "site.test").await;
    assert!(
        refused.is_err(),
        "TLS 1.2 must be refused under a 1.3 floor"
    );
    setup.versions = &TLS13_ONLY;
    let answer = https_get(&setup, gateway.addr(), "site.test", "/")
        .await
        .expect("TLS 1.3");
    assert_eq!(answer.status, 200);
}

#[test]
fn check_names_a_bad_certificate_file_and_the_reason() {
    let dir = TempDir::new();
    let ca = Ca::new("test CA");
    let expired = ca.leaf_with("old", &["old.test"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (old_cert, old_key) = expired.write(dir.path(), "old");
    let good = ca.leaf("good", &["good.test"]);
    let (good_cert, _) = good.write(dir.path(), "good");
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(
        &other_key,
        KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("key");
    let certificates = [
        certificate_toml(&old_cert, &old_key, ""),
        certificate_toml(&good_cert, &other_key, ""),
        certificate_toml(&dir.path().join("missing.pem"), &old_key, ""),
    ]
    .concat();
    let out = check(&tls_config(
        "1.0",
        &certificates,
        "[[routes]]\nname = \"ok\"\nprefix = \"/\"\nrespond = { body = \"ok\" }\n",
    ));
    assert_eq!(out.code, Some(1), "{out:?}");
    let text = out.stderr;
    assert!(text.contains("listeners[0].min-tls-version"), "{text}");
    assert!(
        text.contains("listeners[0].certificates[0].cert")
            && text.contains("old.pem")
            && text.contains("expired"),
        "{text}"
    );
    assert!(
        text.contains("listeners[0].certificates[1].key")
            && text.contains("other-key.pem")
            && text.contains("does not match"),
        "{text}"
    );
    assert!(
        text.contains("listeners[0].certificates[2].cert") && text.contains("missing.pem"),
        "{text}"
    );
    assert!(
        !text.contains("PRIVATE KEY"),
        "no key material in errors: {text}"
    );
}

// === Certificate reload ===

/// The certificate a fresh handshake is served now.
async fn served_now(
    setup: &ClientSetup<'_>,
    addr: SocketAddr,
    sni: &str,
) -> CertificateDer<'static> {
    handshake(setup, addr, sni)
        .await
        .expect("a handshake")
        .served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn certificates_rotate_under_load_without_a_failed_handshake_or_request() {
    const ROTATIONS: usize = 5;
    const CLIENTS: usize = 4;
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf("site-0", &["site.test"]).write(&certs, "site");
    let gateway = tokio::task::block_in_place(|| {
        TestGateway::start(&tls_config(
            "1.2",
            &certificate_toml(&cert, &key, ""),
            "[[routes]]\nname = \"ok\"\nprefix = \"/\"\nrespond = { body = \"ok\" }\n",
        ))
    });
    let addr = gateway.addr();
    let setup = Arc::new(ClientSetup::new(&ca).connector());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (connector, stop, ok, failed, failures) = (
            setup.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            failures.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = async {
                    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                    let name = ServerName::try_from("site.test").expect("name");
                    let stream = connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("handshake: {e}"))?;
                    let connected = Connected {
                        stream,
                        served: CertificateDer::from(Vec::new()),
                        alpn: None,
                    };
                    let answer = get_on(connected, "site.test", "/").await?;
                    if answer.status == 200 && answer.body == "ok" {
                        Ok(())
                    } else {
                        Err(format!("status {}", answer.status))
                    }
                };
                match tokio::time::timeout(Duration::from_secs(10), result).await {
                    Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(Err(error)) => {
                        failures.lock().expect("failures").push(error);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => {
                        failures.lock().expect("failures").push("timed out".into());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let probe = ClientSetup::new(&ca);
    let mut latencies = Vec::new();
    for rotation in 1..=ROTATIONS {
        let started = Instant::now();
        let next = ca.leaf(&format!("site-{rotation}"), &["site.test"]);
        next.replace(&certs, "site");
        let written = Instant::now();
        // Await the new certificate by polling handshakes, bounded.
        loop {
            if served_now(&probe, addr, "site.test").await == next.der {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "rotation {rotation}: the new certificate was not served within 5s; logs:\n{}",
                gateway.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(written.elapsed());
        // One write per second.
        if let Some(rest) = Duration::from_secs(1).checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("a load task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "rotation: {ok} requests on fresh TLS connections, {failed} failed; new certificate served after {latencies:?}"
    );
    assert_eq!(
        failed,
        0,
        "failures: {:?}",
        failures.lock().expect("failures")
    );
    assert!(ok >= 50, "the load generator made only {ok} requests");
    for (index, latency) in latencies.iter().enumerate() {
        assert!(
            *latency < Duration::from_secs(1),
            "rotation {}: served after {latency:?}",
            index + 1
        );
    }
    assert_eq!(
        log_lines(&gateway, "certificate reloaded").len(),
        ROTATIONS,
        "{}",
        gateway.logs()
    );
    assert!(
        log_lines(
            &gateway,
            "certificate rejected; the last good one keeps serving"
        )
        .is_empty()
    );
}

/// `GET /status` on the admin API.
async fn admin_status(gateway: &TestGateway) -> serde_json::Value {
    let url = format!("http://{}/status", gateway.admin_addr());
    common::get(&url).await.json()
}

#[tokio::test]
async fn a_broken_pair_keeps_the_last_good_one_and_shows_on_status() {
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let ca = Ca::new("test CA");
    let first = ca.leaf("site-1", &["site.test"]);
    let (cert, key) = first.write(&certs, "site");
    let gateway = TestGateway::start(&tls_config(
        "1.2",
        &certificate_toml(&cert, &key, ""),
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"ok\"\nprefix = \"/\"\nrespond = { body = \"ok\" }\n",
    ));
    let setup = ClientSetup::new(&ca);
    let addr = gateway.addr();
    let status = admin_status(&gateway).await;
    assert_eq!(
        status["certificates"][0]["serving"]["sha256"]
            .as_str()
            .map(str::len),
        Some(64),
        "{status}"
    );
    assert!(
        status["certificates"][0]["last_error"].is_null(),
        "{status}"
    );

    // A new certificate with someone else's key: refused, the first keeps serving.
    let second = ca.leaf("site-2", &["site.test"]);
    Leaf {
        key_pem: KeyPair::generate().expect("key").serialize_pem(),
        ..second
    }
    .replace(&certs, "site");
    assert!(
        gateway.wait_for_log("certificate rejected", Duration::from_secs(5)),
        "no rejection logged: {}",
        gateway.logs()
    );
    let rejected = log_lines(
        &gateway,
        "certificate rejected; the last good one keeps serving",
    );
    let reason = rejected[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("does not match"), "{rejected:?}");
    assert_eq!(served_now(&setup, addr, "site.test").await, first.der);
    let status = admin_status(&gateway).await;
    let entry = &status["certificates"][0];
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not match")),
        "{status}"
    );
    assert!(
        status["events"].as_array().is_some_and(|events| events
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("rejected")))),
        "{status}"
    );
    let answer = https_get(&setup, addr, "site.test", "/")
        .await
        .expect("still serving");
    assert_eq!(answer.status, 200);

    // A good pair again: swapped in, the error cleared.
    let third = ca.leaf("site-3", &["site.test"]);
    third.replace(&certs, "site");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_now(&setup, addr, "site.test").await != third.der {
        assert!(
            Instant::now() < deadline,
            "the good pair was not served: {}",
            gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = admin_status(&gateway).await;
    assert!(
        status["certificates"][0]["last_error"].is_null(),
        "{status}"
    );
}

#[tokio::test]
async fn a_kubernetes_style_symlink_swap_is_picked_up() {
    let dir = TempDir::new();
    let mount = dir.path().join("mount");
    let first_data = mount.join("..2026_01");
    std::fs::create_dir_all(&first_data).expect("data dir");
    let ca = Ca::new("test CA");
    let first = ca.leaf("site-1", &["site.test"]);
    first.write(&first_data, "tls");
    // mount/..data -> ..2026_01; mount/tls.pem -> ..data/tls.pem (as a kubelet lays out a secret)
    std::os::unix::fs::symlink("..2026_01", mount.join("..data")).expect("symlink");
    for file in ["tls.pem", "tls-key.pem"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), mount.join(file)).expect("symlink");
    }
    let gateway = TestGateway::start(&tls_config(
        "1.2",
        &certificate_toml(&mount.join("tls.pem"), &mount.join("tls-key.pem"), ""),
        "[[routes]]\nname = \"ok\"\nprefix = \"/\"\nrespond = { body = \"ok\" }\n",
    ));
    let setup = ClientSetup::new(&ca);
    assert_eq!(
        served_now(&setup, gateway.addr(), "site.test").await,
        first.der
    );

    let second = ca.leaf("site-2", &["site.test"]);
    let second_data = mount.join("..2026_02");
    std::fs::create_dir_all(&second_data).expect("data dir");
    second.write(&second_data, "tls");
    std::os::unix::fs::symlink("..2026_02", mount.join("..data_tmp")).expect("symlink");
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("swap");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_now(&setup, gateway.addr(), "site.test").await != second.der {
        assert!(
            Instant::now() < deadline,
            "the swapped pair was not served: {}",
            gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === Client certificates ===

const AUTH_CERT: &str = wasmgate_fixtures::FX_AUTH_CERT;

#[tokio::test]
async fn required_client_certificates_refuse_clients_without_one_and_reach_the_auth_plugin() {
    let dir = TempDir::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    clients.write(&dir.path().join("clients.pem"));
    let (cert, key) = ca
        .leaf("site", &["site.test", "open.test"])
        .write(dir.path(), "site");
    let (open_cert, open_key) = ca.leaf("open", &["open.test"]).write(dir.path(), "open");
    let upstream = TestUpstream::start(handler::echo);
    let ca_path = dir.path().join("clients.pem").display().to_string();
    let certificates = [
        certificate_toml(
            &cert,
            &key,
            &format!(
                "names = [\"site.test\"]\nclient-auth = \"required\"\nclient-ca = {ca_path:?}"
            ),
        ),
        certificate_toml(
            &open_cert,
            &open_key,
            &format!("client-auth = \"optional\"\nclient-ca = {ca_path:?}"),
        ),
    ]
    .concat();
    let rest = format!(
        "[upstreams.echo]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"echo\"\nprefix = \"/\"\nupstream = \"echo\"\nstages = [{{ plugin = \"auth-cert\" }}]\n",
        upstream.addr()
    );
    let gateway = TestGateway::start_with_plugins(
        &tls_config("1.2", &certificates, &rest),
        &[("auth-cert", Path::new(AUTH_CERT))],
    );
    let addr = gateway.addr();

    // Required, no certificate: no answer at all (the handshake, or the first read, fails).
    let setup = ClientSetup::new(&ca);
    let refused = https_get(&setup, addr, "site.test", "/").await;
    assert!(
        refused.is_err(),
        "a client without a certificate got {:?}",
        refused.map(|a| a.status)
    );
    assert_eq!(upstream.requests(), 0);

    // A certificate from another CA: refused too.
    let stranger = Ca::new("other CA").leaf("mallory", &[]);
    let mut setup = ClientSetup::new(&ca);
    setup.client_cert = Some(&stranger);
    assert!(https_get(&setup, addr, "site.test", "/").await.is_err());

    // A verified certificate: its subject, SANs and fingerprint reach the auth plugin.
    let alice = clients.leaf_with("alice", &[], |params| {
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.subject_alt_names.push(SanType::Rfc822Name(
            "alice@example.test".try_into().expect("e-mail"),
        ));
    });
    setup.client_cert = Some(&alice);
    let answer = https_get(&setup, addr, "site.test", "/who")
        .await
        .expect("an answer");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let headers = answer.json()["headers"].clone();
    let subject = headers["x-auth-subject"].as_str().unwrap_or_default();
    assert!(
        subject.contains("CN=alice") && subject.contains("O=Example"),
        "{headers}"
    );
    let expected_sha = wasmgate::tls::certs::sha256_hex(&alice.der);
    assert_eq!(
        headers["x-auth-claim-sha256"],
        expected_sha.as_str(),
        "{headers}"
    );
    assert_eq!(
        headers["x-auth-claim-sans"], "email:alice@example.test",
        "{headers}"
    );
    assert_eq!(headers["x-auth-claim-sni"], "site.test", "{headers}");

    // A connection made for open.test (no certificate) cannot carry requests for
    // site.test, whose entry requires one: 421.
    let setup = ClientSetup::new(&ca);
    let connected = handshake(&setup, addr, "open.test")
        .await
        .expect("open.test");
    let answer = get_on(connected, "site.test", "/")
        .await
        .expect("an answer");
    assert_eq!(answer.status, 421);
    assert_eq!(answer.json()["error"], "misdirected_request");
    assert_eq!(
        upstream.requests(),
        1,
        "only alice's request reached the upstream"
    );

    // Optional, no certificate: the handshake succeeds and the plugin decides (401).
    let setup = ClientSetup::new(&ca);
    let answer = https_get(&setup, addr, "open.test", "/")
        .await
        .expect("an answer");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["tls"], true);
}

// === Upstreams ===

/// A TLS upstream: hyper over rustls on `127.0.0.1:0`, answering like [`handler::echo`];
/// counts accepted connections. Stops with the test's runtime.
struct TlsUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl TlsUpstream {
    async fn start(leaf: &Leaf, client_ca: Option<&Ca>) -> Self {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider(),
                )
                .build()
                .expect("verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        let (chain, key) = leaf.client_auth();
        let config = builder.with_single_cert(chain, key).expect("server cert");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let service = hyper::service::service_fn(|request| async move {
                        Ok::<_, std::convert::Infallible>(handler::echo(request).await)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, connections }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstreams_are_verified_pooled_and_refused_with_a_502_when_verification_fails() {
    let dir = TempDir::new();
    let ca = Ca::new("upstream CA");
    ca.write(&dir.path().join("ca.pem"));
    Ca::new("unrelated CA").write(&dir.path().join("wrong-ca.pem"));
    let clients = Ca::new("gateway client CA");
    let (client_cert, client_key) = clients.leaf("gateway", &[]).write(dir.path(), "client");
    let plain = TlsUpstream::start(&ca.leaf("up", &["up.test"]), None).await;
    let mutual = TlsUpstream::start(&ca.leaf("up", &["up.test"]), Some(&clients)).await;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [upstreams.good]\ntargets = [\"https://{plain}\"]\ntls-server-name = \"up.test\"\ntls-ca = {ca:?}\n\n\
         [upstreams.mutual]\ntargets = [\"127.0.0.1:{mutual_port}\"]\ntls = true\ntls-server-name = \"up.test\"\ntls-ca = {ca:?}\ntls-client-cert = {cc:?}\ntls-client-key = {ck:?}\n\n\
         [upstreams.untrusted]\ntargets = [\"https://{plain}\"]\ntls-server-name = \"up.test\"\ntls-ca = {wrong:?}\n\n\
         [upstreams.misnamed]\ntargets = [\"https://{plain}\"]\ntls-server-name = \"other.test\"\ntls-ca = {ca:?}\n\n\
         [[routes]]\nname = \"good\"\nprefix = \"/good\"\nupstream = \"good\"\n\n\
         [[routes]]\nname = \"mutual\"\nprefix = \"/mutual\"\nupstream = \"mutual\"\n\n\
         [[routes]]\nname = \"untrusted\"\nprefix = \"/untrusted\"\nupstream = \"untrusted\"\n\n\
         [[routes]]\nname = \"misnamed\"\nprefix = \"/misnamed\"\nupstream = \"misnamed\"\n",
        plain = plain.addr,
        mutual_port = mutual.addr.port(),
        ca = path("ca.pem"),
        wrong = path("wrong-ca.pem"),
        cc = client_cert.display().to_string(),
        ck = client_key.display().to_string(),
    );
    let gateway = tokio::task::block_in_place(|| TestGateway::start(&config));
    let client = common::client();
    for _ in 0..5 {
        let reply = common::send(
            &client,
            common::request("GET", &gateway.url("/good/x"), &[], common::empty()),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["path"], "/good/x");
    }
    // Keep-alive: at most one connection per gateway worker thread for five requests.
    assert!(
        plain.connections.load(Ordering::SeqCst) < 5,
        "upstream TLS connections are not pooled"
    );

    let reply = common::get(&gateway.url("/mutual/y")).await;
    assert_eq!(reply.status, 200, "upstream mTLS: {}", reply.text());

    for (path, reason) in [
        ("/untrusted", "UnknownIssuer"),
        ("/misnamed", "not valid for name"),
    ] {
        let reply = common::get(&gateway.url(path)).await;
        assert_eq!(reply.status, 502, "{path}: {}", reply.text());
        assert_eq!(reply.json()["error"], "upstream_unreachable", "{path}");
        assert!(
            gateway.wait_for_log(reason, Duration::from_secs(5)),
            "{path}: the log must say why ({reason}):\n{}",
            gateway.logs()
        );
    }
}

#[tokio::test]
async fn nginx_as_a_tls_upstream() {
    let dir = TempDir::new();
    let ca = Ca::new("upstream CA");
    ca.write(&dir.path().join("ca.pem"));
    let (cert, key) = ca.leaf("nginx", &["nginx.test"]).write(dir.path(), "nginx");
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let locations = format!(
        "  listen 127.0.0.1:{tls_port} ssl;\n  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  location / {{ return 200 \"nginx over tls $ssl_protocol $ssl_server_name\"; }}\n",
        cert.display(),
        key.display()
    );
    let Some(_nginx) = common::Nginx::start("", &locations) else {
        assert!(std::env::var_os("CI").is_none(), "nginx is missing in CI");
        eprintln!("nginx is not installed; skipping");
        return;
    };
    let tls_addr: SocketAddr = (Ipv4Addr::LOCALHOST, tls_port).into();
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(tls_addr).is_ok()
    }));
    let config = format!(
        "[upstreams.nginx]\ntargets = [\"https://{tls_addr}\"]\ntls-server-name = \"nginx.test\"\ntls-ca = {:?}\n\n\
         [[routes]]\nname = \"nginx\"\nprefix = \"/\"\nupstream = \"nginx\"\n",
        dir.path().join("ca.pem").display().to_string()
    );
    let gateway = TestGateway::start(&config);
    let reply = common::get(&gateway.url("/")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .text()
            .starts_with("nginx over tls TLSv1.3 nginx.test"),
        "{}",
        reply.text()
    );
}

#[test]
fn an_ip_target_without_a_server_name_is_a_config_error() {
    let out = check(
        "[upstreams.u]\ntargets = [\"https://127.0.0.1:8443\"]\n\n[[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"u\"\n",
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("upstreams.u.tls-server-name") && out.stderr.contains("IP address"),
        "{}",
        out.stderr
    );
    let out = check(
        "[upstreams.u]\ntargets = [\"http://127.0.0.1:8080\"]\ntls-ca = \"ca.pem\"\n\n[[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"u\"\n",
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("plain HTTP"), "{}", out.stderr);
}

#[test]
fn the_example_config_passes_check_with_the_certificate_the_readme_command_makes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let command = readme
        .lines()
        .find(|line| line.starts_with("mkdir -p config/certs && openssl req"))
        .expect("the README's certificate command");
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
    std::fs::copy(
        root.join("config/tls.toml"),
        dir.path().join("config/tls.toml"),
    )
    .expect("copy");
    let made = std::process::Command::new("sh")
        .args(["-c", command])
        .current_dir(dir.path())
        .output()
        .expect("running the README's command");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = std::process::Command::new(common::wasmgate_bin())
        .args(["check", "--config"])
        .arg(dir.path().join("config/tls.toml"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("running wasmgate check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(": ok ("), "{text}");
}

#[test]
fn plugins_that_do_not_import_the_connection_interface_load_as_before() {
    let imports = |path: &str, name: &[u8]| {
        let bytes = std::fs::read(path).expect("a fixture");
        bytes.windows(name.len()).any(|window| window == name)
    };
    let interface = b"wasmgate:plugin/connection@0.1.0";
    // fx-auth-header never calls the interface, so (like every plugin built before it
    // existed) it does not import it; fx-auth-cert does.
    assert!(!imports(wasmgate_fixtures::FX_AUTH_HEADER, interface));
    assert!(imports(AUTH_CERT, interface));
    let config = "[[routes]]\nname = \"old\"\nprefix = \"/old\"\nrespond = { body = \"ok\" }\nstages = [{ plugin = \"old\" }]\n\n\
                  [[routes]]\nname = \"new\"\nprefix = \"/new\"\nrespond = { body = \"ok\" }\nstages = [{ plugin = \"new\" }]\n";
    let out = common::check_as(
        "gateway.toml",
        config,
        &[
            ("old", Path::new(wasmgate_fixtures::FX_AUTH_HEADER)),
            ("new", Path::new(AUTH_CERT)),
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("2 plugins"), "{out:?}");
}
