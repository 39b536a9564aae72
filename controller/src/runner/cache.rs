//! The controller's in-memory view of the store: manifests (validated on read), statuses,
//! nodes, node settings, tasks and task statuses, with the indices reconcile needs
//! (tasks per service, tasks per node, reserved resources per node).
//!
//! Every key remembers the revision it was last set or deleted at, so the controller's own
//! writes can be applied as soon as they commit and an older watch event never undoes them: a
//! task's and a status's in their record while the record holds them, every other in a map
//! (until the watch has moved past a deleted key's revision).
//! Changes apply by key (a task's resources are released before its new value is counted),
//! so the same write seen twice — from its commit and again from the watch — counts once.
//!
//! Placement writes are shown before they commit ([`Cache::stage`], see
//! [`super::pipeline`]): the cache keeps the store's truth of each staged key beside it, and
//! goes back to that truth if the commit fails ([`Cache::unstage`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::endpoints::Endpoints;
use shoal_core::job::RunRequest;
use shoal_core::manifest::{Service, ServiceRef};
use shoal_core::model::{
    self, Node, NodeConfig, NodeInfo, ServiceStatus, Task, TaskStatus, Timestamp,
};
use shoal_core::secret::{self, FileKind};
use shoal_core::view::{self, NodeEntry};
use shoal_core::{Key, Keys};
use shoal_store::{Revision, TxnOp};

use super::pipeline::Staged;

use crate::placement::NodeUsage;
use crate::reconcile::gone::Presence;
use crate::reconcile::{Plan, ReconcileInput, ServiceInput, TaskEntry};
use compact::Templates;
use deferred::Deferred;
use revision::Part;
use table::TaskTable;

mod compact;
mod deferred;
mod revision;
mod set;
mod table;

/// The hasher of the cache's maps keyed by strings the store names (keys, node and task ids):
/// much cheaper than the standard one on the hot paths of the watch and reconcile inputs.
type FastHash = foldhash::fast::RandomState;

/// A manifest as read from the store.
#[derive(Debug, Clone)]
pub(crate) struct ManifestEntry {
    pub(crate) revision: Revision,
    pub(crate) parsed: Result<Box<Service>, String>,
}

/// What a change means for the queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// Services to reconcile.
    pub(crate) services: BTreeSet<ServiceRef>,
    /// A node changed: global and unschedulable services need a look too.
    pub(crate) nodes_changed: bool,
}

impl Touched {
    pub(crate) fn merge(&mut self, other: Touched) {
        self.services.extend(other.services);
        self.nodes_changed |= other.nodes_changed;
    }
}

/// What a plan writes, as values: the tasks it creates and the service's status. The cache
/// shows them as they are when it stages or commits the plan's ops, instead of decoding
/// them again from the bytes the ops carry (which encode the same values).
#[derive(Debug, Default)]
pub(crate) struct Written<'a> {
    tasks: HashMap<(&'a str, &'a str), &'a Task>,
    status: Option<(&'a ServiceRef, &'a ServiceStatus)>,
}

impl<'a> Written<'a> {
    /// The values `plan`, a plan of `service`, writes.
    pub(crate) fn of(service: &'a ServiceRef, plan: &'a Plan) -> Self {
        Written {
            tasks: plan
                .creates
                .iter()
                .map(|t| ((t.node_id.as_str(), t.id.as_str()), t))
                .collect(),
            status: plan.status.as_ref().map(|st| (service, st)),
        }
    }

    /// The task written as `(node, task)`.
    pub(super) fn task(&self, node: &str, task: &str) -> Option<&'a Task> {
        self.tasks.get(&(node, task)).copied()
    }

    /// The status written for `service`.
    pub(super) fn status_of(&self, service: &ServiceRef) -> Option<&'a ServiceStatus> {
        self.status.filter(|(s, _)| *s == service).map(|(_, st)| st)
    }
}

/// The key and value (`None`: deleted) an op writes.
pub(super) fn op_parts(op: &TxnOp) -> (&str, Option<&[u8]>) {
    match op {
        TxnOp::Put { key, value, .. } => (key, Some(value)),
        TxnOp::Delete { key } => (key, None),
    }
}

/// A task status without what reconcile never reads: the task id (the key's, put back in a
/// reconcile input) and the container id.
fn kept_status(st: TaskStatus) -> TaskStatus {
    TaskStatus {
        task_id: String::new(),
        container_id: None,
        ..st
    }
}

/// How long nodes without a record keep their tasks (`--node-grace`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeGrace {
    /// End of the grace a new leader gives every node without a record.
    pub term_until: Timestamp,
    /// Grace after the record of a node disappears while this controller leads.
    pub after_record_gone: Duration,
}

impl NodeGrace {
    /// No grace at all (tests of the cache).
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        NodeGrace {
            term_until: Timestamp(0),
            after_record_gone: Duration::ZERO,
        }
    }
}

/// The cache.
#[derive(Debug)]
pub(crate) struct Cache {
    keys: Keys,
    /// The revision of the last change of each key whose value no task record holds.
    revs: HashMap<String, Revision, FastHash>,
    tombstones: BTreeMap<Revision, Vec<String>>,
    services: BTreeMap<ServiceRef, ManifestEntry>,
    statuses: BTreeMap<ServiceRef, ServiceStatus>,
    /// The last `shoal job run` request per job.
    run_requests: BTreeMap<ServiceRef, RunRequest>,
    infos: BTreeMap<String, NodeInfo>,
    ready: BTreeSet<String>,
    /// When the record of a node that was ready disappeared (until it comes back).
    gone_at: BTreeMap<String, Timestamp>,
    /// The end of each node's grace in `gone_at`, for the grace it was built with: shared by
    /// the reconcile inputs, built again only after `gone_at` changed (a cluster whose
    /// thousands of nodes left would otherwise copy all their ids into every input).
    lost_after: Option<(Duration, Arc<BTreeMap<String, Timestamp>>)>,
    configs: BTreeMap<String, NodeConfig>,
    /// Tasks and their statuses by (node, task id) and by service, in one entry so that a
    /// change to either is one lookup; the tasks share their templates through `templates`.
    tasks: TaskTable,
    templates: Templates,
    /// What every unfinished task reserves, per node; shared with the reconcile inputs (a
    /// change copies it only while an input still holds it).
    usage: Arc<BTreeMap<String, NodeUsage>>,
    nodes: Option<Arc<BTreeMap<String, Node>>>,
    /// Secrets and configs that exist, as (kind, namespace, name): only their keys matter
    /// here (the controller never reads a value).
    files: BTreeSet<(FileKind, String, String)>,
    /// Endpoints records as last written.
    endpoints: BTreeMap<ServiceRef, Endpoints>,
    /// The addresses of `endpoints`, built when first asked for after they changed.
    addresses: Option<Arc<BTreeSet<Ipv4Addr>>>,
    /// Finished tasks each slot keeps (see [`ControllerConfig::task_history_limit`]).
    ///
    /// [`ControllerConfig::task_history_limit`]: super::ControllerConfig::task_history_limit
    pub(crate) task_history_limit: usize,
    /// Keys shown with a write whose commit has not been answered yet.
    staged: HashMap<String, Staged>,
    /// The watch's changes held back while no term reads the cache.
    deferred: Deferred,
}

impl Cache {
    /// An empty cache for keys under `keys`, its reconcile inputs keeping `task_history_limit`
    /// finished tasks per slot.
    pub(crate) fn new(keys: Keys, task_history_limit: usize) -> Self {
        Cache {
            deferred: Deferred::new(&keys),
            keys,
            revs: HashMap::default(),
            tombstones: BTreeMap::new(),
            services: BTreeMap::new(),
            statuses: BTreeMap::new(),
            run_requests: BTreeMap::new(),
            infos: BTreeMap::new(),
            ready: BTreeSet::new(),
            gone_at: BTreeMap::new(),
            lost_after: None,
            configs: BTreeMap::new(),
            tasks: TaskTable::default(),
            templates: Templates::default(),
            usage: Arc::default(),
            nodes: None,
            files: BTreeSet::new(),
            endpoints: BTreeMap::new(),
            addresses: None,
            task_history_limit,
            staged: HashMap::new(),
        }
    }

    /// Replaces everything with a fresh list of the store; writes still staged stay shown
    /// over it (their truth is now the list's).
    pub(crate) fn relist(&mut self, items: &[(String, Vec<u8>, Revision)]) {
        let mut fresh = Cache::new(self.keys.clone(), self.task_history_limit);
        // Changes held back are older than the list, which shows their keys as they are now.
        fresh.defer(self.defers());
        for (key, value, revision) in items {
            fresh.apply(key, Some(value), *revision);
        }
        // What each staged key shows, encoded again: a staged write's bytes are not kept.
        let shown: Vec<(String, Option<Vec<u8>>)> = std::mem::take(&mut self.staged)
            .into_keys()
            .map(|key| {
                let value = self.keys.parse(&key).and_then(|k| self.encoded(&k));
                (key, value)
            })
            .collect();
        *self = fresh;
        for (key, value) in shown {
            self.stage_one(&key, value.as_deref(), &Written::default());
        }
    }

    /// Shows `ops` before they commit, keeping each key's current value as its truth. What
    /// `written` holds (the plan's values, as encoded in the ops) is shown as it is instead of
    /// being decoded again from its bytes.
    pub(crate) fn stage(&mut self, ops: &[TxnOp], written: &Written) {
        for op in ops {
            let (key, value) = op_parts(op);
            self.stage_one(key, value, written);
        }
    }

    fn stage_one(&mut self, key: &str, value: Option<&[u8]>, written: &Written) {
        let Some(parsed) = self.keys.parse(key) else {
            return;
        };
        let truth = match self.staged.remove(key) {
            Some(s) => s.truth,
            None => self.encoded(&parsed),
        };
        let revision = self.revision_of(key, &parsed);
        self.set(key, parsed, value, revision, written);
        self.staged.insert(key.to_string(), Staged { truth });
    }

    /// `ops` (staged or not) committed at `revision`: they are the store's truth now, unless
    /// the watch already brought a newer change of a key. `written` as in [`Cache::stage`].
    pub(crate) fn committed(
        &mut self,
        ops: &[TxnOp],
        revision: Revision,
        written: &Written,
    ) -> Touched {
        let mut touched = Touched::default();
        for op in ops {
            let (key, value) = op_parts(op);
            let Some(parsed) = self.keys.parse(key) else {
                continue;
            };
            let current = self.revision_of(key, &parsed);
            let t = match self.staged.remove(key) {
                Some(s) if current > revision => self.set(
                    key,
                    parsed,
                    s.truth.as_deref(),
                    current,
                    &Written::default(),
                ),
                // Shown since it was staged: only its revision is new.
                Some(_) => {
                    if current < revision {
                        self.note_deleted(key, value.is_none(), revision);
                        self.keep_revision(key, &parsed, revision);
                    }
                    Touched::default()
                }
                None => self.apply_parsed(key, parsed, value, revision, written),
            };
            touched.merge(t);
        }
        touched
    }

    /// The commit of `ops` failed: the keys still staged show the store's truth again (as
    /// last seen: the watch keeps it current while a key is staged).
    pub(crate) fn unstage(&mut self, ops: &[TxnOp]) -> Touched {
        let mut touched = Touched::default();
        for op in ops {
            touched.merge(self.unstage_one(op_parts(op).0));
        }
        touched
    }

    /// `key`, if staged, shows the store's truth again (at the revision the cache holds).
    fn unstage_one(&mut self, key: &str) -> Touched {
        let (Some(s), Some(parsed)) = (self.staged.remove(key), self.keys.parse(key)) else {
            return Touched::default();
        };
        let revision = self.revision_of(key, &parsed);
        self.set(
            key,
            parsed,
            s.truth.as_deref(),
            revision,
            &Written::default(),
        )
    }

    /// Every staged key shows the store's truth again (the term whose commits they were
    /// ended: none of them will be answered).
    pub(crate) fn unstage_all(&mut self) {
        let keys: Vec<String> = self.staged.keys().cloned().collect();
        for key in keys {
            self.unstage_one(&key);
        }
    }

    /// The stored form of a key the controller writes, as the cache holds it (`None` when
    /// absent or unreadable, which the cache treats alike).
    fn encoded(&self, key: &Key) -> Option<Vec<u8>> {
        match key {
            Key::Task { node, task } => self
                .tasks
                .get(node, task)
                .and_then(|r| r.task.as_ref())
                .map(|t| model::encode(&t.to_task(node, task))),
            Key::ServiceStatus(s) => self.statuses.get(s).map(model::encode),
            Key::Endpoints(s) => self.endpoints.get(s).map(model::encode),
            _ => None,
        }
    }

    /// Everything reconcile reads of tasks, statuses and endpoints, as text (tests compare
    /// a cache with a fresh list of the store).
    #[cfg(test)]
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}",
            self.tasks
                .iter()
                .map(|(n, t, r)| ((n, t), (&r.task, &r.status)))
                .collect::<BTreeMap<_, _>>(),
            self.usage
                .iter()
                .filter(|(_, u)| !u.is_empty())
                .collect::<Vec<_>>(),
            self.statuses,
            self.endpoints
        )
    }

    /// How many keys are staged (tests).
    #[cfg(test)]
    pub(crate) fn staged_len(&self) -> usize {
        self.staged.len()
    }

    /// Applies a put (`value = Some`) or delete at `revision`; returns what it touches.
    /// Older changes than the one already applied to the key are ignored. A staged key keeps
    /// showing its write: the change becomes its truth.
    pub(crate) fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: Revision) -> Touched {
        match self.keys.parse(key) {
            Some(parsed) => self.apply_parsed(key, parsed, value, revision, &Written::default()),
            None => Touched::default(),
        }
    }

    /// [`Cache::apply`] of `key`, parsed as `parsed`, taking its value from `written` when
    /// that holds it.
    fn apply_parsed(
        &mut self,
        key: &str,
        parsed: Key,
        value: Option<&[u8]>,
        revision: Revision,
        written: &Written,
    ) -> Touched {
        if self.revision_of(key, &parsed) >= revision {
            return Touched::default();
        }
        self.note_deleted(key, value.is_none(), revision);
        if let Some(s) = self.staged.get_mut(key) {
            s.truth = value.map(<[u8]>::to_vec);
            self.keep_revision(key, &parsed, revision);
            return Touched::default();
        }
        self.set(key, parsed, value, revision, written)
    }

    /// A secret or config appeared or went away: the services referencing it need a look.
    fn file_touched(
        &mut self,
        kind: FileKind,
        namespace: String,
        name: String,
        present: bool,
        touched: &mut Touched,
    ) {
        for (sref, m) in &self.services {
            let Ok(svc) = &m.parsed else { continue };
            let refs = match kind {
                FileKind::Secret => &svc.spec.secrets,
                FileKind::Config => &svc.spec.configs,
            };
            if sref.namespace == namespace && refs.iter().any(|r| r.source == name) {
                touched.services.insert(sref.clone());
            }
        }
        let k = (kind, namespace, name);
        if present {
            self.files.insert(k);
        } else {
            self.files.remove(&k);
        }
    }

    /// Why a valid manifest cannot run yet: the secrets and configs it names that do not
    /// exist (empty when all do).
    fn missing_files(&self, svc: &Service) -> Vec<String> {
        let ns = &svc.metadata.namespace;
        secret::missing_objects(ns, &svc.spec.secrets, &svc.spec.configs, |kind, name| {
            self.files
                .contains(&(kind, ns.to_string(), name.to_string()))
        })
    }

    fn node_touched(&mut self, id: &str, touched: &mut Touched) {
        self.nodes = None;
        touched.nodes_changed = true;
        for (_, r) in self.tasks.of_node(id) {
            if let Some(t) = &r.task {
                touched.services.insert(t.service().clone());
            }
        }
    }

    /// Every service the controller should look at: manifests, tasks' owners, statuses. The
    /// most recently written manifests come first, and services without one (deleted, their
    /// tasks to stop) before them: after a list or a takeover the services most likely to
    /// have work are reconciled before the long-settled ones.
    pub(crate) fn all_services(&self) -> Vec<ServiceRef> {
        let mut all: BTreeSet<ServiceRef> = self.services.keys().cloned().collect();
        all.extend(self.tasks.services().cloned());
        all.extend(self.statuses.keys().cloned());
        let mut all: Vec<ServiceRef> = all.into_iter().collect();
        // Stable: services written at the same revision stay in name order.
        all.sort_by_key(|s| {
            std::cmp::Reverse(self.services.get(s).map_or(Revision::MAX, |m| m.revision))
        });
        all
    }

    /// Services a node change may affect beyond those with tasks on it: global services and
    /// services that could not be placed.
    pub(crate) fn node_sensitive_services(&self) -> BTreeSet<ServiceRef> {
        let mut out: BTreeSet<ServiceRef> = self
            .services
            .iter()
            .filter(|(_, m)| m.parsed.as_ref().is_ok_and(|s| s.spec.mode.is_global()))
            .map(|(k, _)| k.clone())
            .collect();
        out.extend(
            self.statuses
                .iter()
                .filter(|(_, s)| s.unschedulable.is_some())
                .map(|(k, _)| k.clone()),
        );
        out
    }

    /// Which nodes some key names, which have a live record, which were removed.
    pub(crate) fn presence(&self) -> Presence {
        let mut known: BTreeSet<String> = self.infos.keys().cloned().collect();
        known.extend(self.configs.keys().cloned());
        known.extend(self.tasks.nodes().map(str::to_string));
        Presence {
            known,
            ready: self.ready.clone(),
            removed: self
                .configs
                .iter()
                .filter(|(_, c)| c.removed)
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }

    /// The keys of a node gone for good: its assignments, their statuses and its settings.
    pub(crate) fn node_keys(&self, node: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (t, r) in self.tasks.of_node(node) {
            if r.task.is_some() {
                out.push(self.keys.task(node, t));
            }
            if r.status.is_some() {
                out.push(self.keys.task_status(node, t));
            }
        }
        if self.configs.contains_key(node) {
            out.push(self.keys.node_config(node));
        }
        out
    }

    /// When the grace of each node whose record disappeared ends, `grace` after it went.
    fn node_lost_after(&mut self, grace: Duration) -> Arc<BTreeMap<String, Timestamp>> {
        if let Some((built_with, ends)) = &self.lost_after
            && *built_with == grace
        {
            return ends.clone();
        }
        let ends: Arc<BTreeMap<String, Timestamp>> = Arc::new(
            self.gone_at
                .iter()
                .map(|(id, at)| (id.clone(), at.plus(grace)))
                .collect(),
        );
        self.lost_after = Some((grace, ends.clone()));
        ends
    }

    /// The addresses the services' endpoints records hold.
    fn addresses(&mut self) -> Arc<BTreeSet<Ipv4Addr>> {
        self.addresses
            .get_or_insert_with(|| Arc::new(self.endpoints.values().map(|e| e.address).collect()))
            .clone()
    }

    /// Every node: agent records (last known for nodes that are down), operator settings, and
    /// placeholders for nodes only known from their tasks.
    pub(crate) fn nodes(&mut self) -> Arc<BTreeMap<String, Node>> {
        if let Some(n) = &self.nodes {
            return n.clone();
        }
        let mut ids: BTreeSet<&str> = self.infos.keys().map(String::as_str).collect();
        ids.extend(self.configs.keys().map(String::as_str));
        ids.extend(
            self.tasks
                .iter()
                .filter(|(_, _, r)| r.task.is_some())
                .map(|(n, _, _)| n),
        );
        let nodes: BTreeMap<String, Node> = ids
            .into_iter()
            .map(|id| {
                let config = self.configs.get(id).cloned().unwrap_or_default();
                let entry = NodeEntry {
                    id: id.to_string(),
                    info: self.infos.get(id).cloned(),
                    ready: view::is_ready(self.ready.contains(id), &config),
                    config,
                    config_revision: 0,
                };
                (id.to_string(), entry.to_node())
            })
            .collect();
        let nodes = Arc::new(nodes);
        self.nodes = Some(nodes.clone());
        nodes
    }

    /// The reconcile input of one service.
    pub(crate) fn input(
        &mut self,
        sref: &ServiceRef,
        now: Timestamp,
        grace: &NodeGrace,
        seed: u64,
    ) -> ReconcileInput {
        let service = match self.services.get(sref) {
            Some(ManifestEntry {
                revision,
                parsed: Ok(s),
            }) => match self.missing_files(s) {
                missing if missing.is_empty() => match self.ingress_conflicts(s, *revision) {
                    conflicts if conflicts.is_empty() => ServiceInput::Present {
                        service: s.clone(),
                        generation: *revision,
                    },
                    conflicts => ServiceInput::Invalid {
                        error: conflicts.join("; "),
                        generation: *revision,
                    },
                },
                missing => ServiceInput::Invalid {
                    error: missing.join("; "),
                    generation: *revision,
                },
            },
            Some(ManifestEntry {
                revision,
                parsed: Err(e),
            }) => ServiceInput::Invalid {
                error: e.clone(),
                generation: *revision,
            },
            None => ServiceInput::Deleted,
        };
        let nodes = self.nodes();
        let mut tasks = Vec::with_capacity(self.tasks.count_of_service(sref));
        for (node, id, task, r) in self.tasks.of_service(sref) {
            let status = r.status.as_ref().map(|s| TaskStatus {
                task_id: id.to_string(),
                ..s.clone()
            });
            tasks.push(TaskEntry::new(task.to_task(node, id), status));
        }
        ReconcileInput {
            service_ref: sref.clone(),
            service,
            tasks,
            nodes,
            usage: self.usage.clone(),
            previous: self.statuses.get(sref).cloned(),
            endpoints: self.endpoints.get(sref).cloned(),
            taken_addresses: self.addresses(),
            now,
            nodes_lost_after: grace.term_until,
            node_lost_after: self.node_lost_after(grace.after_record_gone),
            seed,
            run_request: self.run_requests.get(sref).cloned(),
            task_history_limit: self.task_history_limit,
        }
    }

    /// The ingress ports of `svc` another service holds, as located messages. A port belongs
    /// to the service whose endpoints already list it, else to the manifest written first.
    fn ingress_conflicts(&self, svc: &Service, revision: Revision) -> Vec<String> {
        // Most services publish no ingress port: nothing to compare with the others.
        if !svc.spec.ports.iter().any(|p| p.ingress_port().is_some()) {
            return Vec::new();
        }
        let me = svc.id();
        let published = |e: &Endpoints| {
            e.ports
                .iter()
                .filter_map(|p| p.ingress_port().map(|n| (n, p.protocol)))
                .collect::<BTreeSet<_>>()
        };
        let mine = self.endpoints.get(&me).map(published).unwrap_or_default();
        let holders = self.services.iter().filter_map(|(r, m)| {
            let other = m.parsed.as_ref().ok()?;
            if *r == me {
                return None;
            }
            let theirs = self.endpoints.get(r).map(published).unwrap_or_default();
            let holds = svc.spec.ports.iter().any(|p| {
                let Some(n) = p.ingress_port() else {
                    return false;
                };
                let k = (n, p.protocol);
                theirs.contains(&k) || (!mine.contains(&k) && m.revision < revision)
            });
            holds.then_some(other.as_ref())
        });
        shoal_core::endpoints::ingress_conflicts(svc, holders)
            .into_iter()
            .map(|(path, msg)| format!("{path}: {msg}"))
            .collect()
    }

    /// Tasks per observed state (for metrics).
    pub(crate) fn tasks_by_state(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for (_, _, r) in self.tasks.iter().filter(|(_, _, r)| r.task.is_some()) {
            let state = r.status.as_ref().map_or("assigned", |s| s.state.as_str());
            *out.entry(state).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
