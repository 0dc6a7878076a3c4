//! The gateway against an attacker and a careless plugin author, through the real binary:
//! path normalization (compared with nginx on the same inputs), framing owned by the host,
//! bounded plugin output, plugin files that are not components, log forgery, and a compile
//! cache that only the gateway can write.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{RawResponse, TestGateway, TestUpstream, get, handler, raw_connect, raw_exchange};
use http::StatusCode;

const AUTH: &str = wasmgate_fixtures::FX_AUTH_HEADER;
const HOSTILE: &str = wasmgate_fixtures::FX_HOSTILE;
const PLAN_FLOOD: &str = wasmgate_fixtures::FX_PLAN_FLOOD;
const COUNTER_FLOOD: &str = wasmgate_fixtures::FX_COUNTER_FLOOD;
const TRANSFORM: &str = wasmgate_fixtures::FX_TRANSFORM;

/// One raw HTTP/1.1 GET of `target` (sent byte for byte, as an attacker would).
fn raw_get(addr: SocketAddr, target: &str) -> RawResponse {
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes())
}

// === path normalization ===

/// Inputs that cross from a public prefix to a protected one in some normalizing server.
const CROSSING: &[&str] = &[
    "/public/../admin/secret",
    "/public/%2e%2e/admin/secret",
    "/public/%2E%2E/admin/secret",
    "/public/.%2e/admin/secret",
    "/public/%2e./admin/secret",
    "/public/..%2fadmin/secret",
    "/public/..%2Fadmin/secret",
    "/public/..%5cadmin/secret",
    "/public/%2e%2e%2fadmin/secret",
    "/public/./../admin/secret",
    "/public//../../admin/secret",
    "//admin/secret",
    "/./admin/secret",
    "/%61dmin/secret",
    "/public/x/../../admin/secret",
    "/public/%252e%252e/admin/secret",
    "/public/ok",
    "/public/a/./b/../c",
];

/// nginx: `/admin/` refused with 401 (as an auth stage would), `/public/` proxied to
/// `upstream`.
fn start_nginx(upstream: SocketAddr) -> Option<common::Nginx> {
    common::Nginx::start(
        "",
        &format!(
            "  location /admin/ {{ return 401; }}\n  location /public/ {{ proxy_pass http://{upstream}; }}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_trick_reaches_a_protected_route_and_nginx_agrees() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        r#"
[upstreams.app]
targets = ["{up}"]
[[routes]]
name = "public"
prefix = "/public"
upstream = "app"
[[routes]]
name = "admin"
prefix = "/admin"
upstream = "app"
stages = [{{ plugin = "auth" }}]
"#,
        up = upstream.addr()
    );
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start_with_plugins(&config, &[("auth", Path::new(AUTH))])
    })
    .await
    .expect("gateway");
    let nginx = start_nginx(upstream.addr());
    assert!(
        nginx.is_some() || std::env::var_os("CI").is_none(),
        "nginx is required in CI (scripts/test.sh installs it)"
    );
    let addr = gateway.addr();
    let mut table = Vec::new();
    for &target in CROSSING {
        let ours = tokio::task::spawn_blocking(move || raw_get(addr, target))
            .await
            .expect("request");
        if ours.status == 200 {
            let seen = ours.json()["path"].as_str().unwrap_or_default().to_string();
            assert!(
                seen.starts_with("/public/") && !seen.contains("..") && !seen.contains("//"),
                "{target}: the upstream received {seen:?} from the public route"
            );
        } else {
            assert!(
                [400, 401].contains(&ours.status),
                "{target}: answered {}",
                ours.status
            );
            assert!(
                ours.header("content-type")
                    .is_some_and(|t| t.contains("json")),
                "{target}: a JSON answer"
            );
        }
        let theirs = match &nginx {
            Some(nginx) => {
                let nginx_addr = nginx.addr;
                Some(
                    tokio::task::spawn_blocking(move || raw_get(nginx_addr, target))
                        .await
                        .expect("nginx request")
                        .status,
                )
            }
            None => None,
        };
        if theirs == Some(401) {
            assert_ne!(
                ours.status, 200,
                "{target}: nginx routes it to the protected location; the gateway must not serve it"
            );
        }
        if theirs == Some(200) && ours.status == 401 {
            panic!("{target}: nginx serves it from the public location, the gateway asks for auth");
        }
        table.push(format!(
            "{target:40} gateway {} nginx {theirs:?}",
            ours.status
        ));
    }
    eprintln!("{}", table.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_policy_is_configurable() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
escaped-slashes = "keep"
merge-slashes = false
[upstreams.app]
targets = ["{up}"]
[[routes]]
name = "files"
prefix = "/files"
upstream = "app"
"#,
        up = upstream.addr()
    );
    let gateway = tokio::task::spawn_blocking(move || TestGateway::start(&config))
        .await
        .expect("gateway");
    let addr = gateway.addr();
    let reply = tokio::task::spawn_blocking(move || raw_get(addr, "/files/a%2fb//c/%7euser"))
        .await
        .expect("request");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/files/a%2Fb//c/~user");
    let bad = tokio::task::spawn_blocking(move || raw_get(addr, "/files/%zz"))
        .await
        .expect("request");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "bad_request");
}

// === framing ===

fn hostile_config(upstream: &TestUpstream) -> String {
    format!(
        r#"
[upstreams.app]
targets = ["{up}"]
max-idle-per-target = 1
[[routes]]
name = "hostile"
prefix = "/hostile"
upstream = "app"
stages = [{{ plugin = "hostile", limits = {{ deadline = "10s" }} }}]
"#,
        up = upstream.addr()
    )
}

async fn hostile_gateway(upstream: &TestUpstream) -> TestGateway {
    let config = hostile_config(upstream);
    tokio::task::spawn_blocking(move || {
        TestGateway::start_with_plugins(&config, &[("hostile", Path::new(HOSTILE))])
    })
    .await
    .expect("gateway")
}

/// Sends `targets` one after the other on ONE keep-alive connection and returns the answers.
async fn on_one_connection(addr: SocketAddr, requests: &[&str]) -> Vec<RawResponse> {
    let requests: Vec<String> = requests.iter().map(|r| r.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut stream = raw_connect(addr);
        requests
            .iter()
            .map(|request| {
                stream.write_all(request.as_bytes()).expect("write");
                RawResponse::read_from(&mut stream).expect("a whole, well-framed answer")
            })
            .collect()
    })
    .await
    .expect("exchange")
}

fn get_line(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_set_framing_never_reaches_the_upstream() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway = hostile_gateway(&upstream).await;
    // A body-less GET with a plugin-set Content-Length, then another request on the same
    // pooled upstream connection: with the length forwarded, the upstream would take the
    // second request as the first one's body and both would hang.
    for _ in 0..3 {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            get(&gateway.url("/hostile/cl-request")),
        )
        .await
        .expect("no smuggled body to wait for");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let seen = reply.json();
        assert!(seen["headers"]["content-length"].is_null(), "{seen}");
        assert!(seen["headers"]["transfer-encoding"].is_null(), "{seen}");
        assert_eq!(seen["body"], "");
    }
    assert_eq!(upstream.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_framed_from_its_body() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway = hostile_gateway(&upstream).await;
    let answers = on_one_connection(
        gateway.addr(),
        &[
            &get_line("/hostile/cl-response"),
            &get_line("/hostile/te-response"),
            &get_line("/hostile/answer-204"),
            &get_line("/hostile/answer-304"),
            &get_line("/hostile/answer-cl"),
            &get_line("/hostile/plain"),
        ],
    )
    .await;
    let [cl, te, no_content, not_modified, short, plain] = &answers[..] else {
        panic!("six answers");
    };
    assert_eq!((cl.status, cl.body.as_slice()), (200, &b"hello world"[..]));
    assert_eq!(cl.header("content-length"), Some("11"));
    assert_eq!((te.status, te.body.as_slice()), (200, &b"abc"[..]));
    assert_eq!(te.header("content-length"), Some("3"));
    assert_eq!(te.header("transfer-encoding"), None);
    assert_eq!(
        te.header("connection"),
        None,
        "plugins cannot close connections"
    );
    for answer in [no_content, not_modified] {
        assert_eq!(answer.header("content-length"), None, "{}", answer.status);
        assert!(answer.body.is_empty());
    }
    assert_eq!((no_content.status, not_modified.status), (204, 304));
    assert_eq!((short.status, short.body.as_slice()), (200, &b"short"[..]));
    assert_eq!(short.header("content-length"), Some("5"));
    assert_eq!(
        short.header("x-drop"),
        None,
        "fields named by `connection` are hop-by-hop"
    );
    assert_eq!(short.header("x-kept"), Some("1"));
    assert_eq!(
        plain.status, 200,
        "the connection survived every answer above"
    );
    // HEAD: the length the GET answer would have, and not one byte of body.
    let addr = gateway.addr();
    let head = tokio::task::spawn_blocking(move || {
        let mut stream = raw_connect(addr);
        stream
            .write_all(b"HEAD /hostile/answer-cl HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut all).expect("read to close");
        String::from_utf8(all).expect("text")
    })
    .await
    .expect("HEAD");
    let (head, rest) = head.split_once("\r\n\r\n").expect("a whole head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 5"),
        "{head}"
    );
    assert_eq!(rest, "", "no body after a HEAD answer");
}

// === bounded plugin output ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_from_plugins_fail_the_stage_with_json() {
    let upstream = TestUpstream::start(handler::echo);
    let gateway = hostile_gateway(&upstream).await;
    let answers = on_one_connection(
        gateway.addr(),
        &[
            &get_line("/hostile/headers-100k"),
            &get_line("/hostile/request-headers-20k"),
            &get_line("/hostile/big-header"),
            &get_line("/hostile/plain"),
        ],
    )
    .await;
    for answer in &answers[..3] {
        assert_eq!(answer.status, 500);
        assert_eq!(answer.json()["error"], "stage_failed");
    }
    assert_eq!(answers[3].status, 200);
    assert_eq!(upstream.requests(), 1, "no flood reached the upstream");
    let logs = gateway.logs();
    assert!(logs.contains("100000 header fields, over the limit of 100"));
    assert!(
        logs.contains("20001 header fields, over the limit of 100")
            || logs.contains("header fields, over the limit")
    );
    assert!(logs.contains("bytes of header fields, over the limit of 16384"));
}

fn big_bodies(
    len: usize,
) -> impl Fn(http::Request<hyper::body::Incoming>) -> std::future::Ready<http::Response<common::BoxBody>>
+ Send
+ Sync
+ 'static {
    move |_request| std::future::ready(http::Response::new(common::full(vec![b'x'; len])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_plans_and_results_are_bounded() {
    let upstream = TestUpstream::start(big_bodies(1 << 20));
    let config = format!(
        r#"
[plugins]
aggregate-bytes = "8MiB"
[upstreams.big]
targets = ["{up}"]
[[routes]]
name = "flood"
path = "/flood"
stages = [{{ plugin = "flood", upstreams = ["big"], limits = {{ memory = "256MiB", deadline = "10s" }}, config = {{ calls = 150000, upstream = "big", uri = "/" }} }}]
[[routes]]
name = "fan"
path = "/fan"
stages = [{{ plugin = "flood", upstreams = ["big"], config = {{ calls = 4, upstream = "big", uri = "/" }} }}]
[[routes]]
name = "wide"
path = "/wide"
stages = [{{ plugin = "flood", upstreams = ["big"], config = {{ calls = 32, upstream = "big", uri = "/" }} }}]
"#,
        up = upstream.addr()
    );
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start_with_plugins(&config, &[("flood", Path::new(PLAN_FLOOD))])
    })
    .await
    .expect("gateway");
    let before = gateway.rss_kib();
    let flood = get(&gateway.url("/flood")).await;
    assert_eq!(
        flood.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        flood.text()
    );
    assert_eq!(flood.json()["error"], "stage_failed");
    assert!(
        gateway.wait_for_log(
            "planned 150000 calls, over the limit of 32",
            Duration::from_secs(5)
        ),
        "the plan was refused for its length, not for memory: {}",
        gateway.logs()
    );
    assert_eq!(upstream.requests(), 0);
    let grown_mib = gateway.rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "refusing the plan cost {grown_mib} MiB");

    let fan = get(&gateway.url("/fan")).await;
    assert_eq!(fan.status, StatusCode::OK, "{}", fan.text());
    assert_eq!(fan.json()["bytes"], 4 << 20);

    let wide = get(&gateway.url("/wide")).await;
    assert_eq!(wide.status, StatusCode::BAD_GATEWAY, "{}", wide.text());
    assert_eq!(wide.json()["error"], "upstream_response_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_grow_the_counter_store_without_limit() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        r#"
[plugins]
counter-keys = 1000
[upstreams.app]
targets = ["{up}"]
[[routes]]
name = "flood"
prefix = "/"
upstream = "app"
stages = [{{ plugin = "keys", config = {{ keys_per_call = 100 }} }}]
"#,
        up = upstream.addr()
    );
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start_with_plugins(&config, &[("keys", Path::new(COUNTER_FLOOD))])
    })
    .await
    .expect("gateway");
    for _ in 0..10 {
        let reply = get(&gateway.url("/x")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let refused = get(&gateway.url("/x")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.text().contains("counter budget exhausted"),
        "the plugin got a clear error: {}",
        refused.text()
    );
}

// === plugin files and logs ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_text_cannot_forge_log_lines_in_either_format() {
    for format in ["json", "pretty"] {
        let upstream = TestUpstream::start(handler::echo);
        let config = hostile_config(&upstream);
        let gateway = tokio::task::spawn_blocking(move || {
            TestGateway::start_with_log_format(&config, &[("hostile", Path::new(HOSTILE))], format)
        })
        .await
        .expect("gateway");
        let forged_id = "abc status=500\tFORGED";
        let reply = common::send(
            &common::client(),
            common::request(
                "GET",
                &gateway.url("/hostile/log-forge"),
                &[("x-request-id", forged_id)],
                common::empty(),
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_ne!(reply.header("x-request-id"), Some(forged_id));
        assert!(gateway.wait_for_log("FORGED-STDOUT", Duration::from_secs(5)));
        assert!(gateway.wait_for_log("FORGED-LOG", Duration::from_secs(5)));
        let logs = gateway.logs();
        for line in logs.lines() {
            assert!(
                !line.trim_start().starts_with("FORGED"),
                "{format}: a plugin started a log line: {line:?}"
            );
            assert!(
                !line.contains('\x1b'),
                "{format}: an escape sequence reached the log"
            );
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not one JSON record ({e}): {line:?}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_components_are_refused_briefly_and_keep_the_last_good_version() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstreams.app]
targets = ["{up}"]
[[routes]]
name = "tagged"
prefix = "/"
upstream = "app"
stages = [{{ plugin = "tagged" }}]
"#,
        up = upstream.addr()
    );
    let gateway = tokio::task::spawn_blocking(move || {
        TestGateway::start_with_plugins(&config, &[("tagged", Path::new(TRANSFORM))])
    })
    .await
    .expect("gateway");
    let admin = gateway.admin_addr();
    let target = gateway.plugins_dir().join("tagged.wasm");
    let status = || async move { get(&format!("http://{admin}/status")).await };
    let reason = |status: &common::Reply| {
        status.json()["plugins"]
            .as_array()
            .and_then(|plugins| plugins.iter().find(|p| p["name"] == "tagged").cloned())
            .map(|p| p["last_error"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    /// What replaces the plugin, how, and the reason the gateway must give.
    type Replacement = (&'static str, Box<dyn Fn(&Path)>, &'static str);
    let replacements: Vec<Replacement> = vec![
        (
            "16 MiB of NUL bytes",
            Box::new(|p: &Path| std::fs::write(p, vec![0u8; 16 << 20]).expect("write")),
            "not a WebAssembly binary",
        ),
        (
            "a FIFO",
            Box::new(|p: &Path| {
                let ok = Command::new("mkfifo")
                    .arg(p)
                    .status()
                    .expect("mkfifo")
                    .success();
                assert!(ok);
            }),
            "not a regular file (a FIFO)",
        ),
        (
            "a directory",
            // A directory cannot be renamed over a file: it replaces the file in two steps.
            Box::new(|p: &Path| {
                let target = p.with_extension("wasm");
                std::fs::remove_file(&target).expect("rm");
                std::fs::create_dir(&target).expect("mkdir");
            }),
            "not a regular file (a directory)",
        ),
        (
            "a link to /dev/zero",
            Box::new(|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).expect("symlink")),
            "not a regular file (a device)",
        ),
    ];
    for (what, replace, expected) in replacements {
        // Put the good plugin back (the previous round left something else in its place)
        // and wait until it serves again with no error.
        let _ = std::fs::remove_file(&target);
        let _ = std::fs::remove_dir(&target);
        let good = target.with_extension("good");
        std::fs::copy(TRANSFORM, &good).expect("copy");
        std::fs::rename(&good, &target).expect("restore");
        let mut restored = false;
        for _ in 0..400 {
            let plugin = status().await.json()["plugins"]
                .as_array()
                .and_then(|plugins| plugins.iter().find(|p| p["name"] == "tagged").cloned())
                .unwrap_or_default();
            if plugin["loaded"] == true && plugin["last_error"].is_null() {
                restored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(restored, "{what}: the good plugin came back");
        let tmp = target.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        replace(&tmp);
        if std::fs::symlink_metadata(&tmp).is_ok() {
            std::fs::rename(&tmp, &target).expect("rename into place");
        }
        let mut last = String::new();
        let mut refused = false;
        for _ in 0..200 {
            last = reason(&status().await);
            if last.contains(expected) {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            refused,
            "{what}: expected {expected:?}, last error {last:?}"
        );
        assert!(last.len() < 2048, "{what}: a {}-byte error", last.len());
        let reply = get(&gateway.url("/x")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{what}: the last good version serves"
        );
        assert_eq!(reply.header("x-response-tag"), Some("v1"));
    }
    let longest = gateway.logs().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8192, "a {longest}-byte log line");
    assert!(status().await.body.len() < 64 << 10);
}

// === compile cache ===

#[test]
fn a_cache_inside_the_plugins_directory_is_a_config_error() {
    let output = common::check(
        "[plugins]\ndir = \"plugins\"\ncache-dir = \"plugins/.cache\"\n[upstreams.a]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"a\"\n",
    );
    assert_eq!(output.code, Some(1), "{}", output.stderr);
    assert!(
        output.stdout.contains("plugins.cache-dir") || output.stderr.contains("plugins.cache-dir"),
        "{output:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_exposed_cache_entries_are_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = TestUpstream::start(handler::echo);
    let cache = common::TempDir::new();
    let cache_dir = cache.path().join("compiled");
    let config = format!(
        r#"
[plugins]
cache-dir = {cache:?}
[upstreams.app]
targets = ["{up}"]
[[routes]]
name = "tagged"
prefix = "/"
upstream = "app"
stages = [{{ plugin = "tagged" }}]
"#,
        cache = cache_dir.display().to_string(),
        up = upstream.addr()
    );
    let start = |config: String| async move {
        tokio::task::spawn_blocking(move || {
            TestGateway::start_with_plugins(&config, &[("tagged", Path::new(TRANSFORM))])
        })
        .await
        .expect("gateway")
    };
    let first = start(config.clone()).await;
    assert_eq!(get(&first.url("/x")).await.status, StatusCode::OK);
    drop(first);
    let mode = std::fs::metadata(&cache_dir)
        .expect("cache dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let entries: Vec<_> = std::fs::read_dir(&cache_dir)
        .expect("entries")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "one compiled plugin: {entries:?}");
    // Someone who can write there (or copies an entry from elsewhere) swaps the code.
    let mut forged = std::fs::read(&entries[0]).expect("entry");
    let middle = forged.len() / 2;
    forged[middle] ^= 0xff;
    std::fs::write(&entries[0], &forged).expect("forge");
    let second = start(config.clone()).await;
    assert_eq!(get(&second.url("/x")).await.status, StatusCode::OK);
    assert!(second.wait_for_log("its tag does not verify", Duration::from_secs(5)));
    assert!(
        second.logs().contains("\"from_cache\":false"),
        "{}",
        second.logs()
    );
    drop(second);
    // A cache directory others may write to is not used at all.
    std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let third = start(config).await;
    assert_eq!(get(&third.url("/x")).await.status, StatusCode::OK);
    assert!(third.wait_for_log("the compiled-plugin cache is off", Duration::from_secs(5)));
}

// === found by fuzzing ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclosed_ip_literal_host_gets_an_answer() {
    let upstream = TestUpstream::start(handler::echo);
    let config = format!(
        "[upstreams.app]\ntargets = [\"{}\"]\n[[routes]]\nname = \"api\"\nhosts = [\"api.test\"]\nprefix = \"/\"\nupstream = \"app\"\n",
        upstream.addr()
    );
    let gateway = tokio::task::spawn_blocking(move || TestGateway::start(&config))
        .await
        .expect("gateway");
    let addr = gateway.addr();
    // `scripts/fuzz.sh router` found that a Host of `[` made the router slice past its end.
    for host in ["[", "[::1", "[nnhostsAz]n.n"] {
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = tokio::task::spawn_blocking(move || raw_exchange(addr, request.as_bytes()))
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(reply.status, 404, "{host}");
        assert_eq!(reply.json()["error"], "no_route");
    }
}
