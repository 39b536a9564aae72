//! The store conformance suite on a real etcd (started per test by `EtcdFixture`).

use shoal_tests::conformance;
use shoal_tests::etcd::EtcdHarness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_delete() {
    let mut h = EtcdHarness::new().await;
    conformance::get_put_delete(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ordering_and_revision() {
    let mut h = EtcdHarness::new().await;
    conformance::list_ordering_and_revision(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_conflict() {
    let mut h = EtcdHarness::new().await;
    conformance::cas_conflict(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_exists() {
    let mut h = EtcdHarness::new().await;
    conformance::compare_exists(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_atomicity() {
    let mut h = EtcdHarness::new().await;
    conformance::txn_atomicity(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_ops_rejected() {
    let mut h = EtcdHarness::new().await;
    conformance::too_many_ops_rejected(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ordering_and_resume() {
    let mut h = EtcdHarness::new().await;
    conformance::watch_ordering_and_resume(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_yields_compacted() {
    let mut h = EtcdHarness::new().await;
    conformance::compaction_yields_compacted(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_keys() {
    let mut h = EtcdHarness::new().await;
    conformance::lease_expiry_deletes_keys(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_keeps_keys() {
    let mut h = EtcdHarness::new().await;
    conformance::keep_alive_keeps_keys(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expired_lease() {
    let mut h = EtcdHarness::new().await;
    conformance::keep_alive_expired_lease(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_writers() {
    let mut h = EtcdHarness::new().await;
    conformance::concurrent_cas_writers(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values() {
    let mut h = EtcdHarness::new().await;
    conformance::large_values(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_restart() {
    let mut h = EtcdHarness::new().await;
    conformance::watch_survives_restart(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_init_apply_delete() {
    let mut h = EtcdHarness::new().await;
    conformance::reflector_init_apply_delete(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_relists_after_compaction() {
    let mut h = EtcdHarness::new().await;
    conformance::reflector_relists_after_compaction(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_batches_reach_revisions() {
    let mut h = EtcdHarness::new().await;
    conformance::reflector_batches_reach_revisions(&mut h).await;
}

/// Writes `puts` (key, value) in one transaction; returns its revision.
async fn put_in_one_txn(
    store: &shoal_store::etcd::EtcdStore,
    puts: impl Iterator<Item = (String, Vec<u8>)>,
) -> shoal_store::Revision {
    use shoal_store::{Store, Txn, TxnOp};
    let ops = puts
        .map(|(key, value)| TxnOp::Put {
            key,
            value,
            lease: None,
        })
        .collect();
    let done = store
        .txn(Txn {
            compares: vec![],
            ops,
        })
        .await
        .expect("txn");
    assert!(done.succeeded);
    done.revision
}

/// A dead etcd answers `Unavailable` (within the client's timeouts) instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_etcd_is_unavailable() {
    let mut fixture = shoal_tests::etcd::EtcdFixture::start().unwrap_or_else(|e| panic!("{e}"));
    let store = fixture.store().await.expect("connect");
    use shoal_store::Store;
    store
        .put("/dead/a", b"1".to_vec(), None)
        .await
        .expect("put while up");
    fixture.kill();
    let result = tokio::time::timeout(conformance::DEADLINE, store.get("/dead/a")).await;
    match result {
        Ok(Err(shoal_store::StoreError::Unavailable(_))) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A watcher that fell behind by more than etcd's watch message limit (`--max-request-bytes`,
/// 1.5 MiB, plus 512 KiB that etcd allows for gRPC's framing) is sent its backlog in
/// fragments, so its client never holds a receive buffer the size of the whole backlog; and
/// it still gets every transaction whole: no batch ends inside a revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_arrives_in_fragments_as_whole_transactions() {
    use futures::StreamExt;
    use shoal_store::{Revision, Store, WatchEvent};

    const REVISIONS: usize = 24;
    const KEYS: usize = 3;
    const VALUE: usize = 100 * 1024;
    const ETCD_MESSAGE_LIMIT: usize = 1536 * 1024 + 512 * 1024;
    let h = EtcdHarness::new().await;
    let store = h.fixture().store().await.expect("connect");
    let mut revisions = Vec::new();
    for r in 0..REVISIONS {
        let puts = (0..KEYS).map(|k| {
            let value = vec![(r * KEYS + k) as u8; VALUE];
            (format!("/frag/{r:02}/{k}"), value)
        });
        revisions.push(put_in_one_txn(&store, puts).await);
    }

    let before = h.fixture().watch_messages_sent().await;
    let mut watch = store.watch("/frag/", revisions[0]).await.expect("watch");
    let mut batches = Vec::new();
    let mut seen = 0;
    while seen < REVISIONS * KEYS {
        let batch = tokio::time::timeout(conformance::DEADLINE, watch.next())
            .await
            .unwrap_or_else(|_| panic!("timed out with {seen} of {} events", REVISIONS * KEYS))
            .expect("the watch stays open")
            .expect("no watch error");
        seen += batch.events.len();
        batches.push(batch);
    }
    let sent = h.fixture().watch_messages_sent().await - before;

    // Every revision arrives in one batch with all its keys, in order, values intact.
    let mut delivered: Vec<Revision> = Vec::new();
    for batch in &batches {
        let last = batch.events.last().map(WatchEvent::mod_revision);
        assert_eq!(
            Some(batch.revision),
            last,
            "a batch reaches its last event's revision"
        );
        for whole in batch
            .events
            .chunk_by(|a, b| a.mod_revision() == b.mod_revision())
        {
            assert_eq!(
                whole.len(),
                KEYS,
                "revision {} split across batches ({} of {KEYS} keys in one)",
                whole[0].mod_revision(),
                whole.len()
            );
            delivered.push(whole[0].mod_revision());
        }
        for event in &batch.events {
            let WatchEvent::Put(kv) = event else {
                panic!("unexpected {event:?}")
            };
            let r = revisions
                .iter()
                .position(|&r| r == kv.mod_revision)
                .expect("a written revision");
            let k: usize = kv.key.rsplit('/').next().unwrap().parse().unwrap();
            assert_eq!(kv.key, format!("/frag/{r:02}/{k}"));
            assert_eq!(
                kv.value,
                vec![(r * KEYS + k) as u8; VALUE],
                "{}'s value",
                kv.key
            );
        }
    }
    assert_eq!(delivered, revisions, "each revision once, in order");

    // One message for the watch's creation, then the backlog: a watch that did not ask for
    // fragments is sent all of it in one message.
    let backlog = REVISIONS * KEYS * VALUE;
    let least = backlog.div_ceil(ETCD_MESSAGE_LIMIT) as u64;
    println!(
        "a {backlog}-byte backlog: {} watch messages from etcd, {} batches delivered",
        sent - 1,
        batches.len()
    );
    assert!(
        sent > least,
        "etcd sent the {backlog}-byte backlog in {} message(s); in fragments under its \
         {ETCD_MESSAGE_LIMIT}-byte limit it takes at least {least}",
        sent - 1
    );
}

/// A key that is not UTF-8, written under the prefix by another client (`etcdctl put` of
/// binary bytes), is skipped by a list — even as the last key of a page, where the next page
/// must still start after it — and by a watch; it does not stop every list of the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_utf8_is_skipped_by_lists_and_watches() {
    use futures::StreamExt;
    use shoal_store::{Store, WatchEvent};

    let h = EtcdHarness::new().await;
    let store = h.fixture().store().await.expect("connect");
    let mut raw = etcd_client::Client::connect([h.fixture().endpoint()], None)
        .await
        .expect("connect a plain client");
    let names: Vec<String> = (0..1500).map(|i| format!("/bin/{i:04}")).collect();
    for chunk in names.chunks(100) {
        put_in_one_txn(&store, chunk.iter().map(|key| (key.clone(), b"v".to_vec()))).await;
    }
    // Sorts between /bin/0998 and /bin/0999: the 1,000th key, the last of the first page.
    raw.put(b"/bin/0998\xff".to_vec(), b"binary".to_vec(), None)
        .await
        .expect("put a binary key");

    let listed = store.list("/bin/").await.expect("the list succeeds");
    let keys: Vec<&str> = listed.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, names, "every readable key once, in order");

    let mut watch = store
        .watch("/bin/", listed.revision + 1)
        .await
        .expect("watch");
    raw.put(b"/bin/\xfe".to_vec(), b"binary".to_vec(), None)
        .await
        .expect("put another binary key");
    store
        .put("/bin/after", b"v".to_vec(), None)
        .await
        .expect("put");
    let batch = tokio::time::timeout(conformance::DEADLINE, watch.next())
        .await
        .expect("a batch in time")
        .expect("the watch stays open")
        .expect("no watch error");
    let keys: Vec<&str> = batch.events.iter().map(WatchEvent::key).collect();
    assert_eq!(keys, ["/bin/after"], "the binary key is skipped");
}
