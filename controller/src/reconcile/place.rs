//! Placement of the new tasks: the placer, told what the service's tasks already hold,
//! chooses a node for each pending slot; the tasks are built here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_core::manifest::{Service, ServiceSpec};
use shoal_core::model::{DesiredState, Slot, Task, TaskTemplate};
use tracing::debug;

use super::IdGen;
use super::classify::Tasks;
use super::slots::Pending;
use crate::placement::{Explanation, Filters, Placer};

/// The tasks placed, and why the others could not be.
pub(super) struct Placed {
    /// New tasks, placed.
    pub(super) creates: Vec<Task>,
    /// The slots they fill.
    pub(super) slots: BTreeSet<Slot>,
    /// Why some slot got no node, as `describe` shows it.
    pub(super) unschedulable: Option<String>,
}

/// What every new task of the service is made from.
pub(super) struct Blueprint<'a> {
    /// The service.
    pub(super) svc: &'a Service,
    /// The spec its new tasks follow (the rollout's target, or the one rolled back to).
    pub(super) spec: &'a ServiceSpec,
    /// The template its tasks run.
    pub(super) template: &'a Arc<TaskTemplate>,
    /// The template's hash.
    pub(super) hash: &'a str,
    /// The manifest revision.
    pub(super) generation: i64,
    /// Slots wanted (for a global service's explanation).
    pub(super) desired: usize,
}

/// Places `pending` in order: a placer over every node, from `filters`, told what the tasks
/// that hold their node reserve (`live`: those that keep running). With nothing pending, as
/// in most reconciles (a task's status changed), no placer is built.
pub(super) fn place(
    filters: Filters<'_>,
    tasks: &Tasks<'_>,
    live: &BTreeSet<usize>,
    pending: Vec<Pending>,
    blueprint: &Blueprint<'_>,
) -> Placed {
    let mut placed = Placed {
        creates: Vec::new(),
        slots: BTreeSet::new(),
        unschedulable: None,
    };
    if pending.is_empty() {
        return placed;
    }
    let input = tasks.input();
    let mut placer = Placer::with_filters(filters, blueprint.spec, &input.others_usage());
    for i in tasks.all().filter(|&i| tasks.holds_node(i)) {
        let t = &tasks.entry(i).task;
        placer.account(&t.node_id, &t.template, true, live.contains(&i));
    }
    let mut ids = IdGen::new(input.seed);
    let mut unschedulable: Option<String> = None;
    let mut global_refused: BTreeMap<String, usize> = BTreeMap::new();
    for p in pending {
        let node = match &p.slot {
            // Every replica of a service asks for the same thing and placing only adds load:
            // once one does not fit, none of the rest will (and explaining it again is waste).
            Slot::Replica(_) if unschedulable.is_some() => continue,
            Slot::Replica(_) => match placer.place() {
                Ok(node) => node,
                Err(e) => {
                    unschedulable.get_or_insert_with(|| e.to_string());
                    continue;
                }
            },
            Slot::Node(node) => match placer.place_on(node) {
                Ok(()) => node.clone(),
                Err(reason) => {
                    *global_refused.entry(reason.to_string()).or_default() += 1;
                    continue;
                }
            },
        };
        let task = new_task(blueprint, tasks, &p, node, ids.suffix());
        debug!(service = %input.service_ref, task = %task.id, node = %task.node_id, "placing task");
        placed.slots.insert(p.slot);
        placed.creates.push(task);
    }
    if !global_refused.is_empty() {
        let refused: usize = global_refused.values().sum();
        let e = Explanation {
            available: blueprint.desired - refused,
            total: blueprint.desired,
            reasons: global_refused,
        };
        unschedulable = Some(e.to_string());
    }
    placed.unschedulable = unschedulable;
    placed
}

fn new_task(
    b: &Blueprint<'_>,
    tasks: &Tasks<'_>,
    p: &Pending,
    node: String,
    suffix: String,
) -> Task {
    let input = tasks.input();
    Task {
        id: format!("{}.{}.{}", b.svc.metadata.name, p.slot, suffix),
        service: input.service_ref.clone(),
        slot: p.slot.clone(),
        node_id: node,
        generation: b.generation,
        template_hash: b.hash.to_string(),
        template: b.template.clone(),
        desired_state: DesiredState::Running,
        attempt: p.attempt,
        orphaned: false,
        run: None,
        created_at: input.now,
    }
}
