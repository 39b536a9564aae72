//! When a job starts a new run: a new or changed template (jobs without a schedule), a
//! schedule tick, or a `shoal job run` request. Pure: the time comes in with the input, so
//! ticks are tested without waiting.
//!
//! A scheduled job seen for the first time starts nothing: the tick that already passed is
//! noted as handled, and the next one starts a run. After any gap (a controller down for a
//! while) only the latest missed tick is considered, and only within `startingDeadline`.

use shoal_core::job::{ConcurrencyPolicy, JobSpec, JobStatus, RunRequest, RunTrigger};
use shoal_core::model::Timestamp;
use shoal_core::schedule::Schedule;

/// What the job does about new runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// Nothing.
    None,
    /// A run was due but is not started, for this reason (an event says so).
    Skip {
        /// Why.
        message: String,
    },
    /// Start a run.
    Run {
        /// Why.
        trigger: RunTrigger,
        /// The tick it is for.
        scheduled_for: Option<Timestamp>,
        /// Stop the active runs first.
        replace: bool,
    },
}

fn schedule(job: &JobSpec) -> Option<Schedule> {
    let expr = job.schedule.as_deref()?;
    Schedule::parse(expr, job.time_zone.as_deref()).ok()
}

/// Whether a request is newer than the last one handled.
fn new_request<'a>(js: &JobStatus, request: Option<&'a RunRequest>) -> Option<&'a RunRequest> {
    request.filter(|r| js.last_request.is_none_or(|l| r.requested_at > l))
}

/// Decides whether a run starts now.
pub(super) fn decide(
    js: &JobStatus,
    job: &JobSpec,
    hash: &str,
    request: Option<&RunRequest>,
    now: Timestamp,
) -> Start {
    let active: Vec<u64> = js.active().map(|r| r.number).collect();
    if let Some(req) = new_request(js, request) {
        if !active.is_empty() && !req.force {
            return Start::Skip {
                message: format!(
                    "run {} is still active: a requested run needs --force to replace it",
                    active[0]
                ),
            };
        }
        return Start::Run {
            trigger: RunTrigger::Manual,
            scheduled_for: None,
            replace: !active.is_empty(),
        };
    }
    let Some(sched) = schedule(job) else {
        if job.schedule.is_some() {
            return Start::None;
        }
        return match js.last() {
            Some(r) if r.template_hash == hash => Start::None,
            _ => Start::Run {
                trigger: RunTrigger::Template,
                scheduled_for: None,
                replace: !active.is_empty(),
            },
        };
    };
    let (Some(last), Some(tick)) = (js.last_schedule, sched.last_at_or_before(now)) else {
        return Start::None;
    };
    if tick <= last {
        return Start::None;
    }
    if let Some(d) = job.starting_deadline
        && now.since(tick) > d.get()
    {
        return Start::Skip {
            message: format!("the run due at {tick} was missed by more than startingDeadline {d}"),
        };
    }
    match job.concurrency_policy {
        ConcurrencyPolicy::Forbid if !active.is_empty() => Start::Skip {
            message: format!(
                "the run due at {tick} is skipped: run {} is still active (concurrencyPolicy Forbid)",
                active[0]
            ),
        },
        policy => Start::Run {
            trigger: RunTrigger::Schedule,
            scheduled_for: Some(tick),
            replace: policy == ConcurrencyPolicy::Replace && !active.is_empty(),
        },
    }
}

/// Notes the request and the schedule tick as handled, and the next tick.
pub(super) fn note_handled(
    js: &mut JobStatus,
    job: &JobSpec,
    request: Option<&RunRequest>,
    now: Timestamp,
) {
    if let Some(req) = new_request(js, request) {
        js.last_request = Some(req.requested_at);
    }
    match schedule(job) {
        Some(sched) => {
            let tick = sched.last_at_or_before(now).unwrap_or(now);
            js.last_schedule = Some(js.last_schedule.map_or(tick, |l| l.max(tick)));
            js.next_schedule = sched.next_after(now);
        }
        None => js.next_schedule = None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::units::Dur;

    fn every(s: &str) -> JobSpec {
        JobSpec {
            schedule: Some(s.into()),
            ..JobSpec::default()
        }
    }

    #[test]
    fn the_first_tick_is_noted_and_the_next_one_starts_a_run() {
        let job = every("@every 10s");
        let mut js = JobStatus::default();
        let t0 = Timestamp(1_000_005_000);
        assert_eq!(decide(&js, &job, "h", None, t0), Start::None);
        note_handled(&mut js, &job, None, t0);
        assert_eq!(js.next_schedule, Some(Timestamp(1_000_010_000)));
        assert_eq!(
            decide(&js, &job, "h", None, Timestamp(1_000_009_999)),
            Start::None
        );
        let due = decide(&js, &job, "h", None, Timestamp(1_000_010_000));
        assert!(
            matches!(
                due,
                Start::Run {
                    trigger: RunTrigger::Schedule,
                    ..
                }
            ),
            "{due:?}"
        );
    }

    #[test]
    fn a_late_controller_starts_one_run_within_the_starting_deadline_only() {
        let mut job = every("@every 10s");
        let mut js = JobStatus::default();
        note_handled(&mut js, &job, None, Timestamp(1_000_000_000));
        // Ten ticks missed: one run, for the latest.
        let late = Timestamp(1_000_100_500);
        match decide(&js, &job, "h", None, late) {
            Start::Run { scheduled_for, .. } => {
                assert_eq!(scheduled_for, Some(Timestamp(1_000_100_000)))
            }
            other => panic!("{other:?}"),
        }
        job.starting_deadline = Some(Dur::millis(100));
        assert!(matches!(
            decide(&js, &job, "h", None, late),
            Start::Skip { .. }
        ));
    }

    #[test]
    fn unscheduled_jobs_run_once_per_template_and_requests_need_force_while_active() {
        let job = JobSpec::default();
        let js = JobStatus::default();
        let now = Timestamp(5);
        assert!(matches!(
            decide(&js, &job, "h", None, now),
            Start::Run {
                trigger: RunTrigger::Template,
                ..
            }
        ));
        let req = RunRequest {
            requested_at: Timestamp(4),
            force: false,
        };
        assert!(matches!(
            decide(&js, &job, "h", Some(&req), now),
            Start::Run {
                trigger: RunTrigger::Manual,
                replace: false,
                ..
            }
        ));
        let mut handled = js.clone();
        note_handled(&mut handled, &job, Some(&req), now);
        assert_eq!(handled.last_request, Some(Timestamp(4)));
    }
}
