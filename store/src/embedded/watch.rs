//! Watches on the embedded store: catch up from the persisted history, then follow the live
//! broadcast; a watcher that falls behind the broadcast goes back to the history, and one that
//! falls behind the history gets [`StoreError::Compacted`].

use std::sync::{Arc, Weak};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::RevisionEvents;
use super::engine::{Inner, join_err};
use crate::{Revision, StoreError, WatchBatch, WatchEvent, WatchStream};

/// Revisions read from the history per step while catching up.
const HISTORY_CHUNK: usize = 256;

/// Starts a watch of `prefix` from `from` (inclusive; `<= 0` = from the next revision).
pub(super) fn spawn(inner: Weak<Inner>, prefix: String, from: Revision) -> WatchStream {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut watch = Watch {
            inner,
            prefix,
            next: from,
            tx,
        };
        if let Err(e) = watch.run().await {
            // The receiver may be gone already; nothing else to do.
            let _ = watch.tx.send(Err(e)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

struct Watch {
    inner: Weak<Inner>,
    prefix: String,
    /// Next revision to deliver.
    next: Revision,
    tx: mpsc::Sender<Result<WatchBatch, StoreError>>,
}

/// The consumer dropped the stream.
struct Gone;

impl Watch {
    /// Runs until the consumer goes away (`Ok`) or the watch fails (`Err`, sent to the
    /// consumer as the stream's last item).
    async fn run(&mut self) -> Result<(), StoreError> {
        loop {
            let Some(mut rx) = self.catch_up().await? else {
                return Ok(());
            };
            match self.follow(&mut rx).await {
                Ok(Follow::Lagged) => continue,
                Ok(Follow::Closed) => {
                    return Err(StoreError::Unavailable(
                        "the embedded store was closed".into(),
                    ));
                }
                Err(Gone) => return Ok(()),
            }
        }
    }

    /// Subscribes to the live feed, then delivers the history from `next` up to the store's
    /// revision. Returns the subscription, or `None` when the consumer went away.
    async fn catch_up(
        &mut self,
    ) -> Result<Option<broadcast::Receiver<Arc<RevisionEvents>>>, StoreError> {
        let Some(inner) = self.inner.upgrade() else {
            return Err(StoreError::Unavailable(
                "the embedded store was closed".into(),
            ));
        };
        let rx = inner.events_tx.subscribe();
        if self.next <= 0 {
            self.next = inner.revision() + 1;
            return Ok(Some(rx));
        }
        loop {
            let from = self.next;
            let reader = Arc::clone(&inner);
            let (chunk, revision, compact) =
                tokio::task::spawn_blocking(move || reader.history(from, HISTORY_CHUNK))
                    .await
                    .map_err(join_err)??;
            if self.next < compact {
                return Err(StoreError::Compacted {
                    requested: self.next,
                    compact_revision: compact,
                });
            }
            let Some(last) = chunk.last().map(|(rev, _)| *rev) else {
                return Ok(Some(rx));
            };
            let events: Vec<WatchEvent> = chunk
                .into_iter()
                .flat_map(|(_, events)| events)
                .filter(|e| e.key().starts_with(&self.prefix))
                .collect();
            self.next = last + 1;
            if !events.is_empty()
                && self
                    .tx
                    .send(Ok(WatchBatch {
                        events,
                        revision: last,
                    }))
                    .await
                    .is_err()
            {
                return Ok(None);
            }
            if last >= revision {
                return Ok(Some(rx));
            }
        }
    }

    /// Follows the live feed until it lags, closes, or the consumer goes away.
    async fn follow(
        &mut self,
        rx: &mut broadcast::Receiver<Arc<RevisionEvents>>,
    ) -> Result<Follow, Gone> {
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                () = self.tx.closed() => return Err(Gone),
            };
            match msg {
                Ok(rev) if rev.revision < self.next => continue,
                Ok(rev) => {
                    self.next = rev.revision + 1;
                    let events: Vec<WatchEvent> = rev
                        .events
                        .iter()
                        .filter(|e| e.key().starts_with(&self.prefix))
                        .cloned()
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    let batch = WatchBatch {
                        events,
                        revision: rev.revision,
                    };
                    if self.tx.send(Ok(batch)).await.is_err() {
                        return Err(Gone);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(
                        missed = n,
                        next = self.next,
                        "embedded watch lagged; reading history"
                    );
                    return Ok(Follow::Lagged);
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(Follow::Closed),
            }
        }
    }
}

enum Follow {
    Lagged,
    Closed,
}
