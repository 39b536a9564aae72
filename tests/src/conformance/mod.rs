//! The store conformance suite: every case Shoal relies on from a [`Store`], written once and
//! run against every backend through a [`Harness`] (embedded redb, real etcd, ...).
//!
//! Each case is one `pub async fn` taking the harness; the backend's integration test file
//! calls each one from its own `#[tokio::test]` so failures are named per case. Waits poll
//! conditions with generous deadlines and never assert wall-clock upper bounds.

mod embedded;
mod reflector;

pub use embedded::EmbeddedHarness;
pub use reflector::{
    reflector_batches_reach_revisions, reflector_init_apply_delete,
    reflector_relists_after_compaction,
};

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use futures::StreamExt;
use shoal_store::{
    Compare, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp, WatchEvent, WatchStream,
};

/// How long any wait in the suite may take before the case fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Lease TTL used by the suite (etcd 3.4 rounds shorter TTLs up to about 2 s anyway).
pub const TTL: Duration = Duration::from_secs(2);

/// Compacts a store's history up to a revision.
pub type Compactor =
    Arc<dyn Fn(Revision) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// What a backend provides to run the suite.
#[async_trait::async_trait]
pub trait Harness: Send {
    /// A handle on the store under test.
    fn store(&self) -> Arc<dyn Store>;

    /// Drops the watch history below `revision` (etcd's compaction).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// A compaction function that outlives the borrow of the harness (for store wrappers).
    /// The default cannot compact (the reflector relist case then fails with a clear error).
    fn compactor(&self) -> Compactor {
        Arc::new(|_| {
            Box::pin(async {
                Err(StoreError::Backend {
                    backend: "harness",
                    message: "this harness does not provide a compactor".into(),
                })
            })
        })
    }

    /// Restarts the store with its data kept. `store` is the caller's handle, which the
    /// harness may drop (the embedded backend must release its file); the returned handle is
    /// the one to use afterwards.
    async fn restart(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store>;

    /// Whether watches opened before [`Harness::restart`] keep delivering afterwards (etcd:
    /// the client reconnects; embedded: the process is gone, so a new watch resumes instead).
    fn watches_survive_restart(&self) -> bool;
}

pub use crate::wait::eventually as wait_until;

/// Reads watch events until `n` have arrived (progress notifications are skipped).
pub async fn collect_events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(DEADLINE, stream.next()).await {
            Ok(Some(Ok(batch))) => out.extend(batch.events),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", out.len()),
            Ok(None) => panic!("watch ended after {} of {n} events", out.len()),
            Err(_) => panic!("timed out with {} of {n} watch events: {out:?}", out.len()),
        }
    }
    out
}

async fn must_get(store: &dyn Store, key: &str) -> KeyValue {
    match store.get(key).await {
        Ok(Some(kv)) => kv,
        Ok(None) => panic!("{key} is missing"),
        Err(e) => panic!("get {key}: {e}"),
    }
}

/// get/put/delete and the revisions they report.
pub async fn get_put_delete<H: Harness>(h: &mut H) {
    let s = h.store();
    assert_eq!(s.get("/c/k").await.expect("get"), None);
    let r1 = s.put("/c/k", b"one".to_vec(), None).await.expect("put");
    let kv = must_get(&*s, "/c/k").await;
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"one"[..], r1, r1)
    );
    assert_eq!(kv.lease, None);
    let r2 = s.put("/c/k", b"two".to_vec(), None).await.expect("put");
    assert!(r2 > r1, "revisions increase: {r2} > {r1}");
    let kv = must_get(&*s, "/c/k").await;
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"two"[..], r1, r2)
    );
    assert!(s.delete("/c/k").await.expect("delete"));
    assert!(!s.delete("/c/k").await.expect("delete absent"));
    assert_eq!(s.get("/c/k").await.expect("get"), None);
    let r3 = s
        .put("/c/k", b"three".to_vec(), None)
        .await
        .expect("recreate");
    assert_eq!(
        must_get(&*s, "/c/k").await.create_revision,
        r3,
        "a recreated key is new"
    );
}

/// list returns only the prefix, sorted by key, with the store revision.
pub async fn list_ordering_and_revision<H: Harness>(h: &mut H) {
    let s = h.store();
    let empty = s.list("/l/").await.expect("list empty");
    assert!(empty.kvs.is_empty());
    assert!(empty.revision > 0);
    let mut last = 0;
    for key in ["/l/b", "/l/a", "/l/c/d", "/m/a", "/l", "/l/B", "/l/a0"] {
        last = s
            .put(key, key.as_bytes().to_vec(), None)
            .await
            .expect("put");
    }
    let list = s.list("/l/").await.expect("list");
    let keys: Vec<&str> = list.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/B", "/l/a", "/l/a0", "/l/b", "/l/c/d"]);
    assert_eq!(list.revision, last, "list revision is the store revision");
    for kv in &list.kvs {
        assert_eq!(kv.value, kv.key.as_bytes());
    }
    assert_eq!(s.list("").await.expect("list all").kvs.len(), 7);
}

/// compare-and-put: create-if-absent and stale revisions both conflict.
pub async fn cas_conflict<H: Harness>(h: &mut H) {
    let s = h.store();
    let r1 = s
        .compare_and_put("/cas/k", b"1".to_vec(), 0, None)
        .await
        .expect("create");
    let r1 = r1.expect("create-if-absent succeeds on an absent key");
    assert_eq!(
        s.compare_and_put("/cas/k", b"x".to_vec(), 0, None)
            .await
            .expect("cas"),
        None
    );
    let r2 = s
        .compare_and_put("/cas/k", b"2".to_vec(), r1, None)
        .await
        .expect("cas");
    let r2 = r2.expect("update at the current revision succeeds");
    assert_eq!(
        s.compare_and_put("/cas/k", b"x".to_vec(), r1, None)
            .await
            .expect("cas"),
        None
    );
    assert_eq!(must_get(&*s, "/cas/k").await.value, b"2");
    assert!(
        !s.compare_and_delete("/cas/k", r1)
            .await
            .expect("stale delete")
    );
    assert!(s.compare_and_delete("/cas/k", r2).await.expect("delete"));
    assert_eq!(s.get("/cas/k").await.expect("get"), None);
}

/// `Compare::Exists` holds for a key that exists, whatever its revision, and fails the
/// transaction (writing nothing) for one that does not.
pub async fn compare_exists<H: Harness>(h: &mut H) {
    let s = h.store();
    s.put("/ex/task", b"t".to_vec(), None).await.expect("put");
    s.put("/ex/task", b"t2".to_vec(), None).await.expect("put");
    let txn = |key: &str| Txn {
        compares: vec![Compare::Exists { key: key.into() }],
        ops: vec![TxnOp::Put {
            key: "/ex/status".into(),
            value: key.as_bytes().to_vec(),
            lease: None,
        }],
    };
    assert!(s.txn(txn("/ex/task")).await.expect("txn").succeeded);
    assert_eq!(must_get(&*s, "/ex/status").await.value, b"/ex/task");
    assert!(!s.txn(txn("/ex/missing")).await.expect("txn").succeeded);
    assert_eq!(must_get(&*s, "/ex/status").await.value, b"/ex/task");
    s.delete("/ex/task").await.expect("delete");
    assert!(!s.txn(txn("/ex/task")).await.expect("txn").succeeded);
}

/// A failed compare writes nothing; a successful txn lands every op at one revision.
pub async fn txn_atomicity<H: Harness>(h: &mut H) {
    let s = h.store();
    let ra = s.put("/t/a", b"a0".to_vec(), None).await.expect("put");
    let rb = s.put("/t/b", b"b0".to_vec(), None).await.expect("put");
    let ops = vec![
        TxnOp::Put {
            key: "/t/a".into(),
            value: b"a1".to_vec(),
            lease: None,
        },
        TxnOp::Delete { key: "/t/b".into() },
        TxnOp::Put {
            key: "/t/c".into(),
            value: b"c1".to_vec(),
            lease: None,
        },
    ];
    let stale = Txn {
        compares: vec![
            Compare::ModRevision {
                key: "/t/a".into(),
                revision: ra,
            },
            Compare::ModRevision {
                key: "/t/b".into(),
                revision: ra,
            },
        ],
        ops: ops.clone(),
    };
    let res = s.txn(stale).await.expect("txn");
    assert!(!res.succeeded);
    assert_eq!(res.revision, rb, "a failed txn does not move the revision");
    assert_eq!(must_get(&*s, "/t/a").await.value, b"a0");
    assert!(s.get("/t/b").await.expect("get").is_some());
    assert_eq!(s.get("/t/c").await.expect("get"), None);

    let mut watch = s.watch("/t/", rb + 1).await.expect("watch");
    let good = Txn {
        compares: vec![
            Compare::ModRevision {
                key: "/t/a".into(),
                revision: ra,
            },
            Compare::ModRevision {
                key: "/t/b".into(),
                revision: rb,
            },
            Compare::ModRevision {
                key: "/t/c".into(),
                revision: 0,
            },
        ],
        ops,
    };
    let res = s.txn(good).await.expect("txn");
    assert!(res.succeeded);
    assert!(res.revision > rb);
    let a = must_get(&*s, "/t/a").await;
    let c = must_get(&*s, "/t/c").await;
    assert_eq!(
        (a.mod_revision, c.mod_revision),
        (res.revision, res.revision)
    );
    assert_eq!(s.get("/t/b").await.expect("get"), None);
    let events = collect_events(&mut watch, 3).await;
    assert!(
        events.iter().all(|e| e.mod_revision() == res.revision),
        "{events:?}"
    );
}

/// More ops than the backend's limit is refused whole; the limit itself is accepted.
pub async fn too_many_ops_rejected<H: Harness>(h: &mut H) {
    let s = h.store();
    let max = s.max_txn_ops();
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::Put {
                key: format!("/ops/{i:04}"),
                value: vec![1],
                lease: None,
            })
            .collect()
    };
    match s
        .txn(Txn {
            compares: vec![],
            ops: ops(max + 1),
        })
        .await
    {
        Err(StoreError::TooManyOps { ops, max: m, .. }) => assert_eq!((ops, m), (max + 1, max)),
        other => panic!("expected TooManyOps, got {other:?}"),
    }
    assert!(
        s.list("/ops/").await.expect("list").kvs.is_empty(),
        "nothing was written"
    );
    let res = s
        .txn(Txn {
            compares: vec![],
            ops: ops(max),
        })
        .await
        .expect("txn at the limit");
    assert!(res.succeeded);
    let list = s.list("/ops/").await.expect("list");
    assert_eq!(list.kvs.len(), max);
    assert!(list.kvs.iter().all(|kv| kv.mod_revision == res.revision));
}

/// Events between two revisions arrive exactly once, in order, then live events follow.
pub async fn watch_ordering_and_resume<H: Harness>(h: &mut H) {
    let s = h.store();
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(s.put(&format!("/w/{i}"), vec![i], None).await.expect("put"));
        s.put(&format!("/other/{i}"), vec![i], None)
            .await
            .expect("put outside");
    }
    assert!(s.delete("/w/0").await.expect("delete"));
    let mut watch = s.watch("/w/", revs[3]).await.expect("watch");
    let history = collect_events(&mut watch, 8).await;
    assert_eq!(history.len(), 8, "exactly once: {history:?}");
    let keys: Vec<&str> = history.iter().map(WatchEvent::key).collect();
    assert_eq!(
        keys,
        [
            "/w/3", "/w/4", "/w/5", "/w/6", "/w/7", "/w/8", "/w/9", "/w/0"
        ]
    );
    let history_revs: Vec<Revision> = history[..7].iter().map(WatchEvent::mod_revision).collect();
    assert_eq!(history_revs, revs[3..].to_vec());
    assert!(
        matches!(&history[7], WatchEvent::Delete { .. }),
        "{history:?}"
    );
    let live = s.put("/w/live", b"x".to_vec(), None).await.expect("put");
    let more = collect_events(&mut watch, 1).await;
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!((more[0].key(), more[0].mod_revision()), ("/w/live", live));
    // Resuming from the middle delivers the same suffix.
    let mut resumed = s.watch("/w/", revs[8]).await.expect("watch");
    let again = collect_events(&mut resumed, 4).await;
    assert_eq!(again.len(), 4, "{again:?}");
    let keys: Vec<&str> = again.iter().map(WatchEvent::key).collect();
    assert_eq!(keys, ["/w/8", "/w/9", "/w/0", "/w/live"]);
}

/// A watch from a compacted revision yields Compacted and ends; a relist then resumes.
pub async fn compaction_yields_compacted<H: Harness>(h: &mut H) {
    let s = h.store();
    let first = s.put("/cp/a", b"1".to_vec(), None).await.expect("put");
    for i in 0..5 {
        s.put("/cp/a", vec![i], None).await.expect("put");
    }
    let last = s.put("/cp/b", b"2".to_vec(), None).await.expect("put");
    h.compact(last).await.expect("compact");
    let mut watch = s.watch("/cp/", first).await.expect("watch");
    match tokio::time::timeout(DEADLINE, watch.next()).await {
        Ok(Some(Err(StoreError::Compacted {
            requested,
            compact_revision,
        }))) => {
            assert_eq!(requested, first);
            assert!(
                compact_revision >= last - 1 && compact_revision <= last,
                "{compact_revision}"
            );
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    match tokio::time::timeout(DEADLINE, watch.next()).await {
        Ok(None) => {}
        other => panic!("the stream must end after Compacted, got {other:?}"),
    }
    let list = s.list("/cp/").await.expect("relist");
    assert_eq!(list.kvs.len(), 2);
    let mut watch = s
        .watch("/cp/", list.revision + 1)
        .await
        .expect("watch after relist");
    let rev = s.put("/cp/c", b"3".to_vec(), None).await.expect("put");
    let events = collect_events(&mut watch, 1).await;
    assert_eq!((events[0].key(), events[0].mod_revision()), ("/cp/c", rev));
}

/// An expired lease deletes its keys and watchers see Delete events.
pub async fn lease_expiry_deletes_keys<H: Harness>(h: &mut H) {
    let s = h.store();
    let lease = s.grant_lease(TTL).await.expect("grant");
    let start = s
        .put("/le/a", b"1".to_vec(), Some(lease))
        .await
        .expect("put");
    s.put("/le/b", b"2".to_vec(), Some(lease))
        .await
        .expect("put");
    s.put("/le/keep", b"3".to_vec(), None).await.expect("put");
    assert_eq!(must_get(&*s, "/le/a").await.lease, Some(lease));
    let mut watch = s.watch("/le/", start).await.expect("watch");
    let puts = collect_events(&mut watch, 3).await;
    assert!(puts.iter().all(|e| matches!(e, WatchEvent::Put(_))));
    lease_expired(&*s, lease, &mut watch).await;
}

/// The checks once lease `lease` of `/le/a` and `/le/b` expires: `watch` (of `/le/`, past
/// their puts) sees both deleted at one revision, `/le/keep` stays, and a put on the lease
/// fails with LeaseNotFound.
pub async fn lease_expired(s: &dyn Store, lease: LeaseId, watch: &mut WatchStream) {
    let deletes = collect_events(watch, 2).await;
    let mut keys: Vec<&str> = deletes
        .iter()
        .map(|e| match e {
            WatchEvent::Delete { key, .. } => key.as_str(),
            other => panic!("expected a Delete, got {other:?}"),
        })
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["/le/a", "/le/b"]);
    assert_eq!(
        deletes[0].mod_revision(),
        deletes[1].mod_revision(),
        "one revision"
    );
    let list = s.list("/le/").await.expect("list");
    assert_eq!(list.kvs.len(), 1);
    assert_eq!(list.kvs[0].key, "/le/keep");
    match s.put("/le/c", vec![], Some(lease)).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("a put on an expired lease must fail with LeaseNotFound, got {other:?}"),
    }
}

/// Refreshing a lease keeps its keys well past several TTLs; revoking deletes them.
pub async fn keep_alive_keeps_keys<H: Harness>(h: &mut H) {
    let s = h.store();
    let lease = s.grant_lease(TTL).await.expect("grant");
    s.put("/ka/a", b"1".to_vec(), Some(lease))
        .await
        .expect("put");
    let until = tokio::time::Instant::now() + TTL * 4;
    while tokio::time::Instant::now() < until {
        s.keep_alive(lease).await.expect("keep_alive");
        tokio::time::sleep(TTL / 4).await;
    }
    assert!(
        s.get("/ka/a").await.expect("get").is_some(),
        "refreshed lease kept its key"
    );
    s.revoke_lease(lease).await.expect("revoke");
    assert_eq!(
        s.get("/ka/a").await.expect("get"),
        None,
        "revoke deletes at once"
    );
    match s.keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("expected LeaseNotFound after revoke, got {other:?}"),
    }
}

/// keep_alive on a lease that expired is LeaseNotFound.
pub async fn keep_alive_expired_lease<H: Harness>(h: &mut H) {
    let s = h.store();
    let lease = s.grant_lease(TTL).await.expect("grant");
    s.put("/kx/a", b"1".to_vec(), Some(lease))
        .await
        .expect("put");
    let store = Arc::clone(&s);
    crate::wait::eventually("the lease's key is gone", || {
        let store = Arc::clone(&store);
        async move { matches!(store.get("/kx/a").await, Ok(None)) }
    })
    .await;
    match s.keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("expected LeaseNotFound, got {other:?}"),
    }
    match s.revoke_lease(lease).await {
        Err(StoreError::LeaseNotFound(_)) => {}
        other => panic!("revoking an expired lease: expected LeaseNotFound, got {other:?}"),
    }
}

/// N writers doing CAS increments on one counter: the final value is the success count.
pub async fn concurrent_cas_writers<H: Harness>(h: &mut H) {
    const WRITERS: usize = 8;
    const ATTEMPTS: usize = 25;
    let s = h.store();
    s.put("/cc/counter", b"0".to_vec(), None)
        .await
        .expect("seed");
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut won = 0u64;
            for _ in 0..ATTEMPTS {
                let kv = s
                    .get("/cc/counter")
                    .await?
                    .ok_or_else(|| StoreError::Unavailable("counter vanished".into()))?;
                let n: u64 = String::from_utf8_lossy(&kv.value)
                    .parse()
                    .unwrap_or(u64::MAX);
                let next = (n + 1).to_string().into_bytes();
                if s.compare_and_put("/cc/counter", next, kv.mod_revision, None)
                    .await?
                    .is_some()
                {
                    won += 1;
                }
            }
            Ok::<u64, StoreError>(won)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer task").expect("writer");
    }
    let kv = must_get(&*s, "/cc/counter").await;
    assert_eq!(String::from_utf8_lossy(&kv.value), total.to_string());
    assert!(total > 0);
}

/// 1 MiB values round-trip through put, get, list and watch.
pub async fn large_values<H: Harness>(h: &mut H) {
    let s = h.store();
    let value: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let start = s
        .put("/big/a", value.clone(), None)
        .await
        .expect("put 1 MiB");
    assert_eq!(must_get(&*s, "/big/a").await.value, value);
    let list = s.list("/big/").await.expect("list");
    assert_eq!(list.kvs[0].value, value);
    let mut watch = s.watch("/big/", start).await.expect("watch");
    match &collect_events(&mut watch, 1).await[0] {
        WatchEvent::Put(kv) => assert_eq!(kv.value, value),
        other => panic!("expected a Put, got {other:?}"),
    }
}

/// A store restart keeps data and revisions, and watchers miss nothing.
pub async fn watch_survives_restart<H: Harness>(h: &mut H) {
    let s = h.store();
    let r1 = s.put("/rs/a", b"1".to_vec(), None).await.expect("put");
    let mut watch = s.watch("/rs/", r1).await.expect("watch");
    assert_eq!(collect_events(&mut watch, 1).await[0].key(), "/rs/a");
    let survive = h.watches_survive_restart();
    let s = h.restart(s).await;
    let r2 = s
        .put("/rs/b", b"2".to_vec(), None)
        .await
        .expect("put after restart");
    assert!(r2 > r1, "revision kept across restart: {r2} > {r1}");
    let r3 = s.put("/rs/c", b"3".to_vec(), None).await.expect("put");
    assert_eq!(must_get(&*s, "/rs/a").await.mod_revision, r1);
    let events = if survive {
        let mut events = collect_events(&mut watch, 2).await;
        events.insert(
            0,
            WatchEvent::Delete {
                key: "/rs/a".into(),
                mod_revision: r1,
            },
        );
        events
    } else {
        drop(watch);
        let mut resumed = s
            .watch("/rs/", r1)
            .await
            .expect("watch from the old revision");
        collect_events(&mut resumed, 3).await
    };
    let got: Vec<(&str, Revision)> = events.iter().map(|e| (e.key(), e.mod_revision())).collect();
    assert_eq!(got, [("/rs/a", r1), ("/rs/b", r2), ("/rs/c", r3)]);
}
