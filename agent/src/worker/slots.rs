//! What the worker holds per task, keyed by node, then task id: a hollow agent holds one
//! entry per task of a thousand nodes, so a node's id is stored once (shared by all of its
//! entries) and a task's id once, in the compact form of a boxed string.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A task's `(node, task)` ids as the worker passes them around.
pub(super) type TaskId = (String, String);

/// Entries by node, then task id.
#[derive(Debug)]
pub(super) struct Slots<S> {
    by_node: BTreeMap<Arc<str>, BTreeMap<Box<str>, S>>,
    len: usize,
}

impl<S> Default for Slots<S> {
    fn default() -> Self {
        Slots {
            by_node: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<S> Slots<S> {
    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn contains(&self, node: &str, task: &str) -> bool {
        self.by_node.get(node).is_some_and(|t| t.contains_key(task))
    }

    pub(super) fn get(&self, (node, task): &TaskId) -> Option<&S> {
        self.by_node.get(node.as_str())?.get(task.as_str())
    }

    pub(super) fn get_mut(&mut self, (node, task): &TaskId) -> Option<&mut S> {
        self.by_node.get_mut(node.as_str())?.get_mut(task.as_str())
    }

    /// Sets the entry of `id`, returning the one it replaces.
    pub(super) fn insert(&mut self, (node, task): TaskId, slot: S) -> Option<S> {
        let tasks = match self.by_node.get_mut(node.as_str()) {
            Some(tasks) => tasks,
            None => self.by_node.entry(node.into()).or_default(),
        };
        let old = tasks.insert(task.into_boxed_str(), slot);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Takes the entry of `id` out (a node left without entries goes too).
    pub(super) fn remove(&mut self, (node, task): &TaskId) -> Option<S> {
        let tasks = self.by_node.get_mut(node.as_str())?;
        let slot = tasks.remove(task.as_str())?;
        if tasks.is_empty() {
            self.by_node.remove(node.as_str());
        }
        self.len -= 1;
        Some(slot)
    }

    /// Every entry, by node then task id.
    pub(super) fn values(&self) -> impl Iterator<Item = &S> {
        self.by_node.values().flat_map(BTreeMap::values)
    }

    /// The ids of every entry, by node then task id.
    pub(super) fn ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_node
            .iter()
            .flat_map(|(node, tasks)| tasks.keys().map(move |t| (&**node, &**t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: &str, task: &str) -> TaskId {
        (node.to_string(), task.to_string())
    }

    #[test]
    fn entries_are_found_replaced_and_removed_by_node_and_task() {
        let mut s = Slots::default();
        assert_eq!(s.insert(id("n2", "b"), 1), None);
        assert_eq!(s.insert(id("n1", "a"), 2), None);
        assert_eq!(s.insert(id("n1", "c"), 3), None);
        assert_eq!(s.insert(id("n1", "a"), 4), Some(2), "replaced, not added");
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(&id("n1", "a")), Some(&4));
        assert_eq!(
            s.get(&id("n2", "a")),
            None,
            "a task id is looked up on its node"
        );
        *s.get_mut(&id("n2", "b")).unwrap() = 5;
        let ids: Vec<_> = s.ids().collect();
        assert_eq!(ids, [("n1", "a"), ("n1", "c"), ("n2", "b")]);
        assert_eq!(s.values().copied().collect::<Vec<_>>(), [4, 3, 5]);
        assert_eq!(s.remove(&id("n2", "b")), Some(5));
        assert_eq!(s.remove(&id("n2", "b")), None);
        assert_eq!(s.len(), 2);
        assert!(!s.by_node.contains_key("n2"), "an emptied node goes");
    }
}
