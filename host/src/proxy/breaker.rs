//! An upstream's circuit breaker: a cap on requests in flight, and an error-rate breaker
//! (closed → open when the failure ratio over a sliding window passes the threshold →
//! half-open after the recovery timeout, where one probe decides).
//!
//! An open breaker refuses at once: the request is answered 503 without waiting on the
//! upstream.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// Buckets of the sliding window.
const BUCKETS: usize = 10;

/// Why the breaker refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max-requests` are in flight.
    Full(usize),
    /// `max-pending-requests` already wait for a connection (`max-connections` are open).
    Pending(usize),
    /// The error-rate breaker is open (or half-open with its probe out).
    Open,
}

/// The breaker's state, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Requests pass.
    Closed,
    /// Requests are refused.
    Open,
    /// One probe is let through.
    HalfOpen,
}

#[derive(Debug)]
struct Window {
    state: State,
    /// When the breaker last opened.
    opened: Instant,
    /// Whether the half-open probe is out.
    probing: bool,
    /// (successes, failures) per bucket, and the bucket's start.
    buckets: [(u32, u32, Option<Instant>); BUCKETS],
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    in_flight: AtomicUsize,
    window: Mutex<Window>,
}

/// A request admitted by the breaker: counts as in flight until dropped; report its
/// outcome with [`Permit::record`].
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            in_flight: AtomicUsize::new(0),
            window: Mutex::new(Window {
                state: State::Closed,
                opened: Instant::now(),
                probing: false,
                buckets: [(0, 0, None); BUCKETS],
            }),
        }
    }

    /// The error-rate breaker's state.
    pub fn state(&self) -> State {
        self.window.lock().expect("breaker lock").state
    }

    /// Admits a request, or says why not.
    pub fn admit(&self) -> Result<Permit<'_>, Refusal> {
        let mut probe = false;
        if self.config.failure_ratio.is_some() {
            let mut window = self.window.lock().expect("breaker lock");
            match window.state {
                State::Closed => {}
                State::Open if window.opened.elapsed() >= self.config.recovery_timeout => {
                    window.state = State::HalfOpen;
                    window.probing = true;
                    probe = true;
                }
                State::HalfOpen if !window.probing => {
                    window.probing = true;
                    probe = true;
                }
                State::Open | State::HalfOpen => return Err(Refusal::Open),
            }
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            breaker: self,
            probe,
        };
        if let Some(max) = self.config.max_requests
            && before >= max
        {
            drop(permit);
            return Err(Refusal::Full(max));
        }
        Ok(permit)
    }
}

impl Permit<'_> {
    /// Records whether the request succeeded (a response below 500).
    pub fn record(&mut self, success: bool) {
        let breaker = self.breaker;
        let Some(ratio) = breaker.config.failure_ratio else {
            return;
        };
        let mut window = breaker.window.lock().expect("breaker lock");
        if std::mem::take(&mut self.probe) {
            window.probing = false;
            if success {
                window.state = State::Closed;
                window.buckets = [(0, 0, None); BUCKETS];
            } else {
                window.state = State::Open;
                window.opened = Instant::now();
            }
            return;
        }
        if window.state != State::Closed {
            return;
        }
        let now = Instant::now();
        let width = breaker.config.window / BUCKETS as u32;
        let slot = bucket_of(now, width);
        let bucket = &mut window.buckets[slot];
        if bucket
            .2
            .is_none_or(|start| now.duration_since(start) >= width)
        {
            *bucket = (0, 0, Some(now));
        }
        if success {
            bucket.0 += 1;
        } else {
            bucket.1 += 1;
        }
        let (ok, failed) = window
            .buckets
            .iter()
            .filter(|(_, _, start)| {
                start.is_some_and(|s| now.duration_since(s) < breaker.config.window)
            })
            .fold((0u32, 0u32), |(a, b), (s, f, _)| (a + s, b + f));
        let total = ok + failed;
        if total >= breaker.config.minimum_requests && f64::from(failed) >= ratio * f64::from(total)
        {
            window.state = State::Open;
            window.opened = now;
            tracing::warn!(failed, total, "circuit breaker opened");
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.breaker.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.probe {
            // A probe that ended without an outcome (cancelled) lets the next one through.
            self.breaker.window.lock().expect("breaker lock").probing = false;
        }
    }
}

/// The bucket a moment falls in: time is cut into `width` slices, taken in turn.
fn bucket_of(now: Instant, width: Duration) -> usize {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let width = width.as_nanos().max(1);
    ((now.duration_since(start).as_nanos() / width) % BUCKETS as u128) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(max_requests: Option<usize>) -> Breaker {
        Breaker::new(BreakerConfig {
            max_requests,
            failure_ratio: Some(0.5),
            minimum_requests: 4,
            window: Duration::from_secs(10),
            recovery_timeout: Duration::ZERO,
            ..BreakerConfig::default()
        })
    }

    #[test]
    fn failures_open_it_and_one_good_probe_closes_it() {
        let breaker = breaker(None);
        for _ in 0..4 {
            breaker.admit().unwrap().record(false);
        }
        assert_eq!(breaker.state(), State::Open);
        // Recovery timeout 0: the next request is the probe; others are refused meanwhile.
        let mut probe = breaker.admit().unwrap();
        assert_eq!(breaker.admit().unwrap_err(), Refusal::Open);
        probe.record(true);
        drop(probe);
        assert_eq!(breaker.state(), State::Closed);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn requests_in_flight_are_capped() {
        let breaker = breaker(Some(2));
        let (a, b) = (breaker.admit().unwrap(), breaker.admit().unwrap());
        assert_eq!(breaker.admit().unwrap_err(), Refusal::Full(2));
        drop((a, b));
        assert!(breaker.admit().is_ok());
    }
}
