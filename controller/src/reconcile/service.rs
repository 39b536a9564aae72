//! Reconciling a service that has a valid manifest. The tasks are classified once
//! ([`classify`](super::classify)), then each phase takes the classes and returns its part of
//! the plan: node loss, migration off nodes that may not keep a task, the slots (keepers and
//! restarts), the rollout step, placement of the new tasks, history clean-up, and the status.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_core::manifest::{Service, ServiceSpec, UpdateConfig, UpdateOrder};
use shoal_core::model::{ServiceStatus, TaskTemplate, Timestamp};
use tracing::debug;

use super::classify::{Class, Tasks};
use super::place::{self, Blueprint, Placed};
use super::progress::{self, Outcome};
use super::rollout::{self, Stage, Step, is_up};
use super::slots::{self, Filled, Pending};
use super::{Plan, ReconcileInput, TaskRef, history, status};
use crate::placement::Filters;

/// What the service reconciles towards: the manifest's spec or, during an automatic
/// rollback, the previous template with the manifest's replicas and policies.
struct Goal<'a> {
    spec: Cow<'a, ServiceSpec>,
    /// The update policy, or the rollback policy during a rollback.
    policy: &'a UpdateConfig,
    rollback_mode: bool,
    template: Arc<TaskTemplate>,
    hash: String,
}

impl<'a> Goal<'a> {
    fn of(svc: &'a Service, previous: Option<&ServiceStatus>) -> Self {
        let manifest_hash = TaskTemplate::from_spec(&svc.spec).hash();
        let (spec, policy, rollback_mode) =
            match progress::rollback_spec(previous, &svc.spec, &manifest_hash) {
                Some(spec) => (Cow::Owned(spec), &svc.spec.rollback, true),
                None => (Cow::Borrowed(&svc.spec), &svc.spec.update, false),
            };
        let template = TaskTemplate::from_spec(&spec);
        let hash = template.hash();
        Goal {
            spec,
            policy,
            rollback_mode,
            template: Arc::new(template),
            hash,
        }
    }

    fn start_first(&self) -> bool {
        self.policy.order == UpdateOrder::StartFirst
    }
}

/// What node loss decided: tasks to orphan (node down past its grace), orphans still
/// wanted running to stop, and when the earliest grace ends.
struct NodeLoss {
    orphans: Vec<usize>,
    stops: Vec<usize>,
    /// `NodeDown` event messages, per node.
    events: Vec<String>,
    grace_ends: Option<Timestamp>,
}

fn node_loss(tasks: &Tasks<'_>) -> NodeLoss {
    let input = tasks.input();
    // Orphaned tasks never run again: make sure their agent is told so.
    let stops = tasks
        .all()
        .filter(|&i| tasks.entry(i).task.orphaned && tasks.entry(i).wants_running())
        .collect();
    let orphans: Vec<usize> = tasks.of(Class::Lost).collect();
    let mut down: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in &orphans {
        *down
            .entry(tasks.entry(i).task.node_id.as_str())
            .or_default() += 1;
    }
    let events = down
        .iter()
        .map(|(node, count)| format!("node {node} is down: {count} task(s) orphaned"))
        .collect();
    // A new leader's grace: the node may only not have registered again yet.
    let grace_ends = tasks
        .of(Class::Unreachable)
        .map(|i| input.node_grace_end(&tasks.entry(i).task.node_id))
        .min();
    NodeLoss {
        orphans,
        stops,
        events,
        grace_ends,
    }
}

/// Reconciles a service with a valid manifest.
pub(super) fn reconcile_present(input: &ReconcileInput, svc: &Service, generation: i64) -> Plan {
    let goal = Goal::of(svc, input.previous.as_ref());
    let filters = match Filters::new(&goal.spec, &input.nodes) {
        Ok(f) => f,
        Err(e) => return super::reconcile_invalid(input, &e.to_string(), generation),
    };
    let tasks = Tasks::classify(input, &filters);
    let mut st = input.previous.clone().unwrap_or_default();
    // A manifest that was a job before: its runs are no part of a service's status.
    st.job = None;
    begin_rollout(&mut st, &tasks, &goal, generation);
    let loss = node_loss(&tasks);
    push_events(&mut st, input.now, "Warning", "NodeDown", &loss.events);
    let target = slots::target(&goal.spec, &tasks, &filters);
    let filled = slots::fill(svc, &tasks, &target, &goal.hash, goal.start_first());
    push_events(&mut st, input.now, "Normal", "Restarting", &filled.restarts);
    // The tasks that keep running: keepers and spares, less the rollout batch stopped.
    let mut live = filled.live();
    let stage = Stage {
        tasks: &tasks,
        filled: &filled,
        live: &live,
        policy: goal.policy,
        hash: &goal.hash,
        rollback_mode: goal.rollback_mode,
        desired: target.len() as u64,
    };
    let step = rollout::step(&stage, &mut st);
    let (batch_stops, batch_pending) = replace_batch(&tasks, &goal, &step.batch);
    live.retain(|i| !batch_stops.contains(i));
    let blueprint = Blueprint {
        svc,
        spec: &goal.spec,
        template: &goal.template,
        hash: &goal.hash,
        generation,
        desired: target.len(),
    };
    let pending = filled.pending.iter().cloned().chain(batch_pending);
    let placed = place::place(filters, &tasks, &live, pending.collect(), &blueprint);
    let restart = &goal.spec.restart;
    let needs = history::RestartNeeds {
        window: (restart.max_attempts > 0).then_some(restart.window),
    };
    let deletes = history::deletes(&tasks, &target, &live, &placed.slots, &needs);
    let migrations: Vec<usize> = tasks.of(Class::Migrating).collect();
    let mut plan = plan_of(
        &tasks,
        &[&loss.stops, &migrations, &filled.stops, &batch_stops],
        &loss.orphans,
        &deletes,
    );
    let facts = Facts {
        goal: &goal,
        tasks: &tasks,
        live: &live,
        desired: target.len() as u64,
        generation,
    };
    let (status, requeue) = finish_status(st, &facts, &step, &placed);
    plan.creates = placed.creates;
    plan.status = Some(status);
    let grace = loss.grace_ends.map(|end| end.since(input.now));
    let rollout = filled_requeue(&filled, &step, input.now);
    plan.requeue_after = [rollout, requeue, grace].into_iter().flatten().min();
    plan
}

/// Starts, resumes or drops the rollout record (see [`progress::begin`]).
fn begin_rollout(st: &mut ServiceStatus, tasks: &Tasks<'_>, goal: &Goal<'_>, generation: i64) {
    let input = tasks.input();
    let last_write = st.updated_at;
    // The oldest live task already on the target template, created since the status was
    // last written: a new leader may find tasks its predecessor created.
    let earliest = input
        .tasks
        .iter()
        .filter(|e| {
            e.task.template_hash == goal.hash && !e.is_dead() && e.task.created_at >= last_write
        })
        .map(|e| e.task.created_at)
        .min();
    progress::begin(
        st,
        input.now,
        &goal.spec,
        &goal.hash,
        goal.rollback_mode,
        generation,
        earliest,
    );
}

/// The rollout batch: stop-first stops the old tasks, start-first starts their replacements
/// beside them.
fn replace_batch(
    tasks: &Tasks<'_>,
    goal: &Goal<'_>,
    batch: &[usize],
) -> (Vec<usize>, Vec<Pending>) {
    if !goal.start_first() {
        return (batch.to_vec(), Vec::new());
    }
    let input = tasks.input();
    let pending = batch
        .iter()
        .map(|&i| {
            let slot = tasks.entry(i).task.slot.clone();
            debug!(service = %input.service_ref, task = %tasks.entry(i).task.id, %slot, "start-first: starting the replacement");
            Pending { slot, attempt: 0 }
        })
        .collect();
    (Vec::new(), pending)
}

/// When the slots and the rollout want another look: the earliest restart delay (right away
/// when a rollback just started), or a monitored task's health deadline.
fn filled_requeue(filled: &Filled, step: &Step, now: Timestamp) -> Option<Duration> {
    let base = if step.rollback_now {
        Some(Duration::from_millis(10))
    } else {
        filled.requeue
    };
    let wake = step
        .wake
        .map(|t| t.since(now).max(Duration::from_millis(10)));
    base.into_iter().chain(wake).min()
}

/// The task writes of the plan: `stops` (per phase, in order) and `orphans`, without the
/// tasks it deletes.
fn plan_of(tasks: &Tasks<'_>, stops: &[&[usize]], orphans: &[usize], deletes: &[usize]) -> Plan {
    let task_ref = |&i: &usize| TaskRef::of(&tasks.entry(i).task);
    let deletes: Vec<TaskRef> = deletes.iter().map(task_ref).collect();
    let deleted: BTreeSet<&TaskRef> = deletes.iter().collect();
    let kept = |r: &TaskRef| !deleted.contains(r);
    Plan {
        stops: stops
            .iter()
            .flat_map(|s| s.iter())
            .map(task_ref)
            .filter(kept)
            .collect(),
        orphans: orphans.iter().map(task_ref).filter(kept).collect(),
        deletes,
        ..Plan::default()
    }
}

/// What the status is computed from.
struct Facts<'a, 'b> {
    goal: &'a Goal<'a>,
    tasks: &'a Tasks<'b>,
    /// The tasks that keep running after this plan.
    live: &'a BTreeSet<usize>,
    desired: u64,
    generation: i64,
}

/// The new status: counts, rollout progress, placement, conditions. Returns it with when
/// the rollout wants another look (a monitor window still running).
fn finish_status(
    mut st: ServiceStatus,
    facts: &Facts<'_, '_>,
    step: &Step,
    placed: &Placed,
) -> (ServiceStatus, Option<Duration>) {
    let (tasks, desired) = (facts.tasks, facts.desired);
    let input = tasks.input();
    let now = input.now;
    let up: Vec<usize> = facts
        .live
        .iter()
        .copied()
        .filter(|&i| is_up(tasks.entry(i)))
        .collect();
    let running = up.len() as u64;
    let updated = up
        .iter()
        .filter(|&&i| tasks.entry(i).task.template_hash == facts.goal.hash)
        .count() as u64;
    if let Some(prev) = &input.previous
        && prev.desired != desired
        && st.observed_generation != 0
    {
        let msg = format!("desired tasks {} → {desired}", prev.desired);
        status::push_event(&mut st, now, "Normal", "Scaled", &msg);
    }
    let outcome = Outcome {
        updated,
        desired,
        failed_slots: step.failed_slots,
        all_current: step.all_current,
        monitor_until: step.monitor_until,
    };
    let requeue = progress::finish(&mut st, now, &outcome);
    progress::sync_history(&mut st);
    if placed.unschedulable != st.unschedulable {
        match &placed.unschedulable {
            Some(msg) => status::push_event(&mut st, now, "Warning", "Unschedulable", msg),
            None => {
                status::push_event(&mut st, now, "Normal", "Scheduled", "every task has a node")
            }
        }
    }
    st.unschedulable = placed.unschedulable.clone();
    st.observed_generation = facts.generation;
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
    (status::finish(st, input.previous.as_ref(), now), requeue)
}

fn push_events(st: &mut ServiceStatus, now: Timestamp, kind: &str, reason: &str, msgs: &[String]) {
    for msg in msgs {
        status::push_event(st, now, kind, reason, msg);
    }
}
