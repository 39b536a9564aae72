//! What the dashboard pages show, read through the same handlers that answer `/v1` (so a
//! page counts exactly what `shoal get` prints), plus the sums and pages the tables need.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use shoal_core::model::Event;
use shoal_core::model::TaskState;
use shoal_core::{ServiceRef, Timestamp};
use shoal_store::Revision;

use crate::ApiState;
use crate::error::ApiError;
use crate::handlers::{cluster, services};
use crate::types::{NodeEntry, ServiceResource, TaskEntry};

/// Rows per page of every table.
pub const PAGE_SIZE: usize = 50;

/// The service statuses the overview counts, in display order.
pub const SERVICE_PHASES: [&str; 7] = [
    "Converged",
    "Progressing",
    "Paused",
    "RolledBack",
    "Invalid",
    "Unschedulable",
    "Pending",
];

/// Services, optionally in one namespace and matching a label selector (`GET /v1/services`).
pub async fn services(
    st: &ApiState,
    namespace: Option<String>,
    selector: Option<String>,
) -> Result<Vec<ServiceResource>, ApiError> {
    let q = services::ListQuery {
        namespace,
        selector,
    };
    Ok(services::list(State(st.clone()), Query(q)).await?.0)
}

/// One service (`GET /v1/services/{ns}/{name}`).
pub async fn service(st: &ApiState, r: &ServiceRef) -> Result<ServiceResource, ApiError> {
    services::load_one(st, r).await
}

/// Tasks, of one service or one node or all (`GET /v1/tasks`), slot by slot: each slot's
/// current tasks, then its history (marked), newest first.
pub async fn tasks(
    st: &ApiState,
    service: Option<&ServiceRef>,
    node: Option<&str>,
) -> Result<Vec<TaskEntry>, ApiError> {
    let q = cluster::TaskQuery {
        service: service.map(ToString::to_string),
        node: node.map(str::to_string),
        history: None,
    };
    let mut list = cluster::tasks(State(st.clone()), Query(q)).await?.0;
    list.sort_by(shoal_core::view::slot_order);
    Ok(list)
}

/// Nodes (`GET /v1/nodes`).
pub async fn nodes(st: &ApiState) -> Result<Vec<NodeEntry>, ApiError> {
    Ok(cluster::nodes(State(st.clone())).await?.0)
}

/// One node (`GET /v1/nodes/{id}`).
pub async fn node(st: &ApiState, id: &str) -> Result<NodeEntry, ApiError> {
    Ok(cluster::node(State(st.clone()), Path(id.to_string()))
        .await?
        .0)
}

/// The store's current revision: live updates start after it, so the page and the stream
/// miss nothing between them.
pub async fn revision(st: &ApiState) -> Result<Revision, ApiError> {
    Ok(st.store.list(&st.keys.leader()).await?.revision)
}

/// The state word of a task, as `shoal get tasks` prints it.
pub fn task_state(t: &TaskEntry) -> String {
    t.state().to_string()
}

/// Whether a task is running.
pub fn is_running(t: &TaskEntry) -> bool {
    t.state() == TaskState::Running
}

/// The overview's count key of a service: its `shoal get` STATUS word without the rollback
/// suffix, a rollout in progress counted as `Progressing`, a paused rollback as `Paused` and
/// a rollback in progress as `RolledBack`.
pub fn phase_key(s: &ServiceResource) -> String {
    let phase = s.phase();
    let word = phase.split(' ').next().unwrap_or_default();
    match word {
        "Updating" => "Progressing".into(),
        "RollbackPaused" => "Paused".into(),
        "RollingBack" => "RolledBack".into(),
        w => w.into(),
    }
}

/// Counts by key, in the order of `order` first (zeros included), then any other key.
pub fn count_by<T>(
    items: &[T],
    order: &[&str],
    key: impl Fn(&T) -> String,
) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in items {
        *counts.entry(key(i)).or_default() += 1;
    }
    let mut out: Vec<(String, usize)> = order
        .iter()
        .map(|k| (k.to_string(), counts.remove(*k).unwrap_or(0)))
        .collect();
    out.extend(counts);
    out
}

/// The state word of a node, as `shoal get nodes` prints it.
pub fn node_state(n: &NodeEntry) -> &'static str {
    if n.ready { "Ready" } else { "Down" }
}

/// A service's event with the service it belongs to.
#[derive(Debug, Clone)]
pub struct ServiceEvent {
    /// The service.
    pub service: ServiceRef,
    /// The event.
    pub event: Event,
}

/// The most recent `Warning` events of all services, newest first.
pub fn recent_warnings(list: &[ServiceResource], limit: usize) -> Vec<ServiceEvent> {
    let mut out: Vec<ServiceEvent> = list
        .iter()
        .flat_map(|s| {
            let r = ServiceRef {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            };
            s.status
                .iter()
                .flat_map(|st| st.events.iter())
                .filter(|e| e.kind == "Warning")
                .map(move |e| ServiceEvent {
                    service: r.clone(),
                    event: e.clone(),
                })
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.event.time));
    out.truncate(limit);
    out
}

/// CPU and memory reserved on a node by the tasks meant to run there.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Tasks meant to run (not terminal, desired running).
    pub tasks: usize,
    /// CPUs reserved.
    pub cpus: f64,
    /// Bytes of memory reserved.
    pub memory: u64,
}

/// Usage per node id, from the tasks' reservations.
pub fn usage_by_node(tasks: &[TaskEntry]) -> BTreeMap<String, Usage> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for t in tasks {
        let ended = t.status.as_ref().is_some_and(|s| s.state.is_terminal());
        if ended || t.task.desired_state != shoal_core::model::DesiredState::Running {
            continue;
        }
        let u = out.entry(t.task.node_id.clone()).or_default();
        let r = &t.task.template.reservations;
        u.tasks += 1;
        u.cpus += r.cpus.unwrap_or(0.0);
        u.memory += r.memory.map_or(0, |m| m.0);
    }
    out
}

/// One page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number (clamped to the last page).
    pub number: usize,
    /// Pages in all (at least 1).
    pub count: usize,
    /// Items in all.
    pub total: usize,
}

impl Page {
    /// Page `asked` (1-based, clamped) of `total` items.
    pub fn new(asked: Option<usize>, total: usize) -> Self {
        let count = total.div_ceil(PAGE_SIZE).max(1);
        Page {
            number: asked.unwrap_or(1).clamp(1, count),
            count,
            total,
        }
    }

    /// The items of this page.
    pub fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let start = (self.number - 1) * PAGE_SIZE;
        &items[start.min(items.len())..(start + PAGE_SIZE).min(items.len())]
    }
}

/// How long ago `t` was, rounded to a readable unit (`42s`, `5m`, `3h`, `2d`).
pub fn age(t: Timestamp) -> String {
    let s = Timestamp::now().since(t).as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_clamp_and_slice() {
        let items: Vec<usize> = (0..120).collect();
        let p = Page::new(Some(3), items.len());
        assert_eq!((p.number, p.count), (3, 3));
        assert_eq!(p.slice(&items), &items[100..]);
        assert_eq!(Page::new(Some(9), 120).number, 3);
        assert_eq!(Page::new(None, 0).count, 1);
        assert!(Page::new(Some(0), 0).slice(&items[..0]).is_empty());
    }

    #[test]
    fn counts_keep_the_order_and_zeros() {
        let c = count_by(&["b", "a", "b", "z"], &["a", "b", "c"], |s| s.to_string());
        assert_eq!(
            c,
            vec![
                ("a".into(), 1),
                ("b".into(), 2),
                ("c".into(), 0),
                ("z".into(), 1)
            ]
        );
    }
}
