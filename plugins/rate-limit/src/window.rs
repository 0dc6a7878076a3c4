//! The arithmetic of fixed and sliding windows. Pure: counts and the clock
//! come in as arguments, so every case is testable without a counter store.

/// How a limit counts requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// One counter per window: simple and exact, but allows a burst of up to
    /// twice the limit across a window boundary.
    Fixed,
    /// The current window's count plus the previous window's, weighted by how
    /// much of the previous window still overlaps the last `window`: smooths
    /// out boundary bursts with two counters.
    Sliding,
    /// The generic cell rate algorithm: requests spread evenly over the
    /// window, with bursts of up to `burst` from idle; no boundary bursts,
    /// one cell per client, and refused requests do not count.
    Gcra,
}

/// The outcome of one limit for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Whether the request is within the limit.
    pub allowed: bool,
    /// The limit's request count.
    pub limit: u64,
    /// Requests still allowed in the window (after this one).
    pub remaining: u64,
    /// Milliseconds until the window resets (fixed) or moves on (sliding).
    pub reset_ms: u64,
    /// When refused: milliseconds until a request would be allowed again.
    pub retry_after_ms: u64,
}

/// The index of the window `now_ms` falls in, and how far into it we are.
pub fn window_position(now_ms: u64, window_ms: u64) -> (u64, u64) {
    (now_ms / window_ms, now_ms % window_ms)
}

/// A fixed window, where `count` is the window's counter including this request
/// and `now_ms` is the time (or the time into the window) on the counter's clock.
pub fn fixed(limit: u64, window_ms: u64, now_ms: u64, count: u64) -> Decision {
    let (_, elapsed) = window_position(now_ms, window_ms);
    let reset_ms = window_ms - elapsed;
    let allowed = count <= limit;
    Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        reset_ms,
        retry_after_ms: if allowed { 0 } else { reset_ms },
    }
}

/// A sliding window, where `current` is this window's counter including this
/// request and `previous` the previous window's final count.
///
/// The estimate of requests in the last `window_ms` is
/// `previous * (1 - elapsed / window) + current`.
pub fn sliding(limit: u64, window_ms: u64, now_ms: u64, previous: u64, current: u64) -> Decision {
    let (_, elapsed) = window_position(now_ms, window_ms);
    let window = window_ms as f64;
    let weight = (window_ms - elapsed) as f64 / window;
    let estimate = previous as f64 * weight + current as f64;
    let limit_f = limit as f64;
    let allowed = estimate <= limit_f;
    let remaining = (limit_f - estimate).floor().max(0.0) as u64;
    let retry_after_ms = if allowed {
        0
    } else {
        sliding_wait(
            limit_f,
            window,
            elapsed as f64,
            previous as f64,
            current as f64,
        )
    };
    Decision {
        allowed,
        limit,
        remaining,
        reset_ms: window_ms - elapsed,
        retry_after_ms,
    }
}

/// How long until one more request fits, assuming no other requests arrive.
fn sliding_wait(limit: f64, window: f64, elapsed: f64, previous: f64, current: f64) -> u64 {
    // Later in this window: previous * (window - t) / window + current + 1 <= limit.
    if current + 1.0 <= limit {
        if previous <= 0.0 {
            return 0;
        }
        let t = window - (limit - current - 1.0) * window / previous;
        return (t - elapsed).max(0.0).ceil() as u64;
    }
    // In the next window, where this window's count becomes the previous one:
    // current * (window - t) / window + 1 <= limit.
    let into_next = if current <= 0.0 {
        0.0
    } else {
        (window * (1.0 - (limit - 1.0) / current)).max(0.0)
    };
    (window - elapsed + into_next).ceil() as u64
}

/// Parses a window length: a whole number and a unit, `ms`, `s`, `m`, `h`
/// or `d` (`500ms`, `1s`, `15m`, `1h`, `1d`).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("`{text}` has no unit: write e.g. `1s`, `500ms`, `15m`, `1h`, `1d`")
    })?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m, h or d"
            ));
        }
    };
    match number.checked_mul(unit_ms) {
        Some(0) => Err("a window must be longer than zero".to_string()),
        Some(ms) => Ok(ms),
        None => Err(format!("`{text}` is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_counts_and_resets() {
        // 10 per second, 250 ms into a window.
        let ok = fixed(10, 1_000, 5_250, 10);
        assert!(ok.allowed);
        assert_eq!((ok.remaining, ok.reset_ms, ok.retry_after_ms), (0, 750, 0));
        let refused = fixed(10, 1_000, 5_250, 11);
        assert!(!refused.allowed);
        assert_eq!((refused.remaining, refused.retry_after_ms), (0, 750));
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        // 100 per minute; 40 in the previous window; 15 s (a quarter) in.
        // Estimate = 40 * 0.75 + current.
        let d = sliding(100, 60_000, 15_000, 40, 70);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        let d = sliding(100, 60_000, 15_000, 40, 71);
        assert!(!d.allowed);
        // 71 + 1 <= 100, so it frees up later in this window once the
        // previous window's weight has dropped to 28 / 40 = 0.7 of a window:
        // t = 60 - 28 * 60 / 40 = 18 s, i.e. 3 s from now.
        assert_eq!(d.retry_after_ms, 3_000);
        let d = sliding(100, 60_000, 15_000, 0, 50);
        assert!(d.allowed);
        assert_eq!(d.remaining, 50);
    }

    #[test]
    fn sliding_window_full_current_waits_into_the_next_window() {
        // 10 per 10 s; 12 (two refused) this window, 8 s in. In the next
        // window, 12 * (10 - t) / 10 + 1 <= 10 needs t >= 2.5 s: 2 + 2.5 s.
        let d = sliding(10, 10_000, 8_000, 0, 12);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 4_500);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("1s"), Ok(1_000));
        assert_eq!(parse_duration(" 15m "), Ok(900_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("1w")
                .unwrap_err()
                .contains("unknown unit `w`")
        );
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(parse_duration("s").is_err());
    }
}
