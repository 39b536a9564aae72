//! Reflector cases of the conformance suite: the typed watcher's Init/Apply/Delete over a
//! real backend, invalid values passed through as data, batches that carry the revision they
//! reach (what the controller's write barrier relies on), and a relist after the watch fell
//! behind a real compaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use shoal_store::reflector::{
    Batch, BatchStream, Change, Event, EventStream, Reflector, batches, watcher,
};
use shoal_store::{Revision, Store, StoreError, Txn, TxnOp, WatchStream};

use super::{Compactor, DEADLINE, Harness, wait_until};
use crate::intercept::{Intercept, Intercepted};

/// Decodes a counter; invalid values stay visible as errors.
fn decode_u32(key: &str, bytes: Vec<u8>) -> Result<u32, String> {
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{key}: not a number"))
}

fn decode_text(_key: &str, bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

async fn next_event<T: std::fmt::Debug>(events: &mut EventStream<T>) -> Event<T> {
    match tokio::time::timeout(DEADLINE, events.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the watcher stream ended"),
        Err(_) => panic!("no watcher event within {DEADLINE:?}"),
    }
}

async fn next_batch<T: std::fmt::Debug>(batches: &mut BatchStream<T>) -> Batch<T> {
    match tokio::time::timeout(DEADLINE, batches.next()).await {
        Ok(Some(batch)) => batch,
        Ok(None) => panic!("the batch stream ended"),
        Err(_) => panic!("no batch within {DEADLINE:?}"),
    }
}

async fn next_change(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Ok(change)) => change,
        other => panic!("no change notification: {other:?}"),
    }
}

/// Init lists everything (invalid values included), then Apply and Delete follow; the
/// reflector's cache, revision, ready signal and change feed track them.
pub async fn reflector_init_apply_delete<H: Harness>(h: &mut H) {
    let s = h.store();
    s.put("/ri/a", b"1".to_vec(), None).await.expect("put");
    let seeded = s
        .put("/ri/bad", b"not a number".to_vec(), None)
        .await
        .expect("put");

    let mut events = watcher(Arc::clone(&s), "/ri/", decode_u32);
    match next_event(&mut events).await {
        Event::Init(items) => {
            let got: Vec<(&str, &Result<u32, String>)> =
                items.iter().map(|(k, v, _)| (k.as_str(), v)).collect();
            assert_eq!(
                got,
                [
                    ("/ri/a", &Ok(1)),
                    ("/ri/bad", &Err("/ri/bad: not a number".into()))
                ]
            );
            assert_eq!(items[1].2, seeded);
        }
        other => panic!("expected Init first, got {other:?}"),
    }

    let reflector = Reflector::spawn(Arc::clone(&s), "/ri/", decode_u32);
    let reader = reflector.reader();
    tokio::time::timeout(DEADLINE, reader.wait_ready())
        .await
        .expect("reflector ready");
    assert_eq!(reader.keys(), ["/ri/a", "/ri/bad"]);
    assert!(
        reader.get("/ri/bad").is_some_and(|v| v.is_err()),
        "invalid values are kept"
    );
    assert!(reader.revision() >= seeded);
    let mut changes = reader.subscribe();

    let rb = s.put("/ri/b", b"2".to_vec(), None).await.expect("put");
    match next_event(&mut events).await {
        Event::Apply(key, value, rev) => {
            assert_eq!((key.as_str(), value, rev), ("/ri/b", Ok(2), rb))
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    assert_eq!(
        next_change(&mut changes).await,
        Change::Applied("/ri/b".into())
    );
    assert_eq!(reader.get("/ri/b").as_deref(), Some(&Ok(2)));
    assert_eq!(reader.entry("/ri/b").map(|e| e.mod_revision), Some(rb));

    assert!(s.delete("/ri/a").await.expect("delete"));
    match next_event(&mut events).await {
        Event::Delete(key, rev) => {
            assert_eq!(key, "/ri/a");
            assert!(rev > rb, "the delete's revision follows the put before it");
        }
        other => panic!("expected Delete, got {other:?}"),
    }
    assert_eq!(
        next_change(&mut changes).await,
        Change::Deleted("/ri/a".into())
    );
    assert_eq!(reader.get("/ri/a"), None);
    assert!(
        reader.revision() > rb,
        "the revision advances to the delete"
    );
    assert_eq!(reader.keys(), ["/ri/b", "/ri/bad"]);
}

/// On its first watch, changes the prefix and compacts past the requested revision before
/// delegating: the watch then really falls behind compaction.
struct CompactBeforeWatch {
    compactor: Compactor,
    armed: AtomicBool,
}

impl CompactBeforeWatch {
    /// `store`, wrapped so that its first watch falls behind compaction.
    fn wrap(store: &Arc<dyn Store>, compactor: Compactor) -> Arc<dyn Store> {
        let intercept = CompactBeforeWatch {
            compactor,
            armed: AtomicBool::new(true),
        };
        Arc::new(Intercepted::new(Arc::clone(store), intercept))
    }
}

#[async_trait::async_trait]
impl Intercept for CompactBeforeWatch {
    async fn watch(
        &self,
        inner: &dyn Store,
        prefix: &str,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            inner
                .put(&format!("{prefix}during-gap"), b"g".to_vec(), None)
                .await?;
            inner.delete(&format!("{prefix}b")).await?;
            let now = inner
                .put(&format!("{prefix}last"), b"l".to_vec(), None)
                .await?;
            (self.compactor)(now).await?;
        }
        inner.watch(prefix, from).await
    }
}

/// After its watch falls behind compaction the watcher lists again and emits a new Init
/// that replaces the old state, then carries on with live events.
pub async fn reflector_relists_after_compaction<H: Harness>(h: &mut H) {
    let s = h.store();
    s.put("/rc/a", b"a".to_vec(), None).await.expect("put");
    s.put("/rc/b", b"b".to_vec(), None).await.expect("put");
    let wrapped = CompactBeforeWatch::wrap(&s, h.compactor());
    let mut stream = batches(Arc::clone(&wrapped), "/rc/", decode_text);
    let keys = |batch: Batch<String>| -> (Vec<String>, Revision) {
        match <[Event<String>; 1]>::try_from(batch.events) {
            Ok([Event::Init(items)]) => (
                items.into_iter().map(|(k, _, _)| k).collect(),
                batch.revision,
            ),
            other => panic!("expected an Init alone in its batch, got {other:?}"),
        }
    };
    let (first, _) = keys(next_batch(&mut stream).await);
    assert_eq!(first, ["/rc/a", "/rc/b"]);
    let (relisted, relist_revision) = keys(next_batch(&mut stream).await);
    assert_eq!(relisted, ["/rc/a", "/rc/during-gap", "/rc/last"]);
    let last = s.get("/rc/last").await.expect("get").expect("written");
    assert!(
        relist_revision >= last.mod_revision,
        "the relist reaches the writes made during the gap"
    );
    let rc = s.put("/rc/c", b"c".to_vec(), None).await.expect("put");
    let applied = next_batch(&mut stream).await;
    match applied.events.as_slice() {
        [Event::Apply(key, value, rev)] => {
            assert_eq!((key.as_str(), value.as_str(), *rev), ("/rc/c", "c", rc));
            assert!(applied.revision >= rc);
        }
        other => panic!("expected Apply after the relist, got {other:?}"),
    }

    // The reflector ends up with the same state.
    let rearmed = CompactBeforeWatch::wrap(&s, h.compactor());
    s.put("/rc/b", b"b2".to_vec(), None).await.expect("put");
    let reflector = Reflector::spawn(rearmed, "/rc/", decode_text);
    let reader = reflector.reader();
    wait_until("the reflector relisted without /rc/b", || {
        let reader = reader.clone();
        async move { reader.is_ready() && reader.get("/rc/b").is_none() && reader.len() == 4 }
    })
    .await;
    assert_eq!(
        reader.keys(),
        ["/rc/a", "/rc/c", "/rc/during-gap", "/rc/last"]
    );
}

/// Batches: the list comes alone in the first batch with the list's revision; each later
/// batch carries the revision it reaches, and once a consumer has applied the batches up to
/// a write's revision it has seen everything that write did (all ops of a transaction), with
/// each event's own revision, deletes included.
pub async fn reflector_batches_reach_revisions<H: Harness>(h: &mut H) {
    let s = h.store();
    let seeded = s.put("/rb/a", b"1".to_vec(), None).await.expect("put");
    let mut stream = batches(Arc::clone(&s), "/rb/", decode_text);
    let first = next_batch(&mut stream).await;
    assert!(first.revision >= seeded, "the list reaches the seeded put");
    match first.events.as_slice() {
        [Event::Init(items)] => {
            assert_eq!(items, &[("/rb/a".to_string(), "1".to_string(), seeded)])
        }
        other => panic!("expected one Init alone in the first batch, got {other:?}"),
    }

    let txn = Txn {
        compares: vec![],
        ops: ["/rb/b", "/rb/c", "/rb/d"]
            .into_iter()
            .map(|key| TxnOp::Put {
                key: key.to_string(),
                value: key.as_bytes().to_vec(),
                lease: None,
            })
            .collect(),
    };
    let written = s.txn(txn).await.expect("txn");
    assert!(written.succeeded);
    assert!(s.delete("/rb/a").await.expect("delete"));
    let after_delete = s.list("/rb/").await.expect("list").revision;

    let mut seen: Vec<(String, Revision)> = Vec::new();
    let mut reached = first.revision;
    while reached < written.revision || !seen.iter().any(|(k, _)| k == "-/rb/a") {
        let batch = next_batch(&mut stream).await;
        assert!(
            batch.revision >= reached,
            "batch revisions never go back: {} after {reached}",
            batch.revision
        );
        for event in batch.events {
            match event {
                Event::Apply(key, value, rev) => {
                    assert_eq!(value, key, "the value decoded");
                    assert!(rev <= batch.revision, "an event is within its batch");
                    seen.push((key, rev));
                }
                Event::Delete(key, rev) => {
                    assert!(rev <= batch.revision, "an event is within its batch");
                    seen.push((format!("-{key}"), rev));
                }
                Event::Init(_) => panic!("no relist expected here"),
            }
        }
        reached = batch.revision;
        if reached >= written.revision {
            let puts: Vec<&str> = seen
                .iter()
                .filter(|(k, _)| !k.starts_with('-'))
                .map(|(k, _)| k.as_str())
                .collect();
            assert_eq!(
                puts,
                ["/rb/b", "/rb/c", "/rb/d"],
                "every op of the transaction is seen once its revision is reached"
            );
        }
    }
    assert!(
        seen.iter()
            .filter(|(k, _)| !k.starts_with('-'))
            .all(|(_, rev)| *rev == written.revision),
        "the transaction's puts carry its revision: {seen:?}"
    );
    let delete_rev = seen
        .iter()
        .find(|(k, _)| k == "-/rb/a")
        .map(|(_, rev)| *rev)
        .expect("the delete was seen");
    assert!(
        delete_rev > written.revision && delete_rev <= after_delete,
        "the delete carries its own revision: {delete_rev} (txn at {}, list after at {after_delete})",
        written.revision
    );
}
