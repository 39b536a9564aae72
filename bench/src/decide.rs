//! The controller's decide path, timed in this process: S1's cluster (nodes like the hollow
//! agents', 90% `zone=a`, 10% `zone=b`; services of the bulk scenario, one in ten constrained
//! to zone b) placed through [`DecidePath`], with no store, network or other process taking
//! a share of the CPU.
//!
//! A round writes every manifest, reconciles each service once (its tasks placed and their
//! writes committed and echoed), then applies a `running` status for every task, as the
//! agents write them, and reconciles each service again (its status and endpoints follow).
//! The figure is the process's CPU time per 1,000 placements over the round, the part of
//! S1's `controller_cpu_s_per_1000_placements` that is the controller's own work.
//!
//! A standby round keeps every change of the round's store, and then a [`Standby`] applies
//! them to a cache of its own, as a standby controller's watch brings them: its CPU time per
//! 1,000 placements is what following the store costs beside the leader (S5), every change
//! but the nodes' held back. Applying those, as a standby does once the store is quiet,
//! is timed apart (`catchUpCpuS`). Keeping the changes costs the leader's side of such a
//! round a little, so its decide figures are not reported.

use serde_json::{Value, json};
use shoal_controller::runner::offline::{DecidePath, Standby};
use shoal_core::manifest::ServiceRef;
use shoal_core::model::{self, Capacity, NodeInfo, TaskState, TaskStatus, Timestamp};
use shoal_core::units::ByteSize;

use crate::cluster::cpu_seconds;
use crate::scenarios::manifest;

/// What one round places.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Nodes (64 CPUs, 256 GiB each, as the hollow agents offer).
    pub nodes: usize,
    /// Services.
    pub services: usize,
    /// Replicas per service.
    pub replicas: usize,
    /// Services already placed and running before the round's own (as S1's last run is
    /// when S5 starts), not timed.
    pub existing_services: usize,
    /// Nodes whose records appeared and went before the round (as S2's extra nodes have
    /// when S3 to S5 run), not timed.
    pub gone_nodes: usize,
}

/// What one round measured.
#[derive(Debug, Clone)]
pub struct Round {
    /// Tasks placed.
    pub placed: usize,
    /// CPU seconds placing them (first reconcile of every service).
    pub place_cpu_s: f64,
    /// CPU seconds applying their statuses and reconciling every service again.
    pub settle_cpu_s: f64,
    /// CPU seconds of a standby following every change of the round, and of applying the
    /// changes it held back (a standby round only).
    pub standby_cpu_s: Option<(f64, f64)>,
}

impl Round {
    /// CPU seconds of the whole round per 1,000 placements.
    pub fn cpu_per_1000(&self) -> f64 {
        (self.place_cpu_s + self.settle_cpu_s) / self.thousands()
    }

    /// What the round measured, CPU seconds per 1,000 placements (the standby's in a standby
    /// round), with the times behind it added to `extra`.
    pub fn figure(&self, mut extra: Value) -> (f64, Value) {
        extra["placed"] = json!(self.placed);
        match self.standby_cpu_s {
            Some((s, catch_up)) => {
                extra["standbyCpuS"] = json!(s);
                extra["catchUpCpuS"] = json!(catch_up);
                (s / self.thousands(), extra)
            }
            None => {
                extra["placeCpuS"] = json!(self.place_cpu_s);
                extra["settleCpuS"] = json!(self.settle_cpu_s);
                (self.cpu_per_1000(), extra)
            }
        }
    }

    fn thousands(&self) -> f64 {
        self.placed.max(1) as f64 / 1000.0
    }
}

/// The CPU time this process has used, in seconds.
fn cpu_now() -> f64 {
    cpu_seconds(std::process::id())
}

/// A node as a hollow agent registers it (the test kit's node, with the hollow agents'
/// capacity).
fn node_info(id: &str, zone: &str) -> NodeInfo {
    NodeInfo {
        capacity: Capacity {
            cpus: 64.0,
            memory: ByteSize(256 << 30),
        },
        ..shoal_tests::cluster::node_info(id, &[("zone", zone)])
    }
}

/// One round on a fresh cache; a `standby` round also times a standby applying its changes.
pub fn round(sizes: &Sizes, standby: bool) -> Round {
    let mut path = if standby {
        DecidePath::keeping_changes()
    } else {
        DecidePath::new()
    };
    let zone_b = sizes.nodes / 10;
    for i in 0..sizes.nodes {
        let (id, zone) = if i < zone_b {
            (format!("node-b-{i:05}"), "b")
        } else {
            (format!("node-a-{i:05}"), "a")
        };
        let key = path.keys().node(&id);
        path.write(&key, Some(&model::encode(&node_info(&id, zone))));
    }
    for i in 0..sizes.gone_nodes {
        let id = format!("node-gone-{i:05}");
        let key = path.keys().node(&id);
        path.write(&key, Some(&model::encode(&node_info(&id, "a"))));
        path.write(&key, None);
    }
    let existing = write_services(&mut path, "s0", sizes.existing_services, sizes.replicas);
    let existing_tasks = place(&mut path, &existing);
    settle(&mut path, &existing, &existing_tasks);
    // A standby that has followed the store so far: only what the round changes is timed.
    let follower = standby.then(|| {
        let follower = Standby::new();
        follower.apply(path.take_changes());
        follower.catch_up();
        follower
    });
    let services = write_services(&mut path, "s1", sizes.services, sizes.replicas);
    let cpu0 = cpu_now();
    let tasks = place(&mut path, &services);
    let cpu1 = cpu_now();
    settle(&mut path, &services, &tasks);
    let cpu2 = cpu_now();
    let standby_cpu_s = follower.map(|follower| {
        let changes = path.take_changes();
        let cpu3 = cpu_now();
        follower.apply(changes);
        let cpu4 = cpu_now();
        follower.catch_up();
        (cpu4 - cpu3, cpu_now() - cpu4)
    });
    Round {
        placed: tasks.len(),
        place_cpu_s: cpu1 - cpu0,
        settle_cpu_s: cpu2 - cpu1,
        standby_cpu_s,
    }
}

/// Writes the manifests of `count` services named `<prefix>-NNNNN`, one in ten constrained
/// to zone b.
fn write_services(
    path: &mut DecidePath,
    prefix: &str,
    count: usize,
    replicas: usize,
) -> Vec<ServiceRef> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i:05}");
            let text = manifest(&name, replicas, i % 10 == 0, 1);
            let sref = ServiceRef {
                namespace: "bench".into(),
                name,
            };
            let key = path.keys().service(&sref);
            path.write(&key, Some(text.as_bytes()));
            sref
        })
        .collect()
}

/// Reconciles each service once: the tasks it placed, with their nodes.
fn place(path: &mut DecidePath, services: &[ServiceRef]) -> Vec<(String, String)> {
    let mut tasks = Vec::new();
    for s in services {
        tasks.extend(path.reconcile(s).created);
    }
    tasks
}

/// Applies a `running` status for every task, as the agents write them, and reconciles each
/// service again.
fn settle(path: &mut DecidePath, services: &[ServiceRef], tasks: &[(String, String)]) {
    for (node, task) in tasks {
        let status = TaskStatus::new(task.clone(), TaskState::Running, Timestamp::now());
        let key = path.keys().task_status(node, task);
        path.write(&key, Some(&model::encode(&status)));
    }
    for s in services {
        path.reconcile(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_places_every_replica() {
        let sizes = Sizes {
            nodes: 20,
            services: 10,
            replicas: 5,
            existing_services: 0,
            gone_nodes: 0,
        };
        let r = round(&sizes, false);
        assert_eq!(r.placed, 50);
        assert_eq!(r.standby_cpu_s, None);
        let r = round(&sizes, true);
        assert_eq!(r.placed, 50);
        assert!(r.standby_cpu_s.is_some_and(|(s, c)| s >= 0.0 && c >= 0.0));
        let (_, extra) = r.figure(json!({}));
        assert!(extra.get("standbyCpuS").is_some(), "{extra}");
        assert!(extra.get("catchUpCpuS").is_some(), "{extra}");
    }

    #[test]
    fn a_round_beside_existing_services_and_gone_nodes_counts_only_its_own_placements() {
        let sizes = Sizes {
            nodes: 20,
            services: 4,
            replicas: 5,
            existing_services: 6,
            gone_nodes: 3,
        };
        assert_eq!(round(&sizes, false).placed, 20);
        assert_eq!(round(&sizes, true).placed, 20);
    }
}
