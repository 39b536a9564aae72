//! The status reporter: every task runner hands its `taskstatus/` records here; they are
//! written in batched transactions (up to the store's `max_txn_ops` puts each), coalesced per
//! key (a later state replaces an earlier one not yet written), and retried with backoff while
//! the store is unreachable so the agent catches up when it returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_store::{Store, Txn, TxnOp};
use tokio::sync::mpsc;

/// One request to the reporter.
#[derive(Debug)]
enum Msg {
    Put(String, Vec<u8>),
    Forget(String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where runners send their status records (cheap to clone).
#[derive(Debug, Clone)]
pub struct StatusSink {
    tx: mpsc::UnboundedSender<Msg>,
}

impl StatusSink {
    /// Queues `value` to be written at `key`.
    pub fn put(&self, key: String, value: Vec<u8>) {
        let _ = self.tx.send(Msg::Put(key, value));
    }

    /// Drops any write still queued for `key` (its task was deleted).
    pub fn forget(&self, key: String) {
        let _ = self.tx.send(Msg::Forget(key));
    }

    /// Waits until everything queued so far has been written (or the reporter stopped).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the reporter; it runs until every [`StatusSink`] is dropped.
pub fn spawn(store: Arc<dyn Store>) -> (StatusSink, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let join = tokio::spawn(run(store, rx));
    (StatusSink { tx }, join)
}

fn absorb(
    pending: &mut BTreeMap<String, Vec<u8>>,
    flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    msg: Msg,
) {
    match msg {
        Msg::Put(k, v) => {
            pending.insert(k, v);
        }
        Msg::Forget(k) => {
            pending.remove(&k);
        }
        Msg::Flush(tx) => flushes.push(tx),
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut pending: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut delay = Duration::from_millis(100);
    loop {
        if pending.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            match rx.recv().await {
                Some(m) => absorb(&mut pending, &mut flushes, m),
                None => return,
            }
        }
        while let Ok(m) = rx.try_recv() {
            absorb(&mut pending, &mut flushes, m);
        }
        let max = store.max_txn_ops().max(1);
        let batch: Vec<(String, Vec<u8>)> = pending
            .iter()
            .take(max)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let ops = batch
            .iter()
            .map(|(k, v)| TxnOp::Put {
                key: k.clone(),
                value: v.clone(),
                lease: None,
            })
            .collect();
        match store
            .txn(Txn {
                compares: Vec::new(),
                ops,
            })
            .await
        {
            Ok(_) => {
                delay = Duration::from_millis(100);
                for (k, v) in batch {
                    // Only drop what was written: a newer value queued meanwhile stays.
                    if pending.get(&k) == Some(&v) {
                        pending.remove(&k);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = pending.len(), "cannot write task statuses; retrying");
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                delay = (delay * 2).min(Duration::from_secs(5));
                // Keep absorbing while waiting so memory stays one record per task.
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        m = rx.recv() => match m {
                            Some(m) => absorb(&mut pending, &mut flushes, m),
                            None => break,
                        },
                    }
                }
            }
        }
    }
}
