//! Property tests: for random clusters and task histories, plans keep one wanted task per
//! slot, never exceed the replica count, and repeated reconciles converge.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use shoal_core::model::{
    Availability, DesiredState, Slot, Task, TaskState, TaskTemplate, Timestamp,
};

use super::tests::Sim;
use super::*;
use crate::testutil::{node, service};

#[derive(Debug, Clone)]
struct NodeGen {
    ready: bool,
    availability: Availability,
    zone: u8,
}

#[derive(Debug, Clone)]
struct TaskGen {
    slot: u64,
    node: usize,
    running_desired: bool,
    state: Option<TaskState>,
    old_template: bool,
    orphaned: bool,
    attempt: u64,
    age_ms: u64,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        prop::bool::weighted(0.8),
        prop_oneof![4 => Just(Availability::Active), 1 => Just(Availability::Pause), 1 => Just(Availability::Drain)],
        0u8..3,
    )
        .prop_map(|(ready, availability, zone)| NodeGen { ready, availability, zone })
}

fn task_gen() -> impl Strategy<Value = TaskGen> {
    (
        1u64..10,
        0usize..8,
        any::<bool>(),
        prop::option::of(prop::sample::select(TaskState::ALL.to_vec())),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
        0u64..3,
        0u64..20_000,
    )
        .prop_map(
            |(slot, node, running_desired, state, old_template, orphaned, attempt, age_ms)| {
                TaskGen {
                    slot,
                    node,
                    running_desired,
                    state,
                    old_template,
                    orphaned,
                    attempt,
                    age_ms,
                }
            },
        )
}

fn build(
    nodes_g: &[NodeGen],
    tasks_g: &[TaskGen],
    replicas: u64,
    restart: &str,
    spread: bool,
) -> Sim {
    let mut nodes = BTreeMap::new();
    for (i, g) in nodes_g.iter().enumerate() {
        let zone = format!("z{}", g.zone);
        let mut n = node(&format!("n{i}"), &[("zone", zone.as_str())]);
        n.ready = g.ready;
        n.config.availability = g.availability;
        nodes.insert(n.info.id.clone(), n);
    }
    let prefs = if spread {
        "  placement:\n    preferences: [{spread: node.labels.zone}]\n"
    } else {
        ""
    };
    let svc = service(
        "web",
        &format!("  replicas: {replicas}\n  restart: {restart}\n{prefs}"),
    );
    let mut old = svc.spec.clone();
    old.image = Some("nginx:old".into());
    let mut sim = Sim::new(svc.clone(), nodes);
    for (i, g) in tasks_g.iter().enumerate() {
        let template = TaskTemplate::from_spec(if g.old_template { &old } else { &svc.spec });
        let id = format!("web.{}.t{i}", g.slot);
        let created_at = Timestamp(sim.now.millis() - g.age_ms);
        let node = format!("n{}", g.node);
        let task = Task {
            desired_state: if g.running_desired {
                DesiredState::Running
            } else {
                DesiredState::Shutdown
            },
            attempt: g.attempt,
            orphaned: g.orphaned,
            ..Task::replica(id.clone(), svc.id(), g.slot, node, template, created_at)
        };
        sim.tasks.insert(id.clone(), TaskEntry::new(task, None));
        if let Some(state) = g.state {
            sim.set_state(&id, state);
        }
    }
    sim
}

/// Slots with a task that is wanted running after the plan.
fn wanted_per_slot(sim: &Sim) -> BTreeMap<Slot, usize> {
    let mut m = BTreeMap::new();
    for e in sim.tasks.values() {
        if e.task.desired_state == DesiredState::Running && !e.task.orphaned {
            *m.entry(e.task.slot.clone()).or_default() += 1;
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn a_plan_keeps_one_wanted_task_per_slot_within_replicas(
        nodes_g in prop::collection::vec(node_gen(), 0..6),
        tasks_g in prop::collection::vec(task_gen(), 0..14),
        replicas in 0u64..8,
        restart in prop::sample::select(vec![
            "{condition: any, delay: 0s}",
            "{condition: any, delay: 5s}",
            "{condition: on-failure, delay: 1s, maxAttempts: 2}",
            "{condition: none}",
            "{condition: any, delay: 1s, maxAttempts: 1, window: 10s}",
        ]),
    ) {
        let mut sim = build(&nodes_g, &tasks_g, replicas, restart, false);
        for _ in 0..3 {
            let plan = sim.step();
            for t in &plan.creates {
                let n = &sim.nodes[&t.node_id];
                prop_assert!(n.ready && n.config.availability == Availability::Active, "placed on an ineligible node");
            }
            for (slot, count) in wanted_per_slot(&sim) {
                prop_assert!(count <= 1, "slot {slot} has {count} wanted tasks");
                match slot {
                    Slot::Replica(s) => prop_assert!(s >= 1 && s <= replicas, "slot {s} beyond {replicas} replicas"),
                    Slot::Node(_) => prop_assert!(false, "node slot in a replicated service"),
                }
            }
            sim.agents();
            sim.now = sim.now.plus(Duration::from_secs(2));
        }
    }

    #[test]
    fn repeated_plans_converge_to_replicas_running_on_eligible_nodes(
        nodes_g in prop::collection::vec(node_gen(), 1..6),
        tasks_g in prop::collection::vec(task_gen(), 0..14),
        replicas in 0u64..8,
        spread in any::<bool>(),
    ) {
        let mut sim = build(&nodes_g, &tasks_g, replicas, "{condition: any, delay: 3s}", spread);
        sim.settle();
        let running = sim.running();
        for node in running.keys() {
            let n = &sim.nodes[node];
            prop_assert!(n.ready && n.config.availability != Availability::Drain, "task running on {node}");
        }
        let total: usize = running.values().sum();
        let any_active = sim.nodes.values().any(|n| n.ready && n.config.availability == Availability::Active);
        if any_active {
            prop_assert_eq!(total as u64, replicas);
            prop_assert_eq!(sim.status().running, replicas);
            prop_assert!(sim.status().unschedulable.is_none());
        } else {
            prop_assert!(total as u64 <= replicas);
            if (total as u64) < replicas {
                prop_assert!(sim.status().unschedulable.is_some());
            }
        }
        for (slot, count) in wanted_per_slot(&sim) {
            prop_assert!(count <= 1, "slot {slot} has {count} wanted tasks");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn global_services_converge_to_one_task_per_eligible_node(
        nodes_g in prop::collection::vec(node_gen(), 1..7),
        flips in prop::collection::vec((0usize..7, node_gen()), 0..4),
    ) {
        let mut nodes = BTreeMap::new();
        for (i, g) in nodes_g.iter().enumerate() {
            let zone = format!("z{}", g.zone);
            let mut n = node(&format!("n{i}"), &[("zone", zone.as_str())]);
            n.ready = g.ready;
            n.config.availability = g.availability;
            nodes.insert(n.info.id.clone(), n);
        }
        let svc = service("agent", "  mode: global\n  restart: {delay: 1s}\n  placement:\n    constraints: [\"node.labels.zone != z2\"]\n");
        let mut sim = Sim::new(svc, nodes);
        sim.settle();
        // Nodes change (go down, come back, get drained or paused), then things settle again.
        for (i, g) in flips {
            if let Some(n) = sim.nodes.get_mut(&format!("n{i}")) {
                n.ready = g.ready;
                n.config.availability = g.availability;
            }
            sim.settle();
        }
        let running = sim.running();
        for (id, n) in &sim.nodes {
            let eligible = n.ready && n.info.labels.get("zone").map(String::as_str) != Some("z2");
            let got = running.get(id).copied().unwrap_or(0);
            match n.config.availability {
                Availability::Active if eligible => prop_assert_eq!(got, 1, "node {}", id),
                Availability::Pause => prop_assert!(got <= 1, "node {id}"),
                _ => prop_assert_eq!(got, 0, "node {}", id),
            }
        }
        for (slot, count) in wanted_per_slot(&sim) {
            prop_assert!(count <= 1, "slot {slot} has {count} wanted tasks");
        }
    }
}
