//! Retry delays: the one exponential backoff with jitter every retry loop in Shoal uses
//! (following the store again, registering a node, writing task statuses, reconciling a
//! service again, talking to Consul or Docker).
//!
//! A [`Backoff`] is a policy: the first delay and the longest. [`Backoff::delays`] gives the
//! delays of one run of retries: each ceiling double the last, capped at the longest, and
//! each delay drawn at random between half and all of its ceiling, so clients retrying
//! after the same outage spread out. [`Delays`] is an iterator of durations, so it also
//! drives `backon`'s `.retry(...)`; [`Delays::sleep`] waits for the next delay unless a
//! [`CancellationToken`] fires first.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// A retry policy: exponential backoff from `base` up to `max`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Ceiling of every later delay.
    pub max: Duration,
}

impl Backoff {
    /// Reaching the store again (watches, lists, status writes): 100 ms up to 5 s.
    pub const STORE: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    /// A policy from `base` up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// The same policy with a different longest delay.
    pub const fn with_max(self, max: Duration) -> Self {
        Backoff { max, ..self }
    }

    /// The ceiling of the delay before retry number `attempt` (1 is the first retry):
    /// `base · 2^(attempt-1)`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(24);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The delay before retry number `attempt`: drawn between half and all of its ceiling.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt)
            .mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// The delays of one run of retries, endless (see [`Delays::with_max_times`]).
    pub fn delays(&self) -> Delays {
        Delays {
            backoff: *self,
            attempt: 0,
            left: None,
        }
    }
}

/// The delays of one run of retries (see [`Backoff::delays`]).
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    attempt: u32,
    left: Option<usize>,
}

impl Delays {
    /// Gives at most `times` delays (then the iterator ends: `backon` gives up).
    pub fn with_max_times(mut self, times: usize) -> Self {
        self.left = Some(times);
        self
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay (the longest once a limited run is over).
    pub fn next_delay(&mut self) -> Duration {
        self.next().unwrap_or(self.backoff.max)
    }

    /// Sleeps for the next delay; false when `cancel` fired first (or had already).
    pub async fn sleep(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => !cancel.is_cancelled(),
            () = cancel.cancelled() => false,
        }
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if let Some(left) = &mut self.left {
            *left = left.checked_sub(1)?;
        }
        self.attempt = self.attempt.saturating_add(1);
        Some(self.backoff.delay(self.attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_max_with_jitter_and_reset() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let ceilings: Vec<Duration> = (1..=5).map(|n| b.ceiling(n)).collect();
        let ms = Duration::from_millis;
        assert_eq!(ceilings, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(
            b.ceiling(u32::MAX),
            ms(500),
            "no overflow however long it fails"
        );
        let mut delays = b.delays();
        for ceiling in &ceilings {
            let d = delays.next_delay();
            assert!(
                d >= *ceiling / 2 && d <= *ceiling,
                "{d:?} within half of {ceiling:?}"
            );
        }
        delays.reset();
        assert!(
            delays.next_delay() <= ms(100),
            "a reset starts again from the first delay"
        );
        let limited: Vec<Duration> = b.delays().with_max_times(3).collect();
        assert_eq!(limited.len(), 3, "a limited run ends");
    }

    #[tokio::test]
    async fn sleep_stops_at_cancellation() {
        let cancel = CancellationToken::new();
        let mut delays =
            Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)).delays();
        cancel.cancel();
        assert!(
            !delays.sleep(&cancel).await,
            "a cancelled sleep returns at once with false"
        );
        let mut quick = Backoff::new(Duration::from_millis(1), Duration::from_millis(1)).delays();
        assert!(quick.sleep(&CancellationToken::new()).await);
    }
}
