//! The store conformance suite on the `consul://` backend, against the in-process fake
//! Consul (`shoal_tests::consul_fake`).
//!
//! Consul keeps no history: a watch can replay the current keys but not deletes that
//! happened before it started. The backend therefore answers a watch from an old revision
//! with `Compacted` whenever a delete at or after that revision may have been missed (see
//! `shoal_store::consul::store`), and is exact after the reflector's "list, then watch from
//! `list.revision + 1`". Four suite cases open watches from the revision of a put made just
//! before, expecting etcd's replay of history; they cannot hold for Consul and are replaced
//! below by `consul_*` variants checking the same behaviour through list-then-watch (and
//! checking that the history watch says `Compacted` instead of silently missing events).
//! `reflector_relists_after_compaction` does not apply either: the Consul watch replays the
//! gap it is given there (the delete included) instead of answering `Compacted`.

use std::sync::Arc;

use futures::StreamExt;
use shoal_store::{Store, StoreError, WatchEvent};
use shoal_tests::conformance::{self, DEADLINE, TTL, collect_events};
use shoal_tests::consul_fake::ConsulHarness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_delete() {
    let mut h = ConsulHarness::new().await;
    conformance::get_put_delete(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_init_apply_delete() {
    let mut h = ConsulHarness::new().await;
    conformance::reflector_init_apply_delete(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_batches_reach_revisions() {
    let mut h = ConsulHarness::new().await;
    conformance::reflector_batches_reach_revisions(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ordering_and_revision() {
    let mut h = ConsulHarness::new().await;
    conformance::list_ordering_and_revision(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_conflict() {
    let mut h = ConsulHarness::new().await;
    conformance::cas_conflict(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_exists() {
    let mut h = ConsulHarness::new().await;
    conformance::compare_exists(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_atomicity() {
    let mut h = ConsulHarness::new().await;
    conformance::txn_atomicity(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_ops_rejected() {
    let mut h = ConsulHarness::new().await;
    conformance::too_many_ops_rejected(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_yields_compacted() {
    let mut h = ConsulHarness::new().await;
    conformance::compaction_yields_compacted(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_keeps_keys() {
    let mut h = ConsulHarness::new().await;
    conformance::keep_alive_keeps_keys(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expired_lease() {
    let mut h = ConsulHarness::new().await;
    conformance::keep_alive_expired_lease(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_writers() {
    let mut h = ConsulHarness::new().await;
    conformance::concurrent_cas_writers(&mut h).await;
}

/// Expects the next item of a watch to be `Compacted` and the stream to end.
async fn expect_compacted(store: &Arc<dyn Store>, prefix: &str, from: i64) {
    let mut watch = store.watch(prefix, from).await.expect("watch");
    match tokio::time::timeout(DEADLINE, watch.next()).await {
        Ok(Some(Err(StoreError::Compacted { requested, .. }))) => assert_eq!(requested, from),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        tokio::time::timeout(DEADLINE, watch.next()).await,
        Ok(None)
    ));
}

/// Replaces `conformance::watch_ordering_and_resume`, which replays history including a
/// delete made before the watch started: Consul cannot name that delete, so the history
/// watch is `Compacted`; after a list the watch delivers every later put and delete exactly
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_watch_ordering_and_resume() {
    let h = ConsulHarness::new().await;
    let s = conformance::Harness::store(&h);
    let mut revs = Vec::new();
    for i in 0..10u8 {
        revs.push(s.put(&format!("/w/{i}"), vec![i], None).await.expect("put"));
        s.put(&format!("/other/{i}"), vec![i], None)
            .await
            .expect("put outside");
    }
    assert!(s.delete("/w/0").await.expect("delete"));
    expect_compacted(&s, "/w/", revs[3]).await;
    let list = s.list("/w/").await.expect("list");
    assert_eq!(list.kvs.len(), 9);
    let mut watch = s.watch("/w/", list.revision + 1).await.expect("watch");
    let live = s.put("/w/live", b"x".to_vec(), None).await.expect("put");
    s.put("/other/x", b"x".to_vec(), None)
        .await
        .expect("put outside");
    assert!(s.delete("/w/5").await.expect("delete"));
    let r9 = s.put("/w/9", b"nine".to_vec(), None).await.expect("put");
    let events = collect_events(&mut watch, 3).await;
    let got: Vec<(&str, bool)> = events
        .iter()
        .map(|e| (e.key(), matches!(e, WatchEvent::Put(_))))
        .collect();
    // The delete's exact index may be reported in the same read as later puts.
    assert!(
        got.contains(&("/w/live", true))
            && got.contains(&("/w/5", false))
            && got.contains(&("/w/9", true)),
        "{got:?}"
    );
    let revs_seen: Vec<i64> = events.iter().map(WatchEvent::mod_revision).collect();
    assert!(
        revs_seen.windows(2).all(|w| w[0] <= w[1]),
        "in order: {revs_seen:?}"
    );
    assert_eq!(events[0].mod_revision(), live);
    assert!(revs_seen.contains(&r9));
}

/// Replaces `conformance::lease_expiry_deletes_keys` (whose watch starts from the first
/// put's revision): same checks with list-then-watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_lease_expiry_deletes_keys() {
    let h = ConsulHarness::new().await;
    let s = conformance::Harness::store(&h);
    let lease = s.grant_lease(TTL).await.expect("grant");
    s.put("/le/a", b"1".to_vec(), Some(lease))
        .await
        .expect("put");
    s.put("/le/b", b"2".to_vec(), Some(lease))
        .await
        .expect("put");
    s.put("/le/keep", b"3".to_vec(), None).await.expect("put");
    let a = s.get("/le/a").await.expect("get").expect("present");
    assert_eq!(a.lease, Some(lease));
    let list = s.list("/le/").await.expect("list");
    assert_eq!(list.kvs.len(), 3);
    let mut watch = s.watch("/le/", list.revision + 1).await.expect("watch");
    conformance::lease_expired(&*s, lease, &mut watch).await;
}

/// Replaces `conformance::large_values`: 1 MiB values need `kv_max_value_size` raised
/// (Consul's default is 512 KiB; the harness's fake allows 2 MiB), and the watch starts
/// after a list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_large_values() {
    let h = ConsulHarness::new().await;
    let s = conformance::Harness::store(&h);
    let value: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    s.put("/big/a", value.clone(), None)
        .await
        .expect("put 1 MiB");
    assert_eq!(
        s.get("/big/a").await.expect("get").expect("present").value,
        value
    );
    let list = s.list("/big/").await.expect("list");
    assert_eq!(list.kvs[0].value, value);
    let mut watch = s.watch("/big/", list.revision + 1).await.expect("watch");
    s.put("/big/b", value.clone(), None).await.expect("put");
    match &collect_events(&mut watch, 1).await[0] {
        WatchEvent::Put(kv) => assert_eq!(kv.value, value),
        other => panic!("expected a Put, got {other:?}"),
    }
}

/// Replaces `conformance::watch_survives_restart`: a watch opened after a list keeps
/// delivering across a Consul agent restart (the loop reconnects with backoff from its
/// last index); data and indexes survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_watch_survives_restart() {
    let mut h = ConsulHarness::new().await;
    let s = conformance::Harness::store(&h);
    let r1 = s.put("/rs/a", b"1".to_vec(), None).await.expect("put");
    let list = s.list("/rs/").await.expect("list");
    let mut watch = s.watch("/rs/", list.revision + 1).await.expect("watch");
    h.fake.restart().await;
    let r2 = s
        .put("/rs/b", b"2".to_vec(), None)
        .await
        .expect("put after restart");
    assert!(r2 > r1);
    let r3 = s.put("/rs/c", b"3".to_vec(), None).await.expect("put");
    let events = collect_events(&mut watch, 2).await;
    let got: Vec<(&str, i64)> = events.iter().map(|e| (e.key(), e.mod_revision())).collect();
    assert_eq!(got, [("/rs/b", r2), ("/rs/c", r3)]);
    assert_eq!(
        s.get("/rs/a")
            .await
            .expect("get")
            .expect("present")
            .mod_revision,
        r1
    );
}
