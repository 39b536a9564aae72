//! The agent's routing table, rebuilt from the `endpoints/` records: which name resolves to
//! which service address, and which `node address:host port` pairs receive the connections
//! made to a service address and port or to an ingress port. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_core::endpoints::Endpoints;
use shoal_core::manifest::{Protocol, ServiceRef};

/// Search domain under which every service has a name (`<svc>.<ns>.shoal`).
pub const DOMAIN: &str = "shoal";

/// One service as the proxies see it.
#[derive(Debug)]
pub struct Route {
    /// The service.
    pub service: ServiceRef,
    /// Its stable address inside task containers.
    pub address: Ipv4Addr,
    /// Backends per target port: the tasks' `node address:host port`, sorted by task id.
    pub backends: BTreeMap<u16, Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Route {
    /// The backends of `target` in the order to try them for the next connection (round
    /// robin: each call starts one further along).
    pub fn pick(&self, target: u16) -> Vec<SocketAddr> {
        let Some(list) = self.backends.get(&target).filter(|l| !l.is_empty()) else {
            return Vec::new();
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        list[start..]
            .iter()
            .chain(&list[..start])
            .copied()
            .collect()
    }
}

/// What a name means to the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A service: its address.
    Service(Ipv4Addr),
    /// A name Shoal owns that does not exist: NXDOMAIN.
    NoSuchName,
    /// Not a Shoal name: forward it.
    Foreign,
}

/// The whole table.
#[derive(Debug, Default)]
pub struct Table {
    routes: BTreeMap<ServiceRef, Arc<Route>>,
    by_address: HashMap<(Ipv4Addr, u16), Arc<Route>>,
    ingress: BTreeMap<u16, (Arc<Route>, u16)>,
    namespaces: BTreeSet<String>,
}

impl Table {
    /// Builds the table from every endpoints record. Round-robin positions carry over from
    /// `previous` so a rewrite does not send the next connection back to the first task.
    pub fn build<'a>(records: impl IntoIterator<Item = &'a Endpoints>, previous: &Table) -> Self {
        let mut t = Table::default();
        for e in records {
            let mut backends: BTreeMap<u16, Vec<SocketAddr>> = BTreeMap::new();
            for p in e.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
                let list = e
                    .tasks
                    .iter()
                    .filter_map(|task| {
                        let ip = task.address.parse().ok()?;
                        Some(SocketAddr::new(ip, task.host_port(p.target)?))
                    })
                    .collect();
                backends.insert(p.target, list);
            }
            let next = previous
                .routes
                .get(&e.service)
                .map_or(0, |r| r.next.load(Ordering::Relaxed));
            let route = Arc::new(Route {
                service: e.service.clone(),
                address: e.address,
                backends,
                next: AtomicUsize::new(next),
            });
            for p in e.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
                t.by_address.insert((e.address, p.target), route.clone());
                if let Some(port) = p.ingress_port() {
                    t.ingress.entry(port).or_insert((route.clone(), p.target));
                }
            }
            t.namespaces.insert(e.service.namespace.clone());
            t.routes.insert(e.service.clone(), route);
        }
        t
    }

    /// The service listening on `address:port` inside containers.
    pub fn by_address(&self, address: Ipv4Addr, port: u16) -> Option<&Arc<Route>> {
        self.by_address.get(&(address, port))
    }

    /// The service and target port behind ingress port `port`.
    pub fn ingress(&self, port: u16) -> Option<&(Arc<Route>, u16)> {
        self.ingress.get(&port)
    }

    /// Every ingress port.
    pub fn ingress_ports(&self) -> BTreeSet<u16> {
        self.ingress.keys().copied().collect()
    }

    /// The route of a service.
    pub fn route(&self, s: &ServiceRef) -> Option<&Arc<Route>> {
        self.routes.get(s)
    }

    /// Resolves `name` (lowercase, without the trailing dot) for a container of namespace
    /// `ns`: `<svc>`, `<svc>.<ns>` and `<svc>.<ns>.shoal`. Anything else under `.shoal`, and
    /// `<x>.<ns>` for a namespace that has services, does not exist; other names are foreign.
    pub fn resolve(&self, name: &str, ns: &str) -> Resolution {
        let labels: Vec<&str> = name.split('.').collect();
        let lookup = |ns: &str, svc: &str| {
            let r = ServiceRef {
                namespace: ns.to_string(),
                name: svc.to_string(),
            };
            match self.routes.get(&r) {
                Some(route) => Resolution::Service(route.address),
                None => Resolution::NoSuchName,
            }
        };
        match labels.as_slice() {
            [svc, ns, DOMAIN] => lookup(ns, svc),
            [.., DOMAIN] => Resolution::NoSuchName,
            [svc, other] if self.namespaces.contains(*other) => lookup(other, svc),
            [svc] => match lookup(ns, svc) {
                Resolution::Service(a) => Resolution::Service(a),
                _ => Resolution::Foreign,
            },
            _ => Resolution::Foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::endpoints::Endpoint;
    use shoal_core::manifest::{PortMode, PortSpec};
    use shoal_core::model::PortBinding;

    fn record(ns: &str, name: &str, ip: [u8; 4], tasks: &[(&str, u16)]) -> Endpoints {
        Endpoints {
            service: ServiceRef {
                namespace: ns.into(),
                name: name.into(),
            },
            address: Ipv4Addr::from(ip),
            ports: vec![PortSpec {
                target: 80,
                published: Some(8080),
                protocol: Protocol::Tcp,
                mode: PortMode::Ingress,
            }],
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, (addr, port))| Endpoint {
                    task_id: format!("{name}.{i}"),
                    node_id: format!("n{i}"),
                    address: addr.to_string(),
                    ports: vec![PortBinding {
                        target: 80,
                        published: *port,
                        protocol: Protocol::Tcp,
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn names_resolve_in_every_form_and_unknown_shoal_names_do_not_exist() {
        let recs = [record("coins", "redis", [127, 64, 0, 9], &[])];
        let t = Table::build(&recs, &Table::default());
        let ip = Resolution::Service(Ipv4Addr::new(127, 64, 0, 9));
        assert_eq!(t.resolve("redis", "coins"), ip);
        assert_eq!(t.resolve("redis.coins", "other"), ip);
        assert_eq!(t.resolve("redis.coins.shoal", "other"), ip);
        assert_eq!(
            t.resolve("nope.coins.shoal", "coins"),
            Resolution::NoSuchName
        );
        assert_eq!(t.resolve("nope.coins", "coins"), Resolution::NoSuchName);
        assert_eq!(t.resolve("coins.shoal", "coins"), Resolution::NoSuchName);
        assert_eq!(t.resolve("example.com", "coins"), Resolution::Foreign);
        assert_eq!(t.resolve("redis", "other"), Resolution::Foreign);
    }

    #[test]
    fn connections_go_round_robin_over_every_backend() {
        let recs = [record(
            "default",
            "web",
            [127, 64, 0, 1],
            &[("10.0.0.1", 1000), ("10.0.0.2", 2000), ("10.0.0.3", 3000)],
        )];
        let t = Table::build(&recs, &Table::default());
        let route = t.by_address(Ipv4Addr::new(127, 64, 0, 1), 80).unwrap();
        let mut firsts = BTreeMap::<SocketAddr, usize>::new();
        for _ in 0..300 {
            let order = route.pick(80);
            assert_eq!(order.len(), 3, "every backend is a fallback");
            *firsts.entry(order[0]).or_default() += 1;
        }
        assert_eq!(
            firsts.values().copied().collect::<Vec<_>>(),
            [100, 100, 100]
        );
        assert_eq!(t.ingress(8080).map(|(_, p)| *p), Some(80));
        assert!(route.pick(81).is_empty());
    }
}
