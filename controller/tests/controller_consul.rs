//! The controller's end-to-end scenarios (tests/cases) against the Consul store, on the Consul
//! fake with Consul's own limits (64 entries per transaction, 10 s minimum session TTL) and
//! its timers at a tenth of real time.

mod cases;
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Agent, Env, wait_for};
use shoal_store::Store;
use shoal_store::consul::{ConsulClient, ConsulConfig, ConsulStore, ConsulStoreOptions};
use shoal_tests::consul_fake::ConsulFake;

async fn consul_env() -> (ConsulFake, Env) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("shoal_controller=debug,shoal_agent=info")
        .try_init();
    let fake = ConsulFake::start_scaled(TIME_SCALE).await;
    let mut env = Env::over(store_on(&fake.http_url()));
    // `--node-grace` on Consul: one session TTL (10 s, a tenth of it on this fake's clock).
    env.node_grace = GRACE;
    env.node_record_grace = GRACE;
    (fake, env)
}

/// A Consul store talking to the Consul agent at `url`.
fn store_on(url: &str) -> Arc<dyn Store> {
    let client = ConsulClient::new(ConsulConfig::new(url.to_string())).expect("client");
    Arc::new(ConsulStore::new(client, ConsulStoreOptions::default()))
}

/// One Consul session TTL on the fake's clock.
const GRACE: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consul_agent_restart_restarts_no_task() {
    let (mut fake, env) = consul_env().await;
    let _agents = [
        Agent::start(&env, "n1", &[]).await,
        Agent::start(&env, "n2", &[]).await,
        Agent::start(&env, "n3", &[]).await,
    ];
    // The controller runs on another host, through that host's Consul agent.
    let mut controller_env = Env::over(store_on(&fake.add_agent("controller-host").await));
    controller_env.node_grace = GRACE;
    controller_env.node_record_grace = GRACE;
    let c = controller_env.controller("c1", TTL);
    env.put_service("web", "  replicas: 3\n").await;
    env.wait_running("web", 3).await;
    let before: Vec<String> = env.tasks().await.into_iter().map(|(t, _)| t.id).collect();
    // Past the grace a new leader gives: only the grace after a record goes applies now.
    tokio::time::sleep(GRACE * 2).await;

    // The agents' Consul agent restarts and leaves on the way: every session of its node
    // goes, and with them the node records. The controller keeps leading.
    let left = std::time::Instant::now();
    fake.restart_agent().await;
    let keys = env.keys.clone();
    wait_for("the node records are back", || async {
        let nodes = env.store.list(&keys.nodes_prefix()).await.ok()?;
        (nodes.kvs.len() == 3).then_some(())
    })
    .await;
    println!(
        "node records back {:?} after the Consul agent left",
        left.elapsed()
    );
    assert!(c.is_leader(), "the controller's session is on another node");
    // Past the grace, and past a resync: nothing was orphaned or replaced.
    tokio::time::sleep(GRACE * 3 + Duration::from_secs(2)).await;
    let after = env.tasks().await;
    assert!(
        after.iter().all(|(t, _)| !t.orphaned),
        "no task orphaned: {after:?}"
    );
    let ids: Vec<String> = after.into_iter().map(|(t, _)| t.id).collect();
    assert_eq!(ids, before, "the same three tasks, none restarted");
    assert_eq!(env.running("web").await.values().sum::<usize>(), 3);
    c.stop().await;
}

cases::every_scenario!(consul_env);

/// The fake's clock: a tenth of Consul's.
const TIME_SCALE: f64 = 0.1;

/// Measures node loss on Consul (printed in Consul time: the fake's elapsed time ÷ its time
/// scale). Consul ends a session about 2 × TTL (10 s minimum) after its last renewal, and the
/// controller then waits the node grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_loss_on_consul_is_measured() {
    let (_fake, env) = consul_env().await;
    let mut agents = vec![
        Agent::start(&env, "n1", &[]).await,
        Agent::start(&env, "n2", &[]).await,
        Agent::start(&env, "n3", &[]).await,
    ];
    let c = env.controller("c1", TTL);
    env.put_service("web", "  replicas: 3\n").await;
    env.wait_running("web", 3).await;
    tokio::time::sleep(GRACE * 2).await;
    let keys = env.keys.clone();
    let killed = std::time::Instant::now();
    agents.pop().expect("n3").kill();
    wait_for("n3's record gone", || async {
        env.store
            .get(&keys.node("n3"))
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let record_gone = killed.elapsed();
    wait_for("n3's task orphaned", || async {
        env.tasks()
            .await
            .iter()
            .any(|(t, _)| t.node_id == "n3" && t.orphaned)
            .then_some(())
    })
    .await;
    let orphaned = killed.elapsed();
    wait_for("replaced on the other nodes", || async {
        let r = env.running("web").await;
        (!r.contains_key("n3") && r.values().sum::<usize>() == 3).then_some(())
    })
    .await;
    let replaced = killed.elapsed();
    let consul = |d: Duration| d.as_secs_f64() / TIME_SCALE;
    println!(
        "node loss on Consul (fake clock x{TIME_SCALE}, session TTL 10 s, node grace 10 s): \
         record gone {:.1} s, tasks orphaned {:.1} s, replacements running {:.1} s (Consul time)",
        consul(record_gone),
        consul(orphaned),
        consul(replaced)
    );
    assert!(orphaned >= record_gone, "the grace is waited");
    c.stop().await;
}
