//! Telling that the leader's lease has run out before the store removes it, so that a
//! standby takes over at the end of the lease rather than at the store's next look for
//! run-out leases (etcd looks every 500 ms).
//!
//! A report of the time left says: less than `below` was left at some instant while the
//! store answered. Two reports prove the lease ran out, by the store's clock, when
//!
//! - the second was asked for at least `below₁` after the first was answered: unless it was
//!   refreshed between them, the lease had run out by then; and
//! - the second was answered less than `granted − below₂` after the first was asked for: a
//!   refresh between them would have restored `granted`, and less than `below₂` could not
//!   be left yet.
//!
//! etcd refuses to refresh a lease that has run out, so it cannot come back: revoking it is
//! what the store would do itself a little later. Both intervals are measured on this
//! process's monotonic clock, whose rate is the store's.

use std::time::Duration;

use shoal_store::{LeaseId, LeaseLeft, Store, StoreError};
use tokio::time::Instant;

/// One report: asked at `asked`, answered at `answered`, less than `below` left.
#[derive(Debug, Clone, Copy)]
struct Report {
    asked: Instant,
    answered: Instant,
    below: Duration,
}

impl Report {
    /// The latest instant the lease can end at without another refresh.
    fn end_bound(&self) -> Instant {
        self.answered + self.below
    }
}

/// What the reports so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The lease has run out.
    RunOut,
    /// Not known yet: ask again.
    Unknown,
    /// Reports this coarse can never prove it (a TTL of at most two steps).
    Unprovable,
}

/// The reports of one lease's time left, and whether they prove it ran out.
#[derive(Debug, Default)]
pub struct LeaseEnd {
    /// The report the next is paired with: the one bounding the lease's end soonest.
    first: Option<Report>,
    /// The last report's bound and step: how near the end the lease may be.
    last: Option<(Duration, Duration)>,
}

impl LeaseEnd {
    /// Takes the store's report `left`, asked for at `asked` and answered at `answered`.
    pub fn report(&mut self, asked: Instant, answered: Instant, left: LeaseLeft) -> Verdict {
        let (below, granted, step) = match left {
            LeaseLeft::Gone => return Verdict::RunOut,
            LeaseLeft::Below {
                below,
                granted,
                step,
            } => (below, granted, step),
        };
        if granted <= step * 2 {
            return Verdict::Unprovable;
        }
        self.last = Some((below, step));
        let now = Report {
            asked,
            answered,
            below,
        };
        if let Some(first) = self.first {
            let ran_out_unless_refreshed = asked >= first.answered + first.below;
            let no_refresh_between = answered < first.asked + granted.saturating_sub(below);
            if ran_out_unless_refreshed && no_refresh_between {
                return Verdict::RunOut;
            }
            // A first report too old to pair with any later one, or one bounding the end
            // later than this one, gives way to this one.
            let stale = answered >= first.asked + granted.saturating_sub(step);
            if !stale && first.end_bound() <= now.end_bound() {
                return Verdict::Unknown;
            }
        }
        self.first = Some(now);
        Verdict::Unknown
    }

    /// How long to wait, at `now`, before asking again. Once the first report and the last
    /// say the lease is in its last step, until the instant the pair can prove its end (a
    /// tenth of `poll` at least); while the last report says it is within two steps of it, a
    /// tenth of `poll`, to see it enter its last step soon after it does; `poll` otherwise.
    /// A lease refreshed in time never comes within two steps of its end (a leader refreshes
    /// it with two thirds of its TTL left), so the short waits are for a leader that stopped.
    pub fn wait(&self, now: Instant, poll: Duration) -> Duration {
        let fine = poll / 10;
        let Some((below, step)) = self.last.filter(|(below, step)| *below <= *step * 2) else {
            return poll;
        };
        match self.first {
            Some(first) if first.below <= step && below <= step => {
                let provable_at = first.answered + first.below;
                provable_at.saturating_duration_since(now).max(fine)
            }
            _ => fine,
        }
    }
}

/// How often a standby asks for the leader's lease's time left: a fiftieth of its TTL,
/// between 20 and 100 ms ([`LeaseEnd::wait`] asks sooner near the lease's end).
pub fn poll_period(ttl: Duration) -> Duration {
    (ttl / 50).clamp(Duration::from_millis(20), Duration::from_millis(100))
}

/// Returns once the store's reports prove `lease` has run out; never, when the store does
/// not report leases' time left or reports it too coarsely for the lease's TTL.
pub async fn run_out(store: &dyn Store, lease: LeaseId, poll: Duration) -> Result<(), StoreError> {
    let mut end = LeaseEnd::default();
    loop {
        let asked = Instant::now();
        let Some(left) = store.lease_left(lease).await? else {
            return std::future::pending().await;
        };
        let answered = Instant::now();
        let verdict = end.report(asked, answered, left);
        tracing::debug!(lease, ?left, took = ?(answered - asked), ?verdict, "leader lease's time left");
        match verdict {
            Verdict::RunOut => return Ok(()),
            Verdict::Unprovable => return std::future::pending().await,
            Verdict::Unknown => tokio::time::sleep(end.wait(Instant::now(), poll)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// etcd's report of `secs` whole seconds left, for a 5 s lease.
    fn left(secs: u64) -> LeaseLeft {
        LeaseLeft::Below {
            below: S * (secs as u32 + 1),
            granted: S * 5,
            step: S,
        }
    }

    /// Reports at `at` (ms after `t0`), each answered 2 ms after it was asked.
    fn verdicts(reports: &[(u64, LeaseLeft)]) -> Vec<Verdict> {
        let t0 = Instant::now();
        let mut end = LeaseEnd::default();
        reports
            .iter()
            .map(|(at, l)| {
                let asked = t0 + Duration::from_millis(*at);
                end.report(asked, asked + Duration::from_millis(2), *l)
            })
            .collect()
    }

    #[test]
    fn under_a_second_then_under_a_second_a_second_later_is_run_out() {
        let v = verdicts(&[
            (0, left(1)),
            (100, left(0)),
            (1000, left(0)),
            (1102, left(0)),
        ]);
        assert_eq!(
            v,
            [
                Verdict::Unknown,
                Verdict::Unknown,
                Verdict::Unknown,
                Verdict::RunOut
            ],
            "paired with the report at 100 ms, the one at 1,102 ms (asked a second after it \
             was answered) proves it; the one at 1,000 ms is too early"
        );
    }

    #[test]
    fn a_refresh_between_the_reports_is_never_taken_for_run_out() {
        // A leader refreshing every TTL/3 (1.67 s): etcd says 3 or 4 s left, never less.
        let mut reports = Vec::new();
        for ms in (0..20_000u64).step_by(100) {
            let since_refresh = ms % 1667;
            reports.push((ms, left((5000 - since_refresh) / 1000)));
        }
        assert!(verdicts(&reports).iter().all(|v| *v == Verdict::Unknown));
        // A refresh late enough that etcd says 0 just before it: the next reports say 4.
        let v = verdicts(&[
            (0, left(0)),
            (900, left(4)),
            (1100, left(3)),
            (1500, left(3)),
        ]);
        assert!(v.iter().all(|v| *v == Verdict::Unknown), "{v:?}");
    }

    #[test]
    fn a_pair_too_far_apart_proves_nothing_but_a_later_pair_does() {
        // 4.5 s between the reports: a refresh could have come and gone down to under 1 s.
        let v = verdicts(&[(0, left(0)), (4500, left(0)), (5600, left(0))]);
        assert_eq!(v, [Verdict::Unknown, Verdict::Unknown, Verdict::RunOut]);
    }

    #[test]
    fn gone_is_run_out_and_a_ttl_of_two_steps_cannot_be_proven() {
        assert_eq!(verdicts(&[(0, LeaseLeft::Gone)]), [Verdict::RunOut]);
        let short = LeaseLeft::Below {
            below: S,
            granted: S * 2,
            step: S,
        };
        assert_eq!(verdicts(&[(0, short)]), [Verdict::Unprovable]);
    }

    #[test]
    fn asks_sooner_near_the_end_and_at_the_instant_a_proof_can_come() {
        let poll = Duration::from_millis(100);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut end = LeaseEnd::default();
        assert_eq!(end.wait(t0, poll), poll, "nothing reported yet");
        end.report(ms(0), ms(2), left(3));
        assert_eq!(end.wait(ms(2), poll), poll, "a refreshed lease: every poll");
        end.report(ms(100), ms(102), left(1));
        assert_eq!(
            end.wait(ms(102), poll),
            poll / 10,
            "within two steps of its end: a tenth of the poll"
        );
        end.report(ms(1000), ms(1002), left(0));
        assert_eq!(
            end.wait(ms(1003), poll),
            Duration::from_millis(999),
            "in its last step: at the instant a second after that report's answer"
        );
        assert_eq!(end.report(ms(2002), ms(2004), left(0)), Verdict::RunOut);
        // Refreshed after a report of its last step: back to every poll, never a busy loop.
        let mut end = LeaseEnd::default();
        end.report(ms(0), ms(2), left(0));
        end.report(ms(500), ms(502), left(4));
        assert_eq!(end.wait(ms(2000), poll), poll);
    }

    #[test]
    fn the_poll_period_is_a_fiftieth_of_the_ttl_within_bounds() {
        assert_eq!(poll_period(S * 5), Duration::from_millis(100));
        assert_eq!(poll_period(S * 2), Duration::from_millis(40));
        assert_eq!(poll_period(S / 2), Duration::from_millis(20));
        assert_eq!(poll_period(S * 60), Duration::from_millis(100));
    }
}
