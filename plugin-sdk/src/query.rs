//! Query strings and percent-encoding.
//!
//! Parsing follows `application/x-www-form-urlencoded`: pairs split on `&`,
//! `+` means a space, `%XX` is a byte, and bytes that do not form UTF-8 are
//! replaced with U+FFFD. Encoding is the reverse, with spaces as `%20`.
//!
//! ```
//! use wasmgate_plugin_sdk::query;
//!
//! let pairs = query::parse("q=caf%C3%A9+au+lait&page=2&flag");
//! assert_eq!(pairs[0], ("q".to_string(), "café au lait".to_string()));
//! assert_eq!(pairs[2], ("flag".to_string(), String::new()));
//! assert_eq!(query::encode(&pairs), "q=caf%C3%A9%20au%20lait&page=2&flag=");
//! ```

/// Splits a query string (without the `?`) into decoded `(name, value)` pairs,
/// in order. Empty segments (`a=1&&b=2`) are skipped; a name without `=` has
/// an empty value.
pub fn parse(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// Joins `(name, value)` pairs into a query string (without the `?`),
/// percent-encoding both sides.
pub fn encode<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode_component(name.as_ref()));
        out.push('=');
        out.push_str(&encode_component(value.as_ref()));
    }
    out
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte.
/// Malformed escapes are kept as they are.
pub fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// Percent-encodes everything except the RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so the result is safe in a path segment or a
/// query component.
pub fn encode_component(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_escapes() {
        assert_eq!(decode("a+b%20c%2Fd"), "a b c/d");
    }

    #[test]
    fn keeps_malformed_escapes() {
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%4"), "%4");
    }

    #[test]
    fn parse_skips_empty_segments() {
        assert_eq!(
            parse("a=1&&b"),
            vec![("a".into(), "1".into()), ("b".into(), String::new())]
        );
    }

    #[test]
    fn encode_round_trips() {
        let pairs = vec![("k y".to_string(), "v&=/é".to_string())];
        assert_eq!(parse(&encode(&pairs)), pairs);
    }
}
