//! History clean-up: finished tasks no longer needed for restart decisions, and tasks whose
//! node has no record any more, are deleted.

use shoal_core::units::Dur;
use std::collections::BTreeSet;

use shoal_core::model::{Slot, Timestamp};

use super::classify::{Class, Tasks};
use super::slots::finished_at;

/// The tasks to delete, in slot order. `live` are the tasks that keep running after this
/// plan, `created` the slots this plan fills, `window` the restart window.
pub(super) fn deletes(
    tasks: &Tasks<'_>,
    target: &BTreeSet<Slot>,
    live: &BTreeSet<usize>,
    created: &BTreeSet<Slot>,
    window: Dur,
) -> Vec<usize> {
    let input = tasks.input();
    let keep_since = Timestamp(input.now.millis().saturating_sub(window.as_millis()));
    let mut out = Vec::new();
    for (slot, idx) in tasks.slots() {
        let in_target = target.contains(slot);
        let has_live = idx.iter().any(|i| live.contains(i));
        // A slot left empty keeps its newest task: its restart is still to be decided.
        let latest = if created.contains(slot) || has_live {
            None
        } else {
            idx.iter().copied().max_by_key(|&i| {
                let t = &tasks.entry(i).task;
                (t.created_at, t.attempt, t.id.clone())
            })
        };
        for &i in idx {
            let e = tasks.entry(i);
            let delete = match tasks.class(i) {
                Class::Finished => {
                    !in_target
                        || (Some(i) != latest && (window.is_zero() || finished_at(e) < keep_since))
                }
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
