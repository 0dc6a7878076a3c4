//! Decoding config text into a [`RawConfig`], collecting every decode error (unknown keys,
//! wrong types, bad values) rather than stopping at the first.
//!
//! serde stops at the first error. So, after one, the offending entry is taken out of the
//! parsed document and decoding runs again, until it succeeds or nothing more can be taken
//! out (a syntax error, a missing field). Spans stay those of the original text.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::raw::RawConfig;

/// More decode errors than this in one file are not worth listing.
const MAX_ERRORS: usize = 50;

/// One decode error: where (byte offsets into the text) and what.
pub(super) struct DecodeError {
    pub span: Range<usize>,
    pub message: String,
}

/// The result of decoding: the config as decoded once every offending entry was taken out
/// (`None` when that did not work out), and the errors.
pub(super) struct Decoded {
    pub raw: Option<RawConfig>,
    pub errors: Vec<DecodeError>,
}

/// Decodes `source`, listing every error found in file order.
pub(super) fn decode(source: &str) -> Decoded {
    let mut decoded = decode_unsorted(source);
    decoded.errors.sort_by_key(|error| error.span.start);
    decoded
}

fn decode_unsorted(source: &str) -> Decoded {
    let first = match toml::from_str::<RawConfig>(source) {
        Ok(raw) => {
            return Decoded {
                raw: Some(raw),
                errors: Vec::new(),
            };
        }
        Err(error) => error,
    };
    let Ok(document) = DeTable::parse(source) else {
        // Not TOML at all: the parser's one error is all there is.
        return Decoded {
            raw: None,
            errors: vec![error_of(&first)],
        };
    };
    let span = document.span();
    let mut table = document.into_inner();
    let mut errors = Vec::new();
    while errors.len() < MAX_ERRORS {
        let value = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        let error = match RawConfig::deserialize(ValueDeserializer::from(value)) {
            Ok(raw) => {
                return Decoded {
                    raw: Some(raw),
                    errors,
                };
            }
            Err(error) => error_of(&error),
        };
        // Without a field the rest cannot be decoded; taking more out would only invent errors.
        let missing = error.message.starts_with("missing field");
        let after_bad_value = errors
            .last()
            .is_some_and(|last: &DecodeError| !last.message.starts_with("unknown field"));
        if missing && after_bad_value {
            // Most likely the entry taken out for the previous (bad value) error: not a
            // second mistake.
            break;
        }
        let removed = !missing && remove_entry_at(&mut table, error.span.start);
        errors.push(error);
        if !removed {
            break;
        }
    }
    Decoded { raw: None, errors }
}

fn error_of(error: &toml::de::Error) -> DecodeError {
    DecodeError {
        span: error.span().unwrap_or(0..0),
        message: error.message().trim().to_string(),
    }
}

/// Removes the innermost `key = value` entry of `table` whose key or value spans `offset`.
fn remove_entry_at(table: &mut DeTable<'_>, offset: usize) -> bool {
    let mut found = None;
    for (key, value) in table.iter_mut() {
        let (key_span, value_span) = (key.span(), value.span());
        let inside = key_span.contains(&offset)
            || value_span.contains(&offset)
            || (key_span.start <= offset && offset < value_span.end);
        let removed_inner = match value.get_mut() {
            DeValue::Table(inner) => remove_entry_at(inner, offset),
            DeValue::Array(items) => items.iter_mut().any(|item| match item.get_mut() {
                DeValue::Table(inner) => remove_entry_at(inner, offset),
                _ => false,
            }),
            _ => false,
        };
        if removed_inner {
            return true;
        }
        if inside {
            found = Some(key.clone());
            break;
        }
    }
    found.is_some_and(|key| table.remove(&key).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(source: &str) -> Vec<String> {
        decode(source)
            .errors
            .into_iter()
            .map(|e| format!("{}: {}", &source[e.span], e.message))
            .collect()
    }

    #[test]
    fn every_unknown_key_is_listed() {
        let source = "[server]\nbogus = 1\n\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\nconect-timeout = \"1s\"\n\n[[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"u\"\ntimout = \"1s\"\n";
        let found = messages(source);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with("bogus: unknown field `bogus`"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("conect-timeout: unknown field"),
            "{found:#?}"
        );
        assert!(found[2].starts_with("timout: unknown field"), "{found:#?}");
    }

    #[test]
    fn a_missing_field_ends_the_list_and_yields_no_config() {
        let source = "[[routes]]\nprefix = \"/\"\nbogus = 1\n";
        let decoded = decode(source);
        assert!(decoded.raw.is_none());
        let found: Vec<&str> = decoded.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found.iter().any(|m| m.starts_with("unknown field `bogus`")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|m| m.starts_with("missing field `name`")),
            "{found:#?}"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_once() {
        let decoded = decode("[server\nlisten = 1\n");
        assert!(decoded.raw.is_none());
        assert_eq!(decoded.errors.len(), 1);
    }

    #[test]
    fn what_remains_is_decoded() {
        let decoded = decode("[server]\nbogus = 1\nmax-connections = 7\n");
        let raw = decoded.raw.expect("the rest decodes");
        assert_eq!(raw.server.max_connections, Some(7));
        assert_eq!(decoded.errors.len(), 1);
    }
}
