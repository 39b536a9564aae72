//! A write whose answer was lost may still be applied later (the request was stuck on a
//! connection to an unreachable store member and reached it when the network healed). The
//! leader must not let such a write land after it has acted as if it failed: here the first
//! plan of a service (its creates) "fails", the controller creates the tasks again, and the
//! lost request then arrives — it must be refused, or each slot would get a second task.
//! And a write in flight while the leader moves its own fence is retried, not taken for a
//! lost leadership.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_controller::runner::commit::{CommitError, commit, refence};
use shoal_controller::runner::leader::{Fence, campaign};
use shoal_core::model::DesiredState;
use shoal_store::{Store, StoreError, Txn, TxnOp, TxnResult};
use shoal_tests::cluster::{Agent, Env};
use shoal_tests::intercept::{Intercept, Intercepted};

const TTL: Duration = Duration::from_secs(2);

/// A store that answers the first transaction creating a task with an error without
/// applying it, and keeps it so the test can deliver it later.
struct LoseFirstCreate {
    tasks_prefix: String,
    armed: AtomicBool,
    held: Arc<Mutex<Option<Txn>>>,
}

#[async_trait::async_trait]
impl Intercept for LoseFirstCreate {
    async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnResult, StoreError> {
        let creates_task = txn
            .ops
            .iter()
            .any(|op| matches!(op, TxnOp::Put { key, .. } if key.starts_with(&self.tasks_prefix)));
        if creates_task && self.armed.swap(false, Ordering::SeqCst) {
            *self.held.lock().unwrap() = Some(txn);
            return Err(StoreError::Unavailable(
                "injected: the answer was lost".into(),
            ));
        }
        inner.txn(txn).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_whose_answer_was_lost_cannot_land_after_the_leader_retried() {
    let held = Arc::new(Mutex::new(None));
    let inner_slot: Arc<Mutex<Option<Arc<dyn Store>>>> = Arc::new(Mutex::new(None));
    let env = Env::embedded().await;
    let tasks_prefix = env.keys.tasks_prefix();
    let env = env.wrapped(|inner| {
        *inner_slot.lock().unwrap() = Some(inner.clone());
        Arc::new(Intercepted::new(
            inner,
            LoseFirstCreate {
                tasks_prefix,
                armed: AtomicBool::new(true),
                held: held.clone(),
            },
        ))
    });
    let inner = inner_slot.lock().unwrap().clone().expect("wrapped");
    let _a = Agent::start(&env, "n1", &[]).await;
    let _b = Agent::start(&env, "n2", &[]).await;
    let c1 = env.controller("c1", TTL);
    c1.wait_leading().await;

    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    let lost = held
        .lock()
        .unwrap()
        .take()
        .expect("the first plan's answer was lost");

    // The lost request reaches the store now, with the fence it was sent with.
    let res = inner.txn(lost).await.expect("the store answers");
    assert!(
        !res.succeeded,
        "a write the leader treated as failed was applied after it created the tasks again"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wanted = env
        .tasks()
        .await
        .into_iter()
        .filter(|(t, _)| t.service.name == "web" && t.desired_state == DesiredState::Running)
        .count();
    assert_eq!(wanted, 2, "one task per slot");
    env.wait_running("web", 2).await;
    c1.stop().await;
}

/// A store that moves `fence` (as another writer of the same leader would after an
/// unanswered write) just before it applies the next transaction.
struct MoveFenceFirst {
    fence: Fence,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Intercept for MoveFenceFirst {
    async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnResult, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            refence(inner, &self.fence).await.expect("fence moved");
        }
        inner.txn(txn).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_in_flight_while_the_leader_moves_its_fence_is_retried_not_taken_for_a_lost_lead() {
    let env = Env::embedded().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let leader = campaign(&env.store, &env.keys, "c1", TTL, &stop)
        .await
        .unwrap()
        .expect("won");
    let store = Intercepted::new(
        env.store.clone(),
        MoveFenceFirst {
            fence: leader.fence.clone(),
            armed: AtomicBool::new(true),
        },
    );
    let op = || {
        vec![TxnOp::Put {
            key: env.keys.task("n1", "web.1.a"),
            value: b"{}".to_vec(),
            lease: None,
        }]
    };
    let res = commit(&store, &leader.fence, &op(), |_, _| {}).await;
    assert!(
        matches!(res, Err(CommitError::FenceMoved)),
        "refused, and not as a lost leadership: {res:?}"
    );
    commit(&store, &leader.fence, &op(), |_, _| {})
        .await
        .expect("written under the moved fence");
    leader.resign().await;
}
