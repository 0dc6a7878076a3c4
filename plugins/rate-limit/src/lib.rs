//! `rate-limit`: a rate-limit stage with fixed windows, sliding windows and
//! GCRA, several limits at once, keyed by client IP, a header, the
//! authenticated subject or the route. Counts live in the host's shared state
//! (`limiter`), computed on the state backend's clock, so several gateway
//! processes with a shared backend (Redis) enforce one limit.
//!
//! Every answer carries `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset` and `RateLimit-Policy` for the limit closest to
//! exhaustion; a refusal is a 429 with `Retry-After`. See `README.md`.

mod window;

use serde::{Deserialize, Deserializer, de};
use serde_json::Value;
use wasmgate_plugin_sdk::{
    Context, Headers, RateLimit, Request, Response, error, limiter, query, warn,
};

use crate::window::{Algorithm, Decision};

/// The stage config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// What a client is: `"ip"`, `"route"`, `"subject"`, `{ header = "..." }`
    /// or `{ claim = "..." }`.
    #[serde(default)]
    key: KeySource,
    /// The limits; a request must be within all of them.
    limits: Vec<Limit>,
    /// The default algorithm of the limits.
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    /// Counters are per route unless routes name the same scope.
    #[serde(default)]
    scope: Option<String>,
    /// What to do when the counter store fails.
    #[serde(default)]
    on_error: OnError,
}

/// One limit: `requests` per `window`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    /// Requests allowed per window.
    requests: u64,
    /// The window: `500ms`, `1s`, `1m`, `1h`, `1d`, ...
    #[serde(deserialize_with = "duration")]
    window: u64,
    /// Overrides the stage's algorithm for this limit.
    #[serde(default)]
    algorithm: Option<Algorithm>,
    /// Names the limit in counter keys (default: `<requests>/<window ms>`).
    #[serde(default)]
    name: Option<String>,
    /// GCRA only: requests allowed at once from idle (default: `requests`).
    #[serde(default)]
    burst: Option<u64>,
}

/// Who a counter belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum KeySource {
    /// The client's IP address.
    #[default]
    Ip,
    /// The route: one budget shared by every client.
    Route,
    /// The subject an auth stage established (falls back to the IP).
    Subject,
    /// A request header's value (falls back to the IP when absent).
    Header(String),
    /// A claim of the auth identity (falls back to the IP when absent).
    Claim(String),
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expected = "expected \"ip\", \"route\", \"subject\", { header = \"name\" } or { claim = \"name\" }";
        let value = Value::deserialize(deserializer)?;
        let source = match &value {
            Value::String(name) => match name.as_str() {
                "ip" => KeySource::Ip,
                "route" => KeySource::Route,
                "subject" => KeySource::Subject,
                _ => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{name}`: {expected}"
                    )));
                }
            },
            Value::Object(table) if table.len() == 1 => match table.iter().next() {
                Some((kind, Value::String(name))) if kind == "header" && !name.is_empty() => {
                    KeySource::Header(name.to_ascii_lowercase())
                }
                Some((kind, Value::String(name))) if kind == "claim" && !name.is_empty() => {
                    KeySource::Claim(name.clone())
                }
                _ => return Err(de::Error::custom(expected)),
            },
            _ => return Err(de::Error::custom(expected)),
        };
        Ok(source)
    }
}

/// What a counter store failure means for the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OnError {
    /// Refuse with 503 (fail closed).
    #[default]
    Deny,
    /// Let the request through without rate-limit headers (fail open).
    Allow,
}

fn default_algorithm() -> Algorithm {
    Algorithm::Fixed
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let text = String::deserialize(deserializer)?;
    window::parse_duration(&text).map_err(de::Error::custom)
}

impl Config {
    /// The client part of counter keys, e.g. `ip:203.0.113.7`.
    fn client_key(&self, req: &Request, ctx: &Context) -> String {
        let ip = || format!("ip:{}", ctx.client_ip);
        match &self.key {
            KeySource::Ip => ip(),
            KeySource::Route => "route".to_string(),
            KeySource::Subject => ctx.subject().map_or_else(ip, |subject| {
                format!("sub:{}", query::encode_component(subject))
            }),
            KeySource::Header(name) => req.header(name).map_or_else(ip, |value| {
                format!(
                    "h:{}",
                    query::encode_component(&String::from_utf8_lossy(value))
                )
            }),
            KeySource::Claim(name) => ctx
                .claim(name)
                .map_or_else(ip, |value| format!("c:{}", query::encode_component(value))),
        }
    }

    fn scope(&self, ctx: &Context) -> String {
        match &self.scope {
            Some(scope) => format!("scope:{}", query::encode_component(scope)),
            None => format!("route:{}", query::encode_component(&ctx.route)),
        }
    }

    /// `RateLimit-Policy`: `10;w=1, 1000;w=3600`.
    fn policy_header(&self) -> String {
        self.limits
            .iter()
            .map(|limit| format!("{};w={}", limit.requests, limit.window.div_ceil(1000)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Limit {
    fn id(&self) -> String {
        match &self.name {
            Some(name) => query::encode_component(name),
            None => format!("{}/{}", self.requests, self.window),
        }
    }

    fn describe(&self) -> String {
        let (amount, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ]
        .into_iter()
        .find(|(unit_ms, _)| self.window.is_multiple_of(*unit_ms))
        .map_or((self.window, "ms"), |(unit_ms, unit)| {
            (self.window / unit_ms, unit)
        });
        format!("{} requests per {amount}{unit}", self.requests)
    }

    /// Counts this request against the limit, on the backend's clock.
    fn count(&self, algorithm: Algorithm, base: &str) -> Result<Decision, String> {
        let key = format!("{base}|{}", self.id());
        match self.algorithm.unwrap_or(algorithm) {
            Algorithm::Fixed => {
                let counts = limiter::window(&key, 1, self.window)?;
                Ok(window::fixed(
                    self.requests,
                    self.window,
                    counts.elapsed_ms,
                    counts.current,
                ))
            }
            Algorithm::Sliding => {
                let counts = limiter::window(&key, 1, self.window)?;
                Ok(window::sliding(
                    self.requests,
                    self.window,
                    counts.elapsed_ms,
                    counts.previous,
                    counts.current,
                ))
            }
            Algorithm::Gcra => {
                let verdict = limiter::gcra(&key, self.requests, self.window, self.burst(), 1)?;
                Ok(Decision {
                    allowed: verdict.allowed,
                    limit: self.requests,
                    remaining: verdict.remaining,
                    reset_ms: verdict.reset_after_ms,
                    retry_after_ms: verdict.retry_after_ms,
                })
            }
        }
    }

    fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.requests)
    }
}

fn seconds(ms: u64) -> String {
    ms.div_ceil(1000).to_string()
}

/// The plugin.
pub struct RateLimiter;

impl RateLimit for RateLimiter {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        if config.limits.is_empty() {
            return Err("limits: give at least one limit".to_string());
        }
        for (index, limit) in config.limits.iter().enumerate() {
            if limit.requests == 0 {
                return Err(format!(
                    "limits[{index}].requests: must be at least 1 (remove the route to refuse everything)"
                ));
            }
            let gcra = limit.algorithm.unwrap_or(config.algorithm) == Algorithm::Gcra;
            match limit.burst {
                Some(_) if !gcra => {
                    return Err(format!(
                        "limits[{index}].burst: only the `gcra` algorithm takes a burst"
                    ));
                }
                Some(0) => {
                    return Err(format!("limits[{index}].burst: must be at least 1"));
                }
                _ => {}
            }
            if gcra && limit.window.saturating_mul(1000) < limit.requests {
                return Err(format!(
                    "limits[{index}]: gcra allows at most one request per microsecond"
                ));
            }
        }
        let mut ids: Vec<String> = config.limits.iter().map(Limit::id).collect();
        ids.sort();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!(
                "limits: two limits are both `{}`; give them different windows or names",
                pair[0]
            ));
        }
        Ok(())
    }

    fn check(config: &Config, req: &Request, ctx: &Context) -> Result<Headers, Response> {
        let base = format!("{}|{}", config.scope(ctx), config.client_key(req, ctx));
        let mut decisions = Vec::with_capacity(config.limits.len());
        for limit in &config.limits {
            match limit.count(config.algorithm, &base) {
                Ok(decision) => decisions.push((limit, decision)),
                Err(why) => {
                    return match config.on_error {
                        OnError::Deny => {
                            error!("rate-limit counters unavailable, refusing: {why}");
                            Err(Response::deny(
                                503,
                                "rate_limit_unavailable",
                                "the rate limiter cannot count requests right now",
                            ))
                        }
                        OnError::Allow => {
                            warn!("rate-limit counters unavailable, letting through: {why}");
                            Ok(Headers::new())
                        }
                    };
                }
            }
        }

        // Report the limit closest to exhaustion, the refused one if any.
        let Some((limit, shown)) = decisions.iter().min_by_key(|(_, decision)| {
            (
                decision.allowed,
                decision.remaining,
                u64::MAX - decision.reset_ms,
            )
        }) else {
            return Ok(Headers::new());
        };
        let mut headers = Headers::new()
            .with("ratelimit-limit", shown.limit.to_string())
            .with("ratelimit-remaining", shown.remaining.to_string())
            .with("ratelimit-reset", seconds(shown.reset_ms))
            .with("ratelimit-policy", config.policy_header());

        if shown.allowed {
            return Ok(headers);
        }
        let retry_after = decisions
            .iter()
            .filter(|(_, decision)| !decision.allowed)
            .map(|(_, decision)| decision.retry_after_ms)
            .max()
            .unwrap_or(shown.retry_after_ms);
        headers.set("retry-after", seconds(retry_after));
        let mut refusal = Response::deny(
            429,
            "rate_limited",
            &format!("too many requests: the limit is {}", limit.describe()),
        );
        refusal.headers.extend(headers.iter());
        Err(refusal)
    }
}

wasmgate_plugin_sdk::export_rate_limit!(RateLimiter);

#[cfg(test)]
mod tests;
