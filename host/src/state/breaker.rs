//! A circuit breaker: after a run of failed calls it keeps calls away from the backend for
//! a cool-off, then lets one call probe it; the probe's success closes it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Call the backend.
    Call,
    /// Call the backend as the one probe after a cool-off.
    Probe,
    /// Do not call: the breaker is open.
    Reject,
}

/// A breaker that opens after `threshold` consecutive failures for `cool_off`.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_off: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// A change of the breaker's state, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The breaker opened (or stayed open after a failed probe).
    Opened,
    /// The breaker closed: the backend answered again.
    Closed,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cool_off: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_off,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a call may go to the backend now.
    pub fn admit(&self) -> Admit {
        let Ok(mut state) = self.state.lock() else {
            return Admit::Call;
        };
        match state.open_until {
            None => Admit::Call,
            Some(until) if Instant::now() < until || state.probing => Admit::Reject,
            Some(_) => {
                state.probing = true;
                Admit::Probe
            }
        }
    }

    /// Records a call that the backend answered.
    pub fn success(&self) -> Transition {
        let Ok(mut state) = self.state.lock() else {
            return Transition::None;
        };
        let was_open = state.open_until.is_some();
        *state = State::default();
        if was_open {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    /// Records a call that failed (error or timeout).
    pub fn failure(&self) -> Transition {
        let Ok(mut state) = self.state.lock() else {
            return Transition::None;
        };
        state.failures = state.failures.saturating_add(1);
        let trips =
            state.probing || (state.open_until.is_none() && state.failures >= self.threshold);
        if !trips {
            return Transition::None;
        }
        state.open_until = Some(Instant::now() + self.cool_off);
        state.probing = false;
        Transition::Opened
    }

    /// Records a probe that ended without an answer either way (its request was cancelled):
    /// the breaker stays open for another cool-off, and the next one probes again.
    pub fn abandon_probe(&self) {
        if let Ok(mut state) = self.state.lock()
            && state.probing
        {
            state.probing = false;
            state.open_until = Some(Instant::now() + self.cool_off);
        }
    }

    /// Whether the breaker is open (calls are kept away or only a probe goes).
    pub fn is_open(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.open_until.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_then_probes_once_after_the_cool_off() {
        let breaker = Breaker::new(3, Duration::from_millis(20));
        assert_eq!(breaker.failure(), Transition::None);
        assert_eq!(breaker.failure(), Transition::None);
        assert_eq!(breaker.admit(), Admit::Call);
        assert_eq!(breaker.failure(), Transition::Opened);
        assert_eq!(breaker.admit(), Admit::Reject);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(breaker.admit(), Admit::Probe);
        assert_eq!(breaker.admit(), Admit::Reject, "one probe at a time");
        assert_eq!(
            breaker.failure(),
            Transition::Opened,
            "a failed probe reopens"
        );
        assert_eq!(breaker.admit(), Admit::Reject);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(breaker.admit(), Admit::Probe);
        assert_eq!(breaker.success(), Transition::Closed);
        assert_eq!(breaker.admit(), Admit::Call);
        assert!(!breaker.is_open());
    }

    #[test]
    fn an_abandoned_probe_does_not_leave_the_breaker_stuck() {
        let breaker = Breaker::new(1, Duration::from_millis(10));
        breaker.failure();
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(breaker.admit(), Admit::Probe);
        breaker.abandon_probe();
        assert_eq!(breaker.admit(), Admit::Reject, "a new cool-off");
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(breaker.admit(), Admit::Probe, "and a new probe after it");
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.failure();
        breaker.success();
        assert_eq!(breaker.failure(), Transition::None);
        assert_eq!(breaker.failure(), Transition::Opened);
    }
}
