//! The rollout step: which slots on an older template to replace now, and which tasks on the
//! new template failed while they were monitored.
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
//! - A new task is *monitored* for `monitor` after it starts. It fails the rollout when it is
//!   rejected, fails or exits within that window, reports unhealthy, or is still not healthy
//!   once the healthcheck had time to pass (start period + interval × retries) and `monitor`
//!   elapsed.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_core::manifest::{FailureAction, UpdateConfig};
use shoal_core::model::{Health, ServiceStatus, Slot, TaskState, Timestamp};

use super::TaskEntry;
use super::classify::Tasks;
use super::progress;
use super::slots::Filled;

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

/// Why a task on the new template failed while it was monitored, if it did.
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

/// When a task still monitored should be looked at again (its health deadline).
pub fn recheck_at(e: &TaskEntry, update: &UpdateConfig) -> Option<Timestamp> {
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

/// What the rollout step sees of the service after the slots phase.
pub(super) struct Stage<'a, 'b> {
    /// The classified tasks.
    pub(super) tasks: &'a Tasks<'b>,
    /// What the slots phase decided.
    pub(super) filled: &'a Filled,
    /// The tasks that keep running after the slots phase (keepers and spares).
    pub(super) live: &'a BTreeSet<usize>,
    /// The update (or rollback) policy followed.
    pub(super) policy: &'a UpdateConfig,
    /// The template the service runs.
    pub(super) hash: &'a str,
    /// Whether an automatic rollback is under way.
    pub(super) rollback_mode: bool,
    /// Slots wanted.
    pub(super) desired: u64,
}

/// What the rollout step decided.
pub(super) struct Step {
    /// Keepers on an older template to replace now (stop-first: stopped; start-first: their
    /// replacement starts beside them).
    pub(super) batch: Vec<usize>,
    /// The failures just recorded start an automatic rollback.
    pub(super) rollback_now: bool,
    /// When a monitored task is to be looked at again.
    pub(super) wake: Option<Timestamp>,
    /// Slots whose new task failed and that the rollout moves past (`continue`).
    pub(super) failed_slots: u64,
    /// No slot runs or stops an older template any more.
    pub(super) all_current: bool,
    /// When the last new task's monitor window ends.
    pub(super) monitor_until: Option<Timestamp>,
}

/// What monitoring the rollout's new tasks found.
#[derive(Default)]
struct Monitored {
    failures: Vec<(String, String)>,
    failed_slots: BTreeSet<Slot>,
    in_delay: usize,
    monitor_until: Option<Timestamp>,
    wake: Option<Timestamp>,
}

/// Monitors the new tasks, records their failures in the status (which may start a rollback)
/// and picks the next batch of slots to replace.
pub(super) fn step(stage: &Stage<'_, '_>, st: &mut ServiceStatus) -> Step {
    let now = stage.tasks.input().now;
    let counted: BTreeSet<String> = st
        .rollout
        .as_ref()
        .map(|r| r.failed_tasks.iter().cloned().collect())
        .unwrap_or_default();
    let mut seen = monitor_new_tasks(
        stage,
        &progress::monitoring(st, stage.rollback_mode),
        &counted,
    );
    seen.failures.sort();
    let failures = std::mem::take(&mut seen.failures);
    let rollback_now = progress::record_failures(st, now, failures, stage.policy, stage.desired);
    let moving_past = stage.policy.failure_action == FailureAction::Continue;
    let (tasks, hash) = (stage.tasks, stage.hash);
    let outdated_all: Vec<OutdatedSlot> = stage
        .filled
        .keepers
        .iter()
        .copied()
        .filter(|&i| tasks.entry(i).task.template_hash != hash)
        .map(|i| OutdatedSlot {
            task: i,
            running: tasks.entry(i).state() == TaskState::Running,
        })
        .collect();
    let all_current = outdated_all.is_empty() && stage.filled.waiting == 0;
    let outdated: Vec<OutdatedSlot> = outdated_all
        .into_iter()
        .filter(|o| !seen.failed_slots.contains(&tasks.entry(o.task).task.slot))
        .collect();
    let starting = stage.filled.keepers.iter().filter(|&&i| {
        let e = tasks.entry(i);
        e.task.template_hash == hash && !is_up(e) && !(moving_past && counted.contains(&e.task.id))
    });
    let in_flight =
        stage.filled.waiting + stage.filled.pending.len() + seen.in_delay + starting.count();
    let batch = if rollback_now || !progress::may_advance(st) {
        Vec::new()
    } else {
        next_batch(&RolloutInput {
            update: stage.policy,
            in_flight,
            outdated,
        })
    };
    Step {
        batch,
        rollback_now,
        wake: seen.wake,
        failed_slots: if moving_past {
            seen.failed_slots.len() as u64
        } else {
            0
        },
        all_current,
        monitor_until: seen.monitor_until,
    }
}

/// Looks at the tasks on the target template created since the rollout started: failures
/// (new ones while the rollout is active, and those already counted), the ones within
/// `delay` of coming up, and when their monitor windows end.
fn monitor_new_tasks(
    stage: &Stage<'_, '_>,
    monitoring: &progress::Monitoring,
    counted: &BTreeSet<String>,
) -> Monitored {
    let mut seen = Monitored::default();
    let Some(since) = monitoring.since else {
        return seen;
    };
    let tasks = stage.tasks;
    let now = tasks.input().now;
    let (policy, delay) = (stage.policy, stage.policy.delay.get());
    for i in tasks.all() {
        let e = tasks.entry(i);
        if e.task.template_hash != stage.hash || e.task.created_at < since {
            continue;
        }
        if counted.contains(&e.task.id) {
            seen.failed_slots.insert(e.task.slot.clone());
            continue;
        }
        if monitoring.active {
            if let Some(why) = task_failure(e, policy, now) {
                seen.failures.push((e.task.id.clone(), why));
                seen.failed_slots.insert(e.task.slot.clone());
                continue;
            }
            if let Some(t) = recheck_at(e, policy) {
                seen.wake = Some(seen.wake.map_or(t, |x| x.min(t)));
            }
        }
        if is_up(e) && stage.live.contains(&i) {
            let up = up_at(e);
            if up.plus(delay) > now {
                seen.in_delay += 1;
                let t = up.plus(delay);
                seen.wake = Some(seen.wake.map_or(t, |x| x.min(t)));
            }
            let m = up.plus(policy.monitor.get());
            seen.monitor_until = Some(seen.monitor_until.map_or(m, |x| x.max(m)));
        }
    }
    seen
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
