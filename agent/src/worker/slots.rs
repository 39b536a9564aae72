//! What the worker holds per task, keyed by node, then task id: a hollow agent holds one
//! entry per task of a thousand nodes, so a node's id is stored once (shared by all of its
//! entries), a task's id once, in place when it is short (up to 24 bytes, as the ids the
//! controller gives tasks of services with names of up to ten characters are), and a node's entries
//! in one vector sorted by task id ([`NodeTasks`]): a B-tree's ordered lookups in about
//! two-thirds of its memory (its leaves are half full when ids come in order).

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;

use crate::room::{give_back_room, make_room};

/// A task's `(node, task)` ids as the worker passes them around.
pub(super) type TaskId = (String, String);

/// Entries by node, then task id.
#[derive(Debug)]
pub(super) struct Slots<S> {
    by_node: BTreeMap<Arc<str>, NodeTasks<S>>,
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
        self.by_node
            .get(node)
            .is_some_and(|t| t.get(task).is_some())
    }

    pub(super) fn get(&self, (node, task): &TaskId) -> Option<&S> {
        self.by_node.get(node.as_str())?.get(task)
    }

    pub(super) fn get_mut(&mut self, (node, task): &TaskId) -> Option<&mut S> {
        self.by_node.get_mut(node.as_str())?.get_mut(task)
    }

    /// Sets the entry of `id`, returning the one it replaces.
    pub(super) fn insert(&mut self, (node, task): TaskId, slot: S) -> Option<S> {
        let tasks = match self.by_node.get_mut(node.as_str()) {
            Some(tasks) => tasks,
            None => self.by_node.entry(node.into()).or_default(),
        };
        let old = tasks.insert(task, slot);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Takes the entry of `id` out (a node left without entries goes too).
    pub(super) fn remove(&mut self, (node, task): &TaskId) -> Option<S> {
        let tasks = self.by_node.get_mut(node.as_str())?;
        let slot = tasks.remove(task)?;
        if tasks.is_empty() {
            self.by_node.remove(node.as_str());
        }
        self.len -= 1;
        Some(slot)
    }

    /// Every entry, by node then task id.
    pub(super) fn values(&self) -> impl Iterator<Item = &S> {
        self.by_node
            .values()
            .flat_map(|tasks| tasks.0.iter().map(|(_, s)| s))
    }

    /// The ids of every entry, by node then task id.
    pub(super) fn ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_node
            .iter()
            .flat_map(|(node, tasks)| tasks.0.iter().map(move |(t, _)| (&**node, t.as_str())))
    }
}

/// One node's entries, sorted by task id. A node holds tens to thousands of tasks, so an
/// insertion's shift of the entries after it stays small; the vector grows and shrinks as
/// [`crate::room`] says.
#[derive(Debug)]
pub(super) struct NodeTasks<S>(Vec<(CompactString, S)>);

impl<S> Default for NodeTasks<S> {
    fn default() -> Self {
        NodeTasks(Vec::new())
    }
}

impl<S> NodeTasks<S> {
    /// Room made at least, when the vector is full.
    const MIN_GROWTH: usize = 4;

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, task: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| t.as_str().cmp(task))
    }

    fn get(&self, task: &str) -> Option<&S> {
        self.find(task).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, task: &str) -> Option<&mut S> {
        let i = self.find(task).ok()?;
        Some(&mut self.0[i].1)
    }

    fn insert(&mut self, task: String, slot: S) -> Option<S> {
        match self.find(&task) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, slot)),
            Err(i) => {
                make_room(&mut self.0, Self::MIN_GROWTH);
                self.0.insert(i, (task.into(), slot));
                None
            }
        }
    }

    fn remove(&mut self, task: &str) -> Option<S> {
        let i = self.find(task).ok()?;
        let (_, slot) = self.0.remove(i);
        give_back_room(&mut self.0);
        Some(slot)
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

    #[test]
    fn a_node_keeps_its_tasks_sorted_in_little_more_memory_than_they_take() {
        let mut s = Slots::default();
        // Ids out of order, as services' tasks arrive.
        let ids: Vec<String> = (0..1_000u32)
            .map(|i| format!("svc-{}.{}.x", i.wrapping_mul(7919) % 1_000, i))
            .collect();
        for (i, t) in ids.iter().enumerate() {
            assert_eq!(s.insert(id("n1", t), i), None);
        }
        let tasks = &s.by_node["n1"].0;
        assert!(
            tasks.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted by task id"
        );
        assert!(
            tasks.capacity() <= tasks.len() + tasks.len() / 4 + NodeTasks::<usize>::MIN_GROWTH,
            "{} slots for {} tasks",
            tasks.capacity(),
            tasks.len()
        );
        for (i, t) in ids.iter().enumerate() {
            assert_eq!(s.get(&id("n1", t)), Some(&i));
        }
        for t in &ids[100..] {
            assert!(s.remove(&id("n1", t)).is_some());
        }
        let tasks = &s.by_node["n1"].0;
        assert_eq!(tasks.len(), 100);
        assert!(tasks.capacity() < 200, "{} slots kept", tasks.capacity());
        assert!(ids[..100].iter().all(|t| s.contains("n1", t)));
    }
}
