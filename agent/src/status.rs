//! The status reporter: every task runner hands its `taskstatus/` records here; they are
//! written in batched transactions, coalesced per key (a later state replaces an earlier one
//! not yet written), and retried with backoff while the store is unreachable so the agent
//! catches up when it returns.
//!
//! The agent is the only writer of `taskstatus/<node>/<task>` (DESIGN.md, key table): each
//! write compares that the task's assignment `tasks/<node>/<task>` still exists, so a delayed
//! or retried write never recreates the status of a deleted task, and once the assignment is
//! gone the reporter deletes the status key itself ([`StatusSink::remove`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_core::keys::{Key, Keys};
use shoal_store::{Backoff, Compare, Store, StoreError, Txn, TxnOp};
use tokio::sync::mpsc;

/// One request to the reporter.
#[derive(Debug)]
enum Msg {
    Put(String, Vec<u8>),
    Remove(String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What is still to be written at one status key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Put(Vec<u8>),
    Delete,
}

/// Where runners send their status records (cheap to clone).
#[derive(Debug, Clone)]
pub struct StatusSink {
    tx: mpsc::UnboundedSender<Msg>,
}

impl StatusSink {
    /// Queues `value` to be written at the status key `key` (written only while the task's
    /// assignment exists).
    pub fn put(&self, key: String, value: Vec<u8>) {
        let _ = self.tx.send(Msg::Put(key, value));
    }

    /// The task's assignment is gone: drop any write still queued for `key` and delete the
    /// status key.
    pub fn remove(&self, key: String) {
        let _ = self.tx.send(Msg::Remove(key));
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
pub fn spawn(store: Arc<dyn Store>, keys: Keys) -> (StatusSink, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let join = tokio::spawn(run(store, keys, rx));
    (StatusSink { tx }, join)
}

fn absorb(
    pending: &mut BTreeMap<String, Write>,
    flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    msg: Msg,
) {
    match msg {
        Msg::Put(k, v) => {
            pending.insert(k, Write::Put(v));
        }
        Msg::Remove(k) => {
            pending.insert(k, Write::Delete);
        }
        Msg::Flush(tx) => flushes.push(tx),
    }
}

/// The assignment key of a status key.
fn task_key(keys: &Keys, status_key: &str) -> Option<String> {
    match keys.parse(status_key)? {
        Key::TaskStatus { node, task } => Some(keys.task(&node, &task)),
        _ => None,
    }
}

/// The transaction writing `batch`: each put compares that its assignment exists.
fn batch_txn(keys: &Keys, batch: &[(String, Write)]) -> Txn {
    let mut txn = Txn {
        compares: Vec::new(),
        ops: Vec::with_capacity(batch.len()),
    };
    for (k, w) in batch {
        match w {
            Write::Put(v) => {
                if let Some(key) = task_key(keys, k) {
                    txn.compares.push(Compare::Exists { key });
                }
                txn.ops.push(TxnOp::Put {
                    key: k.clone(),
                    value: v.clone(),
                    lease: None,
                });
            }
            Write::Delete => txn.ops.push(TxnOp::Delete { key: k.clone() }),
        }
    }
    txn
}

/// After a batch whose compares failed: the puts of tasks whose assignment is gone become
/// deletes (a status is kept only while its task exists).
async fn drop_deleted_tasks(
    store: &dyn Store,
    keys: &Keys,
    pending: &mut BTreeMap<String, Write>,
    batch: &[(String, Write)],
) -> Result<(), StoreError> {
    for (k, w) in batch {
        if !matches!(w, Write::Put(_)) {
            continue;
        }
        let Some(task) = task_key(keys, k) else {
            continue;
        };
        if store.get(&task).await?.is_none() && pending.get(k) == Some(w) {
            tracing::debug!(key = %k, "the task's assignment is gone; its status is deleted instead");
            pending.insert(k.clone(), Write::Delete);
        }
    }
    Ok(())
}

async fn run(store: Arc<dyn Store>, keys: Keys, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut pending: BTreeMap<String, Write> = BTreeMap::new();
    let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut delays = Backoff::STORE.delays();
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
        // A put takes two of the store's ops (its compare and itself).
        let max = (store.max_txn_ops() / 2).max(1);
        let batch: Vec<(String, Write)> = pending
            .iter()
            .take(max)
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        let res = match store.txn(batch_txn(&keys, &batch)).await {
            Ok(r) if r.succeeded => Ok(true),
            // Some assignment is gone: turn its put into a delete and try again.
            Ok(_) => drop_deleted_tasks(store.as_ref(), &keys, &mut pending, &batch)
                .await
                .map(|()| false),
            Err(e) => Err(e),
        };
        match res {
            Ok(false) => {}
            Ok(true) => {
                delays.reset();
                for (k, w) in batch {
                    // Only drop what was written: a newer value queued meanwhile stays.
                    if pending.get(&k) == Some(&w) {
                        pending.remove(&k);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = pending.len(), "cannot write task statuses; retrying");
                let sleep = tokio::time::sleep(delays.next_delay());
                tokio::pin!(sleep);
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
