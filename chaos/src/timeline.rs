//! The nemesis' faults as the checker sees them — what each one was, which nodes' agents it
//! disturbed, from when until its heal — and why tasks moved.
//!
//! A task moves when the controller declares its node down: the node's lease-bound record
//! expired, the controller marks the node's tasks orphaned and places replacements on other
//! nodes. Every such loss of a node is explained against the timeline: the lease ran out at
//! most one TTL after the agent's last successful keep-alive, so a fault active in that window
//! (plus [`SLACK`] for the store's and the watch's own delays) is a candidate cause. A fault on
//! the node's own host (its agent killed, its host partitioned or cut off from etcd, its link
//! degraded) explains it directly; otherwise the faults active elsewhere (an etcd member killed,
//! replaced or partitioned, a leader paused) are named. A node lost with no fault anywhere in
//! the window is unexplained: the checker reports it as such (with the machine's load then).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checker::STALE_BOUND;

/// Added to the lease TTL when looking for the faults that can have ended a node's lease:
/// etcd revokes an expired lease on its next check, and the watch delivers the deletion later.
pub const SLACK: Duration = Duration::from_secs(2);

/// Identifies a fault begun with [`Disturbance::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultId(usize);

#[derive(Debug, Clone)]
struct Span {
    label: String,
    nodes: Vec<String>,
    /// Whether it can keep agents on other hosts from the store.
    store: bool,
    began: Instant,
    healed: Option<Instant>,
}

impl Span {
    fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.began <= to && self.healed.is_none_or(|h| h >= from)
    }
}

/// The faults of the run so far: which nodes each disturbs and when it began and healed.
#[derive(Debug, Default)]
pub struct Disturbance {
    spans: Vec<Span>,
}

/// Why a node was lost (its tasks moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A fault on the node's own host: its agent killed, its host partitioned or cut off from
    /// etcd, its link degraded.
    FaultOnHost,
    /// No fault on its host, but faults elsewhere in the window that can keep an agent from
    /// the store (named in the record).
    FaultElsewhere,
    /// No fault in the window that can explain it (faults that cannot — a controller or the
    /// API killed, a leader paused — are still named).
    NoFault,
}

impl Disturbance {
    /// A fault called `label` began, disturbing the agents of `nodes`; `store`: it can keep
    /// agents on other hosts from the store too (an etcd member killed, replaced, partitioned
    /// or degraded: requests through that member, or from it to the raft leader, go
    /// unanswered).
    pub fn begin(&mut self, label: String, nodes: Vec<String>, store: bool) -> FaultId {
        self.spans.push(Span {
            label,
            nodes,
            store,
            began: Instant::now(),
            healed: None,
        });
        FaultId(self.spans.len() - 1)
    }

    /// The fault `id` healed.
    pub fn end(&mut self, id: FaultId) {
        if let Some(s) = self.spans.get_mut(id.0) {
            s.healed.get_or_insert_with(Instant::now);
        }
    }

    /// Whether a fault disturbing `node` is active now.
    pub fn active_on(&self, node: &str) -> bool {
        self.spans
            .iter()
            .any(|s| s.healed.is_none() && s.nodes.iter().any(|n| n == node))
    }

    /// When the last fault disturbing `node` healed.
    pub fn healed_at(&self, node: &str) -> Option<Instant> {
        self.spans
            .iter()
            .filter(|s| s.nodes.iter().any(|n| n == node))
            .filter_map(|s| s.healed)
            .max()
    }

    /// Whether `node` is disturbed now or healed less than [`STALE_BOUND`] ago: a stale copy
    /// there is allowed.
    pub fn excused(&self, node: &str, now: Instant) -> bool {
        self.active_on(node)
            || self
                .healed_at(node)
                .is_some_and(|h| now.duration_since(h) < STALE_BOUND)
    }

    /// Why `node`, whose record disappeared at `lost`, was lost with a lease of `ttl`: the
    /// cause and the labels of the faults active in the window before.
    pub fn explain(&self, node: &str, lost: Instant, ttl: Duration) -> (Cause, Vec<String>) {
        let from = lost.checked_sub(ttl + SLACK).unwrap_or(lost);
        let window: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| s.overlaps(from, lost))
            .collect();
        let on_host: Vec<String> = window
            .iter()
            .filter(|s| s.nodes.iter().any(|n| n == node))
            .map(|s| s.label.clone())
            .collect();
        if !on_host.is_empty() {
            return (Cause::FaultOnHost, on_host);
        }
        let labels = |store: bool| {
            window
                .iter()
                .filter(|s| s.store == store)
                .map(|s| s.label.clone())
                .collect::<Vec<_>>()
        };
        match labels(true) {
            l if l.is_empty() => (Cause::NoFault, labels(false)),
            l => (Cause::FaultElsewhere, l),
        }
    }
}

/// One loss of a node not caused by a fault on its host, and the tasks that moved off it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLoss {
    /// Seconds since the checker started, when the node's record disappeared.
    pub t: f64,
    /// The node.
    pub node: String,
    /// Why.
    pub cause: Cause,
    /// The faults active in the window before: those that can explain it, or for
    /// [`Cause::NoFault`] those that cannot.
    pub faults: Vec<String>,
    /// Tasks orphaned on it (moved elsewhere).
    pub tasks: u64,
    /// The machine's 1-minute load average then.
    pub load1: f64,
}

/// Tasks moved, per cause, and the node losses not caused by a fault on their own host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Moves {
    /// Tasks orphaned (moved to other nodes), per cause of their node's loss.
    pub by_cause: BTreeMap<Cause, u64>,
    /// The losses explained by faults elsewhere, or by none.
    pub losses: Vec<NodeLoss>,
}

/// The machine's 1-minute load average (0 when unreadable).
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Follows node losses and the tasks they move; fed by the checker.
#[derive(Debug, Default)]
pub struct MoveLog {
    /// When each node's record last disappeared, and the index of its loss in `moves.losses`
    /// (None: caused by a fault on its host, counted only).
    lost: HashMap<String, (Instant, f64, Option<usize>, Cause)>,
    moves: Moves,
}

impl MoveLog {
    /// `node`'s record disappeared at `at` (`t` seconds into the run).
    pub fn node_lost(
        &mut self,
        dist: &Disturbance,
        node: &str,
        at: Instant,
        t: f64,
        ttl: Duration,
    ) {
        let (cause, faults) = dist.explain(node, at, ttl);
        let index = (cause != Cause::FaultOnHost).then(|| {
            self.moves.losses.push(NodeLoss {
                t: crate::report::round(t),
                node: node.to_string(),
                cause,
                faults,
                tasks: 0,
                load1: load1(),
            });
            self.moves.losses.len() - 1
        });
        self.lost.insert(node.to_string(), (at, t, index, cause));
    }

    /// A task on `node` was orphaned (seen for the first time as such).
    pub fn task_moved(&mut self, dist: &Disturbance, node: &str, ttl: Duration) {
        if !self.lost.contains_key(node) {
            // The node was lost before the checker started (or its loss was not seen): the
            // moment it was declared down stands for the loss.
            self.node_lost(dist, node, Instant::now(), 0.0, ttl);
        }
        let (_, _, index, cause) = self.lost[node];
        *self.moves.by_cause.entry(cause).or_insert(0) += 1;
        if let Some(l) = index.and_then(|i| self.moves.losses.get_mut(i)) {
            l.tasks += 1;
        }
    }

    /// What was seen so far.
    pub fn moves(&self) -> Moves {
        self.moves.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_node_is_explained_by_the_faults_in_its_last_lease() {
        let ttl = Duration::from_secs(5);
        let mut d = Disturbance::default();
        let cut = d.begin("agent_cut_off(h1)".into(), vec!["h1".into()], false);
        let etcd = d.begin("kill(etcd-0)".into(), Vec::new(), true);
        let api = d.begin("kill(api)".into(), Vec::new(), false);
        let now = Instant::now();
        assert_eq!(
            d.explain("h1", now, ttl),
            (Cause::FaultOnHost, vec!["agent_cut_off(h1)".to_string()])
        );
        assert_eq!(
            d.explain("h2", now, ttl),
            (Cause::FaultElsewhere, vec!["kill(etcd-0)".to_string()])
        );
        d.end(etcd);
        // Healed longer than a lease (and the slack) before the loss: not a cause. Only
        // faults that cannot end another host's lease are left: unexplained, and named.
        let later = Instant::now() + ttl + SLACK + Duration::from_secs(1);
        assert_eq!(
            d.explain("h2", later, ttl),
            (
                Cause::NoFault,
                vec!["agent_cut_off(h1)".to_string(), "kill(api)".to_string()]
            )
        );
        d.end(cut);
        d.end(api);
        let later = Instant::now() + ttl + SLACK + Duration::from_secs(1);
        assert_eq!(d.explain("h2", later, ttl), (Cause::NoFault, Vec::new()));
        assert!(
            d.excused("h1", later),
            "a stale copy on h1 is still allowed"
        );
        assert!(!d.excused("h2", later));
    }

    #[test]
    fn moves_are_counted_per_cause_and_losses_elsewhere_listed() {
        let ttl = Duration::from_secs(5);
        let mut d = Disturbance::default();
        d.begin("partition_minority(h0)".into(), vec!["h0".into()], true);
        let mut log = MoveLog::default();
        let now = Instant::now();
        log.node_lost(&d, "h0", now, 10.0, ttl);
        log.node_lost(&d, "h2", now, 10.5, ttl);
        for node in ["h0", "h0", "h2"] {
            log.task_moved(&d, node, ttl);
        }
        let m = log.moves();
        assert_eq!(m.by_cause[&Cause::FaultOnHost], 2);
        assert_eq!(m.by_cause[&Cause::FaultElsewhere], 1);
        assert_eq!(m.losses.len(), 1, "{:?}", m.losses);
        assert_eq!(m.losses[0].node, "h2");
        assert_eq!(m.losses[0].tasks, 1);
        assert_eq!(
            m.losses[0].faults,
            vec!["partition_minority(h0)".to_string()]
        );
    }
}
