//! Placement through the pipeline with commits delayed, refused and answered-but-lost: no
//! node is ever over-committed, and once the faults stop the cache equals the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rand::{Rng, SeedableRng};
use shoal_core::Key;
use shoal_core::model::{self, Task, TaskStatus};
use shoal_store::reflector::{self, Event};
use shoal_store::{Store, StoreError, Txn, TxnOp, TxnResult};
use shoal_tests::cluster::{Agent, Env};
use shoal_tests::intercept::{Intercept, Intercepted};
use shoal_tests::wait::wait_for;
use tokio_util::sync::CancellationToken;

use super::super::cache::Cache;
use super::super::leader::campaign;
use super::super::{Controller, ControllerConfig};
use crate::placement::NodeUsage;

const NODES: usize = 4;
const NODE_MEMORY: u64 = 8 << 30;

/// Delays every task write and makes some fail: refused outright, or applied with the answer
/// lost (both seen by the controller as a store error).
struct FlakyCommits {
    on: AtomicBool,
    rng: Mutex<rand::rngs::StdRng>,
    refused: AtomicU64,
    lost: AtomicU64,
}

#[async_trait::async_trait]
impl Intercept for FlakyCommits {
    async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnResult, StoreError> {
        let writes_tasks = txn.ops.iter().any(|op| match op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => key.contains("/tasks/"),
        });
        if !writes_tasks || !self.on.load(Ordering::SeqCst) {
            return inner.txn(txn).await;
        }
        let (delay, fate) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.random_range(0..30), rng.random_range(0..10))
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let unavailable = || StoreError::Unavailable("injected commit fault".into());
        match fate {
            0 | 1 => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                Err(unavailable())
            }
            2 => {
                self.lost.fetch_add(1, Ordering::SeqCst);
                inner.txn(txn).await?;
                Err(unavailable())
            }
            _ => inner.txn(txn).await,
        }
    }
}

/// What the unfinished tasks in the store take per node; panics when a node is
/// over-committed (memory or a host port held twice).
fn check_nodes(
    tasks: &BTreeMap<(String, String), Task>,
    statuses: &BTreeMap<(String, String), TaskStatus>,
) -> usize {
    let mut usage: BTreeMap<&str, NodeUsage> = BTreeMap::new();
    let mut reserving = 0;
    for (k, t) in tasks {
        let done = statuses.get(k).is_some_and(|s| s.state.is_terminal());
        if t.orphaned || done {
            continue;
        }
        reserving += 1;
        usage.entry(&k.0).or_default().add_template(&t.template);
    }
    for (node, u) in &usage {
        assert!(u.memory <= NODE_MEMORY, "{node} over-committed: {u:?}");
        assert!(
            u.ports.values().all(|&n| n <= 1),
            "{node}: a host port twice: {u:?}"
        );
    }
    reserving
}

/// Follows the store and checks every revision it reaches; returns the most tasks holding
/// resources seen at once.
async fn watch_nodes(store: Arc<dyn Store>, prefix: String, stop: CancellationToken) -> usize {
    let keys = shoal_core::Keys::new(prefix.trim_end_matches('/'));
    let mut batches = reflector::batches(store, &prefix, |_, v| v);
    let mut tasks: BTreeMap<(String, String), Task> = BTreeMap::new();
    let mut statuses: BTreeMap<(String, String), TaskStatus> = BTreeMap::new();
    let mut most = 0;
    loop {
        let batch = tokio::select! {
            b = batches.next() => b.expect("the watch goes on"),
            () = stop.cancelled() => return most,
        };
        for event in batch.events {
            let changes = match event {
                Event::Init(items) => {
                    tasks.clear();
                    statuses.clear();
                    items.into_iter().map(|(k, v, _)| (k, Some(v))).collect()
                }
                Event::Apply(k, v, _) => vec![(k, Some(v))],
                Event::Delete(k, _) => vec![(k, None)],
            };
            for (key, value) in changes {
                match keys.parse(&key) {
                    Some(Key::Task { node, task }) => {
                        match value {
                            Some(v) => {
                                tasks.insert((node, task), model::decode("task", &v).unwrap())
                            }
                            None => tasks.remove(&(node, task)),
                        };
                    }
                    Some(Key::TaskStatus { node, task }) => {
                        match value {
                            Some(v) => {
                                statuses.insert((node, task), model::decode("status", &v).unwrap())
                            }
                            None => statuses.remove(&(node, task)),
                        };
                    }
                    _ => {}
                }
            }
        }
        most = most.max(check_nodes(&tasks, &statuses));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_placements_with_failing_commits_never_overcommit_and_the_cache_matches_the_store()
 {
    let flaky = Arc::new(FlakyCommits {
        on: AtomicBool::new(true),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(16)),
        refused: AtomicU64::new(0),
        lost: AtomicU64::new(0),
    });
    let faults = flaky.clone();
    let env = Env::embedded()
        .await
        .wrapped(|inner| Arc::new(Intercepted::new(inner, SharedIntercept(faults))));
    let mut agents = Vec::new();
    for i in 0..NODES {
        agents.push(Agent::start(&env, &format!("n{i}"), &[]).await);
    }
    let prefix = format!("{}/", env.keys.prefix());
    let stop_watch = CancellationToken::new();
    let checker = tokio::spawn(watch_nodes(env.store.clone(), prefix, stop_watch.clone()));

    let config = ControllerConfig {
        identity: "pipeline".into(),
        workers: 8,
        node_grace: env.node_grace,
        resync_interval: Duration::from_secs(2),
        backoff: shoal_store::Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        ..ControllerConfig::default()
    };
    let c = Controller::new(env.store.clone(), env.keys.clone(), config);
    let follower = c.follow();
    let view = follower.view.clone();
    let stop = CancellationToken::new();
    let leadership = campaign(
        &env.store,
        &env.keys,
        "pipeline",
        Duration::from_secs(5),
        &stop,
    )
    .await
    .unwrap()
    .expect("elected");
    let term_stop = stop.clone();
    let term =
        tokio::spawn(async move { c.term(&leadership, &follower, &term_stop).await.is_ok() });

    // 8 services of 3 × 3 GiB (two fit on a node: 8 in all) and 8 of 2 replicas on host
    // port 9000 (one per node: 4 in all), all at once.
    let started = std::time::Instant::now();
    for i in 0..8 {
        env.put_service(
            &format!("mem{i}"),
            "  replicas: 3\n  resources: {reservations: {memory: 3Gi}}\n",
        )
        .await;
        env.put_service(
            &format!("port{i}"),
            "  replicas: 2\n  ports: [{target: 80, published: 9000, mode: host}]\n",
        )
        .await;
    }
    let want = 2 * NODES + NODES;
    wait_for("every node full", || async {
        let running: usize = env
            .tasks()
            .await
            .iter()
            .filter(|(t, s)| {
                !t.orphaned && s.as_ref().is_some_and(|s| s.state.as_str() == "running")
            })
            .count();
        (running == want).then_some(())
    })
    .await;
    println!(
        "{want} tasks placed and running in {:?}; commits refused: {}, answers lost: {}",
        started.elapsed(),
        flaky.refused.load(Ordering::SeqCst),
        flaky.lost.load(Ordering::SeqCst)
    );
    assert!(flaky.refused.load(Ordering::SeqCst) + flaky.lost.load(Ordering::SeqCst) > 0);

    // Faults off: the cache comes to equal a fresh list of the store, nothing left staged.
    flaky.on.store(false, Ordering::SeqCst);
    let mut differs = String::new();
    for _ in 0..600 {
        let list = env
            .store
            .list(&format!("{}/", env.keys.prefix()))
            .await
            .unwrap();
        let items: Vec<_> = list
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect();
        let mut fresh = Cache::new(
            env.keys.clone(),
            crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT,
        );
        fresh.relist(&items);
        let (staged, live) = {
            let c = view.cache();
            (c.staged_len(), c.fingerprint())
        };
        let listed = fresh.fingerprint();
        if staged == 0 && live == listed {
            differs.clear();
            break;
        }
        differs = format!("{staged} staged; cache:\n{live}\nstore:\n{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        differs.is_empty(),
        "the cache never came to equal the store: {differs}"
    );
    stop_watch.cancel();
    let most = checker
        .await
        .expect("no node over-committed at any revision");
    assert_eq!(most, want, "never more tasks holding resources than fit");
    stop.cancel();
    assert!(term.await.unwrap());
    drop(agents);
}

/// An intercept shared with the test, which turns it off and reads its counts.
struct SharedIntercept(Arc<FlakyCommits>);

#[async_trait::async_trait]
impl Intercept for SharedIntercept {
    async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnResult, StoreError> {
        self.0.txn(inner, txn).await
    }
}
