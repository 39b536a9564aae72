//! The service's tasks sorted once, at the start of a reconcile, into named classes by their
//! state, their desired state and their node. Every later phase works from these classes;
//! none restates what a task's state and node mean.

use std::collections::BTreeMap;

use shoal_core::model::{DesiredState, Slot};

use super::{ReconcileInput, TaskEntry};
use crate::placement::{Filters, Reason};

/// Where one task stands at the start of a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// In a final state: it never runs again (kept a while as restart history).
    Finished,
    /// Not finished and its node is down past its grace: this plan orphans it, and its slot
    /// is filled elsewhere.
    Lost,
    /// Orphaned by an earlier plan and its node is still down: it never runs again.
    Orphaned,
    /// Its node is down but within a new leader's grace (it may only not have registered
    /// again yet): left as it is, holding its slot when it is wanted.
    Unreachable,
    /// Wanted running on a ready node that may not keep it (drained, or no longer offering
    /// the runtime or matching the constraints): stopped, and its slot filled elsewhere.
    Migrating,
    /// Wanted running on a ready node that may keep it.
    Untainted,
    /// Told to stop (or orphaned earlier, on a node that came back), not finished yet: it
    /// still holds its node's resources and ports, and its slot waits for it.
    Stopping,
    /// Like [`Class::Stopping`], on a drained node: its slot does not wait for it.
    Draining,
}

/// The tasks of one service, classified, and grouped by slot.
pub(super) struct Tasks<'a> {
    input: &'a ReconcileInput,
    class: Vec<Class>,
    /// Task indices (into the input's tasks) per slot, in input order.
    by_slot: BTreeMap<Slot, Vec<usize>>,
}

impl<'a> Tasks<'a> {
    /// Classifies the input's tasks; `filters` say which nodes may keep them.
    pub(super) fn classify(input: &'a ReconcileInput, filters: &Filters<'_>) -> Self {
        let class = input
            .tasks
            .iter()
            .map(|e| classify(input, filters, e))
            .collect();
        let mut by_slot: BTreeMap<Slot, Vec<usize>> = BTreeMap::new();
        for (i, e) in input.tasks.iter().enumerate() {
            by_slot.entry(e.task.slot.clone()).or_default().push(i);
        }
        Tasks {
            input,
            class,
            by_slot,
        }
    }

    /// The task at `i`.
    pub(super) fn entry(&self, i: usize) -> &'a TaskEntry {
        &self.input.tasks[i]
    }

    /// The class of the task at `i`.
    pub(super) fn class(&self, i: usize) -> Class {
        self.class[i]
    }

    /// Indices of every task, in input order.
    pub(super) fn all(&self) -> std::ops::Range<usize> {
        0..self.class.len()
    }

    /// Indices of the tasks of `class`, in input order.
    pub(super) fn of(&self, class: Class) -> impl Iterator<Item = usize> + '_ {
        self.all().filter(move |&i| self.class[i] == class)
    }

    /// The slots the tasks are in, with their task indices.
    pub(super) fn slots(&self) -> &BTreeMap<Slot, Vec<usize>> {
        &self.by_slot
    }

    /// The task indices of `slot` (none when no task is in it).
    pub(super) fn in_slot(&self, slot: &Slot) -> &[usize] {
        self.by_slot.get(slot).map_or(&[], Vec::as_slice)
    }

    /// Whether the task still holds its node: its resources and ports stay reserved, and its
    /// node must stop it. Finished, lost and orphaned tasks do not.
    pub(super) fn holds_node(&self, i: usize) -> bool {
        !matches!(
            self.class[i],
            Class::Finished | Class::Lost | Class::Orphaned
        )
    }

    /// Whether the store wants the task running and this plan does not orphan it (a finished
    /// task may still be wanted: its slot decides whether it restarts).
    pub(super) fn wanted(&self, i: usize) -> bool {
        let e = self.entry(i);
        e.wants_running() && !e.task.orphaned && self.class[i] != Class::Lost
    }

    /// Whether the task may keep its slot: wanted, and running or starting where it is.
    pub(super) fn live(&self, i: usize) -> bool {
        match self.class[i] {
            Class::Untainted => true,
            Class::Unreachable => self.wanted(i),
            _ => false,
        }
    }

    /// Whether the slots phase may still stop the task: wanted, and not already stopped
    /// because it migrates.
    pub(super) fn stoppable(&self, i: usize) -> bool {
        self.wanted(i) && self.class[i] != Class::Migrating
    }

    /// The input the tasks came from.
    pub(super) fn input(&self) -> &'a ReconcileInput {
        self.input
    }
}

fn classify(input: &ReconcileInput, filters: &Filters<'_>, e: &TaskEntry) -> Class {
    let node = e.task.node_id.as_str();
    if e.state().is_terminal() {
        return Class::Finished;
    }
    if !input.nodes.get(node).is_some_and(|n| n.ready) {
        return if e.task.orphaned {
            Class::Orphaned
        } else if input.node_in_grace(node) {
            Class::Unreachable
        } else {
            Class::Lost
        };
    }
    let keep = filters.keep_filter(node);
    if e.task.orphaned || e.task.desired_state != DesiredState::Running {
        if keep == Some(Reason::Drained) {
            Class::Draining
        } else {
            Class::Stopping
        }
    } else if keep.is_some() {
        Class::Migrating
    } else {
        Class::Untainted
    }
}
