//! Behaviour of the `consul://` backend beyond the shared conformance suite: URL opening,
//! lease takeover and detaching, and watches across index resets and server errors.

use std::time::Duration;

use shoal_store::WatchEvent;
use shoal_tests::conformance::{Harness, collect_events, event_key};
use shoal_tests::consul_fake::{ConsulFake, ConsulHarness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_store_understands_consul_urls() {
    let fake = ConsulFake::start().await;
    let store = shoal_store::open_store(&fake.store_url())
        .await
        .expect("open");
    assert_eq!(store.backend(), "consul");
    assert_eq!(store.max_txn_ops(), 64);
    let rev = store
        .put("/shoal/x", b"1".to_vec(), None)
        .await
        .expect("put");
    assert_eq!(
        store
            .get("/shoal/x")
            .await
            .expect("get")
            .expect("present")
            .mod_revision,
        rev
    );
    assert_eq!(fake.keys(), ["shoal/x"], "stored without the leading slash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_puts_take_over_and_plain_puts_detach() {
    let h = ConsulHarness::new().await;
    let s = h.store();
    let l1 = s.grant_lease(Duration::from_secs(10)).await.expect("grant");
    let l2 = s.grant_lease(Duration::from_secs(10)).await.expect("grant");
    s.put("/k", b"1".to_vec(), Some(l1)).await.expect("put");
    s.put("/k", b"2".to_vec(), Some(l2))
        .await
        .expect("put with another lease");
    let kv = s.get("/k").await.expect("get").expect("present");
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"2"[..], Some(l2)));
    s.put("/k", b"3".to_vec(), None).await.expect("plain put");
    assert_eq!(
        s.get("/k").await.expect("get").expect("present").lease,
        None
    );
    s.revoke_lease(l2).await.expect("revoke");
    assert!(
        s.get("/k").await.expect("get").is_some(),
        "a detached key outlives the lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_index_reset_and_server_errors() {
    let h = ConsulHarness::new().await;
    let s = h.store();
    s.put("/r/a", b"1".to_vec(), None).await.expect("put");
    s.put("/r/b", b"1".to_vec(), None).await.expect("put");
    let list = s.list("/r/").await.expect("list");
    let mut watch = s.watch("/r/", list.revision + 1).await.expect("watch");
    assert!(s.delete("/r/b").await.expect("delete"));
    let events = collect_events(&mut watch, 1).await;
    assert!(matches!(&events[0], WatchEvent::Delete { key, .. } if key == "/r/b"));
    // Reaping the tombstone moves the prefix index backwards: nothing is repeated or lost.
    h.fake.reap_tombstones();
    h.fake.fail_next_requests(3, 500);
    // The failures hit the watch's reads or these writes, in any order: retry the write.
    let mut attempts = 0;
    while s.put("/r/c", b"2".to_vec(), None).await.is_err() {
        attempts += 1;
        assert!(attempts < 10, "the put kept failing");
    }
    let events = collect_events(&mut watch, 1).await;
    assert_eq!(events.iter().map(event_key).collect::<Vec<_>>(), ["/r/c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_scoped_to_the_prefix_is_enough() {
    use shoal_store::{Compare, Txn, TxnOp};
    use shoal_tests::consul_fake::FakeOptions;
    let fake = ConsulFake::start_with(FakeOptions {
        acl_token: Some("t0k3n".into()),
        acl_kv_prefix: Some("shoal/".into()),
        ..FakeOptions::default()
    })
    .await;
    let url = format!("{}?token=t0k3n", fake.store_url());
    let store = shoal_store::open_store(&url)
        .await
        .expect("connects with a token that can only use shoal/");
    let rev = store
        .put("/shoal/a", b"1".to_vec(), None)
        .await
        .expect("put");
    let deleted = store
        .txn(Txn {
            compares: vec![Compare::ModRevision {
                key: "/shoal/a".into(),
                revision: rev,
            }],
            ops: vec![TxnOp::Delete {
                key: "/shoal/a".into(),
            }],
        })
        .await
        .expect("txn");
    assert!(deleted.succeeded);
    let put = store
        .put("/shoal/b", b"2".to_vec(), None)
        .await
        .expect("put");
    let list = store.list("/shoal/").await.expect("list");
    assert_eq!(list.kvs.len(), 1);
    assert!(list.revision >= put);
    let lease = store
        .grant_lease(Duration::from_secs(10))
        .await
        .expect("lease");
    store
        .put("/shoal/c", b"3".to_vec(), Some(lease))
        .await
        .expect("leased put");
    // The policy is enforced: a key outside the prefix is refused.
    let err = store.get("/other/x").await.expect_err("outside the prefix");
    assert!(err.to_string().contains("Permission denied"), "{err}");
}
