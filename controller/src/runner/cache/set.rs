//! Showing one key's value in the cache: each kind of record decoded into its own map, and
//! the services the change concerns collected in a [`Touched`].

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_core::Key;
use shoal_core::endpoints::Endpoints;
use shoal_core::job::RunRequest;
use shoal_core::manifest::ServiceRef;
use shoal_core::model::{
    self, NodeConfig, NodeInfo, ServiceStatus, Task, TaskStatus, TaskTemplate, Timestamp,
};
use shoal_core::secret::FileKind;
use shoal_store::Revision;
use tracing::warn;

use super::{Cache, ManifestEntry, Part, Touched, Written, kept_status};
use crate::placement::{NodeUsage, add_usage};

impl Cache {
    /// Shows `value` for `key`, parsed as `parsed` (set at `revision`, which the key keeps),
    /// whatever the key's revision. A value `written` holds is shown as it is instead of
    /// being decoded again from `value`.
    pub(super) fn set(
        &mut self,
        key: &str,
        parsed: Key,
        value: Option<&[u8]>,
        revision: Revision,
        written: &Written,
    ) -> Touched {
        let mut touched = Touched::default();
        // A task's and a status's revision are kept with the record, the others here.
        if !matches!(parsed, Key::Task { .. } | Key::TaskStatus { .. }) {
            self.keep_map_revision(key, revision);
        }
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
            Key::ServiceStatus(sref) => self.set_service_status(sref, value, written),
            Key::Node(id) => {
                self.set_node(&id, value);
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
                        self.forget_if_unnamed(&id);
                    }
                }
                self.node_touched(&id, &mut touched);
            }
            Key::Task { node, task } => {
                self.set_task(key, (node, task), value, revision, written, &mut touched)
            }
            Key::TaskStatus { node, task } => {
                self.set_task_status(key, (node, task), value, revision, &mut touched)
            }
            Key::Leader => {}
            Key::Endpoints(sref) => self.set_endpoints(sref, value, &mut touched),
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

    fn set_service_status(&mut self, sref: ServiceRef, value: Option<&[u8]>, written: &Written) {
        let status = value.map(|v| match written.status_of(&sref) {
            Some(st) => Ok(st.clone()),
            None => model::decode::<ServiceStatus>("service status", v),
        });
        match status {
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

    fn set_node(&mut self, id: &str, value: Option<&[u8]>) {
        match value.map(|v| model::decode::<NodeInfo>("node", v)) {
            Some(Ok(info)) => {
                self.infos.insert(id.to_string(), info);
                self.ready.insert(id.to_string());
                self.not_gone(id);
            }
            Some(Err(e)) => {
                warn!(node = %id, error = %e, "ignoring unreadable node record");
                self.ready.remove(id);
            }
            None => {
                // Keep the last record while some key names the node: it is down, and its
                // tasks keep their node's labels through their grace.
                if self.ready.remove(id) {
                    self.gone_at.insert(id.to_string(), Timestamp::now());
                    self.lost_after = None;
                }
                self.forget_if_unnamed(id);
            }
        }
    }

    /// Forgets the last record of node `id` if it is not ready and no key names it any more
    /// (no record, assignment, status or settings): the store no longer knows the node, so
    /// neither does the controller — one started now would not — and a cluster that
    /// thousands of nodes left does not carry them into every reconcile until
    /// `--node-gone-after`. Its record coming back makes it known again. Returns whether it
    /// was forgotten.
    fn forget_if_unnamed(&mut self, id: &str) -> bool {
        if self.ready.contains(id) || self.configs.contains_key(id) || self.tasks.names(id) {
            return false;
        }
        self.not_gone(id);
        let forgotten = self.infos.remove(id).is_some();
        if forgotten {
            self.nodes = None;
        }
        forgotten
    }

    /// Ends node `id`'s time as gone (it came back, or is forgotten): the shared graces are
    /// built again when it had one.
    fn not_gone(&mut self, id: &str) {
        if self.gone_at.remove(id).is_some() {
            self.lost_after = None;
        }
    }

    fn set_task(
        &mut self,
        key: &str,
        k: (String, String),
        value: Option<&[u8]>,
        revision: Revision,
        written: &Written,
        touched: &mut Touched,
    ) {
        if let (Some(_), Some(t)) = (value, written.task(&k.0, &k.1)) {
            return self.put_task(key, k, Some(t), revision, touched);
        }
        let task = value.and_then(|v| match self.templates.decode(v) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(node = %k.0, task = %k.1, error = %e, "ignoring unreadable task");
                None
            }
        });
        self.put_task(key, k, task.as_ref(), revision, touched);
    }

    /// Shows `task` (`None`: no task) under `key`, the task key of `k`, set at `revision`.
    pub(super) fn put_task(
        &mut self,
        key: &str,
        k: (String, String),
        task: Option<&Task>,
        revision: Revision,
        touched: &mut Touched,
    ) {
        let Some(pos) = self.tasks.position(&k.0, &k.1, task.is_some()) else {
            self.keep_record_revision(key, None, Part::Task, revision, false);
            return;
        };
        if let Some(t) = self.tasks.record(pos).reserved() {
            release(&mut self.usage, &k.0, t);
        }
        let new = task.map(|t| {
            touched.services.insert(t.service.clone());
            self.templates.compact(t, &k.0, &k.1)
        });
        let old = self.tasks.replace_task(pos, new);
        let was_held = old.is_some();
        if let Some(old) = old {
            touched.services.insert(old.service().clone());
            self.templates.release(old);
        }
        let r = self.tasks.record(pos);
        if let Some(t) = r.reserved() {
            add_usage(Arc::make_mut(&mut self.usage), &k.0, t);
        }
        self.keep_record_revision(key, Some(pos), Part::Task, revision, was_held);
        if self.tasks.record(pos).is_empty() {
            self.tasks.remove(pos);
            touched.nodes_changed |= self.forget_if_unnamed(&k.0);
        }
        if !self.infos.contains_key(&k.0) {
            self.nodes = None;
        }
    }

    fn set_task_status(
        &mut self,
        key: &str,
        k: (String, String),
        value: Option<&[u8]>,
        revision: Revision,
        touched: &mut Touched,
    ) {
        let status = match value.map(|v| model::decode::<TaskStatus>("task status", v)) {
            Some(Ok(st)) => Some(kept_status(st)),
            Some(Err(e)) => {
                warn!(node = %k.0, task = %k.1, error = %e, "ignoring unreadable task status");
                let pos = self.tasks.find(&k.0, &k.1);
                let held = pos.is_some_and(|p| self.tasks.record(p).status.is_some());
                self.keep_record_revision(key, pos, Part::Status, revision, held);
                return;
            }
            None => None,
        };
        let Some(pos) = self.tasks.position(&k.0, &k.1, status.is_some()) else {
            self.keep_record_revision(key, None, Part::Status, revision, false);
            return;
        };
        let r = self.tasks.record_mut(pos);
        let was_held = r.status.is_some();
        // A status change moves the node's usage only when it ends the task.
        let was = r.reserves();
        r.status = status;
        if let Some(t) = &r.task {
            match (was, r.reserves()) {
                (false, true) => {
                    add_usage(Arc::make_mut(&mut self.usage), &k.0, &t.template.template)
                }
                (true, false) => release(&mut self.usage, &k.0, &t.template.template),
                _ => {}
            }
            touched.services.insert(t.service().clone());
        }
        self.keep_record_revision(key, Some(pos), Part::Status, revision, was_held);
        if self.tasks.record(pos).is_empty() {
            self.tasks.remove(pos);
            touched.nodes_changed |= self.forget_if_unnamed(&k.0);
        }
    }

    fn set_endpoints(&mut self, sref: ServiceRef, value: Option<&[u8]>, touched: &mut Touched) {
        let address = |c: &Cache| c.endpoints.get(&sref).map(|e| e.address);
        let before = address(self);
        match value.map(|v| model::decode::<Endpoints>("endpoints", v)) {
            Some(Ok(e)) => {
                self.endpoints.insert(sref.clone(), e);
            }
            Some(Err(e)) => {
                warn!(service = %sref, error = %e, "rewriting unreadable endpoints");
                self.endpoints.remove(&sref);
                touched.services.insert(sref.clone());
            }
            None => {
                self.endpoints.remove(&sref);
                touched.services.insert(sref.clone());
            }
        }
        // The usual change is the tasks': the set of addresses stays as it is.
        if address(self) != before {
            self.addresses = None;
        }
    }
}

/// Takes what a task reserved off its node's usage.
fn release(usage: &mut Arc<BTreeMap<String, NodeUsage>>, node: &str, template: &TaskTemplate) {
    if let Some(u) = Arc::make_mut(usage).get_mut(node) {
        u.remove_template(template);
    }
}
