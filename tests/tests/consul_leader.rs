//! Leader election on the Consul backend: the leader record is bound to a Consul session
//! (TTL, `Behavior=delete`); a standby takes over once the leader's session is gone, and the
//! deposed leader's fenced writes are refused. Runs against the in-process Consul fake with its
//! clock sped up twice: Consul keeps a session for 2×TTL (20 s at the 10 s minimum), 10 s of
//! real time here, while the leader renews every TTL/3 of real time (3.3 s) — so the session
//! lives only because the leader renews it, which is what the test means to show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_controller::runner::commit::{CommitError, commit};
use shoal_controller::runner::leader::campaign;
use shoal_core::Keys;
use shoal_store::consul::ConsulStore;
use shoal_store::{Store, TxnOp};
use shoal_tests::consul_fake::ConsulFake;
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(10);
/// The fake's clock runs this many times slower than real time (0.5: twice as fast).
const TIME_SCALE: f64 = 0.5;

/// How long, in real time, Consul keeps a session that is not renewed: 2×TTL, scaled.
fn session_window() -> Duration {
    (TTL * 2).mul_f64(TIME_SCALE)
}

async fn store(fake: &ConsulFake) -> Arc<dyn Store> {
    Arc::new(
        ConsulStore::connect(&format!("consul://{}", fake.addr()))
            .await
            .expect("connect to the Consul fake"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_when_the_leaders_session_expires_and_old_writes_are_fenced() {
    let fake = ConsulFake::start_scaled(TIME_SCALE).await;
    // The premise: the leader renews before its session would expire.
    assert!(
        TTL / 3 < session_window() / 2,
        "the leader must renew at least twice per session window"
    );
    let keys = Keys::default();
    let a = store(&fake).await;
    let b = store(&fake).await;

    let stop_a = CancellationToken::new();
    let leader = campaign(&a, &keys, "controller-a", TTL, &stop_a)
        .await
        .expect("campaign")
        .expect("controller-a leads");
    let record = a.get(&keys.leader()).await.unwrap().expect("leader record");
    assert!(String::from_utf8_lossy(&record.value).contains("controller-a"));

    // The standby campaigns in the background: it must not win while the leader lives.
    let stop_b = CancellationToken::new();
    let keys_b = keys.clone();
    let b2 = b.clone();
    let standby =
        tokio::spawn(async move { campaign(&b2, &keys_b, "controller-b", TTL, &stop_b).await });
    // Watch for longer than a session lives unrenewed: the leader's session is still the one it
    // was elected with, so it was renewed, and the standby never won meanwhile.
    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    tokio::time::sleep(session_window().mul_f64(1.5)).await;
    assert!(
        !standby.is_finished(),
        "a standby must not lead while the leader renews its session"
    );
    assert!(
        fake.sessions().contains(&sessions[0]),
        "the leader's session outlived its unrenewed window because the leader renewed it"
    );
    let record = a.get(&keys.leader()).await.unwrap().expect("leader record");
    assert!(String::from_utf8_lossy(&record.value).contains("controller-a"));

    // The leader hangs (stops renewing): its session expires, the record goes, b leads.
    let fence = leader.fence.clone();
    leader.abandon();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !standby.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the standby did not take over within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new = standby
        .await
        .unwrap()
        .expect("campaign")
        .expect("controller-b leads");
    let record = b.get(&keys.leader()).await.unwrap().expect("leader record");
    assert!(String::from_utf8_lossy(&record.value).contains("controller-b"));

    // A late write from the deposed leader fails and writes nothing.
    let late = keys.task("n1", "web.1.late");
    let op = |k: &str| {
        vec![TxnOp::Put {
            key: k.to_string(),
            value: b"{}".to_vec(),
            lease: None,
        }]
    };
    let res = commit(a.as_ref(), &fence, &op(&late), |_, _| {}).await;
    assert!(
        matches!(res, Err(CommitError::Fenced)),
        "late write refused: {res:?}"
    );
    assert!(
        a.get(&late).await.unwrap().is_none(),
        "nothing written by the deposed leader"
    );
    let fresh = keys.task("n1", "web.1.fresh");
    commit(b.as_ref(), &new.fence, &op(&fresh), |_, _| {})
        .await
        .expect("the new leader writes");
    assert!(b.get(&fresh).await.unwrap().is_some());
}
