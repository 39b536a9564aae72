//! The controller against a real etcd: every end-to-end scenario of tests/cases, plus placement,
//! node loss and leader failover.

mod cases;
mod common;

use std::time::Duration;

use common::{Agent, Env, wait_for};
use shoal_tests::cluster::{per_slot_image, sim_agent, spec, up_on, wait_rollout};

const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_spread_and_survive_node_loss_on_etcd() {
    let (_etcd, env) = Env::etcd().await;
    let mut agents = vec![
        Agent::start(&env, "n1", &[]).await,
        Agent::start(&env, "n2", &[]).await,
        Agent::start(&env, "n3", &[]).await,
    ];
    let c = env.controller("c1", TTL);
    env.put_service("web", "  replicas: 3\n").await;
    let per_node = env.wait_running("web", 3).await;
    assert_eq!(per_node.len(), 3, "one per node: {per_node:?}");

    agents.pop().unwrap().kill();
    wait_for("tasks replaced away from the lost node", || async {
        let r = env.running("web").await;
        (!r.contains_key("n3") && r.values().sum::<usize>() == 3).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_takes_over_on_etcd() {
    let (_etcd, env) = Env::etcd().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let c1 = env.controller("c1", TTL);
    c1.wait_leading().await;
    let c2 = env.controller("c2", TTL);
    env.put_service("web", "  replicas: 1\n").await;
    env.wait_running("web", 1).await;
    assert!(!c2.is_leader());
    c1.kill();
    c2.wait_leading().await;
    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_pauses_then_completes_on_etcd() {
    use shoal_core::model::RolloutState;
    let (_etcd, env) = Env::etcd().await;
    let _agent = sim_agent(&env, 3).await;
    let c = env.controller("c1", TTL);
    let extra = "  update: {parallelism: 1, delay: 1s, monitor: 1s}\n";
    env.put_spec("web", &spec(3, "nginx:1", extra)).await;
    env.wait_running("web", 3).await;
    env.put_spec("web", &spec(3, "missing/nginx:2", extra))
        .await;
    let msg = wait_rollout(&env, "web", RolloutState::Paused).await;
    assert!(msg.is_some_and(|m| m.contains("No such image")));
    env.put_spec("web", &spec(3, "nginx:3", extra)).await;
    wait_rollout(&env, "web", RolloutState::Completed).await;
    let tasks = env.tasks().await;
    assert_eq!(up_on(&tasks, "nginx:3"), 3);
    for ((slot, image), n) in per_slot_image(&tasks) {
        assert!(
            image != "nginx:3" || n == 1,
            "slot {slot} updated {n} times"
        );
    }
    c.stop().await;
}

cases::every_scenario!(Env::etcd);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_tasks_are_written_in_several_transactions_and_one_too_large_is_invalid() {
    let (_etcd, env) = Env::etcd().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let _b = Agent::start(&env, "n2", &[]).await;
    let c = env.controller("c1", TTL);
    // Eight tasks of ~300 KiB each: 2.4 MiB, more than etcd takes in one request (1.5 MiB).
    let big = "x".repeat(300 * 1024);
    env.put_service("big", &format!("  replicas: 8\n  env: {{BIG: {big}}}\n"))
        .await;
    env.wait_running("big", 8).await;
    // One task alone over the limit (the manifest itself still fits in a request).
    let huge = "y".repeat(1480 * 1024);
    env.put_service("huge", &format!("  replicas: 1\n  env: {{HUGE: {huge}}}\n"))
        .await;
    let err = wait_for("the oversized service is invalid", || async {
        env.status("huge").await.and_then(|s| s.error)
    })
    .await;
    assert!(
        err.contains("KiB") && err.contains("smaller"),
        "the reason says what is too large: {err}"
    );
    assert!(
        env.tasks()
            .await
            .iter()
            .all(|(t, _)| t.service.name != "huge"),
        "no task written"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_compacts_etcd_keeping_a_window_of_revisions() {
    use futures::StreamExt;
    let (_etcd, env) = Env::etcd().await;
    let _a = Agent::start(&env, "n1", &[]).await;
    let c = env.controller_with("c1", TTL, |cfg| {
        cfg.history_revisions = 50;
        cfg.compact_interval = Duration::from_millis(500);
    });
    env.put_service("web", "  replicas: 1\n").await;
    env.wait_running("web", 1).await;
    // Churn: 300 writes.
    let mut last = 0;
    for i in 0..300 {
        last = env
            .store
            .put("/shoal/churn", format!("{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    wait_for("history older than the window compacted", || async {
        let mut w = env.store.watch("/shoal/", 2).await.ok()?;
        match w.next().await {
            Some(Err(shoal_store::StoreError::Compacted { .. })) => Some(()),
            _ => None,
        }
    })
    .await;
    // The window itself is kept: a watch from within it still works.
    let mut w = env.store.watch("/shoal/churn", last - 10).await.unwrap();
    assert!(
        matches!(w.next().await, Some(Ok(_))),
        "the last revisions are kept"
    );
    c.stop().await;
}
