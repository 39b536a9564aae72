//! Tasks as the cache keeps them: the service, template and template hash are stored once
//! per service revision and every task of that revision refers to them; the task's node and
//! id are the key's. A full [`Task`] is rebuilt only for a reconcile input.
//!
//! A stored task is read with its template left as bytes ([`StoredTask`]): when they are the
//! bytes of a template already held, that one is shared and the template is not decoded
//! again. Every task of a service revision carries the same template, so a cache following
//! the store (a standby's, a relist) decodes each template once, not once per task.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::manifest::ServiceRef;
use shoal_core::model::{
    self, DesiredState, ModelError, Slot, StoredTask, Task, TaskStatus, TaskTemplate, Timestamp,
};
use shoal_store::Revision;

/// A template with its hash and service, shared by the service's tasks made from it.
#[derive(Debug)]
pub(super) struct SharedTemplate {
    service: ServiceRef,
    hash: String,
    pub(super) template: Arc<TaskTemplate>,
    /// The template as Shoal stores it inside a task.
    encoded: Box<[u8]>,
}

/// One task without the parts it shares with others.
#[derive(Debug)]
pub(super) struct CompactTask {
    slot: Slot,
    generation: i64,
    pub(super) template: Arc<SharedTemplate>,
    desired_state: DesiredState,
    attempt: u64,
    pub(super) orphaned: bool,
    run: Option<u64>,
    created_at: Timestamp,
    /// The task's own node and id when they are not its key's (never written so by Shoal).
    other_ids: Option<Box<(String, String)>>,
}

/// What the cache holds for one `(node, task id)`: the assignment and the agent's status,
/// either of which may be absent (a status can outlive its task for a moment). The entry goes
/// when both are gone.
///
/// The revision of the last change of each part is kept here while the record holds that
/// part (the cache's revision map holds it otherwise): most keys of a large cluster are
/// tasks and their statuses, and the map would hold a copy of each of their keys.
#[derive(Debug, Default)]
pub(super) struct TaskRecord {
    pub(super) task: Option<CompactTask>,
    /// As [`super::kept_status`] keeps it.
    pub(super) status: Option<TaskStatus>,
    /// The revision of the last change of the assignment's key, while `task` is held.
    pub(super) task_revision: Revision,
    /// The revision of the last change of the status's key, while `status` is held.
    pub(super) status_revision: Revision,
}

impl TaskRecord {
    /// Whether the task holds resources on its node: assigned, not orphaned, not finished
    /// (what `TaskEntry::is_dead` says of a reconcile input's task, negated).
    pub(super) fn reserves(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.orphaned)
            && !self.status.as_ref().is_some_and(|s| s.state.is_terminal())
    }

    /// The resources it reserves when [`TaskRecord::reserves`].
    pub(super) fn reserved(&self) -> Option<&TaskTemplate> {
        let t = self.task.as_ref().filter(|_| self.reserves())?;
        Some(&t.template.template)
    }

    /// Neither assignment nor status left.
    pub(super) fn is_empty(&self) -> bool {
        self.task.is_none() && self.status.is_none()
    }
}

impl CompactTask {
    /// The service the task belongs to.
    pub(super) fn service(&self) -> &ServiceRef {
        &self.template.service
    }

    /// The full task stored under `(node, id)`.
    pub(super) fn to_task(&self, node: &str, id: &str) -> Task {
        let (node_id, id) = match &self.other_ids {
            Some(ids) => (ids.0.clone(), ids.1.clone()),
            None => (node.to_string(), id.to_string()),
        };
        Task {
            id,
            service: self.template.service.clone(),
            slot: self.slot.clone(),
            node_id,
            generation: self.generation,
            template_hash: self.template.hash.clone(),
            template: self.template.template.clone(),
            desired_state: self.desired_state,
            attempt: self.attempt,
            orphaned: self.orphaned,
            run: self.run,
            created_at: self.created_at,
        }
    }
}

/// The templates tasks share, by service and hash.
#[derive(Debug, Default)]
pub(super) struct Templates {
    by_hash: HashMap<ServiceRef, HashMap<String, Arc<SharedTemplate>>>,
}

impl Templates {
    /// Decodes a stored task, sharing the template held under its service and hash when the
    /// stored bytes are that template's (the template is decoded only otherwise).
    pub(super) fn decode(&self, bytes: &[u8]) -> Result<Task, ModelError> {
        let stored: StoredTask = model::decode("task", bytes)?;
        let raw = stored.template_bytes();
        let held = self
            .by_hash
            .get(&stored.service)
            .and_then(|h| h.get(&stored.template_hash))
            .filter(|s| *s.encoded == *raw);
        let template = match held {
            Some(s) => s.template.clone(),
            None => Arc::new(model::decode("task", raw)?),
        };
        Ok(stored.with_template(template))
    }

    /// Stores `t` under `(node, id)`, sharing its template with the tasks that have the same
    /// (the template is copied only when no task has it yet).
    pub(super) fn compact(&mut self, t: &Task, node: &str, id: &str) -> CompactTask {
        let found = self
            .by_hash
            .get(&t.service)
            .and_then(|h| h.get(&t.template_hash));
        let template = match found {
            Some(s) if Arc::ptr_eq(&s.template, &t.template) || s.template == t.template => {
                s.clone()
            }
            found => {
                let s = Arc::new(SharedTemplate {
                    service: t.service.clone(),
                    hash: t.template_hash.clone(),
                    template: t.template.clone(),
                    encoded: model::encode(&*t.template).into_boxed_slice(),
                });
                if found.is_none() {
                    self.by_hash
                        .entry(t.service.clone())
                        .or_default()
                        .insert(t.template_hash.clone(), s.clone());
                }
                s
            }
        };
        let other_ids =
            (t.node_id != node || t.id != id).then(|| Box::new((t.node_id.clone(), t.id.clone())));
        CompactTask {
            slot: t.slot.clone(),
            generation: t.generation,
            template,
            desired_state: t.desired_state,
            attempt: t.attempt,
            orphaned: t.orphaned,
            run: t.run,
            created_at: t.created_at,
            other_ids,
        }
    }

    /// Forgets a removed task's template once no task refers to it any more.
    pub(super) fn release(&mut self, t: CompactTask) {
        let service = &t.template.service;
        let Some(hashes) = self.by_hash.get_mut(service) else {
            return;
        };
        if let Some(s) = hashes.get(&t.template.hash)
            && Arc::ptr_eq(s, &t.template)
            && Arc::strong_count(s) == 2
        {
            hashes.remove(&t.template.hash);
            if hashes.is_empty() {
                self.by_hash.remove(service);
            }
        }
    }

    /// Distinct templates held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_hash.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::service;

    fn task(id: &str, node: &str) -> Task {
        let svc = service("web", "");
        let template = TaskTemplate::from_spec(&svc.spec);
        Task::replica(id, svc.id(), 1, node, template, Timestamp(1))
    }

    #[test]
    fn a_stored_task_shares_the_held_template_its_bytes_are() {
        let mut templates = Templates::default();
        let first = task("web.1.a", "n1");
        let decoded = templates.decode(&model::encode(&first)).unwrap();
        assert_eq!(decoded, first, "read as it was stored");
        let held = templates.compact(&decoded, "n1", "web.1.a");
        let second = task("web.2.b", "n2");
        let read = templates.decode(&model::encode(&second)).unwrap();
        assert_eq!(read, second);
        assert!(
            Arc::ptr_eq(&read.template, &held.template.template),
            "the template held is shared, not decoded again"
        );
    }

    #[test]
    fn a_stored_template_unlike_the_held_one_is_read_for_itself() {
        let mut templates = Templates::default();
        let first = task("web.1.a", "n1");
        templates.compact(&first, "n1", "web.1.a");
        // Same service and hash, another template (written by something other than Shoal).
        let mut other = task("web.2.b", "n2");
        Arc::make_mut(&mut other.template).command = vec!["sleep".into(), "1".into()];
        let read = templates.decode(&model::encode(&other)).unwrap();
        assert_eq!(read, other, "the stored template, not the held one");
        assert!(!Arc::ptr_eq(&read.template, &first.template));
    }

    #[test]
    fn an_unreadable_stored_template_is_an_error() {
        let templates = Templates::default();
        let mut json = serde_json::to_value(task("web.1.a", "n1")).unwrap();
        json["template"] = serde_json::json!("not a template");
        let err = templates
            .decode(&serde_json::to_vec(&json).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("invalid task record"), "{err}");
    }
}
