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
//! When the store's watch breaks (a compacted revision, the store restarting), the hub lists
//! again and turns the difference with what it held into changes, so no client misses a
//! deletion.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use shoal_core::{Key, Keys};
use shoal_store::{KeyValue, Revision, Store, WatchEvent as StoreEvent};
use tokio::sync::watch;
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
    /// Dropped with the hub, which stops its follower.
    stop: watch::Sender<()>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
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

impl Hub {
    /// A hub over `store`'s records under `keys` (not started yet).
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Hub {
            store,
            keys,
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            starting: tokio::sync::Mutex::new(()),
            stop: watch::channel(()).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the hub if it is not running: lists the prefix (a store error goes to the
    /// caller) and follows it in the background.
    async fn ensure_started(self: &Arc<Self>) -> Result<(), shoal_store::StoreError> {
        if self.lock().started {
            return Ok(());
        }
        let _guard = self.starting.lock().await;
        if self.lock().started {
            return Ok(());
        }
        let list = self.store.list(&self.prefix()).await?;
        let revision = list.revision;
        {
            let mut inner = self.lock();
            let events = self.diff(&inner.current, &list.kvs, revision);
            inner.record(events, revision);
            inner.history.clear();
            inner.covered_from = revision;
            inner.started = true;
        }
        self.changed.send_replace(revision);
        let weak = Arc::downgrade(self);
        let stop = self.stop.subscribe();
        tokio::spawn(follow(weak, stop, revision).instrument(tracing::info_span!("watch_hub")));
        Ok(())
    }

    fn prefix(&self) -> String {
        format!("{}/", self.keys.prefix())
    }

    /// Where a client starts: from the current records (`from` = `None`) or after `from`.
    pub async fn start(
        self: &Arc<Self>,
        from: Option<Revision>,
    ) -> Result<Result<Start, Behind>, shoal_store::StoreError> {
        self.ensure_started().await?;
        let inner = self.lock();
        let tasks: Vec<Arc<WatchEvent>> = inner
            .current
            .values()
            .filter(|e| e.kind == WatchKind::Task)
            .cloned()
            .collect();
        match from {
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
                Ok(Ok(Start {
                    initial,
                    tasks,
                    revision: inner.revision,
                }))
            }
            Some(r) if r < inner.covered_from => Ok(Err(Behind {
                requested: r,
                covered_from: inner.covered_from,
            })),
            Some(r) => Ok(Ok(Start {
                initial: Vec::new(),
                tasks,
                revision: r,
            })),
        }
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

    /// Waits until the hub moves past `after` (or the hub stops).
    pub async fn wait_past(&self, after: Revision) {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|r| *r > after).await;
    }

    /// The events that turn `current` into `kvs` (a list at `revision`), sorted by revision.
    fn diff(
        &self,
        current: &BTreeMap<String, Arc<WatchEvent>>,
        kvs: &[KeyValue],
        revision: Revision,
    ) -> Vec<WatchEvent> {
        let mut seen = std::collections::BTreeSet::new();
        let mut events = Vec::new();
        for kv in kvs {
            let Some(ev) = to_event(&self.keys, &kv.key, Some(kv), kv.mod_revision) else {
                continue;
            };
            let key = event_key(&ev);
            let known = current.get(&key).map(|e| e.revision);
            seen.insert(key);
            if known != Some(kv.mod_revision) {
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

    /// Applies a list taken after the store's watch broke.
    fn relisted(&self, kvs: &[KeyValue], revision: Revision) {
        let mut inner = self.lock();
        let events = self.diff(&inner.current, kvs, revision);
        if events.is_empty() {
            return;
        }
        inner.record(events, revision);
        let revision = inner.revision;
        drop(inner);
        self.changed.send_replace(revision);
    }

    /// Applies a batch of the store's watch.
    fn apply(&self, batch: &shoal_store::WatchBatch) {
        let events: Vec<WatchEvent> = batch
            .events
            .iter()
            .filter_map(|ev| match ev {
                StoreEvent::Put(kv) => to_event(&self.keys, &kv.key, Some(kv), kv.mod_revision),
                StoreEvent::Delete { key, mod_revision } => {
                    to_event(&self.keys, key, None, *mod_revision)
                }
            })
            .collect();
        let mut inner = self.lock();
        // A deletion carries no service: take it from the record it removes.
        let events = events
            .into_iter()
            .map(|mut ev| {
                if ev.deleted
                    && let Some(old) = inner.current.get(&event_key(&ev))
                {
                    ev.namespace = old.namespace.clone();
                    ev.service = old.service.clone();
                }
                ev
            })
            .collect();
        inner.record(events, batch.revision);
        let revision = inner.revision;
        drop(inner);
        self.changed.send_replace(revision);
    }
}

/// Follows the store from `revision` until the hub is dropped, listing again whenever the
/// store's watch breaks.
async fn follow(hub: Weak<Hub>, mut stop: watch::Receiver<()>, mut revision: Revision) {
    let mut delay = Duration::from_millis(200);
    let mut relist = false;
    loop {
        let Some(h) = hub.upgrade() else { return };
        let (store, prefix) = (Arc::clone(&h.store), h.prefix());
        drop(h);
        if relist {
            let listed = tokio::select! {
                r = store.list(&prefix) => r,
                _ = stop.changed() => return,
            };
            match listed {
                Ok(list) => {
                    let Some(h) = hub.upgrade() else { return };
                    h.relisted(&list.kvs, list.revision);
                    revision = list.revision;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "watch hub cannot list the store; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        let mut stream = match store.watch(&prefix, revision + 1).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "watch hub cannot watch the store; listing again");
                relist = true;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                b = stream.next() => b,
                _ = stop.changed() => return,
            };
            match next {
                Some(Ok(batch)) => {
                    let Some(h) = hub.upgrade() else { return };
                    h.apply(&batch);
                    revision = revision.max(batch.revision);
                    delay = Duration::from_millis(200);
                }
                Some(Err(e)) => {
                    tracing::info!(error = %e, "the store's watch broke; the watch hub lists again");
                    relist = true;
                    break;
                }
                None => {
                    relist = true;
                    break;
                }
            }
        }
    }
}

/// Builds the watch event of a key, or `None` for keys the watch does not carry.
pub(super) fn to_event(
    keys: &Keys,
    key: &str,
    kv: Option<&KeyValue>,
    revision: Revision,
) -> Option<WatchEvent> {
    let value = kv.and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok());
    let mut ev = WatchEvent {
        revision,
        kind: WatchKind::Task,
        deleted: kv.is_none(),
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
