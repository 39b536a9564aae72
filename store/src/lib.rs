//! shoal-store: the key-value store Shoal keeps all durable state in.
//!
//! [`Store`] follows etcd's model — revisioned values, list by prefix returning the store
//! revision, watch by prefix from a revision, compare-and-swap transactions, and leases whose
//! keys vanish when they expire. Backends: embedded (redb), etcd, and Consul (emulated on
//! `ModifyIndex`, blocking queries, `/v1/txn` and sessions).

pub mod cluster;
pub mod consul;
pub mod embedded;
pub mod etcd;
pub mod reflector;
pub mod retry;
pub mod url;

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use etcd::{Credentials, EtcdOptions, EtcdStore, EtcdTls};
pub use reflector::{Reader, Reflector};
pub use retry::Backoff;
pub use url::{StoreOptions, open_etcd, open_store, open_store_with, redact_url};

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

/// A store revision (etcd's `mod_revision`, Consul's `ModifyIndex`). Strictly increasing.
pub type Revision = i64;

/// Identifier of a lease granted by the store.
pub type LeaseId = i64;

/// What a store said of a lease's time left, at some instant while it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLeft {
    /// The lease is gone (revoked, or run out and removed), or ran out a while ago.
    Gone,
    /// Less than `below` was left. `granted` is what every refresh restores; `step` is the
    /// finest the store says it (etcd: whole seconds, rounded down, so 1 s).
    Below {
        /// An upper bound on the time left.
        below: Duration,
        /// The lease's TTL.
        granted: Duration,
        /// The smallest `below` the store reports.
        step: Duration,
    },
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key, prefix included.
    pub key: String,
    /// Raw value bytes.
    pub value: Vec<u8>,
    /// Revision at which the key was created (0 never occurs for a live key).
    pub create_revision: Revision,
    /// Revision of the last change to this key.
    pub mod_revision: Revision,
    /// Lease the key is bound to, if any.
    pub lease: Option<LeaseId>,
}

/// The answer to a prefix list: the keys in lexicographic order and the store revision at
/// which the list was taken (start a watch at `revision + 1` to miss nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListResult {
    /// Matching keys, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// Store revision the list reflects.
    pub revision: Revision,
}

impl TxnOp {
    /// The bytes of keys and values this op adds to a transaction request.
    pub fn bytes(&self) -> usize {
        match self {
            TxnOp::Put { key, value, .. } => key.len() + value.len(),
            TxnOp::Delete { key } => key.len(),
        }
    }
}

/// Splits `ops` into batches of at most `max_ops` ops and `max_bytes` bytes each (an op
/// larger than `max_bytes` alone makes a batch of its own, which the store will refuse).
pub fn split_ops(ops: &[TxnOp], max_ops: usize, max_bytes: usize) -> Vec<&[TxnOp]> {
    let mut out: Vec<&[TxnOp]> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, op) in ops.iter().enumerate() {
        let b = op.bytes();
        if i > start && (i - start >= max_ops.max(1) || bytes + b > max_bytes) {
            out.push(&ops[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals the given revision; `0` means "the key does not exist".
    ModRevision {
        /// Key compared.
        key: String,
        /// Expected revision (0 = absent).
        revision: Revision,
    },
    /// The key exists (whatever its revision).
    Exists {
        /// Key compared.
        key: String,
    },
}

/// One write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a value, optionally bound to a lease.
    Put {
        /// Key written.
        key: String,
        /// Value written.
        value: Vec<u8>,
        /// Lease to bind the key to.
        lease: Option<LeaseId>,
    },
    /// Delete a key (no-op when absent).
    Delete {
        /// Key deleted.
        key: String,
    },
}

/// A multi-key transaction: if every compare holds, all ops are applied atomically at one
/// new revision; otherwise nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions that must all hold.
    pub compares: Vec<Compare>,
    /// Writes applied when they do.
    pub ops: Vec<TxnOp>,
}

/// Outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held and the ops were applied.
    pub succeeded: bool,
    /// Store revision after the transaction (the new one when it wrote).
    pub revision: Revision,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or updated.
    Put(KeyValue),
    /// A key was deleted (explicitly or by lease expiry).
    Delete {
        /// Deleted key.
        key: String,
        /// Revision of the deletion.
        mod_revision: Revision,
    },
}

impl WatchEvent {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn mod_revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// A batch of watch events, all at or below `revision`. An empty batch is a progress
/// notification: the store has reached `revision` with nothing new under the prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchBatch {
    /// Events in revision order.
    pub events: Vec<WatchEvent>,
    /// The store revision this batch brings the watcher up to.
    pub revision: Revision,
}

/// A stream of watch batches. It ends after yielding [`StoreError::Compacted`].
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision is older than the retained history.
    #[error("revision {requested} has been compacted (oldest available is {compact_revision})")]
    Compacted {
        /// Revision asked for.
        requested: Revision,
        /// Revision up to which history was compacted.
        compact_revision: Revision,
    },
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A transaction has more ops than the backend accepts atomically.
    #[error("transaction has {ops} operations; the {backend} backend accepts at most {max}")]
    TooManyOps {
        /// Ops in the rejected transaction.
        ops: usize,
        /// Backend limit.
        max: usize,
        /// Backend name.
        backend: &'static str,
    },
    /// The store could not be reached or did not answer.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store URL is malformed or names an unsupported backend.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The store refused the request: the credentials in use may not read or write the key.
    #[error("permission denied by the store: {0}")]
    PermissionDenied(String),
    /// The store refused the credentials themselves (wrong user name or password).
    #[error("store authentication failed: {0}")]
    AuthFailed(String),
    /// The TLS or credential settings are unusable (unreadable file, missing partner flag).
    #[error("store settings: {0}")]
    Config(String),
    /// Any other backend failure, with the backend's own message.
    #[error("{backend} store error: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What the backend said.
        message: String,
    },
}

/// The store contract every backend implements. See DESIGN.md, "Store semantics".
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short backend name for messages and metrics (`embedded`, `etcd`, `consul`).
    fn backend(&self) -> &'static str;

    /// Most entries one transaction may carry, compares and ops together (etcd 128, Consul
    /// 64: Consul counts its checks as operations).
    fn max_txn_ops(&self) -> usize;

    /// Most bytes of keys and values one transaction may carry (see [`TxnOp::bytes`]; etcd
    /// about 1.4 MiB, Consul about 368 KiB): writers split larger batches.
    fn max_txn_bytes(&self) -> usize;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Lists every key under `prefix`, sorted, with the revision of the read.
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError>;

    /// Reads one key with the revision of the read, to watch it from the revision after:
    /// exact on every backend, where a watch from the key's own write may start before the
    /// history the store keeps. (A key is a prefix too: only the key itself is returned.)
    async fn get_with_revision(
        &self,
        key: &str,
    ) -> Result<(Option<KeyValue>, Revision), StoreError> {
        let read = self.list(key).await?;
        let revision = read.revision;
        Ok((read.kvs.into_iter().find(|kv| kv.key == key), revision))
    }

    /// Writes one key unconditionally; returns the new revision.
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;

    /// Deletes one key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Applies a transaction atomically. More ops than [`Store::max_txn_ops`] is
    /// [`StoreError::TooManyOps`], never a silent split.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Watches every key under `prefix` from `from_revision` (inclusive). Broken
    /// connections are re-established from the last revision seen; only
    /// [`StoreError::Compacted`] (and nothing after it) tells the caller to list again.
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;

    /// Grants a lease with the given time to live.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Refreshes a lease once; [`StoreError::LeaseNotFound`] once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Revokes a lease, deleting every key bound to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// How long `lease` has left, as the store reports it; `None` when the backend does
    /// not say (embedded, and Consul, whose sessions report no time left).
    async fn lease_left(&self, _lease: LeaseId) -> Result<Option<LeaseLeft>, StoreError> {
        Ok(None)
    }

    /// Drops the history of values older than `revision` (etcd's compaction); watches from
    /// older revisions then get [`StoreError::Compacted`]. Backends that keep no history
    /// (Consul) do nothing.
    async fn compact(&self, _revision: Revision) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes `value` only if the key's `mod_revision` is `expected` (0 = create only).
    /// Returns the new revision, or `None` on conflict.
    async fn compare_and_put(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Option<Revision>, StoreError> {
        let res = self
            .txn(Txn {
                compares: vec![Compare::ModRevision {
                    key: key.to_string(),
                    revision: expected,
                }],
                ops: vec![TxnOp::Put {
                    key: key.to_string(),
                    value,
                    lease,
                }],
            })
            .await?;
        Ok(res.succeeded.then_some(res.revision))
    }

    /// Deletes the key only if its `mod_revision` is `expected`; returns whether it did.
    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<bool, StoreError> {
        let res = self
            .txn(Txn {
                compares: vec![Compare::ModRevision {
                    key: key.to_string(),
                    revision: expected,
                }],
                ops: vec![TxnOp::Delete {
                    key: key.to_string(),
                }],
            })
            .await?;
        Ok(res.succeeded)
    }
}

/// Refreshes `lease` once, giving each attempt at most `attempt` and trying again at once
/// (a new request can take another endpoint) until `budget` is spent. A connection to a store
/// member that became unreachable can hold a request for the whole request timeout, longer
/// than the lease lives: bounding each attempt keeps the lease alive through the others.
pub async fn refresh_lease(
    store: &dyn Store,
    lease: LeaseId,
    attempt: Duration,
    budget: Duration,
) -> Result<(), StoreError> {
    let start = tokio::time::Instant::now();
    loop {
        let err = match tokio::time::timeout(attempt, store.keep_alive(lease)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e @ StoreError::LeaseNotFound(_))) => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => StoreError::Unavailable(format!(
                "lease keep-alive got no answer within {} ms",
                attempt.as_millis()
            )),
        };
        if start.elapsed() + attempt > budget {
            return Err(err);
        }
        tracing::debug!(lease, error = %err, "lease keep-alive attempt failed; trying again");
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    fn put(key: &str, n: usize) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: vec![0; n],
            lease: None,
        }
    }

    #[test]
    fn batches_are_bounded_by_ops_and_bytes() {
        let ops: Vec<TxnOp> = (0..10).map(|i| put(&format!("k{i}"), 98)).collect();
        let sizes = |b: &[&[TxnOp]]| b.iter().map(|b| b.len()).collect::<Vec<_>>();
        assert_eq!(sizes(&split_ops(&ops, 4, usize::MAX)), [4, 4, 2]);
        assert_eq!(sizes(&split_ops(&ops, 128, 300)), [3, 3, 3, 1]);
        // An op over the byte limit goes alone (the store refuses it; the caller says why).
        let mixed = vec![put("a", 10), put("b", 1000), put("c", 10)];
        assert_eq!(sizes(&split_ops(&mixed, 128, 100)), [1, 1, 1]);
        assert!(split_ops(&[], 4, 100).is_empty());
        // The batches are the ops, in order.
        assert_eq!(split_ops(&ops, 4, usize::MAX).concat(), ops);
    }
}
