//! The controller's in-memory view of the store: manifests (validated on read), statuses,
//! nodes, node settings, tasks and task statuses, with the indices reconcile needs
//! (tasks per service, tasks per node, reserved resources per node).
//!
//! Every key remembers the revision it was last set or deleted at, so the controller's own
//! writes can be applied as soon as they commit and an older watch event never undoes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use shoal_store::Revision;
use tracing::warn;

use crate::placement::NodeUsage;
use crate::reconcile::gone::Presence;
use crate::reconcile::{ReconcileInput, ServiceInput, TaskEntry};

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
    revs: HashMap<String, Revision>,
    tombstones: BTreeMap<Revision, Vec<String>>,
    services: BTreeMap<ServiceRef, ManifestEntry>,
    statuses: BTreeMap<ServiceRef, ServiceStatus>,
    /// The last `shoal job run` request per job.
    run_requests: BTreeMap<ServiceRef, RunRequest>,
    infos: BTreeMap<String, NodeInfo>,
    ready: BTreeSet<String>,
    /// When the record of a node that was ready disappeared (until it comes back).
    gone_at: BTreeMap<String, Timestamp>,
    configs: BTreeMap<String, NodeConfig>,
    tasks: BTreeMap<(String, String), Task>,
    task_status: BTreeMap<(String, String), TaskStatus>,
    by_service: BTreeMap<ServiceRef, BTreeSet<(String, String)>>,
    usage: BTreeMap<String, NodeUsage>,
    nodes: Option<Arc<BTreeMap<String, Node>>>,
    /// Secrets and configs that exist, as (kind, namespace, name): only their keys matter
    /// here (the controller never reads a value).
    files: BTreeSet<(FileKind, String, String)>,
    /// Endpoints records as last written.
    endpoints: BTreeMap<ServiceRef, Endpoints>,
    /// Finished tasks each slot keeps (see [`ControllerConfig::task_history_limit`]).
    ///
    /// [`ControllerConfig::task_history_limit`]: super::ControllerConfig::task_history_limit
    pub(crate) task_history_limit: usize,
}

impl Cache {
    /// An empty cache for keys under `keys`, its reconcile inputs keeping `task_history_limit`
    /// finished tasks per slot.
    pub(crate) fn new(keys: Keys, task_history_limit: usize) -> Self {
        Cache {
            keys,
            revs: HashMap::new(),
            tombstones: BTreeMap::new(),
            services: BTreeMap::new(),
            statuses: BTreeMap::new(),
            run_requests: BTreeMap::new(),
            infos: BTreeMap::new(),
            ready: BTreeSet::new(),
            gone_at: BTreeMap::new(),
            configs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            task_status: BTreeMap::new(),
            by_service: BTreeMap::new(),
            usage: BTreeMap::new(),
            nodes: None,
            files: BTreeSet::new(),
            endpoints: BTreeMap::new(),
            task_history_limit,
        }
    }

    /// Whether a task holds resources on its node: not finished and not orphaned.
    fn reserves(&self, k: &(String, String)) -> bool {
        let Some(t) = self.tasks.get(k) else {
            return false;
        };
        !t.orphaned
            && !self
                .task_status
                .get(k)
                .is_some_and(|s| s.state.is_terminal())
    }

    fn unaccount(&mut self, k: &(String, String)) {
        if self.reserves(k)
            && let (Some(t), Some(u)) = (self.tasks.get(k), self.usage.get_mut(&k.0))
        {
            u.remove_template(&t.template);
        }
    }

    fn account(&mut self, k: &(String, String)) {
        if self.reserves(k)
            && let Some(t) = self.tasks.get(k)
        {
            self.usage
                .entry(k.0.clone())
                .or_default()
                .add_template(&t.template);
        }
    }

    /// Applies a put (`value = Some`) or delete at `revision`; returns what it touches.
    /// Older changes than the one already applied to the key are ignored.
    pub(crate) fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: Revision) -> Touched {
        let mut touched = Touched::default();
        if self.revs.get(key).is_some_and(|&r| r >= revision) {
            return touched;
        }
        self.revs.insert(key.to_string(), revision);
        if value.is_none() {
            self.tombstones
                .entry(revision)
                .or_default()
                .push(key.to_string());
        }
        let Some(parsed) = self.keys.parse(key) else {
            return touched;
        };
        match parsed {
            Key::Service(sref) => {
                match value {
                    Some(v) => {
                        // Any problem becomes the status error text.
                        let parsed = shoal_core::parse_stored(key, &sref, v)
                            .map(Box::new)
                            .map_err(|e| e.to_string());
                        self.services
                            .insert(sref.clone(), ManifestEntry { revision, parsed });
                    }
                    None => {
                        self.services.remove(&sref);
                    }
                }
                touched.services.insert(sref);
            }
            Key::ServiceStatus(sref) => {
                match value.map(|v| model::decode::<ServiceStatus>("service status", v)) {
                    Some(Ok(st)) => {
                        self.statuses.insert(sref, st);
                    }
                    Some(Err(e)) => {
                        warn!(service = %sref, error = %e, "ignoring unreadable service status");
                        self.statuses.remove(&sref);
                    }
                    None => {
                        self.statuses.remove(&sref);
                    }
                }
            }
            Key::Node(id) => {
                match value.map(|v| model::decode::<NodeInfo>("node", v)) {
                    Some(Ok(info)) => {
                        self.infos.insert(id.clone(), info);
                        self.ready.insert(id.clone());
                        self.gone_at.remove(&id);
                    }
                    Some(Err(e)) => {
                        warn!(node = %id, error = %e, "ignoring unreadable node record");
                        self.ready.remove(&id);
                    }
                    None => {
                        // Keep the last record: the node is down, not forgotten.
                        if self.ready.remove(&id) {
                            self.gone_at.insert(id.clone(), Timestamp::now());
                        }
                    }
                }
                self.node_touched(&id, &mut touched);
            }
            Key::NodeConfig(id) => {
                match value.map(|v| model::decode::<NodeConfig>("node config", v)) {
                    Some(Ok(cfg)) => {
                        self.configs.insert(id.clone(), cfg);
                    }
                    Some(Err(e)) => {
                        warn!(node = %id, error = %e, "ignoring unreadable node config")
                    }
                    None => {
                        self.configs.remove(&id);
                    }
                }
                self.node_touched(&id, &mut touched);
            }
            Key::Task { node, task } => {
                let k = (node, task);
                self.unaccount(&k);
                if let Some(old) = self.tasks.remove(&k)
                    && let Some(set) = self.by_service.get_mut(&old.service)
                {
                    set.remove(&k);
                    touched.services.insert(old.service);
                }
                if let Some(v) = value {
                    match model::decode::<Task>("task", v) {
                        Ok(t) => {
                            self.by_service
                                .entry(t.service.clone())
                                .or_default()
                                .insert(k.clone());
                            touched.services.insert(t.service.clone());
                            self.tasks.insert(k.clone(), t);
                        }
                        Err(e) => {
                            warn!(node = %k.0, task = %k.1, error = %e, "ignoring unreadable task")
                        }
                    }
                }
                self.account(&k);
                if !self.infos.contains_key(&k.0) {
                    self.nodes = None;
                }
            }
            Key::TaskStatus { node, task } => {
                let k = (node, task);
                self.unaccount(&k);
                match value.map(|v| model::decode::<TaskStatus>("task status", v)) {
                    Some(Ok(st)) => {
                        self.task_status.insert(k.clone(), st);
                    }
                    Some(Err(e)) => {
                        warn!(node = %k.0, task = %k.1, error = %e, "ignoring unreadable task status")
                    }
                    None => {
                        self.task_status.remove(&k);
                    }
                }
                self.account(&k);
                if let Some(t) = self.tasks.get(&k) {
                    touched.services.insert(t.service.clone());
                }
            }
            Key::Leader => {}
            Key::Endpoints(sref) => {
                match value.map(|v| model::decode::<Endpoints>("endpoints", v)) {
                    Some(Ok(e)) => {
                        self.endpoints.insert(sref, e);
                    }
                    Some(Err(e)) => {
                        warn!(service = %sref, error = %e, "rewriting unreadable endpoints");
                        self.endpoints.remove(&sref);
                        touched.services.insert(sref);
                    }
                    None => {
                        self.endpoints.remove(&sref);
                        touched.services.insert(sref);
                    }
                }
            }
            Key::JobRun(sref) => {
                match value.map(|v| model::decode::<RunRequest>("job run request", v)) {
                    Some(Ok(r)) => {
                        self.run_requests.insert(sref.clone(), r);
                    }
                    Some(Err(e)) => {
                        warn!(service = %sref, error = %e, "ignoring unreadable job run request");
                    }
                    None => {
                        self.run_requests.remove(&sref);
                    }
                }
                touched.services.insert(sref);
            }
            Key::Secret { namespace, name } => self.file_touched(
                FileKind::Secret,
                namespace,
                name,
                value.is_some(),
                &mut touched,
            ),
            Key::Config { namespace, name } => self.file_touched(
                FileKind::Config,
                namespace,
                name,
                value.is_some(),
                &mut touched,
            ),
        }
        touched
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
        let lo = (id.to_string(), String::new());
        for ((n, _), t) in self.tasks.range(lo..) {
            if n != id {
                break;
            }
            touched.services.insert(t.service.clone());
        }
    }

    /// Forgets tombstones the watch has moved past (no older event can arrive any more).
    pub(crate) fn prune(&mut self, watched: Revision) {
        let keep = self.tombstones.split_off(&(watched + 1));
        for (_, keys) in std::mem::replace(&mut self.tombstones, keep) {
            for k in keys {
                if self.revs.get(&k).is_some_and(|&r| r <= watched) {
                    self.revs.remove(&k);
                }
            }
        }
    }

    /// Every service the controller should look at: manifests, tasks' owners, statuses.
    pub(crate) fn all_services(&self) -> BTreeSet<ServiceRef> {
        let mut all: BTreeSet<ServiceRef> = self.services.keys().cloned().collect();
        all.extend(
            self.by_service
                .iter()
                .filter(|(_, s)| !s.is_empty())
                .map(|(k, _)| k.clone()),
        );
        all.extend(self.statuses.keys().cloned());
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
        known.extend(self.tasks.keys().map(|(n, _)| n.clone()));
        known.extend(self.task_status.keys().map(|(n, _)| n.clone()));
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
        let own = |k: &&(String, String)| k.0 == node;
        let mut out: Vec<String> = self
            .tasks
            .keys()
            .filter(own)
            .map(|(n, t)| self.keys.task(n, t))
            .collect();
        out.extend(
            self.task_status
                .keys()
                .filter(own)
                .map(|(n, t)| self.keys.task_status(n, t)),
        );
        if self.configs.contains_key(node) {
            out.push(self.keys.node_config(node));
        }
        out
    }

    /// Every node: agent records (last known for nodes that are down), operator settings, and
    /// placeholders for nodes only known from their tasks.
    pub(crate) fn nodes(&mut self) -> Arc<BTreeMap<String, Node>> {
        if let Some(n) = &self.nodes {
            return n.clone();
        }
        let mut ids: BTreeSet<&String> = self.infos.keys().collect();
        ids.extend(self.configs.keys());
        ids.extend(self.tasks.keys().map(|(n, _)| n));
        let nodes: BTreeMap<String, Node> = ids
            .into_iter()
            .map(|id| {
                let config = self.configs.get(id).cloned().unwrap_or_default();
                let entry = NodeEntry {
                    id: id.clone(),
                    info: self.infos.get(id).cloned(),
                    ready: view::is_ready(self.ready.contains(id), &config),
                    config,
                    config_revision: 0,
                };
                (id.clone(), entry.to_node())
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
        let own: Vec<(String, String)> = self
            .by_service
            .get(sref)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut usage = self.usage.clone();
        let mut tasks = Vec::with_capacity(own.len());
        for k in own {
            let Some(task) = self.tasks.get(&k) else {
                continue;
            };
            if self.reserves(&k)
                && let Some(u) = usage.get_mut(&k.0)
            {
                u.remove_template(&task.template);
            }
            tasks.push(TaskEntry {
                task: task.clone(),
                status: self.task_status.get(&k).cloned(),
            });
        }
        usage.retain(|_, u| !u.is_empty());
        ReconcileInput {
            service_ref: sref.clone(),
            service,
            tasks,
            nodes: self.nodes(),
            usage,
            previous: self.statuses.get(sref).cloned(),
            endpoints: self.endpoints.get(sref).cloned(),
            taken_addresses: self
                .endpoints
                .iter()
                .filter(|(r, _)| *r != sref)
                .map(|(_, e)| e.address)
                .collect(),
            now,
            nodes_lost_after: grace.term_until,
            node_lost_after: self
                .gone_at
                .iter()
                .map(|(id, at)| (id.clone(), at.plus(grace.after_record_gone)))
                .filter(|(_, until)| *until > now)
                .collect(),
            seed,
            run_request: self.run_requests.get(sref).cloned(),
            task_history_limit: self.task_history_limit,
        }
    }

    /// The ingress ports of `svc` another service holds, as located messages. A port belongs
    /// to the service whose endpoints already list it, else to the manifest written first.
    fn ingress_conflicts(&self, svc: &Service, revision: Revision) -> Vec<String> {
        let me = svc.id();
        let holders = self.services.iter().filter_map(|(r, m)| {
            let other = m.parsed.as_ref().ok()?;
            if *r == me {
                return None;
            }
            let published = |e: &Endpoints| {
                e.ports
                    .iter()
                    .filter_map(|p| p.ingress_port().map(|n| (n, p.protocol)))
                    .collect::<BTreeSet<_>>()
            };
            let mine = self.endpoints.get(&me).map(published).unwrap_or_default();
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
        for k in self.tasks.keys() {
            let state = self
                .task_status
                .get(k)
                .map(|s| s.state.as_str())
                .unwrap_or("assigned");
            *out.entry(state).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, service};
    use shoal_core::model::{TaskState, TaskTemplate};

    fn task(svc: &Service, node: &str, id: &str) -> Task {
        let template = TaskTemplate::from_spec(&svc.spec);
        Task::replica(id, svc.id(), 1, node, template, Timestamp(0))
    }

    #[test]
    fn older_events_never_undo_newer_writes() {
        let keys = Keys::default();
        let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
        let svc = service("web", "");
        let t = task(&svc, "n1", "web.1.a");
        let k = keys.task("n1", "web.1.a");
        c.apply(&k, Some(&model::encode(&t)), 5);
        c.apply(&k, None, 7);
        // A late watch event for revision 5 arrives after the delete at 7.
        assert!(c.apply(&k, Some(&model::encode(&t)), 5).services.is_empty());
        assert!(
            c.input(&svc.id(), Timestamp(0), &NodeGrace::none(), 0)
                .tasks
                .is_empty()
        );
        c.prune(7);
        assert!(
            c.revs.is_empty(),
            "tombstones are forgotten once the watch passed them"
        );
    }

    #[test]
    fn task_changes_touch_their_service_and_node_changes_touch_the_node_tasks() {
        let keys = Keys::default();
        let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
        let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
        let t = task(&svc, "n1", "web.1.a");
        let touched = c.apply(&keys.task("n1", "web.1.a"), Some(&model::encode(&t)), 2);
        assert!(touched.services.contains(&svc.id()));
        let n1 = node("n1", &[]);
        let touched = c.apply(&keys.node("n1"), Some(&model::encode(&n1.info)), 3);
        assert!(touched.nodes_changed && touched.services.contains(&svc.id()));
        assert!(c.nodes()["n1"].ready);
        // Reservations are held until the task finishes.
        assert_eq!(c.usage["n1"].memory, 1 << 30);
        let st = TaskStatus {
            task_id: t.id.clone(),
            state: TaskState::Failed,
            container_id: None,
            host_ports: vec![],
            health: None,
            exit_code: Some(1),
            message: None,
            updated_at: Timestamp(0),
            started_at: None,
            finished_at: None,
        };
        c.apply(
            &keys.task_status("n1", "web.1.a"),
            Some(&model::encode(&st)),
            4,
        );
        assert_eq!(c.usage["n1"].memory, 0);
        // A node whose lease expired is kept, not ready.
        c.apply(&keys.node("n1"), None, 5);
        assert!(!c.nodes()["n1"].ready);
    }

    #[test]
    fn a_service_naming_a_missing_secret_is_invalid_until_it_exists() {
        let keys = Keys::default();
        let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
        let svc = service(
            "web",
            "  secrets: [{source: db-password}]\n  configs: [{source: app}]\n",
        );
        let sref = svc.id();
        let text = serde_json::to_string(&svc).unwrap();
        c.apply(&keys.service(&sref), Some(text.as_bytes()), 3);
        match c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service {
            ServiceInput::Invalid { error, generation } => {
                assert_eq!(generation, 3);
                assert!(
                    error.contains("secret \"db-password\" does not exist")
                        && error.contains("config \"app\" does not exist"),
                    "{error}"
                );
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        let touched = c.apply(&keys.secret("default", "db-password"), Some(b"{}"), 4);
        assert!(
            touched.services.contains(&sref),
            "the secret's users are requeued"
        );
        c.apply(&keys.config("other", "app"), Some(b"{}"), 5);
        assert!(
            matches!(c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service, ServiceInput::Invalid { error, .. } if !error.contains("secret")),
            "a config in another namespace does not count"
        );
        c.apply(&keys.config("default", "app"), Some(b"{}"), 6);
        assert!(matches!(
            c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service,
            ServiceInput::Present { .. }
        ));
        let touched = c.apply(&keys.secret("default", "db-password"), None, 7);
        assert!(touched.services.contains(&sref));
        assert!(matches!(
            c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service,
            ServiceInput::Invalid { .. }
        ));
    }

    #[test]
    fn invalid_manifests_are_kept_as_errors_with_their_location() {
        let keys = Keys::default();
        let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
        let sref = ServiceRef {
            namespace: "default".into(),
            name: "web".into(),
        };
        let text = "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  replicas: lots\n";
        c.apply(&keys.service(&sref), Some(text.as_bytes()), 9);
        match c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service {
            ServiceInput::Invalid { error, generation } => {
                assert_eq!(generation, 9);
                assert!(error.contains(":6:"), "{error}");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        let other =
            "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  image: x\n";
        c.apply(&keys.service(&sref), Some(other.as_bytes()), 10);
        assert!(matches!(
            c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service,
            ServiceInput::Invalid { .. }
        ));
    }
}
