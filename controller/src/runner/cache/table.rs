//! The cache's task records by `(node, task id)`: a hash table, so that the lookups every
//! watch event and every reconcile input make (a hundred thousand records at S1's size)
//! hash two short strings instead of comparing them down a tree, with the task ids of each
//! node beside it for what concerns one node (a node's change, a node gone for good).

use std::collections::{BTreeSet, HashMap};

use super::compact::TaskRecord;

/// A task's `(node, task id)`.
pub(super) type TaskKey = (String, String);

/// Task records, and the ids of each node's.
#[derive(Debug, Default)]
pub(super) struct TaskTable {
    records: HashMap<TaskKey, TaskRecord, foldhash::fast::RandomState>,
    by_node: HashMap<String, BTreeSet<String>, foldhash::fast::RandomState>,
}

impl TaskTable {
    pub(super) fn get(&self, k: &TaskKey) -> Option<&TaskRecord> {
        self.records.get(k)
    }

    pub(super) fn get_mut(&mut self, k: &TaskKey) -> Option<&mut TaskRecord> {
        self.records.get_mut(k)
    }

    pub(super) fn contains_key(&self, k: &TaskKey) -> bool {
        self.records.contains_key(k)
    }

    /// The record of `k`, an empty one added when there is none.
    pub(super) fn get_or_default(&mut self, k: &TaskKey) -> &mut TaskRecord {
        if !self.records.contains_key(k) {
            match self.by_node.get_mut(&k.0) {
                Some(ids) => ids.insert(k.1.clone()),
                None => self
                    .by_node
                    .entry(k.0.clone())
                    .or_default()
                    .insert(k.1.clone()),
            };
        }
        self.records.entry(k.clone()).or_default()
    }

    /// Forgets the record of `k` (a node left without records goes too).
    pub(super) fn remove(&mut self, k: &TaskKey) {
        if self.records.remove(k).is_none() {
            return;
        }
        if let Some(ids) = self.by_node.get_mut(&k.0) {
            ids.remove(&k.1);
            if ids.is_empty() {
                self.by_node.remove(&k.0);
            }
        }
    }

    /// Every record, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&TaskKey, &TaskRecord)> {
        self.records.iter()
    }

    /// The nodes some record names.
    pub(super) fn nodes(&self) -> impl Iterator<Item = &String> {
        self.by_node.keys()
    }

    /// The records of `node`, in task id order.
    pub(super) fn of_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a TaskRecord)> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(move |t| {
                let r = self.records.get(&(node.to_string(), t.clone()))?;
                Some((t.as_str(), r))
            })
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
        table.get_or_default(k).status = Some(TaskStatus::new(
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
        let ids: Vec<&str> = t.of_node("n1").map(|(id, _)| id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(t.contains_key(&key("n2", "a")));
        assert!(
            t.get(&key("n2", "b")).is_none(),
            "looked up on its own node"
        );
        t.remove(&key("n1", "a"));
        t.remove(&key("n1", "a"));
        assert_eq!(t.of_node("n1").count(), 1);
        t.remove(&key("n1", "b"));
        assert_eq!(t.of_node("n1").count(), 0);
        let nodes: Vec<&String> = t.nodes().collect();
        assert_eq!(nodes, ["n2"], "a node without records is no longer named");
        assert_eq!(t.iter().count(), 1);
    }
}
