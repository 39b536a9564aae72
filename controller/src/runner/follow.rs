//! The controller's view of the store, kept for as long as the controller runs, leading or
//! standing by: the store's [`reflector`] batches (a list, then every change, again a list
//! after the watch fell behind compaction) applied to one [`Cache`]. A standby's view is
//! warm, so taking over costs one lease acquisition, not a relist of the whole prefix.
//!
//! The view knows nothing of terms: it hands what each batch changed to the term in
//! progress, if any, which queues services and watches its own leader record. While there is
//! none, the cache holds back the changes of every key but nodes' records ([`Cache::defer`])
//! and applies them once the store has been quiet for a moment, or when a term starts.
//!
//! [`reflector`]: shoal_store::reflector

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use shoal_core::Keys;
use shoal_core::model::Timestamp;
use shoal_store::Revision;
use shoal_store::reflector::{Batch, BatchStream, Event};
use tokio::sync::watch;
use tokio_util::sync::DropGuard;
use tracing::{debug, info};

use super::Term;
use super::cache::{Cache, Touched};
use crate::metrics::Metrics;

/// How long the store goes without a change before a standby applies the changes it held
/// back: short enough that it is warm again a moment after a leader stopped writing.
const QUIET: Duration = Duration::from_millis(200);

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
        let mut cache = Cache::new(keys.clone(), task_history_limit);
        // No term yet.
        cache.defer(true);
        View {
            leader_key: keys.leader(),
            cache: Mutex::new(cache),
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

    /// Reports every later batch to `term` (`None`: to nobody). A term reads the cache: the
    /// changes held back are applied first, and none is held back while it runs.
    pub(super) fn report_to(&self, term: Option<Arc<Term>>) {
        self.cache().defer(term.is_none());
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
                applied.touched.merge(c.apply_watched(key, value, revision));
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
        while let Some(batch) = self.next_batch(&mut batches).await {
            let applied = self.apply_batch(batch);
            let term = self.term.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(term) = term {
                term.observe(applied);
            }
        }
    }

    /// The store's next batch; while changes are held back and the store is quiet, applies
    /// them meanwhile.
    async fn next_batch(&self, batches: &mut BatchStream<Vec<u8>>) -> Option<Batch<Vec<u8>>> {
        loop {
            if !self.cache().holds_back() {
                return batches.next().await;
            }
            // `next` is cancel-safe: a batch not yet whole stays in the stream.
            match tokio::time::timeout(QUIET, batches.next()).await {
                Ok(next) => return next,
                Err(_) => {
                    let changes = self.cache().catch_up();
                    debug!(changes, "applied the changes held back");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT;
    use futures::channel::mpsc;
    use shoal_core::model::{self, TaskState, TaskStatus};

    fn status_batch(keys: &Keys, task: &str, revision: Revision) -> Batch<Vec<u8>> {
        let st = TaskStatus::new(task, TaskState::Running, Timestamp(1));
        let key = keys.task_status("n1", task);
        Batch {
            events: vec![Event::Apply(key, model::encode(&st), revision)],
            revision,
        }
    }

    /// Whether the view shows a record of `task`.
    fn shows(view: &View, task: &str) -> bool {
        view.cache().fingerprint().contains(task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_applies_what_it_held_back_once_the_store_is_quiet() {
        let keys = Keys::default();
        let view = Arc::new(View::new(
            keys.clone(),
            DEFAULT_TASK_HISTORY_LIMIT,
            Metrics::default(),
        ));
        let (tx, rx) = mpsc::unbounded();
        let down = tokio_util::sync::CancellationToken::new();
        let follow = tokio::spawn(view.clone().follow(Box::pin(rx), down.drop_guard()));
        tx.unbounded_send(status_batch(&keys, "web.1.a", 2))
            .unwrap();
        // Busy: a batch comes sooner than the quiet time, each held back.
        for _ in 0..3 {
            tokio::time::sleep(QUIET / 2).await;
            assert!(
                view.cache().holds_back(),
                "held back while the store is busy"
            );
            assert!(!shows(&view, "web.1.a"));
            tx.unbounded_send(status_batch(&keys, "web.2.a", 3))
                .unwrap();
        }
        tokio::time::sleep(QUIET * 2).await;
        assert!(
            !view.cache().holds_back(),
            "applied once the store went quiet"
        );
        assert!(shows(&view, "web.1.a") && shows(&view, "web.2.a"));
        assert_eq!(*view.watched.borrow(), 3);
        drop(tx);
        follow.await.unwrap();
    }
}
