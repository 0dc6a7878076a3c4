//! The operations a plugin may run on shared state, their bounds, and their outcomes.

use std::time::Duration;

/// The longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value a plugin may store under one key-value key, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// The longest time-to-live of a key-value entry: 30 days.
pub const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// The longest counter window or GCRA period: about ten years.
pub const MAX_WINDOW_MS: u64 = 3650 * 24 * 3600 * 1000;

/// One operation on shared state, in a plugin's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `counters.increment`: add `delta` to a counter that expires `window` after its
    /// first increment.
    Increment {
        /// The counter.
        key: String,
        /// What to add (0 reads).
        delta: u64,
        /// Its lifetime from the first increment.
        window: Duration,
    },
    /// `limiter.window`: add `delta` to the current fixed window of `key` (windows aligned
    /// to the backend's clock) and read the previous window too.
    Window {
        /// The counter family.
        key: String,
        /// What to add to the current window (0 reads).
        delta: u64,
        /// The window length.
        window: Duration,
    },
    /// `limiter.gcra`: take `cost` from a GCRA cell allowing `limit` per `period`, with
    /// bursts of `burst`.
    Gcra {
        /// The cell.
        key: String,
        /// Requests per period.
        limit: u64,
        /// The period.
        period: Duration,
        /// Requests allowed at once from idle.
        burst: u64,
        /// What this request costs (0 reads).
        cost: u64,
    },
    /// `kv.get`.
    Get {
        /// The key.
        key: String,
    },
    /// `kv.set`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Time to live.
        ttl: Duration,
    },
    /// `kv.compare-and-set`: set `value` only if the current value is `expected`
    /// (`None`: only if there is none).
    CompareAndSet {
        /// The key.
        key: String,
        /// The value the caller saw.
        expected: Option<Vec<u8>>,
        /// The new value.
        value: Vec<u8>,
        /// Time to live.
        ttl: Duration,
    },
    /// `kv.delete`.
    Delete {
        /// The key.
        key: String,
    },
}

/// What an operation returned, one variant per kind of operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A counter's new value.
    Count(u64),
    /// A window pair.
    Window(WindowCount),
    /// A GCRA decision.
    Gcra(GcraDecision),
    /// A value read, if any.
    Value(Option<Vec<u8>>),
    /// A write done.
    Done,
    /// Whether a compare-and-set wrote, or a delete removed something.
    Changed(bool),
}

/// The current and previous fixed windows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCount {
    /// The current window's count, this call's delta included.
    pub current: u64,
    /// The previous window's count.
    pub previous: u64,
    /// Milliseconds since the current window started, on the backend's clock.
    pub elapsed_ms: u64,
}

/// A GCRA verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcraDecision {
    /// Whether the cost was taken.
    pub allowed: bool,
    /// Requests that could still go at once.
    pub remaining: u64,
    /// When refused, milliseconds until the same cost would be allowed.
    pub retry_after_ms: u64,
    /// Milliseconds until the cell is idle (full burst) again.
    pub reset_after_ms: u64,
}

impl Op {
    /// The operation's name, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Increment { .. } => "increment",
            Op::Window { .. } => "window",
            Op::Gcra { .. } => "gcra",
            Op::Get { .. } => "kv_get",
            Op::Set { .. } => "kv_set",
            Op::CompareAndSet { .. } => "kv_compare_and_set",
            Op::Delete { .. } => "kv_delete",
        }
    }

    /// The key the operation names.
    pub fn key(&self) -> &str {
        match self {
            Op::Increment { key, .. }
            | Op::Window { key, .. }
            | Op::Gcra { key, .. }
            | Op::Get { key }
            | Op::Set { key, .. }
            | Op::CompareAndSet { key, .. }
            | Op::Delete { key } => key,
        }
    }

    /// Checks the plugin's arguments against the bounds. A refusal is the plugin's own
    /// doing: it never reaches the backend, its breaker or its failure policy.
    pub fn check(&self) -> Result<(), String> {
        if self.key().len() > MAX_KEY_BYTES {
            return Err(format!("keys are limited to {MAX_KEY_BYTES} bytes"));
        }
        let within = |ttl: &Duration, what: &str, max: u64| {
            let ms = ttl.as_millis();
            if ms == 0 || ms > u128::from(max) {
                Err(format!("{what} must be 1 to {max} ms"))
            } else {
                Ok(())
            }
        };
        let ttl_ok = |ttl: &Duration, what: &str| within(ttl, what, MAX_TTL_MS);
        let window_ok = |window: &Duration, what: &str| within(window, what, MAX_WINDOW_MS);
        let value_ok = |value: &[u8]| {
            if value.len() > MAX_VALUE_BYTES {
                Err(format!("values are limited to {MAX_VALUE_BYTES} bytes"))
            } else {
                Ok(())
            }
        };
        match self {
            Op::Increment { window, .. } | Op::Window { window, .. } => {
                window_ok(window, "window-ms")
            }
            Op::Gcra {
                limit,
                period,
                burst,
                cost,
                ..
            } => {
                if *limit == 0 || *burst == 0 {
                    return Err("limit and burst must be at least 1".to_string());
                }
                window_ok(period, "period-ms")?;
                if *cost > *burst {
                    return Err("cost must be at most burst".to_string());
                }
                if emission_interval_us(*limit, *period) == 0 {
                    return Err(
                        "limit per period-ms is too high (more than 1 per microsecond)".into(),
                    );
                }
                Ok(())
            }
            Op::Get { .. } | Op::Delete { .. } => Ok(()),
            Op::Set { value, ttl, .. } => {
                value_ok(value)?;
                ttl_ok(ttl, "ttl-ms")
            }
            Op::CompareAndSet {
                expected,
                value,
                ttl,
                ..
            } => {
                value_ok(value)?;
                if let Some(expected) = expected {
                    value_ok(expected)?;
                }
                ttl_ok(ttl, "ttl-ms")
            }
        }
    }
}

/// GCRA's emission interval: microseconds per request.
pub(super) fn emission_interval_us(limit: u64, period: Duration) -> u64 {
    (period.as_micros() / u128::from(limit.max(1))) as u64
}

/// One GCRA step in microseconds: the decision, and the new theoretical arrival time to
/// store when allowed. `tat` is the stored one (`None`: idle cell).
pub(super) fn gcra_step(
    now_us: u64,
    tat: Option<u64>,
    interval_us: u64,
    burst: u64,
    cost: u64,
) -> (GcraDecision, Option<u64>) {
    let tat = tat.unwrap_or(now_us).max(now_us);
    let new_tat = tat.saturating_add(interval_us.saturating_mul(cost));
    let tolerance = interval_us.saturating_mul(burst);
    let allow_at = new_tat.saturating_sub(tolerance);
    if now_us < allow_at {
        let decision = GcraDecision {
            allowed: false,
            remaining: 0,
            retry_after_ms: (allow_at - now_us).div_ceil(1000),
            reset_after_ms: (tat - now_us).div_ceil(1000),
        };
        return (decision, None);
    }
    let decision = GcraDecision {
        allowed: true,
        remaining: (now_us + tolerance - new_tat) / interval_us.max(1),
        retry_after_ms: 0,
        reset_after_ms: (new_tat - now_us).div_ceil(1000),
    };
    (decision, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_one_per_interval() {
        let interval = 100_000; // 10 per second
        let mut tat = None;
        let now = 1_000_000_000;
        for expected_remaining in [2, 1, 0] {
            let (decision, next) = gcra_step(now, tat, interval, 3, 1);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = next;
        }
        let (refused, next) = gcra_step(now, tat, interval, 3, 1);
        assert!(!refused.allowed && next.is_none());
        assert_eq!(refused.retry_after_ms, 100);
        let (later, _) = gcra_step(now + 100_000, tat, interval, 3, 1);
        assert!(later.allowed, "one interval later one more goes");
    }

    #[test]
    fn bounds_are_checked_before_any_backend_sees_the_op() {
        let long = Op::Get {
            key: "k".repeat(MAX_KEY_BYTES + 1),
        };
        assert!(long.check().is_err());
        let big = Op::Set {
            key: "k".into(),
            value: vec![0; MAX_VALUE_BYTES + 1],
            ttl: Duration::from_secs(1),
        };
        assert!(big.check().is_err());
        let forever = Op::Set {
            key: "k".into(),
            value: vec![],
            ttl: Duration::ZERO,
        };
        assert!(forever.check().is_err());
        let ok = Op::Gcra {
            key: "k".into(),
            limit: 10,
            period: Duration::from_secs(1),
            burst: 5,
            cost: 1,
        };
        assert_eq!(ok.check(), Ok(()));
    }
}
