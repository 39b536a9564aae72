//! The worker: watches the assignments of the agent's nodes (`tasks/<node>/`; for hollow
//! nodes one watch on `tasks/` filtered by the node set), starts one runner per task, passes
//! desired-state changes and deletions on, and adopts the containers the runtime already runs
//! when the agent starts.
//!
//! The assignments come from the store's [`reflector`]: a list (again after the watch fell
//! behind compaction), then every change. With each list the worker also reads the nodes'
//! task statuses (a new runner starts from its task's last status) and deletes those left
//! without an assignment. While the store is unreachable nothing is stopped: runners keep
//! their tasks and the worker catches up when the store returns.
//!
//! On a runtime that reports exits itself (sim), runners of simply running tasks park (see
//! [`task_runner`](crate::task_runner)): the worker keeps their compact record and resumes a runner when
//! the task exits, its desired state becomes `shutdown` or its assignment is deleted. A
//! hollow node's running task then costs a map entry, not a waiting runner.
//!
//! With Consul discovery, once the first list has been applied (adoption done) the worker
//! starts the cleanup of this node's stale Consul registrations, keeping those of every
//! assigned task that has not ended.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use shoal_core::keys::{Key, Keys};
use shoal_core::model::{self, DesiredState, Task, TaskStatus};
use shoal_store::reflector::{self, Event};
use shoal_store::{Backoff, ListResult, Revision, Store};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use tracing::Instrument;

use crate::discovery::task::DEREGISTER_WAIT;
use crate::runtime::{Existing, ExitNotice, Handle, RuntimeError};
use crate::task_runner::{self, Control, Parked, ServiceNames, TaskRunnerContext};

mod slots;

use slots::{Slots, TaskId};

/// Grace period given to containers found running for tasks no longer assigned.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);

struct RunnerEntry {
    control: watch::Sender<Control>,
    join: tokio::task::JoinHandle<()>,
}

/// What the worker holds for one assigned task.
enum Slot {
    /// A runner drives the task.
    Active(RunnerEntry),
    /// The task simply runs; its runner parked. Held in place (not boxed): hollow nodes
    /// hold one per task, and one allocation fewer per task is memory the allocator cannot
    /// strand among a burst's freed runners.
    Parked(Parked),
}

/// Counts of what a worker holds, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    runners: AtomicUsize,
    parked: AtomicUsize,
}

impl WorkerStats {
    /// Runners currently alive (spawned and not finished).
    pub fn live_runners(&self) -> usize {
        self.runners.load(Ordering::Relaxed)
    }

    /// Tasks held as a parked record.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}

/// Counts a runner as alive until dropped.
struct LiveRunner(Arc<WorkerStats>);

impl LiveRunner {
    fn new(stats: Arc<WorkerStats>) -> Self {
        stats.runners.fetch_add(1, Ordering::Relaxed);
        LiveRunner(stats)
    }
}

impl Drop for LiveRunner {
    fn drop(&mut self) {
        self.0.runners.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What reaches the worker besides the assignments: parked runners and exit notices.
struct Side {
    parked: mpsc::UnboundedReceiver<(TaskId, Box<Parked>)>,
    exits: Option<mpsc::UnboundedReceiver<ExitNotice>>,
}

/// Runs the tasks assigned to a set of nodes.
pub struct Worker {
    store: Arc<dyn Store>,
    keys: Keys,
    nodes: Arc<BTreeSet<String>>,
    ctx: TaskRunnerContext,
    runners: Slots<Slot>,
    /// The service names the parked records share.
    service_names: ServiceNames,
    stats: Arc<WorkerStats>,
    park_tx: mpsc::UnboundedSender<(TaskId, Box<Parked>)>,
    side: Option<Side>,
    adoptable: BTreeMap<(String, String), Existing>,
    /// Opened when the stale-registration cleanup is over (taken when it starts).
    discovery_ready: Option<watch::Sender<bool>>,
    /// Assigned tasks that have not ended, as of the first list.
    live: BTreeSet<String>,
    /// The cluster this agent serves: only its containers are ever removed.
    cluster: Option<String>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Tasks are left running (they are adopted on restart); only the runners end.
        for r in self.runners.values() {
            if let Slot::Active(r) = r {
                r.join.abort();
            }
        }
    }
}

/// Of two containers found for one task, the one to adopt and the one to remove: a running
/// one wins over an exited one; between two alike, the one listed last.
fn keep_of_duplicates(a: Existing, b: Existing) -> (Existing, Existing) {
    if a.exit.is_none() && b.exit.is_some() {
        (a, b)
    } else {
        (b, a)
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// An assignment as listed or watched: key, raw value, revision.
type Assignment = (String, Vec<u8>, Revision);

impl Worker {
    /// A worker for `nodes`.
    pub fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        nodes: BTreeSet<String>,
        mut ctx: TaskRunnerContext,
    ) -> Self {
        let exits = ctx.runtime.exit_notices();
        ctx.parks = exits.is_some();
        let (park_tx, parked) = mpsc::unbounded_channel();
        Worker {
            store,
            keys,
            nodes: Arc::new(nodes),
            ctx,
            runners: Slots::default(),
            service_names: ServiceNames::default(),
            stats: Arc::default(),
            park_tx,
            side: Some(Side { parked, exits }),
            adoptable: BTreeMap::new(),
            discovery_ready: None,
            live: BTreeSet::new(),
            cluster: None,
        }
    }

    /// Removes only containers labelled with `cluster` (none without it): those of another
    /// cluster, or with no label, are left alone.
    pub fn with_cluster(mut self, cluster: String) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Whether a container found on the node may be removed by this agent.
    fn ours(&self, ex: &Existing) -> bool {
        let ours = self.cluster.is_some() && ex.cluster == self.cluster;
        if !ours {
            tracing::warn!(task = %ex.task_id, container = %ex.handle.id, cluster = ex.cluster.as_deref().unwrap_or("<none>"), "leaving a container of another cluster alone");
        }
        ours
    }

    /// Cleans up this node's stale Consul registrations after the first list, then opens
    /// `ready` (the receiver the runners' context holds). Without a registrar in the context
    /// `ready` is opened at once.
    pub fn with_stale_cleanup(mut self, ready: watch::Sender<bool>) -> Self {
        if self.ctx.discovery.is_some() {
            self.discovery_ready = Some(ready);
        } else {
            ready.send_replace(true);
        }
        self
    }

    fn prefixes(&self) -> (String, String) {
        match self.nodes.iter().next() {
            Some(n) if self.nodes.len() == 1 => (
                self.keys.node_tasks_prefix(n),
                self.keys.node_task_status_prefix(n),
            ),
            _ => (self.keys.tasks_prefix(), self.keys.task_status_prefix()),
        }
    }

    /// Number of tasks the worker currently holds (with a runner or parked).
    pub fn runners(&self) -> usize {
        self.runners.len()
    }

    /// Live counts of runners and parked tasks (shared; stays readable while the worker runs).
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Awaits `fut` while taking in parked runners and exit notices.
    async fn serve<F: Future>(&mut self, side: &mut Side, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => return r,
                Some((id, p)) = side.parked.recv() => self.on_parked(id, *p),
                Some(n) = recv_opt(&mut side.exits) => self.on_exit(n),
            }
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some(existing) = self.list_runtime(&shutdown).await else {
            return;
        };
        if let Some(delivery) = &self.ctx.delivery {
            // Files of tasks whose container no longer runs are left from an abrupt stop.
            let running = existing
                .iter()
                .filter(|ex| ex.exit.is_none())
                .map(|ex| (ex.node_id.clone(), ex.task_id.clone()))
                .collect();
            delivery.sweep(&self.nodes, &running);
        }
        self.take_adoptable(existing);
        let (tasks_prefix, status_prefix) = self.prefixes();
        let Some(mut side) = self.side.take() else {
            return;
        };
        // Hollow nodes share one watch on `tasks/`: the values of other processes' nodes are
        // dropped as they arrive (their keys are skipped below).
        let (keys, nodes) = (self.keys.clone(), self.nodes.clone());
        let mut batches = reflector::batches(self.store.clone(), &tasks_prefix, move |k, v| {
            match keys.parse(k) {
                Some(Key::Task { node, .. }) if nodes.contains(&node) => v,
                _ => Vec::new(),
            }
        });
        let mut first = true;
        loop {
            let next = self
                .serve(&mut side, async {
                    tokio::select! {
                        batch = batches.next() => batch,
                        () = shutdown.cancelled() => None,
                    }
                })
                .await;
            let Some(batch) = next else {
                if !shutdown.is_cancelled() {
                    tracing::error!("the assignment watch ended; the worker stops");
                }
                return;
            };
            for event in batch.events {
                match event {
                    Event::Init(tasks) => {
                        let Some(statuses) = self
                            .list_statuses(&mut side, &status_prefix, &shutdown)
                            .await
                        else {
                            return;
                        };
                        self.apply_list(tasks, statuses);
                        if std::mem::take(&mut first) {
                            self.after_first_list(&shutdown);
                        }
                    }
                    Event::Apply(key, value, _) => {
                        if let Some(id) = self.parse_task_key(&key) {
                            self.apply_put(id, &key, &value, None);
                        }
                    }
                    Event::Delete(key, _) => {
                        if let Some(id) = self.parse_task_key(&key) {
                            self.delete(&id);
                        }
                    }
                }
            }
        }
    }

    /// Keeps the containers the runtime already runs for adoption by their tasks' runners;
    /// of two containers for one task the running one is kept and the other removed.
    fn take_adoptable(&mut self, existing: Vec<Existing>) {
        for ex in existing {
            let k = (ex.node_id.clone(), ex.task_id.clone());
            let drop = match self.adoptable.remove(&k) {
                None => {
                    self.adoptable.insert(k, ex);
                    continue;
                }
                Some(prev) => {
                    // Two containers for one task: keep the running one, remove the other.
                    let (keep, drop) = keep_of_duplicates(prev, ex);
                    self.adoptable.insert(k, keep);
                    drop
                }
            };
            if self.ours(&drop) {
                tracing::info!(task = %drop.task_id, container = %drop.handle.id, "removing a duplicate container of a task");
                self.remove_orphan(String::new(), drop.handle);
            }
        }
    }

    /// Reads the nodes' task statuses (with each list of assignments), retrying with backoff
    /// while serving the side channels; `None` on shutdown.
    async fn list_statuses(
        &mut self,
        side: &mut Side,
        prefix: &str,
        shutdown: &CancellationToken,
    ) -> Option<ListResult> {
        let store = self.store.clone();
        let mut delays = Backoff::STORE.delays();
        loop {
            let listed = self
                .serve(side, async {
                    tokio::select! {
                        listed = store.list(prefix) => Some(listed),
                        () = shutdown.cancelled() => None,
                    }
                })
                .await?;
            match listed {
                Ok(statuses) => return Some(statuses),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list task statuses; tasks keep running, retrying");
                    if !self.serve(side, delays.sleep(shutdown)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Once the first list is applied: removes the containers of tasks no longer assigned and
    /// starts the cleanup of stale Consul registrations.
    fn after_first_list(&mut self, shutdown: &CancellationToken) {
        for (_, ex) in std::mem::take(&mut self.adoptable) {
            if !self.ours(&ex) {
                continue;
            }
            tracing::info!(task = %ex.task_id, container = %ex.handle.id, "removing a container whose task is no longer assigned");
            if let Some(delivery) = &self.ctx.delivery {
                delivery.discard(&ex.node_id, &ex.task_id);
            }
            self.remove_orphan(ex.task_id, ex.handle);
        }
        if let (Some(ready), Some(registrar)) =
            (self.discovery_ready.take(), self.ctx.discovery.clone())
        {
            let live = std::mem::take(&mut self.live);
            tokio::spawn(
                crate::discovery::clean_up_stale(registrar, live, ready, shutdown.clone())
                    .in_current_span(),
            );
        }
    }

    async fn list_runtime(&self, shutdown: &CancellationToken) -> Option<Vec<Existing>> {
        let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).delays();
        loop {
            match self.ctx.runtime.list(&self.nodes).await {
                Ok(v) => return Some(v),
                Err(RuntimeError::Permanent(m)) => {
                    tracing::error!(error = %m, "cannot list the runtime's tasks; adoption skipped");
                    return Some(Vec::new());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the runtime's tasks; retrying");
                    if !delays.sleep(shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    fn parse_task_key(&self, key: &str) -> Option<(String, String)> {
        match self.keys.parse(key)? {
            Key::Task { node, task } if self.nodes.contains(&node) => Some((node, task)),
            _ => None,
        }
    }

    fn apply_list(&mut self, tasks: Vec<Assignment>, statuses: ListResult) {
        let mut prior: BTreeMap<(String, String), TaskStatus> = BTreeMap::new();
        for kv in statuses.kvs {
            if let Some(Key::TaskStatus { node, task }) = self.keys.parse(&kv.key) {
                if !self.nodes.contains(&node) {
                    continue;
                }
                match model::decode::<TaskStatus>("task status", &kv.value) {
                    Ok(s) => {
                        prior.insert((node, task), s);
                    }
                    Err(e) => {
                        tracing::warn!(key = %kv.key, error = %e, "ignoring an unreadable task status")
                    }
                }
            }
        }
        let mut seen = Slots::default();
        for (key, value, _) in tasks {
            let Some(id) = self.parse_task_key(&key) else {
                continue;
            };
            seen.insert(id.clone(), ());
            let st = prior.remove(&id);
            if self.discovery_ready.is_some() && !st.as_ref().is_some_and(|s| s.state.is_terminal())
            {
                self.live.insert(id.1.clone());
            }
            self.apply_put(id, &key, &value, st);
        }
        // Statuses left without an assignment (their task was deleted while this agent was
        // away, or by an older controller that did not leave them to the agent): the agent is
        // their only writer, so it collects them.
        for (node, task) in prior.into_keys() {
            tracing::info!(node = %node, task = %task, "deleting the status of a task no longer assigned");
            self.ctx.status.remove(self.keys.task_status(&node, &task));
        }
        let gone: Vec<TaskId> = self
            .runners
            .ids()
            .filter(|&(node, task)| !seen.contains(node, task))
            .map(|(node, task)| (node.to_string(), task.to_string()))
            .collect();
        for id in gone {
            self.delete(&id);
        }
    }

    fn apply_put(
        &mut self,
        id: (String, String),
        key: &str,
        value: &[u8],
        prior: Option<TaskStatus>,
    ) {
        let task: Task = match model::decode("task", value) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(key, error = %e, "ignoring an unreadable assignment");
                return;
            }
        };
        let control = Control {
            desired: task.desired_state,
            deleted: false,
        };
        match self.runners.get(&id) {
            Some(Slot::Active(r)) => {
                r.control.send_if_modified(|c| {
                    let changed = *c != control;
                    *c = control;
                    changed
                });
                return;
            }
            Some(Slot::Parked(p)) => {
                // Only a shutdown concerns a task that simply runs; nothing but the deletion
                // concerns one that ended.
                if control.desired == DesiredState::Shutdown && !p.has_ended() {
                    self.resume(id, control);
                }
                return;
            }
            None => {}
        }
        let adopted = self.adoptable.remove(&id);
        let (tx, rx) = watch::channel(control);
        let run = task_runner::run(self.ctx.clone(), task, rx, prior, adopted);
        let join = self.spawn_runner(id.clone(), run);
        self.runners
            .insert(id, Slot::Active(RunnerEntry { control: tx, join }));
    }

    /// Spawns a runner; a parked record it ends with comes back through the side channel.
    fn spawn_runner(
        &self,
        id: TaskId,
        run: impl Future<Output = Option<Box<Parked>>> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let live = LiveRunner::new(self.stats.clone());
        let park = self.park_tx.clone();
        tokio::spawn(async move {
            let parked = run.await;
            drop(live);
            if let Some(p) = parked {
                let _ = park.send((id, p));
            }
        })
    }

    /// Picks a parked task up again with a runner told `control`.
    fn resume(&mut self, id: TaskId, control: Control) {
        let Some(Slot::Parked(p)) = self.runners.remove(&id) else {
            return;
        };
        self.stats.parked.fetch_sub(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(control);
        let run = task_runner::resume(self.ctx.clone(), &id.0, &id.1, p, rx);
        let join = self.spawn_runner(id.clone(), run);
        if !control.deleted {
            self.runners
                .insert(id, Slot::Active(RunnerEntry { control: tx, join }));
        }
    }

    /// A runner parked: keep its record, unless the controller's wishes changed meanwhile.
    /// Without an entry the assignment was deleted while the record was on its way: the
    /// record is resumed to clean up.
    fn on_parked(&mut self, id: TaskId, mut parked: Parked) {
        let ended = parked.has_ended();
        let control = match self.runners.get_mut(&id) {
            Some(Slot::Active(r)) => *r.control.borrow(),
            Some(Slot::Parked(_)) => return,
            None => Control {
                desired: DesiredState::Running,
                deleted: true,
            },
        };
        parked.share_service(&mut self.service_names);
        self.runners.insert(id.clone(), Slot::Parked(parked));
        self.stats.parked.fetch_add(1, Ordering::Relaxed);
        if control.deleted || (control.desired == DesiredState::Shutdown && !ended) {
            self.resume(id, control);
        }
    }

    /// The runtime says a task exited: resume its runner if it parked.
    fn on_exit(&mut self, notice: ExitNotice) {
        let id = (notice.node_id, notice.task_id);
        if matches!(self.runners.get(&id), Some(Slot::Parked(p)) if !p.has_ended()) {
            self.resume(
                id,
                Control {
                    desired: DesiredState::Running,
                    deleted: false,
                },
            );
        }
    }

    fn delete(&mut self, id: &TaskId) {
        match self.runners.get(id) {
            Some(Slot::Active(_)) => {
                if let Some(Slot::Active(r)) = self.runners.remove(id) {
                    tracing::info!(node = %id.0, task = %id.1, "assignment deleted");
                    r.control.send_modify(|c| c.deleted = true);
                }
            }
            Some(Slot::Parked(_)) => {
                tracing::info!(node = %id.0, task = %id.1, "assignment deleted");
                self.resume(
                    id.clone(),
                    Control {
                        desired: DesiredState::Running,
                        deleted: true,
                    },
                );
            }
            None => {}
        }
    }

    /// Stops and removes a container no runner owns; `task_id` (empty for a duplicate of a
    /// task that keeps running) is deregistered from Consul first.
    fn remove_orphan(&self, task_id: String, handle: Handle) {
        let rt = self.ctx.runtime.clone();
        let discovery = self.ctx.discovery.clone();
        tokio::spawn(async move {
            if let (Some(registrar), false) = (discovery, task_id.is_empty()) {
                let dereg = registrar.deregister(&task_id);
                match tokio::time::timeout(DEREGISTER_WAIT, dereg).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(task = %task_id, error = %e, "cannot deregister an unassigned task from consul")
                    }
                    Err(_) => {
                        tracing::warn!(task = %task_id, "consul did not answer the deregistration of an unassigned task in time")
                    }
                }
            }
            if let Err(e) = rt.stop(&handle, "SIGTERM", ORPHAN_GRACE).await {
                tracing::warn!(container = %handle.id, error = %e, "cannot stop an unassigned container");
            }
            if let Err(e) = rt.remove(&handle).await {
                tracing::warn!(container = %handle.id, error = %e, "cannot remove an unassigned container");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_no_larger_than_a_parked_record() {
        // Hollow nodes hold one per task; the runner's handles fit beside the record's
        // fields, so holding the record in place costs no tag.
        assert!(
            std::mem::size_of::<Slot>() <= std::mem::size_of::<Parked>(),
            "Slot is {} bytes, Parked {}",
            std::mem::size_of::<Slot>(),
            std::mem::size_of::<Parked>()
        );
    }
}
