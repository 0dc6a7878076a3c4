//! Route matching: host (exact, then `*.suffix` wildcards, then any host), path (via `matchit`)
//! and method. The router knows routes only as [`RouteKey`]s, so it depends on nothing
//! else in the crate; the config builds the keys.

use std::collections::HashMap;

use http::Method;

/// What the router needs of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey {
    /// The route's name, for conflict messages.
    pub name: String,
    /// Host patterns (`api.example.com`, `*.example.com`), lower-case; empty is any host.
    pub hosts: Vec<String>,
    /// Allowed methods; `None` is any method.
    pub methods: Option<Vec<Method>>,
    /// `matchit` path patterns, any of which selects the route.
    pub patterns: Vec<String>,
}

/// Finds the route for a request. Built once per config; cheap to share.
#[derive(Debug, Default)]
pub struct Router {
    /// Each route's allowed methods, by route index.
    methods: Vec<Option<Vec<Method>>>,
    exact_hosts: HashMap<String, PathTable>,
    /// `(".example.com", table)`, longest suffix first.
    wildcard_hosts: Vec<(String, PathTable)>,
    any_host: PathTable,
}

/// The outcome of matching a request.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch {
    /// A route matched; `params` are its path captures.
    Found {
        /// Index into the config's routes.
        route: usize,
        /// Path captures, in pattern order.
        params: Vec<(String, String)>,
    },
    /// A route's path matched but not its methods.
    MethodNotAllowed {
        /// The methods the matching routes allow.
        allow: Vec<Method>,
    },
    /// Nothing matched.
    NotFound,
}

/// Two routes that cannot both be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The route written first.
    pub first: String,
    /// The route written later.
    pub second: String,
    /// Why they conflict.
    pub reason: String,
}

/// Routes sharing one host set, by path pattern.
#[derive(Debug, Default)]
struct PathTable {
    paths: matchit::Router<usize>,
    /// Route indexes per matchit slot (routes on one pattern that differ by method).
    slots: Vec<Vec<usize>>,
    slot_of_pattern: HashMap<String, usize>,
}

impl PathTable {
    fn insert(&mut self, routes: &[RouteKey], index: usize) -> Result<(), Conflict> {
        let route = &routes[index];
        for pattern in route.patterns.iter().cloned() {
            if let Some(&slot) = self.slot_of_pattern.get(&pattern) {
                if let Some(&other) = self.slots[slot]
                    .iter()
                    .find(|&&other| methods_overlap(&routes[other], route))
                {
                    return Err(Conflict {
                        first: routes[other].name.clone(),
                        second: route.name.clone(),
                        reason: format!("both match `{pattern}` for the same methods and hosts"),
                    });
                }
                self.slots[slot].push(index);
                continue;
            }
            let slot = self.slots.len();
            if let Err(error) = self.paths.insert(pattern.as_str(), slot) {
                let first = match &error {
                    matchit::InsertError::Conflict { with } => self
                        .slot_of_pattern
                        .get(with)
                        .and_then(|&s| self.slots[s].first())
                        .map_or_else(|| with.clone(), |&i| routes[i].name.clone()),
                    _ => route.name.clone(),
                };
                let reason = match &error {
                    matchit::InsertError::Conflict { with } => format!(
                        "`{pattern}` and `{with}` match the same paths; use the same parameter names (and different methods) or different literal segments"
                    ),
                    other => format!("`{pattern}` is not a valid path pattern: {other}"),
                };
                return Err(Conflict {
                    first,
                    second: route.name.clone(),
                    reason,
                });
            }
            self.slots.push(vec![index]);
            self.slot_of_pattern.insert(pattern, slot);
        }
        Ok(())
    }

    fn lookup(&self, methods: &[Option<Vec<Method>>], method: &Method, path: &str) -> RouteMatch {
        let Ok(found) = self.paths.at(path) else {
            return RouteMatch::NotFound;
        };
        let candidates = &self.slots[*found.value];
        let chosen = candidates.iter().find(|&&i| match &methods[i] {
            None => true,
            Some(methods) => {
                methods.contains(method)
                    || (*method == Method::HEAD && methods.contains(&Method::GET))
            }
        });
        match chosen {
            Some(&route) => RouteMatch::Found {
                route,
                params: found
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            None => {
                let mut allow: Vec<Method> = candidates
                    .iter()
                    .flat_map(|&i| methods[i].iter().flatten().cloned())
                    .collect();
                if allow.contains(&Method::GET) {
                    allow.push(Method::HEAD);
                }
                allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                allow.dedup();
                RouteMatch::MethodNotAllowed { allow }
            }
        }
    }
}

fn methods_overlap(a: &RouteKey, b: &RouteKey) -> bool {
    match (&a.methods, &b.methods) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    }
}

impl Router {
    /// Builds the router; fails with every conflict between routes.
    pub fn new(routes: &[RouteKey]) -> Result<Self, Vec<Conflict>> {
        let mut router = Router {
            methods: routes.iter().map(|r| r.methods.clone()).collect(),
            ..Router::default()
        };
        let mut conflicts = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            if route.hosts.is_empty() {
                conflicts.extend(router.any_host.insert(routes, index).err());
            }
            for host in &route.hosts {
                conflicts.extend(router.table_for(host).insert(routes, index).err());
            }
        }
        conflicts.dedup();
        router
            .wildcard_hosts
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        if conflicts.is_empty() {
            Ok(router)
        } else {
            Err(conflicts)
        }
    }

    fn table_for(&mut self, host: &str) -> &mut PathTable {
        match host.strip_prefix('*') {
            Some(suffix) => {
                let position = match self.wildcard_hosts.iter().position(|(s, _)| s == suffix) {
                    Some(position) => position,
                    None => {
                        self.wildcard_hosts
                            .push((suffix.to_string(), PathTable::default()));
                        self.wildcard_hosts.len() - 1
                    }
                };
                &mut self.wildcard_hosts[position].1
            }
            None => self.exact_hosts.entry(host.to_string()).or_default(),
        }
    }

    /// Matches a request. `host` is the Host header or URI authority, with or without a port.
    pub fn lookup(&self, host: Option<&str>, method: &Method, path: &str) -> RouteMatch {
        // Hosts arrive lower-case almost always: copy only when one does not.
        let host = host.map(|h| {
            let bare = strip_port(h);
            if bare.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(bare.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(bare)
            }
        });
        let specific = host.as_deref().and_then(|host| {
            self.exact_hosts.get(host).or_else(|| {
                self.wildcard_hosts
                    .iter()
                    .find(|(suffix, _)| {
                        host.ends_with(suffix.as_str()) && host.len() > suffix.len()
                    })
                    .map(|(_, table)| table)
            })
        });
        let found = specific.map_or(RouteMatch::NotFound, |table| {
            table.lookup(&self.methods, method, path)
        });
        match found {
            RouteMatch::Found { .. } => found,
            other => match self.any_host.lookup(&self.methods, method, path) {
                RouteMatch::NotFound => other,
                fallback @ RouteMatch::Found { .. } => fallback,
                not_allowed @ RouteMatch::MethodNotAllowed { .. } => match other {
                    RouteMatch::MethodNotAllowed { .. } => other,
                    _ => not_allowed,
                },
            },
        }
    }
}

/// The host without its port: `[::1]:80` → `[::1]`, `a.test:80` → `a.test`. An unclosed
/// `[` (which no valid host has, but a client can send) stays as it is.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;

    const ROUTES: &str = r#"
[upstreams.a]
targets = ["127.0.0.1:1"]
[[routes]]
name = "users"
path = "/users/{id}"
methods = ["GET"]
upstream = "a"
[[routes]]
name = "files"
prefix = "/files"
upstream = "a"
[[routes]]
name = "api"
hosts = ["*.example.com"]
prefix = "/"
upstream = "a"
[[routes]]
name = "root"
path = "/"
upstream = "a"
"#;

    fn config() -> Config {
        Config::parse(std::path::Path::new("routes.toml"), ROUTES).expect("a valid config")
    }

    #[test]
    fn ports_come_off_hosts_and_broken_ip_literals_do_not_panic() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("a.test:80"), "a.test");
        assert_eq!(strip_port("a.test:x"), "a.test:x");
        // Found by `scripts/fuzz.sh router`: an unclosed `[` used to slice past the end.
        assert_eq!(strip_port("["), "[");
        assert_eq!(strip_port("[nnhostsAz]n.n"), "[nnhostsAz]");
    }

    proptest! {
        /// Any host, method and path either matches a route whose pattern covers the path,
        /// or does not match; lookups never panic.
        #[test]
        fn lookups_match_only_covering_routes(
            host in proptest::option::of("[a-z.]{0,20}(:[0-9]{1,5})?"),
            method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::HEAD)],
            path in "/[a-z/{}%.*]{0,24}",
        ) {
            let config = config();
            let router = Router::new(&config.route_keys()).expect("no conflicts");
            if let RouteMatch::Found { route, params } = router.lookup(host.as_deref(), &method, &path) {
                match config.routes[route].name.as_str() {
                    "users" => {
                        prop_assert!(path.starts_with("/users/"));
                        prop_assert_eq!(params.len(), 1);
                    }
                    "files" => prop_assert!(path == "/files" || path.starts_with("/files/")),
                    "root" => prop_assert_eq!(path.as_str(), "/"),
                    "api" => prop_assert!(host.is_some_and(|h| h.contains(".example.com"))),
                    other => prop_assert!(false, "unknown route {}", other),
                }
            }
        }

        /// Config text, valid or damaged, parses or fails with diagnostics; never panics.
        #[test]
        fn damaged_configs_are_diagnosed_not_fatal(
            cut in 0..ROUTES.len(),
            junk in "\\PC{0,12}",
        ) {
            let mut text = ROUTES.to_string();
            let at = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text.insert_str(at, &junk);
            let _ = Config::parse(std::path::Path::new("damaged.toml"), &text);
        }
    }
}
