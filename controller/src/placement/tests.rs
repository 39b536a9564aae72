//! Unit tests of the filters, ranking and explanations.

use std::collections::BTreeMap;

use shoal_core::manifest::RuntimeKind;
use shoal_core::model::Availability;
use shoal_core::units::ByteSize;

use super::*;
use crate::testutil::{node, nodes, service};

fn place_n(p: &mut Placer<'_>, n: usize) -> Vec<String> {
    (0..n).map(|_| p.place().expect("placed")).collect()
}

/// Usage with TCP port `port` bound on `node`.
fn tcp_port_in_use(node: &str, port: u16) -> Usage {
    let mut u = NodeUsage::default();
    u.ports
        .insert((port, shoal_core::manifest::Protocol::Tcp), 1);
    BTreeMap::from([(node.to_string(), u)]).into()
}

#[test]
fn spread_puts_one_task_per_node_then_wraps() {
    let ns = nodes(vec![node("n1", &[]), node("n2", &[]), node("n3", &[])]);
    let svc = service("web", "  replicas: 4\n");
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    assert_eq!(place_n(&mut p, 4), ["n1", "n2", "n3", "n1"]);
}

#[test]
fn spread_prefers_nodes_with_fewer_tasks_overall() {
    let ns = nodes(vec![node("n1", &[]), node("n2", &[])]);
    let svc = service("web", "");
    let mut usage = BTreeMap::new();
    usage.insert(
        "n1".to_string(),
        NodeUsage {
            tasks: 3,
            ..Default::default()
        },
    );
    let mut p = Placer::new(&svc.spec, &ns, &usage.into()).unwrap();
    assert_eq!(p.place().unwrap(), "n2");
}

#[test]
fn spread_preference_balances_zones_before_nodes() {
    let ns = nodes(vec![
        node("a1", &[("zone", "a")]),
        node("a2", &[("zone", "a")]),
        node("a3", &[("zone", "a")]),
        node("b1", &[("zone", "b")]),
    ]);
    let svc = service(
        "web",
        "  placement:\n    preferences: [{spread: node.labels.zone}]\n",
    );
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    let placed = place_n(&mut p, 4);
    let in_b = placed.iter().filter(|n| n.as_str() == "b1").count();
    assert_eq!(in_b, 2, "half the tasks go to zone b: {placed:?}");
}

#[test]
fn binpack_fills_the_busiest_node_that_fits() {
    let ns = nodes(vec![node("n1", &[]), node("n2", &[])]);
    let svc = service(
        "web",
        "  resources: {reservations: {memory: 3Gi}}\n  placement: {strategy: binpack}\n",
    );
    let mut usage = BTreeMap::new();
    usage.insert(
        "n2".to_string(),
        NodeUsage {
            memory: 1 << 30,
            tasks: 1,
            ..Default::default()
        },
    );
    let mut p = Placer::new(&svc.spec, &ns, &usage.into()).unwrap();
    // n2 has 1Gi used: it takes two 3Gi tasks (7Gi of 8Gi), then n1 takes the rest.
    assert_eq!(place_n(&mut p, 4), ["n2", "n2", "n1", "n1"]);
}

#[test]
fn max_replicas_per_node_is_a_hard_limit() {
    let ns = nodes(vec![node("n1", &[]), node("n2", &[])]);
    let svc = service(
        "web",
        "  replicas: 5\n  placement: {maxReplicasPerNode: 2}\n",
    );
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    place_n(&mut p, 4);
    let e = p.place().unwrap_err();
    assert_eq!(
        e.to_string(),
        "0/2 nodes available: 2 max replicas per node (2) reached"
    );
}

#[test]
fn published_port_conflicts_refuse_the_node() {
    let ns = nodes(vec![node("n1", &[]), node("n2", &[])]);
    let svc = service(
        "web",
        "  ports: [{target: 80, published: 8080, mode: host}]\n",
    );
    let usage = tcp_port_in_use("n1", 8080);
    let mut p = Placer::new(&svc.spec, &ns, &usage).unwrap();
    assert_eq!(p.place().unwrap(), "n2");
    assert_eq!(
        p.place().unwrap_err().to_string(),
        "0/2 nodes available: 2 host port 8080/tcp in use"
    );
}

#[test]
fn ingress_ports_reserve_nothing_on_a_node() {
    let ns = nodes(vec![node("n1", &[])]);
    let svc = service(
        "web",
        "  replicas: 2\n  ports: [{target: 80, published: 8080}]\n",
    );
    let usage = tcp_port_in_use("n1", 8080);
    let mut p = Placer::new(&svc.spec, &ns, &usage).unwrap();
    assert_eq!(p.place().unwrap(), "n1");
    assert_eq!(p.place().unwrap(), "n1");
}

#[test]
fn udp_and_tcp_on_the_same_port_do_not_conflict() {
    let ns = nodes(vec![node("n1", &[])]);
    let svc = service(
        "dns",
        "  ports: [{target: 53, published: 53, protocol: udp, mode: host}]\n",
    );
    let usage = tcp_port_in_use("n1", 53);
    let mut p = Placer::new(&svc.spec, &ns, &usage).unwrap();
    assert_eq!(p.place().unwrap(), "n1");
}

#[test]
fn each_filter_explains_itself() {
    let mut down = node("down", &[]);
    down.ready = false;
    let mut paused = node("paused", &[]);
    paused.config.availability = Availability::Pause;
    let mut drained = node("drained", &[]);
    drained.config.availability = Availability::Drain;
    let mut process_only = node("proc", &[("storage", "ssd")]);
    process_only.info.runtimes = vec![RuntimeKind::Process];
    let hdd = node("hdd", &[("storage", "hdd")]);
    let mut small = node("small", &[("storage", "ssd")]);
    small.info.capacity.memory = ByteSize(32 << 20);
    let mut slow = node("slow", &[("storage", "ssd")]);
    slow.info.capacity.cpus = 0.1;
    let ns = nodes(vec![down, paused, drained, process_only, hdd, small, slow]);
    let svc = service(
        "db",
        "  resources: {reservations: {cpus: 0.5, memory: 64Mi}}\n  placement:\n    constraints: [\"node.labels.storage == ssd\"]\n",
    );
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    assert_eq!(
        p.place().unwrap_err().to_string(),
        "0/7 nodes available: 1 drained, 1 insufficient cpu, 1 insufficient memory, \
         1 not matching node.labels.storage==ssd, 1 not ready, 1 paused, 1 without runtime docker"
    );
}

#[test]
fn explanation_sorts_by_count_then_name() {
    let ns = nodes(vec![
        node("n1", &[("storage", "hdd")]),
        node("n2", &[("storage", "hdd")]),
        node("n3", &[("storage", "hdd")]),
        {
            let mut n = node("n4", &[("storage", "ssd")]);
            n.info.capacity.memory = ByteSize(1 << 20);
            n
        },
        {
            let mut n = node("n5", &[("storage", "ssd")]);
            n.info.capacity.memory = ByteSize(1 << 20);
            n
        },
    ]);
    let svc = service(
        "db",
        "  resources: {reservations: {memory: 64Mi}}\n  placement:\n    constraints: [\"node.labels.storage==ssd\"]\n",
    );
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    assert_eq!(
        p.place().unwrap_err().to_string(),
        "0/5 nodes available: 3 not matching node.labels.storage==ssd, 2 insufficient memory"
    );
}

#[test]
fn resources_already_reserved_count_against_capacity() {
    let ns = nodes(vec![node("n1", &[])]);
    let svc = service("web", "  resources: {reservations: {cpus: 1.5}}\n");
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    assert_eq!(place_n(&mut p, 2), ["n1", "n1"]);
    assert_eq!(
        p.place().unwrap_err().to_string(),
        "0/1 nodes available: 1 insufficient cpu"
    );
}

#[test]
fn existing_tasks_of_the_service_count_for_spread() {
    let ns = nodes(vec![node("n1", &[]), node("n2", &[])]);
    let svc = service("web", "");
    let t = shoal_core::model::TaskTemplate::from_spec(&svc.spec);
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    p.account("n1", &t, true, true);
    assert_eq!(p.place().unwrap(), "n2");
}

#[test]
fn no_nodes_is_explained() {
    let ns = BTreeMap::new();
    let svc = service("web", "");
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    assert_eq!(
        p.place().unwrap_err().to_string(),
        "0/0 nodes available: no nodes registered"
    );
}

#[test]
fn many_tasks_on_many_nodes_spread_evenly() {
    let ns = nodes((0..100).map(|i| node(&format!("n{i:03}"), &[])).collect());
    let svc = service("web", "");
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for n in place_n(&mut p, 1000) {
        *per.entry(n).or_default() += 1;
    }
    assert!(per.values().all(|&c| c == 10), "{per:?}");
}

#[test]
fn a_large_batch_is_placed_evenly_with_accounting_as_it_goes() {
    let ns = nodes(
        (0..1000)
            .map(|i| node(&format!("n{i:04}"), &[("zone", ["a", "b", "c"][i % 3])]))
            .collect(),
    );
    let svc = service(
        "web",
        "  resources: {reservations: {cpus: 0.1, memory: 64Mi}}\n  placement:\n    preferences: [{spread: node.labels.zone}]\n",
    );
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for n in place_n(&mut p, 20_000) {
        *per.entry(n).or_default() += 1;
    }
    assert_eq!(per.len(), 1000);
    // Zones get equal shares first (a has one node more), then nodes within a zone.
    assert!(per.values().all(|&c| (19..=21).contains(&c)), "even spread");
    let zone = |n: &str| n[1..].parse::<usize>().unwrap() % 3;
    let mut zones = [0usize; 3];
    for (n, c) in &per {
        zones[zone(n)] += c;
    }
    assert!(
        zones.iter().max().unwrap() - zones.iter().min().unwrap() <= 1,
        "{zones:?}"
    );
}

#[test]
fn a_paused_node_keeps_its_tasks_and_a_drained_down_or_no_longer_matching_one_does_not() {
    let ssd = [("storage", "ssd")];
    let mut paused = node("paused", &ssd);
    paused.config.availability = Availability::Pause;
    let mut drained = node("drained", &ssd);
    drained.config.availability = Availability::Drain;
    let mut down = node("down", &ssd);
    down.ready = false;
    let ns = nodes(vec![
        paused,
        drained,
        down,
        node("hdd", &[("storage", "hdd")]),
        node("ok", &ssd),
    ]);
    let svc = service(
        "db",
        "  placement:\n    constraints: [\"node.labels.storage == ssd\"]\n",
    );
    let f = Filters::new(&svc.spec, &ns).unwrap();
    let keep = |id: &str| f.keep_filter(id).map(|r| r.to_string());
    assert_eq!(keep("ok"), None);
    assert!(f.accepts("ok"));
    assert_eq!(keep("paused"), None, "a paused node keeps its tasks");
    assert!(!f.accepts("paused"), "but takes no new one");
    assert_eq!(keep("drained").as_deref(), Some("drained"));
    assert_eq!(keep("down").as_deref(), Some("not ready"));
    assert_eq!(keep("gone").as_deref(), Some("not ready"), "no record");
    assert_eq!(
        keep("hdd").as_deref(),
        Some("not matching node.labels.storage==ssd")
    );
}

#[test]
fn usage_walked_in_node_order_is_what_other_services_hold() {
    let held = |memory: u64, tasks: u64| NodeUsage {
        memory,
        tasks,
        ..NodeUsage::default()
    };
    let all: BTreeMap<String, NodeUsage> = [
        ("n1".to_string(), held(4, 2)),
        ("n3".to_string(), held(6, 3)),
        ("n5".to_string(), held(1, 1)),
    ]
    .into();
    // The service's own tasks on n3 and n5 (and one on n4 that others know nothing of).
    let own: BTreeMap<String, NodeUsage> = [
        ("n3".to_string(), held(2, 1)),
        ("n4".to_string(), held(0, 0)),
        ("n5".to_string(), held(1, 1)),
    ]
    .into();
    let usage = Usage::new(std::sync::Arc::new(all), own);
    let mut walk = usage.in_node_order();
    let seen: Vec<(u64, u64)> = ["n0", "n1", "n2", "n3", "n4", "n5", "n6"]
        .into_iter()
        .map(|n| {
            let u = walk.get(n);
            (u.memory, u.tasks)
        })
        .collect();
    assert_eq!(
        seen,
        [(0, 0), (4, 2), (0, 0), (4, 2), (0, 0), (0, 0), (0, 0)]
    );
    // Skipping nodes skips their usage.
    let mut walk = usage.in_node_order();
    assert_eq!(walk.get("n3").memory, 4);
    assert_eq!(walk.get("n5").tasks, 0);
}

#[test]
fn a_node_that_is_not_ready_still_counts_its_tasks_for_spread() {
    // a1 is down with two tasks still in their grace: zone a holds two already.
    let mut a1 = node("a1", &[("zone", "a")]);
    a1.ready = false;
    let ns = nodes(vec![
        a1,
        node("a2", &[("zone", "a")]),
        node("b1", &[("zone", "b")]),
    ]);
    let svc = service(
        "web",
        "  placement:\n    preferences: [{spread: node.labels.zone}]\n",
    );
    let template = TaskTemplate::from_spec(&svc.spec);
    let mut p = Placer::new(&svc.spec, &ns, &Usage::default()).unwrap();
    for _ in 0..2 {
        p.account("a1", &template, true, true);
    }
    assert_eq!(place_n(&mut p, 2), ["b1", "b1"]);
    assert_eq!(p.node_count(), 3);
}

#[test]
fn nodes_that_are_not_ready_are_counted_in_every_explanation() {
    let mut ns = vec![node("ok", &[])];
    for i in 0..3 {
        let mut down = node(&format!("down-{i}"), &[]);
        down.ready = false;
        ns.push(down);
    }
    let ns = nodes(ns);
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let full = NodeUsage {
        memory: u64::MAX / 2,
        ..Default::default()
    };
    let usage: Usage = BTreeMap::from([("ok".to_string(), full)]).into();
    let mut p = Placer::new(&svc.spec, &ns, &usage).unwrap();
    let why = p.place().expect_err("no node has room");
    assert_eq!((why.available, why.total), (0, 4));
    assert_eq!(why.reasons.get("not ready"), Some(&3));
    assert_eq!(why.reasons.values().sum::<usize>(), 4);
    assert!(!p.filters().accepts("down-1"));
    assert_eq!(
        p.place_on("down-1").map_err(|r| r.to_string()),
        Err("not ready".into())
    );
}

#[test]
fn a_services_unfinished_tasks_are_taken_out_of_the_usage_and_its_dead_ones_are_not() {
    use shoal_core::model::{Task, TaskState, TaskStatus, TaskTemplate, Timestamp};
    use shoal_core::view::TaskEntry;
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let template = TaskTemplate::from_spec(&svc.spec);
    let entry = |id: &str, state: Option<TaskState>, orphaned: bool| {
        let mut t = Task::replica(id, svc.id(), 1, "n1", template.clone(), Timestamp(0));
        t.orphaned = orphaned;
        let status = state.map(|s| TaskStatus::new(id.to_string(), s, Timestamp(0)));
        TaskEntry::new(t, status)
    };
    let own = [
        entry("web.1.a", None, false),
        entry("web.2.b", Some(TaskState::Running), false),
        entry("web.3.c", Some(TaskState::Failed), false),
        entry("web.4.d", Some(TaskState::Running), true),
    ];
    // Every unfinished task on n1: the service's two live ones and one of another service.
    let mut all = NodeUsage::default();
    for _ in 0..3 {
        all.add_template(&template);
    }
    let all = std::sync::Arc::new(BTreeMap::from([("n1".to_string(), all)]));
    let others = Usage::of_others(all, &own);
    let left = others.in_node_order().get("n1");
    assert_eq!(
        left.memory,
        1 << 30,
        "only the other service's task is left"
    );
    assert_eq!(left.tasks, 1);
}
