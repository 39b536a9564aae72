//! Placement: choosing a node for each new task. Filters first (each explains itself), then
//! ranking (spread, optionally over label values first, or binpack), with node id as the
//! deterministic tie-break. A [`Placer`] keeps its accounting up to date as it places. With
//! spread preferences every placement ranks every node (O(nodes) per task: one placement
//! moves a whole group's counts); without them the nodes wait in a heap ordered by rank, and a
//! placement costs O(log nodes) — see [`rank`].

pub mod filters;
mod rank;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use shoal_core::constraint::{Attribute, Constraint, ConstraintError};
use shoal_core::manifest::{RuntimeKind, ServiceSpec};
use shoal_core::model::{Node, TaskTemplate};

pub use filters::{Demand, NodeUsage, Reason, Usage, add_usage};

/// Errors building a placer.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// A constraint of the spec does not parse.
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    /// A spread preference names an unknown attribute.
    #[error(
        "placement preference spread: {0:?} is not a node attribute (expected node.labels.KEY, node.hostname, node.id or node.role)"
    )]
    Preference(String),
}

/// Why no node could take a task: `0/5 nodes available: 3 not matching node.labels.storage==ssd,
/// 2 insufficient memory` (reasons sorted by count, most first, then by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Nodes that could take the task.
    pub available: usize,
    /// Nodes considered.
    pub total: usize,
    /// Nodes refused, per reason.
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} nodes available", self.available, self.total)?;
        if self.total == 0 {
            return f.write_str(": no nodes registered");
        }
        let mut reasons: Vec<(&String, &usize)> = self.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (i, (reason, n)) in reasons.into_iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            write!(f, "{n} {reason}")?;
        }
        Ok(())
    }
}

/// One node as the placer sees it.
#[derive(Debug)]
pub(crate) struct Candidate<'a> {
    /// The node's id (its key in the node map).
    id: &'a str,
    pub(crate) node: &'a Node,
    /// Why the node may not receive new tasks (ready, availability, runtime, constraints).
    pub(crate) blocked: Option<Reason>,
    /// Everything reserved on the node, this service's tasks included.
    pub(crate) usage: NodeUsage,
    /// This service's running-desired tasks on the node.
    pub(crate) own: u64,
    /// Group index per spread preference level.
    pub(crate) groups: Vec<usize>,
}

/// What a service asks of a node whatever the node holds: readiness, availability, runtime,
/// constraints. Every reconcile asks it for the nodes its tasks are on (may they stay?) and,
/// for a global service, of every node; it costs nothing to build, unlike a [`Placer`], which
/// walks every node and is built only when there is something to place.
#[derive(Debug)]
pub struct Filters<'a> {
    nodes: &'a BTreeMap<String, Node>,
    runtime: RuntimeKind,
    constraints: Vec<Arc<Constraint>>,
    prefs: Vec<Attribute>,
}

impl<'a> Filters<'a> {
    /// The filters of `spec` over `nodes`; an error when a constraint or a spread
    /// preference does not parse.
    pub fn new(
        spec: &ServiceSpec,
        nodes: &'a BTreeMap<String, Node>,
    ) -> Result<Self, PlacementError> {
        let constraints = spec
            .placement
            .constraints
            .iter()
            .map(|c| Constraint::parse(c).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let prefs = spec
            .placement
            .preferences
            .iter()
            .map(|p| {
                Attribute::parse(&p.spread)
                    .ok_or_else(|| PlacementError::Preference(p.spread.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Filters {
            nodes,
            runtime: spec.runtime,
            constraints,
            prefs,
        })
    }

    /// Why a node may not keep running the tasks of this service it has (not ready, drained,
    /// without the runtime, not matching a constraint); `None` when it may. A paused node
    /// keeps its tasks. A node without a record is not ready.
    pub fn keep_filter(&self, node: &str) -> Option<Reason> {
        match self.nodes.get(node) {
            Some(n) => filters::keep_filter(n, self.runtime, &self.constraints),
            None => Some(Reason::NotReady),
        }
    }

    /// Whether a node accepts new tasks of this service at all (ready, active, runtime,
    /// constraints), whatever it already holds: the global-service test.
    pub fn accepts(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| filters::static_filter(n, self.runtime, &self.constraints).is_none())
    }
}

/// Places tasks of one service, keeping the node accounting current as it goes.
#[derive(Debug)]
pub struct Placer<'a> {
    /// What the service asks of every node, whatever it holds.
    filters: Filters<'a>,
    /// In node id order.
    pub(crate) candidates: Vec<Candidate<'a>>,
    /// Nodes that are not ready, left out of `candidates` (without spread preferences, where
    /// such a node plays no part but its "not ready" in explanations): a cluster that
    /// thousands of nodes left would otherwise walk them all in every reconcile.
    not_ready: usize,
    /// Per preference level, this service's tasks per group.
    pub(crate) group_counts: Vec<Vec<u64>>,
    pub(crate) binpack: bool,
    demand: Demand,
    template: TaskTemplate,
    /// Without spread preferences: the candidates that may still take a task, by rank;
    /// built by the first [`Placer::place`] after the accounting last changed otherwise.
    ranked: Option<rank::Ranked>,
}

impl<'a> Placer<'a> {
    /// A placer for `spec` over `nodes`, starting from `usage` (what other services
    /// reserve per node). Account this service's existing tasks with [`Placer::account`].
    pub fn new(
        spec: &ServiceSpec,
        nodes: &'a BTreeMap<String, Node>,
        usage: &Usage,
    ) -> Result<Self, PlacementError> {
        Ok(Self::with_filters(Filters::new(spec, nodes)?, spec, usage))
    }

    /// A placer for `spec` from its `filters`, starting from `usage`: walks every node once.
    pub fn with_filters(filters: Filters<'a>, spec: &ServiceSpec, usage: &Usage) -> Self {
        let prefs = &filters.prefs;
        let mut group_ids: Vec<BTreeMap<Option<String>, usize>> =
            vec![BTreeMap::new(); prefs.len()];
        let mut candidates = Vec::with_capacity(filters.nodes.len());
        let mut usage = usage.in_node_order();
        let mut not_ready = 0;
        // In node id order (the map's): a candidate's index is its rank in the tie-break.
        for (id, node) in filters.nodes {
            // With spread preferences a node that is not ready still counts the tasks it
            // holds in its group.
            if !node.ready && prefs.is_empty() {
                not_ready += 1;
                continue;
            }
            let view = shoal_core::constraint::NodeView::from(node);
            let groups = prefs
                .iter()
                .zip(group_ids.iter_mut())
                .map(|(attr, ids)| {
                    let value = attr.value(&view).map(str::to_string);
                    let next = ids.len();
                    *ids.entry(value).or_insert(next)
                })
                .collect();
            candidates.push(Candidate {
                id,
                node,
                blocked: filters::static_filter(node, filters.runtime, &filters.constraints),
                usage: usage.get(id),
                own: 0,
                groups,
            });
        }
        let template = TaskTemplate::from_spec(spec);
        Placer {
            candidates,
            not_ready,
            group_counts: group_ids.iter().map(|ids| vec![0; ids.len()]).collect(),
            binpack: spec.placement.strategy == shoal_core::manifest::PlacementStrategy::Binpack,
            demand: Demand::of(&template, spec.placement.max_replicas_per_node),
            template,
            ranked: None,
            filters,
        }
    }

    /// Accounts an existing task of this service on `node`: `reserves` when it is not
    /// finished (its resources and ports are held), `live` when it is wanted running
    /// (counts for spread and `maxReplicasPerNode`).
    pub fn account(&mut self, node: &str, template: &TaskTemplate, reserves: bool, live: bool) {
        let Some(i) = self.index(node) else {
            return;
        };
        self.ranked = None;
        let c = &mut self.candidates[i];
        if reserves {
            c.usage.add_template(template);
        }
        if live {
            c.own += 1;
            for (level, g) in c.groups.iter().enumerate() {
                self.group_counts[level][*g] += 1;
            }
        }
    }

    /// The candidate of node `node`, found by its id (candidates are in id order).
    fn index(&self, node: &str) -> Option<usize> {
        self.candidates.binary_search_by(|c| c.id.cmp(node)).ok()
    }

    fn commit(&mut self, i: usize) {
        let c = &mut self.candidates[i];
        c.usage.add_template(&self.template);
        c.own += 1;
        for (level, g) in c.groups.iter().enumerate() {
            self.group_counts[level][*g] += 1;
        }
    }

    fn reason(&self, i: usize) -> Option<Reason> {
        let c = &self.candidates[i];
        c.blocked
            .clone()
            .or_else(|| filters::dynamic_filter(c.node, &c.usage, c.own, &self.demand))
    }

    /// Places one task: the best node that passes every filter, accounted immediately.
    pub fn place(&mut self) -> Result<String, Explanation> {
        let best = if self.group_counts.is_empty() {
            rank::best_ranked(self)
        } else {
            self.best_scanned()
        };
        match best {
            Some(i) => {
                self.commit(i);
                rank::put_back(self, i);
                Ok(self.candidates[i].node.info.id.clone())
            }
            None => Err(self.explain_all()),
        }
    }

    /// Whether candidate `i` can take a task now.
    fn fits(&self, i: usize) -> bool {
        let c = &self.candidates[i];
        c.blocked.is_none()
            && filters::dynamic_filter(c.node, &c.usage, c.own, &self.demand).is_none()
    }

    /// The best candidate that fits, found by ranking every one.
    fn best_scanned(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for i in (0..self.candidates.len()).filter(|&i| self.fits(i)) {
            best = match best {
                Some(b) if rank::better(self, b, i) => Some(b),
                _ => Some(i),
            };
        }
        best
    }

    /// Candidate `i`'s rank without spread preferences.
    fn rank_of(&self, i: usize) -> rank::Rank {
        rank::rank(&self.candidates[i], self.binpack)
    }

    /// [`Placer::place`] by ranking every candidate, as with spread preferences (tests
    /// compare it with the heap).
    #[cfg(test)]
    pub(crate) fn place_scanned(&mut self) -> Option<String> {
        let i = self.best_scanned()?;
        self.commit(i);
        self.ranked = None;
        Some(self.candidates[i].node.info.id.clone())
    }

    /// The placer's filters: see [`Filters::accepts`] and [`Filters::keep_filter`].
    pub fn filters(&self) -> &Filters<'a> {
        &self.filters
    }

    /// Places one task on a given node (global services), accounted immediately.
    pub fn place_on(&mut self, node: &str) -> Result<(), Reason> {
        let Some(i) = self.index(node) else {
            return Err(Reason::NotReady);
        };
        match self.reason(i) {
            Some(r) => Err(r),
            None => {
                self.commit(i);
                self.ranked = None;
                Ok(())
            }
        }
    }

    /// Counts, over every node, the first filter that refuses the task.
    pub fn explain_all(&self) -> Explanation {
        let mut reasons = BTreeMap::new();
        if self.not_ready > 0 {
            reasons.insert(Reason::NotReady.to_string(), self.not_ready);
        }
        let mut available = 0;
        for i in 0..self.candidates.len() {
            match self.reason(i) {
                Some(r) => *reasons.entry(r.to_string()).or_insert(0) += 1,
                None => available += 1,
            }
        }
        Explanation {
            available,
            total: self.node_count(),
            reasons,
        }
    }

    /// Number of nodes considered.
    pub fn node_count(&self) -> usize {
        self.candidates.len() + self.not_ready
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
