//! The rollout step: which tasks on an older template to replace now.
//!
//! Today this is a stop-first replacement honouring `update.parallelism`: at most
//! `parallelism` slots are being replaced at any time (a slot counts from the moment its old
//! task is told to stop until its new task runs). The slot logic creates the new task once
//! the old one has stopped. Monitoring, failure actions and rollback build on this boundary.

use shoal_core::manifest::UpdateConfig;

/// One slot whose task runs an older template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutdatedSlot {
    /// Index of the task in the reconcile input.
    pub task: usize,
    /// Whether the task is running (not-yet-running tasks are replaced first).
    pub running: bool,
}

/// What the rollout sees.
#[derive(Debug, Clone)]
pub struct RolloutInput<'a> {
    /// The update policy.
    pub update: &'a UpdateConfig,
    /// Slots being replaced right now (old task stopping, or new task not yet running).
    pub in_flight: usize,
    /// Slots still on an older template, in slot order.
    pub outdated: Vec<OutdatedSlot>,
}

/// Chooses the tasks to stop now (indices into the reconcile input's tasks).
pub fn next_batch(input: &RolloutInput<'_>) -> Vec<usize> {
    let budget = match input.update.parallelism {
        0 => usize::MAX,
        p => (p as usize).saturating_sub(input.in_flight),
    };
    let mut order: Vec<&OutdatedSlot> = input.outdated.iter().collect();
    // Stable: not-running first, slot order otherwise.
    order.sort_by_key(|s| s.running);
    order.into_iter().take(budget).map(|s| s.task).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<OutdatedSlot> {
        (0..n)
            .map(|task| OutdatedSlot {
                task,
                running: true,
            })
            .collect()
    }

    #[test]
    fn parallelism_bounds_the_slots_in_flight() {
        let update = UpdateConfig {
            parallelism: 2,
            ..UpdateConfig::default()
        };
        let input = RolloutInput {
            update: &update,
            in_flight: 1,
            outdated: slots(5),
        };
        assert_eq!(next_batch(&input), vec![0]);
        let input = RolloutInput {
            update: &update,
            in_flight: 0,
            outdated: slots(5),
        };
        assert_eq!(next_batch(&input), vec![0, 1]);
        let input = RolloutInput {
            update: &update,
            in_flight: 3,
            outdated: slots(5),
        };
        assert!(next_batch(&input).is_empty());
    }

    #[test]
    fn zero_parallelism_replaces_everything_and_pending_tasks_go_first() {
        let update = UpdateConfig {
            parallelism: 0,
            ..UpdateConfig::default()
        };
        let mut outdated = slots(3);
        outdated[2].running = false;
        let input = RolloutInput {
            update: &update,
            in_flight: 0,
            outdated,
        };
        assert_eq!(next_batch(&input), vec![2, 0, 1]);
    }
}
