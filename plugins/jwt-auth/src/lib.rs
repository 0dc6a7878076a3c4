//! `jwt-auth`: an auth stage that accepts requests carrying a valid JSON Web
//! Token and passes the token's subject and chosen claims on as the identity.
//!
//! See `README.md` for the config. The logic lives in modules that compile on
//! any target (`jws`: decoding and signatures, `keys`: key config, `token`:
//! claim checks), so `cargo test --target x86_64-unknown-linux-gnu -p jwt-auth`
//! runs the tests on the build machine.

mod jws;
mod keys;
mod token;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use wasmgate_plugin_sdk::{Auth, Context, Identity, Request, Response, debug, now_millis};

use crate::{
    jws::Algorithm,
    keys::{Jwks, Key},
    token::{Policy, TokenError},
};

/// The stage config. Every field is optional except that at least one key
/// (`keys` or `jwks`) must be given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Keys given one by one: HMAC secrets or PEM public keys.
    #[serde(default)]
    keys: Vec<Key>,
    /// A static JWKS document: a table with a `keys` array, or its JSON text.
    #[serde(default)]
    jwks: Option<Jwks>,
    /// Only these algorithms are accepted (default: whatever the keys support).
    #[serde(default)]
    algorithms: Option<Vec<Algorithm>>,
    /// Accepted `iss` values: a string or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    issuer: Vec<String>,
    /// Accepted `aud` values: a string or a list; the token must name one.
    #[serde(default, deserialize_with = "one_or_many")]
    audience: Vec<String>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    /// Whether tokens without `exp` are refused.
    #[serde(default = "default_true")]
    require_expiration: bool,
    /// Claims that must be present.
    #[serde(default)]
    required_claims: Vec<String>,
    /// The claim that becomes the identity's subject.
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    /// Claims passed on with the identity.
    #[serde(default)]
    forward_claims: Vec<String>,
    /// Where the token is found.
    #[serde(default)]
    token: TokenSource,
    /// The realm of the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    realm: String,
}

/// Where to look for the token, in this order: header, query, cookie.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TokenSource {
    /// The header that carries the token.
    #[serde(default = "default_header")]
    header: String,
    /// The scheme before the token in that header; empty for a bare token.
    #[serde(default = "default_scheme")]
    scheme: String,
    /// A query parameter that may carry the token.
    #[serde(default)]
    query: Option<String>,
    /// A cookie that may carry the token.
    #[serde(default)]
    cookie: Option<String>,
}

impl Default for TokenSource {
    fn default() -> Self {
        Self {
            header: default_header(),
            scheme: default_scheme(),
            query: None,
            cookie: None,
        }
    }
}

fn default_leeway() -> u64 {
    60
}

fn default_true() -> bool {
    true
}

fn default_subject_claim() -> String {
    "sub".to_string()
}

fn default_realm() -> String {
    "wasmgate".to_string()
}

fn default_header() -> String {
    "authorization".to_string()
}

fn default_scheme() -> String {
    "Bearer".to_string()
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(deserializer) {
        Ok(OneOrMany::One(one)) => Ok(vec![one]),
        Ok(OneOrMany::Many(many)) => Ok(many),
        Err(_) => Err(serde::de::Error::custom(
            "expected a string or a list of strings",
        )),
    }
}

impl Config {
    fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys
            .iter()
            .chain(self.jwks.iter().flat_map(|jwks| jwks.0.iter()))
    }

    fn policy(&self) -> Policy {
        Policy {
            keys: self.keys().cloned().collect(),
            algorithms: self.algorithms.clone(),
            issuers: self.issuer.clone(),
            audiences: self.audience.clone(),
            leeway_seconds: self.leeway_seconds,
            require_expiration: self.require_expiration,
            required_claims: self.required_claims.clone(),
        }
    }

    fn find_token(&self, req: &Request) -> Option<String> {
        let source = &self.token;
        if let Some(value) = req.header_str(&source.header) {
            let value = value.trim();
            let token = if source.scheme.is_empty() {
                Some(value)
            } else {
                value
                    .split_once(char::is_whitespace)
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(&source.scheme))
                    .map(|(_, token)| token.trim())
            };
            if let Some(token) = token.filter(|token| !token.is_empty()) {
                return Some(token.to_string());
            }
        }
        if let Some(name) = &source.query
            && let Some(token) = req.query_param(name).filter(|token| !token.is_empty())
        {
            return Some(token);
        }
        if let Some(name) = &source.cookie {
            let cookies = req
                .headers
                .get_all("cookie")
                .filter_map(|value| std::str::from_utf8(value).ok());
            for pair in cookies.flat_map(|header| header.split(';')) {
                if let Some((cookie, value)) = pair.trim().split_once('=')
                    && cookie == name
                    && !value.is_empty()
                {
                    return Some(value.to_string());
                }
            }
        }
        None
    }

    /// The `WWW-Authenticate` challenge and a JSON body (RFC 6750 §3).
    fn challenge(&self, error: Option<&TokenError>) -> Response {
        let realm = quoted(&self.realm);
        match error {
            None => Response::deny(401, "missing_token", "a bearer token is required")
                .with_header("www-authenticate", format!("Bearer realm=\"{realm}\"")),
            Some(error) => {
                let description = quoted(&error.to_string());
                Response::deny(401, "invalid_token", &error.to_string()).with_header(
                    "www-authenticate",
                    format!(
                        "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{description}\""
                    ),
                )
            }
        }
    }
}

/// Makes `text` safe inside a quoted-string: RFC 6750 allows only printable
/// ASCII other than `"` and `\` in these parameters.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

/// Turns a claim into the string an identity carries: strings as they are,
/// arrays of strings or numbers joined with commas, anything else as JSON.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items)
            if items
                .iter()
                .all(|item| item.is_string() || item.is_number()) =>
        {
            items
                .iter()
                .map(|item| match item {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        other => other.to_string(),
    }
}

/// The plugin.
pub struct JwtAuth;

impl Auth for JwtAuth {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        let keys: Vec<&Key> = config.keys().collect();
        if keys.is_empty() {
            return Err(
                "no usable key: give `keys` (secrets or PEM public keys) or a `jwks` document"
                    .to_string(),
            );
        }
        if let Some(allowed) = &config.algorithms {
            if allowed.is_empty() {
                return Err(
                    "algorithms: the list is empty, so every token would be refused".to_string(),
                );
            }
            if !keys
                .iter()
                .any(|key| key.algorithms.iter().any(|alg| allowed.contains(alg)))
            {
                return Err(
                    "algorithms: no configured key can verify any of these algorithms".to_string(),
                );
            }
        }
        if config.token.header.is_empty() {
            return Err("token.header: must not be empty".to_string());
        }
        Ok(())
    }

    fn authenticate(config: &Config, req: &Request, ctx: &Context) -> Result<Identity, Response> {
        let Some(token) = config.find_token(req) else {
            return Err(config.challenge(None));
        };
        let now = now_millis() / 1000;
        let claims = token::validate(&token, &config.policy(), now).map_err(|error| {
            debug!("request {}: token refused: {error}", ctx.request_id);
            config.challenge(Some(&error))
        })?;
        let subject = match claims.get(&config.subject_claim) {
            Some(Value::String(subject)) if !subject.is_empty() => subject.clone(),
            Some(Value::Number(subject)) => subject.to_string(),
            _ => {
                let error = TokenError::MissingClaim(config.subject_claim.clone());
                return Err(config.challenge(Some(&error)));
            }
        };
        let mut identity = Identity::new(subject);
        for name in &config.forward_claims {
            if let Some(value) = claims.get(name).filter(|value| !value.is_null()) {
                identity = identity.with_claim(name.clone(), claim_text(value));
            }
        }
        Ok(identity)
    }
}

wasmgate_plugin_sdk::export_auth!(JwtAuth);

#[cfg(test)]
mod tests;
