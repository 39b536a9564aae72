//! Tasks as the cache keeps them: the template (and its hash) is stored once per distinct
//! template — once per service revision in practice — and every task of that revision refers
//! to it; the task's node and id are the key's. A full [`Task`] is rebuilt only for a
//! reconcile input.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::manifest::ServiceRef;
use shoal_core::model::{DesiredState, Slot, Task, TaskTemplate, Timestamp};

/// A template with its hash, shared by the tasks made from it.
#[derive(Debug)]
pub(super) struct SharedTemplate {
    hash: String,
    pub(super) template: TaskTemplate,
}

/// One task without the parts it shares with others.
#[derive(Debug)]
pub(super) struct CompactTask {
    pub(super) service: ServiceRef,
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

impl CompactTask {
    /// The full task stored under `(node, id)`.
    pub(super) fn to_task(&self, node: &str, id: &str) -> Task {
        let (node_id, id) = match &self.other_ids {
            Some(ids) => (ids.0.clone(), ids.1.clone()),
            None => (node.to_string(), id.to_string()),
        };
        Task {
            id,
            service: self.service.clone(),
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

/// The templates tasks share, by hash.
#[derive(Debug, Default)]
pub(super) struct Templates {
    by_hash: HashMap<String, Arc<SharedTemplate>>,
}

impl Templates {
    /// Stores `t` under `(node, id)`, sharing its template with the tasks that have the same.
    pub(super) fn compact(&mut self, t: Task, node: &str, id: &str) -> CompactTask {
        let template = match self.by_hash.get(&t.template_hash) {
            Some(s) if s.template == t.template => s.clone(),
            Some(_) => Arc::new(SharedTemplate {
                hash: t.template_hash,
                template: t.template,
            }),
            None => {
                let s = Arc::new(SharedTemplate {
                    hash: t.template_hash.clone(),
                    template: t.template,
                });
                self.by_hash.insert(t.template_hash, s.clone());
                s
            }
        };
        let other_ids = (t.node_id != node || t.id != id).then(|| Box::new((t.node_id, t.id)));
        CompactTask {
            service: t.service,
            slot: t.slot,
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
        let hash = &t.template.hash;
        if let Some(s) = self.by_hash.get(hash)
            && Arc::ptr_eq(s, &t.template)
            && Arc::strong_count(s) == 2
        {
            self.by_hash.remove(hash);
        }
    }

    /// Distinct templates held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_hash.len()
    }
}
