//! The revision of each key's last change, which orders the changes the cache applies (a
//! late watch event never undoes a newer change, nor the leader's own commit seen before the
//! watch brings it). A task's and a status's revision is kept in their task record while the
//! record holds them: most keys of a large cluster are tasks and statuses, and a map would
//! hold a copy of each of their keys. Every other key's, and that of a task or status the
//! cache does not hold (deleted, or unreadable), is kept in the cache's map; a deleted key's
//! until the watch has moved past its deletion.

use shoal_core::Key;
use shoal_store::Revision;

use super::Cache;
use super::table::Pos;

/// The two keys of a task record: its assignment and its status.
#[derive(Debug, Clone, Copy)]
pub(super) enum Part {
    Task,
    Status,
}

impl Cache {
    /// The revision of the last change of `key` the cache holds (0: none; tests).
    #[cfg(test)]
    pub(super) fn revision(&self, key: &str) -> Revision {
        match self.keys.parse(key) {
            Some(parsed) => self.revision_of(key, &parsed),
            None => 0,
        }
    }

    /// The revision of the last change of `key`, parsed as `parsed`, that the cache holds (0:
    /// none).
    pub(super) fn revision_of(&self, key: &str, parsed: &Key) -> Revision {
        let held = match parsed {
            Key::Task { node, task } => self
                .tasks
                .get(node, task)
                .filter(|r| r.task.is_some())
                .map(|r| r.task_revision),
            Key::TaskStatus { node, task } => self
                .tasks
                .get(node, task)
                .filter(|r| r.status.is_some())
                .map(|r| r.status_revision),
            _ => None,
        };
        held.or_else(|| self.revs.get(key).copied()).unwrap_or(0)
    }

    /// Records `revision` as that of the last change of `key` (parsed as `parsed`), whose
    /// value the cache shows already: in its task record when that holds the key's value,
    /// else in the map.
    pub(super) fn keep_revision(&mut self, key: &str, parsed: &Key, revision: Revision) {
        let at = match parsed {
            Key::Task { node, task } => self.tasks.find(node, task).map(|p| (p, Part::Task)),
            Key::TaskStatus { node, task } => {
                self.tasks.find(node, task).map(|p| (p, Part::Status))
            }
            _ => None,
        };
        match at {
            // The value shown is unchanged: a part held now was held before.
            Some((pos, part)) => self.keep_record_revision(key, Some(pos), part, revision, true),
            None => self.keep_map_revision(key, revision),
        }
    }

    /// Records `revision` for `key`, the `part` of the record in `pos` (`None`: no record):
    /// in the record while it holds that part, else in the map. `was_held`: the record held
    /// the part before this change, so the map holds nothing of the key.
    pub(super) fn keep_record_revision(
        &mut self,
        key: &str,
        pos: Option<Pos>,
        part: Part,
        revision: Revision,
        was_held: bool,
    ) {
        let r = pos.map(|p| self.tasks.record_mut(p));
        let held = match (r, part) {
            (Some(r), Part::Task) if r.task.is_some() => Some(&mut r.task_revision),
            (Some(r), Part::Status) if r.status.is_some() => Some(&mut r.status_revision),
            _ => None,
        };
        match held {
            Some(at) => {
                *at = revision;
                if !was_held {
                    self.revs.remove(key);
                }
            }
            None => self.keep_map_revision(key, revision),
        }
    }

    /// Records `revision` for `key` in the map (nothing for 0: no change known).
    pub(super) fn keep_map_revision(&mut self, key: &str, revision: Revision) {
        match self.revs.get_mut(key) {
            Some(r) => *r = revision,
            None if revision > 0 => {
                self.revs.insert(key.to_string(), revision);
            }
            None => {}
        }
    }

    /// Keeps a deletion of `key` at `revision` until the watch has moved past it (see
    /// [`Cache::prune`]).
    pub(super) fn note_deleted(&mut self, key: &str, deleted: bool, revision: Revision) {
        if deleted {
            self.tombstones
                .entry(revision)
                .or_default()
                .push(key.to_string());
        }
    }

    /// Forgets tombstones the watch has moved past (no older event can arrive any more).
    pub(crate) fn prune(&mut self, watched: Revision) {
        let keep = self.tombstones.split_off(&(watched + 1));
        for (_, keys) in std::mem::replace(&mut self.tombstones, keep) {
            for k in keys {
                if self.revs.get(&k).is_some_and(|&r| r <= watched) {
                    self.revs.remove(&k);
                }
            }
        }
    }
}
