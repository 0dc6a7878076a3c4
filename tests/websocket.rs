//! WebSocket (HTTP/1.1 `Upgrade`) pass-through, end to end: the real gateway process
//! between a WebSocket server and WebSocket clients from PyPI's `websockets` library
//! (`tests/websocket/upstream.py`, `tests/websocket/client.py`, run with the Python of the
//! tools venv that `scripts/test.sh` fills: `${WASMGATE_TOOLS:-~/.cache/wasmgate-tools}/venv`).
//!
//! Covered: echo of text and binary messages, a fragmented and a 16 MiB message, ping/pong,
//! close codes both ways, 200 sockets at once, an auth stage refusing the handshake (the
//! upstream sees nothing) and a rate-limit stage counting handshakes, keep-alive after a
//! refused handshake, routes that refuse or cannot upgrade (and HTTP/2, which has no
//! `Upgrade`), the tunnel's idle timeout and maximum lifetime, the connection timeouts
//! leaving a quiet tunnel alone, shutdown closing tunnels after the drain period, wss
//! clients through a TLS listener to a TLS upstream, and the access-log line and metrics of
//! a closed tunnel.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestGateway, TestUpstream, handler, wait_until};
use serde_json::{Value, json};

/// The `websockets` release the tests are written against (`scripts/test.sh` installs it).
const WEBSOCKETS: &str = "websockets==17.4";

/// The tools venv's Python, with `websockets`.
fn python() -> PathBuf {
    common::tools_python("websockets", WEBSOCKETS)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/websocket/{name}"))
}

/// `tests/websocket/upstream.py` running on a free port, with the events it reports.
struct WsUpstream {
    child: Child,
    port: u16,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl WsUpstream {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with extra environment variables (`WS_TLS_CERT`, `WS_TLS_KEY`: speak TLS).
    fn start_with(env: &[(&str, &std::path::Path)]) -> Self {
        let mut child = Command::new(python())
            .arg(script("upstream.py"))
            .envs(env.iter().map(|(name, value)| (*name, *value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the WebSocket upstream");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .expect("the upstream's `listening PORT` line");
        let port = first
            .strip_prefix("listening ")
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str(&line)
                    && tx.send(event).is_err()
                {
                    break;
                }
            }
        });
        Self {
            child,
            port,
            events,
            seen: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits for an event that `matches`, keeping every event seen; panics after 30 s.
    fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|event| matches(event)) {
            return found.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if matches(&event) {
                        return event;
                    }
                }
                Err(_) => panic!("the upstream never reported {what}; it saw {:?}", self.seen),
            }
        }
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `client.py` scenario against `url` with extra handshake `headers`; returns
/// whether it went as expected and what it printed.
fn run_client(url: &str, scenario: &[&str], headers: &Value) -> (bool, Value) {
    run_client_env(url, scenario, headers, &[])
}

/// [`run_client`] with extra environment variables (`WS_CA`: the CA of a `wss://` gateway).
fn run_client_env(
    url: &str,
    scenario: &[&str],
    headers: &Value,
    env: &[(&str, &std::path::Path)],
) -> (bool, Value) {
    let output = Command::new(python())
        .arg(script("client.py"))
        .arg(url)
        .args(scenario)
        .env("WS_HEADERS", headers.to_string())
        .envs(env.iter().map(|(name, value)| (*name, *value)))
        .stderr(Stdio::inherit())
        .output()
        .expect("running the WebSocket client");
    let text = String::from_utf8_lossy(&output.stdout);
    let result = serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("client printed {text:?} for {scenario:?}"));
    (output.status.success(), result)
}

/// A scenario that must succeed.
fn client_ok(url: &str, scenario: &[&str]) -> Value {
    client_ok_with(url, scenario, &json!({}))
}

fn client_ok_with(url: &str, scenario: &[&str], headers: &Value) -> Value {
    let (ok, result) = run_client(url, scenario, headers);
    assert!(ok, "scenario {scenario:?} on {url} failed: {result}");
    result
}

/// A gateway whose `/ws` routes go to `upstream`: `/ws/plain` (with compression and the
/// cache on, which must leave handshakes and `101`s alone), `/ws/auth` behind the
/// `fx-auth-header` stage, `/ws/limited` behind `fx-ratelimit` (2 handshakes), `/ws/refuse` with `upgrade = []`, `/ws/short` with `short` added
/// (tunnel limits), plus a `respond` route and a plain HTTP route to `http`; `server` is
/// added to `[server]`.
fn gateway(upstream: SocketAddr, http: SocketAddr, server: &str, short: &str) -> TestGateway {
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
{server}

[admin]
listen = "127.0.0.1:0"

[upstreams.ws]
targets = ["{upstream}"]

[upstreams.http]
targets = ["{http}"]

[[routes]]
name = "ws-plain"
prefix = "/ws/plain"
upstream = "ws"
strip-prefix = "/ws/plain"
compress = true
cache = true

[[routes]]
name = "ws-auth"
prefix = "/ws/auth"
upstream = "ws"
strip-prefix = "/ws/auth"
stages = [{{ plugin = "auth" }}]

[[routes]]
name = "ws-limited"
prefix = "/ws/limited"
upstream = "ws"
strip-prefix = "/ws/limited"
stages = [{{ plugin = "ratelimit", config = {{ limit = 2, window_ms = 600000 }} }}]

[[routes]]
name = "ws-refuse"
prefix = "/ws/refuse"
upstream = "ws"
strip-prefix = "/ws/refuse"
upgrade = []

[[routes]]
name = "ws-short"
prefix = "/ws/short"
upstream = "ws"
strip-prefix = "/ws/short"
{short}

[[routes]]
name = "static"
prefix = "/static"
respond = {{ status = 200, body = "static answer" }}

[[routes]]
name = "http"
prefix = "/http"
upstream = "http"
"#
    );
    TestGateway::start_with_plugins(
        &config,
        &[
            ("auth", wasmgate_fixtures::FX_AUTH_HEADER.as_ref()),
            ("ratelimit", wasmgate_fixtures::FX_RATELIMIT.as_ref()),
        ],
    )
}

fn ws_url(gateway: &TestGateway, path: &str) -> String {
    format!("ws://{}{path}", gateway.addr())
}

/// The access-log records so far (their fields, however the formatter nests them).
fn access_lines(gateway: &TestGateway) -> Vec<Value> {
    gateway
        .log_records()
        .into_iter()
        .filter(|record| record["target"] == "wasmgate::access")
        .map(|record| match record.get("fields") {
            Some(fields) if fields.is_object() => fields.clone(),
            _ => record,
        })
        .collect()
}

/// Waits for the access-log line of a tunnel on `route` that closed for `reason`.
fn tunnel_line(gateway: &TestGateway, route: &str, reason: &str) -> Value {
    let find = || {
        access_lines(gateway)
            .into_iter()
            .find(|line| line["route"] == route && line["tunnel_close"] == reason)
    };
    assert!(
        wait_until(Duration::from_secs(30), || find().is_some()),
        "no access-log line for a tunnel on {route} closed by {reason}; logs:\n{}",
        gateway.logs()
    );
    find().expect("found")
}

fn http_upstream() -> TestUpstream {
    TestUpstream::start(handler::echo)
}

#[test]
fn messages_of_every_shape_pass_both_ways() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    let gateway = gateway(upstream.addr(), http.addr(), "", "");
    let url = ws_url(&gateway, "/ws/plain/echo");

    let echoed = client_ok(&url, &["echo"]);
    assert_eq!(echoed["text"], "hello, tunnel");
    let fragmented = client_ok(&url, &["fragmented"]);
    assert_eq!(fragmented["length"], 3500);
    let big = client_ok(&url, &["big"]);
    assert_eq!(big["bytes"], 16 << 20);
    let ping = client_ok(&url, &["ping"]);
    assert_eq!(ping["pong"], true);

    // The upstream saw the handshake with the upgrade fields and the forwarding ones.
    let open = upstream.wait_for("an opened socket", |e| e["event"] == "open");
    let headers = &open["headers"];
    assert_eq!(headers["upgrade"], "websocket", "{open}");
    assert!(
        headers["connection"]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{open}"
    );
    assert!(headers["sec-websocket-key"].is_string(), "{open}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{open}");
    assert_eq!(open["path"], "/echo");

    // The 16 MiB message crossed the tunnel both ways, and the line says so.
    let lines = access_lines(&gateway);
    let biggest = wait_until(Duration::from_secs(30), || {
        access_lines(&gateway).iter().any(|line| {
            line["tunnel_client_bytes"].as_u64().unwrap_or(0) > 16 << 20
                && line["tunnel_upstream_bytes"].as_u64().unwrap_or(0) > 16 << 20
        })
    });
    assert!(biggest, "no line for the 16 MiB tunnel: {lines:?}");
}

#[test]
fn close_codes_reach_the_other_side_and_the_access_log_records_the_close() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    let gateway = gateway(upstream.addr(), http.addr(), "", "");

    // The client closes with 4001: the upstream sees 4001, the client gets it echoed.
    let closed = client_ok(
        &ws_url(&gateway, "/ws/plain/echo?close"),
        &["close", "4001"],
    );
    assert_eq!(closed["received"], 4001);
    let seen = upstream.wait_for("the client's close", |e| {
        e["event"] == "closed" && e["path"] == "/echo?close"
    });
    assert_eq!(seen["code"], 4001, "{seen}");
    assert_eq!(seen["reason"], "client bye", "{seen}");

    // At the TCP level the upstream ends a WebSocket: it closes first after the close
    // handshake, whoever began it.
    let line = tunnel_line(&gateway, "ws-plain", "upstream_closed");
    assert_eq!(line["status"], 101, "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["path"], "/ws/plain/echo", "{line}");
    assert_eq!(line["upstream"], "ws", "{line}");
    assert!(line["tunnel_client_bytes"].as_u64().unwrap() > 0, "{line}");
    assert!(
        line["tunnel_upstream_bytes"].as_u64().unwrap() > 0,
        "{line}"
    );
    assert!(line["tunnel_ms"].as_f64().is_some(), "{line}");

    // The upstream closes with 4002: the client sees 4002.
    let closed = client_ok(
        &ws_url(&gateway, "/ws/plain/close-4002"),
        &["closed-by-upstream"],
    );
    assert_eq!(closed, json!({"code": 4002, "reason": "upstream bye"}));

    // A client that goes away without a close frame: the upstream sees an abnormal close.
    client_ok(&ws_url(&gateway, "/ws/plain/echo?drop"), &["drop"]);
    let seen = upstream.wait_for("the dropped socket's close", |e| {
        e["event"] == "closed" && e["path"] == "/echo?drop"
    });
    assert_eq!(seen["code"], 1006, "{seen}");
    tunnel_line(&gateway, "ws-plain", "client_closed");

    // Metrics: nothing open any more, the closes counted by reason.
    let metrics = scrape(&gateway);
    assert!(
        metrics.contains(r#"wasmgate_tunnels_open{route="ws-plain"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"wasmgate_tunnels_closed_total{route="ws-plain",reason="upstream_closed"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"wasmgate_tunnels_closed_total{route="ws-plain",reason="client_closed"} 1"#
        ),
        "{metrics}"
    );
}

fn scrape(gateway: &TestGateway) -> String {
    let admin = gateway.admin_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async { common::get(&format!("http://{admin}/metrics")).await.text() })
}

/// A JSON answer of the admin API.
fn admin_get(gateway: &TestGateway, path: &str) -> Value {
    let admin = gateway.admin_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async { common::get(&format!("http://{admin}{path}")).await.json() })
}

#[test]
fn two_hundred_sockets_echo_at_once() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    let gateway = gateway(upstream.addr(), http.addr(), "", "");
    let result = client_ok(&ws_url(&gateway, "/ws/plain/echo"), &["many", "200"]);
    assert_eq!(result["sockets"], 200);
    // Each socket had its own tunnel, and each tunnel its own line.
    for index in [0, 199] {
        let path = format!("/echo?socket={index}");
        upstream.wait_for(&format!("the close of {path}"), |e| {
            e["event"] == "closed" && e["path"] == path.as_str()
        });
    }
    let all_logged = wait_until(Duration::from_secs(30), || {
        access_lines(&gateway)
            .iter()
            .filter(|line| line["status"] == 101 && line["tunnel_close"].is_string())
            .count()
            == 200
    });
    assert!(
        all_logged,
        "200 tunnel lines expected; logs:\n{}",
        gateway.logs()
    );
}

#[test]
fn a_refusing_auth_stage_answers_the_handshake_and_the_upstream_sees_nothing() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    let gateway = gateway(upstream.addr(), http.addr(), "", "");

    let (ok, refused) = run_client(
        &ws_url(&gateway, "/ws/auth/echo?refused"),
        &["refused"],
        &json!({}),
    );
    assert!(ok, "{refused}");
    assert_eq!(refused["status"], 401, "{refused}");
    assert_eq!(refused["body"], r#"{"error":"unauthorized"}"#, "{refused}");
    assert_eq!(
        refused["headers"]["www-authenticate"], "Bearer",
        "{refused}"
    );

    // With the header the stage wants, the same route upgrades, and the upstream learns who.
    let echoed = client_ok_with(
        &ws_url(&gateway, "/ws/auth/echo?allowed"),
        &["echo"],
        &json!({"x-user": "alice"}),
    );
    assert_eq!(echoed["text"], "hello, tunnel");
    let open = upstream.wait_for("the allowed handshake", |e| {
        e["event"] == "open" && e["path"] == "/echo?allowed"
    });
    assert_eq!(open["headers"]["x-auth-subject"], "alice", "{open}");
    // The refused handshake, made before, never reached the upstream.
    assert!(
        !upstream.seen.iter().any(|e| e["path"] == "/echo?refused"),
        "{:?}",
        upstream.seen
    );
    let refused_line = access_lines(&gateway)
        .into_iter()
        .find(|line| line["route"] == "ws-auth" && line["status"] == 401)
        .expect("a line for the refused handshake");
    assert_eq!(refused_line["upstream"], "", "{refused_line}");
    assert!(refused_line.get("tunnel_close").is_none(), "{refused_line}");

    // After a refused handshake the connection goes on as plain HTTP/1.1 keep-alive.
    let kept = client_ok(
        &format!("http://{}", gateway.addr()),
        &["keepalive-after-refusal", "/ws/auth/echo", "/http/after"],
    );
    assert_eq!(kept["statuses"], json!([401, 200]), "{kept}");
    assert_eq!(kept["same_connection"], true, "{kept}");
}

#[test]
fn routes_that_do_not_upgrade_answer_as_plain_http() {
    let upstream = WsUpstream::start();
    let http = http_upstream();
    let gateway = gateway(upstream.addr(), http.addr(), "", "");

    // `upgrade = []`: the upstream gets a plain GET (no Upgrade) and its refusal comes back.
    let refused = client_ok(&ws_url(&gateway, "/ws/refuse/echo"), &["refused"]);
    assert_eq!(refused["status"], 426, "{refused}");
    // A `respond` route answers as it always does; nothing switches.
    let answered = client_ok(&ws_url(&gateway, "/static/socket"), &["refused"]);
    assert_eq!(answered["status"], 200, "{answered}");
    assert_eq!(answered["body"], "static answer", "{answered}");
    // A protocol the route does not list is not offered upstream: an echoing HTTP upstream
    // shows the request without `Upgrade`.
    let echoed = client_ok(
        &format!("http://{}", gateway.addr()),
        &["upgrade-to", "/http/other", "not-websocket"],
    );
    assert_eq!(echoed["status"], 200, "{echoed}");
    assert!(
        echoed["body"]["headers"].get("upgrade").is_none(),
        "{echoed}"
    );
    // HTTP/2 has no `Upgrade` (and extended CONNECT is not offered): a request to the
    // WebSocket route over HTTP/2 is a plain request, which the upstream refuses.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let over_h2 = runtime.block_on(common::send(
        &common::h2_client(),
        common::request(
            "GET",
            &gateway.url("/ws/plain/echo?h2"),
            &[],
            common::empty(),
        ),
    ));
    assert_eq!(over_h2.status, 426, "{over_h2:?}");
    assert!(
        !upstream.seen.iter().any(|e| e["event"] == "open"),
        "{:?}",
        upstream.seen
    );
}

#[test]
fn a_silent_tunnel_closes_at_the_idle_timeout_and_a_long_one_at_its_lifetime() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    let gateway = gateway(
        upstream.addr(),
        http.addr(),
        "",
        "tunnel-idle-timeout = \"1s\"\ntunnel-max-lifetime = \"3s\"",
    );
    let closed = client_ok(&ws_url(&gateway, "/ws/short/silent?idle"), &["wait-close"]);
    // The gateway closed the connection (no close frame: abnormal closure for the client).
    assert_eq!(closed["code"], Value::Null, "{closed}");
    let waited = closed["seconds"].as_f64().unwrap();
    assert!((0.9..2.9).contains(&waited), "closed after {waited} s");
    upstream.wait_for("the upstream side closing", |e| {
        e["event"] == "closed" && e["path"] == "/silent?idle"
    });
    let line = tunnel_line(&gateway, "ws-short", "idle_timeout");
    assert_eq!(line["tunnel_client_bytes"], 0, "{line}");

    // Pings every half second keep it from idling; the lifetime ends it.
    let closed = client_ok(
        &ws_url(&gateway, "/ws/short/echo?lifetime"),
        &["keep-pinging", "0.5"],
    );
    let waited = closed["seconds"].as_f64().unwrap();
    assert!((2.9..6.0).contains(&waited), "closed after {waited} s");
    let line = tunnel_line(&gateway, "ws-short", "max_lifetime");
    assert!(line["tunnel_client_bytes"].as_u64().unwrap() > 0, "{line}");
}

#[test]
fn connection_timeouts_leave_a_quiet_tunnel_alone() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    // A tunnel silent for longer than both connection timeouts is still open, and frames
    // after the silence are not taken for a request head.
    let gateway = gateway(
        upstream.addr(),
        http.addr(),
        "header-read-timeout = \"1s\"\nidle-timeout = \"1s\"",
        "",
    );
    let echoed = client_ok(
        &ws_url(&gateway, "/ws/plain/echo?quiet"),
        &["quiet-echo", "2.5"],
    );
    assert_eq!(echoed["text"], "after the silence");
    upstream.wait_for("the quiet socket's close", |e| {
        e["event"] == "closed" && e["path"] == "/echo?quiet"
    });
    tunnel_line(&gateway, "ws-plain", "upstream_closed");
}

#[test]
fn shutdown_closes_open_tunnels_after_the_drain_period() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    let mut gateway = gateway(upstream.addr(), http.addr(), "shutdown-grace = \"1s\"", "");
    let url = ws_url(&gateway, "/ws/plain/silent?shutdown");
    let client = std::thread::spawn(move || client_ok(&url, &["wait-close"]));
    upstream.wait_for("the tunnel opening", |e| {
        e["event"] == "open" && e["path"] == "/silent?shutdown"
    });
    // The open tunnel counts as a request in flight on its target (least-request balancing
    // spreads long-lived sockets).
    let status = admin_get(&gateway, "/status");
    let targets = status["upstreams"]
        .as_array()
        .and_then(|all| all.iter().find(|u| u["name"] == "ws"))
        .map(|ws| ws["targets"].clone())
        .unwrap_or_else(|| panic!("no upstream ws in {status}"));
    assert_eq!(targets[0]["in_flight"], 1, "{targets}");
    let signalled = Instant::now();
    gateway.signal_term();
    let closed = client.join().expect("client thread");
    assert_eq!(closed["code"], Value::Null, "{closed}");
    let status = gateway.wait_exit(Duration::from_secs(30));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "exit after {took:?}"
    );
    assert!(status.success(), "{status:?}");
    // The tunnel outlived the drain period, which the gateway reports.
    assert!(
        gateway.logs().contains("grace period over"),
        "{}",
        gateway.logs()
    );
    tunnel_line(&gateway, "ws-plain", "shutdown");
}

#[test]
fn a_rate_limit_stage_counts_handshakes_and_refuses_past_its_limit() {
    let mut upstream = WsUpstream::start();
    let http = http_upstream();
    let gateway = gateway(upstream.addr(), http.addr(), "", "");
    for turn in 0..2 {
        let echoed = client_ok(
            &ws_url(&gateway, &format!("/ws/limited/echo?turn={turn}")),
            &["echo"],
        );
        assert_eq!(echoed["text"], "hello, tunnel");
    }
    let refused = client_ok(&ws_url(&gateway, "/ws/limited/echo?turn=2"), &["refused"]);
    assert_eq!(refused["status"], 429, "{refused}");
    assert!(refused["headers"]["retry-after"].is_string(), "{refused}");
    // The two allowed handshakes reached the upstream; the refused one did not.
    upstream.wait_for("the second socket", |e| {
        e["event"] == "open" && e["path"] == "/echo?turn=1"
    });
    let after = client_ok(&ws_url(&gateway, "/ws/plain/echo?marker"), &["echo"]);
    assert_eq!(after["text"], "hello, tunnel");
    upstream.wait_for("the marker socket", |e| {
        e["event"] == "open" && e["path"] == "/echo?marker"
    });
    assert!(
        !upstream.seen.iter().any(|e| e["path"] == "/echo?turn=2"),
        "{:?}",
        upstream.seen
    );
}

#[test]
fn wss_clients_reach_a_tls_upstream_over_verified_tls_both_sides() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = common::TempDir::new();
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "websocket test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    // One leaf for the upstream (`up.test`), one for the gateway's listener (localhost).
    let leaf = |names: Vec<String>, name: &str| {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        for san in names {
            params.subject_alt_names.push(match san.parse() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(san.try_into().expect("a DNS name")),
            });
        }
        let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
        let (cert_path, key_path) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("writing a certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("writing a key");
        (cert_path, key_path)
    };
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("writing the CA");
    let (up_cert, up_key) = leaf(vec!["up.test".into()], "up");
    let (gw_cert, gw_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "gateway");

    let mut upstream = WsUpstream::start_with(&[
        ("WS_TLS_CERT", up_cert.as_path()),
        ("WS_TLS_KEY", up_key.as_path()),
    ]);
    let config = format!(
        r#"
[server]
listen = []

[[listeners]]
address = "127.0.0.1:0"

[[listeners.certificates]]
cert = {gw_cert:?}
key = {gw_key:?}

[upstreams.wss]
targets = ["{upstream}"]
tls = true
tls-server-name = "up.test"
tls-ca = {ca:?}

[[routes]]
name = "wss"
prefix = "/"
upstream = "wss"
"#,
        gw_cert = gw_cert.display().to_string(),
        gw_key = gw_key.display().to_string(),
        upstream = upstream.addr(),
        ca = ca_path.display().to_string(),
    );
    let gateway = TestGateway::start(&config);
    let url = format!("wss://{}/echo?tls", gateway.addr());
    let env = [("WS_CA", ca_path.as_path())];
    for scenario in [&["echo"][..], &["big"], &["ping"]] {
        let (ok, result) = run_client_env(&url, scenario, &json!({}), &env);
        assert!(ok, "{scenario:?} over wss: {result}");
    }
    let open = upstream.wait_for("the TLS socket", |e| {
        e["event"] == "open" && e["path"] == "/echo?tls"
    });
    assert_eq!(open["headers"]["x-forwarded-proto"], "https", "{open}");
    let line = tunnel_line(&gateway, "wss", "upstream_closed");
    assert_eq!(line["tls"], true, "{line}");
}
