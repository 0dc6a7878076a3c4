//! Retries: the budget that keeps them from multiplying load on an upstream that is
//! failing, and the backoff between attempts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderMap;

use crate::config::{RetryBudget, RetryPolicy};

/// Requests and retries in flight to one upstream (the route's requests and the calls
/// aggregate plugins plan alike).
#[derive(Debug)]
pub struct Budget {
    config: RetryBudget,
    requests: AtomicUsize,
    retries: AtomicUsize,
}

/// Counts a request (or a retry) as in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    /// An empty budget.
    pub fn new(config: RetryBudget) -> Self {
        Self {
            config,
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        }
    }

    /// Counts a request in flight.
    pub fn request(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::AcqRel);
        InFlight(&self.requests)
    }

    /// A retry, if the budget allows one more in flight: `percent` of the requests in
    /// flight, and never fewer than `min`.
    pub fn retry(&self) -> Option<InFlight<'_>> {
        let requests = self.requests.load(Ordering::Acquire);
        let allowed = (requests * self.config.percent as usize / 100).max(self.config.min as usize);
        let before = self.retries.fetch_add(1, Ordering::AcqRel);
        let permit = InFlight(&self.retries);
        (before < allowed).then_some(permit)
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
    fn the_budget_allows_a_share_of_requests_and_a_minimum() {
        let budget = Budget::new(RetryBudget {
            percent: 20,
            min: 2,
        });
        let _requests: Vec<_> = (0..20).map(|_| budget.request()).collect();
        // 20 % of 20 in flight: 4.
        let retries: Vec<_> = (0..6).filter_map(|_| budget.retry()).collect();
        assert_eq!(retries.len(), 4);
        drop(retries);
        drop(_requests);
        let retries: Vec<_> = (0..6).filter_map(|_| budget.retry()).collect();
        assert_eq!(retries.len(), 2, "the minimum with nothing in flight");
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
