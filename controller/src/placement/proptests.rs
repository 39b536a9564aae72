//! Property tests of placement: several services sharing random nodes never reserve more CPU
//! or memory than a node has and never publish one host port twice on a node; a task is
//! refused only when no node could take it; and node ids only break ties, so the accounting
//! order and any order-keeping renaming of the nodes change nothing; and the heap that places
//! tasks of services without spread preferences picks the node that ranking every node picks.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_core::manifest::{Protocol, RuntimeKind, Service};
use shoal_core::model::{Availability, Node, TaskTemplate};
use shoal_core::units::ByteSize;

use super::filters::{Demand, NodeUsage, template_memory, template_millicpus, template_ports};
use super::{Placer, Usage, filters};
use crate::testutil::{node, service};

#[derive(Debug, Clone)]
struct NodeGen {
    ready: bool,
    availability: Availability,
    zone: u8,
    cpus: u8,
    memory_gi: u8,
    process_only: bool,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        prop::bool::weighted(0.9),
        prop_oneof![6 => Just(Availability::Active), 1 => Just(Availability::Pause), 1 => Just(Availability::Drain)],
        0u8..3,
        1u8..8,
        1u8..12,
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(ready, availability, zone, cpus, memory_gi, process_only)| NodeGen {
                ready,
                availability,
                zone,
                cpus,
                memory_gi,
                process_only,
            },
        )
}

fn build_node(id: &str, g: &NodeGen) -> Node {
    let zone = format!("z{}", g.zone);
    let mut n = node(id, &[("zone", zone.as_str())]);
    n.ready = g.ready;
    n.config.availability = g.availability;
    n.info.capacity.cpus = f64::from(g.cpus);
    n.info.capacity.memory = ByteSize(u64::from(g.memory_gi) << 30);
    if g.process_only {
        n.info.runtimes = vec![RuntimeKind::Process];
    }
    n
}

#[derive(Debug, Clone)]
struct ServiceGen {
    /// Tenths of a CPU reserved (0: none).
    cpu_tenths: u8,
    /// Quarters of a GiB reserved (0: none).
    memory_quarters: u8,
    /// A published port: (port index, udp, host mode).
    port: Option<(u8, bool, bool)>,
    replicas: u8,
    binpack: bool,
    spread_zones: bool,
    max_per_node: Option<u8>,
    avoid_z2: bool,
}

fn service_gen() -> impl Strategy<Value = ServiceGen> {
    (
        (0u8..25, 0u8..16),
        prop::option::weighted(0.6, (0u8..3, any::<bool>(), prop::bool::weighted(0.8))),
        1u8..10,
        (any::<bool>(), any::<bool>()),
        prop::option::weighted(0.2, 1u8..3),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(
                (cpu_tenths, memory_quarters),
                port,
                replicas,
                (binpack, spread_zones),
                max_per_node,
                avoid_z2,
            )| {
                ServiceGen {
                    cpu_tenths,
                    memory_quarters,
                    port,
                    replicas,
                    binpack,
                    spread_zones,
                    max_per_node,
                    avoid_z2,
                }
            },
        )
}

fn build_service(i: usize, g: &ServiceGen) -> Service {
    let mut y = String::new();
    let mut reservations = Vec::new();
    if g.cpu_tenths > 0 {
        reservations.push(format!("cpus: {}", f64::from(g.cpu_tenths) / 10.0));
    }
    if g.memory_quarters > 0 {
        reservations.push(format!("memory: {}Mi", u32::from(g.memory_quarters) * 256));
    }
    if !reservations.is_empty() {
        y.push_str(&format!(
            "  resources: {{reservations: {{{}}}}}\n",
            reservations.join(", ")
        ));
    }
    if let Some((port, udp, host)) = g.port {
        let published = [80, 443, 8080][port as usize];
        let protocol = if udp { "udp" } else { "tcp" };
        let mode = if host { "host" } else { "ingress" };
        y.push_str(&format!(
            "  ports: [{{target: 80, published: {published}, protocol: {protocol}, mode: {mode}}}]\n"
        ));
    }
    y.push_str("  placement:\n");
    if g.binpack {
        y.push_str("    strategy: binpack\n");
    }
    if g.spread_zones {
        y.push_str("    preferences: [{spread: node.labels.zone}]\n");
    }
    if let Some(m) = g.max_per_node {
        y.push_str(&format!("    maxReplicasPerNode: {m}\n"));
    }
    if g.avoid_z2 {
        y.push_str("    constraints: [\"node.labels.zone != z2\"]\n");
    }
    service(&format!("svc{i}"), &y)
}

/// One placed task: its service and node.
type Placement = (usize, String);

/// Places the services round by round, as the controller does: each round, each service
/// gets a new placer that starts from what the other services hold on each node and
/// accounts its own tasks, then places up to `per_round` more. Returns every placement in
/// order, and whether the last placement of each service was refused. `reverse` accounts
/// the tasks already placed in the reverse order.
fn place_all(
    nodes: &BTreeMap<String, Node>,
    services: &[Service],
    replicas: &[u8],
    rounds: usize,
    reverse: bool,
) -> (Vec<Placement>, Vec<bool>) {
    let templates: Vec<TaskTemplate> = services
        .iter()
        .map(|s| TaskTemplate::from_spec(&s.spec))
        .collect();
    let mut placed: Vec<Placement> = Vec::new();
    let mut refused = vec![false; services.len()];
    for round in 0..rounds {
        for (s, svc) in services.iter().enumerate() {
            let mut order: Vec<&Placement> = placed.iter().collect();
            if reverse {
                order.reverse();
            }
            let mut usage: BTreeMap<String, NodeUsage> = BTreeMap::new();
            for (other, n) in order.iter().filter(|(o, _)| *o != s) {
                usage
                    .entry(n.clone())
                    .or_default()
                    .add_template(&templates[*other]);
            }
            let mut placer = Placer::new(&svc.spec, nodes, &usage.into()).expect("a valid spec");
            for (_, n) in order.iter().filter(|(o, _)| *o == s) {
                placer.account(n, &templates[s], true, true);
            }
            let goal = usize::from(replicas[s]) * (round + 1) / rounds;
            let have = placed.iter().filter(|(o, _)| *o == s).count();
            for _ in have..goal {
                match placer.place() {
                    Ok(n) => placed.push((s, n)),
                    Err(e) => {
                        assert_eq!(e.available, 0, "refused while a node was available: {e}");
                        assert_eq!(e.total, nodes.len());
                        refused[s] = true;
                        break;
                    }
                }
            }
        }
    }
    (placed, refused)
}

/// What the placements hold on each node, recomputed from scratch.
fn loads(placed: &[Placement], services: &[Service]) -> BTreeMap<String, NodeUsage> {
    let mut out: BTreeMap<String, NodeUsage> = BTreeMap::new();
    for (s, n) in placed {
        let t = TaskTemplate::from_spec(&services[*s].spec);
        let u = out.entry(n.clone()).or_default();
        u.millicpus += template_millicpus(&t);
        u.memory += template_memory(&t);
        for p in template_ports(&t) {
            *u.ports.entry(p).or_default() += 1;
        }
        u.tasks += 1;
    }
    out
}

fn cpu_capacity(n: &Node) -> u64 {
    (n.info.capacity.cpus * 1000.0).round() as u64
}

/// Whether one more task of `svc` fits on `n`, computed without the placer.
fn would_fit(n: &Node, held: &NodeUsage, own: u64, svc: &Service) -> bool {
    let t = TaskTemplate::from_spec(&svc.spec);
    let constraints: Vec<_> = svc
        .spec
        .placement
        .constraints
        .iter()
        .map(|c| std::sync::Arc::new(shoal_core::constraint::Constraint::parse(c).unwrap()))
        .collect();
    let demand = Demand::of(&t, svc.spec.placement.max_replicas_per_node);
    filters::static_filter(n, svc.spec.runtime, &constraints).is_none()
        && (demand.millicpus == 0 || held.millicpus + demand.millicpus <= cpu_capacity(n))
        && (demand.memory == 0 || held.memory + demand.memory <= n.info.capacity.memory.bytes())
        && demand.ports.iter().all(|p| !held.ports.contains_key(p))
        && (demand.max_per_node == 0 || own < demand.max_per_node)
}

fn cluster(nodes_g: &[NodeGen], id: impl Fn(usize) -> String) -> BTreeMap<String, Node> {
    nodes_g
        .iter()
        .enumerate()
        .map(|(i, g)| (id(i), build_node(&id(i), g)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn services_sharing_nodes_never_overcommit_them_nor_double_book_a_host_port(
        nodes_g in prop::collection::vec(node_gen(), 1..8),
        services_g in prop::collection::vec(service_gen(), 1..6),
        rounds in 1usize..4,
    ) {
        let nodes = cluster(&nodes_g, |i| format!("n{i}"));
        let services: Vec<Service> = services_g.iter().enumerate().map(|(i, g)| build_service(i, g)).collect();
        let replicas: Vec<u8> = services_g.iter().map(|g| g.replicas).collect();
        let (placed, refused) = place_all(&nodes, &services, &replicas, rounds, false);
        let held = loads(&placed, &services);
        for (id, u) in &held {
            let n = &nodes[id];
            prop_assert!(n.ready && n.config.availability == Availability::Active, "placed on {id}, which takes no new task");
            prop_assert!(u.millicpus <= cpu_capacity(n), "{id}: {} millicpus reserved of {}", u.millicpus, cpu_capacity(n));
            prop_assert!(u.memory <= n.info.capacity.memory.bytes(), "{id}: {} bytes reserved of {}", u.memory, n.info.capacity.memory.bytes());
            for ((port, proto), count) in &u.ports {
                prop_assert_eq!(*count, 1, "{}: host port {}/{} published {} times", id, port, proto, count);
            }
        }
        // A service got fewer tasks than asked only when no node could take one more
        // (checked after every service placed: placing only adds load).
        for (s, svc) in services.iter().enumerate() {
            let own: Vec<&String> = placed.iter().filter(|(o, _)| *o == s).map(|(_, n)| n).collect();
            if own.len() < usize::from(replicas[s]) {
                prop_assert!(refused[s]);
                for (id, n) in &nodes {
                    let mine = own.iter().filter(|m| **m == id).count() as u64;
                    let u = held.get(id).cloned().unwrap_or_default();
                    prop_assert!(!would_fit(n, &u, mine, svc), "service {} was refused but node {} could take a task", s, id);
                }
            }
        }
    }

    #[test]
    fn node_ids_only_break_ties(
        nodes_g in prop::collection::vec(node_gen(), 1..8),
        services_g in prop::collection::vec(service_gen(), 1..5),
    ) {
        // The order in which existing tasks are accounted does not matter, and any renaming
        // that keeps the ids' order gives the same decisions, renamed: ranking looks at a
        // node's id only to break a tie.
        let services: Vec<Service> = services_g.iter().enumerate().map(|(i, g)| build_service(i, g)).collect();
        let replicas: Vec<u8> = services_g.iter().map(|g| g.replicas).collect();
        let a = cluster(&nodes_g, |i| format!("n{i}"));
        let b = cluster(&nodes_g, |i| format!("worker-{:03}.example", i * 7 + 1));
        let rename: BTreeMap<String, String> = a.keys().cloned().zip(b.keys().cloned()).collect();
        let (placed_a, refused_a) = place_all(&a, &services, &replicas, 2, false);
        let (placed_r, refused_r) = place_all(&a, &services, &replicas, 2, true);
        prop_assert_eq!(&placed_a, &placed_r);
        prop_assert_eq!(&refused_a, &refused_r);
        let (placed_b, refused_b) = place_all(&b, &services, &replicas, 2, false);
        let renamed: Vec<Placement> = placed_a.iter().map(|(s, n)| (*s, rename[n].clone())).collect();
        prop_assert_eq!(renamed, placed_b);
        prop_assert_eq!(refused_a, refused_b);
    }

    #[test]
    fn the_heap_picks_the_node_that_ranking_every_node_picks(
        nodes_g in prop::collection::vec(node_gen(), 1..12),
        services_g in prop::collection::vec(service_gen(), 1..5),
        extra in 0usize..3,
        accounted_at in 0usize..12,
    ) {
        // The other services' tasks load the nodes first; then the last service places its
        // replicas and a few more with both placers, one node accounted in the middle.
        let services: Vec<Service> = services_g
            .iter()
            .enumerate()
            .map(|(i, g)| build_service(i, &ServiceGen { spread_zones: false, ..g.clone() }))
            .collect();
        let nodes = cluster(&nodes_g, |i| format!("n{i}"));
        let (others, last) = services.split_at(services.len() - 1);
        let replicas: Vec<u8> = services_g.iter().map(|g| g.replicas).collect();
        let (placed, _) = place_all(&nodes, others, &replicas, 1, false);
        let held = loads(&placed, others);
        let usage: Usage = held.into();
        let template = TaskTemplate::from_spec(&last[0].spec);
        let mut heap = Placer::new(&last[0].spec, &nodes, &usage).expect("a valid spec");
        let mut scan = Placer::new(&last[0].spec, &nodes, &usage).expect("a valid spec");
        let wanted = usize::from(replicas[services.len() - 1]) + extra;
        for k in 0..wanted {
            if k == accounted_at {
                let id = format!("n{}", k % nodes.len());
                heap.account(&id, &template, true, true);
                scan.account(&id, &template, true, true);
            }
            let by_heap = heap.place().ok();
            prop_assert_eq!(&by_heap, &scan.place_scanned(), "placement {}", k);
            if by_heap.is_none() {
                break;
            }
        }
    }
}

#[test]
fn binpack_ties_between_different_nodes_go_to_the_smaller_id() {
    // Two empty nodes rank the same; the smaller id takes the first task, and that decides
    // where the second goes: node ids are the documented tie-break, so placement is
    // deterministic but not the same under any renaming of unequal nodes.
    let mut small = node("a-small", &[]);
    small.info.capacity.memory = ByteSize(4 << 30);
    let big = node("b-big", &[]);
    let svc = service(
        "db",
        "  replicas: 2\n  resources: {reservations: {memory: 3Gi}}\n  placement: {strategy: binpack}\n",
    );
    let nodes: BTreeMap<String, Node> = [small.clone(), big.clone()]
        .into_iter()
        .map(|n| (n.info.id.clone(), n))
        .collect();
    let mut p = Placer::new(&svc.spec, &nodes, &Usage::default()).unwrap();
    assert_eq!(
        [p.place().unwrap(), p.place().unwrap()],
        ["a-small", "b-big"]
    );
    small.info.id = "z-small".into();
    let nodes: BTreeMap<String, Node> = [small, big]
        .into_iter()
        .map(|n| (n.info.id.clone(), n))
        .collect();
    let mut p = Placer::new(&svc.spec, &nodes, &Usage::default()).unwrap();
    assert_eq!([p.place().unwrap(), p.place().unwrap()], ["b-big", "b-big"]);
}

#[test]
fn udp_and_tcp_host_ports_are_distinct_reservations() {
    let t = TaskTemplate::from_spec(
        &service(
            "dns",
            "  ports: [{target: 53, published: 53, protocol: udp, mode: host}]\n",
        )
        .spec,
    );
    assert_eq!(
        template_ports(&t).collect::<Vec<_>>(),
        [(53, Protocol::Udp)]
    );
}
