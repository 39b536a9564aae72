//! Changes a standby's cache holds back. While no term reads the cache, the watch's changes
//! (nearly all of them tasks and task statuses in a busy store) are kept as the store sent
//! them, the last one per key, and applied when the store goes quiet, when they grow large,
//! or when the controller takes over ([`Cache::defer`], [`Cache::catch_up`]).
//!
//! A standby following a cluster that places thousands of tasks a second then leaves the
//! machine's CPU to the leader and the store, and a key that changes several times while held
//! back (a status going from starting to running) is decoded once. The cache applies each
//! key's changes by revision and reads no other key's value when it does, so the order they
//! are applied in does not matter, with one exception: a node's record is applied at once,
//! since when it disappears is taken from the clock. Every change is applied at once while
//! the controller leads.

use std::collections::HashMap;

use shoal_core::Keys;
use shoal_store::Revision;

use super::{Cache, FastHash, Touched};

/// Held-back changes beyond this many bytes (keys and values) are applied at once: a standby
/// never holds more than this much of the store undecoded.
const HELD_BYTES_MAX: usize = 64 << 20;

/// A change as the watch brings it: key, value (`None`: deleted) and revision.
type Change = (String, Option<Vec<u8>>, Revision);

/// Changes by key: value (`None`: deleted) and revision.
type Held = HashMap<String, (Option<Vec<u8>>, Revision), FastHash>;

/// The changes held back, the last one per key.
#[derive(Debug)]
pub(super) struct Deferred {
    on: bool,
    nodes_prefix: String,
    held: Held,
    bytes: usize,
}

impl Deferred {
    /// Nothing held, holding nothing back, for keys under `keys`' prefix.
    pub(super) fn new(keys: &Keys) -> Self {
        Deferred {
            on: false,
            nodes_prefix: keys.nodes_prefix(),
            held: HashMap::default(),
            bytes: 0,
        }
    }

    /// Holds the change of `key` back when on and it is not a node's record; gives it back
    /// to be applied otherwise. Of two changes of a key, the later revision is kept.
    fn hold(&mut self, key: String, value: Option<Vec<u8>>, revision: Revision) -> Option<Change> {
        if !self.on || key.starts_with(&self.nodes_prefix) {
            return Some((key, value, revision));
        }
        let size = value.as_ref().map_or(0, Vec::len);
        match self.held.get_mut(&key) {
            Some(held) if held.1 >= revision => {}
            Some(held) => {
                let was = held.0.as_ref().map_or(0, Vec::len);
                self.bytes = self.bytes - was + size;
                *held = (value, revision);
            }
            None => {
                self.bytes += key.len() + size;
                self.held.insert(key, (value, revision));
            }
        }
        None
    }

    /// Every change held, emptied.
    fn take(&mut self) -> Held {
        self.bytes = 0;
        std::mem::take(&mut self.held)
    }
}

impl Cache {
    /// Holds back the watch's changes but those of nodes' records (`true`: a standby's cache)
    /// or applies every change at once (`false`: a leader's); turning it off applies what was
    /// held back.
    pub(crate) fn defer(&mut self, on: bool) {
        self.deferred.on = on;
        if !on {
            self.catch_up();
        }
    }

    /// Whether the cache holds back changes (see [`Cache::defer`]).
    pub(super) fn defers(&self) -> bool {
        self.deferred.on
    }

    /// Applies a change the watch brought (a put when `value` is `Some`), or holds it back
    /// while the cache defers; returns what it touches (nothing when held back).
    pub(crate) fn apply_watched(
        &mut self,
        key: String,
        value: Option<Vec<u8>>,
        revision: Revision,
    ) -> Touched {
        match self.deferred.hold(key, value, revision) {
            Some((key, value, revision)) => self.apply(&key, value.as_deref(), revision),
            None => {
                if self.deferred.bytes > HELD_BYTES_MAX {
                    self.catch_up();
                }
                Touched::default()
            }
        }
    }

    /// Whether some change is held back.
    pub(crate) fn holds_back(&self) -> bool {
        !self.deferred.held.is_empty()
    }

    /// Applies every change held back; returns how many there were.
    pub(crate) fn catch_up(&mut self) -> usize {
        let held = self.deferred.take();
        let count = held.len();
        for (key, (value, revision)) in held {
            self.apply(&key, value.as_deref(), revision);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT;
    use crate::testutil::{manifest_text, node, service};
    use shoal_core::model::{self, Task, TaskState, TaskStatus, TaskTemplate, Timestamp};

    /// The watch's changes of a small cluster: a node, a manifest, three tasks and their
    /// statuses (starting, then running), one task stopped and removed, and a late event older
    /// than a change already seen.
    fn changes(keys: &Keys) -> Vec<Change> {
        let svc = service("web", "  replicas: 3\n");
        let template = TaskTemplate::from_spec(&svc.spec);
        let n1 = node("n1", &[]);
        let mut out = vec![
            (keys.node("n1"), Some(model::encode(&n1.info)), 2),
            (
                keys.service(&svc.id()),
                Some(manifest_text("web", "  replicas: 3\n").into_bytes()),
                3,
            ),
        ];
        let mut rev = 3;
        for i in 1..=3 {
            let id = format!("web.{i}.a");
            let task = Task::replica(&id, svc.id(), i, "n1", template.clone(), Timestamp(1));
            rev += 1;
            out.push((keys.task("n1", &id), Some(model::encode(&task)), rev));
            for state in [TaskState::Starting, TaskState::Running] {
                let st = TaskStatus::new(id.as_str(), state, Timestamp(2));
                rev += 1;
                out.push((keys.task_status("n1", &id), Some(model::encode(&st)), rev));
            }
        }
        let stale = out[2].clone();
        for key in [
            keys.task("n1", "web.3.a"),
            keys.task_status("n1", "web.3.a"),
        ] {
            rev += 1;
            out.push((key, None, rev));
        }
        out.push(stale);
        out
    }

    fn cache(keys: &Keys) -> Cache {
        Cache::new(keys.clone(), DEFAULT_TASK_HISTORY_LIMIT)
    }

    /// A standby's cache: holding changes back.
    fn deferring(keys: &Keys) -> Cache {
        let mut c = cache(keys);
        c.defer(true);
        c
    }

    #[test]
    fn a_deferring_cache_caught_up_shows_what_a_cache_applying_at_once_shows() {
        let keys = Keys::default();
        let (mut direct, mut deferring) = (cache(&keys), deferring(&keys));
        for (key, value, rev) in changes(&keys) {
            direct.apply(&key, value.as_deref(), rev);
            deferring.apply_watched(key, value, rev);
        }
        assert!(deferring.holds_back());
        assert!(deferring.nodes()["n1"].ready, "a node is applied at once");
        assert_ne!(deferring.fingerprint(), direct.fingerprint());
        // The manifest, three assignments and three statuses: the last change of each key.
        assert_eq!(deferring.catch_up(), 7);
        assert!(!deferring.holds_back());
        assert_eq!(deferring.fingerprint(), direct.fingerprint());
        assert_eq!(
            deferring.all_services(),
            direct.all_services(),
            "the manifest"
        );
        assert!(deferring.defers(), "catching up is not leading");
    }

    #[test]
    fn a_term_starting_applies_what_was_held_and_then_holds_nothing_back() {
        let keys = Keys::default();
        let (mut direct, mut c) = (cache(&keys), deferring(&keys));
        let all = changes(&keys);
        let (before, after) = all.split_at(all.len() / 2);
        for (key, value, rev) in before.iter().cloned() {
            direct.apply(&key, value.as_deref(), rev);
            c.apply_watched(key, value, rev);
        }
        c.defer(false);
        assert!(!c.holds_back());
        assert_eq!(c.fingerprint(), direct.fingerprint());
        for (key, value, rev) in after.iter().cloned() {
            let expected = direct.apply(&key, value.as_deref(), rev);
            assert_eq!(
                c.apply_watched(key, value, rev),
                expected,
                "applied at once"
            );
        }
        assert!(!c.holds_back());
        assert_eq!(c.fingerprint(), direct.fingerprint());
    }

    #[test]
    fn a_list_replaces_what_was_held_back_and_the_cache_keeps_deferring() {
        let keys = Keys::default();
        let mut c = deferring(&keys);
        let all = changes(&keys);
        for (key, value, rev) in all.iter().cloned() {
            c.apply_watched(key, value, rev);
        }
        // The store now holds only the node and the first task.
        let listed: Vec<(String, Vec<u8>, Revision)> = [&all[0], &all[2]]
            .into_iter()
            .map(|(k, v, _)| (k.clone(), v.clone().unwrap(), 50))
            .collect();
        c.relist(&listed);
        assert!(!c.holds_back(), "older than the list");
        assert!(c.defers());
        let mut fresh = cache(&keys);
        fresh.relist(&listed);
        assert_eq!(c.fingerprint(), fresh.fingerprint());
    }

    #[test]
    fn held_back_changes_beyond_the_bound_are_applied_at_once() {
        let keys = Keys::default();
        let mut c = deferring(&keys);
        let half = vec![b'x'; HELD_BYTES_MAX / 2];
        c.apply_watched(keys.task("n1", "a"), Some(half.clone()), 2);
        assert!(c.holds_back());
        c.apply_watched(keys.task("n1", "b"), Some(half), 3);
        assert!(!c.holds_back(), "more than the bound held: all applied");
        assert_eq!(c.revision(&keys.task("n1", "b")), 3);
    }
}
