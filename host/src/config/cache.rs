//! A route's `cache` key and the `[cache]` table: how much memory cached responses may
//! hold, how keys are made, and the freshness overrides. The stage that acts on it is
//! [`crate::pipeline::cache`]; the store is [`crate::cache`].

use std::time::Duration;

use http::header::HeaderName;
use toml::Spanned;

use super::Checker;
use super::raw::{RawCache, RawCacheTable};

/// Bytes all routes' cached responses may hold together, by default.
pub const DEFAULT_CACHE_TOTAL_BYTES: u64 = 256 << 20;
/// Bytes one route's cached responses may hold, by default.
pub const DEFAULT_CACHE_ROUTE_BYTES: u64 = 64 << 20;
/// Responses larger than this are not stored, by default.
pub const DEFAULT_CACHE_OBJECT_BYTES: u64 = 8 << 20;
/// How long a request waits for the response another request for its key is fetching.
pub const DEFAULT_COALESCE_WAIT: Duration = Duration::from_secs(5);
/// How long a key whose response could not be stored goes straight to the upstream.
pub const DEFAULT_HIT_FOR_PASS: Duration = Duration::from_secs(30);

/// A route's response cache, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes of this route's cached responses.
    pub max_bytes: u64,
    /// Larger responses are passed on, not stored (at most `max-bytes`).
    pub max_object_bytes: u64,
    /// Freshness of a storable response that states none; zero keeps RFC 9111's rules.
    pub default_ttl: Duration,
    /// The longest a response stays fresh, whatever it states.
    pub max_ttl: Option<Duration>,
    /// Request header fields that are part of the key, lower-case.
    pub key_headers: Vec<HeaderName>,
    /// Cookies that are part of the key.
    pub key_cookies: Vec<String>,
    /// How long a request waits for the response another request for its key is fetching.
    pub coalesce_wait: Duration,
    /// How long a key whose response could not be stored skips the cache.
    pub hit_for_pass: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_CACHE_ROUTE_BYTES,
            max_object_bytes: DEFAULT_CACHE_OBJECT_BYTES,
            default_ttl: Duration::ZERO,
            max_ttl: None,
            key_headers: Vec::new(),
            key_cookies: Vec::new(),
            coalesce_wait: DEFAULT_COALESCE_WAIT,
            hit_for_pass: DEFAULT_HIT_FOR_PASS,
        }
    }
}

/// `[cache]`, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStoreConfig {
    /// Bytes all routes' cached responses may hold together.
    pub max_bytes: u64,
}

impl Default for CacheStoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_CACHE_TOTAL_BYTES,
        }
    }
}

impl Checker<'_, '_> {
    /// Checks a route's `cache` (`key` is `routes[N].cache`); `None` when it is off or wrong.
    pub(super) fn cache(&mut self, key: &str, spanned: &Spanned<RawCache>) -> Option<CacheConfig> {
        let table = match spanned.get_ref() {
            RawCache::Enabled(false) => return None,
            RawCache::Enabled(true) => return Some(CacheConfig::default()),
            RawCache::Table(table) => table,
        };
        let RawCacheTable {
            max_bytes,
            max_object_bytes,
            default_ttl,
            max_ttl,
            key_headers,
            key_cookies,
            coalesce_wait,
            hit_for_pass,
        } = table;
        let defaults = CacheConfig::default();
        let mut clean = true;
        let mut config = CacheConfig {
            max_bytes: max_bytes.map_or(defaults.max_bytes, |b| b.0),
            // Left out, it is the default or the route's whole bound, whichever is smaller.
            max_object_bytes: max_object_bytes.map_or(
                defaults
                    .max_object_bytes
                    .min(max_bytes.map_or(defaults.max_bytes, |b| b.0)),
                |b| b.0,
            ),
            default_ttl: default_ttl.map_or(defaults.default_ttl, |d| d.0),
            max_ttl: max_ttl.map(|d| d.0),
            coalesce_wait: coalesce_wait.map_or(defaults.coalesce_wait, |d| d.0),
            hit_for_pass: hit_for_pass.map_or(defaults.hit_for_pass, |d| d.0),
            ..defaults
        };
        if config.max_object_bytes > config.max_bytes {
            self.report.error(
                spanned.span(),
                format!("{key}.max-object-bytes"),
                format!(
                    "{} is more than the route's `max-bytes` ({}): no such response could be stored",
                    config.max_object_bytes, config.max_bytes
                ),
            );
            clean = false;
        }
        if config.max_object_bytes > u64::from(u32::MAX) {
            self.report.error(
                spanned.span(),
                format!("{key}.max-object-bytes"),
                "must be below 4GiB",
            );
            clean = false;
        }
        for name in key_headers.iter().flatten() {
            match HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Ok(header) => config.key_headers.push(header),
                Err(_) => {
                    self.report.error(
                        name.span(),
                        format!("{key}.key-headers"),
                        format!("`{}` is not a header field name", name.get_ref()),
                    );
                    clean = false;
                }
            }
        }
        for name in key_cookies.iter().flatten() {
            let text = name.get_ref();
            let token = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if token {
                config.key_cookies.push(text.clone());
            } else {
                self.report.error(
                    name.span(),
                    format!("{key}.key-cookies"),
                    format!("`{text}` is not a cookie name"),
                );
                clean = false;
            }
        }
        clean.then_some(config)
    }
}
