//! Reconcile: the pure decision of what to do with one service.
//!
//! [`reconcile`] takes everything the controller knows about a service — the manifest (or
//! its parse error, or its absence), its tasks with their statuses, the nodes, what other
//! services hold on each node, the previous status and the time — and returns a [`Plan`]:
//! tasks to create (already placed), tasks to stop, to mark orphaned and to delete, the new
//! status, and when to look again. It performs no I/O; randomness comes from `seed`.
//!
//! A service with a valid manifest is reconciled in phases: its tasks are classified once
//! (`classify`: finished, lost, orphaned, unreachable, migrating, untainted, stopping,
//! draining), then node loss, migration, the slots (`slots`: which task keeps each slot,
//! restarts), the rollout step (`rollout`, `progress`), placement of the new tasks (`place`,
//! over [`crate::placement`], which also says which nodes may take or keep a task), history
//! clean-up (`history`) and the status each return their part of the plan (`service`).

mod classify;
mod endpoints;
pub mod gone;
mod history;
mod ids;
mod job;
mod job_schedule;
mod place;
mod progress;
pub mod rollout;
mod service;
mod slots;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::endpoints::Endpoints;
use shoal_core::manifest::{Service, ServiceRef};
use shoal_core::model::{Node, ServiceStatus, Task, Timestamp};

use crate::placement::{NodeUsage, Usage};

pub use endpoints::EndpointsChange;
pub use history::DEFAULT_TASK_HISTORY_LIMIT;
pub use ids::IdGen;

/// Most events a status keeps (oldest dropped first).
pub const MAX_EVENTS: usize = 20;

/// What the store holds for the service.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceInput {
    /// A valid manifest, with its revision in the store (the generation).
    Present {
        /// The parsed service.
        service: Box<Service>,
        /// Manifest revision.
        generation: i64,
    },
    /// A manifest that does not parse or validate.
    Invalid {
        /// The error, with line and column.
        error: String,
        /// Manifest revision.
        generation: i64,
    },
    /// No manifest: the service was deleted.
    Deleted,
}

/// One task of the service with what its agent last reported: the core view, shared with the
/// API and the metrics.
pub use shoal_core::view::TaskEntry;

/// Everything one reconcile looks at.
#[derive(Debug, Clone)]
pub struct ReconcileInput {
    /// The service reconciled.
    pub service_ref: ServiceRef,
    /// Its manifest.
    pub service: ServiceInput,
    /// Its tasks, on every node.
    pub tasks: Vec<TaskEntry>,
    /// Every known node (ready or not), by id. Shared: the runner builds it once per node
    /// change, not once per reconcile.
    pub nodes: Arc<BTreeMap<String, Node>>,
    /// What every unfinished task holds, per node, this service's own included (a placer
    /// takes those out: [`ReconcileInput::others_usage`]). Shared with the runner's cache.
    pub usage: Arc<BTreeMap<String, NodeUsage>>,
    /// The status written last time.
    pub previous: Option<ServiceStatus>,
    /// The endpoints record written last time.
    pub endpoints: Option<Endpoints>,
    /// Addresses the services' endpoints records hold (a new service takes a free one; the
    /// service's own is among them only once it has one, and then it is never allocated).
    pub taken_addresses: Arc<BTreeSet<Ipv4Addr>>,
    /// The current time.
    pub now: Timestamp,
    /// Nodes without a record are declared lost (their tasks orphaned) only from this time on:
    /// a newly leading controller gives every node one lease TTL to show up, since a missing
    /// record at its first list may only mean the node has not registered again yet.
    pub nodes_lost_after: Timestamp,
    /// Per node whose record this controller saw disappear (leading or standing by): the end
    /// of its grace (`--node-grace` after the record went; the term's grace does not apply,
    /// so a lease that expires early in a term is acted on at once on etcd). A Consul agent that restarts destroys its
    /// node's sessions, so the record goes and comes back at once: the same node, its tasks
    /// kept. Shared: the runner builds it once per change of these nodes, not per reconcile.
    pub node_lost_after: Arc<BTreeMap<String, Timestamp>>,
    /// Seed for new task id suffixes.
    pub seed: u64,
    /// The last `shoal job run` request for the service (jobs only).
    pub run_request: Option<shoal_core::job::RunRequest>,
    /// Finished tasks each slot of a service keeps as its history (`shoal controller
    /// --task-history-limit`); jobs keep their runs' tasks until `ttlAfterFinished` instead.
    pub task_history_limit: usize,
}

impl ReconcileInput {
    /// What the other services' unfinished tasks hold, per node (for a placer).
    pub fn others_usage(&self) -> Usage {
        Usage::of_others(self.usage.clone(), &self.tasks)
    }

    /// Whether `node` has no record but is still within the grace of a new leader: its
    /// tasks are neither orphaned nor moved yet.
    pub fn node_in_grace(&self, node: &str) -> bool {
        self.now < self.node_grace_end(node) && !self.nodes.get(node).is_some_and(|n| n.ready)
    }

    /// When the grace of `node` (without a record) ends: the grace after its record was seen
    /// to disappear, or for a node never seen with a record, the term's grace.
    pub fn node_grace_end(&self, node: &str) -> Timestamp {
        self.node_lost_after
            .get(node)
            .copied()
            .unwrap_or(self.nodes_lost_after)
    }
}

/// Identifies a task record: its node and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskRef {
    /// Node the task is assigned to.
    pub node: String,
    /// Task id.
    pub task: String,
}

impl TaskRef {
    /// The reference of a task.
    pub fn of(task: &Task) -> Self {
        TaskRef {
            node: task.node_id.clone(),
            task: task.id.clone(),
        }
    }
}

/// What one reconcile decided. Data only: the runner turns it into store writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// New tasks, placed (`node_id` set).
    pub creates: Vec<Task>,
    /// Tasks whose desired state becomes `shutdown`.
    pub stops: Vec<TaskRef>,
    /// Tasks whose node is down: marked orphaned (and desired `shutdown`).
    pub orphans: Vec<TaskRef>,
    /// Task records to remove (their agent then removes their status).
    pub deletes: Vec<TaskRef>,
    /// The new status (`None`: leave the status key alone, or delete it with `delete_status`).
    pub status: Option<ServiceStatus>,
    /// Delete the status key (the service is gone and so are its tasks).
    pub delete_status: bool,
    /// Reconcile again after this long (a restart delay is running).
    pub requeue_after: Option<Duration>,
    /// The service's endpoints record.
    pub endpoints: EndpointsChange,
}

impl Plan {
    /// Number of task writes the plan makes.
    pub fn task_ops(&self) -> usize {
        self.creates.len() + self.stops.len() + self.orphans.len() + self.deletes.len()
    }

    /// Whether the plan changes no task.
    pub fn is_quiet(&self) -> bool {
        self.task_ops() == 0
    }
}

/// Decides what to do with one service. Pure and deterministic for a given input.
pub fn reconcile(input: &ReconcileInput) -> Plan {
    let mut plan = match &input.service {
        ServiceInput::Present {
            service,
            generation,
        } => contained(input, *generation, || {
            if service.spec.mode.is_job() {
                job::reconcile_job(input, service, *generation)
            } else {
                service::reconcile_present(input, service, *generation)
            }
        }),
        ServiceInput::Invalid { error, generation } => reconcile_invalid(input, error, *generation),
        ServiceInput::Deleted => reconcile_deleted(input),
    };
    plan.endpoints = endpoints::plan_endpoints(input, &plan);
    plan
}

/// Runs `decide`; if it panics (a defect, or input no validation bounded), that one service
/// is reported failed with the panic's message, touching no task, and the controller goes on.
fn contained(input: &ReconcileInput, generation: i64, decide: impl FnOnce() -> Plan) -> Plan {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decide)) {
        Ok(plan) => plan,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            let error = format!("the controller could not reconcile this service: {what}");
            tracing::error!(service = %input.service_ref, %error, "reconcile panicked");
            reconcile_invalid(input, &error, generation)
        }
    }
}

/// An invalid manifest: say so in the status, touch no task.
fn reconcile_invalid(input: &ReconcileInput, error: &str, generation: i64) -> Plan {
    let prev = input.previous.clone().unwrap_or_default();
    let mut st = prev.clone();
    st.observed_generation = generation;
    if st.error.as_deref() != Some(error) {
        status::push_event(&mut st, input.now, "Warning", "InvalidManifest", error);
    }
    st.error = Some(error.to_string());
    status::set_condition(&mut st, input.now, "Valid", false, "InvalidManifest", error);
    Plan {
        status: Some(status::finish(st, input.previous.as_ref(), input.now)),
        ..Plan::default()
    }
}

/// A deleted service: stop every task, delete the ones that are finished or whose node is
/// down, and the status once nothing is left.
fn reconcile_deleted(input: &ReconcileInput) -> Plan {
    let mut plan = Plan::default();
    let mut left = 0;
    for e in &input.tasks {
        let node_ok = input.nodes.get(&e.task.node_id).is_some_and(|n| n.ready);
        if e.state().is_terminal() || !node_ok {
            plan.deletes.push(TaskRef::of(&e.task));
        } else {
            left += 1;
            if e.wants_running() {
                plan.stops.push(TaskRef::of(&e.task));
            }
        }
    }
    plan.delete_status = left == 0;
    plan
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[test]
fn a_panicking_reconcile_fails_its_service_only() {
    let input = tests::Sim::new(
        crate::testutil::service("web", "  replicas: 1\n"),
        crate::testutil::nodes(vec![crate::testutil::node("n1", &[])]),
    )
    .input();
    let plan = contained(&input, 7, || panic!("boom at {}", 42));
    assert!(plan.is_quiet(), "no task is touched");
    let status = plan.status.expect("a status");
    assert_eq!(status.observed_generation, 7);
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("could not reconcile") && e.contains("boom at 42")),
        "{status:?}"
    );
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod rollout_tests;

#[cfg(test)]
mod job_tests;

#[cfg(test)]
mod history_tests;
