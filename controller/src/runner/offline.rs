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

use super::cache::{Cache, NodeGrace, op_parts};
use super::commit::plan_ops;
use crate::reconcile::{DEFAULT_TASK_HISTORY_LIMIT, reconcile};

/// What one reconcile wrote.
#[derive(Debug)]
pub struct Decided {
    /// The writes, in order.
    pub ops: Vec<TxnOp>,
    /// The (node, task id) of every task they create.
    pub created: Vec<(String, String)>,
}

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
    /// plan's writes, commits them (at once) and applies the watch's echo of them.
    pub fn reconcile(&mut self, service: &ServiceRef) -> Decided {
        self.seed += 1;
        let input = self
            .cache
            .input(service, Timestamp::now(), &self.grace, self.seed);
        let plan = reconcile(&input);
        let ops = plan_ops(&self.keys, &input, &plan);
        drop(input);
        if !ops.is_empty() {
            self.cache.stage(&ops, &plan.creates);
            self.revision += 1;
            self.cache.committed(&ops, self.revision);
            for op in &ops {
                let (key, value) = op_parts(op);
                self.cache.apply(key, value, self.revision);
            }
            self.cache.prune(self.revision);
        }
        let created = plan
            .creates
            .into_iter()
            .map(|t| (t.node_id, t.id))
            .collect();
        Decided { ops, created }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let text = crate::testutil::manifest_text("web", "  replicas: 3\n");
        path.write(&key, Some(text.as_bytes()));
        let placed = path.reconcile(&svc.id()).created;
        assert_eq!(placed.len(), 3, "three replicas placed: {placed:?}");
        for (node, task) in &placed {
            let status = TaskStatus::new(task.clone(), TaskState::Running, Timestamp::now());
            let key = path.keys().task_status(node, task);
            path.write(&key, Some(&model::encode(&status)));
        }
        path.reconcile(&svc.id());
        let settled = path.reconcile(&svc.id()).ops;
        assert!(
            settled.is_empty(),
            "a converged service writes nothing: {settled:?}"
        );
    }
}
