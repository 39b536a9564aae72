//! Unit and property tests of the endpoint table, service addresses and ingress conflicts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::manifest::{Healthcheck, PortMode, RuntimeKind};
use crate::model::{Capacity, NodeConfig, NodeInfo, TaskTemplate, Timestamp};
use crate::units::Dur;

fn node(id: &str, ready: bool) -> Node {
    Node {
        info: NodeInfo {
            id: id.into(),
            hostname: id.into(),
            address: format!("10.0.0.{}", id.len()),
            labels: BTreeMap::new(),
            runtimes: vec![RuntimeKind::Docker],
            capacity: Capacity::default(),
            role: "worker".into(),
            agent_version: "t".into(),
            network_unavailable: None,
            agent_url: None,
            started_at: Timestamp(0),
            instance: String::new(),
        },
        config: NodeConfig::default(),
        ready,
    }
}

fn template(health: bool) -> TaskTemplate {
    TaskTemplate {
        runtime: RuntimeKind::Docker,
        image: Some("x".into()),
        command: vec![],
        env: BTreeMap::new(),
        ports: vec![PortSpec {
            target: 80,
            published: None,
            protocol: Protocol::Tcp,
            mode: PortMode::Ingress,
        }],
        limits: Default::default(),
        reservations: Default::default(),
        mounts: vec![],
        healthcheck: health.then(|| Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Dur::secs(1),
            timeout: Dur::secs(1),
            retries: 1,
            start_period: Dur::secs(0),
        }),
        stop_signal: "SIGTERM".into(),
        stop_grace_period: Dur::secs(1),
        consul: None,
        constraints: vec![],
        secrets: vec![],
        configs: vec![],
    }
}

fn task(id: &str, node: &str, health: bool, desired: DesiredState, orphaned: bool) -> Task {
    let template = template(health);
    let service = ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
    };
    Task {
        desired_state: desired,
        orphaned,
        ..Task::replica(id, service, 1, node, template, Timestamp(0))
    }
}

fn status(id: &str, state: TaskState, health: Option<Health>) -> TaskStatus {
    TaskStatus {
        task_id: id.into(),
        state,
        container_id: None,
        host_ports: vec![PortBinding {
            target: 80,
            published: 32000,
            protocol: Protocol::Tcp,
        }],
        health,
        exit_code: None,
        message: None,
        updated_at: Timestamp(0),
        started_at: None,
        finished_at: None,
    }
}

fn nodes() -> BTreeMap<String, Node> {
    [node("a", true), node("bb", true), node("lost", false)]
        .into_iter()
        .map(|n| (n.info.id.clone(), n))
        .collect()
}

#[test]
fn running_tasks_on_ready_nodes_receive_traffic() {
    let t = task("web.1.x", "a", false, DesiredState::Running, false);
    let s = status("web.1.x", TaskState::Running, None);
    let e = eligible([(&t, Some(&s))], &nodes());
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].address, "10.0.0.1");
    assert_eq!(e[0].host_port(80), Some(32000));
}

#[test]
fn with_a_healthcheck_only_healthy_tasks_receive_traffic() {
    let t = task("web.1.x", "a", true, DesiredState::Running, false);
    let n = nodes();
    for (h, want) in [
        (None, false),
        (Some(Health::Starting), false),
        (Some(Health::Unhealthy), false),
        (Some(Health::Healthy), true),
    ] {
        let s = status("web.1.x", TaskState::Running, h);
        assert_eq!(eligible([(&t, Some(&s))], &n).len() == 1, want, "{h:?}");
    }
}

#[test]
fn stopping_orphaned_and_lost_node_tasks_are_excluded() {
    let n = nodes();
    let s = status("t", TaskState::Running, None);
    let stopping = task("t", "a", false, DesiredState::Shutdown, false);
    assert_eq!(ineligible_reason(&stopping, Some(&s), &n), Some("stopping"));
    let orphan = task("t", "a", false, DesiredState::Running, true);
    assert_eq!(ineligible_reason(&orphan, Some(&s), &n), Some("node lost"));
    let lost = task("t", "lost", false, DesiredState::Running, false);
    assert_eq!(ineligible_reason(&lost, Some(&s), &n), Some("node lost"));
    let gone = task("t", "nowhere", false, DesiredState::Running, false);
    assert_eq!(ineligible_reason(&gone, Some(&s), &n), Some("node lost"));
    let fresh = task("t", "a", false, DesiredState::Running, false);
    assert_eq!(ineligible_reason(&fresh, None, &n), Some("not started"));
    let starting = status("t", TaskState::Starting, None);
    assert_eq!(
        ineligible_reason(&fresh, Some(&starting), &n),
        Some("not running")
    );
}

#[test]
fn service_addresses_are_stable_and_distinct() {
    let r = |n: &str| ServiceRef {
        namespace: "default".into(),
        name: n.into(),
    };
    let a = allocate_address(&r("web"), &BTreeSet::new());
    assert_eq!(a, allocate_address(&r("web"), &BTreeSet::new()));
    assert!(is_service_address(a));
    let taken: BTreeSet<Ipv4Addr> = [a].into();
    let b = allocate_address(&r("web"), &taken);
    assert_ne!(a, b);
    assert!(is_service_address(b));
}

#[test]
fn a_second_service_on_the_same_ingress_port_conflicts() {
    let svc = |name: &str, ports: &str| {
        let text = format!(
            "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  image: x\n  ports: {ports}\n"
        );
        crate::parse(&text, "t.yaml").unwrap().remove(0).service
    };
    let web = svc("web", "[{target: 80, published: 8080}]");
    let api = svc("api", "[{target: 81}, {target: 80, published: 8080}]");
    let host = svc("host", "[{target: 80, published: 8080, mode: host}]");
    let c = ingress_conflicts(&api, [&web, &api]);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, "spec.ports[1].published");
    assert!(c[0].1.contains("default/web"), "{}", c[0].1);
    assert!(ingress_conflicts(&host, [&web]).is_empty());
    assert!(ingress_conflicts(&web, [&web]).is_empty());
}

proptest! {
    /// Whatever the mix of tasks, the table holds exactly the tasks that are wanted running,
    /// running, healthy when checked, and on a ready node.
    #[test]
    fn table_holds_exactly_the_eligible_tasks(
        specs in proptest::collection::vec(
            (0..3usize, any::<bool>(), any::<bool>(), any::<bool>(), 0..4usize, 0..4usize),
            0..12,
        )
    ) {
        let n = nodes();
        let node_ids = ["a", "bb", "lost"];
        let states = [TaskState::Starting, TaskState::Running, TaskState::Failed, TaskState::Shutdown];
        let healths = [None, Some(Health::Starting), Some(Health::Healthy), Some(Health::Unhealthy)];
        let entries: Vec<(Task, TaskStatus)> = specs
            .iter()
            .enumerate()
            .map(|(i, (node, hc, stop, orphan, st, h))| {
                let id = format!("web.{i}.x");
                let desired = if *stop { DesiredState::Shutdown } else { DesiredState::Running };
                (
                    task(&id, node_ids[*node], *hc, desired, *orphan),
                    status(&id, states[*st], healths[*h]),
                )
            })
            .collect();
        let table = eligible(entries.iter().map(|(t, s)| (t, Some(s))), &n);
        let ids: BTreeSet<&str> = table.iter().map(|e| e.task_id.as_str()).collect();
        for (t, s) in &entries {
            let want = t.desired_state == DesiredState::Running
                && !t.orphaned
                && s.state == TaskState::Running
                && (t.template.healthcheck.is_none() || s.health == Some(Health::Healthy))
                && t.node_id != "lost";
            prop_assert_eq!(ids.contains(t.id.as_str()), want, "{:?}", t.id);
        }
    }
}
