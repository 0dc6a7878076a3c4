//! Header rules for an intermediary (RFC 9110 §7.6): hop-by-hop fields are removed in both
//! directions, and forwarding fields are added on the way in.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields that never cross the gateway, besides those `Connection` names.
/// (`Trailer` is end to end: it announces the trailer fields, which the gateway carries.)
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is one of the fixed hop-by-hop fields.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names is cheaper than a lookup per field.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// What the gateway knows about the client connection, for forwarding headers.
pub struct Forwarded<'a> {
    /// The client's IP address.
    pub client_ip: &'a str,
    /// The host the client asked for, if it named one.
    pub host: Option<&'a str>,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The `Via` entry: protocol version and pseudonym, e.g. `"1.1 wasmgate"`.
    pub via: &'static str,
}

/// Appends `X-Forwarded-For`, sets `X-Forwarded-Proto` and `X-Forwarded-Host`, appends `Via`.
pub fn add_forwarding(headers: &mut HeaderMap, forwarded: &Forwarded<'_>) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let combined = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => {
            format!("{existing}, {}", forwarded.client_ip)
        }
        _ => forwarded.client_ip.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&combined) {
        headers.insert(xff, value);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(forwarded.proto),
    );
    if let Some(host) = forwarded.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    append_via(headers, forwarded.via);
}

/// Whether the client's `TE` accepts trailers (`TE: trailers`, as every gRPC client sends).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            coding
                .split(';')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Appends a `Via` entry.
pub fn append_via(headers: &mut HeaderMap, via: &'static str) {
    headers.append(header::VIA, HeaderValue::from_static(via));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fields_named_by_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn appends_forwarded_for() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let forwarded = Forwarded {
            client_ip: "127.0.0.1",
            host: Some("api.test"),
            proto: "http",
            via: "1.1 wasmgate",
        };
        add_forwarding(&mut headers, &forwarded);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-host"], "api.test");
        assert_eq!(headers["via"], "1.1 wasmgate");
    }
}
