//! The cache's task records, kept in a slab and reached through two indices: by node, then
//! task id (what a watch event names), and by service (what a reconcile input lists). The
//! indices hold a record's position in the slab, not its ids: building a service's input
//! walks its positions directly instead of looking each `(node, task id)` up again, a task's
//! ids are stored once (a node's once for all its tasks), and what concerns one node (a
//! node's change, a node gone for good) finds its records together.
//!
//! When most of the slab is empty after a mass removal, it is compacted and shrunk, so a
//! peak of tasks does not keep its memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use shoal_core::manifest::ServiceRef;
use slab::Slab;

use super::FastHash;
use super::compact::{CompactTask, TaskRecord};

/// A record's position in the slab: stable while the record exists (a compaction moves
/// records, and both indices with them).
pub(super) type Pos = usize;

/// The slab is compacted when fewer than one entry in this many is used.
const COMPACT_BELOW_ONE_IN: usize = 4;
/// ... and only when it has room for at least this many.
const COMPACT_FROM_CAPACITY: usize = 1024;

/// One record with its ids.
#[derive(Debug)]
struct Entry {
    node: Arc<str>,
    task: Box<str>,
    record: TaskRecord,
}

/// Task records with their indices by node and by service.
#[derive(Debug, Default)]
pub(super) struct TaskTable {
    entries: Slab<Entry>,
    /// Positions by node, then by the hash of the task id.
    by_node: HashMap<Arc<str>, HashTable<Pos>, FastHash>,
    /// Positions of the records with an assignment, by the assignment's service.
    by_service: BTreeMap<ServiceRef, BTreeSet<Pos>>,
    hasher: FastHash,
}

impl TaskTable {
    /// The position of `(node, task)`'s record.
    pub(super) fn find(&self, node: &str, task: &str) -> Option<Pos> {
        self.find_hashed(node, task, self.hasher.hash_one(task))
    }

    /// The position of `(node, task)`'s record; when there is none, an empty one is added if
    /// `add`, else `None`.
    pub(super) fn position(&mut self, node: &str, task: &str, add: bool) -> Option<Pos> {
        let hash = self.hasher.hash_one(task);
        match self.find_hashed(node, task, hash) {
            Some(pos) => Some(pos),
            None if add => Some(self.insert(node, task, hash)),
            None => None,
        }
    }

    fn find_hashed(&self, node: &str, task: &str, hash: u64) -> Option<Pos> {
        let tasks = self.by_node.get(node)?;
        tasks
            .find(hash, |&s| *self.entries[s].task == *task)
            .copied()
    }

    /// The record in `pos`.
    pub(super) fn record(&self, pos: Pos) -> &TaskRecord {
        &self.entries[pos].record
    }

    /// The record in `pos`, to change its status (its assignment changes through
    /// [`TaskTable::replace_task`], which keeps the service index).
    pub(super) fn record_mut(&mut self, pos: Pos) -> &mut TaskRecord {
        &mut self.entries[pos].record
    }

    /// The record of `(node, task)`.
    pub(super) fn get(&self, node: &str, task: &str) -> Option<&TaskRecord> {
        self.find(node, task).map(|s| self.record(s))
    }

    /// A new, empty record for `(node, task)`, which has none; `hash` is the task id's.
    fn insert(&mut self, node: &str, task: &str, hash: u64) -> Pos {
        let node: Arc<str> = match self.by_node.get_key_value(node) {
            Some((n, _)) => n.clone(),
            None => Arc::from(node),
        };
        let pos = self.entries.insert(Entry {
            node: node.clone(),
            task: task.into(),
            record: TaskRecord::default(),
        });
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.by_node
            .entry(node)
            .or_default()
            .insert_unique(hash, pos, |&s| hasher.hash_one(&*entries[s].task));
        pos
    }

    /// Puts `task` as the assignment of the record in `pos`, moving it between
    /// services in the index; returns the assignment it replaces.
    pub(super) fn replace_task(
        &mut self,
        pos: Pos,
        task: Option<CompactTask>,
    ) -> Option<CompactTask> {
        let record = &mut self.entries[pos].record;
        let old = std::mem::replace(&mut record.task, task);
        if let Some(o) = &old
            && let Some(positions) = self.by_service.get_mut(o.service())
        {
            positions.remove(&pos);
            if positions.is_empty() {
                self.by_service.remove(o.service());
            }
        }
        if let Some(t) = &record.task {
            match self.by_service.get_mut(t.service()) {
                Some(positions) => {
                    positions.insert(pos);
                }
                None => {
                    self.by_service
                        .insert(t.service().clone(), BTreeSet::from([pos]));
                }
            }
        }
        old
    }

    /// Forgets the record in `pos`, which holds no assignment (a node left without records
    /// goes too).
    pub(super) fn remove(&mut self, pos: Pos) {
        debug_assert!(self.entries[pos].record.task.is_none());
        let entry = self.entries.remove(pos);
        let hash = self.hasher.hash_one(&*entry.task);
        if let Some(tasks) = self.by_node.get_mut(&*entry.node) {
            if let Ok(found) = tasks.find_entry(hash, |&s| s == pos) {
                found.remove();
            }
            if tasks.is_empty() {
                self.by_node.remove(&*entry.node);
            }
        }
        let capacity = self.entries.capacity();
        if capacity >= COMPACT_FROM_CAPACITY && self.entries.len() * COMPACT_BELOW_ONE_IN < capacity
        {
            self.compact();
        }
    }

    /// Moves the records into the first positions, renumbering both indices, and gives the rest
    /// back.
    fn compact(&mut self) {
        let (by_node, by_service, hasher) = (&mut self.by_node, &mut self.by_service, &self.hasher);
        self.entries.compact(|entry, from, to| {
            let hash = hasher.hash_one(&*entry.task);
            if let Some(tasks) = by_node.get_mut(&*entry.node)
                && let Some(s) = tasks.find_mut(hash, |&s| s == from)
            {
                *s = to;
            }
            if let Some(t) = &entry.record.task
                && let Some(positions) = by_service.get_mut(t.service())
            {
                positions.remove(&from);
                positions.insert(to);
            }
            true
        });
        for tasks in self.by_node.values_mut() {
            let entries = &self.entries;
            tasks.shrink_to_fit(|&s| hasher.hash_one(&*entries[s].task));
        }
    }

    /// The records of `service`, as `(node, task id, assignment, record)` (the index holds
    /// only records with an assignment).
    pub(super) fn of_service(
        &self,
        service: &ServiceRef,
    ) -> impl Iterator<Item = (&str, &str, &CompactTask, &TaskRecord)> {
        self.by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|&s| {
                let (node, id, record) = self.ids_and_record(s);
                Some((node, id, record.task.as_ref()?, record))
            })
    }

    /// How many records of `service` hold an assignment.
    pub(super) fn count_of_service(&self, service: &ServiceRef) -> usize {
        self.by_service.get(service).map_or(0, BTreeSet::len)
    }

    /// The services some assignment belongs to.
    pub(super) fn services(&self) -> impl Iterator<Item = &ServiceRef> {
        self.by_service.keys()
    }

    /// Every record as `(node, task id, record)`, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str, &TaskRecord)> {
        self.entries
            .iter()
            .map(|(_, e)| (&*e.node, &*e.task, &e.record))
    }

    /// The nodes some record names.
    pub(super) fn nodes(&self) -> impl Iterator<Item = &str> {
        self.by_node.keys().map(|n| &**n)
    }

    /// Whether some record names `node`.
    pub(super) fn names(&self, node: &str) -> bool {
        self.by_node.contains_key(node)
    }

    /// The records of `node`, in task id order.
    pub(super) fn of_node(&self, node: &str) -> Vec<(&str, &TaskRecord)> {
        let mut out: Vec<(&str, &TaskRecord)> = self
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|&s| {
                let (_, task, record) = self.ids_and_record(s);
                (task, record)
            })
            .collect();
        out.sort_unstable_by_key(|(t, _)| *t);
        out
    }

    fn ids_and_record(&self, pos: Pos) -> (&str, &str, &TaskRecord) {
        let e = &self.entries[pos];
        (&*e.node, &*e.task, &e.record)
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
