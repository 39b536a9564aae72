//! The cache's task records by node, then task id: hash tables, so that the lookups every
//! watch event and every reconcile input make (a hundred thousand records at S1's size) hash
//! two short strings instead of comparing them down a tree, and what concerns one node (a
//! node's change, a node gone for good) finds its records together. A node's id is stored
//! once, not once per task.

use std::collections::HashMap;

use super::FastHash;
use super::compact::TaskRecord;

/// A task's `(node, task id)`.
pub(super) type TaskKey = (String, String);

/// Task records by node, then task id.
#[derive(Debug, Default)]
pub(super) struct TaskTable {
    by_node: HashMap<String, HashMap<String, TaskRecord, FastHash>, FastHash>,
}

impl TaskTable {
    pub(super) fn get(&self, (node, task): &TaskKey) -> Option<&TaskRecord> {
        self.by_node.get(node)?.get(task)
    }

    pub(super) fn get_mut(&mut self, (node, task): &TaskKey) -> Option<&mut TaskRecord> {
        self.by_node.get_mut(node)?.get_mut(task)
    }

    /// A new, empty record for `k`, which has none (the ids are copied only here: a lookup
    /// with [`TaskTable::get_mut`] comes first).
    pub(super) fn insert_default(&mut self, (node, task): &TaskKey) -> &mut TaskRecord {
        self.by_node
            .entry(node.clone())
            .or_default()
            .entry(task.clone())
            .or_default()
    }

    /// Forgets the record of `k` (a node left without records goes too).
    pub(super) fn remove(&mut self, (node, task): &TaskKey) {
        let Some(tasks) = self.by_node.get_mut(node) else {
            return;
        };
        tasks.remove(task);
        if tasks.is_empty() {
            self.by_node.remove(node);
        }
    }

    /// Every record as `(node, task id, record)`, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &String, &TaskRecord)> {
        self.by_node
            .iter()
            .flat_map(|(n, tasks)| tasks.iter().map(move |(t, r)| (n, t, r)))
    }

    /// The nodes some record names.
    pub(super) fn nodes(&self) -> impl Iterator<Item = &String> {
        self.by_node.keys()
    }

    /// The records of `node`, in task id order.
    pub(super) fn of_node(&self, node: &str) -> Vec<(&str, &TaskRecord)> {
        let mut out: Vec<(&str, &TaskRecord)> = self
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|(t, r)| (t.as_str(), r))
            .collect();
        out.sort_unstable_by_key(|(t, _)| *t);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::model::{TaskState, TaskStatus, Timestamp};

    fn key(n: &str, t: &str) -> TaskKey {
        (n.to_string(), t.to_string())
    }

    fn with_status(table: &mut TaskTable, k: &TaskKey) {
        table.insert_default(k).status = Some(TaskStatus::new(
            k.1.clone(),
            TaskState::Running,
            Timestamp(1),
        ));
    }

    #[test]
    fn a_nodes_records_are_listed_in_task_order_until_the_last_goes() {
        let mut t = TaskTable::default();
        for k in [key("n1", "b"), key("n2", "a"), key("n1", "a")] {
            with_status(&mut t, &k);
        }
        let ids: Vec<&str> = t.of_node("n1").into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(t.get(&key("n2", "a")).is_some());
        assert!(
            t.get(&key("n2", "b")).is_none(),
            "looked up on its own node"
        );
        t.remove(&key("n1", "a"));
        t.remove(&key("n1", "a"));
        assert_eq!(t.of_node("n1").len(), 1);
        t.remove(&key("n1", "b"));
        assert!(t.of_node("n1").is_empty());
        let nodes: Vec<&String> = t.nodes().collect();
        assert_eq!(nodes, ["n2"], "a node without records is no longer named");
        assert_eq!(t.iter().count(), 1);
    }
}
