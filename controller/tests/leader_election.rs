//! Leader election and fencing: one leader among several controllers, a standby takes over
//! when the leader dies, and a deposed leader's writes are refused.

mod common;

use std::time::Duration;

use common::{Agent, Env, wait_for};
use shoal_controller::runner::commit::{CommitError, commit};
use shoal_controller::runner::leader::campaign;
use shoal_store::{
    KeyValue, LeaseId, ListResult, Revision, Store, StoreError, Txn, TxnOp, TxnResult, WatchStream,
};

const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_and_a_standby_takes_over_when_it_dies() {
    let env = Env::embedded().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let _b = Agent::start(&env, "n2", &[]).await;
    let c1 = env.controller("c1", TTL);
    wait_for("c1 leads", || async { c1.is_leader().then_some(()) }).await;
    let c2 = env.controller("c2", TTL);
    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c1.is_leader() && !c2.is_leader(), "exactly one leader");

    // The leader dies without resigning: its lease expires and c2 takes over.
    c1.kill();
    wait_for("c2 leads", || async { c2.is_leader().then_some(()) }).await;
    env.put_service("web", "  replicas: 4\n").await;
    env.wait_running("web", 4).await;
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leaders_writes_fail() {
    let env = Env::embedded().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let old = campaign(&env.store, &env.keys, "old", TTL, &stop)
        .await
        .unwrap()
        .expect("won");
    let fence = old.fence.clone();
    // The old leader stops refreshing its lease (a long pause), and loses it.
    old.abandon();
    let new = wait_for("new leader elected", || async {
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::time::timeout(
            Duration::from_millis(500),
            campaign(&env.store, &env.keys, "new", TTL, &stop),
        )
        .await
        .ok()
        .and_then(|r| r.ok().flatten())
    })
    .await;
    let op = || {
        vec![TxnOp::Put {
            key: env.keys.task("n1", "web.1.late"),
            value: b"{}".to_vec(),
            lease: None,
        }]
    };
    let res = commit(env.store.as_ref(), &fence, op(), |_, _| {}).await;
    assert!(
        matches!(res, Err(CommitError::Fenced)),
        "late write refused: {res:?}"
    );
    assert!(
        env.store
            .get(&env.keys.task("n1", "web.1.late"))
            .await
            .unwrap()
            .is_none()
    );
    commit(env.store.as_ref(), &new.fence, op(), |_, _| {})
        .await
        .expect("the new leader writes");
    new.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_record_is_taken_steps_down() {
    let env = Env::embedded().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let c1 = env.controller("c1", TTL);
    wait_for("c1 leads", || async { c1.is_leader().then_some(()) }).await;
    let c2 = env.controller("c2", TTL);
    env.put_service("web", "  replicas: 1\n").await;
    env.wait_running("web", 1).await;

    // An operator deletes the leader record: a new election runs (normally won by the
    // standby, which is already watching), and the old term ends instead of writing on.
    let old_fence = env
        .store
        .get(&env.keys.leader())
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    env.store.delete(&env.keys.leader()).await.unwrap();
    wait_for("a new leader record and exactly one leader", || async {
        let rec = env.store.get(&env.keys.leader()).await.unwrap()?;
        (rec.mod_revision != old_fence && c1.is_leader() != c2.is_leader()).then_some(())
    })
    .await;
    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    assert!(c1.is_leader() != c2.is_leader(), "exactly one leader");
    c1.stop().await;
    c2.stop().await;
}

/// A store whose first watch of a whole prefix (the controller's) panics, as a bug in a
/// watcher would; later calls, and the agents' watches of their own node record, delegate.
struct PanicOnFirstWatch {
    inner: std::sync::Arc<dyn Store>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for PanicOnFirstWatch {
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
        if prefix.ends_with('/') && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("injected watcher fault");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_watcher_panics_steps_down_and_leads_again_with_a_new_watch() {
    let env = Env::embedded().await.wrapped(|inner| {
        std::sync::Arc::new(PanicOnFirstWatch {
            inner,
            armed: std::sync::atomic::AtomicBool::new(true),
        })
    });
    let _a = Agent::start(&env, "n1", &[]).await;
    let c1 = env.controller("c1", TTL);
    wait_for("c1 leads", || async { c1.is_leader().then_some(()) }).await;
    let leader_key = env.keys.leader();
    // A service written after the first term began: only a live watch (or a new term's list)
    // brings it to the controller.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    let record = env.store.get(&leader_key).await.unwrap();
    assert!(
        record.is_some(),
        "c1 leads again after its broken term (leader record present)"
    );
    assert!(c1.is_leader());
    c1.stop().await;
}
