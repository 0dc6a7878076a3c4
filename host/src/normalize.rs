//! Request path normalization, done once before routing so that the route a request
//! matches and the path its upstream receives are the same path.
//!
//! Without it, `/public/..%2Fadmin` or `/public/%2e%2e/admin` match a public route while
//! an upstream that normalizes serves `/admin` (Envoy's CVE-2019-9901 class). The steps,
//! in order:
//!
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, and the
//!    hex digits of every other escape are upper-cased (RFC 3986 §6.2.2);
//! 2. escaped `/` and `\` (`%2F`, `%5C`) follow the [`EscapedSlashes`] policy;
//! 3. runs of `/` are merged into one when `merge_slashes` is on;
//! 4. `.` and `..` segments are removed (RFC 3986 §5.2.4); `..` never climbs above `/`.
//!
//! A malformed escape (`%zz`, a `%` at the end) is refused, as nginx does.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request with 400 (the default: no upstream can read it differently).
    #[default]
    Reject,
    /// Keep them escaped: they are part of a segment, not separators.
    Keep,
    /// Decode them to `/` (a `%5C` too) before dot segments and slashes are handled.
    Decode,
}

/// How request paths are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// `%2F` / `%5C` handling.
    pub escaped_slashes: EscapedSlashes,
    /// Merge runs of `/` into one.
    pub merge_slashes: bool,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            escaped_slashes: EscapedSlashes::Reject,
            merge_slashes: true,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// An escaped `/` or `\` while the policy rejects them.
    #[error("the path has an escaped `/` or `\\` (%2F, %5C), which this gateway refuses")]
    EscapedSlash,
}

/// Normalizes a path (without its query). Borrows when nothing changes, which is the
/// common case. Paths that do not start with `/` (`*`) are returned unchanged.
pub fn normalize<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    if is_normal(path, policy) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_escapes(path, policy.escaped_slashes)?;
    let merged = if policy.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    Ok(Cow::Owned(remove_dot_segments(&merged)))
}

/// Whether `path` is already normal: no `%`, no `//` (when merging), no dot segment.
fn is_normal(path: &str, policy: &PathPolicy) -> bool {
    let bytes = path.as_bytes();
    if bytes.contains(&b'%') {
        return false;
    }
    if policy.merge_slashes && path.contains("//") {
        return false;
    }
    !path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Step 1 and 2: decodes unreserved escapes, upper-cases the others, applies the
/// escaped-slash policy.
fn decode_escapes(path: &str, slashes: EscapedSlashes) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            // Not an escape: copy up to the next `%` in one go (keeps UTF-8 intact).
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |p| i + p);
            out.push_str(&path[i..end]);
            i = end;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = high << 4 | low;
        if value == b'/' || value == b'\\' {
            match slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push('/'),
                EscapedSlashes::Keep => push_escape(&mut out, value),
            }
        } else if is_unreserved(value) {
            out.push(char::from(value));
        } else {
            push_escape(&mut out, value);
        }
        i += 3;
    }
    Ok(out)
}

fn push_escape(out: &mut String, value: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(value >> 4)]));
    out.push(char::from(HEX[usize::from(value & 0xf)]));
}

/// Step 3: `//` runs become one `/`.
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}

/// Step 4: RFC 3986 §5.2.4 for an absolute path. A trailing `.` or `..` segment leaves a
/// trailing `/` (`/a/b/..` is `/a/`).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path[1..].split('/').peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => {
                if last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if last {
                    segments.push("");
                }
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path, &PathPolicy::default()).map(Cow::into_owned)
    }

    fn with(slashes: EscapedSlashes, merge: bool, path: &str) -> Result<String, PathError> {
        let policy = PathPolicy {
            escaped_slashes: slashes,
            merge_slashes: merge,
        };
        normalize(path, &policy).map(Cow::into_owned)
    }

    #[test]
    fn rfc_3986_examples() {
        assert_eq!(norm("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(norm("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(norm("/..").unwrap(), "/");
        assert_eq!(norm("/../../x").unwrap(), "/x");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/a/.b/..c").unwrap(), "/a/.b/..c");
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(norm("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/public/.%2e/admin/x").unwrap(), "/admin/x");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(norm("/%61%7e%2d").unwrap(), "/a~-");
        assert_eq!(norm("/a%20b%3f").unwrap(), "/a%20b%3F");
        assert_eq!(norm("/caf%c3%a9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn escaped_slashes_follow_the_policy() {
        assert_eq!(
            norm("/public/..%2Fadmin"),
            Err(PathError::EscapedSlash),
            "rejected by default"
        );
        assert_eq!(norm("/a%5cb"), Err(PathError::EscapedSlash));
        assert_eq!(
            with(EscapedSlashes::Keep, true, "/public/..%2fadmin").unwrap(),
            "/public/..%2Fadmin"
        );
        assert_eq!(
            with(EscapedSlashes::Decode, true, "/public/..%2Fadmin").unwrap(),
            "/admin"
        );
        assert_eq!(
            with(EscapedSlashes::Decode, true, "/public/..%5Cadmin").unwrap(),
            "/admin"
        );
    }

    #[test]
    fn slashes_merge_unless_told_not_to() {
        assert_eq!(norm("//admin///x").unwrap(), "/admin/x");
        assert_eq!(
            with(EscapedSlashes::Reject, false, "//a//b").unwrap(),
            "//a//b"
        );
        assert_eq!(
            with(EscapedSlashes::Reject, false, "/a//../b").unwrap(),
            "/a/b"
        );
    }

    #[test]
    fn malformed_escapes_are_refused() {
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%4"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%"), Err(PathError::BadEscape));
    }

    #[test]
    fn normal_paths_are_borrowed() {
        let policy = PathPolicy::default();
        assert!(matches!(
            normalize("/users/42/orders", &policy),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize("*", &policy), Ok(Cow::Borrowed("*"))));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn policies() -> impl Strategy<Value = PathPolicy> {
            (
                prop_oneof![
                    Just(EscapedSlashes::Reject),
                    Just(EscapedSlashes::Keep),
                    Just(EscapedSlashes::Decode)
                ],
                any::<bool>(),
            )
                .prop_map(|(escaped_slashes, merge_slashes)| PathPolicy {
                    escaped_slashes,
                    merge_slashes,
                })
        }

        /// Paths made of the pieces attacks are made of.
        fn paths() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_string()),
                Just(".".to_string()),
                Just("..".to_string()),
                Just("%2e".to_string()),
                Just("%2E".to_string()),
                Just("%2f".to_string()),
                Just("%5C".to_string()),
                Just("%41".to_string()),
                Just("%".to_string()),
                Just("%c3%a9".to_string()),
                "[a-z]{1,3}",
            ];
            proptest::collection::vec(piece, 0..12)
                .prop_map(|pieces| format!("/{}", pieces.concat()))
        }

        proptest! {
            #[test]
            fn normalizing_is_idempotent(path in paths(), policy in policies()) {
                if let Ok(once) = normalize(&path, &policy) {
                    let twice = normalize(&once, &policy).expect("a normal path stays valid");
                    prop_assert_eq!(&*twice, &*once);
                }
            }

            #[test]
            fn normal_paths_have_no_dot_segments(path in paths(), policy in policies()) {
                if let Ok(normal) = normalize(&path, &policy) {
                    prop_assert!(normal.starts_with('/'));
                    prop_assert!(!normal.split('/').any(|s| s == "." || s == ".."));
                    prop_assert!(!normal.to_ascii_lowercase().contains("%2e"));
                    if policy.merge_slashes {
                        prop_assert!(!normal.contains("//"));
                    }
                }
            }

            #[test]
            fn arbitrary_input_never_panics(path in "/\\PC{0,40}", policy in policies()) {
                let _ = normalize(&path, &policy);
            }
        }
    }
}
