//! Scenario tests of reconcile: a small in-memory cluster applies plans and plays the agents.

use std::collections::BTreeMap;

use shoal_core::manifest::Service;
use shoal_core::model::{Availability, DesiredState, Node, Slot, TaskState, TaskStatus, Timestamp};

use super::*;
use crate::testutil::{node, nodes, service};

/// An in-memory cluster: applies plans like the runner and moves tasks like agents.
pub(crate) struct Sim {
    pub(crate) svc: ServiceInput,
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) tasks: BTreeMap<String, TaskEntry>,
    pub(crate) previous: Option<ServiceStatus>,
    pub(crate) now: Timestamp,
    pub(crate) nodes_lost_after: Timestamp,
    pub(crate) node_lost_after: BTreeMap<String, Timestamp>,
    pub(crate) seed: u64,
    pub(crate) endpoints: Option<shoal_core::endpoints::Endpoints>,
    pub(crate) run_request: Option<shoal_core::job::RunRequest>,
    pub(crate) task_history_limit: usize,
}

impl Sim {
    pub(crate) fn new(svc: Service, nodes: BTreeMap<String, Node>) -> Self {
        Sim {
            svc: ServiceInput::Present {
                service: Box::new(svc),
                generation: 1,
            },
            nodes,
            tasks: BTreeMap::new(),
            previous: None,
            now: Timestamp(1_000_000),
            nodes_lost_after: Timestamp(0),
            node_lost_after: BTreeMap::new(),
            seed: 1,
            endpoints: None,
            run_request: None,
            task_history_limit: DEFAULT_TASK_HISTORY_LIMIT,
        }
    }

    pub(crate) fn input(&self) -> ReconcileInput {
        ReconcileInput {
            service_ref: shoal_core::manifest::ServiceRef {
                namespace: "default".into(),
                name: "web".into(),
            },
            service: self.svc.clone(),
            tasks: self.tasks.values().cloned().collect(),
            nodes: std::sync::Arc::new(self.nodes.clone()),
            usage: Default::default(),
            previous: self.previous.clone(),
            endpoints: self.endpoints.clone(),
            taken_addresses: Default::default(),
            now: self.now,
            nodes_lost_after: self.nodes_lost_after,
            node_lost_after: Arc::new(self.node_lost_after.clone()),
            seed: self.seed,
            run_request: self.run_request.clone(),
            task_history_limit: self.task_history_limit,
        }
    }

    /// Reconciles once and applies the plan.
    pub(crate) fn step(&mut self) -> Plan {
        self.seed += 1;
        let plan = reconcile(&self.input());
        self.apply(&plan);
        plan
    }

    pub(crate) fn apply(&mut self, plan: &Plan) {
        for t in &plan.creates {
            self.tasks
                .insert(t.id.clone(), TaskEntry::new(t.clone(), None));
        }
        for r in &plan.stops {
            self.tasks
                .get_mut(&r.task)
                .expect("stopped task exists")
                .task
                .desired_state = DesiredState::Shutdown;
        }
        for r in &plan.orphans {
            let e = self.tasks.get_mut(&r.task).expect("orphaned task exists");
            e.task.orphaned = true;
            e.task.desired_state = DesiredState::Shutdown;
        }
        for r in &plan.deletes {
            self.tasks.remove(&r.task);
        }
        if plan.status.is_some() {
            self.previous = plan.status.clone();
        }
        if plan.delete_status {
            self.previous = None;
        }
        match &plan.endpoints {
            EndpointsChange::Put(e) => self.endpoints = Some((**e).clone()),
            EndpointsChange::Delete => self.endpoints = None,
            EndpointsChange::Keep => {}
        }
    }

    fn endpoint_ids(&self) -> Vec<String> {
        self.endpoints
            .as_ref()
            .map(|e| e.tasks.iter().map(|t| t.task_id.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn set_state(&mut self, id: &str, state: TaskState) {
        let now = self.now;
        let e = self.tasks.get_mut(id).expect("task exists");
        e.status = Some(TaskStatus {
            task_id: id.to_string(),
            state,
            container_id: None,
            host_ports: vec![],
            health: None,
            exit_code: (state == TaskState::Failed).then_some(1),
            message: None,
            updated_at: now,
            started_at: None,
            finished_at: state.is_terminal().then_some(now),
        });
    }

    /// Agents on ready nodes start wanted tasks and stop unwanted ones.
    pub(crate) fn agents(&mut self) {
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let e = &self.tasks[&id];
            if !self.nodes.get(&e.task.node_id).is_some_and(|n| n.ready) || e.state().is_terminal()
            {
                continue;
            }
            match e.task.desired_state {
                DesiredState::Running if e.state() != TaskState::Running => {
                    self.set_state(&id, TaskState::Running)
                }
                DesiredState::Shutdown => self.set_state(&id, TaskState::Shutdown),
                _ => {}
            }
        }
    }

    /// Reconcile and agents until nothing changes (bounded).
    pub(crate) fn settle(&mut self) {
        for _ in 0..50 {
            let plan = self.step();
            if plan.is_quiet() && plan.requeue_after.is_none() && self.all_settled() {
                return;
            }
            self.agents();
            if let Some(d) = plan.requeue_after {
                self.now = self.now.plus(d);
            }
        }
        panic!(
            "did not settle: {:#?}",
            self.tasks
                .values()
                .map(|e| (&e.task.id, e.state()))
                .collect::<Vec<_>>()
        );
    }

    fn all_settled(&self) -> bool {
        self.tasks.values().all(|e| {
            let ready = self.nodes.get(&e.task.node_id).is_some_and(|n| n.ready);
            !ready
                || e.state().is_terminal()
                || (e.task.desired_state == DesiredState::Running
                    && e.state() == TaskState::Running)
        })
    }

    /// Running, wanted tasks per node.
    pub(crate) fn running(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.tasks.values() {
            if e.task.desired_state == DesiredState::Running
                && e.state() == TaskState::Running
                && !e.task.orphaned
            {
                *out.entry(e.task.node_id.clone()).or_default() += 1;
            }
        }
        out
    }

    pub(crate) fn running_total(&self) -> usize {
        self.running().values().sum()
    }

    pub(crate) fn status(&self) -> &ServiceStatus {
        self.previous.as_ref().expect("status written")
    }

    pub(crate) fn set_spec(&mut self, svc: Service, generation: i64) {
        self.svc = ServiceInput::Present {
            service: Box::new(svc),
            generation,
        };
    }
}

fn three_nodes() -> BTreeMap<String, Node> {
    nodes(vec![node("n1", &[]), node("n2", &[]), node("n3", &[])])
}

#[test]
fn three_replicas_spread_one_per_node() {
    let mut sim = Sim::new(service("web", "  replicas: 3\n"), three_nodes());
    sim.settle();
    assert_eq!(
        sim.running(),
        BTreeMap::from([("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 1)])
    );
    let st = sim.status();
    assert_eq!((st.desired, st.running, st.updated), (3, 3, 3));
    assert!(
        sim.tasks.keys().all(|id| id.starts_with("web.")),
        "{:?}",
        sim.tasks.keys()
    );
}

#[test]
fn scale_up_then_down_stops_the_highest_slots() {
    let mut sim = Sim::new(service("web", "  replicas: 3\n"), three_nodes());
    sim.settle();
    sim.set_spec(service("web", "  replicas: 5\n"), 2);
    sim.settle();
    assert_eq!(sim.running_total(), 5);
    sim.set_spec(service("web", "  replicas: 2\n"), 3);
    sim.settle();
    assert_eq!(sim.running_total(), 2);
    let mut slots: Vec<Slot> = sim
        .tasks
        .values()
        .filter(|e| e.task.desired_state == DesiredState::Running)
        .map(|e| e.task.slot.clone())
        .collect();
    slots.sort();
    assert_eq!(slots, vec![Slot::Replica(1), Slot::Replica(2)]);
    // Finished tasks of removed slots are cleaned up.
    assert_eq!(sim.tasks.len(), 2);
}

#[test]
fn failed_task_is_replaced_after_the_delay_with_the_next_attempt() {
    let mut sim = Sim::new(service("web", "  restart: {delay: 5s}\n"), three_nodes());
    sim.settle();
    let first = sim.tasks.keys().next().unwrap().clone();
    sim.set_state(&first, TaskState::Failed);
    let plan = sim.step();
    assert!(plan.creates.is_empty(), "not before the delay");
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(5)));
    sim.now = sim.now.plus(std::time::Duration::from_secs(5));
    let plan = sim.step();
    assert_eq!(plan.creates.len(), 1);
    assert_eq!(plan.creates[0].attempt, 1);
    assert_eq!(plan.creates[0].slot, Slot::Replica(1));
    assert!(
        plan.deletes.iter().any(|r| r.task == first) || plan.stops.iter().any(|r| r.task == first),
        "the failed task no longer wants to run"
    );
}

#[test]
fn restart_condition_none_leaves_the_slot_empty() {
    let mut sim = Sim::new(
        service("web", "  restart: {condition: none}\n"),
        three_nodes(),
    );
    sim.settle();
    let first = sim.tasks.keys().next().unwrap().clone();
    sim.set_state(&first, TaskState::Failed);
    sim.now = sim.now.plus(std::time::Duration::from_secs(60));
    let plan = sim.step();
    assert!(plan.creates.is_empty());
    assert_eq!(plan.requeue_after, None);
    assert_eq!(sim.status().running, 0);
}

#[test]
fn on_failure_does_not_restart_completed_tasks_and_max_attempts_stops_retries() {
    let mut sim = Sim::new(
        service(
            "job",
            "  restart: {condition: on-failure, delay: 0s, maxAttempts: 2}\n",
        ),
        three_nodes(),
    );
    sim.settle();
    for expected in [1, 2] {
        let id = sim
            .tasks
            .values()
            .find(|e| e.task.desired_state == DesiredState::Running)
            .unwrap()
            .task
            .id
            .clone();
        sim.set_state(&id, TaskState::Failed);
        let plan = sim.step();
        assert_eq!(plan.creates.len(), 1);
        assert_eq!(plan.creates[0].attempt, expected);
        sim.agents();
    }
    let id = sim
        .tasks
        .values()
        .find(|e| e.task.desired_state == DesiredState::Running && !e.state().is_terminal())
        .unwrap()
        .task
        .id
        .clone();
    sim.set_state(&id, TaskState::Failed);
    assert!(sim.step().creates.is_empty(), "attempts exhausted");

    let mut sim = Sim::new(
        service("job", "  restart: {condition: on-failure, delay: 0s}\n"),
        three_nodes(),
    );
    sim.settle();
    let id = sim.tasks.keys().next().unwrap().clone();
    sim.set_state(&id, TaskState::Complete);
    assert!(
        sim.step().creates.is_empty(),
        "completed tasks are not restarted"
    );
}

#[test]
fn node_down_orphans_and_replaces_then_returning_node_stops_stale_tasks() {
    let mut sim = Sim::new(service("web", "  replicas: 3\n"), three_nodes());
    sim.settle();
    sim.nodes.get_mut("n1").unwrap().ready = false;
    let plan = sim.step();
    assert_eq!(plan.orphans.len(), 1);
    assert_eq!(plan.creates.len(), 1);
    assert_ne!(plan.creates[0].node_id, "n1");
    sim.settle();
    assert_eq!(sim.running_total(), 3);
    assert!(!sim.running().contains_key("n1"));
    let stale: Vec<_> = sim
        .tasks
        .values()
        .filter(|e| e.task.node_id == "n1")
        .collect();
    assert_eq!(stale.len(), 1);
    assert!(stale[0].task.orphaned && stale[0].task.desired_state == DesiredState::Shutdown);
    // The node returns: its agent sees desired shutdown and stops the task, which stays as
    // its slot's history.
    sim.nodes.get_mut("n1").unwrap().ready = true;
    sim.agents();
    sim.settle();
    let left: Vec<_> = sim
        .tasks
        .values()
        .filter(|e| e.task.node_id == "n1")
        .map(|e| (&e.task, e.state()))
        .collect();
    assert!(
        left.iter()
            .all(|(t, s)| *s == TaskState::Shutdown && t.desired_state == DesiredState::Shutdown),
        "{left:#?}"
    );
    assert_eq!(sim.running_total(), 3);
}

#[test]
fn drain_moves_tasks_off_and_pause_keeps_them() {
    let mut sim = Sim::new(service("web", "  replicas: 3\n"), three_nodes());
    sim.settle();
    sim.nodes.get_mut("n2").unwrap().config.availability = Availability::Pause;
    sim.settle();
    assert_eq!(sim.running().get("n2"), Some(&1));
    sim.nodes.get_mut("n2").unwrap().config.availability = Availability::Drain;
    sim.settle();
    assert_eq!(sim.running().get("n2"), None);
    assert_eq!(sim.running_total(), 3);
}

#[test]
fn unschedulable_is_explained_and_recorded_as_an_event() {
    let ns = nodes(vec![
        node("n1", &[("storage", "hdd")]),
        node("n2", &[("storage", "hdd")]),
        node("n3", &[("storage", "hdd")]),
        node("n4", &[]),
        node("n5", &[]),
    ]);
    let mut sim = Sim::new(
        service(
            "db",
            "  placement:\n    constraints: [\"node.labels.storage == ssd\"]\n",
        ),
        ns,
    );
    sim.step();
    let st = sim.status();
    assert_eq!(
        st.unschedulable.as_deref(),
        Some("0/5 nodes available: 5 not matching node.labels.storage==ssd")
    );
    assert!(st.events.iter().any(|e| e.reason == "Unschedulable"));
    // Nothing changes on the next pass: the status is identical, so it is not rewritten.
    let before = sim.previous.clone();
    sim.now = sim.now.plus(std::time::Duration::from_secs(10));
    sim.step();
    assert_eq!(sim.previous, before);
}

#[test]
fn invalid_manifest_sets_the_error_and_leaves_tasks_alone() {
    let mut sim = Sim::new(service("web", "  replicas: 2\n"), three_nodes());
    sim.settle();
    sim.svc = ServiceInput::Invalid {
        error: "web.yaml:3:5: unknown field `replica`".into(),
        generation: 7,
    };
    let plan = sim.step();
    assert!(plan.is_quiet());
    let st = sim.status();
    assert_eq!(
        st.error.as_deref(),
        Some("web.yaml:3:5: unknown field `replica`")
    );
    assert_eq!(st.observed_generation, 7);
    assert_eq!(st.running, 2);
}

#[test]
fn deleted_service_stops_then_deletes_everything() {
    let mut sim = Sim::new(service("web", "  replicas: 2\n"), three_nodes());
    sim.settle();
    sim.svc = ServiceInput::Deleted;
    let plan = sim.step();
    assert_eq!(plan.stops.len(), 2);
    assert!(!plan.delete_status);
    sim.agents();
    let plan = sim.step();
    assert_eq!(plan.deletes.len(), 2);
    assert!(plan.delete_status);
    assert!(sim.tasks.is_empty());
}

#[test]
fn global_service_follows_eligible_nodes() {
    let mut ns = three_nodes();
    ns.get_mut("n3")
        .unwrap()
        .info
        .labels
        .insert("role".into(), "edge".into());
    let mut sim = Sim::new(
        service(
            "agent",
            "  mode: global\n  placement:\n    constraints: [\"node.labels.role != edge\"]\n",
        ),
        ns,
    );
    sim.settle();
    assert_eq!(
        sim.running(),
        BTreeMap::from([("n1".into(), 1), ("n2".into(), 1)])
    );
    assert!(
        sim.tasks
            .values()
            .all(|e| matches!(&e.task.slot, Slot::Node(n) if *n == e.task.node_id))
    );
    sim.nodes.insert("n4".into(), node("n4", &[]));
    sim.settle();
    assert_eq!(sim.running_total(), 3);
    sim.nodes.get_mut("n1").unwrap().config.availability = Availability::Drain;
    sim.settle();
    assert_eq!(
        sim.running(),
        BTreeMap::from([("n2".into(), 1), ("n4".into(), 1)])
    );
    assert_eq!(sim.status().desired, 2);
}

#[test]
fn template_change_replaces_one_slot_at_a_time_and_keeps_the_previous_spec() {
    let mut sim = Sim::new(service("web", "  replicas: 3\n"), three_nodes());
    sim.settle();
    let mut v2 = service("web", "  replicas: 3\n");
    v2.spec.image = Some("nginx:2".into());
    sim.set_spec(v2, 2);
    let plan = sim.step();
    assert_eq!(plan.stops.len(), 1, "parallelism 1");
    assert!(plan.creates.is_empty(), "stop-first");
    let st = sim.status();
    assert_eq!(
        st.previous_spec.as_ref().and_then(|s| s.image.as_deref()),
        Some("nginx")
    );
    assert_eq!(
        st.rollout.as_ref().map(|r| r.state),
        Some(shoal_core::model::RolloutState::Updating)
    );
    // At no point do more than one slot's tasks sit off the old template without running.
    for _ in 0..30 {
        sim.agents();
        sim.step();
        let running_old_or_new = sim.running_total();
        assert!(
            running_old_or_new >= 2,
            "at most one slot replaced at a time"
        );
    }
    sim.settle();
    let st = sim.status();
    assert_eq!((st.running, st.updated), (3, 3));
    assert_eq!(
        st.rollout.as_ref().map(|r| r.state),
        Some(shoal_core::model::RolloutState::Completed)
    );
    assert!(
        sim.tasks
            .values()
            .filter(|e| !e.state().is_terminal())
            .all(|e| e.task.template.image.as_deref() == Some("nginx:2"))
    );
    // The replaced tasks stay as their slots' history.
    assert_eq!(sim.tasks.len(), 6);
}

#[test]
fn thousands_of_replicas_place_in_one_plan_and_then_stay_put() {
    let ns = nodes((0..500).map(|i| node(&format!("n{i:03}"), &[])).collect());
    let mut sim = Sim::new(service("web", "  replicas: 10000\n"), ns);
    let plan = sim.step();
    assert_eq!(plan.creates.len(), 10_000);
    assert!(sim.status().unschedulable.is_none());
    sim.agents();
    let plan = sim.step();
    assert!(plan.is_quiet(), "a converged service needs no writes");
    assert!(sim.running().values().all(|&c| c == 20), "20 per node");
}

#[test]
fn a_global_task_orphaned_on_a_returning_node_stops_before_its_replacement_starts() {
    let mut sim = Sim::new(
        service(
            "edge",
            "  mode: global\n  ports: [{target: 80, published: 80, mode: host}]\n",
        ),
        nodes(vec![node("n1", &[])]),
    );
    sim.settle();
    let old = sim.tasks.keys().next().unwrap().clone();
    sim.nodes.get_mut("n1").unwrap().ready = false;
    let plan = sim.step();
    assert_eq!(plan.orphans.len(), 1);
    assert!(
        plan.creates.is_empty(),
        "a global task is not moved to another node"
    );
    // The node returns with the old task still running: nothing new until it has stopped.
    sim.nodes.get_mut("n1").unwrap().ready = true;
    let plan = sim.step();
    assert!(plan.creates.is_empty(), "the old task still holds port 80");
    sim.agents();
    assert_eq!(sim.tasks[&old].state(), TaskState::Shutdown);
    let plan = sim.step();
    assert_eq!(plan.creates.len(), 1);
    sim.settle();
    assert_eq!(sim.running_total(), 1);
}

#[test]
fn a_new_leader_gives_nodes_without_a_record_one_ttl_before_orphaning_their_tasks() {
    for mode in ["  replicas: 3\n", "  mode: global\n"] {
        let mut sim = Sim::new(service("web", mode), three_nodes());
        sim.settle();
        // A new leader lists before n1 has registered again: within the grace nothing moves.
        sim.nodes.get_mut("n1").unwrap().ready = false;
        sim.nodes_lost_after = sim.now.plus(std::time::Duration::from_secs(5));
        let plan = sim.step();
        assert!(
            plan.orphans.is_empty() && plan.stops.is_empty() && plan.creates.is_empty(),
            "{mode}: nothing changes within the grace: {plan:?}"
        );
        assert_eq!(
            plan.requeue_after,
            Some(std::time::Duration::from_secs(5)),
            "{mode}: looked at again when the grace ends"
        );
        // n1 registers within the grace: its tasks are kept.
        sim.nodes.get_mut("n1").unwrap().ready = true;
        assert!(sim.step().is_quiet(), "{mode}");
        // Had it not come back, the grace ends and the node is lost as before.
        sim.nodes.get_mut("n1").unwrap().ready = false;
        sim.now = sim.nodes_lost_after;
        assert_eq!(sim.step().orphans.len(), 1, "{mode}");
    }
}

#[test]
fn endpoints_follow_running_tasks_and_drop_stopped_ones_in_the_stopping_plan() {
    let mut sim = Sim::new(
        service("web", "  replicas: 3\n"),
        nodes(vec![node("n1", &[]), node("n2", &[])]),
    );
    sim.settle();
    assert_eq!(sim.endpoint_ids().len(), 3);
    let address = sim.endpoints.as_ref().unwrap().address;
    // Scale in: the plan that stops a task also takes it out of the endpoints.
    sim.svc = ServiceInput::Present {
        service: Box::new(service("web", "  replicas: 1\n")),
        generation: 2,
    };
    let plan = sim.step();
    assert_eq!(plan.stops.len(), 2);
    let left = sim.endpoint_ids();
    assert_eq!(left.len(), 1);
    assert!(plan.stops.iter().all(|r| !left.contains(&r.task)));
    sim.settle();
    assert_eq!(
        sim.endpoints.as_ref().unwrap().address,
        address,
        "address kept"
    );
    // Node loss: its task leaves the endpoints at once.
    let on = sim
        .tasks
        .values()
        .find(|e| e.wants_running())
        .unwrap()
        .task
        .node_id
        .clone();
    sim.nodes.get_mut(&on).unwrap().ready = false;
    sim.step();
    assert!(
        sim.endpoint_ids()
            .iter()
            .all(|id| !sim.tasks[id].task.node_id.eq(&on))
    );
    // Deleting the service deletes its endpoints.
    sim.svc = ServiceInput::Deleted;
    sim.step();
    assert!(sim.endpoints.is_none());
}

#[test]
fn a_node_record_that_disappears_keeps_its_tasks_for_the_node_grace() {
    for mode in ["  replicas: 3\n", "  mode: global\n"] {
        let mut sim = Sim::new(service("web", mode), three_nodes());
        sim.settle();
        // In steady state n1's record goes (its Consul agent restarted): within the grace
        // nothing moves, and the service is looked at again when it ends.
        sim.nodes.get_mut("n1").unwrap().ready = false;
        let end = sim.now.plus(std::time::Duration::from_secs(10));
        sim.node_lost_after.insert("n1".into(), end);
        let plan = sim.step();
        assert!(
            plan.orphans.is_empty() && plan.stops.is_empty() && plan.creates.is_empty(),
            "{mode}: nothing changes within the grace: {plan:?}"
        );
        assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(10)));
        // The record comes back within the grace: the same node, nothing restarted.
        sim.nodes.get_mut("n1").unwrap().ready = true;
        assert!(sim.step().is_quiet(), "{mode}");
        // Had it stayed away, the node is lost when the grace ends.
        sim.nodes.get_mut("n1").unwrap().ready = false;
        sim.now = end;
        assert_eq!(sim.step().orphans.len(), 1, "{mode}");
    }
}

#[test]
fn a_node_seen_losing_its_record_is_lost_at_once_even_within_a_new_leaders_grace() {
    let mut sim = Sim::new(service("web", "  replicas: 3\n"), three_nodes());
    sim.settle();
    // A new leader's grace for nodes without a record is running, but n1's lease expiry was
    // seen (etcd: no record grace): its task is replaced now, not when the term's grace ends.
    sim.nodes_lost_after = sim.now.plus(std::time::Duration::from_secs(5));
    sim.nodes.get_mut("n1").unwrap().ready = false;
    sim.node_lost_after.insert("n1".into(), sim.now);
    let plan = sim.step();
    assert_eq!(plan.orphans.len(), 1, "{plan:?}");
    assert_eq!(plan.creates.len(), 1, "{plan:?}");
}
