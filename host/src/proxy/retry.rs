//! Retries: the budget that keeps them from multiplying load on an upstream that is
//! failing, and the backoff between attempts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::config::{RetryBudget, RetryPolicy};

/// An upstream's retry budget, shared by the routes' requests and the calls aggregate
/// plugins plan (Linkerd's model): each request adds `percent` % of a retry to the budget
/// (at most [`MAX_SAVED`] retries are saved), each retry takes one whole, and `min` retries per
/// second are always allowed. When everything fails, an upstream sees at most about
/// `1 + percent/100` times its traffic (plus `min` per second), however many attempts routes
/// allow; when one target dies, the retries of its requests in flight are covered.
#[derive(Debug)]
pub struct Budget {
    config: RetryBudget,
    /// Saved retries, in thousandths.
    saved: AtomicU64,
    /// The second the minimum counts in, and the retries it took from it.
    floor: Mutex<(Instant, u32)>,
}

/// Retries the budget saves at most.
pub const MAX_SAVED: u64 = 1000;

impl Budget {
    /// An empty budget.
    pub fn new(config: RetryBudget) -> Self {
        Self {
            config,
            saved: AtomicU64::new(0),
            floor: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Counts a request: it adds its share to the budget.
    pub fn deposit(&self) {
        let share = u64::from(self.config.percent) * 10;
        let _ = self
            .saved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |saved| {
                (saved < MAX_SAVED * 1000).then_some(saved + share)
            });
    }

    /// Whether one more retry is allowed (and takes it from the budget).
    pub fn withdraw(&self) -> bool {
        let taken = self
            .saved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |saved| {
                saved.checked_sub(1000)
            })
            .is_ok();
        if taken {
            return true;
        }
        let mut floor = self.floor.lock().expect("budget lock");
        if floor.0.elapsed() >= Duration::from_secs(1) {
            *floor = (Instant::now(), 0);
        }
        if floor.1 < self.config.min {
            floor.1 += 1;
            return true;
        }
        false
    }
}

/// The wait before retry number `retry` (1 for the first): full jitter over an exponential
/// ceiling, `backoff × 2^(retry-1)` capped at `max-backoff`.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let ceiling = policy
        .backoff
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(policy.max_backoff);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=nanos))
}

/// An upstream's `Retry-After` in seconds, when it asks for a wait; `Err` when the wait
/// is longer than the policy allows (the answer is then passed on, not retried).
pub fn retry_after(policy: &RetryPolicy, headers: &HeaderMap) -> Result<Option<Duration>, ()> {
    let Some(seconds) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return Ok(None);
    };
    let wait = Duration::from_secs(seconds);
    if wait > policy.max_backoff {
        Err(())
    } else {
        Ok(Some(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_share_of_requests_and_a_minimum_per_second() {
        let budget = Budget::new(RetryBudget {
            percent: 20,
            min: 2,
        });
        // Nothing saved yet: the minimum only.
        assert_eq!((0..5).filter(|_| budget.withdraw()).count(), 2);
        // 20 requests save 4 retries.
        for _ in 0..20 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 4);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = RetryPolicy::default();
        for retry in 1..8 {
            assert!(backoff(&policy, retry) <= policy.max_backoff);
        }
        assert!(backoff(&policy, 1) <= policy.backoff);
    }
}
