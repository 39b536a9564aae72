//! The decide path alone, for measuring it: a leader's cache, reconcile and write planning
//! with no store behind them. Every plan's writes are staged, answered at once and brought
//! again by the watch, as they are for a leader whose commits succeed; what agents write is
//! applied as the watch would bring it.
//!
//! `shoal-decide-bench` times it. Without the store, the network and the other processes of
//! a cluster, the CPU it takes per placement is the controller's own work and nearly the
//! same in every run of the same code, so a change to the controller can be measured below
//! the end-to-end benchmark's run-to-run spread.

use std::time::Duration;

use shoal_core::Keys;
use shoal_core::manifest::ServiceRef;
use shoal_core::model::Timestamp;
use shoal_store::{Revision, TxnOp};

use super::cache::{Cache, NodeGrace};
use super::commit::plan_ops;
use crate::reconcile::{DEFAULT_TASK_HISTORY_LIMIT, reconcile};

/// A leader's cache and decisions over an imaginary store whose commits all succeed.
#[derive(Debug)]
pub struct DecidePath {
    keys: Keys,
    cache: Cache,
    revision: Revision,
    grace: NodeGrace,
    seed: u64,
}

impl Default for DecidePath {
    fn default() -> Self {
        DecidePath::new()
    }
}

impl DecidePath {
    /// An empty store under the default prefix.
    pub fn new() -> Self {
        let keys = Keys::default();
        DecidePath {
            cache: Cache::new(keys.clone(), DEFAULT_TASK_HISTORY_LIMIT),
            keys,
            revision: 0,
            grace: NodeGrace {
                term_until: Timestamp(0),
                after_record_gone: Duration::from_secs(60),
            },
            seed: 0,
        }
    }

    /// The store's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Another process (an agent, an operator) writes `value` (`None`: deletes) at `key`;
    /// the watch brings it.
    pub fn write(&mut self, key: &str, value: Option<&[u8]>) {
        self.revision += 1;
        self.cache.apply(key, value, self.revision);
    }

    /// Reconciles `service` as a leader's worker does: decides against the cache, stages the
    /// plan's writes, commits them (at once) and applies the watch's echo of them. Returns
    /// the writes.
    pub fn reconcile(&mut self, service: &ServiceRef) -> Vec<TxnOp> {
        self.seed += 1;
        let input = self
            .cache
            .input(service, Timestamp::now(), &self.grace, self.seed);
        let plan = reconcile(&input);
        let ops = plan_ops(&self.keys, &input, &plan);
        drop(input);
        if ops.is_empty() {
            return ops;
        }
        self.cache.stage(&ops, &plan.creates);
        self.revision += 1;
        self.cache.committed(&ops, self.revision);
        for op in &ops {
            match op {
                TxnOp::Put { key, value, .. } => self.cache.apply(key, Some(value), self.revision),
                TxnOp::Delete { key } => self.cache.apply(key, None, self.revision),
            };
        }
        self.cache.prune(self.revision);
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::Key;
    use shoal_core::model::{self, TaskState, TaskStatus};

    #[test]
    fn services_are_placed_run_and_settle() {
        let mut path = DecidePath::new();
        for id in ["n1", "n2"] {
            let node = crate::testutil::node(id, &[]);
            let key = path.keys().node(id);
            path.write(&key, Some(&model::encode(&node.info)));
        }
        let svc = crate::testutil::service("web", "  replicas: 3\n");
        let key = path.keys().service(&svc.id());
        let text = "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n  replicas: 3\n";
        path.write(&key, Some(text.as_bytes()));
        let ops = path.reconcile(&svc.id());
        let placed: Vec<(String, String)> = ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Put { key, .. } => match path.keys().parse(key) {
                    Some(Key::Task { node, task }) => Some((node, task)),
                    _ => None,
                },
                TxnOp::Delete { .. } => None,
            })
            .collect();
        assert_eq!(placed.len(), 3, "three replicas placed: {ops:?}");
        for (node, task) in &placed {
            let status = TaskStatus::new(task.clone(), TaskState::Running, Timestamp::now());
            let key = path.keys().task_status(node, task);
            path.write(&key, Some(&model::encode(&status)));
        }
        path.reconcile(&svc.id());
        let settled = path.reconcile(&svc.id());
        assert!(
            settled.is_empty(),
            "a converged service writes nothing: {settled:?}"
        );
    }
}
