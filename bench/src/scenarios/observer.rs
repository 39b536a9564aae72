//! Watches the store as an operator would and timestamps, per task, when its assignment was
//! committed and when its agent first reported it running. It also checks, after every watch
//! response (a whole number of store revisions), that no slot has more than one task the
//! controller wants running: the "at most one live task per slot" guarantee, checked
//! throughout a run rather than at its end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions};

/// What the observer saw of one task.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// When the task key appeared.
    pub assigned: Option<Instant>,
    /// When its status first said running.
    pub running: Option<Instant>,
    /// Whether the assignment was last seen with desiredState running.
    pub desired_running: bool,
}

/// Shared view of everything seen so far.
#[derive(Debug, Default)]
pub struct View {
    /// Per task (`<node>/<task>`).
    pub tasks: HashMap<String, Seen>,
    /// Node keys deleted (lease expiry) with the time seen.
    pub nodes_gone: Vec<(String, Instant)>,
    /// Store writes seen under the prefix (puts and deletes).
    pub writes: u64,
    /// Per slot (`<service>.<slot>`), the tasks whose assignment wants them running.
    pub live: HashMap<String, HashSet<String>>,
    /// Most tasks seen wanting to run in one slot at a revision boundary.
    pub max_live_per_slot: usize,
    /// Revision boundaries at which some slot had more than one such task.
    pub slot_violations: u64,
    /// Writes of the leader record (`true`) and its deletes (`false`), with the time seen.
    pub leader_record: Vec<(bool, Instant)>,
}

/// The slot of a task key (`<node>/<service>.<slot>.<suffix>` → `<service>.<slot>`).
fn slot_of(id: &str) -> Option<&str> {
    let task = id.rsplit_once('/').map_or(id, |(_, t)| t);
    task.rsplit_once('.').map(|(slot, _)| slot)
}

/// A running observer.
pub struct Observer {
    /// The view, updated by the watch task.
    pub view: Arc<Mutex<View>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    /// Starts watching `prefix` (e.g. `/shoal/`) from now.
    pub async fn start(endpoint: &str, prefix: &str) -> Result<Self, etcd_client::Error> {
        let mut client = Client::connect([endpoint], None).await?;
        let view = Arc::new(Mutex::new(View::default()));
        let mut stream = client
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await?;
        let tasks_p = format!("{prefix}tasks/");
        let status_p = format!("{prefix}taskstatus/");
        let nodes_p = format!("{prefix}nodes/");
        let leader_key = format!("{prefix}leader");
        let v = view.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                let now = Instant::now();
                let mut view = v.lock().unwrap_or_else(|e| e.into_inner());
                let mut touched: HashSet<String> = HashSet::new();
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).to_string();
                    view.writes += 1;
                    let put = ev.event_type() == EventType::Put;
                    if let Some(id) = key.strip_prefix(&tasks_p) {
                        let desired =
                            put && !contains(kv.value(), b"\"desiredState\":\"shutdown\"");
                        if put {
                            let e = view.tasks.entry(id.to_string()).or_default();
                            e.assigned.get_or_insert(now);
                            e.desired_running = desired;
                        } else if let Some(e) = view.tasks.get_mut(id) {
                            e.desired_running = false;
                        }
                        if let Some(slot) = slot_of(id) {
                            let set = view.live.entry(slot.to_string()).or_default();
                            if desired {
                                set.insert(id.to_string());
                            } else {
                                set.remove(id);
                            }
                            touched.insert(slot.to_string());
                        }
                    } else if let Some(id) = key.strip_prefix(&status_p) {
                        if put && contains(kv.value(), b"\"state\":\"running\"") {
                            let e = view.tasks.entry(id.to_string()).or_default();
                            e.running.get_or_insert(now);
                        }
                    } else if let Some(node) = key.strip_prefix(&nodes_p)
                        && !put
                    {
                        view.nodes_gone.push((node.to_string(), now));
                    } else if key == leader_key {
                        view.leader_record.push((put, now));
                    }
                }
                // Every revision of this response is applied: check the slots it touched.
                let worst = touched
                    .iter()
                    .map(|s| view.live.get(s).map_or(0, HashSet::len))
                    .max()
                    .unwrap_or(0);
                view.max_live_per_slot = view.max_live_per_slot.max(worst);
                if worst > 1 {
                    view.slot_violations += 1;
                }
            }
        });
        Ok(Observer { view, task })
    }

    /// When the leader record was first deleted, and then first written, after `since`.
    pub fn leader_record_since(&self, since: Instant) -> (Option<Instant>, Option<Instant>) {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let after = |put: bool, from: Instant| {
            view.leader_record
                .iter()
                .find(|(p, t)| *p == put && *t >= from)
                .map(|(_, t)| *t)
        };
        let gone = after(false, since);
        (gone, after(true, gone.unwrap_or(since)))
    }

    /// The continuous slot check so far: (most live tasks seen in one slot, violations).
    pub fn slot_check(&self) -> (usize, u64) {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        (v.max_live_per_slot, v.slot_violations)
    }

    /// Counts (assigned, running) among tasks first assigned at or after `since` whose
    /// service name starts with `service_prefix`.
    pub fn counts_since_of(&self, since: Instant, service_prefix: &str) -> (usize, usize) {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut a = 0;
        let mut r = 0;
        for (id, s) in &v.tasks {
            let task = id.rsplit_once('/').map_or(id.as_str(), |(_, t)| t);
            if task.starts_with(service_prefix) && s.assigned.is_some_and(|t| t >= since) {
                a += 1;
                if s.running.is_some() {
                    r += 1;
                }
            }
        }
        (a, r)
    }

    /// Counts (assigned, running) among tasks first assigned at or after `since`.
    pub fn counts_since(&self, since: Instant) -> (usize, usize) {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut a = 0;
        let mut r = 0;
        for s in v.tasks.values() {
            if s.assigned.is_some_and(|t| t >= since) {
                a += 1;
                if s.running.is_some() {
                    r += 1;
                }
            }
        }
        (a, r)
    }

    /// Per-second curves of assignments and running reports since `t0`, cumulative.
    pub fn curves(&self, t0: Instant, seconds: usize) -> (Vec<usize>, Vec<usize>) {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut a = vec![0usize; seconds + 1];
        let mut r = vec![0usize; seconds + 1];
        let bucket = |t: Instant| t.checked_duration_since(t0).map(|d| d.as_secs() as usize);
        for s in v.tasks.values() {
            if let Some(b) = s.assigned.and_then(bucket).filter(|b| *b <= seconds) {
                a[b] += 1;
            }
            if let Some(b) = s.running.and_then(bucket).filter(|b| *b <= seconds) {
                r[b] += 1;
            }
        }
        for i in 1..=seconds {
            a[i] += a[i - 1];
            r[i] += r[i - 1];
        }
        (a, r)
    }

    /// When each task first assigned at or after `since` was assigned, as times since
    /// `since`, sorted.
    pub fn assigned_since(&self, since: Instant) -> Vec<Duration> {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut t: Vec<Duration> = v
            .tasks
            .values()
            .filter_map(|s| s.assigned?.checked_duration_since(since))
            .collect();
        t.sort();
        t
    }

    /// Assign→running latencies of tasks assigned at or after `since`, sorted.
    pub fn latencies_since(&self, since: Instant) -> Vec<Duration> {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut l: Vec<Duration> = v
            .tasks
            .values()
            .filter_map(|s| match (s.assigned, s.running) {
                (Some(a), Some(r)) if a >= since => Some(r.saturating_duration_since(a)),
                _ => None,
            })
            .collect();
        l.sort();
        l
    }

    /// Total writes seen.
    pub fn writes(&self) -> u64 {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).writes
    }

    /// Waits until `cond(assigned, running)` holds for tasks since `since`, or `limit` passes.
    /// Returns whether it held.
    pub async fn wait_until(
        &self,
        since: Instant,
        limit: Duration,
        cond: impl Fn(usize, usize) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let (a, r) = self.counts_since(since);
            if cond(a, r) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Percentile of a sorted list (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}
