//! Job settings of a service (`spec.job` and the job modes): only with a job mode, numbers in
//! range, a schedule and zone that parse, and no setting that only services have.

use super::Errors;
use crate::manifest::{Mode, Service};

/// Job settings: only with a job mode, numbers in range, a schedule and zone that parse, and
/// no setting that only services have.
pub(super) fn check_job(s: &Service, v: &mut Errors) {
    use crate::manifest::{RestartPolicy, UpdateConfig};
    let spec = &s.spec;
    if !spec.mode.is_job() {
        if spec.job.is_some() {
            v.push(
                "spec.job",
                format!(
                    "job settings need mode: replicated-job or global-job (this service is {})",
                    spec.mode.as_str()
                ),
            );
        }
        return;
    }
    if spec.replicas.is_some() {
        v.push(
            "spec.replicas",
            "a job has no replicas: use job.completions and job.parallelism",
        );
    }
    if spec.update != UpdateConfig::default() {
        v.push(
            "spec.update",
            "a job is not rolled out: a changed template applies to its next run (remove update)",
        );
    }
    if spec.rollback != UpdateConfig::default() {
        v.push(
            "spec.rollback",
            "a job is not rolled out or rolled back (remove rollback)",
        );
    }
    let restart = &spec.restart;
    let defaults = RestartPolicy::default();
    if restart.max_attempts != defaults.max_attempts || restart.window != defaults.window {
        v.push(
            "spec.restart",
            "a job retries failed tasks until job.backoffLimit: restart takes only delay here",
        );
    }
    let Some(job) = &spec.job else {
        return;
    };
    check_job_numbers(s, job, v);
    check_job_schedule(job, v);
}

fn check_job_numbers(s: &Service, job: &crate::job::JobSpec, v: &mut Errors) {
    if s.spec.mode == Mode::GlobalJob && job.completions.is_some() {
        v.push(
            "spec.job.completions",
            "a global-job completes once on every eligible node: completions cannot be set",
        );
    }
    if job.completions == Some(0) {
        v.push("spec.job.completions", "completions must be at least 1");
    }
    if job.parallelism == Some(0) {
        v.push("spec.job.parallelism", "parallelism must be at least 1");
    }
    if job.history_limit == 0 {
        v.push(
            "spec.job.historyLimit",
            "historyLimit must be at least 1 (the last run's record is what keeps an unchanged job from running again)",
        );
    }
    for (field, d) in [
        ("activeDeadline", job.active_deadline),
        ("startingDeadline", job.starting_deadline),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            v.push(
                format!("spec.job.{field}"),
                format!("{field} must be more than 0 (omit it for no limit)"),
            );
        }
    }
}

fn check_job_schedule(job: &crate::job::JobSpec, v: &mut Errors) {
    use crate::job::ConcurrencyPolicy;
    use crate::schedule::{Schedule, ScheduleError, parse_zone};
    match &job.schedule {
        Some(expr) => match Schedule::parse(expr, job.time_zone.as_deref()) {
            Ok(_) => {}
            Err(e @ ScheduleError::Zone(_)) => v.push("spec.job.timeZone", e.to_string()),
            Err(e) => v.push("spec.job.schedule", e.to_string()),
        },
        None => {
            if let Some(z) = &job.time_zone {
                match parse_zone(Some(z)) {
                    Err(e) => v.push("spec.job.timeZone", e.to_string()),
                    Ok(_) => v.push("spec.job.timeZone", "timeZone needs a schedule"),
                }
            }
            if job.starting_deadline.is_some() {
                v.push(
                    "spec.job.startingDeadline",
                    "startingDeadline needs a schedule",
                );
            }
            if job.concurrency_policy != ConcurrencyPolicy::Forbid {
                v.push(
                    "spec.job.concurrencyPolicy",
                    "concurrencyPolicy needs a schedule",
                );
            }
        }
    }
}
