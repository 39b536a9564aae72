//! Service endpoints: the record the controller publishes at `endpoints/<ns>/<service>` for
//! the agents' resolvers and proxies (as Kubernetes' EndpointSlices), the pure function that
//! decides which tasks are in it, the service's stable address, and the cluster-wide check
//! that no two services claim the same ingress port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::{PortSpec, Protocol, Service, ServiceRef};
use crate::model::{DesiredState, Health, Node, PortBinding, Task, TaskState, TaskStatus};

/// Address of the resolver inside every task container (its `/etc/resolv.conf` nameserver).
pub const RESOLVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);

/// The range service addresses are taken from, in CIDR notation.
pub const SERVICE_RANGE: &str = "127.64.0.0/10";

/// First address of the range service addresses are taken from (127.64.0.0/10, local inside
/// every container's network namespace, away from 127.0.0.1 and Docker's 127.0.0.11).
const SERVICE_RANGE_BASE: u32 = u32::from_be_bytes([127, 64, 0, 0]);
/// Size of that range.
const SERVICE_RANGE_SIZE: u32 = 1 << 22;

/// The endpoints of one service (`endpoints/<ns>/<service>`), written by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// The service.
    pub service: ServiceRef,
    /// The service's stable address inside task containers; kept for the service's life.
    pub address: Ipv4Addr,
    /// The service's ports (target, published, mode).
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Tasks that receive new connections, sorted by task id.
    #[serde(default)]
    pub tasks: Vec<Endpoint>,
}

/// One task that receives traffic: where its ports are reachable from any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Task id.
    pub task_id: String,
    /// Node the task runs on.
    pub node_id: String,
    /// The node's address.
    pub address: String,
    /// The task's ports as bound on the node.
    pub ports: Vec<PortBinding>,
}

impl Endpoint {
    /// The host port of `target` (TCP), if the task publishes it.
    pub fn host_port(&self, target: u16) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.target == target && p.protocol == Protocol::Tcp)
            .map(|p| p.published)
    }
}

/// Why a task does not receive traffic (`None` from [`ineligible_reason`]: it does).
pub fn ineligible_reason(
    task: &Task,
    status: Option<&TaskStatus>,
    nodes: &BTreeMap<String, Node>,
) -> Option<&'static str> {
    if task.desired_state != DesiredState::Running {
        return Some("stopping");
    }
    if task.orphaned {
        return Some("node lost");
    }
    let Some(status) = status else {
        return Some("not started");
    };
    if status.state != TaskState::Running {
        return Some("not running");
    }
    if task.template.healthcheck.is_some() && status.health != Some(Health::Healthy) {
        return Some("not healthy");
    }
    match nodes.get(&task.node_id) {
        Some(n) if n.ready && !n.info.address.is_empty() => {}
        _ => return Some("node lost"),
    }
    if !task.template.ports.is_empty() && status.host_ports.is_empty() {
        return Some("no host ports");
    }
    None
}

/// The tasks of a service that receive new connections: wanted running, running, healthy
/// when the task has a healthcheck, on a ready node with an address. Sorted by task id.
pub fn eligible<'a>(
    tasks: impl IntoIterator<Item = (&'a Task, Option<&'a TaskStatus>)>,
    nodes: &BTreeMap<String, Node>,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = tasks
        .into_iter()
        .filter(|(t, s)| ineligible_reason(t, *s, nodes).is_none())
        .filter_map(|(t, s)| {
            let node = nodes.get(&t.node_id)?;
            Some(Endpoint {
                task_id: t.id.clone(),
                node_id: t.node_id.clone(),
                address: node.info.address.clone(),
                ports: s.map(|s| s.host_ports.clone()).unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    out
}

/// The stable address of a new service: derived from its name (FNV-1a) in 127.64.0.0/10 and
/// moved to the next free address when another service holds it. Never ends in .0 or .255.
pub fn allocate_address(service: &ServiceRef, taken: &BTreeSet<Ipv4Addr>) -> Ipv4Addr {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("{}/{}", service.namespace, service.name).bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut offset = h % SERVICE_RANGE_SIZE;
    for _ in 0..SERVICE_RANGE_SIZE {
        let ip = Ipv4Addr::from(SERVICE_RANGE_BASE + offset);
        let last = ip.octets()[3];
        if last != 0 && last != 255 && !taken.contains(&ip) {
            return ip;
        }
        offset = (offset + 1) % SERVICE_RANGE_SIZE;
    }
    Ipv4Addr::from(SERVICE_RANGE_BASE + 1)
}

/// Whether `ip` is in the range service addresses are taken from.
pub fn is_service_address(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    (SERVICE_RANGE_BASE..SERVICE_RANGE_BASE + SERVICE_RANGE_SIZE).contains(&n)
}

/// The ingress ports of `service` another service already claims: `(path, message)` per
/// conflicting port, e.g. `("spec.ports[0].published", "ingress port 8080/tcp is already
/// published by service default/web")`. Services are compared by name; `service` itself is
/// skipped in `others`.
pub fn ingress_conflicts<'a>(
    service: &Service,
    others: impl IntoIterator<Item = &'a Service>,
) -> Vec<(String, String)> {
    let me = service.id();
    let mut claimed: BTreeMap<(u16, Protocol), ServiceRef> = BTreeMap::new();
    for o in others {
        let r = o.id();
        if r == me {
            continue;
        }
        for p in &o.spec.ports {
            if let Some(port) = p.ingress_port() {
                claimed.entry((port, p.protocol)).or_insert(r.clone());
            }
        }
    }
    service
        .spec
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let port = p.ingress_port()?;
            let owner = claimed.get(&(port, p.protocol))?;
            Some((
                format!("spec.ports[{i}].published"),
                format!(
                    "ingress port {port}/{} is already published by service {owner}",
                    p.protocol
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests;
