//! The rollout step: which slots on an older template to replace now, and which tasks on the
//! new template failed while they were being watched.
//!
//! Everything here is derived from what the store holds — tasks with their template hash,
//! their agent's report (state, health, `startedAt`, `finishedAt`), the rollout record in the
//! service status — and `now`, so a new leader continues a rollout exactly where the last one
//! stopped.
//!
//! - A slot is *in flight* from the moment its old task is told to stop (stop-first) or its
//!   new task is created (start-first) until the new task is up (running, and healthy when
//!   the service has a healthcheck) **plus `delay`**: like Swarm's update workers, each of
//!   the `parallelism` workers waits `delay` after a slot before taking the next.
//! - A new task is *watched* for `monitor` after it starts. It fails the rollout when it is
//!   rejected, fails or exits within that window, reports unhealthy, or is still not healthy
//!   once the healthcheck had time to pass (start period + interval × retries) and `monitor`
//!   elapsed.

use std::time::Duration;

use shoal_core::manifest::UpdateConfig;
use shoal_core::model::{Health, TaskState, Timestamp};

use super::TaskEntry;

/// One slot whose task runs an older template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutdatedSlot {
    /// Index of the task in the reconcile input.
    pub task: usize,
    /// Whether the task is running (not-yet-running tasks are replaced first).
    pub running: bool,
}

/// What the rollout sees.
#[derive(Debug, Clone)]
pub struct RolloutInput<'a> {
    /// The update policy.
    pub update: &'a UpdateConfig,
    /// Slots being replaced right now (old task stopping, new task not yet up, or within
    /// `delay` of coming up).
    pub in_flight: usize,
    /// Slots still on an older template, in slot order.
    pub outdated: Vec<OutdatedSlot>,
}

/// Chooses the slots to replace now (indices into the reconcile input's tasks): at most
/// `parallelism - in_flight` of them (all when `parallelism` is 0).
pub fn next_batch(input: &RolloutInput<'_>) -> Vec<usize> {
    let budget = match input.update.parallelism {
        0 => usize::MAX,
        p => (p as usize).saturating_sub(input.in_flight),
    };
    let mut order: Vec<&OutdatedSlot> = input.outdated.iter().collect();
    // Stable: not-running first, slot order otherwise.
    order.sort_by_key(|s| s.running);
    order.into_iter().take(budget).map(|s| s.task).collect()
}

/// Whether the task is up: running, and healthy when it has a healthcheck.
pub fn is_up(e: &TaskEntry) -> bool {
    e.state() == TaskState::Running
        && (e.task.template.healthcheck.is_none()
            || e.status.as_ref().and_then(|s| s.health) == Some(Health::Healthy))
}

/// When the task came up: its last status change for a task with a healthcheck (the change
/// to healthy), `startedAt` otherwise.
pub fn up_at(e: &TaskEntry) -> Timestamp {
    let Some(s) = &e.status else {
        return e.task.created_at;
    };
    if e.task.template.healthcheck.is_some() {
        s.updated_at
    } else {
        s.started_at.unwrap_or(s.updated_at)
    }
}

/// How long a new task may take to report healthy before it counts as failed.
fn health_deadline(e: &TaskEntry, update: &UpdateConfig) -> Duration {
    let monitor = update.monitor.get();
    match &e.task.template.healthcheck {
        Some(hc) => {
            // Checked: a manifest written straight into the store is not bounded by validation.
            let checks = hc
                .interval
                .get()
                .checked_add(hc.timeout.get())
                .and_then(|one| one.checked_mul(hc.retries.max(1)))
                .and_then(|all| all.checked_add(hc.start_period.get()))
                .unwrap_or(Duration::MAX);
            monitor.max(checks)
        }
        None => monitor,
    }
}

/// Why a task on the new template failed during its watch, if it did.
pub fn task_failure(e: &TaskEntry, update: &UpdateConfig, now: Timestamp) -> Option<String> {
    let s = e.status.as_ref()?;
    let msg = |what: &str| {
        let detail = s
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        format!("task {} {what}{detail}", e.task.id)
    };
    match s.state {
        TaskState::Rejected => Some(msg("was rejected")),
        TaskState::Failed | TaskState::Complete => {
            let within = match (s.started_at, s.finished_at) {
                (Some(start), Some(end)) => end.since(start) <= update.monitor.get(),
                _ => true,
            };
            within.then(|| match s.exit_code {
                Some(code) if s.state == TaskState::Failed => {
                    msg(&format!("failed (exit code {code})"))
                }
                _ if s.state == TaskState::Failed => msg("failed"),
                _ => msg("exited during its monitor window"),
            })
        }
        TaskState::Running if e.task.template.healthcheck.is_some() => match s.health {
            Some(Health::Healthy) => None,
            Some(Health::Unhealthy) => Some(msg("is unhealthy")),
            _ => {
                let started = s.started_at.unwrap_or(s.updated_at);
                (now >= started.plus(health_deadline(e, update)))
                    .then(|| msg("did not become healthy in time"))
            }
        },
        _ => None,
    }
}

/// When a task still being watched should be looked at again (its health deadline).
pub fn watch_deadline(e: &TaskEntry, update: &UpdateConfig) -> Option<Timestamp> {
    let s = e.status.as_ref()?;
    if s.state != TaskState::Running {
        return None;
    }
    let started = s.started_at.unwrap_or(s.updated_at);
    match e.task.template.healthcheck {
        Some(_) if s.health != Some(Health::Healthy) => {
            Some(started.plus(health_deadline(e, update)))
        }
        _ => None,
    }
}

/// Whether `failed` failures out of `total` slots exceed the allowed ratio.
pub fn ratio_exceeded(failed: usize, total: u64, update: &UpdateConfig) -> bool {
    if failed == 0 {
        return false;
    }
    let total = total.max(1) as f64;
    failed as f64 / total > update.max_failure_ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<OutdatedSlot> {
        (0..n)
            .map(|task| OutdatedSlot {
                task,
                running: true,
            })
            .collect()
    }

    #[test]
    fn parallelism_bounds_the_slots_in_flight() {
        let update = UpdateConfig {
            parallelism: 2,
            ..UpdateConfig::default()
        };
        let input = RolloutInput {
            update: &update,
            in_flight: 1,
            outdated: slots(5),
        };
        assert_eq!(next_batch(&input), vec![0]);
        let input = RolloutInput {
            update: &update,
            in_flight: 0,
            outdated: slots(5),
        };
        assert_eq!(next_batch(&input), vec![0, 1]);
        let input = RolloutInput {
            update: &update,
            in_flight: 3,
            outdated: slots(5),
        };
        assert!(next_batch(&input).is_empty());
    }

    #[test]
    fn zero_parallelism_replaces_everything_and_pending_tasks_go_first() {
        let update = UpdateConfig {
            parallelism: 0,
            ..UpdateConfig::default()
        };
        let mut outdated = slots(3);
        outdated[2].running = false;
        let input = RolloutInput {
            update: &update,
            in_flight: 0,
            outdated,
        };
        assert_eq!(next_batch(&input), vec![2, 0, 1]);
    }

    #[test]
    fn failure_ratio_follows_swarm() {
        let mut u = UpdateConfig::default();
        assert!(!ratio_exceeded(0, 3, &u));
        assert!(ratio_exceeded(1, 3, &u));
        u.max_failure_ratio = 0.5;
        assert!(!ratio_exceeded(1, 4, &u));
        assert!(!ratio_exceeded(2, 4, &u));
        assert!(ratio_exceeded(3, 4, &u));
    }
}
