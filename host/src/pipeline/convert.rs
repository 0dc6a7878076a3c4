//! Conversions between `http` types and the WIT records plugins see.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};

use crate::config::OutputLimits;
use crate::framing::{drop_plugin_framing, is_host_owned};
use crate::runtime::bindings::types;

/// A plugin answer that the host cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOutput(pub String);

/// Header fields as the WIT `list<header>`.
pub fn headers_to_wit(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}

/// Header fields from a plugin, checked against `limits` before anything is built, with
/// the fields that only the host may set (framing, hop-by-hop) dropped.
pub fn headers_from_wit(
    fields: &[(String, Vec<u8>)],
    limits: &OutputLimits,
) -> Result<HeaderMap, InvalidOutput> {
    let checked = checked_fields(fields, limits)?;
    let mut headers = HeaderMap::with_capacity(checked.len());
    for (name, value) in checked {
        headers.append(name, value);
    }
    drop_plugin_framing(&mut headers);
    Ok(headers)
}

/// Header fields from a plugin as a list (for fields the host adds to a message it already
/// has), checked like [`headers_from_wit`]; framing and hop-by-hop fields, and those a
/// `connection` field names, are dropped.
pub fn header_fields_from_wit(
    fields: &[(String, Vec<u8>)],
    limits: &OutputLimits,
) -> Result<Vec<(HeaderName, HeaderValue)>, InvalidOutput> {
    let mut checked = checked_fields(fields, limits)?;
    let named: Vec<HeaderName> = checked
        .iter()
        .filter(|(name, _)| *name == http::header::CONNECTION)
        .filter_map(|(_, value)| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    checked.retain(|(name, _)| !is_host_owned(name) && !named.contains(name));
    Ok(checked)
}

/// Validates a plugin's header fields against `limits` before building anything from them.
fn checked_fields(
    fields: &[(String, Vec<u8>)],
    limits: &OutputLimits,
) -> Result<Vec<(HeaderName, HeaderValue)>, InvalidOutput> {
    if fields.len() > limits.header_fields {
        return Err(InvalidOutput(format!(
            "{} header fields, over the limit of {}",
            fields.len(),
            limits.header_fields
        )));
    }
    let bytes = fields.iter().fold(0usize, |sum, (name, value)| {
        sum.saturating_add(name.len() + value.len() + 4)
    });
    if bytes > limits.header_bytes {
        return Err(InvalidOutput(format!(
            "{bytes} bytes of header fields, over the limit of {}",
            limits.header_bytes
        )));
    }
    let mut checked = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| InvalidOutput(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| InvalidOutput(format!("invalid value for header `{name}`")))?;
        checked.push((name, value));
    }
    Ok(checked)
}

/// A request as the WIT record.
pub fn request_to_wit(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Option<&Bytes>,
) -> types::Request {
    types::Request {
        method: method.as_str().to_string(),
        uri: path_and_query.to_string(),
        headers: headers_to_wit(headers),
        body: body.map(|b| b.to_vec()),
    }
}

/// A method from a plugin, checked.
pub fn method_from_wit(method: &str) -> Result<Method, InvalidOutput> {
    Method::from_bytes(method.as_bytes())
        .map_err(|_| InvalidOutput(format!("invalid method {method:?}")))
}

/// A path-and-query from a plugin, checked: it must start with `/`.
pub fn path_from_wit(uri: &str) -> Result<PathAndQuery, InvalidOutput> {
    if !uri.starts_with('/') {
        return Err(InvalidOutput(format!("uri {uri:?} must start with `/`")));
    }
    PathAndQuery::try_from(uri).map_err(|_| InvalidOutput(format!("invalid uri {uri:?}")))
}

/// A status code from a plugin, checked: 200–599 (1xx answers are the host's alone).
pub fn status_from_wit(status: u16) -> Result<StatusCode, InvalidOutput> {
    match StatusCode::from_u16(status) {
        Ok(code) if (200..=599).contains(&status) => Ok(code),
        _ => Err(InvalidOutput(format!("invalid status {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: OutputLimits = OutputLimits {
        header_fields: 100,
        header_bytes: 16 << 10,
        aggregate_calls: 32,
        aggregate_bytes: 16 << 20,
        aggregate_bytes_total: 256 << 20,
    };

    fn field() -> impl Strategy<Value = (String, Vec<u8>)> {
        let name = prop_oneof![
            Just("content-length".to_string()),
            Just("transfer-encoding".to_string()),
            Just("connection".to_string()),
            Just("upgrade".to_string()),
            "[a-z-]{1,12}",
            "\\PC{0,8}",
        ];
        let value = proptest::collection::vec(any::<u8>(), 0..24);
        (name, value)
    }

    #[test]
    fn a_flood_of_fields_is_refused_before_any_map_is_sized_for_it() {
        // `HeaderMap` panics past 32,768 entries: the count is checked first.
        let flood: Vec<(String, Vec<u8>)> = (0..100_000)
            .map(|i| (format!("x-{i}"), b"v".to_vec()))
            .collect();
        assert!(headers_from_wit(&flood, &LIMITS).is_err());
        assert!(header_fields_from_wit(&flood, &LIMITS).is_err());
    }

    proptest! {
        /// Any header list a plugin returns converts to a bounded map without the fields
        /// the host owns, or fails the stage; it never panics.
        #[test]
        fn plugin_headers_convert_or_fail(fields in proptest::collection::vec(field(), 0..160)) {
            match headers_from_wit(&fields, &LIMITS) {
                Ok(headers) => {
                    prop_assert!(fields.len() <= LIMITS.header_fields);
                    prop_assert!(headers.len() <= fields.len());
                    for owned in ["content-length", "transfer-encoding", "connection", "upgrade"] {
                        prop_assert!(!headers.contains_key(owned));
                    }
                }
                Err(InvalidOutput(message)) => prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn statuses_methods_and_paths_convert_or_fail(
            status in any::<u16>(),
            method in "\\PC{0,12}",
            uri in "\\PC{0,40}",
        ) {
            if let Ok(code) = status_from_wit(status) {
                prop_assert!((200..=599).contains(&code.as_u16()));
            }
            let _ = method_from_wit(&method);
            if let Ok(path) = path_from_wit(&uri) {
                prop_assert!(path.as_str().starts_with('/'));
            }
        }
    }
}
