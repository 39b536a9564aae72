//! Leader election and fencing: one leader among several controllers, a standby takes over
//! when the leader dies, and a deposed leader's writes are refused.

use std::time::Duration;

use shoal_controller::runner::commit::{CommitError, commit};
use shoal_controller::runner::leader::campaign;
use shoal_store::{Revision, Store, StoreError, TxnOp, WatchStream};
use shoal_tests::cluster::{Agent, Env};
use shoal_tests::intercept::{Intercept, Intercepted};
use shoal_tests::wait::wait_for;

const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_and_a_standby_takes_over_when_it_dies() {
    let env = Env::embedded().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let _b = Agent::start(&env, "n2", &[]).await;
    let c1 = env.controller("c1", TTL);
    c1.wait_leading().await;
    let c2 = env.controller("c2", TTL);
    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c1.is_leader() && !c2.is_leader(), "exactly one leader");

    // The leader dies without resigning: its lease expires and c2 takes over.
    c1.kill();
    c2.wait_leading().await;
    env.put_service("web", "  replicas: 4\n").await;
    env.wait_running("web", 4).await;
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_with_its_warm_cache_without_listing_again() {
    let env = Env::embedded().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let c1 = env.controller("c1", TTL);
    c1.wait_leading().await;
    let c2 = env.controller("c2", TTL);
    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    // The standby lists once when it starts, then follows the watch.
    wait_for("the standby's cache loaded", || async {
        (c2.metrics.relists.get() == 1).then_some(())
    })
    .await;
    // Written while c2 stands by: only its watch brings this to it.
    env.put_service("api", "  replicas: 1\n").await;
    env.wait_running("api", 1).await;

    c1.kill();
    let killed = std::time::Instant::now();
    c2.wait_leading().await;
    println!(
        "standby leads {:?} after the leader was killed",
        killed.elapsed()
    );
    env.put_service("web", "  replicas: 3\n").await;
    env.wait_running("web", 3).await;
    assert_eq!(
        env.running("api").await.values().sum::<usize>(),
        1,
        "api untouched"
    );
    assert_eq!(
        c2.metrics.relists.get(),
        1,
        "taking over did not list the store again"
    );
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_places_at_once_not_a_debounce_later() {
    let env = Env::embedded().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    // Written while no controller runs: the first leader finds it waiting to be placed.
    env.put_service("web", "  replicas: 2\n").await;
    // A debounce no test outlives: a change waits that long, a whole view must not.
    let hour = Duration::from_secs(3600);
    let c = env.controller_with("c1", TTL, |cfg| {
        cfg.debounce = hour;
        cfg.resync_interval = hour;
    });
    c.wait_leading().await;
    let led = std::time::Instant::now();
    wait_for("web's 2 tasks running", || async {
        let running = env.running("web").await.values().sum::<usize>();
        (running == 2).then_some(())
    })
    .await;
    println!("placed and running {:?} after the election", led.elapsed());
    c.stop().await;
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
    let res = commit(env.store.as_ref(), &fence, &op(), |_, _| {}).await;
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
    commit(env.store.as_ref(), &new.fence, &op(), |_, _| {})
        .await
        .expect("the new leader writes");
    new.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_record_is_taken_steps_down() {
    let env = Env::embedded().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let c1 = env.controller("c1", TTL);
    c1.wait_leading().await;
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
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Intercept for PanicOnFirstWatch {
    async fn watch(
        &self,
        inner: &dyn Store,
        prefix: &str,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        if prefix.ends_with('/') && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("injected watcher fault");
        }
        inner.watch(prefix, from).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_watcher_panics_steps_down_and_leads_again_with_a_new_watch() {
    let env = Env::embedded().await.wrapped(|inner| {
        std::sync::Arc::new(Intercepted::new(
            inner,
            PanicOnFirstWatch {
                armed: std::sync::atomic::AtomicBool::new(true),
            },
        ))
    });
    let _a = Agent::start(&env, "n1", &[]).await;
    let c1 = env.controller("c1", TTL);
    c1.wait_leading().await;
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
