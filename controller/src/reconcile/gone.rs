//! Nodes gone for good: the pure decision of which down nodes have been down long enough (or
//! were removed with `shoal node rm`) for the controller to delete their keys.
//!
//! "Down" is derived, never stored: a node known from any of its keys (`nodeconfig/`,
//! `tasks/`, `taskstatus/`) without a live `nodes/` record. The controller notes when it first
//! saw each node down (a new leader starts counting at its first look), and a node down for
//! `gone_after`, or marked removed, is gone: its `tasks/`, `taskstatus/` and `nodeconfig/`
//! keys are deleted — the one case where the controller deletes keys it does not write,
//! because their writer (the node's agent, or the operator who removed it) is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_core::model::Timestamp;

/// What the controller knows of the nodes' presence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Every node some key names.
    pub known: BTreeSet<String>,
    /// Nodes with a live record.
    pub ready: BTreeSet<String>,
    /// Nodes marked removed (`shoal node rm`).
    pub removed: BTreeSet<String>,
}

/// Since when each down node has been seen down: `previous` kept for nodes still down,
/// `now` for nodes newly down; ready or forgotten nodes leave the map.
pub fn track_down(
    presence: &Presence,
    previous: &BTreeMap<String, Timestamp>,
    now: Timestamp,
) -> BTreeMap<String, Timestamp> {
    presence
        .known
        .iter()
        .filter(|n| !presence.ready.contains(*n))
        .map(|n| (n.clone(), previous.get(n).copied().unwrap_or(now)))
        .collect()
}

/// The nodes whose keys are to be deleted now: marked removed (down or not), or down since
/// at least `gone_after`.
pub fn gone(
    presence: &Presence,
    down_since: &BTreeMap<String, Timestamp>,
    now: Timestamp,
    gone_after: Duration,
) -> Vec<String> {
    presence
        .known
        .iter()
        .filter(|n| {
            presence.removed.contains(*n)
                || down_since
                    .get(*n)
                    .is_some_and(|since| now.since(*since) >= gone_after)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_is_gone_after_being_down_for_the_timeout_or_when_removed() {
        let after = Duration::from_secs(60);
        let mut p = Presence {
            known: set(&["a", "b", "c"]),
            ready: set(&["a"]),
            removed: BTreeSet::new(),
        };
        let t0 = Timestamp(1_000_000);
        let down = track_down(&p, &BTreeMap::new(), t0);
        assert_eq!(down.keys().cloned().collect::<Vec<_>>(), ["b", "c"]);
        assert!(gone(&p, &down, t0.plus(Duration::from_secs(59)), after).is_empty());
        // b comes back before the timeout: its clock restarts when it goes down again.
        p.ready.insert("b".into());
        let t1 = t0.plus(Duration::from_secs(30));
        let down = track_down(&p, &down, t1);
        assert_eq!(down.keys().cloned().collect::<Vec<_>>(), ["c"]);
        let t2 = t0.plus(after);
        assert_eq!(gone(&p, &down, t2, after), ["c"]);
        // A removed node goes at once, ready or not.
        p.removed.insert("a".into());
        assert_eq!(gone(&p, &down, t1, after), ["a"]);
    }
}
