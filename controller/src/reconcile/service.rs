//! Reconciling a service that has a valid manifest: slots, node loss, drain, restarts,
//! rollout steps, placement of new tasks, history clean-up and the status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_core::constraint::Constraint;
use shoal_core::manifest::{FailureAction, Mode, RestartCondition, Service, UpdateOrder};
use shoal_core::model::{
    Availability, DesiredState, Slot, Task, TaskState, TaskTemplate, Timestamp,
};
use tracing::debug;

use super::progress::{self, Outcome};
use super::rollout::{self, OutdatedSlot, RolloutInput, is_up};
use super::status;
use super::{IdGen, Plan, ReconcileInput, TaskEntry, TaskRef};
use crate::placement::{Explanation, Placer, filters};

/// The per-reconcile working state: which tasks this plan stops, orphans or deletes.
struct Work<'a> {
    input: &'a ReconcileInput,
    stopped: Vec<bool>,
    orphaned: Vec<bool>,
    moved: Vec<bool>,
    plan: Plan,
}

impl<'a> Work<'a> {
    fn entry(&self, i: usize) -> &'a TaskEntry {
        &self.input.tasks[i]
    }
    fn node_ok(&self, i: usize) -> bool {
        self.input
            .nodes
            .get(&self.entry(i).task.node_id)
            .is_some_and(|n| n.ready)
    }
    /// Finished, or orphaned on a node that is still down. An orphaned task whose node came
    /// back still runs there until its agent stops it: it holds its resources and ports.
    fn dead(&self, i: usize) -> bool {
        let e = self.entry(i);
        e.state().is_terminal() || ((e.task.orphaned || self.orphaned[i]) && !self.node_ok(i))
    }
    fn wants_running(&self, i: usize) -> bool {
        let e = self.entry(i);
        e.wants_running() && !e.task.orphaned && !self.stopped[i] && !self.orphaned[i]
    }
    fn stop(&mut self, i: usize) {
        if self.wants_running(i) {
            self.stopped[i] = true;
            self.plan.stops.push(TaskRef::of(&self.entry(i).task));
        }
    }
}

/// When the task stopped (for restart delays and windows).
fn finished_at(e: &TaskEntry) -> Timestamp {
    e.status
        .as_ref()
        .map(|s| s.finished_at.unwrap_or(s.updated_at))
        .unwrap_or(e.task.created_at)
}

enum Restart {
    Now(u64),
    After(Duration),
    Never,
}

/// The restart policy for a slot whose newest task stopped by itself.
fn restart_decision(svc: &Service, w: &Work<'_>, slot_tasks: &[usize], latest: usize) -> Restart {
    let policy = &svc.spec.restart;
    let e = w.entry(latest);
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
            let since = Timestamp(
                w.input
                    .now
                    .millis()
                    .saturating_sub(policy.window.as_millis()),
            );
            let in_window = slot_tasks
                .iter()
                .filter(|&&i| w.entry(i).state().is_terminal() && finished_at(w.entry(i)) >= since)
                .count() as u64;
            in_window.saturating_sub(1)
        };
        if used >= policy.max_attempts {
            return Restart::Never;
        }
    }
    let ready = finished_at(e).plus(policy.delay.get());
    if w.input.now >= ready {
        Restart::Now(e.task.attempt + 1)
    } else {
        Restart::After(ready.since(w.input.now))
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

/// A task to create, before placement.
struct Pending {
    slot: Slot,
    attempt: u64,
}

/// Reconciles a service with a valid manifest.
pub(super) fn reconcile_present(input: &ReconcileInput, svc: &Service, generation: i64) -> Plan {
    let now = input.now;
    // An automatic rollback reconciles towards the previous template (see `progress`).
    let manifest_hash = TaskTemplate::from_spec(&svc.spec).hash();
    let rollback_spec = progress::rollback_spec(input.previous.as_ref(), &svc.spec, &manifest_hash);
    let rollback_mode = rollback_spec.is_some();
    let spec = rollback_spec.as_ref().unwrap_or(&svc.spec);
    let policy = if rollback_mode {
        &svc.spec.rollback
    } else {
        &svc.spec.update
    };
    let start_first = policy.order == UpdateOrder::StartFirst;
    let template = TaskTemplate::from_spec(spec);
    let hash = template.hash();
    let mut placer = match Placer::new(spec, &input.nodes, &input.usage) {
        Ok(p) => p,
        Err(e) => return super::reconcile_invalid(input, &e.to_string(), generation),
    };
    let constraints: Vec<Constraint> = spec
        .placement
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect();
    let n = input.tasks.len();
    let mut w = Work {
        input,
        stopped: vec![false; n],
        orphaned: vec![false; n],
        moved: vec![false; n],
        plan: Plan::default(),
    };
    let mut st = input.previous.clone().unwrap_or_default();
    let had_status = input.previous.is_some();
    let old_desired = st.desired;
    let last_write = st.updated_at;
    let earliest = input
        .tasks
        .iter()
        .filter(|e| e.task.template_hash == hash && !e.is_dead() && e.task.created_at >= last_write)
        .map(|e| e.task.created_at)
        .min();
    progress::begin(
        &mut st,
        now,
        spec,
        &hash,
        rollback_mode,
        generation,
        earliest,
    );

    // Node loss: unfinished tasks on nodes that are down are orphaned (and replaced).
    let mut down: BTreeMap<&str, usize> = BTreeMap::new();
    let mut grace_ends: Option<Timestamp> = None;
    for i in 0..n {
        let e = w.entry(i);
        if e.task.orphaned && e.wants_running() {
            // Orphaned tasks never run again: make sure their agent is told so.
            w.stopped[i] = true;
            w.plan.stops.push(TaskRef::of(&e.task));
        }
        if !w.entry(i).is_dead() && !w.node_ok(i) {
            if input.node_in_grace(&w.entry(i).task.node_id) {
                // A new leader's grace: the node may only not have registered again yet.
                let end = input.node_grace_end(&w.entry(i).task.node_id);
                grace_ends = Some(grace_ends.map_or(end, |g| g.min(end)));
                continue;
            }
            w.orphaned[i] = true;
            w.plan.orphans.push(TaskRef::of(&w.entry(i).task));
            *down.entry(w.entry(i).task.node_id.as_str()).or_default() += 1;
        }
    }
    for (node, count) in &down {
        let msg = format!("node {node} is down: {count} task(s) orphaned");
        status::push_event(&mut st, now, "Warning", "NodeDown", &msg);
    }

    // Slots.
    let mut by_slot: BTreeMap<Slot, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        by_slot
            .entry(w.entry(i).task.slot.clone())
            .or_default()
            .push(i);
    }
    let target: BTreeSet<Slot> = match spec.mode {
        Mode::Replicated | Mode::ReplicatedJob => (1..=spec.desired_replicas().unwrap_or(1))
            .map(Slot::Replica)
            .collect(),
        Mode::Global | Mode::GlobalJob => input
            .nodes
            .iter()
            .filter(|(id, node)| {
                placer.eligible(id)
                    || (input.node_in_grace(id)
                        && by_slot.get(&Slot::Node(id.to_string())).is_some_and(|idx| {
                            idx.iter().any(|&i| !w.dead(i) && w.wants_running(i))
                        }))
                    || (node.ready
                        && node.config.availability == Availability::Pause
                        && filters::eligible_filter(node, spec.runtime, &constraints).is_none()
                        && by_slot.get(&Slot::Node(id.to_string())).is_some_and(|idx| {
                            idx.iter().any(|&i| !w.dead(i) && w.wants_running(i))
                        }))
            })
            .map(|(id, _)| Slot::Node(id.clone()))
            .collect(),
    };

    // Drain and ineligible nodes: replicated tasks move elsewhere.
    if spec.mode == Mode::Replicated {
        let mut must_leave: BTreeMap<&str, bool> = BTreeMap::new();
        for i in 0..n {
            if w.dead(i) || !w.wants_running(i) || input.node_in_grace(&w.entry(i).task.node_id) {
                continue;
            }
            let node_id = w.entry(i).task.node_id.as_str();
            let Some(node) = input.nodes.get(node_id) else {
                continue;
            };
            let leave = *must_leave.entry(node_id).or_insert_with(|| {
                node.config.availability == Availability::Drain
                    || filters::eligible_filter(node, spec.runtime, &constraints).is_some()
            });
            if leave {
                w.moved[i] = true;
                w.stop(i);
            }
        }
    }

    let mut keepers: Vec<usize> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut waiting = 0usize;
    let mut requeue: Option<Duration> = None;
    let empty = Vec::new();
    for slot in &target {
        let idx = by_slot.get(slot).unwrap_or(&empty);
        let live: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| w.wants_running(i) && !w.dead(i))
            .collect();
        if let Some(&keeper) = live.iter().max_by_key(|&&i| keeper_rank(w.entry(i), &hash)) {
            // Start-first: the old task keeps running until its replacement is up.
            let spare = if start_first
                && w.entry(keeper).task.template_hash == hash
                && !is_up(w.entry(keeper))
            {
                live.iter()
                    .copied()
                    .filter(|&i| w.entry(i).task.template_hash != hash)
                    .max_by_key(|&i| keeper_rank(w.entry(i), &hash))
            } else {
                None
            };
            for &i in idx {
                if i != keeper && Some(i) != spare {
                    w.stop(i);
                }
            }
            keepers.push(keeper);
            continue;
        }
        let latest = idx.iter().copied().max_by_key(|&i| {
            let t = &w.entry(i).task;
            (t.created_at, t.attempt, t.id.clone())
        });
        let stopping = idx.iter().any(|&i| {
            !w.dead(i)
                && !w.wants_running(i)
                && !w.moved[i]
                && w.node_ok(i)
                && input
                    .nodes
                    .get(&w.entry(i).task.node_id)
                    .map(|n| n.config.availability)
                    != Some(Availability::Drain)
        });
        let decision = if stopping {
            waiting += 1;
            Restart::Never
        } else {
            match latest {
                None => Restart::Now(0),
                Some(l) if w.entry(l).task.template_hash != hash => Restart::Now(0),
                Some(l)
                    if w.orphaned[l]
                        || w.moved[l]
                        || w.entry(l).task.orphaned
                        || !w.entry(l).wants_running() =>
                {
                    Restart::Now(w.entry(l).task.attempt)
                }
                Some(l) => restart_decision(svc, &w, idx, l),
            }
        };
        match decision {
            Restart::Now(attempt) => {
                for &i in idx {
                    w.stop(i);
                }
                if let Some(l) = latest.filter(|&l| attempt > w.entry(l).task.attempt) {
                    let e = w.entry(l);
                    let msg = format!(
                        "task {} {} in slot {slot}: starting attempt {attempt}",
                        e.task.id,
                        e.state()
                    );
                    status::push_event(&mut st, now, "Normal", "Restarting", &msg);
                }
                pending.push(Pending {
                    slot: slot.clone(),
                    attempt,
                });
            }
            other => {
                if let Restart::After(d) = other {
                    requeue = Some(requeue.map_or(d, |r| r.min(d)));
                }
                for &i in idx {
                    if Some(i) != latest {
                        w.stop(i);
                    }
                }
            }
        }
    }
    for (slot, idx) in &by_slot {
        if !target.contains(slot) {
            for &i in idx {
                w.stop(i);
            }
        }
    }

    // Rollout: watch the new tasks, then replace tasks on an older template a batch at a
    // time.
    let desired = target.len() as u64;
    let watch = progress::watch(&st, rollback_mode);
    let counted: BTreeSet<String> = st
        .rollout
        .as_ref()
        .map(|r| r.failed_tasks.iter().cloned().collect())
        .unwrap_or_default();
    let delay = policy.delay.get();
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut failed_slots: BTreeSet<Slot> = BTreeSet::new();
    let mut in_delay = 0usize;
    let mut monitor_until: Option<Timestamp> = None;
    let mut wake: Option<Timestamp> = None;
    if let Some(since) = watch.since {
        for i in 0..n {
            let e = w.entry(i);
            if e.task.template_hash != hash || e.task.created_at < since {
                continue;
            }
            if counted.contains(&e.task.id) {
                failed_slots.insert(e.task.slot.clone());
                continue;
            }
            if watch.active {
                if let Some(why) = rollout::task_failure(e, policy, now) {
                    failures.push((e.task.id.clone(), why));
                    failed_slots.insert(e.task.slot.clone());
                    continue;
                }
                if let Some(t) = rollout::watch_deadline(e, policy) {
                    wake = Some(wake.map_or(t, |x| x.min(t)));
                }
            }
            if is_up(e) && w.wants_running(i) && !w.dead(i) {
                let up = rollout::up_at(e);
                if up.plus(delay) > now {
                    in_delay += 1;
                    let t = up.plus(delay);
                    wake = Some(wake.map_or(t, |x| x.min(t)));
                }
                let m = up.plus(policy.monitor.get());
                monitor_until = Some(monitor_until.map_or(m, |x| x.max(m)));
            }
        }
    }
    failures.sort();
    let rollback_now = progress::record_failures(&mut st, now, failures, policy, desired);
    let moving_past = policy.failure_action == FailureAction::Continue;
    let outdated_all: Vec<OutdatedSlot> = keepers
        .iter()
        .copied()
        .filter(|&i| w.wants_running(i) && w.entry(i).task.template_hash != hash)
        .map(|i| OutdatedSlot {
            task: i,
            running: w.entry(i).state() == TaskState::Running,
        })
        .collect();
    let all_current = outdated_all.is_empty() && waiting == 0;
    let outdated: Vec<OutdatedSlot> = outdated_all
        .into_iter()
        .filter(|o| !failed_slots.contains(&w.entry(o.task).task.slot))
        .collect();
    let in_flight = waiting
        + pending.len()
        + in_delay
        + keepers
            .iter()
            .filter(|&&i| {
                let e = w.entry(i);
                e.task.template_hash == hash
                    && !is_up(e)
                    && !(moving_past && counted.contains(&e.task.id))
            })
            .count();
    let batch = if rollback_now || !progress::may_advance(&st) {
        Vec::new()
    } else {
        rollout::next_batch(&RolloutInput {
            update: policy,
            in_flight,
            outdated,
        })
    };
    for i in batch {
        if start_first {
            let slot = w.entry(i).task.slot.clone();
            debug!(service = %input.service_ref, task = %w.entry(i).task.id, %slot, "start-first: starting the replacement");
            pending.push(Pending { slot, attempt: 0 });
        } else {
            w.stop(i);
        }
    }
    if rollback_now {
        requeue = Some(Duration::from_millis(10));
    }
    if let Some(t) = wake {
        let d = t.since(now).max(Duration::from_millis(10));
        requeue = Some(requeue.map_or(d, |r| r.min(d)));
    }

    // Placement.
    for i in 0..n {
        if !w.dead(i) {
            let t = &w.entry(i).task;
            placer.account(&t.node_id, &t.template, true, w.wants_running(i));
        }
    }
    let mut ids = IdGen::new(input.seed);
    let mut unschedulable: Option<String> = None;
    let mut global_refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut created_slots: BTreeSet<Slot> = BTreeSet::new();
    for p in pending {
        let node = match &p.slot {
            // Every replica of a service asks for the same thing and placing only adds load:
            // once one does not fit, none of the rest will (and explaining it again is waste).
            Slot::Replica(_) if unschedulable.is_some() => continue,
            Slot::Replica(_) => match placer.place() {
                Ok(node) => node,
                Err(e) => {
                    unschedulable.get_or_insert_with(|| e.to_string());
                    continue;
                }
            },
            Slot::Node(node) => match placer.place_on(node) {
                Ok(()) => node.clone(),
                Err(reason) => {
                    *global_refused.entry(reason.to_string()).or_default() += 1;
                    continue;
                }
            },
        };
        let task = Task {
            id: format!("{}.{}.{}", svc.metadata.name, p.slot, ids.suffix()),
            service: input.service_ref.clone(),
            slot: p.slot.clone(),
            node_id: node,
            generation,
            template_hash: hash.clone(),
            template: template.clone(),
            desired_state: DesiredState::Running,
            attempt: p.attempt,
            orphaned: false,
            run: None,
            created_at: now,
        };
        debug!(service = %input.service_ref, task = %task.id, node = %task.node_id, "placing task");
        created_slots.insert(p.slot);
        w.plan.creates.push(task);
    }
    if !global_refused.is_empty() {
        let refused: usize = global_refused.values().sum();
        let e = Explanation {
            available: target.len() - refused,
            total: target.len(),
            reasons: global_refused,
        };
        unschedulable = Some(e.to_string());
    }

    // History: finished tasks no longer needed for restart decisions are deleted.
    let window = spec.restart.window;
    let keep_since = Timestamp(now.millis().saturating_sub(window.as_millis()));
    let mut deleted: BTreeSet<usize> = BTreeSet::new();
    for (slot, idx) in &by_slot {
        let in_target = target.contains(slot);
        let has_live = idx.iter().any(|&i| w.wants_running(i) && !w.dead(i));
        let latest = if created_slots.contains(slot) || has_live {
            None
        } else {
            idx.iter().copied().max_by_key(|&i| {
                let t = &w.entry(i).task;
                (t.created_at, t.attempt, t.id.clone())
            })
        };
        for &i in idx {
            let e = w.entry(i);
            let delete = if e.state().is_terminal() {
                !in_target
                    || (Some(i) != latest && (window.is_zero() || finished_at(e) < keep_since))
            } else {
                w.dead(i) && !input.nodes.contains_key(&e.task.node_id)
            };
            if delete {
                deleted.insert(i);
                w.plan.deletes.push(TaskRef::of(&e.task));
            }
        }
    }
    if !deleted.is_empty() {
        let refs: BTreeSet<TaskRef> = deleted
            .iter()
            .map(|&i| TaskRef::of(&w.entry(i).task))
            .collect();
        w.plan.stops.retain(|r| !refs.contains(r));
        w.plan.orphans.retain(|r| !refs.contains(r));
    }

    // Status.
    let up: Vec<usize> = (0..n)
        .filter(|&i| w.wants_running(i) && !w.dead(i) && is_up(w.entry(i)))
        .collect();
    let running = up.len() as u64;
    let updated = up
        .iter()
        .filter(|&&i| w.entry(i).task.template_hash == hash)
        .count() as u64;
    if had_status && old_desired != desired && st.observed_generation != 0 {
        let msg = format!("desired tasks {old_desired} → {desired}");
        status::push_event(&mut st, now, "Normal", "Scaled", &msg);
    }
    let failed_slots = if moving_past {
        failed_slots.len() as u64
    } else {
        0
    };
    if let Some(d) = progress::finish(
        &mut st,
        now,
        &Outcome {
            updated,
            desired,
            failed_slots,
            all_current,
            monitor_until,
        },
    ) {
        requeue = Some(requeue.map_or(d, |r| r.min(d)));
    }
    progress::sync_history(&mut st);
    if unschedulable != st.unschedulable {
        match &unschedulable {
            Some(msg) => status::push_event(&mut st, now, "Warning", "Unschedulable", msg),
            None => {
                status::push_event(&mut st, now, "Normal", "Scheduled", "every task has a node")
            }
        }
    }
    st.unschedulable = unschedulable;
    st.observed_generation = generation;
    st.desired = desired;
    st.running = running;
    st.updated = updated;
    st.error = None;
    status::set_condition(&mut st, now, "Valid", true, "ManifestValid", "");
    let (reason, msg) = if running >= desired {
        ("MinimumTasksRunning", String::new())
    } else {
        (
            "TasksNotRunning",
            format!("{running}/{desired} tasks running"),
        )
    };
    status::set_condition(&mut st, now, "Available", running >= desired, reason, &msg);
    w.plan.status = Some(status::finish(st, input.previous.as_ref(), now));
    if let Some(end) = grace_ends {
        // Look again when the grace ends: the node is lost then if it has not come back.
        let d = end.since(now);
        requeue = Some(requeue.map_or(d, |r| r.min(d)));
    }
    w.plan.requeue_after = requeue;
    w.plan
}
