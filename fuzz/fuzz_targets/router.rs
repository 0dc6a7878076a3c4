//! Routing: any host, method and path against a fixed route table never panics, and a
//! match always names a route whose pattern covers the path.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmgate::config::Config;
use wasmgate::router::{RouteMatch, Router};

const ROUTES: &str = r#"
[upstreams.a]
targets = ["127.0.0.1:1"]
[[routes]]
name = "users"
path = "/users/{id}/orders/{order}"
methods = ["GET", "DELETE"]
upstream = "a"
[[routes]]
name = "files"
prefix = "/files"
upstream = "a"
[[routes]]
name = "catch"
path = "/static/{*rest}"
upstream = "a"
[[routes]]
name = "tenant"
hosts = ["*.example.com", "api.test"]
prefix = "/"
upstream = "a"
"#;

fn table() -> &'static (Config, Router) {
    static TABLE: OnceLock<(Config, Router)> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = Config::parse(std::path::Path::new("routes.toml"), ROUTES).expect("valid");
        let router = Router::new(&config.route_keys()).expect("no conflicts");
        (config, router)
    })
}

fuzz_target!(|input: (&str, &[u8], &str)| {
    let (host, method, path) = input;
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let (config, router) = table();
    let host = (!host.is_empty()).then_some(host);
    if let RouteMatch::Found { route, .. } = router.lookup(host, &method, path) {
        match config.routes[route].name.as_str() {
            "users" => assert!(path.starts_with("/users/")),
            "files" => assert!(path.starts_with("/files")),
            "catch" => assert!(path.starts_with("/static/")),
            "tenant" => assert!(host.is_some()),
            other => panic!("unknown route {other}"),
        }
    }
});
