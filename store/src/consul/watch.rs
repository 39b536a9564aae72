//! Watches on Consul: a blocking-query loop over a prefix that turns successive snapshots
//! into put and delete events (see the [`super::store`] docs for the semantics).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{ConsulClient, IndexTracker, QueryOptions};
use super::store::{ConsulStoreOptions, to_kv};
use super::types::KvEntry;
use crate::{Revision, StoreError, WatchBatch, WatchEvent, WatchStream};

/// Key → `ModifyIndex` of everything under a prefix at one index.
pub(super) type KeyIndexes = BTreeMap<String, u64>;

/// Recent list snapshots, so a watch started right after a list knows exactly what the
/// caller has (including keys deleted since).
#[derive(Debug)]
pub(super) struct Snapshots {
    cap: usize,
    entries: VecDeque<(String, u64, Arc<KeyIndexes>)>,
}

impl Snapshots {
    /// An empty cache keeping at most `cap` snapshots.
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            entries: VecDeque::new(),
        }
    }

    /// Remembers the snapshot of `prefix` at `index`.
    pub(super) fn insert(&mut self, prefix: &str, index: u64, keys: KeyIndexes) {
        if self.cap == 0 {
            return;
        }
        self.entries
            .retain(|(p, i, _)| !(p == prefix && *i == index));
        if self.entries.len() >= self.cap {
            self.entries.pop_front();
        }
        self.entries
            .push_back((prefix.to_string(), index, Arc::new(keys)));
    }

    /// The snapshot of `prefix` at exactly `index`, if remembered.
    pub(super) fn get(&self, prefix: &str, index: u64) -> Option<Arc<KeyIndexes>> {
        self.entries
            .iter()
            .rev()
            .find(|(p, i, _)| p == prefix && *i == index)
            .map(|(_, _, k)| Arc::clone(k))
    }
}

/// When this store first saw each index, to tell whether a revision is older than Consul's
/// tombstone reap horizon (`tombstone_ttl`, 15 min): a delete after such a revision may have
/// left no tombstone, so "nothing changed under the prefix since" can no longer be read from
/// the prefix's index.
#[derive(Debug)]
pub(super) struct IndexClock {
    /// (index, when first seen), by increasing index, younger than `ttl`.
    seen: VecDeque<(u64, Instant)>,
    /// Every index up to this one was first seen more than `ttl` ago.
    old_up_to: u64,
    ttl: Duration,
}

impl IndexClock {
    /// A clock for Consul's `tombstone_ttl` of `ttl`.
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            seen: VecDeque::new(),
            old_up_to: 0,
            // A tenth of margin: a revision learnt from a write is seen a moment after it
            // was made, and a delete could follow it in between.
            ttl: ttl.mul_f64(0.9),
        }
    }

    /// Records that Consul answered with `index` now.
    pub(super) fn observe(&mut self, index: u64) {
        let now = Instant::now();
        if self.seen.back().is_none_or(|(i, _)| index > *i) && index > self.old_up_to {
            self.seen.push_back((index, now));
        }
        while let Some(&(i, t)) = self.seen.front() {
            if now.duration_since(t) <= self.ttl {
                break;
            }
            self.old_up_to = self.old_up_to.max(i);
            self.seen.pop_front();
        }
    }

    /// Whether `revision` was first seen (as it or a later index) longer than the tombstone
    /// TTL ago: deletes after it may have been reaped without trace.
    pub(super) fn is_past_reap_horizon(&mut self, revision: u64) -> bool {
        self.observe(0);
        revision <= self.old_up_to
    }
}

/// Starts a watch: reads the prefix now (so every change after this call is reported),
/// then follows it in a task. `base` is the caller's exact state at `from - 1` when known.
pub(super) async fn start(
    client: ConsulClient,
    options: ConsulStoreOptions,
    prefix: String,
    from: Revision,
    base: Option<Arc<KeyIndexes>>,
    clock: Arc<Mutex<IndexClock>>,
) -> Result<WatchStream, StoreError> {
    let (entries, index) = client.kv_list(&prefix, QueryOptions::default()).await?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut w = Watcher {
            client,
            options,
            prefix,
            tx,
            known: KeyIndexes::new(),
            last: 0,
            clock,
        };
        if let Err(e) = w.run(from, base, entries, index).await {
            let _ = w.tx.send(Err(e)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

struct Watcher {
    client: ConsulClient,
    options: ConsulStoreOptions,
    prefix: String,
    tx: mpsc::Sender<Result<WatchBatch, StoreError>>,
    /// What the consumer knows: key → ModifyIndex.
    known: KeyIndexes,
    /// Revision of the last batch sent.
    last: u64,
    /// When indexes were first seen (shared with the store).
    clock: Arc<Mutex<IndexClock>>,
}

/// The consumer dropped the stream.
struct Gone;

impl Watcher {
    /// Reads the prefix, retrying transient failures with backoff.
    async fn read(&self, opts: QueryOptions) -> Result<(Vec<KvEntry>, u64), StoreError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.client.kv_list(&self.prefix, opts).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() => {
                    tracing::warn!(prefix = %self.prefix, error = %e, ?backoff, "consul watch read failed; retrying");
                    if self.tx.is_closed() {
                        return Err(StoreError::Unavailable("watch dropped".into()));
                    }
                    let jitter = Duration::from_millis(rand::random_range(
                        0..=backoff.as_millis() as u64 / 4,
                    ));
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn run(
        &mut self,
        from: Revision,
        base: Option<Arc<KeyIndexes>>,
        entries: Vec<KvEntry>,
        index: u64,
    ) -> Result<(), StoreError> {
        let index = index.max(1);
        let from_u = from.max(0) as u64;
        if from <= 0 {
            self.known = entries
                .iter()
                .map(|e| (e.key.clone(), e.modify_index))
                .collect();
        } else if let Some(base) = base {
            self.known = (*base).clone();
        } else if from == 1 || (index < from_u && !self.past_reap_horizon(from_u - 1)) {
            self.known = entries
                .iter()
                .filter(|e| e.modify_index < from_u)
                .map(|e| (e.key.clone(), e.modify_index))
                .collect();
        } else {
            return Err(StoreError::Compacted {
                requested: from,
                compact_revision: index as Revision,
            });
        }
        self.last = from_u.saturating_sub(1);
        if self.emit(entries, index).await.is_err() {
            return Ok(());
        }
        let mut tracker = IndexTracker::new(index, self.options.watch_min_interval);
        loop {
            tracker.pace().await;
            if self.tx.is_closed() {
                return Ok(());
            }
            let opts = QueryOptions::blocking(tracker.index(), self.options.watch_wait);
            let (entries, index) = self.read(opts).await?;
            if let Ok(mut c) = self.clock.lock() {
                c.observe(index);
            }
            if tracker.observe(index) {
                tracing::info!(prefix = %self.prefix, index, "consul index went backwards; re-reading");
            }
            if self.emit(entries, index).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Whether `revision` is older than Consul's tombstone reap horizon.
    fn past_reap_horizon(&self, revision: u64) -> bool {
        self.clock
            .lock()
            .map(|mut c| c.is_past_reap_horizon(revision))
            .unwrap_or(true)
    }

    /// Diffs `entries` against what the consumer knows and sends the changes as one batch.
    async fn emit(&mut self, entries: Vec<KvEntry>, index: u64) -> Result<(), Gone> {
        let mut events: Vec<(u64, WatchEvent)> = Vec::new();
        let mut now = KeyIndexes::new();
        let mut top = self.last;
        for e in entries {
            now.insert(e.key.clone(), e.modify_index);
            top = top.max(e.modify_index);
            if self.known.get(&e.key).is_none_or(|&m| e.modify_index > m) {
                events.push((e.modify_index, WatchEvent::Put(to_kv(e))));
            }
        }
        let revision = top.max(index);
        for key in self.known.keys().filter(|k| !now.contains_key(*k)) {
            events.push((
                revision,
                WatchEvent::Delete {
                    key: format!("/{key}"),
                    mod_revision: revision as Revision,
                },
            ));
        }
        self.known = now;
        events.sort_by_key(|(rev, e)| (*rev, matches!(e, WatchEvent::Delete { .. })));
        if events.is_empty() && revision <= self.last {
            return Ok(());
        }
        self.last = revision;
        let batch = WatchBatch {
            events: events.into_iter().map(|(_, e)| e).collect(),
            revision: revision as Revision,
        };
        self.tx.send(Ok(batch)).await.map_err(|_| Gone)
    }
}
