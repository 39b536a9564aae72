//! Reflector cases of the conformance suite: the typed watcher's Init/Apply/Delete over a
//! real backend, invalid values passed through as data, and a relist after the watch fell
//! behind a real compaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use shoal_store::reflector::{Change, Event, EventStream, Reflector, watcher};
use shoal_store::{
    KeyValue, LeaseId, ListResult, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};

use super::{Compactor, DEADLINE, Harness, wait_until};

/// Decodes a counter; invalid values stay visible as errors.
fn decode_u32(key: &str, bytes: &[u8]) -> Result<u32, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{key}: not a number"))
}

fn decode_text(_key: &str, bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn next_event<T: std::fmt::Debug>(events: &mut EventStream<T>) -> Event<T> {
    match tokio::time::timeout(DEADLINE, events.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the watcher stream ended"),
        Err(_) => panic!("no watcher event within {DEADLINE:?}"),
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
        Event::Delete(key) => assert_eq!(key, "/ri/a"),
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

/// A store wrapper that, on its first watch, changes the prefix and compacts past the
/// requested revision before delegating: the watch then really falls behind compaction.
struct CompactBeforeWatch {
    inner: Arc<dyn Store>,
    compactor: Compactor,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Store for CompactBeforeWatch {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
    fn max_txn_bytes(&self) -> usize {
        self.inner.max_txn_bytes()
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        self.inner.list(prefix).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.inner
                .put(&format!("{prefix}during-gap"), b"g".to_vec(), None)
                .await?;
            self.inner.delete(&format!("{prefix}b")).await?;
            let now = self
                .inner
                .put(&format!("{prefix}last"), b"l".to_vec(), None)
                .await?;
            (self.compactor)(now).await?;
        }
        self.inner.watch(prefix, from).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
}

/// After its watch falls behind compaction the watcher lists again and emits a new Init
/// that replaces the old state, then carries on with live events.
pub async fn reflector_relists_after_compaction<H: Harness>(h: &mut H) {
    let s = h.store();
    s.put("/rc/a", b"a".to_vec(), None).await.expect("put");
    s.put("/rc/b", b"b".to_vec(), None).await.expect("put");
    let wrapped: Arc<dyn Store> = Arc::new(CompactBeforeWatch {
        inner: Arc::clone(&s),
        compactor: h.compactor(),
        armed: AtomicBool::new(true),
    });
    let mut events = watcher(Arc::clone(&wrapped), "/rc/", decode_text);
    let keys = |event: Event<String>| -> Vec<String> {
        match event {
            Event::Init(items) => items.into_iter().map(|(k, _, _)| k).collect(),
            other => panic!("expected Init, got {other:?}"),
        }
    };
    assert_eq!(keys(next_event(&mut events).await), ["/rc/a", "/rc/b"]);
    assert_eq!(
        keys(next_event(&mut events).await),
        ["/rc/a", "/rc/during-gap", "/rc/last"]
    );
    let rc = s.put("/rc/c", b"c".to_vec(), None).await.expect("put");
    match next_event(&mut events).await {
        Event::Apply(key, value, rev) => {
            assert_eq!((key.as_str(), value.as_str(), rev), ("/rc/c", "c", rc))
        }
        other => panic!("expected Apply after the relist, got {other:?}"),
    }

    // The reflector ends up with the same state.
    let rearmed: Arc<dyn Store> = Arc::new(CompactBeforeWatch {
        inner: Arc::clone(&s),
        compactor: h.compactor(),
        armed: AtomicBool::new(true),
    });
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
