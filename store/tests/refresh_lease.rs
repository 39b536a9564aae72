//! `refresh_lease` keeps a lease alive when one keep-alive request hangs (a connection to an
//! etcd member that became unreachable holds it for the whole request timeout): it gives the
//! attempt up after its bound and tries again. Found by the chaos harness: agents on hosts the
//! nemesis did not touch lost their node lease when one etcd member was partitioned.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoal_store::{EmbeddedStore, LeaseId, Store, StoreError, refresh_lease};
use shoal_tests::intercept::{Intercept, Intercepted};

/// Makes the first `stuck` keep-alives never answer.
struct StuckKeepAlives {
    stuck: usize,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Intercept for StuckKeepAlives {
    async fn keep_alive(&self, inner: &dyn Store, lease: LeaseId) -> Result<(), StoreError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.stuck {
            futures::future::pending::<()>().await;
        }
        inner.keep_alive(lease).await
    }
}

/// An embedded store whose first `stuck` keep-alives never answer.
async fn store(stuck: usize) -> (Arc<Intercepted<StuckKeepAlives>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = EmbeddedStore::open(dir.path()).await.unwrap();
    let s = Intercepted::new(
        Arc::new(inner),
        StuckKeepAlives {
            stuck,
            calls: AtomicUsize::new(0),
        },
    );
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
    assert_eq!(s.intercept().calls.load(Ordering::SeqCst), 2);
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
    assert!(
        s.intercept().calls.load(Ordering::SeqCst) >= 2,
        "it tried again"
    );
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
    assert_eq!(s.intercept().calls.load(Ordering::SeqCst), 1);
}
