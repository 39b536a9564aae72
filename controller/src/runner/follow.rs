//! The controller's view of the store, kept for as long as the controller runs, leading or
//! standing by: the store's [`reflector`] batches (a list, then every change, again a list
//! after the watch fell behind compaction) applied to one [`Cache`]. A standby's view is
//! warm, so taking over costs one lease acquisition, not a relist of the whole prefix.
//!
//! The view knows nothing of terms: it hands what each batch changed to the term in
//! progress, if any, which queues services and watches its own leader record.
//!
//! [`reflector`]: shoal_store::reflector

use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use shoal_core::Keys;
use shoal_core::model::Timestamp;
use shoal_store::Revision;
use shoal_store::reflector::{Batch, BatchStream, Event};
use tokio::sync::watch;
use tokio_util::sync::DropGuard;
use tracing::info;

use super::Term;
use super::cache::{Cache, Touched};
use crate::metrics::Metrics;

/// What one batch changed, for the term in progress.
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// Services to queue.
    pub(super) touched: Touched,
    /// The batch was a list of this many keys: every service needs a look.
    pub(super) listed: Option<usize>,
    /// Changes of the leader record: value (`None`: deleted) and revision.
    pub(super) leader: Vec<(Option<Vec<u8>>, Revision)>,
}

/// The cache, the revision it reached, and the term it reports to.
pub(super) struct View {
    leader_key: String,
    cache: Mutex<Cache>,
    /// The store revision the cache has seen through the watch (or the last list).
    pub(super) watched: watch::Sender<i64>,
    /// When the last list was loaded: nodes without a record have had since then to appear.
    listed_at: Mutex<Timestamp>,
    term: Mutex<Option<Arc<Term>>>,
    metrics: Metrics,
}

impl View {
    /// An empty view of the keys under `keys`' prefix, its reconcile inputs keeping
    /// `task_history_limit` finished tasks per slot.
    pub(super) fn new(keys: Keys, task_history_limit: usize, metrics: Metrics) -> Self {
        View {
            leader_key: keys.leader(),
            cache: Mutex::new(Cache::new(keys, task_history_limit)),
            watched: watch::channel(0).0,
            listed_at: Mutex::new(Timestamp::now()),
            term: Mutex::new(None),
            metrics,
        }
    }

    /// The cache.
    pub(super) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the last list was loaded.
    pub(super) fn listed_at(&self) -> Timestamp {
        *self.listed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports every later batch to `term` (`None`: to nobody).
    pub(super) fn report_to(&self, term: Option<Arc<Term>>) {
        *self.term.lock().unwrap_or_else(|p| p.into_inner()) = term;
    }

    /// Applies one batch of the store's changes to the cache.
    pub(super) fn apply_batch(&self, batch: Batch<Vec<u8>>) -> Applied {
        let mut applied = Applied::default();
        {
            let mut c = self.cache();
            for event in batch.events {
                let (key, value, revision) = match event {
                    Event::Init(items) => {
                        c.relist(&items);
                        self.metrics.relists.inc();
                        *self.listed_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Timestamp::now();
                        applied.listed = Some(items.len());
                        continue;
                    }
                    Event::Apply(key, value, revision) => (key, Some(value), revision),
                    Event::Delete(key, revision) => (key, None, revision),
                };
                if key == self.leader_key {
                    applied.leader.push((value.clone(), revision));
                }
                applied
                    .touched
                    .merge(c.apply(&key, value.as_deref(), revision));
            }
            c.prune(batch.revision);
        }
        self.watched.send_if_modified(|seen| {
            let newer = batch.revision > *seen;
            *seen = (*seen).max(batch.revision);
            newer
        });
        if let Some(keys) = applied.listed {
            info!(keys, revision = batch.revision, "cache loaded");
        }
        applied
    }

    /// Applies the store's changes until the stream ends (the store's watch broke for
    /// good); `_down` is dropped then, or when this task panics or is aborted.
    pub(super) async fn follow(
        self: Arc<Self>,
        mut batches: BatchStream<Vec<u8>>,
        _down: DropGuard,
    ) {
        while let Some(batch) = batches.next().await {
            let applied = self.apply_batch(batch);
            let term = self.term.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(term) = term {
                term.observe(applied);
            }
        }
    }
}
