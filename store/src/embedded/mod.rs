//! The embedded backend: Shoal's whole store in one redb file inside a data directory, for a
//! single process (`shoal dev`, tests).
//!
//! It follows etcd's model exactly: a global revision persisted with the data, per-key
//! `create_revision`/`mod_revision`, transactions applied at one new revision, a bounded
//! watch history persisted next to the data (so a restarted process can resume watches from
//! an old revision), and leases whose wall-clock deadlines are persisted (so the keys of a
//! crashed agent still vanish after their TTL once the store is reopened).

mod codec;
mod engine;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::{
    KeyValue, LeaseId, ListResult, Revision, Store, StoreError, Txn, TxnOp, TxnResult, WatchStream,
};
use engine::Inner;

/// Backend name used in errors and metrics.
pub const BACKEND: &str = "embedded";

/// Most ops one transaction may carry; the same as etcd so behaviour matches.
pub const MAX_TXN_OPS: usize = 128;

/// Most bytes of keys and values in one transaction: etcd's limit, so that what runs on
/// `shoal dev` also runs on etcd.
pub const MAX_TXN_BYTES: usize = crate::etcd::MAX_TXN_BYTES;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "shoal.redb";

/// Tuning of an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// How many revisions of watch history are kept; a watch from an older revision gets
    /// [`StoreError::Compacted`].
    pub history_revisions: i64,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
    /// How long [`EmbeddedStore::open_with`] waits for a previous handle in this process to
    /// release the database file.
    pub open_timeout: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history_revisions: 10_000,
            lease_check_interval: Duration::from_millis(100),
            open_timeout: Duration::from_secs(10),
        }
    }
}

/// Shoal's store in a local redb database (single process).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    dir: PathBuf,
    reaper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store kept in the data directory `dir`.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, EmbeddedOptions::default()).await
    }

    /// Opens the store in `dir` with explicit options.
    pub async fn open_with(
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        // One spelling per file, so a handle of this process is recognised whatever path
        // reached it.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let path = dir.join(DB_FILE);
        let history = options.history_revisions.max(1);
        let deadline = tokio::time::Instant::now() + options.open_timeout;
        let inner = loop {
            let create_dir = dir.clone();
            let db_path = path.clone();
            let opened = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&create_dir).map_err(|e| StoreError::Backend {
                    backend: BACKEND,
                    message: format!("cannot create data directory {}: {e}", create_dir.display()),
                })?;
                Inner::open(&db_path, history)
            })
            .await
            .map_err(engine::join_err)?;
            match opened {
                Ok(inner) => break inner,
                Err(engine::OpenError::AlreadyOpen) if !engine::held_here(&path) => {
                    return Err(StoreError::Config(format!(
                        "the embedded store {} is in use by another process; a file:// store \
                         serves one process only (`shoal dev`): run a cluster's controllers, \
                         agents and API on etcd:// or consul://",
                        path.display()
                    )));
                }
                // Another handle of this process may still be shutting down.
                Err(engine::OpenError::AlreadyOpen) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(engine::OpenError::AlreadyOpen) => {
                    return Err(StoreError::Unavailable(format!(
                        "embedded store {} is already open in this process",
                        path.display()
                    )));
                }
                Err(engine::OpenError::Store(e)) => return Err(e),
            }
        };
        let inner = Arc::new(inner);
        tracing::info!(dir = %dir.display(), revision = inner.revision(), "embedded store opened");
        let reaper = tokio::spawn(lease_reaper(
            Arc::downgrade(&inner),
            options.lease_check_interval,
        ));
        Ok(Self { inner, dir, reaper })
    }

    /// The data directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current store revision.
    pub fn revision(&self) -> Revision {
        self.inner.revision()
    }

    /// Drops the watch history below `revision`: a watch from an older revision then gets
    /// [`StoreError::Compacted`]. Like etcd, compacting past the current revision is an error.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.compact(revision)).await
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(engine::join_err)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.reaper.abort();
    }
}

/// Expires leases whose deadline passed, deleting their keys.
async fn lease_reaper(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if !strong.has_expired_leases() {
            continue;
        }
        match tokio::task::spawn_blocking(move || strong.expire_leases()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "embedded store: expiring leases failed"),
            Err(e) => tracing::warn!(error = %e, "embedded store: lease reaper task failed"),
        }
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }

    fn max_txn_bytes(&self) -> usize {
        MAX_TXN_BYTES
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        EmbeddedStore::compact(self, revision).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let txn = Txn {
            compares: vec![],
            ops: vec![TxnOp::Put {
                key: key.to_string(),
                value,
                lease,
            }],
        };
        Ok(self.txn(txn).await?.revision)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| inner.delete(&key)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        if txn.ops.len() > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                ops: txn.ops.len(),
                max: MAX_TXN_OPS,
                backend: BACKEND,
            });
        }
        self.blocking(move |inner| inner.txn(&txn)).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        Ok(watch::spawn(
            Arc::downgrade(&self.inner),
            prefix.to_string(),
            from_revision,
        ))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.blocking(move |inner| inner.grant_lease(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.keep_alive(lease)).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.revoke_lease(lease)).await
    }
}

/// Events of one revision, as broadcast to live watchers.
#[derive(Debug)]
struct RevisionEvents {
    revision: Revision,
    events: Vec<crate::WatchEvent>,
}

/// Capacity of the live event broadcast; a watcher further behind reads the history instead.
const BROADCAST_CAPACITY: usize = 1024;

fn new_broadcast() -> broadcast::Sender<Arc<RevisionEvents>> {
    broadcast::channel(BROADCAST_CAPACITY).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_reopen_with_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rev = {
            let store = EmbeddedStore::open(dir.path()).await.expect("open");
            store.put("/a", b"1".to_vec(), None).await.expect("put");
            store.put("/b", b"2".to_vec(), None).await.expect("put")
        };
        let store = EmbeddedStore::open(dir.path()).await.expect("reopen");
        let list = store.list("/").await.expect("list");
        assert_eq!(list.revision, rev);
        assert_eq!(list.kvs.len(), 2);
        assert_eq!(list.kvs[1].value, b"2");
        assert!(store.put("/c", vec![], None).await.expect("put") > rev);
    }

    #[tokio::test]
    async fn leases_outlive_a_restart_until_their_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = {
            let store = EmbeddedStore::open(dir.path()).await.expect("open");
            let lease = store
                .grant_lease(Duration::from_secs(2))
                .await
                .expect("grant");
            store
                .put("/n/a", b"1".to_vec(), Some(lease))
                .await
                .expect("put");
            lease
        };
        let store = EmbeddedStore::open(dir.path()).await.expect("reopen");
        let kv = store
            .get("/n/a")
            .await
            .expect("get")
            .expect("key kept until the deadline");
        assert_eq!(kv.lease, Some(lease));
        let mut gone = false;
        for _ in 0..300 {
            if store.get("/n/a").await.expect("get").is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            gone,
            "the key of the expired lease was deleted after the restart"
        );
        assert!(matches!(
            store.keep_alive(lease).await,
            Err(StoreError::LeaseNotFound(_))
        ));
    }

    #[tokio::test]
    async fn slow_watchers_catch_up_from_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        let mut watch = store.watch("/s/", 0).await.expect("watch");
        let n = super::BROADCAST_CAPACITY + 200;
        let mut ops = Vec::new();
        for i in 0..n {
            ops.push(TxnOp::Put {
                key: format!("/s/{i}"),
                value: vec![],
                lease: None,
            });
            if ops.len() == 1 || i + 1 == n {
                store
                    .txn(Txn {
                        compares: vec![],
                        ops: std::mem::take(&mut ops),
                    })
                    .await
                    .expect("txn");
            }
        }
        let mut seen = Vec::new();
        while seen.len() < n {
            use futures::StreamExt;
            let batch = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("events in time")
                .expect("stream open")
                .expect("no error");
            seen.extend(batch.events.iter().map(crate::WatchEvent::mod_revision));
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(seen, sorted, "in order, exactly once");
    }
}
