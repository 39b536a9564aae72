//! The invariant checker. It follows the whole key space with the store's own watcher (list,
//! then watch, relisting after compaction) and checks at every event:
//!
//! - **one live task per slot**: at most one task whose agent last reported `running` in each
//!   slot of a replicated service and for each node of a global one — except stale copies
//!   (tasks the controller no longer wants: orphaned, told to shut down or deleted) on a node
//!   that is cut off: one the nemesis disturbed (partitioned, cut off from etcd, agent killed)
//!   or one Shoal holds down (its lease-bound `nodes/<id>` record is gone). Those are allowed
//!   while the node is cut off and must stop within [`STALE_BOUND`] after it is back (the
//!   time they took is recorded);
//! - **the fence holds**: no controller-written key (`tasks/`, `status/`, `endpoints/`) changes
//!   while no leader record exists — a deposed leader whose lease ended cannot write.
//!
//! It also follows every loss of a node (its lease-bound record gone) and the tasks it moved,
//! explained against the nemesis' timeline ([`crate::timeline`]).
//!
//! The final-state checks (acknowledged applies, convergence, processes) are in
//! [`crate::verify`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use shoal_core::Keys;
use shoal_core::keys::Key;
use shoal_core::model::{DesiredState, Slot, Task, TaskState, TaskStatus};
use shoal_store::Store;
use shoal_store::reflector::{Event, watcher};

use crate::timeline::{Disturbance, MoveLog, Moves};

/// How long a stale copy may keep running after its node's fault healed.
pub const STALE_BOUND: Duration = Duration::from_secs(60);

/// One invariant violation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// Seconds since the checker started.
    pub t: f64,
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

type SlotKey = (String, Slot);

/// Seconds a stale copy kept running after its node was back: since the later of the
/// nemesis' last heal of that host and the return of its node record (when present). `None`
/// when a nemesis fault is active on the host at that moment: the copy stopped before the
/// heal, or during a new fault, and the time since an earlier heal or record return —
/// possibly minutes before — does not measure how fast Shoal stops stale copies.
fn stale_stop_after(
    disturbed: bool,
    healed: Option<Instant>,
    back: Option<Instant>,
    now: Instant,
) -> Option<f64> {
    if disturbed {
        return None;
    }
    Some(
        healed
            .into_iter()
            .chain(back)
            .max()
            .map_or(0.0, |h| now.saturating_duration_since(h).as_secs_f64()),
    )
}

/// Whether Shoal itself holds `node` down (its record is gone) or saw it return less than
/// [`STALE_BOUND`] ago: a copy there may be stale without any nemesis fault on that host (its
/// agent lost the store through an isolated etcd member, for instance).
fn node_excused(st: &State, node: &str, now: Instant) -> bool {
    st.node_down.contains(node)
        || st
            .node_back
            .get(node)
            .is_some_and(|b| now.duration_since(*b) < STALE_BOUND)
}

/// What the checker remembers of a task.
#[derive(Debug, Clone)]
struct TaskInfo {
    slot: SlotKey,
    node: String,
    /// The controller wants it running (desired running, not orphaned, key present).
    current: bool,
}

#[derive(Debug, Default)]
struct State {
    started: Option<Instant>,
    tasks: HashMap<String, TaskInfo>,
    live: BTreeMap<SlotKey, BTreeSet<String>>,
    /// Stale copies seen: task id → node.
    stale: HashMap<String, String>,
    leader_present: bool,
    /// Nodes whose record (`nodes/<id>`, bound to the agent's lease) is absent: Shoal holds
    /// them down.
    node_down: BTreeSet<String>,
    /// When each node's record last came back.
    node_back: HashMap<String, Instant>,
    /// Tasks seen orphaned (each counted once).
    orphaned: BTreeSet<String>,
    /// Node losses and the tasks they moved, explained against the nemesis' timeline.
    moves: MoveLog,
    events: u64,
    violations: Vec<Violation>,
    stale_stop_s: Vec<f64>,
    stale_stopped_cut_off: u64,
    max_live_per_slot: usize,
}

/// Counts and findings of the checker.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Findings {
    /// Store events checked.
    pub events_checked: u64,
    /// Violations.
    pub violations: Vec<Violation>,
    /// Seconds each stale copy kept running after its node healed.
    pub stale_stop_s: Vec<f64>,
    /// Stale copies that stopped while a nemesis fault was active on their host: no time
    /// after heal is measured for them.
    pub stale_stopped_cut_off: u64,
    /// Most live tasks seen in one slot (stale copies included).
    pub max_live_per_slot: usize,
    /// Tasks moved (orphaned: their node declared down), per cause, and the node losses not
    /// caused by a fault on their own host.
    pub moves: Moves,
}

/// The running checker.
#[derive(Clone)]
pub struct Checker {
    state: Arc<Mutex<State>>,
    disturbance: Arc<Mutex<Disturbance>>,
    keys: Keys,
    /// The agents' lease TTL (how far back a node's loss can have been caused).
    lease_ttl: Duration,
}

impl Checker {
    /// Starts following `store`; `disturbance` is updated by the nemesis; agents hold their
    /// node records with leases of `lease_ttl`.
    pub fn spawn(
        store: Arc<dyn Store>,
        disturbance: Arc<Mutex<Disturbance>>,
        lease_ttl: Duration,
    ) -> Self {
        let checker = Checker::new(disturbance, lease_ttl);
        let c = checker.clone();
        let prefix = format!("{}/", c.keys.prefix());
        tokio::spawn(async move {
            let mut events = watcher(store, &prefix, |_k: &str, v: Vec<u8>| v);
            while let Some(ev) = events.next().await {
                c.on_event(ev);
            }
        });
        checker
    }

    /// A checker fed by [`Checker::on_event`] (what [`Checker::spawn`] does from the watch).
    fn new(disturbance: Arc<Mutex<Disturbance>>, lease_ttl: Duration) -> Self {
        Checker {
            state: Arc::new(Mutex::new(State {
                started: Some(Instant::now()),
                ..State::default()
            })),
            disturbance,
            keys: Keys::default(),
            lease_ttl,
        }
    }

    /// What the checker has found so far.
    pub fn findings(&self) -> Findings {
        let mut st = self.state.lock().expect("checker state");
        self.check_stale_bounds(&mut st);
        Findings {
            events_checked: st.events,
            violations: st.violations.clone(),
            stale_stop_s: st.stale_stop_s.clone(),
            stale_stopped_cut_off: st.stale_stopped_cut_off,
            max_live_per_slot: st.max_live_per_slot,
            moves: st.moves.moves(),
        }
    }

    fn on_event(&self, ev: Event<Vec<u8>>) {
        let mut st = self.state.lock().expect("checker state");
        match ev {
            Event::Init(list) => {
                st.events += list.len() as u64;
                st.live.clear();
                // A listing is one instant: whether a leader record exists is known from the
                // whole list (`endpoints/` sorts before `leader`), and no key in it is a write
                // the fence can be checked against.
                st.leader_present = list.iter().any(|(k, _, _)| *k == self.keys.leader());
                for (k, v, _) in list {
                    self.apply(&mut st, &k, Some(&v), false);
                }
            }
            Event::Apply(k, v, _) => {
                st.events += 1;
                self.apply(&mut st, &k, Some(&v), true);
            }
            Event::Delete(k, _) => {
                st.events += 1;
                self.apply(&mut st, &k, None, true);
            }
        }
        self.check_stale_bounds(&mut st);
    }

    fn elapsed(st: &State) -> f64 {
        st.started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0)
    }

    fn violation(st: &mut State, invariant: &'static str, detail: String) {
        let t = Self::elapsed(st);
        tracing::error!(invariant, %detail, "invariant violated");
        st.violations.push(Violation {
            t,
            invariant,
            detail,
        });
    }

    /// Applies one key's change; `write`: it is a change seen on the watch (not a listing).
    fn apply(&self, st: &mut State, key: &str, value: Option<&[u8]>, write: bool) {
        let controller_key = key.starts_with(&self.keys.endpoints_prefix())
            || matches!(
                self.keys.parse(key),
                Some(Key::Task { .. } | Key::ServiceStatus(_))
            );
        if write && controller_key && !st.leader_present {
            Self::violation(
                st,
                "fence",
                format!("{key} written while no leader record existed"),
            );
        }
        match self.keys.parse(key) {
            Some(Key::Leader) => st.leader_present = value.is_some(),
            Some(Key::Node(n)) => {
                if value.is_some() {
                    if st.node_down.remove(&n) {
                        st.node_back.insert(n, Instant::now());
                    }
                } else if st.node_down.insert(n.clone()) {
                    let dist = self.disturbance.lock().expect("disturbance");
                    let t = Self::elapsed(st);
                    st.moves
                        .node_lost(&dist, &n, Instant::now(), t, self.lease_ttl);
                }
            }
            Some(Key::Task { task, node }) => match value {
                Some(v) => {
                    if let Ok(t) = serde_json::from_slice::<Task>(v) {
                        let current = t.desired_state == DesiredState::Running && !t.orphaned;
                        if t.orphaned && st.orphaned.insert(task.clone()) {
                            let dist = self.disturbance.lock().expect("disturbance");
                            st.moves.task_moved(&dist, &node, self.lease_ttl);
                        }
                        let slot = (t.service.to_string(), t.slot.clone());
                        st.tasks.insert(
                            task,
                            TaskInfo {
                                slot,
                                node,
                                current,
                            },
                        );
                    }
                }
                None => {
                    if let Some(t) = st.tasks.get_mut(&task) {
                        t.current = false;
                    }
                }
            },
            Some(Key::TaskStatus { task, .. }) => {
                let running = value
                    .and_then(|v| serde_json::from_slice::<TaskStatus>(v).ok())
                    .is_some_and(|s| s.state == TaskState::Running);
                self.task_liveness(st, &task, running);
            }
            _ => {}
        }
    }

    fn task_liveness(&self, st: &mut State, task: &str, running: bool) {
        let Some(info) = st.tasks.get(task).cloned() else {
            return;
        };
        let set = st.live.entry(info.slot.clone()).or_default();
        if !running {
            set.remove(task);
            if let Some(n) = st.stale.remove(task) {
                let dist = self.disturbance.lock().expect("disturbance");
                // A record that is gone again does not say when the node was back.
                let back = if st.node_down.contains(&n) {
                    None
                } else {
                    st.node_back.get(&n).copied()
                };
                let after =
                    stale_stop_after(dist.active_on(&n), dist.healed_at(&n), back, Instant::now());
                drop(dist);
                match after {
                    Some(s) => st.stale_stop_s.push(s),
                    None => st.stale_stopped_cut_off += 1,
                }
            }
            return;
        }
        set.insert(task.to_string());
        let live: Vec<String> = set.iter().cloned().collect();
        st.max_live_per_slot = st.max_live_per_slot.max(live.len());
        if live.len() < 2 {
            return;
        }
        let now = Instant::now();
        let dist = self.disturbance.lock().expect("disturbance");
        let mut stale = Vec::new();
        let mut plain = Vec::new();
        for t in &live {
            let Some(i) = st.tasks.get(t) else { continue };
            // A copy the controller no longer wants, on a node the nemesis disturbed.
            if !i.current && (dist.excused(&i.node, now) || node_excused(st, &i.node, now)) {
                stale.push((t.clone(), i.node.clone()));
            } else {
                plain.push(format!("{t}@{}", i.node));
            }
        }
        drop(dist);
        if plain.len() > 1 {
            Self::violation(
                st,
                "one-live-task-per-slot",
                format!(
                    "{} slot {}: {} live: {}",
                    info.slot.0,
                    info.slot.1,
                    plain.len(),
                    plain.join(", ")
                ),
            );
        }
        st.stale.extend(stale);
    }

    fn check_stale_bounds(&self, st: &mut State) {
        let dist = self.disturbance.lock().expect("disturbance");
        let now = Instant::now();
        let overdue: Vec<(String, String)> = st
            .stale
            .iter()
            .filter(|(_, n)| !dist.excused(n, now) && !node_excused(st, n, now))
            .map(|(t, n)| (t.clone(), n.clone()))
            .collect();
        drop(dist);
        for (t, n) in overdue {
            st.stale.remove(&t);
            Self::violation(
                st,
                "stale-copy-stops",
                format!(
                    "task {t} on {n} still running {}s after its node healed",
                    STALE_BOUND.as_secs()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_with_controller_keys_and_a_leader_record_is_no_fence_violation() {
        let c = Checker::new(Arc::default(), Duration::from_secs(5));
        let keys = Keys::default();
        let endpoints = format!("{}chaos/svc-00", keys.endpoints_prefix());
        // Listed in key order: the endpoints record comes before the leader record.
        c.on_event(Event::Init(vec![
            (endpoints.clone(), b"{}".to_vec(), 3),
            (keys.leader(), b"{}".to_vec(), 2),
        ]));
        assert!(c.findings().violations.is_empty(), "{:?}", c.findings());
        // A write after the leader record went is one.
        c.on_event(Event::Delete(keys.leader(), 4));
        c.on_event(Event::Apply(endpoints, b"{}".to_vec(), 5));
        let v = c.findings().violations;
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, "fence");
    }

    #[test]
    fn a_stale_copy_is_timed_from_when_its_node_was_last_whole() {
        let now = Instant::now();
        let ago = |s| now - Duration::from_secs(s);
        // Healed 10 s ago, record back 4 s ago: 4 s.
        let t = stale_stop_after(false, Some(ago(10)), Some(ago(4)), now).unwrap();
        assert!((t - 4.0).abs() < 0.01, "{t}");
        // Record back 130 s ago, but a new fault is active on the host now: the copy stopped
        // during that fault, not 130 s after a heal.
        assert_eq!(
            stale_stop_after(true, Some(ago(200)), Some(ago(130)), now),
            None
        );
        // Never disturbed nor back: stopped at once.
        assert_eq!(stale_stop_after(false, None, None, now), Some(0.0));
    }
}
