//! Upstream resilience settings: active health checks, outlier ejection, the circuit
//! breaker, the retry budget (per upstream) and the retry policy (per route) — as written,
//! as checked, and their defaults.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::checker::Checker;
use super::units::{ByteSize, ConfigDuration};

// === As written ===

/// `[upstreams.NAME.health-check]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHealthCheck {
    /// `http` (default), `tcp` or `grpc`.
    pub kind: Option<Spanned<String>>,
    /// The service a `grpc` check asks about (`grpc.health.v1.Health/Check`); empty: the
    /// server as a whole.
    pub service: Option<Spanned<String>>,
    /// Path of an HTTP check.
    pub path: Option<Spanned<String>>,
    /// `Host` of an HTTP check (default: the target).
    pub host: Option<String>,
    /// Statuses that pass: codes (`200`) or classes (`"2xx"`).
    pub expect: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    /// Time between checks of a target (each waits up to 10 % more, at random).
    pub interval: Option<ConfigDuration>,
    /// Time one check may take.
    pub timeout: Option<ConfigDuration>,
    /// Passing checks in a row that make an unhealthy target healthy.
    pub healthy_threshold: Option<u32>,
    /// Failing checks in a row that make a healthy target unhealthy.
    pub unhealthy_threshold: Option<u32>,
    /// Targets start unhealthy until their first passing check.
    pub start_unhealthy: Option<bool>,
}

/// `[upstreams.NAME.outlier]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOutlier {
    /// 5xx answers in a row that eject a target (0: never).
    pub consecutive_5xx: Option<u32>,
    /// Connect failures, resets and timeouts in a row that eject a target (0: never).
    pub consecutive_failures: Option<u32>,
    /// Ejection time of a first ejection; each later one adds as much again.
    pub base_ejection: Option<ConfigDuration>,
    /// The longest ejection.
    pub max_ejection: Option<ConfigDuration>,
    /// Share of targets that may be ejected at once (one always may, the last never).
    pub max_ejected_percent: Option<Spanned<u32>>,
    /// Below this share of usable targets, traffic goes to every target.
    pub panic_threshold: Option<Spanned<u32>>,
}

/// `[upstreams.NAME.breaker]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBreaker {
    /// Requests in flight to the upstream at once; more are refused with 503.
    pub max_requests: Option<Spanned<usize>>,
    /// Connections open to the upstream's targets at once (all workers); a request that
    /// needs another waits for one to free up.
    pub max_connections: Option<Spanned<usize>>,
    /// Requests waiting for a connection at once (with `max-connections`); more are
    /// refused with 503.
    pub max_pending_requests: Option<Spanned<usize>>,
    /// The failure ratio over `window` that opens the breaker (0 < r ≤ 1; absent: off).
    pub failure_ratio: Option<Spanned<f64>>,
    /// Requests in `window` before the ratio counts.
    pub minimum_requests: Option<u32>,
    /// The sliding window the ratio is computed over.
    pub window: Option<ConfigDuration>,
    /// How long an open breaker refuses before letting one probe through.
    pub recovery_timeout: Option<ConfigDuration>,
}

/// `[upstreams.NAME.retry-budget]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRetryBudget {
    /// Retries allowed, as a share of requests.
    pub percent: Option<Spanned<u32>>,
    /// Retries per second always allowed.
    pub min: Option<u32>,
}

/// A route's `retry` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRetry {
    /// Attempts in all (1: no retry).
    pub attempts: Option<Spanned<u32>>,
    /// What is retried: `connect-failure`, `reset`, `timeout`, status codes.
    pub on: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    /// Time one attempt may take to its response head.
    pub per_try_timeout: Option<ConfigDuration>,
    /// The first backoff; it doubles per retry (with full jitter).
    pub backoff: Option<ConfigDuration>,
    /// The longest backoff (also caps an upstream's `Retry-After`).
    pub max_backoff: Option<ConfigDuration>,
    /// Retry methods that are not idempotent too.
    pub non_idempotent: Option<bool>,
    /// Request bodies up to this size are kept to be sent again.
    pub buffer_body: Option<ByteSize>,
}

// === Checked ===

/// An active health check, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// HTTP or TCP.
    pub kind: CheckKind,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Passing checks in a row to become healthy.
    pub healthy_threshold: u32,
    /// Failing checks in a row to become unhealthy.
    pub unhealthy_threshold: u32,
    /// Start unhealthy until the first pass.
    pub start_unhealthy: bool,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `GET path` must answer an expected status.
    Http {
        /// The path and query.
        path: String,
        /// The `Host` header; the target's authority when `None`.
        host: Option<String>,
        /// Status ranges that pass (inclusive).
        expect: Vec<(u16, u16)>,
    },
    /// A TCP connection (and TLS handshake, for a TLS upstream) must open.
    Tcp,
    /// `grpc.health.v1.Health/Check` must answer `SERVING` for the service.
    Grpc {
        /// The service asked about (empty: the whole server).
        service: String,
    },
}

/// Passive outlier detection, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    /// 5xx answers in a row that eject (0: off).
    pub consecutive_5xx: u32,
    /// Gateway failures in a row that eject (0: off).
    pub consecutive_failures: u32,
    /// First ejection time.
    pub base_ejection: Duration,
    /// Longest ejection time.
    pub max_ejection: Duration,
    /// Share of targets that may be ejected at once.
    pub max_ejected_percent: u32,
    /// Below this share of usable targets, every target is used.
    pub panic_threshold: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
        }
    }
}

/// The circuit breaker, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Requests in flight at once (`None`: unlimited).
    pub max_requests: Option<usize>,
    /// Connections open at once (`None`: unlimited).
    pub max_connections: Option<usize>,
    /// Requests waiting for a connection at once (`None`: unlimited).
    pub max_pending_requests: Option<usize>,
    /// The failure ratio that opens the breaker (`None`: the error-rate breaker is off).
    pub failure_ratio: Option<f64>,
    /// Requests in the window before the ratio counts.
    pub minimum_requests: u32,
    /// The window of the ratio.
    pub window: Duration,
    /// Time an open breaker waits before a probe.
    pub recovery_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            max_requests: None,
            max_connections: None,
            max_pending_requests: None,
            failure_ratio: None,
            minimum_requests: DEFAULT_BREAKER_MINIMUM_REQUESTS,
            window: DEFAULT_BREAKER_WINDOW,
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
        }
    }
}

/// How many retries an upstream takes: a share of its requests, and a floor per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries as a share of requests.
    pub percent: u32,
    /// Retries per second always allowed.
    pub min: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            percent: DEFAULT_RETRY_BUDGET_PERCENT,
            min: DEFAULT_RETRY_BUDGET_MIN,
        }
    }
}

/// What failures a retry policy retries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection could not be opened.
    pub connect_failure: bool,
    /// The exchange broke off before a response head.
    pub reset: bool,
    /// No response head within the per-try timeout.
    pub timeout: bool,
    /// These response statuses.
    pub statuses: Vec<u16>,
}

/// A route's retry policy, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub attempts: u32,
    /// What is retried.
    pub on: RetryOn,
    /// Time one attempt may take to its response head (`None`: the route's timeout).
    pub per_try_timeout: Option<Duration>,
    /// First backoff.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Whether non-idempotent methods are retried.
    pub non_idempotent: bool,
    /// Bodies up to this size are kept for a retry.
    pub buffer_body: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                timeout: false,
                statuses: Vec::new(),
            },
            per_try_timeout: None,
            backoff: DEFAULT_RETRY_BACKOFF,
            max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            non_idempotent: false,
            buffer_body: DEFAULT_RETRY_BUFFER_BODY,
        }
    }
}

/// `health-check.interval` by default.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// `health-check.timeout` by default.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// `health-check.healthy-threshold` by default.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// `health-check.unhealthy-threshold` by default.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// `outlier.consecutive-5xx` by default.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// `outlier.consecutive-failures` by default.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 3;
/// `outlier.base-ejection` by default.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);
/// `outlier.max-ejection` by default.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
/// `outlier.max-ejected-percent` by default.
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
/// `outlier.panic-threshold` by default.
pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;
/// `breaker.minimum-requests` by default.
pub const DEFAULT_BREAKER_MINIMUM_REQUESTS: u32 = 20;
/// `breaker.window` by default.
pub const DEFAULT_BREAKER_WINDOW: Duration = Duration::from_secs(10);
/// `breaker.recovery-timeout` by default.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// `retry-budget.percent` by default.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// `retry-budget.min` by default (retries per second).
pub const DEFAULT_RETRY_BUDGET_MIN: u32 = 10;
/// A route's `retry.attempts` by default.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// A route's `retry.backoff` by default.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// A route's `retry.max-backoff` by default.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_millis(250);
/// A route's `retry.buffer-body` by default.
pub const DEFAULT_RETRY_BUFFER_BODY: u64 = 64 << 10;

// === Checks ===

impl Checker<'_, '_> {
    /// Checks `[upstreams.NAME.health-check]`.
    pub(super) fn health_check(&mut self, key: &str, raw: &RawHealthCheck) -> HealthCheck {
        let kind = match raw.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("http") => {
                let path = raw
                    .path
                    .as_ref()
                    .map_or_else(|| "/".to_string(), |p| p.get_ref().clone());
                if !path.starts_with('/') {
                    let span = raw.path.as_ref().map_or(0..0, Spanned::span);
                    self.report
                        .error(span, format!("{key}.path"), "must start with `/`");
                }
                let expect = match &raw.expect {
                    None => vec![(200, 399)],
                    Some(list) => list
                        .get_ref()
                        .iter()
                        .filter_map(|item| self.status_range(&format!("{key}.expect"), item))
                        .collect(),
                };
                CheckKind::Http {
                    path,
                    host: raw.host.clone(),
                    expect,
                }
            }
            Some("tcp") => CheckKind::Tcp,
            Some("grpc") => CheckKind::Grpc {
                service: raw
                    .service
                    .as_ref()
                    .map(|s| s.get_ref().clone())
                    .unwrap_or_default(),
            },
            Some(other) => {
                let span = raw.kind.as_ref().map_or(0..0, Spanned::span);
                self.report.error(
                    span,
                    format!("{key}.kind"),
                    format!(
                        "unknown check `{}`: expected `http`, `tcp` or `grpc`",
                        crate::text::escape_control(other)
                    ),
                );
                CheckKind::Tcp
            }
        };
        if let Some(service) = &raw.service
            && !matches!(kind, CheckKind::Grpc { .. })
        {
            self.report.error(
                service.span(),
                format!("{key}.service"),
                "only a `kind = \"grpc\"` check asks about a service",
            );
        }
        let http_only = [(&raw.path, "path")];
        for (value, name) in http_only {
            if let Some(value) = value
                && !matches!(kind, CheckKind::Http { .. })
            {
                self.report.error(
                    value.span(),
                    format!("{key}.{name}"),
                    "only an HTTP check (`kind = \"http\"`) requests a path",
                );
            }
        }
        let at_least_one = |checker: &mut Self, name: &str, value: Option<u32>, default| {
            let value = value.unwrap_or(default);
            if value == 0 {
                checker
                    .report
                    .error(0..0, format!("{key}.{name}"), "must be at least 1");
            }
            value
        };
        HealthCheck {
            kind,
            interval: raw.interval.map_or(DEFAULT_CHECK_INTERVAL, |d| d.0),
            timeout: raw.timeout.map_or(DEFAULT_CHECK_TIMEOUT, |d| d.0),
            healthy_threshold: at_least_one(
                self,
                "healthy-threshold",
                raw.healthy_threshold,
                DEFAULT_HEALTHY_THRESHOLD,
            ),
            unhealthy_threshold: at_least_one(
                self,
                "unhealthy-threshold",
                raw.unhealthy_threshold,
                DEFAULT_UNHEALTHY_THRESHOLD,
            ),
            start_unhealthy: raw.start_unhealthy.unwrap_or(false),
        }
    }

    /// A status code (`503`) or class (`"5xx"`) as an inclusive range.
    fn status_range(&mut self, key: &str, item: &Spanned<toml::Value>) -> Option<(u16, u16)> {
        let range = match item.get_ref() {
            toml::Value::Integer(code) => u16::try_from(*code)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .map(|c| (c, c)),
            toml::Value::String(class) => match class.as_bytes() {
                [d @ b'1'..=b'5', b'x', b'x'] => {
                    let base = u16::from(d - b'0') * 100;
                    Some((base, base + 99))
                }
                _ => None,
            },
            _ => None,
        };
        if range.is_none() {
            self.report.error(
                item.span(),
                key,
                "expected a status code (100-599) or a class such as \"2xx\"",
            );
        }
        range
    }

    /// Checks `[upstreams.NAME.outlier]`.
    pub(super) fn outlier(&mut self, key: &str, raw: &RawOutlier) -> Outlier {
        let percent =
            |checker: &mut Self, name: &str, value: &Option<Spanned<u32>>, default| match value {
                Some(v) if *v.get_ref() > 100 => {
                    checker.report.error(
                        v.span(),
                        format!("{key}.{name}"),
                        "is a percentage: 0-100",
                    );
                    default
                }
                Some(v) => *v.get_ref(),
                None => default,
            };
        let base_ejection = raw.base_ejection.map_or(DEFAULT_BASE_EJECTION, |d| d.0);
        let max_ejection = raw.max_ejection.map_or(DEFAULT_MAX_EJECTION, |d| d.0);
        if max_ejection < base_ejection {
            self.report.error(
                0..0,
                format!("{key}.max-ejection"),
                "must be at least `base-ejection`",
            );
        }
        Outlier {
            consecutive_5xx: raw.consecutive_5xx.unwrap_or(DEFAULT_CONSECUTIVE_5XX),
            consecutive_failures: raw
                .consecutive_failures
                .unwrap_or(DEFAULT_CONSECUTIVE_FAILURES),
            base_ejection,
            max_ejection,
            max_ejected_percent: percent(
                self,
                "max-ejected-percent",
                &raw.max_ejected_percent,
                DEFAULT_MAX_EJECTED_PERCENT,
            ),
            panic_threshold: percent(
                self,
                "panic-threshold",
                &raw.panic_threshold,
                DEFAULT_PANIC_THRESHOLD,
            ),
        }
    }

    /// Checks `[upstreams.NAME.breaker]`.
    pub(super) fn breaker(&mut self, key: &str, raw: &RawBreaker) -> BreakerConfig {
        for (max, name) in [
            (&raw.max_requests, "max-requests"),
            (&raw.max_connections, "max-connections"),
        ] {
            if let Some(max) = max
                && *max.get_ref() == 0
            {
                self.report
                    .error(max.span(), format!("{key}.{name}"), "must be at least 1");
            }
        }
        if let (Some(pending), None) = (&raw.max_pending_requests, &raw.max_connections) {
            self.report.error(
                pending.span(),
                format!("{key}.max-pending-requests"),
                "requests only wait for a connection under `max-connections`: set it too",
            );
        }
        let failure_ratio = raw.failure_ratio.as_ref().and_then(|ratio| {
            let value = *ratio.get_ref();
            if value > 0.0 && value <= 1.0 {
                Some(value)
            } else {
                self.report.error(
                    ratio.span(),
                    format!("{key}.failure-ratio"),
                    "must be above 0.0 and at most 1.0",
                );
                None
            }
        });
        BreakerConfig {
            max_requests: raw.max_requests.as_ref().map(|m| *m.get_ref()),
            max_connections: raw.max_connections.as_ref().map(|m| *m.get_ref()),
            max_pending_requests: raw.max_pending_requests.as_ref().map(|m| *m.get_ref()),
            failure_ratio,
            minimum_requests: raw
                .minimum_requests
                .unwrap_or(DEFAULT_BREAKER_MINIMUM_REQUESTS)
                .max(1),
            window: raw.window.map_or(DEFAULT_BREAKER_WINDOW, |d| d.0),
            recovery_timeout: raw
                .recovery_timeout
                .map_or(DEFAULT_RECOVERY_TIMEOUT, |d| d.0),
        }
    }

    /// Checks `[upstreams.NAME.retry-budget]`.
    pub(super) fn retry_budget(&mut self, key: &str, raw: &RawRetryBudget) -> RetryBudget {
        let percent = match &raw.percent {
            Some(p) if *p.get_ref() > 100 => {
                self.report
                    .error(p.span(), format!("{key}.percent"), "is a percentage: 0-100");
                DEFAULT_RETRY_BUDGET_PERCENT
            }
            Some(p) => *p.get_ref(),
            None => DEFAULT_RETRY_BUDGET_PERCENT,
        };
        RetryBudget {
            percent,
            min: raw.min.unwrap_or(DEFAULT_RETRY_BUDGET_MIN),
        }
    }

    /// Checks a route's `retry` table.
    pub(super) fn retry(&mut self, key: &str, raw: &RawRetry, span: Range<usize>) -> RetryPolicy {
        let defaults = RetryPolicy::default();
        let attempts = match &raw.attempts {
            Some(a) if !(1..=10).contains(a.get_ref()) => {
                self.report
                    .error(a.span(), format!("{key}.attempts"), "must be 1 to 10");
                defaults.attempts
            }
            Some(a) => *a.get_ref(),
            None => defaults.attempts,
        };
        let on = match &raw.on {
            None => defaults.on.clone(),
            Some(list) => {
                let mut on = RetryOn::default();
                for item in list.get_ref() {
                    match item.get_ref() {
                        toml::Value::String(s) if s == "connect-failure" => on.connect_failure = true,
                        toml::Value::String(s) if s == "reset" => on.reset = true,
                        toml::Value::String(s) if s == "timeout" => on.timeout = true,
                        toml::Value::Integer(code) if (500..=599).contains(code) || *code == 429 => {
                            on.statuses.push(*code as u16)
                        }
                        _ => self.report.error(
                            item.span(),
                            format!("{key}.on"),
                            "expected `connect-failure`, `reset`, `timeout`, 429 or a 5xx status code",
                        ),
                    }
                }
                on
            }
        };
        let backoff = raw.backoff.map_or(defaults.backoff, |d| d.0);
        let max_backoff = raw.max_backoff.map_or(defaults.max_backoff, |d| d.0);
        if max_backoff < backoff {
            self.report.error(
                span,
                format!("{key}.max-backoff"),
                "must be at least `backoff`",
            );
        }
        RetryPolicy {
            attempts,
            on,
            per_try_timeout: raw.per_try_timeout.map(|d| d.0),
            backoff,
            max_backoff,
            non_idempotent: raw.non_idempotent.unwrap_or(false),
            buffer_body: raw.buffer_body.map_or(defaults.buffer_body, |b| b.0),
        }
    }
}
