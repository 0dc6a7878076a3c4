//! `api-key-auth`: an auth stage that accepts requests carrying a known API
//! key, taken from a header or a query parameter.
//!
//! The config holds only SHA-256 hashes of the keys, so a leaked config does
//! not leak keys. The presented key is hashed and compared with every stored
//! hash in constant time, without stopping at the first match, so response
//! timing says nothing about how close a guess was or which key matched.
//! See `README.md` for the config.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use wasmgate_plugin_sdk::{Auth, Context, Identity, Request, Response, debug};

/// The stage config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header that carries the key.
    #[serde(default = "default_header")]
    header: String,
    /// A query parameter that may carry the key when the header is absent.
    #[serde(default)]
    query: Option<String>,
    /// The accepted keys.
    keys: Vec<ApiKey>,
    /// The realm of the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    realm: String,
}

/// One accepted key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKey {
    /// Who holds the key: becomes the identity's subject.
    name: String,
    /// SHA-256 of the key, hex (`printf %s "$KEY" | sha256sum`).
    sha256: Sha256Hex,
    /// Claims passed on with the identity.
    #[serde(default)]
    claims: BTreeMap<String, String>,
}

/// A SHA-256 digest written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct Sha256Hex([u8; 32]);

impl TryFrom<String> for Sha256Hex {
    type Error = String;

    fn try_from(hex: String) -> Result<Self, String> {
        let hex = hex.trim();
        let malformed = || {
            format!(
                "expected 64 hex digits (the SHA-256 of the key), got {} characters",
                hex.len()
            )
        };
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(malformed());
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| malformed())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| malformed())?;
        }
        Ok(Self(digest))
    }
}

fn default_header() -> String {
    "x-api-key".to_string()
}

fn default_realm() -> String {
    "wasmgate".to_string()
}

impl Config {
    fn presented_key(&self, req: &Request) -> Option<Vec<u8>> {
        if let Some(value) = req.header(&self.header) {
            let value = value.trim_ascii();
            if !value.is_empty() {
                return Some(value.to_vec());
            }
        }
        let name = self.query.as_ref()?;
        req.query_param(name)
            .filter(|value| !value.is_empty())
            .map(String::into_bytes)
    }

    /// The index of the key whose hash matches `presented`, found in constant
    /// time over all keys.
    fn find(&self, presented: &[u8]) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, key) in self.keys.iter().enumerate() {
            let matches = digest.ct_eq(&key.sha256.0);
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index.conditional_assign(&i, matches);
            found |= matches;
        }
        if bool::from(found) {
            self.keys.get(index as usize)
        } else {
            None
        }
    }

    fn refuse(&self, code: &str, message: &str) -> Response {
        let realm: String = self
            .realm
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && (c.is_ascii_graphic() || *c == ' '))
            .collect();
        Response::deny(401, code, message).with_header(
            "www-authenticate",
            format!("ApiKey realm=\"{realm}\", header=\"{}\"", self.header),
        )
    }
}

/// The plugin.
pub struct ApiKeyAuth;

impl Auth for ApiKeyAuth {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        if config.keys.is_empty() {
            return Err("keys: give at least one key".to_string());
        }
        if config.header.is_empty() {
            return Err("header: must not be empty".to_string());
        }
        let mut names = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        for (index, key) in config.keys.iter().enumerate() {
            if key.name.is_empty() {
                return Err(format!("keys[{index}].name: must not be empty"));
            }
            if !names.insert(key.name.as_str()) {
                return Err(format!("keys[{index}].name: `{}` is used twice", key.name));
            }
            if !hashes.insert(key.sha256) {
                return Err(format!(
                    "keys[{index}].sha256: the same key hash is listed twice"
                ));
            }
        }
        Ok(())
    }

    fn authenticate(config: &Config, req: &Request, ctx: &Context) -> Result<Identity, Response> {
        let Some(presented) = config.presented_key(req) else {
            return Err(config.refuse("missing_api_key", "an API key is required"));
        };
        let Some(key) = config.find(&presented) else {
            debug!("request {}: unknown API key", ctx.request_id);
            return Err(config.refuse("invalid_api_key", "the API key is not valid"));
        };
        let mut identity = Identity::new(key.name.clone());
        for (name, value) in &key.claims {
            identity = identity.with_claim(name.clone(), value.clone());
        }
        Ok(identity)
    }
}

wasmgate_plugin_sdk::export_auth!(ApiKeyAuth);

#[cfg(test)]
#[path = "../../readme_examples.rs"]
mod readme_examples;

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use wasmgate_plugin_sdk::parse_config;

    use super::*;

    /// `printf %s k-mobile-0f1e2d3c | sha256sum`, computed outside this code.
    const MOBILE_HASH: &str = "3121c6abf3b3ad044901325de37727a96cb8853836ebafcf71b8b69d64db9e81";
    /// `printf %s k-partner-9a8b7c6d | sha256sum`, upper-case on purpose.
    const PARTNER_HASH: &str = "FE631C069F85E719C1228D5D08A5E6B724A6A503E9182150D3D8352CE201776A";

    fn config(extra: Value) -> Config {
        let mut config = json!({
            "keys": [
                { "name": "mobile-app", "sha256": MOBILE_HASH, "claims": { "tier": "gold" } },
                { "name": "partner", "sha256": PARTNER_HASH },
            ],
        });
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        let config: Config = parse_config(&config.to_string()).unwrap();
        ApiKeyAuth::validate(&config).unwrap();
        config
    }

    fn authenticate(config: &Config, req: Request) -> Result<Identity, Response> {
        ApiKeyAuth::authenticate(config, &req, &Context::default())
    }

    #[test]
    fn known_keys_from_the_header() {
        let config = config(json!({}));
        let req = Request::new("GET", "/").with_header("X-Api-Key", "k-mobile-0f1e2d3c");
        let identity = authenticate(&config, req).unwrap();
        assert_eq!(identity.subject, "mobile-app");
        assert_eq!(identity.claim("tier"), Some("gold"));
        let req = Request::new("GET", "/").with_header("x-api-key", " k-partner-9a8b7c6d ");
        assert_eq!(authenticate(&config, req).unwrap().subject, "partner");
    }

    #[test]
    fn keys_from_the_query_only_when_configured() {
        let req = Request::new("GET", "/orders?api_key=k-partner-9a8b7c6d");
        let refusal = authenticate(&config(json!({})), req.clone()).unwrap_err();
        assert_eq!(refusal.status, 401);
        let config = config(json!({ "query": "api_key", "header": "authorization-key" }));
        assert_eq!(authenticate(&config, req).unwrap().subject, "partner");
    }

    #[test]
    fn refusals() {
        let config = config(json!({ "realm": "orders" }));
        let missing = authenticate(&config, Request::new("GET", "/")).unwrap_err();
        assert_eq!(missing.status, 401);
        assert_eq!(
            missing.header_str("www-authenticate"),
            Some("ApiKey realm=\"orders\", header=\"x-api-key\"")
        );
        let body: Value = missing.body_json().unwrap();
        assert_eq!(body["error"], "missing_api_key");

        let wrong = Request::new("GET", "/").with_header("x-api-key", "k-mobile-0f1e2d3d");
        let body: Value = authenticate(&config, wrong)
            .unwrap_err()
            .body_json()
            .unwrap();
        assert_eq!(body["error"], "invalid_api_key");
    }

    #[test]
    fn config_errors() {
        let error = |config: Value| match parse_config::<Config>(&config.to_string()) {
            Err(error) => error,
            Ok(config) => ApiKeyAuth::validate(&config).unwrap_err(),
        };
        assert_eq!(error(json!({})), "missing field `keys`");
        assert_eq!(error(json!({ "keys": [] })), "keys: give at least one key");
        assert_eq!(
            error(json!({ "keys": [{ "name": "a", "sha256": "abc" }] })),
            "keys[0].sha256: expected 64 hex digits (the SHA-256 of the key), got 3 characters"
        );
        assert!(
            error(json!({ "keys": [{ "name": "a", "sha256": "zz".repeat(32) }] }))
                .starts_with("keys[0].sha256")
        );
        assert_eq!(
            error(json!({ "keys": [
                { "name": "a", "sha256": MOBILE_HASH },
                { "name": "a", "sha256": PARTNER_HASH },
            ] })),
            "keys[1].name: `a` is used twice"
        );
        assert_eq!(
            error(json!({ "keys": [
                { "name": "a", "sha256": MOBILE_HASH },
                { "name": "b", "sha256": MOBILE_HASH.to_uppercase() },
            ] })),
            "keys[1].sha256: the same key hash is listed twice"
        );
        assert!(
            error(
                json!({ "keys": [{ "name": "a", "sha256": MOBILE_HASH, "claims": { "n": 1 } }] })
            )
            .starts_with("keys[0].claims.n: invalid type")
        );
    }

    // === the README's examples ===

    /// The `config` of every stage of `plugin` in this plugin's README examples.
    fn readme_configs(plugin: &str) -> Vec<String> {
        crate::readme_examples::stage_configs(include_str!("../README.md"), plugin)
    }

    #[test]
    fn readme_examples_are_valid() {
        let configs = readme_configs("api-key-auth");
        assert!(
            !configs.is_empty(),
            "the README has no example of this plugin"
        );
        for config in configs {
            let parsed: Config =
                parse_config(&config).unwrap_or_else(|err| panic!("{err}\n{config}"));
            ApiKeyAuth::validate(&parsed).unwrap_or_else(|err| panic!("{err}\n{config}"));
        }
    }
}
