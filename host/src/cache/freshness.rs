//! What a stored response may be used for, now: RFC 9111 freshness (from
//! `http-cache-semantics`: `s-maxage`, `max-age`, `Expires`, the `Last-Modified` heuristic,
//! `Age`), the request's own directives (`no-cache`, `max-age`, `min-fresh`, `max-stale`),
//! and the RFC 5861 extensions `stale-while-revalidate` and `stale-if-error`, which
//! `must-revalidate`, `proxy-revalidate`, `s-maxage` and `no-cache` rule out.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap};
use http_cache_semantics::CachePolicy;

use crate::config::CacheConfig;

/// A stored response.
#[derive(Debug)]
pub struct Object {
    /// Its status.
    pub status: StatusCode,
    /// Its header fields, hop-by-hop fields removed.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
    /// The RFC 9111 view of it (age, revalidation, 304 merging).
    pub policy: CachePolicy,
    /// How long it is fresh, counted like its age, after the route's overrides.
    pub lifetime: Duration,
    /// Directives that limit its use once stale.
    pub stale: StaleRules,
}

/// What a response allows once stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleRules {
    /// It must be revalidated once stale, whatever the request allows.
    pub must_revalidate: bool,
    /// It may be served stale this long while it is refreshed in the background.
    pub while_revalidate: Duration,
    /// It may be served stale this long when the upstream fails.
    pub if_error: Duration,
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Fresh (or stale but the request accepts it): answer with it.
    Fresh,
    /// Stale within `stale-while-revalidate`: answer with it and refresh it meanwhile.
    StaleWhileRevalidate,
    /// It must be revalidated (or refetched) first.
    Revalidate,
}

/// A `Cache-Control` field's directives, lower-case names with their unquoted values.
pub fn directives(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .filter_map(|part| {
            let part = part.trim();
            if part.is_empty() {
                return None;
            }
            Some(match part.split_once('=') {
                Some((name, value)) => (
                    name.trim().to_ascii_lowercase(),
                    Some(value.trim().trim_matches('"').to_string()),
                ),
                None => (part.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

fn seconds(directives: &[(String, Option<String>)], name: &str) -> Option<Duration> {
    directives
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, value)| value.as_deref()?.parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn has(directives: &[(String, Option<String>)], name: &str) -> bool {
    directives.iter().any(|(n, _)| n == name)
}

impl StaleRules {
    /// The rules a response's `Cache-Control` sets.
    pub fn of(headers: &HeaderMap) -> Self {
        let cc = directives(headers);
        let must_revalidate = [
            "must-revalidate",
            "proxy-revalidate",
            "s-maxage",
            "no-cache",
        ]
        .iter()
        .any(|name| has(&cc, name));
        if must_revalidate {
            return Self {
                must_revalidate,
                ..Self::default()
            };
        }
        Self {
            must_revalidate,
            while_revalidate: seconds(&cc, "stale-while-revalidate").unwrap_or_default(),
            if_error: seconds(&cc, "stale-if-error").unwrap_or_default(),
        }
    }
}

/// The freshness lifetime of a response under a route's overrides: what it states (or the
/// heuristic gives), else `default-ttl` when it states nothing, capped at `max-ttl`.
pub fn lifetime(
    policy: &CachePolicy,
    headers: &HeaderMap,
    config: &CacheConfig,
    now: SystemTime,
) -> Duration {
    let cc = directives(headers);
    // The lifetime is the time to live plus the age; with nothing left to live (already
    // stale on arrival, or no freshness at all) it is what the directives state, if any.
    let to_live = policy.time_to_live(now);
    let stated = if to_live.is_zero() {
        if has(&cc, "no-cache") || has(&cc, "proxy-revalidate") {
            return Duration::ZERO;
        }
        seconds(&cc, "s-maxage")
            .or_else(|| seconds(&cc, "max-age"))
            .unwrap_or_default()
    } else {
        to_live + policy.age(now)
    };
    let explicit = headers.contains_key(header::EXPIRES)
        || ["max-age", "s-maxage", "no-cache", "immutable"]
            .iter()
            .any(|name| has(&cc, name));
    let lifetime = if stated.is_zero() && !explicit {
        config.default_ttl
    } else if stated.is_zero()
        && !has(&cc, "no-cache")
        && !has(&cc, "max-age")
        && !has(&cc, "s-maxage")
    {
        // `Expires` in a format `http-cache-semantics` does not read (RFC 850, asctime).
        expires_lifetime(headers).unwrap_or_default()
    } else {
        stated
    };
    config.max_ttl.map_or(lifetime, |max| lifetime.min(max))
}

/// `Expires` minus `Date` (or now), read in any of the three HTTP date formats.
fn expires_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let date = |name| {
        let mut values = headers.get_all(name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
    };
    let expires = date(header::EXPIRES)?;
    let base = date(header::DATE).unwrap_or_else(SystemTime::now);
    expires.duration_since(base).ok()
}

/// An HTTP date (IMF-fixdate, RFC 850 or asctime).
pub fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

impl Object {
    /// The object's age now.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.policy.age(now)
    }

    /// Seconds of freshness left (negative once stale), for `Cache-Status: ttl`.
    pub fn ttl_seconds(&self, now: SystemTime) -> i64 {
        let lifetime = self.lifetime.as_secs() as i64;
        lifetime - self.age(now).as_secs() as i64
    }

    /// Whether it carries a validator to revalidate with.
    pub fn has_validator(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }

    /// How it may answer a request with these header fields.
    pub fn usable(&self, request: &HeaderMap, now: SystemTime) -> Usable {
        let age = self.age(now);
        // `Pragma` is deprecated (RFC 9111 §5.4): only `Cache-Control` counts.
        let cc = directives(request);
        if has(&cc, "no-cache") {
            return Usable::Revalidate;
        }
        if seconds(&cc, "max-age").is_some_and(|max| age > max) {
            return Usable::Revalidate;
        }
        if let Some(min_fresh) = seconds(&cc, "min-fresh")
            && self.lifetime.saturating_sub(age) < min_fresh
        {
            return Usable::Revalidate;
        }
        if age < self.lifetime {
            return Usable::Fresh;
        }
        if self.stale.must_revalidate {
            return Usable::Revalidate;
        }
        let staleness = age - self.lifetime;
        if let Some((_, value)) = cc.iter().find(|(n, _)| n == "max-stale") {
            let limit = value.as_deref().and_then(|v| v.parse::<u64>().ok());
            if limit.is_none_or(|secs| staleness <= Duration::from_secs(secs)) {
                return Usable::Fresh;
            }
        }
        if staleness < self.stale.while_revalidate {
            return Usable::StaleWhileRevalidate;
        }
        Usable::Revalidate
    }

    /// Whether it may answer in place of an upstream failure now.
    pub fn usable_on_error(&self, now: SystemTime) -> bool {
        let age = self.age(now);
        !self.stale.must_revalidate && age.saturating_sub(self.lifetime) < self.stale.if_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy_of(headers: &HeaderMap, now: SystemTime) -> CachePolicy {
        let request = http::Request::get("/").body(()).unwrap();
        let mut response = http::Response::new(());
        *response.headers_mut() = headers.clone();
        CachePolicy::new_options(&request, &response, now, Default::default())
    }

    #[test]
    fn default_ttl_applies_only_to_responses_that_state_no_freshness() {
        // Stored a second after it arrived, as a body takes time to stream.
        let arrived = SystemTime::now();
        let now = arrived + Duration::from_secs(1);
        let config = CacheConfig {
            default_ttl: Duration::from_secs(30),
            ..CacheConfig::default()
        };
        let silent = HeaderMap::new();
        assert_eq!(
            lifetime(&policy_of(&silent, arrived), &silent, &config, now),
            Duration::from_secs(30)
        );
        let stated = cc("max-age=5");
        assert_eq!(
            lifetime(&policy_of(&stated, arrived), &stated, &config, now),
            Duration::from_secs(5)
        );
        let zero = cc("max-age=0");
        assert_eq!(
            lifetime(&policy_of(&zero, arrived), &zero, &config, now),
            Duration::ZERO
        );
        let capped = CacheConfig {
            max_ttl: Some(Duration::from_secs(2)),
            ..config
        };
        assert_eq!(
            lifetime(&policy_of(&stated, arrived), &stated, &capped, now),
            Duration::from_secs(2)
        );
    }

    fn cc(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn revalidation_directives_rule_out_stale_extensions() {
        let rules = StaleRules::of(&cc(
            "max-age=1, stale-while-revalidate=30, stale-if-error=60",
        ));
        assert_eq!(rules.while_revalidate, Duration::from_secs(30));
        assert_eq!(rules.if_error, Duration::from_secs(60));
        assert!(!rules.must_revalidate);
        let strict = StaleRules::of(&cc("max-age=1, must-revalidate, stale-if-error=60"));
        assert!(strict.must_revalidate);
        assert_eq!(strict.if_error, Duration::ZERO);
    }
}
