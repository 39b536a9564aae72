//! The runner: follows the store into one cache for as long as it runs ([`follow`]: a
//! standby's cache is warm), campaigns for leadership, and while it leads queues the services
//! that changed, reconciles them with several workers (one per service at a time) and
//! commits each plan in fenced, batched transactions; plans that place tasks go through the
//! [`pipeline`] (decided one at a time, committed several at a time).
//!
//! A term's tasks (resync, workers, ...) run for as long as the term: when one panics or
//! ends, or the store watch breaks, the term ends too — the leader steps down, releases its
//! lease and campaigns again (with a fresh cache if the watch broke), rather than leading
//! without seeing or reconciling anything. Every stop (shutdown, lost lease, deposed by a
//! fenced write) is a [`CancellationToken`].

mod cache;
pub mod commit;
mod follow;
pub mod leader;
pub mod lease_end;
pub mod offline;
mod pipeline;
pub mod queue;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use rand::Rng;
use shoal_core::Keys;
use shoal_core::manifest::ServiceRef;
use shoal_core::model::Timestamp;
use shoal_store::reflector;
use shoal_store::{Backoff, Revision, Store, StoreError, TxnOp};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::Metrics;
use crate::reconcile::{Plan, ReconcileInput, ServiceInput, gone, reconcile};
use cache::{Cache, NodeGrace, Written};
use commit::{CommitError, commit, oversized_task, plan_ops, refence};
use follow::{Applied, View};
use leader::{Fence, Leadership, campaign};
use queue::WorkQueue;

/// Errors of the runner.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A write was fenced off.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// Controller settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Name written in the leader record.
    pub identity: String,
    /// TTL of the leader lease (kept alive every TTL/3).
    pub lease_ttl: Duration,
    /// Reconciles running at once (each on a different service).
    pub workers: usize,
    /// Wait after a change before reconciling (changes within it are merged).
    pub debounce: Duration,
    /// Every service is reconciled at least this often.
    pub resync_interval: Duration,
    /// Retry delays after a failed reconcile.
    pub backoff: Backoff,
    /// How long a newly leading controller waits for a node without a record before it
    /// declares the node lost (one agent lease TTL: the agents' `--lease-ttl`).
    pub node_grace: Duration,
    /// A node down this long is gone for good: its tasks, their statuses and its settings
    /// are deleted (`shoal controller --node-gone-after`, default 24h).
    pub node_gone_after: Duration,
    /// Revisions of history the leader keeps when it compacts the store (etcd); 0 = never
    /// compact (`shoal controller --history-revisions`, default 10000).
    pub history_revisions: i64,
    /// How often the leader compacts.
    pub compact_interval: Duration,
    /// How long a node whose record disappears while this controller leads keeps its tasks
    /// before it is declared lost. 0 on etcd and embedded, where a record only goes after a
    /// lease TTL of silence; one session TTL on Consul, where a restarting Consul agent
    /// destroys its node's sessions and the agent registers again at once.
    pub node_record_grace: Duration,
    /// Finished tasks each slot of a service keeps as its history, newest first (`shoal
    /// controller --task-history-limit`, default 5); 0 keeps only what restart decisions need.
    pub task_history_limit: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            identity: format!(
                "controller-{}-{:06x}",
                std::process::id(),
                rand::rng().random_range(0..0xff_ffff)
            ),
            lease_ttl: Duration::from_secs(5),
            workers: 4,
            debounce: Duration::from_millis(20),
            resync_interval: Duration::from_secs(60),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            node_grace: Duration::from_secs(5),
            node_gone_after: Duration::from_secs(24 * 3600),
            history_revisions: 10_000,
            compact_interval: Duration::from_secs(60),
            node_record_grace: Duration::ZERO,
            task_history_limit: crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT,
        }
    }
}

/// How a term as leader ended.
enum TermEnd {
    Shutdown,
    Lost,
    /// One of the term's tasks panicked or ended, or the store watch broke: a leader that
    /// can no longer see or reconcile must not keep the lease.
    Broken(String),
}

/// The controller.
pub struct Controller {
    store: Arc<dyn Store>,
    keys: Keys,
    config: ControllerConfig,
    metrics: Metrics,
    leading: watch::Sender<bool>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("identity", &self.config.identity)
            .finish_non_exhaustive()
    }
}

/// What the workers share during one term.
struct Term {
    store: Arc<dyn Store>,
    keys: Keys,
    view: Arc<View>,
    queue: WorkQueue,
    fence: Fence,
    metrics: Metrics,
    /// Cancelled when a write was fenced off or the leader record changed hands.
    deposed: CancellationToken,
    /// Held while a plan is decided, and a placing plan staged (see [`pipeline`]).
    placement: tokio::sync::Mutex<()>,
    /// Grace for nodes without a record (see [`ControllerConfig::node_grace`]).
    grace: NodeGrace,
    /// A write failed without an answer: it may still land, so the fence must move (and the
    /// cache catch up) before the next decision.
    unsure: AtomicBool,
    /// Held while the fence moves: two moves at once would each see the other's as a loss.
    refencing: tokio::sync::Mutex<()>,
    /// The fence's revision after the last move (at first, the revision the leader record
    /// was won at): decisions wait until the watch reached it.
    barrier: AtomicI64,
}

impl Term {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.view.cache()
    }

    fn enqueue_touched(&self, touched: cache::Touched) {
        let extra = if touched.nodes_changed {
            self.cache().node_sensitive_services()
        } else {
            Default::default()
        };
        for s in touched.services.into_iter().chain(extra) {
            self.queue.add(s);
        }
    }

    /// Queues every service at once: the debounce gathers a burst of changes, and a whole
    /// view (a new term's, a relist's, a resync's) has nothing more to gather. A new leader
    /// thus starts placing as soon as it has caught up, not a debounce later.
    fn enqueue_all(&self) {
        let all = self.cache().all_services();
        for s in all {
            self.queue.add_after(s, Duration::ZERO);
        }
    }

    /// After a write whose outcome is unknown: moves the fence, so that write can no longer
    /// land, then waits until the watch has brought the cache up to the fence's new revision,
    /// so it holds whatever the write did if it landed before. Nothing to do otherwise.
    async fn settle(&self) -> Result<(), CommitError> {
        let refencing = self.refencing.lock().await;
        // Cleared before the move: a write failing meanwhile sets it again for another move.
        if self.unsure.swap(false, Ordering::SeqCst) {
            let moved = match refence(self.store.as_ref(), &self.fence).await {
                Ok(r) => r,
                Err(e) => {
                    self.unsure.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            };
            self.barrier.fetch_max(moved, Ordering::SeqCst);
            info!(revision = moved, "a write went unanswered: fence moved");
        }
        drop(refencing);
        let revision = self.barrier.load(Ordering::SeqCst);
        if *self.view.watched.borrow() >= revision {
            return Ok(());
        }
        let mut seen = self.view.watched.subscribe();
        let caught_up = seen.wait_for(|r| *r >= revision);
        match tokio::time::timeout(Duration::from_secs(10), caught_up).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CommitError::Store(StoreError::Unavailable(format!(
                "the watch has not reached revision {revision} yet"
            )))),
        }
    }

    /// Commits `ops` under the fence (see [`commit`]), settling first; a store error marks
    /// the outcome unknown.
    async fn write(
        &self,
        ops: &[TxnOp],
        applied: impl FnMut(&[TxnOp], shoal_store::Revision),
    ) -> Result<(), CommitError> {
        self.settle().await?;
        let res = commit(self.store.as_ref(), &self.fence, ops, applied).await;
        if matches!(res, Err(CommitError::Store(_))) {
            self.unsure.store(true, Ordering::SeqCst);
        }
        res
    }

    /// Reconciles one service and commits the plan.
    async fn reconcile_one(&self, s: &ServiceRef) -> Result<Option<Duration>, ControllerError> {
        let started = std::time::Instant::now();
        self.metrics.reconciles.inc();
        let seed = rand::rng().random();
        // Plans are decided one at a time, so two services never take the same host port or
        // the last free memory of a node; their commits overlap.
        let placing = self.placement.lock().await;
        self.settle().await?;
        let (input, plan) = self.decide(s, seed);
        let plan = if plan.creates.is_empty() {
            drop(placing);
            let (plan, ops) = self.writes(s, input, plan);
            if !ops.is_empty() {
                let written = Written::of(s, &plan);
                self.write(&ops, |batch, rev| {
                    self.cache().committed(batch, rev, &written);
                })
                .await?;
            }
            plan
        } else {
            self.place(s, placing, input, plan).await?
        };
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        let again = if plan.is_quiet() {
            plan.requeue_after
        } else {
            Some(Duration::from_millis(50))
        };
        Ok(match (again, plan.requeue_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// The writes of `plan`; a plan whose task records are too large for a transaction is
    /// replaced by the one marking the service invalid.
    fn writes(
        &self,
        s: &ServiceRef,
        mut input: ReconcileInput,
        mut plan: Plan,
    ) -> (Plan, Vec<TxnOp>) {
        let mut ops = plan_ops(&self.keys, &input, &plan);
        if let Some(why) = oversized_task(&ops, self.store.max_txn_bytes())
            && let ServiceInput::Present { generation, .. } = input.service
        {
            warn!(service = %s, reason = %why, "service invalid: its tasks are too large to write");
            input.service = ServiceInput::Invalid {
                error: why,
                generation,
            };
            plan = reconcile(&input);
            ops = plan_ops(&self.keys, &input, &plan);
        }
        if !ops.is_empty() {
            debug!(
                creates = plan.creates.len(),
                stops = plan.stops.len(),
                orphans = plan.orphans.len(),
                deletes = plan.deletes.len(),
                ops = ops.len(),
                "committing plan"
            );
        }
        (plan, ops)
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let s = self.queue.next().await;
            let span = info_span!("reconcile", service = %s);
            let res = self.reconcile_one(&s).instrument(span).await;
            match res {
                Ok(requeue) => self.queue.done(&s, Ok(requeue)),
                Err(e) => {
                    self.metrics.errors.inc();
                    warn!(service = %s, error = %e, "reconcile failed");
                    if matches!(e, ControllerError::Commit(CommitError::Fenced)) {
                        self.deposed.cancel();
                    }
                    self.queue.done(&s, Err(()));
                }
            }
        }
    }

    /// Whether a change of the leader record shows it deleted (`value` `None`) or rewritten
    /// by someone else. Changes older than the fence are history from before this term.
    fn leader_record_lost(&self, value: Option<&[u8]>, revision: Revision) -> bool {
        revision >= self.fence.revision()
            && value
                .is_none_or(|v| revision != self.fence.revision() && !self.fence.is_own_record(v))
    }

    /// Queues what one batch of the store's changes touched (every service after a list),
    /// and steps down when the batch shows the leader record lost.
    fn observe(&self, applied: Applied) {
        for (value, revision) in &applied.leader {
            if self.leader_record_lost(value.as_deref(), *revision) {
                warn!("the leader record changed under this controller; stepping down");
                self.deposed.cancel();
            }
        }
        match applied.listed {
            Some(_) => self.enqueue_all(),
            None => self.enqueue_touched(applied.touched),
        }
    }

    /// Once a second: deletes the keys of nodes gone for good (see [`crate::reconcile::gone`]).
    async fn collect_gone_nodes(self: Arc<Self>, gone_after: Duration) {
        let mut down = std::collections::BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Timestamp::now();
            let presence = self.cache().presence();
            down = gone::track_down(&presence, &down, now);
            for node in gone::gone(&presence, &down, now, gone_after) {
                let keys = self.cache().node_keys(&node);
                if keys.is_empty() {
                    continue;
                }
                let why = if presence.removed.contains(&node) {
                    "removed"
                } else {
                    "down for longer than --node-gone-after"
                };
                info!(node = %node, keys = keys.len(), reason = why, "node gone for good: deleting its tasks, statuses and settings");
                let ops: Vec<TxnOp> = keys.into_iter().map(|key| TxnOp::Delete { key }).collect();
                let mut touched = cache::Touched::default();
                let res = self
                    .write(&ops, |batch, rev| {
                        let mut c = self.cache();
                        for op in batch {
                            if let TxnOp::Delete { key } = op {
                                let t = c.apply(key, None, rev);
                                touched.services.extend(t.services);
                                touched.nodes_changed |= t.nodes_changed;
                            }
                        }
                    })
                    .await;
                self.enqueue_touched(touched);
                match res {
                    Ok(()) => {}
                    Err(CommitError::Fenced) => self.deposed.cancel(),
                    Err(e) => {
                        warn!(node = %node, error = %e, "cannot delete the keys of a node gone for good; retrying")
                    }
                }
            }
        }
    }

    /// Every `every`: compacts the store's history, keeping the last `keep` revisions, so
    /// etcd's size stays bounded however long the cluster churns.
    async fn compact_history(self: Arc<Self>, keep: i64, every: Duration) {
        let mut done: Revision = 0;
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let current = match self.store.list(&self.fence.key).await {
                Ok(l) => l.revision,
                Err(e) => {
                    debug!(error = %e, "cannot read the store revision; compaction skipped");
                    continue;
                }
            };
            let target = current - keep;
            if target <= done.max(1) {
                continue;
            }
            match self.store.compact(target).await {
                Ok(()) => {
                    info!(revision = target, kept = keep, "store history compacted");
                    done = target;
                }
                Err(StoreError::Compacted { .. }) => done = target,
                Err(e) => warn!(error = %e, revision = target, "cannot compact the store history"),
            }
        }
    }

    /// Queues every service every `every`, and refreshes the task gauges every few seconds.
    async fn resync(self: Arc<Self>, every: Duration) {
        let mut resync = tokio::time::interval(every);
        let mut gauges = tokio::time::interval(every.min(Duration::from_secs(5)));
        resync.tick().await;
        loop {
            tokio::select! {
                _ = resync.tick() => self.enqueue_all(),
                _ = gauges.tick() => {
                    let by_state = self.cache().tasks_by_state();
                    self.metrics.set_tasks(&by_state);
                }
            }
        }
    }
}

impl Controller {
    /// A controller over `store`, with keys under `keys`' prefix.
    pub fn new(store: Arc<dyn Store>, keys: Keys, config: ControllerConfig) -> Self {
        let (leading, _) = watch::channel(false);
        Controller {
            store,
            keys,
            config,
            metrics: Metrics::default(),
            leading,
        }
    }

    /// The controller's metrics (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Turns true while this controller leads.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Runs until `shutdown` completes: campaigns, leads, and campaigns again after losing
    /// leadership. On shutdown the leader lease is revoked so a standby takes over at once.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ControllerError> {
        let identity = self.config.identity.clone();
        let span = info_span!("controller", identity = %identity);
        self.run_inner(&shutdown).instrument(span).await
    }

    async fn run_inner(&self, stop: &CancellationToken) -> Result<(), ControllerError> {
        let mut follower = self.follow();
        loop {
            let leadership = match campaign(
                &self.store,
                &self.keys,
                &self.config.identity,
                self.config.lease_ttl,
                stop,
            )
            .await
            {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, "campaign failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.lease_ttl / 3) => continue,
                        () = stop.cancelled() => return Ok(()),
                    }
                }
            };
            if follower.down.is_cancelled() {
                follower = self.follow();
            }
            let vacated = leadership.vacated.label().to_string();
            self.metrics
                .elections
                .get_or_create(&vec![("vacated".to_string(), vacated)])
                .inc();
            self.metrics.leader.set(1);
            let _ = self.leading.send(true);
            let end = self.term(&leadership, &follower, stop).await;
            follower.view.report_to(None);
            self.metrics.leader.set(0);
            let _ = self.leading.send(false);
            match end {
                Ok(TermEnd::Shutdown) => {
                    leadership.resign().await;
                    return Ok(());
                }
                Ok(TermEnd::Lost) => {
                    info!("stepped down");
                    leadership.resign().await;
                }
                Ok(TermEnd::Broken(why)) => {
                    warn!(reason = %why, "a task of the leader term ended; stepping down and starting again");
                    leadership.resign().await;
                    // A fault that repeats must not spin: give a standby a chance meanwhile.
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.lease_ttl / 3) => {}
                        () = stop.cancelled() => return Ok(()),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "leader term failed; stepping down");
                    leadership.resign().await;
                }
            }
        }
    }

    /// Starts following the store into a new view.
    fn follow(&self) -> Follower {
        let view = Arc::new(View::new(
            self.keys.clone(),
            self.config.task_history_limit,
            self.metrics.clone(),
        ));
        let root = format!("{}/", self.keys.prefix());
        let batches = reflector::batches(self.store.clone(), &root, |_, v| v);
        let down = CancellationToken::new();
        let task = tokio::spawn(
            view.clone()
                .follow(batches, down.clone().drop_guard())
                .instrument(info_span!("watcher")),
        );
        Follower { view, down, task }
    }

    /// Waits until the view reached the revision the leader record was won at, so that
    /// nothing older is acted on; `Some` when the term ends first.
    async fn catch_up(
        &self,
        leadership: &Leadership,
        follower: &Follower,
        stop: &CancellationToken,
    ) -> Option<TermEnd> {
        let revision = leadership.fence.revision();
        let mut seen = follower.view.watched.subscribe();
        tokio::select! {
            _ = seen.wait_for(|r| *r >= revision) => None,
            () = stop.cancelled() => Some(TermEnd::Shutdown),
            () = leadership.lost.cancelled() => Some(TermEnd::Lost),
            () = follower.down.cancelled() => Some(TermEnd::Broken("the store watch ended".to_string())),
        }
    }

    async fn term(
        &self,
        leadership: &Leadership,
        follower: &Follower,
        stop: &CancellationToken,
    ) -> Result<TermEnd, ControllerError> {
        let term = Arc::new(Term {
            store: self.store.clone(),
            keys: self.keys.clone(),
            view: follower.view.clone(),
            queue: WorkQueue::new(self.config.debounce, self.config.backoff),
            fence: leadership.fence.clone(),
            metrics: self.metrics.clone(),
            deposed: CancellationToken::new(),
            placement: tokio::sync::Mutex::new(()),
            grace: NodeGrace {
                term_until: follower.view.listed_at().plus(self.config.node_grace),
                after_record_gone: self.config.node_record_grace,
            },
            unsure: AtomicBool::new(false),
            refencing: tokio::sync::Mutex::new(()),
            barrier: AtomicI64::new(leadership.fence.revision()),
        });
        // Changes from now on are queued; the view catches up with the election first.
        follower.view.report_to(Some(term.clone()));
        if let Some(end) = self.catch_up(leadership, follower, stop).await {
            return Ok(end);
        }
        term.enqueue_all();
        let mut tasks = self.spawn_term_tasks(&term);
        // Every task of the term loops for ever: one that returns or panics breaks the term.
        let end = tokio::select! {
            () = stop.cancelled() => TermEnd::Shutdown,
            () = leadership.lost.cancelled() => TermEnd::Lost,
            () = term.deposed.cancelled() => TermEnd::Lost,
            () = follower.down.cancelled() => TermEnd::Broken("the store watch ended".to_string()),
            Some(res) = tasks.join_next() => TermEnd::Broken(match res {
                Ok(()) => "a task ended".to_string(),
                Err(e) if e.is_panic() => format!("a task panicked: {}", panic_message(e.into_panic())),
                Err(e) => e.to_string(),
            }),
        };
        tasks.shutdown().await;
        // Commits cut short are never answered: their keys show the store's truth again (a
        // write of theirs that still lands comes through the watch).
        follower.view.cache().unstage_all();
        Ok(end)
    }

    /// Starts the term's resync, collection, compaction and workers.
    fn spawn_term_tasks(&self, term: &Arc<Term>) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        tasks.spawn(
            term.clone()
                .resync(self.config.resync_interval)
                .instrument(info_span!("resync")),
        );
        tasks.spawn(
            term.clone()
                .collect_gone_nodes(self.config.node_gone_after)
                .instrument(info_span!("gone_nodes")),
        );
        if self.config.history_revisions > 0 {
            tasks.spawn(
                term.clone()
                    .compact_history(self.config.history_revisions, self.config.compact_interval)
                    .instrument(info_span!("compaction")),
            );
        }
        for _ in 0..self.config.workers.max(1) {
            tasks.spawn(term.clone().worker());
        }
        tasks
    }
}

/// A view and the task following the store into it; `down` is cancelled when that task
/// ended (the store watch broke for good) or panicked.
struct Follower {
    view: Arc<View>,
    down: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The text of a panic's payload, when it has one.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |s| (*s).to_string()),
    }
}
