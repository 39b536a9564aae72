//! Typed joins of store records, so every component reads them alike: tasks with what their
//! agents last reported ([`TaskEntry`]), and nodes with their operator settings and readiness
//! ([`NodeEntry`], judged by the one rule [`is_ready`]). `shoal get`, the dashboard,
//! `/metrics` and the controller count and judge from these.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::keys::{Key, Keys};
use crate::model::{
    self, Capacity, DesiredState, ModelError, Node, NodeConfig, NodeInfo, Task, TaskState,
    TaskStatus, Timestamp,
};

/// A task with what its agent last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskEntry {
    /// The assignment written by the controller.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub task: Task,
    /// The agent's report (absent until the agent has seen the task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub status: Option<TaskStatus>,
    /// Whether the task is in its slot's history: finished, and a newer task of the slot
    /// exists (see [`slot_tasks`]). Set by [`mark_history`]; `GET /v1/tasks` sets it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
}

impl TaskEntry {
    /// A task with its status, not marked as history (see [`mark_history`]).
    pub fn new(task: Task, status: Option<TaskStatus>) -> Self {
        TaskEntry {
            task,
            status,
            history: false,
        }
    }

    /// The observed state (`assigned` before the agent reports).
    pub fn state(&self) -> TaskState {
        self.status
            .as_ref()
            .map_or(TaskState::Assigned, |s| s.state)
    }

    /// Whether the task will never run again: a final state, or orphaned.
    pub fn is_dead(&self) -> bool {
        self.state().is_terminal() || self.task.orphaned
    }

    /// Whether the controller wants it running.
    pub fn wants_running(&self) -> bool {
        self.task.desired_state == DesiredState::Running
    }
}

/// The tasks of one slot of a service: its current tasks (the newest, and any not finished
/// yet), then its history — earlier finished tasks, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotTasks<'a> {
    /// The newest task of the slot, and any other not finished yet.
    pub current: Vec<&'a TaskEntry>,
    /// Earlier finished tasks, newest first (kept up to the controller's
    /// `--task-history-limit`).
    pub earlier: Vec<&'a TaskEntry>,
}

/// Groups tasks per service and slot, in service and slot order (see [`SlotTasks`]).
pub fn slot_tasks(list: &[TaskEntry]) -> Vec<SlotTasks<'_>> {
    let mut by_slot: BTreeMap<(&crate::manifest::ServiceRef, &model::Slot), Vec<&TaskEntry>> =
        BTreeMap::new();
    for e in list {
        by_slot
            .entry((&e.task.service, &e.task.slot))
            .or_default()
            .push(e);
    }
    by_slot
        .into_values()
        .map(|mut tasks| {
            tasks.sort_by(|a, b| {
                let key = |e: &TaskEntry| (e.task.created_at, e.task.attempt, e.task.id.clone());
                key(b).cmp(&key(a))
            });
            let mut slot = SlotTasks {
                current: Vec::new(),
                earlier: Vec::new(),
            };
            for (rank, e) in tasks.into_iter().enumerate() {
                if rank == 0 || !e.state().is_terminal() {
                    slot.current.push(e);
                } else {
                    slot.earlier.push(e);
                }
            }
            slot
        })
        .collect()
}

/// Marks each task of `list` that is in its slot's history (a slot's `earlier` tasks of
/// [`slot_tasks`]); `list` must hold every task of the slots it names, or a task replaced by
/// one not in it would not be marked.
pub fn mark_history(list: &mut [TaskEntry]) {
    let earlier: BTreeSet<String> = slot_tasks(list)
        .into_iter()
        .flat_map(|slot| slot.earlier)
        .map(|e| e.task.id.clone())
        .collect();
    for e in list {
        e.history = earlier.contains(&e.task.id);
    }
}

/// The tasks of `list` slot by slot, as `shoal get tasks --all` and the dashboard show them:
/// each slot's current tasks, then (with `history`) its history, each newest first. Reads
/// the marks of [`mark_history`].
pub fn in_slot_order(list: &[TaskEntry], history: bool) -> Vec<&TaskEntry> {
    let mut out: Vec<&TaskEntry> = list.iter().filter(|e| history || !e.history).collect();
    out.sort_by(|a, b| slot_order(a, b));
    out
}

/// The order of [`in_slot_order`], for sorting a list in place.
pub fn slot_order(a: &TaskEntry, b: &TaskEntry) -> std::cmp::Ordering {
    fn key(
        e: &TaskEntry,
    ) -> (
        &crate::manifest::ServiceRef,
        &model::Slot,
        bool,
        Reverse<(Timestamp, u64)>,
    ) {
        let newest = Reverse((e.task.created_at, e.task.attempt));
        (&e.task.service, &e.task.slot, e.history, newest)
    }
    key(a).cmp(&key(b)).then_with(|| a.task.id.cmp(&b.task.id))
}

/// A node: what its agent reports, what operators set, and whether it is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    /// Node id.
    pub id: String,
    /// The agent's record (absent when the node's lease has expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub info: Option<NodeInfo>,
    /// Operator settings (defaults when never set).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: NodeConfig,
    /// Whether the node is ready: see [`is_ready`].
    pub ready: bool,
    /// Revision of `nodeconfig/<id>` (0 when never set).
    pub config_revision: i64,
}

/// The one readiness rule: a node is ready while its agent's lease-bound record exists, unless
/// an operator removed it (`shoal node rm --force` takes a live node out at once).
pub fn is_ready(has_record: bool, config: &NodeConfig) -> bool {
    has_record && !config.removed
}

impl NodeEntry {
    /// A node known by its id only (from its settings or its tasks): down until its agent
    /// registers.
    pub fn unknown(id: &str) -> Self {
        NodeEntry {
            id: id.to_string(),
            info: None,
            config: NodeConfig::default(),
            ready: false,
            config_revision: 0,
        }
    }

    /// The node as placement sees it; a node without a record gets a placeholder one (its id
    /// as host name, no address, no capacity).
    pub fn to_node(&self) -> Node {
        Node {
            info: self
                .info
                .clone()
                .unwrap_or_else(|| placeholder_info(&self.id)),
            config: self.config.clone(),
            ready: self.ready,
        }
    }
}

/// The record of a node whose agent never registered (or whose record is gone and unknown).
pub fn placeholder_info(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.to_string(),
        hostname: id.to_string(),
        address: String::new(),
        labels: BTreeMap::new(),
        runtimes: Vec::new(),
        capacity: Capacity::default(),
        role: "worker".to_string(),
        instance: String::new(),
        agent_version: String::new(),
        network_unavailable: None,
        agent_url: None,
        started_at: Timestamp(0),
    }
}

/// A store record the views read: key, value and the revision it was last written at.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Full key.
    pub key: &'a str,
    /// JSON value.
    pub value: &'a [u8],
    /// Revision it was last written at.
    pub revision: i64,
}

/// A record a view could not read (it is left out of the view).
#[derive(Debug, thiserror::Error)]
#[error("stored record {key} is invalid: {error}")]
pub struct Unreadable {
    /// Key of the record.
    pub key: String,
    /// Decoder error.
    #[source]
    pub error: ModelError,
}

/// A view and the records left out of it because they could not be read.
#[derive(Debug)]
pub struct Joined<T> {
    /// The view.
    pub view: T,
    /// Records that could not be decoded.
    pub unreadable: Vec<Unreadable>,
}

/// Joins task records (`tasks/<node>/<task>`) with status records
/// (`taskstatus/<node>/<task>`) by node and task id, sorted by service, slot, creation time
/// and id. Records of other kinds are ignored.
pub fn join_tasks<'a>(
    keys: &Keys,
    tasks: impl IntoIterator<Item = Record<'a>>,
    statuses: impl IntoIterator<Item = Record<'a>>,
) -> Joined<Vec<TaskEntry>> {
    let mut unreadable = Vec::new();
    let mut by_id: BTreeMap<(String, String), TaskStatus> = BTreeMap::new();
    for r in statuses {
        if let Some(Key::TaskStatus { node, task }) = keys.parse(r.key) {
            match model::decode::<TaskStatus>("task status", r.value) {
                Ok(s) => {
                    by_id.insert((node, task), s);
                }
                Err(error) => unreadable.push(Unreadable {
                    key: r.key.to_string(),
                    error,
                }),
            }
        }
    }
    let mut view = Vec::new();
    for r in tasks {
        let Some(Key::Task { node, task: id }) = keys.parse(r.key) else {
            continue;
        };
        match model::decode::<Task>("task", r.value) {
            Ok(task) => view.push(TaskEntry::new(task, by_id.remove(&(node, id)))),
            Err(error) => unreadable.push(Unreadable {
                key: r.key.to_string(),
                error,
            }),
        }
    }
    view.sort_by(|a, b| {
        (&a.task.service, &a.task.slot, a.task.created_at, &a.task.id).cmp(&(
            &b.task.service,
            &b.task.slot,
            b.task.created_at,
            &b.task.id,
        ))
    });
    Joined { view, unreadable }
}

/// Joins agent records (`nodes/<id>`), operator settings (`nodeconfig/<id>`) and the node ids
/// of task records (a node known only from its tasks is down, and still shown), by node id.
pub fn join_nodes<'a>(
    keys: &Keys,
    infos: impl IntoIterator<Item = Record<'a>>,
    configs: impl IntoIterator<Item = Record<'a>>,
    task_keys: impl IntoIterator<Item = &'a str>,
) -> Joined<BTreeMap<String, NodeEntry>> {
    let mut unreadable = Vec::new();
    let mut view: BTreeMap<String, NodeEntry> = BTreeMap::new();
    for r in infos {
        let Some(Key::Node(id)) = keys.parse(r.key) else {
            continue;
        };
        match model::decode::<NodeInfo>("node", r.value) {
            Ok(info) => {
                view.entry(id.clone())
                    .or_insert_with(|| NodeEntry::unknown(&id))
                    .info = Some(info);
            }
            Err(error) => unreadable.push(Unreadable {
                key: r.key.to_string(),
                error,
            }),
        }
    }
    for r in configs {
        let Some(Key::NodeConfig(id)) = keys.parse(r.key) else {
            continue;
        };
        match model::decode::<NodeConfig>("node config", r.value) {
            Ok(config) => {
                let n = view
                    .entry(id.clone())
                    .or_insert_with(|| NodeEntry::unknown(&id));
                n.config = config;
                n.config_revision = r.revision;
            }
            Err(error) => unreadable.push(Unreadable {
                key: r.key.to_string(),
                error,
            }),
        }
    }
    for key in task_keys {
        if let Some(Key::Task { node, .. }) = keys.parse(key) {
            view.entry(node.clone())
                .or_insert_with(|| NodeEntry::unknown(&node));
        }
    }
    for n in view.values_mut() {
        n.ready = is_ready(n.info.is_some(), &n.config);
    }
    Joined { view, unreadable }
}

#[cfg(test)]
mod tests;
