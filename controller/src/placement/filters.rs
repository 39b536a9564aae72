//! Placement filters: each one says why a node cannot take a task (swarmkit style), so an
//! unschedulable service can explain itself in numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use shoal_core::constraint::{Constraint, NodeView};
use shoal_core::manifest::{Protocol, RuntimeKind};
use shoal_core::model::{Availability, Node, TaskTemplate};
use shoal_core::view::TaskEntry;

/// CPU, memory, host ports and task count already taken on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// Reserved CPU in thousandths of a CPU.
    pub millicpus: u64,
    /// Reserved memory in bytes.
    pub memory: u64,
    /// Published host ports in use, with how many tasks hold each.
    pub ports: BTreeMap<(u16, Protocol), u32>,
    /// Tasks that are not finished.
    pub tasks: u64,
}

/// Reserved CPU of a template, in thousandths of a CPU (rounded up).
pub fn template_millicpus(t: &TaskTemplate) -> u64 {
    t.reservations
        .cpus
        .map(|c| (c.max(0.0) * 1000.0).ceil() as u64)
        .unwrap_or(0)
}

/// Reserved memory of a template, in bytes.
pub fn template_memory(t: &TaskTemplate) -> u64 {
    t.reservations.memory.map(|m| m.bytes()).unwrap_or(0)
}

/// Published host ports of a template.
pub fn template_ports(t: &TaskTemplate) -> impl Iterator<Item = (u16, Protocol)> + '_ {
    t.ports
        .iter()
        .filter_map(|p| p.host_port().map(|h| (h, p.protocol)))
}

impl NodeUsage {
    /// Adds one task made from `t`.
    pub fn add_template(&mut self, t: &TaskTemplate) {
        self.millicpus += template_millicpus(t);
        self.memory += template_memory(t);
        for p in template_ports(t) {
            *self.ports.entry(p).or_default() += 1;
        }
        self.tasks += 1;
    }

    /// Removes one task made from `t` (the inverse of [`NodeUsage::add_template`]).
    pub fn remove_template(&mut self, t: &TaskTemplate) {
        self.millicpus = self.millicpus.saturating_sub(template_millicpus(t));
        self.memory = self.memory.saturating_sub(template_memory(t));
        for p in template_ports(t) {
            if let Some(n) = self.ports.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.ports.remove(&p);
                }
            }
        }
        self.tasks = self.tasks.saturating_sub(1);
    }

    /// Adds everything in `other`.
    pub fn add(&mut self, other: &NodeUsage) {
        self.millicpus += other.millicpus;
        self.memory += other.memory;
        for (p, n) in &other.ports {
            *self.ports.entry(*p).or_default() += n;
        }
        self.tasks += other.tasks;
    }

    /// Removes everything in `other` (the inverse of [`NodeUsage::add`]).
    pub fn subtract(&mut self, other: &NodeUsage) {
        self.millicpus = self.millicpus.saturating_sub(other.millicpus);
        self.memory = self.memory.saturating_sub(other.memory);
        for (p, n) in &other.ports {
            if let Some(held) = self.ports.get_mut(p) {
                *held = held.saturating_sub(*n);
                if *held == 0 {
                    self.ports.remove(p);
                }
            }
        }
        self.tasks = self.tasks.saturating_sub(other.tasks);
    }

    /// Whether nothing is reserved and no task counted.
    pub fn is_empty(&self) -> bool {
        self.millicpus == 0 && self.memory == 0 && self.ports.is_empty() && self.tasks == 0
    }
}

/// What other services' tasks reserve per node: every unfinished task's reservation, shared
/// with the cache (never copied per reconcile), less what the reconciled service's own tasks
/// hold.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    all: Arc<BTreeMap<String, NodeUsage>>,
    own: BTreeMap<String, NodeUsage>,
}

impl Usage {
    /// `all` less `own`, per node.
    pub fn new(all: Arc<BTreeMap<String, NodeUsage>>, own: BTreeMap<String, NodeUsage>) -> Self {
        Usage { all, own }
    }

    /// What other services' tasks reserve: `all`, every unfinished task's reservation per
    /// node, less what `own` (one service's tasks) reserve. Asked only by a reconcile that
    /// places, so the many that do not never add up a service's tasks.
    pub fn of_others(all: Arc<BTreeMap<String, NodeUsage>>, own: &[TaskEntry]) -> Self {
        let mut mine: BTreeMap<String, NodeUsage> = BTreeMap::new();
        for e in own.iter().filter(|e| !e.is_dead()) {
            add_usage(&mut mine, &e.task.node_id, &e.task.template);
        }
        Usage::new(all, mine)
    }

    /// What other services reserve per node, for nodes asked in increasing id order: the
    /// usage maps are walked beside them instead of searched for every node.
    pub fn in_node_order(&self) -> UsageWalk<'_> {
        UsageWalk {
            all: self.all.iter().peekable(),
            own: self.own.iter().peekable(),
        }
    }
}

/// Adds what a task made from `template` reserves to `node`'s usage in `usage` (the node's
/// id is copied only the first time).
pub fn add_usage(usage: &mut BTreeMap<String, NodeUsage>, node: &str, template: &TaskTemplate) {
    match usage.get_mut(node) {
        Some(u) => u.add_template(template),
        None => usage
            .entry(node.to_string())
            .or_default()
            .add_template(template),
    }
}

/// Per-node usage in node id order.
type ByNode<'a> = std::iter::Peekable<std::collections::btree_map::Iter<'a, String, NodeUsage>>;

/// See [`Usage::in_node_order`].
pub struct UsageWalk<'a> {
    all: ByNode<'a>,
    own: ByNode<'a>,
}

impl UsageWalk<'_> {
    /// What other services reserve on `node`; `node` comes after every node asked before.
    pub fn get(&mut self, node: &str) -> NodeUsage {
        let mut u = advance_to(&mut self.all, node).cloned().unwrap_or_default();
        if let Some(own) = advance_to(&mut self.own, node) {
            u.subtract(own);
        }
        u
    }
}

/// Moves `it` past the keys before `node`; the value of `node` when it is there.
fn advance_to<'a>(it: &mut ByNode<'a>, node: &str) -> Option<&'a NodeUsage> {
    while it.next_if(|(k, _)| k.as_str() < node).is_some() {}
    it.next_if(|(k, _)| k.as_str() == node).map(|(_, u)| u)
}

impl From<BTreeMap<String, NodeUsage>> for Usage {
    fn from(all: BTreeMap<String, NodeUsage>) -> Self {
        Usage::new(Arc::new(all), BTreeMap::new())
    }
}

/// Why a node cannot take a task. `Display` is the phrase used in explanations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The node's lease expired (or it never registered).
    NotReady,
    /// Availability `pause`.
    Paused,
    /// Availability `drain`.
    Drained,
    /// The node does not offer the service's runtime.
    MissingRuntime(RuntimeKind),
    /// A constraint does not hold (shown as written, normalised). Shared with the placer,
    /// which refers every node failing it to the one parsed constraint.
    Constraint(Arc<Constraint>),
    /// Not enough unreserved CPU.
    InsufficientCpu,
    /// Not enough unreserved memory.
    InsufficientMemory,
    /// A published host port is already taken.
    PortInUse(u16, Protocol),
    /// `maxReplicasPerNode` reached.
    MaxReplicas(u64),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("not ready"),
            Reason::Paused => f.write_str("paused"),
            Reason::Drained => f.write_str("drained"),
            Reason::MissingRuntime(r) => write!(f, "without runtime {r}"),
            Reason::Constraint(c) => write!(f, "not matching {c}"),
            Reason::InsufficientCpu => f.write_str("insufficient cpu"),
            Reason::InsufficientMemory => f.write_str("insufficient memory"),
            Reason::PortInUse(p, proto) => write!(f, "host port {p}/{proto} in use"),
            Reason::MaxReplicas(n) => write!(f, "max replicas per node ({n}) reached"),
        }
    }
}

/// The filters that depend only on the node and the spec (not on what is placed):
/// ready, availability, runtime, constraints. `None` when the node may take new tasks.
pub fn static_filter(
    node: &Node,
    runtime: RuntimeKind,
    constraints: &[Arc<Constraint>],
) -> Option<Reason> {
    pause_filter(node).or_else(|| keep_filter(node, runtime, constraints))
}

/// A ready node that is paused keeps its tasks but takes no new one: the one filter a node
/// passes to keep tasks and fails to take new ones.
pub fn pause_filter(node: &Node) -> Option<Reason> {
    (node.ready && node.config.availability == Availability::Pause).then_some(Reason::Paused)
}

/// The filters a node must pass to keep running the tasks of a service it already has:
/// ready, not drained, runtime, constraints. A paused node keeps its tasks (it only
/// receives no new ones). `None` when the node may keep them.
pub fn keep_filter(
    node: &Node,
    runtime: RuntimeKind,
    constraints: &[Arc<Constraint>],
) -> Option<Reason> {
    if !node.ready {
        return Some(Reason::NotReady);
    }
    if node.config.availability == Availability::Drain {
        return Some(Reason::Drained);
    }
    spec_filter(node, runtime, constraints)
}

/// Runtime and constraints only: whether the node may run the service at all, whatever its
/// readiness and availability.
pub fn spec_filter(
    node: &Node,
    runtime: RuntimeKind,
    constraints: &[Arc<Constraint>],
) -> Option<Reason> {
    if !node.info.runtimes.contains(&runtime) {
        return Some(Reason::MissingRuntime(runtime));
    }
    if constraints.is_empty() {
        return None;
    }
    let view = NodeView::from(node);
    constraints
        .iter()
        .find(|c| !c.matches(&view))
        .map(|c| Reason::Constraint(c.clone()))
}

/// What one more task needs on a node.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// CPU in thousandths.
    pub millicpus: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Published host ports.
    pub ports: Vec<(u16, Protocol)>,
    /// `maxReplicasPerNode` (0 = none).
    pub max_per_node: u64,
}

impl Demand {
    /// The demand of one task of `template`.
    pub fn of(template: &TaskTemplate, max_per_node: Option<u64>) -> Self {
        Demand {
            millicpus: template_millicpus(template),
            memory: template_memory(template),
            ports: template_ports(template).collect(),
            max_per_node: max_per_node.unwrap_or(0),
        }
    }
}

/// The filters that depend on what is already on the node: resources, host ports,
/// `maxReplicasPerNode`. `own` counts this service's running-desired tasks on the node.
pub fn dynamic_filter(node: &Node, usage: &NodeUsage, own: u64, demand: &Demand) -> Option<Reason> {
    if demand.millicpus > 0 {
        let cap = (node.info.capacity.cpus.max(0.0) * 1000.0).round() as u64;
        if usage.millicpus + demand.millicpus > cap {
            return Some(Reason::InsufficientCpu);
        }
    }
    if demand.memory > 0 && usage.memory + demand.memory > node.info.capacity.memory.bytes() {
        return Some(Reason::InsufficientMemory);
    }
    if let Some(p) = demand.ports.iter().find(|p| usage.ports.contains_key(p)) {
        return Some(Reason::PortInUse(p.0, p.1));
    }
    if demand.max_per_node > 0 && own >= demand.max_per_node {
        return Some(Reason::MaxReplicas(demand.max_per_node));
    }
    None
}
