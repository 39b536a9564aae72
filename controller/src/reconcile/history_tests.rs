//! Task history: a slot keeps its newest `task_history_limit` finished tasks (plus what its
//! restart decisions need), a removed slot keeps none.

use std::time::Duration;

use proptest::prelude::*;
use shoal_core::model::{DesiredState, Slot, TaskState};

use super::tests::Sim;
use crate::testutil::{node, nodes, service};

fn sim_with(spec: &str, limit: usize) -> Sim {
    let mut sim = Sim::new(
        service("web", spec),
        nodes(vec![node("n1", &[]), node("n2", &[])]),
    );
    sim.task_history_limit = limit;
    sim
}

/// Ids of the slot's tasks, oldest first.
fn in_slot(sim: &Sim, slot: u64) -> Vec<String> {
    let mut v: Vec<_> = sim
        .tasks
        .values()
        .filter(|e| e.task.slot == Slot::Replica(slot))
        .map(|e| (e.task.created_at, e.task.attempt, e.task.id.clone()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, id)| id).collect()
}

/// Fails every running task of the service once, then lets the controller and agents act.
fn fail_all(sim: &mut Sim) -> Vec<String> {
    let running: Vec<String> = sim
        .tasks
        .values()
        .filter(|e| e.state() == TaskState::Running)
        .map(|e| e.task.id.clone())
        .collect();
    for id in &running {
        sim.set_state(id, TaskState::Failed);
    }
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.step();
    sim.agents();
    sim.now = sim.now.plus(Duration::from_secs(1));
    running
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn a_slot_keeps_its_newest_finished_tasks_up_to_the_limit(
        limit in 0usize..5,
        failures in 0usize..12,
    ) {
        let mut sim = sim_with("  replicas: 2\n  restart: {condition: on-failure, delay: 0s}\n", limit);
        sim.settle();
        let mut failed: Vec<String> = Vec::new();
        for _ in 0..failures {
            failed.extend(fail_all(&mut sim));
            for slot in [1, 2] {
                let ids = in_slot(&sim, slot);
                let live: Vec<&String> = ids.iter().filter(|id| sim.tasks[*id].task.desired_state == DesiredState::Running && !sim.tasks[*id].state().is_terminal()).collect();
                prop_assert_eq!(live.len(), 1, "slot {} restarted: {:?}", slot, ids);
                let finished: Vec<&String> = ids.iter().filter(|id| sim.tasks[*id].state().is_terminal()).collect();
                prop_assert!(finished.len() <= limit, "slot {slot} keeps {} finished tasks, limit {limit}", finished.len());
                // The newest ones: every failed task of the slot newer than a kept one is kept.
                let of_slot: Vec<&String> = failed.iter().filter(|id| id.starts_with(&format!("web.{slot}."))).collect();
                let newest: Vec<&String> = of_slot.iter().rev().take(limit).rev().copied().collect();
                prop_assert_eq!(finished, newest);
            }
        }
    }
}

#[test]
fn a_slot_left_empty_keeps_its_last_task_even_with_no_history() {
    let mut sim = sim_with("  restart: {condition: on-failure}\n", 0);
    sim.settle();
    let id = in_slot(&sim, 1)[0].clone();
    sim.set_state(&id, TaskState::Complete);
    sim.settle();
    assert_eq!(
        in_slot(&sim, 1),
        [id],
        "the completed task stays: nothing replaces it"
    );
}

#[test]
fn max_attempts_in_a_window_count_with_no_history() {
    let spec = "  restart: {condition: on-failure, delay: 0s, maxAttempts: 2, window: 1m}\n";
    let mut sim = sim_with(spec, 0);
    sim.settle();
    for _ in 0..5 {
        fail_all(&mut sim);
    }
    let ids = in_slot(&sim, 1);
    assert_eq!(ids.len(), 3, "the first attempt and 2 restarts: {ids:?}");
    assert!(
        ids.iter()
            .all(|id| sim.tasks[id].state() == TaskState::Failed)
    );
}

#[test]
fn a_slot_removed_by_a_scale_down_loses_its_history() {
    let mut sim = sim_with(
        "  replicas: 3\n  restart: {condition: on-failure, delay: 0s}\n",
        5,
    );
    sim.settle();
    for _ in 0..3 {
        fail_all(&mut sim);
    }
    assert_eq!(in_slot(&sim, 3).len(), 4);
    sim.set_spec(
        service(
            "web",
            "  replicas: 1\n  restart: {condition: on-failure, delay: 0s}\n",
        ),
        2,
    );
    sim.settle();
    assert!(in_slot(&sim, 2).is_empty() && in_slot(&sim, 3).is_empty());
    assert_eq!(
        in_slot(&sim, 1).len(),
        4,
        "the remaining slot keeps its history"
    );
}
