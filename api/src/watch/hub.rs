//! One watch of the store per API process, shared by every `/v1/watch` client.
//!
//! The hub lists the prefix once, keeps the current record of every key the watch carries,
//! follows the store's watch, and keeps the most recent changes (at most [`HISTORY`]). Each
//! SSE client reads from the hub: a new client gets the current records, then the changes
//! after them; a client resuming from a revision gets the changes after it, as long as the hub
//! still holds them (otherwise it is told to start again). However many browsers and
//! `shoal get -w` follow the cluster, the store (Consul counts connections per client address,
//! 200 by default) sees one watch from the API.
//!
//! The hub follows the store with [`reflector::batches`]: when the store's watch falls behind
//! compaction, the reflector lists again and the hub turns the difference with what it held
//! into changes, so no client misses a deletion. When the API shuts down ([`Hub::stop`]) the
//! hub stops following the store and every client's stream ends.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use shoal_core::{Key, Keys};
use shoal_store::reflector::{self, Batch, BatchStream, Event};
use shoal_store::{Revision, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::types::{WatchEvent, WatchKind};

/// Most changes the hub keeps for clients that fall behind or resume.
pub const HISTORY: usize = 20_000;

/// A client asked for changes the hub no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    /// The revision the client asked to resume after.
    pub requested: Revision,
    /// The hub holds every change after this revision.
    pub covered_from: Revision,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "revision {} is older than the API's watch history (it holds the changes after \
             revision {}); watch again without a revision to start from the current state",
            self.requested, self.covered_from
        )
    }
}

/// What the hub holds.
#[derive(Debug, Default)]
struct Inner {
    /// Whether the first list is done.
    started: bool,
    /// The current record of every key the watch carries.
    current: BTreeMap<String, Arc<WatchEvent>>,
    /// The revision `current` is at.
    revision: Revision,
    /// Recent changes, by revision.
    history: VecDeque<Arc<WatchEvent>>,
    /// `history` holds every change after this revision.
    covered_from: Revision,
}

impl Inner {
    /// Records `events` (sorted by revision) as the changes up to `revision`.
    fn record(&mut self, events: Vec<WatchEvent>, revision: Revision) {
        let floor = self.revision;
        let mut top = revision;
        for mut ev in events {
            // Revisions only go forward on the stream, even if the store's went back (a
            // Consul index reset): a change at or below what clients saw would be skipped.
            if ev.revision <= floor {
                ev.revision = floor + 1;
            }
            top = top.max(ev.revision);
            let ev = Arc::new(ev);
            let key = event_key(&ev);
            if ev.deleted {
                self.current.remove(&key);
            } else {
                self.current.insert(key, Arc::clone(&ev));
            }
            self.history.push_back(ev);
        }
        self.revision = self.revision.max(top);
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.covered_from = self.covered_from.max(old.revision);
            }
        }
        // Never leave half a revision: a client resuming at it would miss the rest.
        while self
            .history
            .front()
            .is_some_and(|e| e.revision <= self.covered_from)
        {
            self.history.pop_front();
        }
    }
}

/// A stable identity of an event's record: its service for a service status, else its kind,
/// node and task (a task's deletion carries no service).
fn event_key(ev: &WatchEvent) -> String {
    match ev.kind {
        WatchKind::ServiceStatus => format!(
            "{}/{}/{}",
            ev.kind.as_str(),
            ev.namespace.as_deref().unwrap_or(""),
            ev.service.as_deref().unwrap_or("")
        ),
        _ => format!(
            "{}/{}/{}",
            ev.kind.as_str(),
            ev.node.as_deref().unwrap_or(""),
            ev.task.as_deref().unwrap_or("")
        ),
    }
}

/// The shared watch of one API process (started by its first client).
pub struct Hub {
    store: Arc<dyn Store>,
    keys: Keys,
    inner: Mutex<Inner>,
    /// The hub's revision, for clients waiting on changes.
    changed: watch::Sender<Revision>,
    /// Serialises the start.
    starting: tokio::sync::Mutex<()>,
    /// Cancelled when the API shuts down (or the hub is dropped): the follower stops and
    /// every client's stream ends.
    stop: CancellationToken,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A client's starting point: the records to send first and the revision to follow from.
#[derive(Debug)]
pub struct Start {
    /// Records to send first (all at `revision` for a new client; none when resuming).
    pub initial: Vec<WatchEvent>,
    /// The current task records (to learn which service each task belongs to).
    pub tasks: Vec<Arc<WatchEvent>>,
    /// Follow the changes after this revision.
    pub revision: Revision,
}

/// The batches the hub follows: each key's watch event (`None` for keys it does not carry).
type Batches = BatchStream<Option<WatchEvent>>;

impl Hub {
    /// A hub over `store`'s records under `keys` (not started yet).
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Hub {
            store,
            keys,
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            starting: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the hub: its watch of the store ends, and so does every client's stream (the
    /// API is shutting down).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Cancelled once the hub stops.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts the hub if it is not running: waits for the first list of the prefix (retried
    /// while the store is unreachable) and follows the store in the background. False when
    /// the hub stopped meanwhile.
    async fn ensure_started(self: &Arc<Self>) -> bool {
        if self.lock().started {
            return true;
        }
        let _guard = self.starting.lock().await;
        if self.lock().started {
            return true;
        }
        let keys = self.keys.clone();
        let mut batches: Batches = reflector::batches(
            Arc::clone(&self.store),
            &self.prefix(),
            move |key: &str, value: Vec<u8>| to_event(&keys, key, Some(&value), 0),
        );
        let first = tokio::select! {
            b = batches.next() => b,
            () = self.stop.cancelled() => None,
        };
        let Some(first) = first else { return false };
        self.take(first);
        let revision = {
            let mut inner = self.lock();
            inner.history.clear();
            inner.covered_from = inner.revision;
            inner.started = true;
            inner.revision
        };
        self.changed.send_replace(revision);
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(follow(weak, stop, batches).instrument(tracing::info_span!("watch_hub")));
        true
    }

    fn prefix(&self) -> String {
        format!("{}/", self.keys.prefix())
    }

    /// Where a client starts: from the current records (`from` = `None`) or after `from`;
    /// `None` when the hub stopped (the API is shutting down).
    pub async fn start(self: &Arc<Self>, from: Option<Revision>) -> Option<Result<Start, Behind>> {
        if !self.ensure_started().await {
            return None;
        }
        let inner = self.lock();
        let tasks: Vec<Arc<WatchEvent>> = inner
            .current
            .values()
            .filter(|e| e.kind == WatchKind::Task)
            .cloned()
            .collect();
        Some(match from {
            None => {
                // Tasks first, so their statuses find their service.
                let (first, rest): (Vec<_>, Vec<_>) = inner
                    .current
                    .values()
                    .partition(|e| e.kind == WatchKind::Task);
                let initial = first
                    .into_iter()
                    .chain(rest)
                    .map(|e| WatchEvent {
                        revision: inner.revision,
                        ..(**e).clone()
                    })
                    .collect();
                Ok(Start {
                    initial,
                    tasks,
                    revision: inner.revision,
                })
            }
            Some(r) if r < inner.covered_from => Err(Behind {
                requested: r,
                covered_from: inner.covered_from,
            }),
            Some(r) => Ok(Start {
                initial: Vec::new(),
                tasks,
                revision: r,
            }),
        })
    }

    /// The changes after `after`, oldest first (empty when there is none yet).
    pub fn since(&self, after: Revision) -> Result<Vec<Arc<WatchEvent>>, Behind> {
        let inner = self.lock();
        if after < inner.covered_from {
            return Err(Behind {
                requested: after,
                covered_from: inner.covered_from,
            });
        }
        let from = inner.history.partition_point(|e| e.revision <= after);
        Ok(inner.history.range(from..).cloned().collect())
    }

    /// Waits until the hub moves past `after`: true, or false once the hub stops (a caller
    /// looping on it must then end, or it would spin).
    pub async fn wait_past(&self, after: Revision) -> bool {
        let mut rx = self.changed.subscribe();
        tokio::select! {
            moved = rx.wait_for(|r| *r > after) => moved.is_ok(),
            () = self.stop.cancelled() => false,
        }
    }

    /// The events that turn `current` into a list at `revision`, sorted by revision: the
    /// records that changed, and a deletion of each record the list no longer has.
    fn diff(
        current: &BTreeMap<String, Arc<WatchEvent>>,
        items: Vec<(String, Option<WatchEvent>, Revision)>,
        revision: Revision,
    ) -> Vec<WatchEvent> {
        let mut seen = std::collections::BTreeSet::new();
        let mut events = Vec::new();
        for (_, ev, mod_revision) in items {
            let Some(ev) = ev else { continue };
            let ev = WatchEvent {
                revision: mod_revision,
                ..ev
            };
            let key = event_key(&ev);
            let known = current.get(&key).map(|e| e.revision);
            seen.insert(key);
            if known != Some(mod_revision) {
                events.push(ev);
            }
        }
        for (key, ev) in current {
            if !seen.contains(key) {
                events.push(WatchEvent {
                    revision,
                    deleted: true,
                    value: None,
                    ..(**ev).clone()
                });
            }
        }
        events.sort_by_key(|e| e.revision);
        events
    }

    /// Applies one batch of the store: a list (the first, or again after the store's watch
    /// fell behind compaction) as the changes from what the hub held, or a watch response.
    fn take(&self, batch: Batch<Option<WatchEvent>>) {
        let mut inner = self.lock();
        let mut events = Vec::new();
        for event in batch.events {
            match event {
                Event::Init(items) => {
                    events.extend(Self::diff(&inner.current, items, batch.revision));
                }
                Event::Apply(_, ev, mod_revision) => {
                    events.extend(ev.map(|ev| WatchEvent {
                        revision: mod_revision,
                        ..ev
                    }));
                }
                Event::Delete(key, mod_revision) => {
                    // A deletion carries no service: take it from the record it removes.
                    let Some(mut ev) = to_event(&self.keys, &key, None, mod_revision) else {
                        continue;
                    };
                    if let Some(old) = inner.current.get(&event_key(&ev)) {
                        ev.namespace = old.namespace.clone();
                        ev.service = old.service.clone();
                    }
                    events.push(ev);
                }
            }
        }
        let before = inner.revision;
        inner.record(events, batch.revision);
        let revision = inner.revision;
        drop(inner);
        if revision != before {
            self.changed.send_replace(revision);
        }
    }
}

/// Follows the store's batches until the hub stops or is dropped.
async fn follow(hub: Weak<Hub>, stop: CancellationToken, mut batches: Batches) {
    loop {
        let next = tokio::select! {
            b = batches.next() => b,
            () = stop.cancelled() => return,
        };
        let (Some(batch), Some(hub)) = (next, hub.upgrade()) else {
            return;
        };
        hub.take(batch);
    }
}

/// Builds the watch event of a key, or `None` for keys the watch does not carry.
pub(super) fn to_event(
    keys: &Keys,
    key: &str,
    value: Option<&[u8]>,
    revision: Revision,
) -> Option<WatchEvent> {
    let deleted = value.is_none();
    let value = value.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok());
    let mut ev = WatchEvent {
        revision,
        kind: WatchKind::Task,
        deleted,
        namespace: None,
        service: None,
        node: None,
        task: None,
        value,
    };
    match keys.parse(key)? {
        Key::ServiceStatus(r) => {
            ev.kind = WatchKind::ServiceStatus;
            ev.namespace = Some(r.namespace);
            ev.service = Some(r.name);
        }
        Key::Task { node, task } => {
            ev.kind = WatchKind::Task;
            if let Some(svc) = ev.value.as_ref().and_then(|v| v.get("service")) {
                ev.namespace = svc
                    .get("namespace")
                    .and_then(|s| s.as_str())
                    .map(String::from);
                ev.service = svc.get("name").and_then(|s| s.as_str()).map(String::from);
            }
            ev.node = Some(node);
            ev.task = Some(task);
        }
        Key::TaskStatus { node, task } => {
            ev.kind = WatchKind::TaskStatus;
            ev.node = Some(node);
            ev.task = Some(task);
        }
        Key::Node(node) => {
            ev.kind = WatchKind::Node;
            ev.node = Some(node);
        }
        Key::NodeConfig(node) => {
            ev.kind = WatchKind::NodeConfig;
            ev.node = Some(node);
        }
        _ => return None,
    }
    Some(ev)
}
