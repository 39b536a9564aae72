//! Slots: which slots the service fills, which task keeps each slot, and when an empty slot
//! gets a new task (now, after the restart delay, or never under the restart policy).

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_core::manifest::{Mode, RestartCondition, Service, ServiceSpec};
use shoal_core::model::{Slot, TaskState, Timestamp};

use super::TaskEntry;
use super::classify::{Class, Tasks};
use super::rollout::is_up;
use crate::placement::Filters;

/// A task to create, before placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    /// The slot it fills.
    pub(super) slot: Slot,
    /// Its restart attempt (0 for a slot's first task or a new template).
    pub(super) attempt: u64,
}

/// What the slots phase decided.
#[derive(Debug, Default)]
pub(super) struct Filled {
    /// Per slot kept, the task that keeps it.
    pub(super) keepers: Vec<usize>,
    /// Old-template tasks that keep running beside a start-first replacement not yet up.
    pub(super) spares: Vec<usize>,
    /// Tasks to stop, in slot order.
    pub(super) stops: Vec<usize>,
    /// Slots to fill with a new task, in slot order.
    pub(super) pending: Vec<Pending>,
    /// Slots whose replacement waits for a stopping task to finish.
    pub(super) waiting: usize,
    /// The earliest restart delay still running.
    pub(super) requeue: Option<Duration>,
    /// `Restarting` event messages.
    pub(super) restarts: Vec<String>,
}

impl Filled {
    /// The tasks that keep running after the slots phase: keepers and spares.
    pub(super) fn live(&self) -> BTreeSet<usize> {
        self.keepers.iter().chain(&self.spares).copied().collect()
    }
}

/// The slots the service fills: replicas `1..=n`, or one per node that accepts the service,
/// plus the nodes that keep a live task of it (paused, or within a new leader's grace).
pub(super) fn target(
    spec: &ServiceSpec,
    tasks: &Tasks<'_>,
    filters: &Filters<'_>,
) -> BTreeSet<Slot> {
    match spec.mode {
        Mode::Replicated | Mode::ReplicatedJob => (1..=spec.desired_replicas().unwrap_or(1))
            .map(Slot::Replica)
            .collect(),
        Mode::Global | Mode::GlobalJob => {
            let input = tasks.input();
            let keeps_live = |id: &str| {
                (input.node_in_grace(id) || filters.keep_filter(id).is_none())
                    && tasks
                        .in_slot(&Slot::Node(id.to_string()))
                        .iter()
                        .any(|&i| tasks.live(i))
            };
            input
                .nodes
                .keys()
                .filter(|id| filters.accepts(id) || keeps_live(id))
                .map(|id| Slot::Node(id.clone()))
                .collect()
        }
    }
}

/// Decides every slot of `target` (and stops the tasks of the slots outside it). `hash` is
/// the template the service runs; with `start_first`, an old task keeps running until its
/// replacement is up.
pub(super) fn fill(
    svc: &Service,
    tasks: &Tasks<'_>,
    target: &BTreeSet<Slot>,
    hash: &str,
    start_first: bool,
) -> Filled {
    let mut out = Filled::default();
    for slot in target {
        let idx = tasks.in_slot(slot);
        let keeper = idx
            .iter()
            .copied()
            .filter(|&i| tasks.live(i))
            .max_by_key(|&i| keeper_rank(tasks.entry(i), hash));
        match keeper {
            Some(keeper) => keep(tasks, idx, keeper, hash, start_first, &mut out),
            None => refill(svc, tasks, slot, hash, &mut out),
        }
    }
    for (slot, idx) in tasks.slots() {
        if !target.contains(slot) {
            out.stops
                .extend(idx.iter().copied().filter(|&i| tasks.stoppable(i)));
        }
    }
    out
}

/// A slot with a live task: `keeper` keeps it, the others stop — except, start-first, the
/// newest old-template task while the keeper on the new template is not up yet.
fn keep(
    tasks: &Tasks<'_>,
    idx: &[usize],
    keeper: usize,
    hash: &str,
    start_first: bool,
    out: &mut Filled,
) {
    let k = tasks.entry(keeper);
    let spare = if start_first && k.task.template_hash == hash && !is_up(k) {
        idx.iter()
            .copied()
            .filter(|&i| tasks.live(i) && tasks.entry(i).task.template_hash != hash)
            .max_by_key(|&i| keeper_rank(tasks.entry(i), hash))
    } else {
        None
    };
    out.stops.extend(
        idx.iter()
            .copied()
            .filter(|&i| i != keeper && Some(i) != spare && tasks.stoppable(i)),
    );
    out.keepers.push(keeper);
    out.spares.extend(spare);
}

/// A slot without a live task: a new task now, later, or never.
fn refill(svc: &Service, tasks: &Tasks<'_>, slot: &Slot, hash: &str, out: &mut Filled) {
    let idx = tasks.in_slot(slot);
    let latest = idx.iter().copied().max_by_key(|&i| {
        let t = &tasks.entry(i).task;
        (t.created_at, t.attempt, t.id.clone())
    });
    let decision = if idx.iter().any(|&i| tasks.class(i) == Class::Stopping) {
        // Its replacement starts once it finished (its node may not hold both).
        out.waiting += 1;
        Restart::Never
    } else {
        match latest {
            None => Restart::Now(0),
            Some(l) => restart(svc, tasks, idx, l, hash),
        }
    };
    match decision {
        Restart::Now(attempt) => {
            out.stops
                .extend(idx.iter().copied().filter(|&i| tasks.stoppable(i)));
            if let Some(l) = latest.filter(|&l| attempt > tasks.entry(l).task.attempt) {
                let e = tasks.entry(l);
                out.restarts.push(format!(
                    "task {} {} in slot {slot}: starting attempt {attempt}",
                    e.task.id,
                    e.state()
                ));
            }
            out.pending.push(Pending {
                slot: slot.clone(),
                attempt,
            });
        }
        Restart::After(_) | Restart::Never => {
            if let Restart::After(d) = decision {
                out.requeue = Some(out.requeue.map_or(d, |r| r.min(d)));
            }
            // The newest task stays as the slot's history (its restart is decided again).
            out.stops.extend(
                idx.iter()
                    .copied()
                    .filter(|&i| Some(i) != latest && tasks.stoppable(i)),
            );
        }
    }
}

enum Restart {
    /// Create the slot's next task now, with this attempt number.
    Now(u64),
    /// The restart delay runs for this long.
    After(Duration),
    /// The slot stays empty.
    Never,
}

/// What follows `latest`, the newest task of a slot without a live one.
fn restart(svc: &Service, tasks: &Tasks<'_>, idx: &[usize], latest: usize, hash: &str) -> Restart {
    let e = tasks.entry(latest);
    if e.task.template_hash != hash {
        // A new template: the slot starts over.
        return Restart::Now(0);
    }
    let moved = matches!(tasks.class(latest), Class::Lost | Class::Migrating);
    if moved || e.task.orphaned || !e.wants_running() {
        // Not stopped by itself: the same attempt again.
        return Restart::Now(e.task.attempt);
    }
    policy_decision(svc, tasks, idx, latest)
}

/// When the task stopped (for restart delays and windows).
pub(super) fn finished_at(e: &TaskEntry) -> Timestamp {
    e.status
        .as_ref()
        .map(|s| s.finished_at.unwrap_or(s.updated_at))
        .unwrap_or(e.task.created_at)
}

/// The restart policy for a slot whose newest task stopped by itself.
fn policy_decision(svc: &Service, tasks: &Tasks<'_>, idx: &[usize], latest: usize) -> Restart {
    let policy = &svc.spec.restart;
    let now = tasks.input().now;
    let e = tasks.entry(latest);
    let success = e.state() == TaskState::Complete;
    match policy.condition {
        RestartCondition::None => return Restart::Never,
        RestartCondition::OnFailure if success => return Restart::Never,
        _ => {}
    }
    if policy.max_attempts > 0 {
        let used = if policy.window.is_zero() {
            e.task.attempt
        } else {
            let since = Timestamp(now.millis().saturating_sub(policy.window.as_millis()));
            let in_window = idx
                .iter()
                .map(|&i| tasks.entry(i))
                .filter(|t| t.state().is_terminal() && finished_at(t) >= since)
                .count() as u64;
            in_window.saturating_sub(1)
        };
        if used >= policy.max_attempts {
            return Restart::Never;
        }
    }
    let ready = finished_at(e).plus(policy.delay.get());
    if now >= ready {
        Restart::Now(e.task.attempt + 1)
    } else {
        Restart::After(ready.since(now))
    }
}

/// Order for choosing the one task a slot keeps: current template, furthest state, newest.
fn keeper_rank(e: &TaskEntry, hash: &str) -> (bool, TaskState, Timestamp, String) {
    (
        e.task.template_hash == hash,
        e.state(),
        e.task.created_at,
        e.task.id.clone(),
    )
}
