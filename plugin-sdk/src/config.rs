//! Typed stage config.

use std::fmt;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, Visitor};

/// Parses a stage's config JSON into `C`, with errors that name the field.
///
/// This is what the export macros use for `validate-config` and before a call
/// (once per instance: a reused instance keeps the parsed config while the
/// JSON stays the same); it is public so that tests can build configs the same way.
///
/// ```
/// use serde::Deserialize;
/// use wasmgate_plugin_sdk::parse_config;
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     limits: Vec<Limit>,
/// }
/// #[derive(Deserialize)]
/// struct Limit {
///     requests: u32,
/// }
///
/// let err = parse_config::<Config>(r#"{ "limits": [{ "requests": -1 }] }"#).err().unwrap();
/// assert!(err.starts_with("limits[0].requests: invalid value"), "{err}");
/// ```
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let deserializer = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = without_position(err.inner());
        if path.is_empty() || path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

/// serde_json appends "at line L column C" of the JSON the host generated
/// from the TOML config; those numbers mean nothing to the person reading the
/// error, so drop them. The host reports the route and stage instead.
fn without_position(err: &serde_json::Error) -> String {
    let message = err.to_string();
    if err.line() == 0 {
        return message;
    }
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message,
    }
}

/// The config of a plugin that takes none: accepts only an empty table, so
/// that a misplaced key is an error at load time rather than silently ignored.
///
/// ```
/// use wasmgate_plugin_sdk::{NoConfig, parse_config};
///
/// assert!(parse_config::<NoConfig>("{}").is_ok());
/// assert!(parse_config::<NoConfig>("null").is_ok());
/// assert!(parse_config::<NoConfig>(r#"{ "x": 1 }"#).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoConfig;

impl<'de> Deserialize<'de> for NoConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NoConfigVisitor;

        impl<'de> Visitor<'de> for NoConfigVisitor {
            type Value = NoConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an empty table (this plugin takes no config)")
            }

            fn visit_unit<E: de::Error>(self) -> Result<NoConfig, E> {
                Ok(NoConfig)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoConfig, A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(NoConfig),
                    Some(key) => Err(de::Error::custom(format_args!(
                        "unknown field `{key}`: this plugin takes no config"
                    ))),
                }
            }
        }

        deserializer.deserialize_any(NoConfigVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Config {
        name: String,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Nested {
        values: Vec<u8>,
    }

    #[test]
    fn names_the_field() {
        let err =
            parse_config::<Config>(r#"{"name": "x", "nested": {"values": [1, 300]}}"#).unwrap_err();
        assert!(err.starts_with("nested.values[1]: invalid value"), "{err}");
        assert!(!err.contains("line"), "{err}");
    }

    #[test]
    fn root_errors_have_no_path() {
        let err = parse_config::<Config>("{}").unwrap_err();
        assert_eq!(err, "missing field `name`");
        let err = parse_config::<Config>(r#"{"name": "x", "nmae": 1}"#).unwrap_err();
        assert!(err.starts_with("nmae: unknown field `nmae`"), "{err}");
    }

    #[test]
    fn syntax_errors() {
        let err = parse_config::<Config>("{").unwrap_err();
        assert!(err.contains("EOF"), "{err}");
    }
}
