//! Behaviour of the `consul://` backend beyond the shared conformance suite: URL opening,
//! lease takeover and detaching, and watches across index resets and server errors.

use std::time::Duration;

use shoal_store::WatchEvent;
use shoal_tests::conformance::{Harness, collect_events};
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
    assert_eq!(
        events.iter().map(WatchEvent::key).collect::<Vec<_>>(),
        ["/r/c"]
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_watch_clients_of_the_api_share_one_consul_watch() {
    // Consul's per-client limit lowered to 16: forty SSE clients each holding its own
    // blocking query would be refused with 429.
    const LIMIT: usize = 16;
    const CLIENTS: usize = 40;
    let fake = ConsulFake::start_with(shoal_tests::consul_fake::FakeOptions {
        max_conns_per_client: LIMIT,
        ..Default::default()
    })
    .await;
    let store = shoal_store::open_store(&fake.store_url())
        .await
        .expect("open");
    let keys = shoal_core::Keys::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let state = shoal_api::ApiState::new(store.clone(), keys.clone());
    tokio::spawn(shoal_api::serve_listener(
        state,
        listener,
        std::future::pending(),
    ));
    let client = shoal_api::Client::new(&format!("http://{addr}"), None);
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        streams.push(client.watch(None, None).await.expect("watch opens"));
    }
    fake.reset_blocking_peak();

    let web = shoal_core::ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
    };
    let written = std::time::Instant::now();
    let rev = store
        .put(
            &keys.service_status(&web),
            b"{\"running\":1}".to_vec(),
            None,
        )
        .await
        .expect("put");
    let all = futures::future::join_all(streams.iter_mut().map(|s| async {
        use futures::StreamExt;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), s.next())
                .await
                .expect("an event within the deadline")
                .expect("the stream goes on")
                .expect("an event, not an error");
            if ev.revision >= rev && ev.service.as_deref() == Some("web") {
                return ev.revision;
            }
        }
    }))
    .await;
    println!(
        "{CLIENTS} watch clients all got the change {:?} after it was written",
        written.elapsed()
    );
    assert_eq!(all.len(), CLIENTS, "every client got the change");
    assert_eq!(
        fake.refused_connections(),
        0,
        "no connection refused with 429"
    );
    assert!(
        fake.blocking_queries_peak() <= 1,
        "the API held one watch on Consul, not one per client: peak {}",
        fake.blocking_queries_peak()
    );
    assert!(
        fake.connections_from("127.0.0.1".parse().expect("ip")) <= LIMIT,
        "the API stays within Consul's per-client connection limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resuming_past_the_tombstone_reap_horizon_is_compacted() {
    use shoal_store::Store;
    use shoal_store::consul::{ConsulClient, ConsulConfig, ConsulStore, ConsulStoreOptions};
    // The fake's clock: its 15 min tombstone TTL is 0.9 s; the store is told the same.
    let fake = ConsulFake::start_with(shoal_tests::consul_fake::FakeOptions {
        time_scale: 0.001,
        ..Default::default()
    })
    .await;
    let store = ConsulStore::new(
        ConsulClient::new(ConsulConfig::new(fake.http_url())).expect("client"),
        ConsulStoreOptions {
            tombstone_ttl: Duration::from_millis(900),
            ..ConsulStoreOptions::default()
        },
    );
    store
        .put("/shoal/t/a", b"1".to_vec(), None)
        .await
        .expect("put");
    // The consumer knows both keys at `seen` (a revision learnt from a write, so no list
    // snapshot of it is remembered).
    let seen = store
        .put("/shoal/t/b", b"1".to_vec(), None)
        .await
        .expect("put");
    assert!(store.delete("/shoal/t/b").await.expect("delete"));
    // The tombstone of b is reaped: the prefix index goes back below `seen`.
    let start = std::time::Instant::now();
    while fake_prefix_index(&fake, "shoal/t/").await > seen as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "tombstone never reaped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("tombstone reaped after {:?}", start.elapsed());
    // Resuming after `seen` cannot name the delete: the watch says Compacted, so the
    // consumer lists again instead of keeping a key that is gone.
    let mut w = store.watch("/shoal/t/", seen + 1).await.expect("watch");
    let first = tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(&mut w))
        .await
        .expect("an answer")
        .expect("an item");
    assert!(
        matches!(first, Err(shoal_store::StoreError::Compacted { .. })),
        "a resume past the reap horizon is compacted, got {first:?}"
    );
    let list = store.list("/shoal/t/").await.expect("relist");
    let keys: Vec<_> = list.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/shoal/t/a"], "the relist shows the delete");

    // A resume from a revision seen within the horizon still works without a relist.
    let recent = store
        .put("/shoal/t/c", b"1".to_vec(), None)
        .await
        .expect("put");
    let mut w = store.watch("/shoal/t/", recent + 1).await.expect("watch");
    store
        .put("/shoal/t/d", b"1".to_vec(), None)
        .await
        .expect("put");
    let batch = tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(&mut w))
        .await
        .expect("an answer")
        .expect("an item")
        .expect("a batch, not compacted");
    assert!(
        batch
            .events
            .iter()
            .any(|e| matches!(e, WatchEvent::Put(kv) if kv.key == "/shoal/t/d"))
    );
}

/// The prefix's `X-Consul-Index` as the fake answers it now.
async fn fake_prefix_index(fake: &ConsulFake, prefix: &str) -> u64 {
    use shoal_store::consul::{ConsulClient, ConsulConfig, QueryOptions};
    let c = ConsulClient::new(ConsulConfig::new(fake.http_url())).expect("client");
    c.kv_list(prefix, QueryOptions::default())
        .await
        .expect("list")
        .1
}
