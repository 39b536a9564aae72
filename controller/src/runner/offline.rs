//! The decide path alone, for measuring it: a leader's cache, reconcile and write planning
//! with no store behind them. Every plan's writes are staged, answered at once and brought
//! again by the watch, as they are for a leader whose commits succeed; what agents write is
//! applied as the watch would bring it.
//!
//! A [`Standby`] applies the same changes to a view of its own through the code a standby
//! controller's watch feeds, so that what following the store costs can be timed too.
//!
//! `shoal-decide-bench` times it. Without the store, the network and the other processes of
//! a cluster, the CPU it takes per placement is the controller's own work and nearly the
//! same in every run of the same code, so a change to the controller can be measured below
//! the end-to-end benchmark's run-to-run spread.

use std::time::Duration;

use shoal_core::Keys;
use shoal_core::manifest::ServiceRef;
use shoal_core::model::Timestamp;
use shoal_store::reflector::{Batch, Event};
use shoal_store::{Revision, TxnOp};

use super::cache::{Cache, NodeGrace, Written, op_parts};
use super::commit::plan_ops;
use super::follow::View;
use crate::metrics::Metrics;
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
    /// Every change of the store since the last [`DecidePath::take_changes`], when kept.
    changes: Option<Vec<Event<Vec<u8>>>>,
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
            changes: None,
        }
    }

    /// An empty store whose changes are kept for [`DecidePath::take_changes`].
    pub fn keeping_changes() -> Self {
        DecidePath {
            changes: Some(Vec::new()),
            ..DecidePath::new()
        }
    }

    /// The changes of the store since the last call, in order, as one batch of its watch
    /// (none unless made by [`DecidePath::keeping_changes`]).
    pub fn take_changes(&mut self) -> Batch<Vec<u8>> {
        Batch {
            events: self
                .changes
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
            revision: self.revision,
        }
    }

    fn keep(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(changes) = &mut self.changes {
            let key = key.to_string();
            changes.push(match value {
                Some(v) => Event::Apply(key, v.to_vec(), self.revision),
                None => Event::Delete(key, self.revision),
            });
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
        self.keep(key, value);
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
            let written = Written::of(service, &plan);
            self.cache.stage(&ops, &written);
            self.revision += 1;
            self.cache.committed(&ops, self.revision, &written);
            for op in &ops {
                let (key, value) = op_parts(op);
                self.cache.apply(key, value, self.revision);
                self.keep(key, value);
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

/// A standby controller's view of the same store: the watch's batches applied by the code
/// that applies them in a running controller, with no term to report to.
pub struct Standby {
    view: View,
}

impl Default for Standby {
    fn default() -> Self {
        Standby::new()
    }
}

impl Standby {
    /// An empty view of the default prefix.
    pub fn new() -> Self {
        Standby {
            view: View::new(
                Keys::default(),
                DEFAULT_TASK_HISTORY_LIMIT,
                Metrics::default(),
            ),
        }
    }

    /// Applies one batch of the watch, holding back every change but those of nodes' records
    /// as a standby does while the store is busy.
    pub fn apply(&self, batch: Batch<Vec<u8>>) {
        self.view.apply_batch(batch);
    }

    /// Applies the changes held back, as a standby does when the store goes quiet or it
    /// takes over; returns how many there were.
    pub fn catch_up(&self) -> usize {
        self.view.cache().catch_up()
    }

    /// The cache's fingerprint: equal to the leader's when both show the same store.
    #[cfg(test)]
    fn fingerprint(&self) -> String {
        self.view.cache().fingerprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::model::{self, TaskState, TaskStatus};

    /// Two nodes and a service of three replicas, placed and running, on `path`.
    fn place_and_run(path: &mut DecidePath) -> ServiceRef {
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
        svc.id()
    }

    #[test]
    fn services_are_placed_run_and_settle() {
        let mut path = DecidePath::new();
        let svc = place_and_run(&mut path);
        let settled = path.reconcile(&svc).ops;
        assert!(
            settled.is_empty(),
            "a converged service writes nothing: {settled:?}"
        );
        assert!(
            path.take_changes().events.is_empty(),
            "changes are kept only when asked"
        );
    }

    #[test]
    fn a_standby_applying_the_changes_shows_what_the_leader_shows() {
        let mut path = DecidePath::keeping_changes();
        place_and_run(&mut path);
        let changes = path.take_changes();
        // Two nodes, the manifest, three tasks and their statuses, the service's status.
        assert!(
            changes.events.len() >= 9,
            "changes kept: {}",
            changes.events.len()
        );
        // Every key but the nodes' is held back, its last change only.
        let nodes = path.keys().nodes_prefix();
        let held: std::collections::BTreeSet<&str> = changes
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Apply(key, ..) | Event::Delete(key, _) => Some(key.as_str()),
                Event::Init(_) => None,
            })
            .filter(|key| !key.starts_with(&nodes))
            .collect();
        let held = held.len();
        let standby = Standby::new();
        standby.apply(changes);
        assert_ne!(
            standby.fingerprint(),
            path.cache.fingerprint(),
            "the tasks and statuses are held back"
        );
        assert_eq!(standby.catch_up(), held);
        assert_eq!(standby.fingerprint(), path.cache.fingerprint());
        assert!(
            path.take_changes().events.is_empty(),
            "taken changes are not kept again"
        );
    }
}
