//! Task history: which finished tasks a service keeps, per slot, and which it deletes.
//!
//! A slot keeps its newest `task_history_limit` finished tasks (`shoal controller
//! --task-history-limit`, default 5), so `shoal get tasks --all`, `shoal describe service`
//! and `shoal logs` still show why earlier attempts ended; older ones are pushed out, oldest
//! first. Beyond the limit a slot also keeps what its restart decisions need: the newest task
//! of a slot left empty (its restart is still to be decided) and, when the restart policy
//! counts attempts within a window, the tasks finished within that window. A slot outside the
//! service's target (removed by a scale-down, or a node no longer eligible) keeps no finished
//! task, as in Docker Swarm, where the tasks of removed slots go. Tasks whose node has no
//! record any more are deleted too.

use shoal_core::units::Dur;
use std::collections::BTreeSet;

use shoal_core::model::{Slot, Timestamp};

use super::classify::{Class, Tasks};
use super::slots::finished_at;

/// Finished tasks each slot keeps when the cluster does not say (`--task-history-limit`).
pub const DEFAULT_TASK_HISTORY_LIMIT: usize = 5;

/// What a slot keeps beyond its task history limit for the restart policy.
pub(super) struct RestartNeeds {
    /// The restart window, when the policy counts attempts within it (`maxAttempts` > 0).
    pub(super) window: Option<Dur>,
}

/// The tasks to delete, in slot order. `live` are the tasks that keep running after this
/// plan, `created` the slots this plan fills.
pub(super) fn deletes(
    tasks: &Tasks<'_>,
    target: &BTreeSet<Slot>,
    live: &BTreeSet<usize>,
    created: &BTreeSet<Slot>,
    needs: &RestartNeeds,
) -> Vec<usize> {
    let input = tasks.input();
    let keep_since = needs
        .window
        .filter(|w| !w.is_zero())
        .map(|w| Timestamp(input.now.millis().saturating_sub(w.as_millis())));
    let mut out = Vec::new();
    for (slot, idx) in tasks.slots() {
        let in_target = target.contains(slot);
        let has_live = idx.iter().any(|i| live.contains(i));
        // Newest first: the slot's history, and its latest task.
        let mut finished: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| tasks.class(i) == Class::Finished)
            .collect();
        finished.sort_by_key(|&i| {
            let t = &tasks.entry(i).task;
            std::cmp::Reverse((t.created_at, t.attempt, t.id.clone()))
        });
        let newest = idx.iter().copied().max_by_key(|&i| {
            let t = &tasks.entry(i).task;
            (t.created_at, t.attempt, t.id.clone())
        });
        // A slot left empty keeps its newest task: its restart is still to be decided.
        let latest = newest.filter(|_| !created.contains(slot) && !has_live);
        let kept: BTreeSet<usize> = finished
            .iter()
            .enumerate()
            .filter(|&(rank, &i)| {
                rank < input.task_history_limit
                    || Some(i) == latest
                    || keep_since.is_some_and(|since| finished_at(tasks.entry(i)) >= since)
            })
            .map(|(_, &i)| i)
            .collect();
        for &i in idx {
            let e = tasks.entry(i);
            let delete = match tasks.class(i) {
                Class::Finished => !in_target || !kept.contains(&i),
                Class::Lost | Class::Orphaned => !input.nodes.contains_key(&e.task.node_id),
                _ => false,
            };
            if delete {
                out.push(i);
            }
        }
    }
    out
}
