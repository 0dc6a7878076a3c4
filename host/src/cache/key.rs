//! Cache keys: what makes two requests ask for the same stored response.
//!
//! The primary key is the host, the path and the query with its parameters sorted (so
//! `?b=2&a=1` and `?a=1&b=2` share an entry), then the route's `key-headers` and
//! `key-cookies`. `GET` and `HEAD` share keys (a `HEAD` is answered from a stored `GET`);
//! no other method is served from the cache. A response's `Vary` adds a secondary key: the
//! values of the fields it names, with `Accept-Encoding` reduced to the coding the client
//! would get (`br`, `zstd`, `gzip` or `identity`), so the many spellings browsers send do
//! not split the cache.

use std::fmt::Write as _;

use http::Uri;
use http::header::{self, HeaderMap, HeaderName};

use crate::config::{CacheConfig, ContentCoding};
use crate::pipeline::compress::negotiate;

/// Separates a primary key from the secondary (`Vary`) part; it cannot occur in a URI.
pub const VARIANT_SEPARATOR: char = '\u{0}';

/// The primary key of a request, as purge requests name it: `host/path?sorted-query`, then
/// one line per key header and key cookie.
pub fn primary(config: &CacheConfig, host: Option<&str>, uri: &Uri, headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(64);
    key.push_str(&host.unwrap_or_default().to_ascii_lowercase());
    key.push_str(uri.path());
    if let Some(query) = uri.query() {
        let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        pairs.sort_unstable();
        if !pairs.is_empty() {
            key.push('?');
            key.push_str(&pairs.join("&"));
        }
    }
    for name in &config.key_headers {
        let _ = write!(key, "\n{name}: {}", field_value(headers, name));
    }
    if !config.key_cookies.is_empty() {
        for name in &config.key_cookies {
            let value = cookie(headers, name).unwrap_or_default();
            let _ = write!(key, "\ncookie {name}={value}");
        }
    }
    key
}

/// The field names a response's `Vary` lists, lower-case; `None` for `Vary: *` (the
/// response matches no later request).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for text in headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        if text == "*" {
            return None;
        }
        if let Ok(name) = HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes())
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// The secondary key of a request for a response that varies on `names`.
pub fn variant(primary: &str, epoch: u64, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary);
    key.push(VARIANT_SEPARATOR);
    let _ = write!(key, "{epoch}");
    key.push_str(&vary_values(names, headers));
    key
}

/// The values a request has for the fields a response varies on, normalised.
pub fn vary_values(names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut out = String::new();
    for name in names {
        out.push(VARIANT_SEPARATOR);
        if *name == header::ACCEPT_ENCODING {
            let coding = negotiate(headers, &ContentCoding::ALL);
            out.push_str(coding.map_or("identity", ContentCoding::token));
        } else {
            out.push_str(&field_value(headers, name));
        }
    }
    out
}

/// A field's values joined by `, `, with the whitespace around each element removed.
fn field_value(headers: &HeaderMap, name: &HeaderName) -> String {
    let mut out = String::new();
    for value in headers.get_all(name) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for element in text.split(',').map(str::trim) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(element);
        }
    }
    out
}

/// The value of the cookie `name` in the request's `Cookie` fields.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn query_order_does_not_split_the_key() {
        let config = CacheConfig::default();
        let a: Uri = "/p?b=2&a=1".parse().unwrap();
        let b: Uri = "/p?a=1&b=2&".parse().unwrap();
        let empty = HeaderMap::new();
        assert_eq!(
            primary(&config, Some("Example.com"), &a, &empty),
            primary(&config, Some("example.com"), &b, &empty)
        );
        assert_eq!(primary(&config, Some("h"), &a, &empty), "h/p?a=1&b=2");
        let other: Uri = "/p?a=1&b=3".parse().unwrap();
        assert_ne!(
            primary(&config, Some("h"), &a, &empty),
            primary(&config, Some("h"), &other, &empty)
        );
    }

    #[test]
    fn key_headers_and_cookies_split_the_key() {
        let config = CacheConfig {
            key_headers: vec![HeaderName::from_static("x-tenant")],
            key_cookies: vec!["lang".into()],
            ..CacheConfig::default()
        };
        let uri: Uri = "/p".parse().unwrap();
        let one = headers(&[("x-tenant", "a"), ("cookie", "sid=1; lang=en")]);
        let two = headers(&[("x-tenant", "a"), ("cookie", "lang=en; sid=2")]);
        let three = headers(&[("x-tenant", "b"), ("cookie", "lang=en")]);
        let key = |h| primary(&config, None, &uri, h);
        assert_eq!(key(&one), key(&two), "other cookies do not count");
        assert_ne!(key(&one), key(&three));
    }

    #[test]
    fn accept_encoding_is_normalised_to_the_chosen_coding() {
        let names = vary_names(&headers(&[("vary", "Accept-Encoding")])).unwrap();
        let chrome = headers(&[("accept-encoding", "gzip, deflate, br, zstd")]);
        let firefox = headers(&[("accept-encoding", "br;q=1.0, gzip;q=0.8")]);
        let curl = headers(&[("accept-encoding", "gzip")]);
        let none = HeaderMap::new();
        assert_eq!(vary_values(&names, &chrome), vary_values(&names, &firefox));
        assert_ne!(vary_values(&names, &chrome), vary_values(&names, &curl));
        assert_eq!(vary_values(&names, &none), "\u{0}identity");
        assert_eq!(vary_names(&headers(&[("vary", "a, *")])), None);
    }
}
