//! `refresh_lease` keeps a lease alive when one keep-alive request hangs (a connection to an
//! etcd member that became unreachable holds it for the whole request timeout): it gives the
//! attempt up after its bound and tries again. Found by the chaos harness: agents on hosts the
//! nemesis did not touch lost their node lease when one etcd member was partitioned.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoal_store::{
    EmbeddedStore, KeyValue, LeaseId, ListResult, Revision, Store, StoreError, Txn, TxnResult,
    WatchStream, refresh_lease,
};

/// An embedded store whose first `stuck` keep-alives never answer.
struct StuckKeepAlives {
    inner: EmbeddedStore,
    stuck: usize,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for StuckKeepAlives {
    fn backend(&self) -> &'static str {
        "stuck"
    }
    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
    fn max_txn_bytes(&self) -> usize {
        self.inner.max_txn_bytes()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        self.inner.list(prefix).await
    }
    async fn put(&self, k: &str, v: Vec<u8>, l: Option<LeaseId>) -> Result<Revision, StoreError> {
        self.inner.put(k, v, l).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.stuck {
            futures::future::pending::<()>().await;
        }
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
}

async fn store(stuck: usize) -> (Arc<StuckKeepAlives>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = EmbeddedStore::open(dir.path()).await.unwrap();
    let s = StuckKeepAlives {
        inner,
        stuck,
        calls: AtomicUsize::new(0),
    };
    (Arc::new(s), dir)
}

#[tokio::test]
async fn a_hung_keep_alive_is_given_up_and_tried_again_within_the_budget() {
    let (s, _dir) = store(1).await;
    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    let t0 = Instant::now();
    refresh_lease(
        s.as_ref(),
        lease,
        Duration::from_millis(200),
        Duration::from_secs(3),
    )
    .await
    .expect("the second attempt refreshes the lease");
    println!("refreshed after a hung attempt in {:?}", t0.elapsed());
    assert_eq!(s.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn every_attempt_hung_is_an_error_once_the_budget_is_spent() {
    let (s, _dir) = store(usize::MAX).await;
    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    let err = refresh_lease(
        s.as_ref(),
        lease,
        Duration::from_millis(100),
        Duration::from_millis(450),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(s.calls.load(Ordering::SeqCst) >= 2, "it tried again");
}

#[tokio::test]
async fn an_expired_lease_is_reported_at_once() {
    let (s, _dir) = store(0).await;
    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let err = refresh_lease(
        s.as_ref(),
        lease,
        Duration::from_millis(200),
        Duration::from_secs(3),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err}");
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}
