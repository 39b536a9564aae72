//! A standby's proof that the leader's lease ran out, on a real etcd: never while the lease
//! is being refreshed, even when it dips under a second left before each refresh; and once
//! it is proven, etcd refuses to refresh the lease; a standby takes over on that proof.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoal_controller::runner::leader::{Vacated, campaign};
use shoal_controller::runner::lease_end::run_out;
use shoal_store::{Revision, Store, StoreError, WatchStream};
use shoal_tests::cluster::Env;
use shoal_tests::intercept::{Intercept, Intercepted};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(3);

/// Counts the watches opened through it.
struct CountWatches(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Intercept for CountWatches {
    async fn watch(
        &self,
        inner: &dyn Store,
        prefix: &str,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        inner.watch(prefix, from).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_lease_is_never_proven_run_out_and_one_left_to_run_out_is() {
    let (_etcd, env) = Env::etcd().await;
    let store = env.store.clone();
    let lease = store.grant_lease(TTL).await.expect("grant");
    store
        .put("/lease-end/leader", b"x".to_vec(), Some(lease))
        .await
        .expect("put");
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move { run_out(store.as_ref(), lease, Duration::from_millis(20)).await })
    };
    // Refreshed 2.2 s apart: etcd says "0 s left" before each refresh, "2 s" after it.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(2200)).await;
        store.keep_alive(lease).await.expect("the lease is alive");
        assert!(
            !watcher.is_finished(),
            "a lease refreshed in time was taken for run out"
        );
    }
    let left_alone = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .expect("proven within a minute")
        .expect("the watcher ran")
        .expect("etcd answered");
    let after = left_alone.elapsed();
    let key_still_there = store.get("/lease-end/leader").await.expect("get").is_some();
    println!(
        "proven run out {after:?} after the last refresh (TTL {TTL:?}); \
         etcd had not removed the key yet: {key_still_there}"
    );
    match store.keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("a lease proven run out was refreshed: {other:?}"),
    }
    assert!(
        store.get("/lease-end/leader").await.expect("get").is_none(),
        "the key went with its lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_revokes_the_lease_of_a_leader_that_stopped_refreshing_it() {
    let (_etcd, env) = Env::etcd().await;
    let stop = CancellationToken::new();
    // etcd removes a run-out lease at its next look (every 500 ms): now and then that comes
    // before the standby's proof, and the standby takes over on the record's delete instead.
    // The standby must not watch the record from its write's revision, compacted here.
    for attempt in 1..=5 {
        let old = campaign(&env.store, &env.keys, "old", TTL, &stop)
            .await
            .expect("campaign")
            .expect("won");
        let old_lease = old.lease;
        // A leader of long standing: the history of its record's write is compacted away.
        let mut revision = 0;
        for i in 0..3 {
            revision = env
                .store
                .put("/lease-end/other", vec![i], None)
                .await
                .expect("put");
        }
        env.store.compact(revision).await.expect("compact");
        old.abandon();
        let stopped = Instant::now();
        let watches = Arc::new(AtomicUsize::new(0));
        let counted = CountWatches(watches.clone());
        let standby: Arc<dyn Store> = Arc::new(Intercepted::new(env.store.clone(), counted));
        let new = campaign(&standby, &env.keys, "new", TTL, &stop)
            .await
            .expect("campaign")
            .expect("won");
        println!(
            "attempt {attempt}: the standby led {:?} after the leader stopped refreshing \
             (TTL {TTL:?}), the record {:?}",
            stopped.elapsed(),
            new.vacated
        );
        assert!(
            matches!(
                env.store.keep_alive(old_lease).await,
                Err(StoreError::LeaseNotFound(_))
            ),
            "the old lease is gone"
        );
        assert_eq!(
            watches.load(Ordering::SeqCst),
            1,
            "the standby watched the leader record once while it waited, not over and over"
        );
        let vacated = new.vacated;
        new.resign().await;
        if vacated == Vacated::LeaseRunOut {
            return;
        }
    }
    panic!("in five takeovers, the standby never took over on the lease's proven end");
}
