//! Typed watchers and reflector caches over a [`Store`] prefix (kube-runtime's ideas, not its
//! code). Every component that follows the store runs on them: the controller's cache, the
//! agent's assignments and its service networking.
//!
//! [`batches`] lists a prefix, then watches from the list's revision + 1, decoding every value
//! with a caller-supplied function. It delivers [`Batch`]es: first one holding an
//! [`Event::Init`] with the full list (which replaces whatever came before), then one per
//! watch response with its [`Event::Apply`] and [`Event::Delete`] events, each batch with the
//! store revision it brings the watcher up to. When the watch falls behind compaction it
//! lists again and delivers a new `Init`; other failures are retried with
//! [`Backoff::STORE`], resuming from the last revision seen (nothing is missed or repeated).
//! [`watcher`] is the same, one event at a time.
//!
//! Decoding is infallible from the watcher's point of view: a caller that can meet invalid
//! values (a manifest written with `etcdctl put`) decodes to a `Result`, so invalid values
//! reach it as data to report instead of vanishing.
//!
//! [`Reflector`] keeps the latest decoded value of every key in a [`Reader`]: a cheap,
//! cloneable, read-only handle with deterministic (sorted) iteration, a ready signal after the
//! first `Init`, the last revision applied, and a broadcast of changed keys for work queues.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::retry::Backoff;
use crate::{Revision, Store, StoreError, WatchEvent};

/// One change seen by a [`watcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    /// A full list of the prefix (key, value, mod revision), sorted by key. It replaces
    /// everything seen before.
    Init(Vec<(String, T, Revision)>),
    /// A key was created or updated (at the given revision).
    Apply(String, T, Revision),
    /// A key was deleted (at the given revision).
    Delete(String, Revision),
}

/// The events of one store step, with the store revision the watcher is up to after them:
/// a list (one [`Event::Init`], alone in its batch) or one watch response (its `Apply` and
/// `Delete` events, in store order). A consumer that applies a whole batch has seen every
/// change up to `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T> {
    /// The events, in order.
    pub events: Vec<Event<T>>,
    /// The store revision reached: the list's revision, or the watch response's.
    pub revision: Revision,
}

/// A stream of decoded events for one prefix; it never ends on its own.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Event<T>> + Send>>;

/// A stream of decoded batches for one prefix; it never ends on its own.
pub type BatchStream<T> = Pin<Box<dyn Stream<Item = Batch<T>> + Send>>;

/// Decodes a raw value, given as received from the store (a consumer that keeps the bytes
/// keeps them without a copy); infallible here (decode into a `Result` to keep invalid
/// values).
pub trait Decode<T>: Fn(&str, Vec<u8>) -> T + Send + Sync + 'static {}

impl<T, F: Fn(&str, Vec<u8>) -> T + Send + Sync + 'static> Decode<T> for F {}

/// Watches `prefix` of `store` one event at a time. See the module docs.
pub fn watcher<T, D>(store: Arc<dyn Store>, prefix: &str, decode: D) -> EventStream<T>
where
    T: Send + 'static,
    D: Decode<T>,
{
    Box::pin(batches(store, prefix, decode).flat_map(|batch| futures::stream::iter(batch.events)))
}

/// Watches `prefix` of `store` one store step at a time. See the module docs. The background
/// task stops when the stream is dropped.
pub fn batches<T, D>(store: Arc<dyn Store>, prefix: &str, decode: D) -> BatchStream<T>
where
    T: Send + 'static,
    D: Decode<T>,
{
    let prefix = prefix.to_string();
    let (tx, rx) = mpsc::channel(64);
    let span = tracing::info_span!("reflector", prefix = %prefix, backend = store.backend());
    tokio::spawn(run_watcher(store, prefix, decode, tx).instrument(span));
    Box::pin(ReceiverStream::new(rx))
}

/// Sleeps for the next backoff delay; false when the consumer went away meanwhile.
async fn pause<T>(delays: &mut crate::retry::Delays, tx: &mpsc::Sender<T>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delays.next_delay()) => true,
        () = tx.closed() => false,
    }
}

/// Lists `prefix` into an `Init` batch, retrying with backoff; `None` when the consumer went
/// away.
async fn list<T, D: Decode<T>>(
    store: &dyn Store,
    prefix: &str,
    decode: &D,
    delays: &mut crate::retry::Delays,
    tx: &mpsc::Sender<Batch<T>>,
) -> Option<Batch<T>> {
    loop {
        match store.list(prefix).await {
            Ok(list) => {
                let items = list
                    .kvs
                    .into_iter()
                    .map(|kv| {
                        let value = decode(&kv.key, kv.value);
                        (kv.key, value, kv.mod_revision)
                    })
                    .collect();
                tracing::debug!(revision = list.revision, "listed");
                return Some(Batch {
                    events: vec![Event::Init(items)],
                    revision: list.revision,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing failed; retrying");
                if !pause(delays, tx).await {
                    return None;
                }
            }
        }
    }
}

/// Decodes one watch response into a batch.
fn decode_batch<T, D: Decode<T>>(decode: &D, batch: crate::WatchBatch) -> Batch<T> {
    let events = batch
        .events
        .into_iter()
        .map(|event| match event {
            WatchEvent::Put(kv) => {
                let value = decode(&kv.key, kv.value);
                Event::Apply(kv.key, value, kv.mod_revision)
            }
            WatchEvent::Delete { key, mod_revision } => Event::Delete(key, mod_revision),
        })
        .collect();
    Batch {
        events,
        revision: batch.revision,
    }
}

async fn run_watcher<T, D>(
    store: Arc<dyn Store>,
    prefix: String,
    decode: D,
    tx: mpsc::Sender<Batch<T>>,
) where
    T: Send + 'static,
    D: Decode<T>,
{
    let mut delays = Backoff::STORE.delays();
    'relist: loop {
        let Some(listed) = list(store.as_ref(), &prefix, &decode, &mut delays, &tx).await else {
            return;
        };
        let mut revision = listed.revision;
        if tx.send(listed).await.is_err() {
            return;
        }
        loop {
            let mut stream = match store.watch(&prefix, revision + 1).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, from = revision + 1, "watch failed; retrying");
                    if !pause(&mut delays, &tx).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    () = tx.closed() => return,
                };
                match item {
                    Some(Ok(batch)) => {
                        delays.reset();
                        let reached = batch.revision;
                        if tx.send(decode_batch(&decode, batch)).await.is_err() {
                            return;
                        }
                        revision = revision.max(reached);
                    }
                    Some(Err(StoreError::Compacted {
                        requested,
                        compact_revision,
                    })) => {
                        tracing::info!(requested, compact_revision, "watch compacted; relisting");
                        continue 'relist;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, from = revision + 1, "watch broken; resuming");
                        break;
                    }
                    None => {
                        tracing::debug!(from = revision + 1, "watch stream ended; resuming");
                        break;
                    }
                }
            }
            if !pause(&mut delays, &tx).await {
                return;
            }
        }
    }
}

/// A change to a reflector's cache, for work queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key was created or its value changed.
    Applied(String),
    /// The key was removed.
    Deleted(String),
}

impl Change {
    /// The key concerned.
    pub fn key(&self) -> &str {
        match self {
            Change::Applied(key) | Change::Deleted(key) => key,
        }
    }
}

/// One cached value with the revision of its last change.
#[derive(Debug)]
pub struct Entry<T> {
    /// The decoded value.
    pub value: Arc<T>,
    /// The key's `mod_revision`.
    pub mod_revision: Revision,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            mod_revision: self.mod_revision,
        }
    }
}

/// Capacity of the change broadcast; a subscriber further behind gets `Lagged` and should
/// treat every key of [`Reader::keys`] as changed.
const CHANGES_CAPACITY: usize = 4096;

struct Shared<T> {
    map: RwLock<BTreeMap<String, Entry<T>>>,
    revision: AtomicI64,
    ready: watch::Sender<bool>,
    changes: broadcast::Sender<Change>,
}

/// A read-only, cheaply cloneable view of a [`Reflector`]'s cache.
pub struct Reader<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Reader<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> std::fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("revision", &self.revision())
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl<T> Reader<T> {
    fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                map: RwLock::new(BTreeMap::new()),
                revision: AtomicI64::new(0),
                ready: watch::channel(false).0,
                changes: broadcast::channel(CHANGES_CAPACITY).0,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry<T>>> {
        // A panic while holding the lock cannot leave the map half-updated (each update is
        // one insert or one swap), so a poisoned lock is still safe to read.
        self.shared
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().get(key).map(|e| Arc::clone(&e.value))
    }

    /// The value of `key` with its `mod_revision`.
    pub fn entry(&self, key: &str) -> Option<Entry<T>> {
        self.read().get(key).cloned()
    }

    /// Every cached key and value, sorted by key.
    pub fn list(&self) -> Vec<(String, Arc<T>)> {
        self.read()
            .iter()
            .map(|(k, e)| (k.clone(), Arc::clone(&e.value)))
            .collect()
    }

    /// The cached keys and values under `prefix`, sorted by key.
    pub fn list_prefix(&self, prefix: &str) -> Vec<(String, Arc<T>)> {
        self.read()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), Arc::clone(&e.value)))
            .collect()
    }

    /// Every cached key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The store revision the cache reflects (0 before the first list).
    pub fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    /// Whether the first full list has been applied.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Waits until the first full list has been applied.
    pub async fn wait_ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        // The sender lives in `shared`, which `self` keeps alive, so this cannot fail.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Subscribes to changed keys (from now on). On `Lagged`, treat every key as changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    fn apply(&self, batch: Batch<T>) {
        let mut changes = Vec::new();
        {
            let mut map = self
                .shared
                .map
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for event in batch.events {
                Self::apply_event(&mut map, event, &mut changes);
            }
        }
        self.shared
            .revision
            .fetch_max(batch.revision, Ordering::AcqRel);
        changes.sort_by(|a, b| a.key().cmp(b.key()));
        for change in changes {
            // No subscriber is fine.
            let _ = self.shared.changes.send(change);
        }
        // Ready only once the first list's changes are out: a subscriber that waits for
        // ready and then subscribes sees only later changes.
        self.shared
            .ready
            .send_if_modified(|ready| !std::mem::replace(ready, true));
    }

    fn apply_event(
        map: &mut BTreeMap<String, Entry<T>>,
        event: Event<T>,
        changes: &mut Vec<Change>,
    ) {
        match event {
            Event::Init(items) => {
                let fresh: BTreeMap<String, Entry<T>> = items
                    .into_iter()
                    .map(|(k, v, rev)| {
                        (
                            k,
                            Entry {
                                value: Arc::new(v),
                                mod_revision: rev,
                            },
                        )
                    })
                    .collect();
                for (key, old) in map.iter() {
                    match fresh.get(key) {
                        None => changes.push(Change::Deleted(key.clone())),
                        Some(new) if new.mod_revision != old.mod_revision => {
                            changes.push(Change::Applied(key.clone()));
                        }
                        Some(_) => {}
                    }
                }
                for key in fresh.keys() {
                    if !map.contains_key(key) {
                        changes.push(Change::Applied(key.clone()));
                    }
                }
                *map = fresh;
            }
            Event::Apply(key, value, rev) => {
                map.insert(
                    key.clone(),
                    Entry {
                        value: Arc::new(value),
                        mod_revision: rev,
                    },
                );
                changes.push(Change::Applied(key));
            }
            Event::Delete(key, _) => {
                if map.remove(&key).is_some() {
                    changes.push(Change::Deleted(key));
                }
            }
        }
    }
}

/// A cache of one prefix kept up to date by a background [`watcher`].
pub struct Reflector<T> {
    reader: Reader<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> std::fmt::Debug for Reflector<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflector")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Reflector<T> {
    /// Starts reflecting `prefix` of `store`. The task stops when the reflector is dropped.
    pub fn spawn<D: Decode<T>>(store: Arc<dyn Store>, prefix: &str, decode: D) -> Self {
        let reader = Reader::new();
        let writer = reader.clone();
        let mut stream = batches(store, prefix, decode);
        let task = tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                writer.apply(batch);
            }
        });
        Self { reader, task }
    }

    /// A read handle on the cache.
    pub fn reader(&self) -> Reader<T> {
        self.reader.clone()
    }
}

impl<T> Drop for Reflector<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_reports_changed_keys_in_order() {
        let reader: Reader<u32> = Reader::new();
        let mut changes = reader.subscribe();
        let init = |items, revision| Batch {
            events: vec![Event::Init(items)],
            revision,
        };
        reader.apply(init(vec![("b".into(), 1, 2), ("a".into(), 1, 3)], 3));
        assert!(reader.is_ready());
        assert_eq!(reader.keys(), ["a", "b"]);
        reader.apply(init(vec![("a".into(), 1, 3), ("c".into(), 5, 9)], 9));
        let got: Vec<Change> = std::iter::from_fn(|| changes.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                Change::Applied("a".into()),
                Change::Applied("b".into()),
                Change::Deleted("b".into()),
                Change::Applied("c".into()),
            ]
        );
        assert_eq!(reader.revision(), 9);
        assert_eq!(reader.list_prefix("c").len(), 1);
    }
}
