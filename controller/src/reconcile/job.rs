//! Reconciling a job (`mode: replicated-job` or `global-job`): runs to completion, counted
//! exactly once.
//!
//! Every run is numbered and recorded in the status ([`JobStatus`]); its tasks carry the run
//! number. Each reconcile:
//! 1. orphans unfinished tasks on lost nodes (they are retried, never counted);
//! 2. counts, per active run, the tasks that completed or failed since the last count, by id
//!    (so a task is counted once whatever restarts or failovers happen in between), and
//!    finishes runs: past `activeDeadline` (checked first: the deadline wins over retries),
//!    `completions` successes, or more than `backoffLimit` failures;
//! 3. starts at most one new run: a new or changed template (unscheduled jobs), a schedule
//!    tick (see [`super::job_schedule`]) or a `shoal job run` request;
//! 4. stops the tasks of finished runs and starts tasks for active ones, at most
//!    `parallelism` at once, a failed task's retry after the restart delay;
//! 5. removes a finished run's tasks once `ttlAfterFinished` has passed, and the records of
//!    runs beyond `historyLimit`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_core::job::{JobRun, JobSpec, JobStatus, RunState, RunTrigger, reason};
use shoal_core::manifest::{Mode, Service};
use shoal_core::model::{
    DesiredState, ServiceStatus, Slot, Task, TaskState, TaskTemplate, Timestamp,
};

use super::job_schedule::{self, Start};
use super::status;
use super::{IdGen, Plan, ReconcileInput, TaskEntry, TaskRef};
use crate::placement::{Explanation, Placer};

/// The per-reconcile working state.
struct JobWork<'a> {
    input: &'a ReconcileInput,
    svc: &'a Service,
    job: JobSpec,
    generation: i64,
    template: Arc<TaskTemplate>,
    hash: String,
    /// Tasks this plan stops (or orphans).
    stopped: BTreeSet<usize>,
    plan: Plan,
    st: ServiceStatus,
    requeue: Option<Duration>,
    unschedulable: Option<String>,
}

impl<'a> JobWork<'a> {
    fn entry(&self, i: usize) -> &'a TaskEntry {
        &self.input.tasks[i]
    }

    fn node_ok(&self, i: usize) -> bool {
        let node = &self.entry(i).task.node_id;
        self.input.nodes.get(node).is_some_and(|n| n.ready)
    }

    /// Wanted running, not finished, not orphaned (nor stopped by this plan).
    fn live(&self, i: usize) -> bool {
        let e = self.entry(i);
        e.wants_running() && !e.is_dead() && !self.stopped.contains(&i)
    }

    fn stop(&mut self, i: usize) {
        if self.live(i) || (self.entry(i).wants_running() && !self.entry(i).is_dead()) {
            self.stopped.insert(i);
            self.plan.stops.push(TaskRef::of(&self.entry(i).task));
        }
    }

    fn wake_at(&mut self, t: Timestamp) {
        let d = t.since(self.input.now).max(Duration::from_millis(10));
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    fn event(&mut self, kind: &str, reason: &str, msg: &str) {
        status::push_event(&mut self.st, self.input.now, kind, reason, msg);
    }

    /// Indexes of the tasks of `run`.
    fn run_tasks(&self, run: &JobRun) -> Vec<usize> {
        (0..self.input.tasks.len())
            .filter(|&i| of_run(self.entry(i), run))
            .collect()
    }

    fn parallelism(&self) -> u64 {
        match self.svc.spec.mode {
            Mode::GlobalJob => self.job.parallelism.unwrap_or(u64::MAX),
            _ => self.job.parallelism.unwrap_or(1),
        }
    }
}

/// Whether the task belongs to `run`: it carries the run's number and was created from the
/// run's manifest revision or a later one. A task left from before the manifest was a service
/// may carry the same number, from an older revision.
fn of_run(e: &TaskEntry, run: &JobRun) -> bool {
    e.task.run == Some(run.number) && e.task.generation >= run.generation
}

/// When a task stopped.
fn finished_at(e: &TaskEntry) -> Timestamp {
    e.status
        .as_ref()
        .map(|s| s.finished_at.unwrap_or(s.updated_at))
        .unwrap_or(e.task.created_at)
}

/// A task that ended badly by itself (not stopped by Shoal, not lost with its node).
fn is_failure(e: &TaskEntry) -> bool {
    matches!(e.state(), TaskState::Failed | TaskState::Rejected) && !e.task.orphaned
}

/// Reconciles a job with a valid manifest.
pub(super) fn reconcile_job(input: &ReconcileInput, svc: &Service, generation: i64) -> Plan {
    let template = TaskTemplate::from_spec(&svc.spec);
    let mut st = input.previous.clone().unwrap_or_default();
    let job_status = st.job.take().unwrap_or_default();
    let mut w = JobWork {
        input,
        svc,
        job: svc.spec.job.clone().unwrap_or_default(),
        generation,
        hash: template.hash(),
        template: Arc::new(template),
        stopped: BTreeSet::new(),
        plan: Plan::default(),
        st,
        requeue: None,
        unschedulable: None,
    };
    let mut placer = match Placer::new(&svc.spec, &input.nodes, &input.others_usage()) {
        Ok(p) => p,
        Err(e) => return super::reconcile_invalid(input, &e.to_string(), generation),
    };
    let mut js = job_status;
    orphan_lost(&mut w);
    for run in js.runs.iter_mut().filter(|r| !r.is_finished()) {
        count(&w, run);
        if matches!(svc.spec.mode, Mode::GlobalJob) {
            run.completions = global_target(&w, &placer, run);
        }
        judge(&mut w, run);
    }
    match job_schedule::decide(&js, &w.job, &w.hash, input.run_request.as_ref(), input.now) {
        Start::Run {
            trigger,
            scheduled_for,
            replace,
        } => {
            start_run(&mut w, &mut js, trigger, scheduled_for, replace);
        }
        Start::Skip { message } => w.event("Normal", "RunSkipped", &message),
        Start::None => {}
    }
    job_schedule::note_handled(&mut js, &w.job, input.run_request.as_ref(), input.now);
    if let Some(next) = js.next_schedule {
        w.wake_at(next);
    }
    for i in 0..input.tasks.len() {
        let e = w.entry(i);
        if w.live(i) {
            placer.account(&e.task.node_id, &e.task.template, true, true);
        } else if !e.is_dead() {
            placer.account(&e.task.node_id, &e.task.template, true, false);
        }
    }
    let mut ids = IdGen::new(input.seed);
    for r in 0..js.runs.len() {
        if js.runs[r].is_finished() {
            for i in w.run_tasks(&js.runs[r]) {
                w.stop(i);
            }
        } else {
            let run = js.runs[r].clone();
            start_tasks(&mut w, &mut placer, &mut ids, &run);
        }
    }
    clean_up(&mut w, &mut js);
    finish_status(w, js)
}

/// Unfinished tasks on nodes that are down (past any grace) are orphaned: lost, retried.
fn orphan_lost(w: &mut JobWork<'_>) {
    for i in 0..w.input.tasks.len() {
        let e = w.entry(i);
        if e.task.orphaned && e.wants_running() {
            w.stopped.insert(i);
            w.plan.stops.push(TaskRef::of(&e.task));
            continue;
        }
        if e.is_dead() || w.node_ok(i) || w.input.node_in_grace(&e.task.node_id) {
            continue;
        }
        w.stopped.insert(i);
        w.plan.orphans.push(TaskRef::of(&e.task));
        let msg = format!(
            "node {} is down: task {} lost, to be retried",
            e.task.node_id, e.task.id
        );
        w.event("Warning", "NodeDown", &msg);
    }
}

/// Counts the run's newly completed and failed tasks, each once by id.
fn count(w: &JobWork<'_>, run: &mut JobRun) {
    for i in w.run_tasks(run) {
        let e = w.entry(i);
        let id = &e.task.id;
        if e.state() == TaskState::Complete {
            // Successes beyond the completions (a lost task that finished after all) do not
            // count.
            let enough = !is_global(w) && run.succeeded >= run.completions.max(1);
            if run.succeeded_tasks.contains(id) || enough {
                continue;
            }
            if is_global(w) {
                if run.done_nodes.contains(&e.task.node_id) {
                    continue;
                }
                run.done_nodes.push(e.task.node_id.clone());
            }
            run.succeeded_tasks.push(id.clone());
            run.succeeded += 1;
        } else if is_failure(e) && !run.failed_tasks.contains(id) {
            run.failed_tasks.push(id.clone());
            run.failed += 1;
        }
    }
}

fn is_global(w: &JobWork<'_>) -> bool {
    w.svc.spec.mode == Mode::GlobalJob
}

/// The nodes a global run must complete on: every node eligible now, plus those done.
fn global_target(w: &JobWork<'_>, placer: &Placer<'_>, run: &JobRun) -> u64 {
    let mut nodes: BTreeSet<&str> = run.done_nodes.iter().map(String::as_str).collect();
    for id in w.input.nodes.keys() {
        if placer.filters().accepts(id) {
            nodes.insert(id);
        }
    }
    nodes.len() as u64
}

/// Finishes the run when its deadline passed (first: the deadline wins over retries), its
/// completions are reached, or its failures exceed the backoff limit.
fn judge(w: &mut JobWork<'_>, run: &mut JobRun) {
    let now = w.input.now;
    if let Some(deadline) = w.job.active_deadline {
        let end = run.started_at.plus(deadline.get());
        if now >= end {
            let msg = format!("run {} was active longer than {deadline}", run.number);
            fail(w, run, reason::DEADLINE_EXCEEDED, &msg);
            return;
        }
        w.wake_at(end);
    }
    if run.completions > 0 && run.succeeded >= run.completions {
        run.state = RunState::Complete;
        run.finished_at = Some(now);
        let msg = format!(
            "run {} completed: {}/{} succeeded",
            run.number, run.succeeded, run.completions
        );
        w.event("Normal", "JobComplete", &msg);
        return;
    }
    if run.failed > w.job.backoff_limit {
        let msg = format!(
            "run {} failed: {} task(s) failed, more than backoffLimit {}",
            run.number, run.failed, w.job.backoff_limit
        );
        fail(w, run, reason::BACKOFF_LIMIT_EXCEEDED, &msg);
    }
}

fn fail(w: &mut JobWork<'_>, run: &mut JobRun, why: &str, msg: &str) {
    run.state = RunState::Failed;
    run.reason = Some(why.to_string());
    run.message = Some(msg.to_string());
    run.finished_at = Some(w.input.now);
    w.event("Warning", why, msg);
}

/// Records a new run (stopping the active ones it replaces); its tasks start below.
fn start_run(
    w: &mut JobWork<'_>,
    js: &mut JobStatus,
    trigger: RunTrigger,
    scheduled_for: Option<Timestamp>,
    replace: bool,
) {
    if replace {
        let why = match trigger {
            RunTrigger::Schedule => reason::REPLACED,
            _ => reason::SUPERSEDED,
        };
        for run in js.runs.iter_mut().filter(|r| !r.is_finished()) {
            let msg = format!("run {} stopped: a new run replaces it", run.number);
            fail(w, run, why, &msg);
        }
    }
    let number = js.next_number();
    let completions = match w.svc.spec.mode {
        Mode::GlobalJob => 0,
        _ => w.job.completions.unwrap_or(1),
    };
    js.runs.push(JobRun {
        number,
        generation: w.generation,
        template_hash: w.hash.clone(),
        trigger,
        state: RunState::Running,
        reason: None,
        message: None,
        started_at: w.input.now,
        scheduled_for,
        finished_at: None,
        completions,
        succeeded: 0,
        failed: 0,
        succeeded_tasks: vec![],
        failed_tasks: vec![],
        done_nodes: vec![],
        cleaned: false,
    });
    let msg = format!("run {number} started ({})", trigger_name(trigger));
    w.event("Normal", "JobStarted", &msg);
    if let Some(d) = w.job.active_deadline {
        w.wake_at(w.input.now.plus(d.get()));
    }
}

fn trigger_name(t: RunTrigger) -> &'static str {
    match t {
        RunTrigger::Template => "new template",
        RunTrigger::Schedule => "schedule",
        RunTrigger::Manual => "requested",
    }
}

/// Failures of the run still within the restart delay: each holds back one retry until
/// then.
fn retries_waiting(w: &mut JobWork<'_>, tasks: &[usize]) -> u64 {
    let delay = w.svc.spec.restart.delay.get();
    let now = w.input.now;
    let mut waiting = 0;
    for &i in tasks {
        let e = w.entry(i);
        if is_failure(e) {
            let ready = finished_at(e).plus(delay);
            if ready > now {
                waiting += 1;
                w.wake_at(ready);
            }
        }
    }
    waiting
}

/// The slots the run starts tasks in now: up to `parallelism` live, no more than the
/// completions still needed (replicated), one per eligible node not done yet (global).
fn new_slots(w: &mut JobWork<'_>, placer: &Placer<'_>, run: &JobRun, tasks: &[usize]) -> Vec<Slot> {
    let live: Vec<usize> = tasks.iter().copied().filter(|&i| w.live(i)).collect();
    let waiting = retries_waiting(w, tasks);
    let room = w.parallelism().saturating_sub(live.len() as u64 + waiting);
    if is_global(w) {
        let busy: BTreeSet<&str> = live
            .iter()
            .map(|&i| w.entry(i).task.node_id.as_str())
            .collect();
        let delayed = delayed_nodes(w, tasks);
        return w
            .input
            .nodes
            .keys()
            .filter(|id| placer.filters().accepts(id))
            .filter(|id| !run.done_nodes.contains(id) && !busy.contains(id.as_str()))
            .filter(|id| !delayed.contains(id.as_str()))
            .take(usize::try_from(room).unwrap_or(usize::MAX))
            .map(|id| Slot::Node(id.clone()))
            .collect();
    }
    let mut next_slot = tasks
        .iter()
        .filter_map(|&i| match w.entry(i).task.slot {
            Slot::Replica(n) => Some(n),
            Slot::Node(_) => None,
        })
        .max()
        .unwrap_or(0);
    let needed = run
        .completions
        .saturating_sub(run.succeeded + live.len() as u64);
    (0..needed.min(room))
        .map(|_| {
            next_slot += 1;
            Slot::Replica(next_slot)
        })
        .collect()
}

/// Starts the run's missing tasks (see [`new_slots`]), placed.
fn start_tasks(w: &mut JobWork<'_>, placer: &mut Placer<'_>, ids: &mut IdGen, run: &JobRun) {
    let tasks = w.run_tasks(run);
    let slots = new_slots(w, placer, run, &tasks);
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for slot in slots {
        let node = match &slot {
            Slot::Replica(_) => match placer.place() {
                Ok(node) => node,
                Err(e) => {
                    w.unschedulable.get_or_insert_with(|| e.to_string());
                    break;
                }
            },
            Slot::Node(node) => match placer.place_on(node) {
                Ok(()) => node.clone(),
                Err(r) => {
                    *refused.entry(r.to_string()).or_default() += 1;
                    continue;
                }
            },
        };
        let task = Task {
            id: format!("{}.{}.{}", w.svc.metadata.name, slot, ids.suffix()),
            service: w.input.service_ref.clone(),
            slot,
            node_id: node,
            generation: w.generation,
            template_hash: w.hash.clone(),
            template: w.template.clone(),
            desired_state: DesiredState::Running,
            attempt: run.failed,
            orphaned: false,
            run: Some(run.number),
            created_at: w.input.now,
        };
        tracing::debug!(service = %w.input.service_ref, task = %task.id, node = %task.node_id, run = run.number, "starting job task");
        w.plan.creates.push(task);
    }
    if !refused.is_empty() {
        let refused_n: usize = refused.values().sum();
        let e = Explanation {
            available: 0,
            total: refused_n,
            reasons: refused,
        };
        w.unschedulable = Some(e.to_string());
    }
}

/// Global runs: nodes whose last task of the run failed within the restart delay.
fn delayed_nodes<'a>(w: &JobWork<'a>, tasks: &[usize]) -> BTreeSet<&'a str> {
    let delay = w.svc.spec.restart.delay.get();
    tasks
        .iter()
        .map(|&i| w.entry(i))
        .filter(|e| is_failure(e) && finished_at(e).plus(delay) > w.input.now)
        .map(|e| e.task.node_id.as_str())
        .collect()
}

/// Removes the tasks of runs past `ttlAfterFinished` or beyond `historyLimit`, and tasks of
/// no run (left from a service mode); trims the run records.
fn clean_up(w: &mut JobWork<'_>, js: &mut JobStatus) {
    let now = w.input.now;
    let limit = usize::try_from(w.job.history_limit.max(1)).unwrap_or(usize::MAX);
    let finished = js.runs.iter().filter(|r| r.is_finished()).count();
    let mut drop_finished = finished.saturating_sub(limit);
    js.runs.retain(|r| {
        if r.is_finished() && drop_finished > 0 {
            drop_finished -= 1;
            return false;
        }
        true
    });
    let mut expired: BTreeSet<u64> = BTreeSet::new();
    for run in js.runs.iter_mut().filter(|r| r.is_finished()) {
        run.succeeded_tasks.clear();
        run.failed_tasks.clear();
        run.done_nodes.clear();
        if let (Some(ttl), Some(end)) = (w.job.ttl_after_finished, run.finished_at) {
            let at = end.plus(ttl.get());
            if now >= at {
                run.cleaned = true;
                expired.insert(run.number);
            } else if !run.cleaned {
                w.wake_at(at);
            }
        }
    }
    for i in 0..w.input.tasks.len() {
        let e = w.entry(i);
        let gone = match e.task.run {
            Some(n) => expired.contains(&n) || !js.runs.iter().any(|r| of_run(e, r)),
            None => true,
        };
        let node_known = w.input.nodes.contains_key(&e.task.node_id);
        let lost_for_good = e.is_dead() && !node_known;
        if !gone && !lost_for_good {
            continue;
        }
        if e.state().is_terminal() || !node_known || (e.task.orphaned && !w.node_ok(i)) {
            w.plan.deletes.push(TaskRef::of(&e.task));
        } else {
            w.stop(i);
        }
    }
    let deleted: BTreeSet<TaskRef> = w.plan.deletes.iter().cloned().collect();
    w.plan.stops.retain(|r| !deleted.contains(r));
    w.plan.orphans.retain(|r| !deleted.contains(r));
}

/// Fills in the status: counts, conditions, the job record.
fn finish_status(mut w: JobWork<'_>, js: JobStatus) -> Plan {
    let now = w.input.now;
    let running = (0..w.input.tasks.len())
        .filter(|&i| w.live(i) && w.entry(i).state() == TaskState::Running)
        .count() as u64;
    let active: Vec<&JobRun> = js.active().collect();
    let desired = active
        .iter()
        .map(|r| r.completions.saturating_sub(r.succeeded))
        .sum::<u64>();
    let desired = desired.min(w.parallelism().saturating_mul(active.len() as u64));
    if w.unschedulable != w.st.unschedulable
        && let Some(msg) = w.unschedulable.clone()
    {
        w.event("Warning", "Unschedulable", &msg);
    }
    let mut st = w.st;
    st.unschedulable = w.unschedulable;
    st.observed_generation = w.generation;
    st.desired = desired;
    st.running = running;
    st.updated = running;
    st.error = None;
    st.rollout = None;
    status::set_condition(&mut st, now, "Valid", true, "ManifestValid", "");
    let (ok, why, msg) = match js.last() {
        Some(r) if r.state == RunState::Failed => (
            false,
            r.reason.clone().unwrap_or_default(),
            r.message.clone().unwrap_or_default(),
        ),
        Some(r) if r.state == RunState::Complete => (true, "RunComplete".into(), String::new()),
        Some(r) => (
            false,
            "RunActive".into(),
            format!(
                "run {}: {}/{} succeeded",
                r.number, r.succeeded, r.completions
            ),
        ),
        None => (false, "NoRun".into(), "waiting for the schedule".into()),
    };
    status::set_condition(&mut st, now, "Complete", ok, &why, &msg);
    st.job = Some(js);
    w.plan.status = Some(status::finish(st, w.input.previous.as_ref(), now));
    w.plan.requeue_after = w.requeue;
    w.plan
}
