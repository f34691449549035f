//! Backoff for the agent's own retries of cloud calls (on top of the SDK's three attempts):
//! exponential with "equal jitter" — half the step fixed, half random — so a fleet that failed
//! together does not retry in lockstep, and every wait is at least half its step (the spacing a
//! test can rely on).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
    cap: Duration,
}

impl Backoff {
    /// Steps start at `first` and double up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self { step: first, cap }
    }

    /// The standard for Auto Scaling calls: 1 s, doubling to 30 s.
    pub fn aws() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// The next wait: between half the step and the step; the step then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let half = self.step / 2;
        let delay = half + half.mul_f64(fastrand::f64());
        self.step = (self.step * 2).min(self.cap);
        delay
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self, first: Duration) {
        self.step = first;
    }
}

/// Asserts that the gaps (seconds) between successive tries follow `steps` the way
/// [`Backoff::next_delay`] spaces them: each gap between half its step and the whole step.
#[cfg(test)]
pub(crate) fn assert_backoff_gaps(gaps: &[f64], steps: &[f64]) {
    assert!(gaps.len() >= steps.len(), "too few tries: {gaps:?}");
    for (gap, step) in gaps.iter().zip(steps) {
        assert!(
            *gap >= step / 2.0 && gap <= step,
            "backoff {gaps:?} against steps {steps:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_half_and_whole_step_and_stop_at_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let steps = [1, 2, 4, 8, 8, 8];
        for step in steps {
            let d = b.next_delay();
            let step = Duration::from_secs(step);
            assert!(d >= step / 2 && d <= step, "{d:?} for step {step:?}");
        }
    }
}
