//! End-to-end controller scenarios with simulated agents, written once and run against every
//! store backend (`controller_embedded.rs`, `controller_etcd.rs`, `controller_consul.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Agent, Env, wait_for};
use shoal_core::model::{DesiredState, TaskState};
use shoal_tests::cluster::RunningController;

const TTL: Duration = Duration::from_secs(2);

async fn three_agents(env: &Env) -> Vec<Agent> {
    vec![
        Agent::start(env, "n1", &[("zone", "a")]).await,
        Agent::start(env, "n2", &[("zone", "b")]).await,
        Agent::start(env, "n3", &[("zone", "c")]).await,
    ]
}

/// Three agents (zones a, b, c), controller `c1`, and service `web` running `replicas` tasks.
async fn web_on_three_nodes(env: &Env, replicas: usize) -> (Vec<Agent>, RunningController) {
    let agents = three_agents(env).await;
    let c = env.controller("c1", TTL);
    env.put_service("web", &format!("  replicas: {replicas}\n"))
        .await;
    env.wait_running("web", replicas).await;
    (agents, c)
}

/// See the test of the same name.
pub async fn three_replicas_spread_one_per_node_then_scale(env: Env) {
    let _agents = three_agents(&env).await;
    let c = env.controller("c1", TTL);
    env.put_service("web", "  replicas: 3\n").await;
    let per_node = env.wait_running("web", 3).await;
    assert_eq!(
        per_node,
        BTreeMap::from([("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 1)])
    );
    let st = env.status("web").await.unwrap();
    assert_eq!((st.desired, st.running, st.updated), (3, 3, 3));
    // A converged service's status is not rewritten by later passes (resync runs every 2s).
    let key = env.keys.service_status(&Env::sref("web"));
    let rev = env.store.get(&key).await.unwrap().unwrap().mod_revision;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        env.store.get(&key).await.unwrap().unwrap().mod_revision,
        rev,
        "status not rewritten"
    );

    env.put_service("web", "  replicas: 5\n").await;
    env.wait_running("web", 5).await;
    env.put_service("web", "  replicas: 2\n").await;
    env.wait_running("web", 2).await;
    // The stopped tasks are removed once their agents report them stopped.
    wait_for("only two task records left", || async {
        let n = env
            .tasks()
            .await
            .iter()
            .filter(|(t, _)| t.service.name == "web")
            .count();
        (n == 2).then_some(())
    })
    .await;
    let slots: Vec<String> = env
        .tasks()
        .await
        .iter()
        .map(|(t, _)| t.slot.to_string())
        .collect();
    assert_eq!(
        slots.iter().filter(|s| *s == "1" || *s == "2").count(),
        2,
        "slots 1 and 2 remain: {slots:?}"
    );
    c.stop().await;
}

/// See the test of the same name.
pub async fn failed_tasks_restart_after_the_delay_unless_condition_is_none(env: Env) {
    let _agents = three_agents(&env).await;
    let c = env.controller("c1", TTL);
    env.put_service(
        "web",
        "  replicas: 1\n  restart: {condition: any, delay: 1s}\n",
    )
    .await;
    env.put_service("once", "  replicas: 1\n  restart: {condition: none}\n")
        .await;
    env.wait_running("web", 1).await;
    env.wait_running("once", 1).await;

    let tasks = env.tasks().await;
    let (web, _) = tasks
        .iter()
        .find(|(t, _)| t.service.name == "web")
        .unwrap()
        .clone();
    let (once, _) = tasks
        .iter()
        .find(|(t, _)| t.service.name == "once")
        .unwrap()
        .clone();
    let failed_at = shoal_core::model::Timestamp::now();
    env.finish_task(&web, TaskState::Failed, 1).await;
    env.finish_task(&once, TaskState::Failed, 1).await;

    let replacement = wait_for("a replacement of the failed web task", || async {
        env.tasks()
            .await
            .into_iter()
            .find(|(t, _)| t.service.name == "web" && t.id != web.id)
            .map(|(t, _)| t)
    })
    .await;
    assert_eq!(replacement.attempt, 1);
    assert_eq!(replacement.slot, web.slot);
    let delay = replacement.created_at.since(failed_at);
    assert!(
        delay >= Duration::from_millis(900),
        "replaced after the 1s restart delay, not before ({delay:?})"
    );
    env.wait_running("web", 1).await;

    // condition: none — the failed task stays, nothing replaces it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let once_tasks: Vec<_> = env
        .tasks()
        .await
        .into_iter()
        .filter(|(t, _)| t.service.name == "once")
        .collect();
    assert_eq!(once_tasks.len(), 1, "no replacement for condition none");
    assert_eq!(
        once_tasks[0].1.as_ref().map(|s| s.state),
        Some(TaskState::Failed)
    );
    assert_eq!(env.status("once").await.unwrap().running, 0);
    c.stop().await;
}

/// See the test of the same name.
pub async fn lost_node_tasks_are_orphaned_replaced_and_stopped_when_it_returns(env: Env) {
    let (mut agents, c) = web_on_three_nodes(&env, 3).await;

    let n3 = agents.pop().unwrap();
    let lost: Vec<String> = env
        .tasks()
        .await
        .into_iter()
        .filter(|(t, _)| t.node_id == "n3")
        .map(|(t, _)| t.id)
        .collect();
    assert_eq!(lost.len(), 1);
    n3.kill();
    wait_for("the task on n3 orphaned", || async {
        env.tasks()
            .await
            .into_iter()
            .find(|(t, _)| {
                t.id == lost[0] && t.orphaned && t.desired_state == DesiredState::Shutdown
            })
            .map(|_| ())
    })
    .await;
    let per_node = env.wait_running("web", 3).await;
    assert!(
        !per_node.contains_key("n3"),
        "replaced on the other nodes: {per_node:?}"
    );

    // The node comes back: its stale task is told to shut down, and stays as its slot's
    // history (stopped).
    let _n3 = Agent::start(&env, "n3", &[("zone", "c")]).await;
    wait_for(
        "the stale task stopped by its agent, kept as history",
        || async {
            env.tasks()
                .await
                .iter()
                .any(|(t, s)| {
                    t.id == lost[0]
                        && t.desired_state == DesiredState::Shutdown
                        && s.as_ref().is_some_and(|s| s.state.is_terminal())
                })
                .then_some(())
        },
    )
    .await;
    let per_node = env.wait_running("web", 3).await;
    assert!(!per_node.contains_key("n3"));
    c.stop().await;
}

/// See the test of the same name.
pub async fn drain_moves_tasks_off_the_node(env: Env) {
    let (_agents, c) = web_on_three_nodes(&env, 3).await;
    env.set_availability("n2", "drain").await;
    wait_for("no task left on the drained node", || async {
        let r = env.running("web").await;
        (!r.contains_key("n2") && r.values().sum::<usize>() == 3).then_some(())
    })
    .await;
    c.stop().await;
}

/// See the test of the same name.
pub async fn unschedulable_service_explains_why(env: Env) {
    let _agents = three_agents(&env).await;
    let c = env.controller("c1", TTL);
    env.put_service(
        "db",
        "  placement:\n    constraints: [\"node.labels.storage == ssd\"]\n",
    )
    .await;
    let msg = wait_for("status.unschedulable", || async {
        env.status("db").await.and_then(|s| s.unschedulable)
    })
    .await;
    assert_eq!(
        msg,
        "0/3 nodes available: 3 not matching node.labels.storage==ssd"
    );
    let st = env.status("db").await.unwrap();
    assert!(
        st.events
            .iter()
            .any(|e| e.reason == "Unschedulable" && e.message == msg)
    );

    // A node that matches appears: the service is placed there.
    let _ssd = Agent::start(&env, "n4", &[("storage", "ssd")]).await;
    let per_node = env.wait_running("db", 1).await;
    assert_eq!(per_node, BTreeMap::from([("n4".into(), 1)]));
    assert_eq!(env.status("db").await.unwrap().unschedulable, None);
    c.stop().await;
}

/// See the test of the same name.
pub async fn invalid_manifest_sets_status_error_and_leaves_tasks_alone(env: Env) {
    let (_agents, c) = web_on_three_nodes(&env, 2).await;
    let before: Vec<String> = env.tasks().await.into_iter().map(|(t, _)| t.id).collect();

    env.put_manifest("web", "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n  replicaz: 5\n").await;
    let err = wait_for("status.error", || async {
        env.status("web").await.and_then(|s| s.error)
    })
    .await;
    assert!(err.contains(":7:"), "error carries the line: {err}");
    assert!(err.contains("replicaz"), "error names the field: {err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<String> = env.tasks().await.into_iter().map(|(t, _)| t.id).collect();
    assert_eq!(before, after, "no task changed");
    assert_eq!(env.running("web").await.values().sum::<usize>(), 2);

    // Fixing the manifest clears the error.
    env.put_service("web", "  replicas: 3\n").await;
    env.wait_running("web", 3).await;
    assert_eq!(env.status("web").await.unwrap().error, None);
    c.stop().await;
}

/// See the test of the same name.
pub async fn deleted_service_loses_its_tasks_and_status(env: Env) {
    let (_agents, c) = web_on_three_nodes(&env, 2).await;
    env.delete_service("web").await;
    wait_for("tasks and status gone", || async {
        (env.tasks().await.is_empty() && env.status("web").await.is_none()).then_some(())
    })
    .await;
    c.stop().await;
}

/// See the test of the same name.
pub async fn global_service_runs_on_every_eligible_node(env: Env) {
    let _agents = three_agents(&env).await;
    let c = env.controller("c1", TTL);
    env.put_service(
        "logs",
        "  mode: global\n  placement:\n    constraints: [\"node.labels.zone != c\"]\n",
    )
    .await;
    let per_node = env.wait_running("logs", 2).await;
    assert_eq!(
        per_node,
        BTreeMap::from([("n1".into(), 1), ("n2".into(), 1)])
    );
    let _n4 = Agent::start(&env, "n4", &[("zone", "d")]).await;
    let per_node = env.wait_running("logs", 3).await;
    assert_eq!(per_node.get("n4"), Some(&1), "a new node gets one");
    env.set_availability("n1", "drain").await;
    let per_node = env.wait_running("logs", 2).await;
    assert!(
        !per_node.contains_key("n1"),
        "a drained node loses its task"
    );
    c.stop().await;
}

/// See the test of the same name.
pub async fn template_change_replaces_tasks_and_keeps_the_previous_spec(env: Env) {
    let _agents = three_agents(&env).await;
    let c = env.controller("c1", TTL);
    env.put_service("web", "  replicas: 3\n  env: {VERSION: \"1\"}\n")
        .await;
    env.wait_running("web", 3).await;
    env.put_service("web", "  replicas: 3\n  env: {VERSION: \"2\"}\n")
        .await;
    wait_for("every running task on the new template", || async {
        let tasks = env.tasks().await;
        let running_v2 = tasks
            .iter()
            .filter(|(t, s)| {
                t.desired_state == DesiredState::Running
                    && s.as_ref().is_some_and(|s| s.state == TaskState::Running)
                    && t.template.env.get("VERSION").map(String::as_str) == Some("2")
            })
            .count();
        let st = env.status("web").await?;
        // The rollout completes once the last new task's monitor window (5s) passed.
        let completed = st.rollout.as_ref().map(|r| r.state)
            == Some(shoal_core::model::RolloutState::Completed);
        (running_v2 == 3 && st.updated == 3 && completed).then_some(())
    })
    .await;
    let st = env.status("web").await.unwrap();
    let prev = st.previous_spec.expect("previous spec kept for rollback");
    assert_eq!(prev.env.get("VERSION").map(String::as_str), Some("1"));
    assert_eq!(
        st.rollout.map(|r| r.state),
        Some(shoal_core::model::RolloutState::Completed)
    );
    c.stop().await;
}

/// See the test of the same name.
pub async fn services_sharing_a_host_port_never_share_a_node(env: Env) {
    let _agents = three_agents(&env).await;
    let c = env.controller("c1", TTL);
    for name in ["a", "b", "c"] {
        env.put_service(
            name,
            "  ports: [{target: 80, published: 8080, mode: host}]\n",
        )
        .await;
    }
    for name in ["a", "b", "c"] {
        env.wait_running(name, 1).await;
    }
    let nodes: std::collections::BTreeSet<String> = env
        .tasks()
        .await
        .into_iter()
        .map(|(t, _)| t.node_id)
        .collect();
    assert_eq!(nodes.len(), 3, "one per node: {nodes:?}");
    env.put_service(
        "d",
        "  ports: [{target: 80, published: 8080, mode: host}]\n",
    )
    .await;
    let msg = wait_for("d unschedulable", || async {
        env.status("d").await.and_then(|s| s.unschedulable)
    })
    .await;
    assert_eq!(msg, "0/3 nodes available: 3 host port 8080/tcp in use");
    c.stop().await;
}

/// Swarm's classic constraint walkthrough: two nodes labelled storage=ssd and storage=disk; two
/// database replicas constrained to ssd land on the ssd node, two web replicas constrained to
/// disk land on the disk node.
pub async fn swarm_constraint_walkthrough(env: Env) {
    let _ssd = Agent::start(&env, "node-ssd", &[("storage", "ssd")]).await;
    let _disk = Agent::start(&env, "node-disk", &[("storage", "disk")]).await;
    let c = env.controller("c1", TTL);
    env.put_service(
        "db",
        "  replicas: 2\n  placement:\n    constraints: [\"node.labels.storage == ssd\"]\n",
    )
    .await;
    env.put_service(
        "web",
        "  replicas: 2\n  placement:\n    constraints: [\"node.labels.storage == disk\"]\n",
    )
    .await;
    assert_eq!(
        env.wait_running("db", 2).await,
        BTreeMap::from([("node-ssd".into(), 2)])
    );
    assert_eq!(
        env.wait_running("web", 2).await,
        BTreeMap::from([("node-disk".into(), 2)])
    );
    c.stop().await;
}

/// See the test of the same name.
pub async fn task_statuses_are_left_to_their_agent_which_deletes_them_when_it_returns(env: Env) {
    let (mut agents, c) = web_on_three_nodes(&env, 3).await;
    let on_n3: Vec<String> = env
        .tasks()
        .await
        .into_iter()
        .filter(|(t, _)| t.node_id == "n3")
        .map(|(t, _)| t.id)
        .collect();
    assert_eq!(on_n3.len(), 1);
    let status_key = env.keys.task_status("n3", &on_n3[0]);
    agents.pop().unwrap().kill();
    // The service goes while n3 is down: the controller deletes n3's assignment…
    env.delete_service("web").await;
    wait_for("every task record of web deleted", || async {
        env.tasks()
            .await
            .iter()
            .all(|(t, _)| t.service.name != "web")
            .then_some(())
    })
    .await;
    // …but not its status, whose writer (n3's agent) is only away.
    assert!(
        env.store.get(&status_key).await.unwrap().is_some(),
        "the controller deleted a status it does not write"
    );
    // n3 returns: its agent sees the assignment gone and deletes the status.
    let _n3 = Agent::start(&env, "n3", &[("zone", "c")]).await;
    wait_for("n3's agent deletes the orphaned status", || async {
        env.store
            .get(&status_key)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    c.stop().await;
}

/// See the test of the same name.
pub async fn a_node_down_past_node_gone_after_loses_its_tasks_statuses_and_settings(env: Env) {
    let mut agents = three_agents(&env).await;
    let c = env.controller_with("c1", TTL, |cfg| {
        cfg.node_gone_after = Duration::from_secs(4)
    });
    env.put_service("web", "  replicas: 3\n").await;
    env.wait_running("web", 3).await;
    env.set_availability("n3", "pause").await;
    let n3 = agents.pop().unwrap();
    n3.kill();
    let started = std::time::Instant::now();
    let n3_keys = || async {
        let mut n = 0;
        for p in [
            env.keys.node_tasks_prefix("n3"),
            env.keys.node_task_status_prefix("n3"),
            env.keys.node_config("n3"),
        ] {
            n += env.store.list(&p).await.unwrap().kvs.len();
        }
        n
    };
    assert!(n3_keys().await > 0);
    wait_for("n3's keys deleted once it is gone for good", || async {
        (n3_keys().await == 0).then_some(())
    })
    .await;
    println!(
        "n3 gone for good {:?} after its agent died (--node-gone-after 4s, lease 1s)",
        started.elapsed()
    );
    let per_node = env.wait_running("web", 3).await;
    assert!(!per_node.contains_key("n3"));
    c.stop().await;
}

/// See the test of the same name.
pub async fn scaling_by_a_hundred_replicas_at_once_commits_in_batches(env: Env) {
    let (_agents, c) = web_on_three_nodes(&env, 1).await;
    // 99 new tasks at once: more than one transaction of any backend (Consul takes 64
    // entries, the fence included).
    env.put_service("web", "  replicas: 100\n").await;
    let per_node = env.wait_running("web", 100).await;
    assert_eq!(per_node.len(), 3, "spread over the nodes: {per_node:?}");
    c.stop().await;
}

/// One `#[tokio::test]` for every scenario above, each on the cluster `$setup().await` gives
/// (what must outlive the test, such as a store process, and its [`Env`]), so the embedded,
/// etcd and Consul test files run one list.
macro_rules! every_scenario {
    ($setup:path) => {
        cases::scenario_tests!(
            $setup;
            three_replicas_spread_one_per_node_then_scale,
            failed_tasks_restart_after_the_delay_unless_condition_is_none,
            lost_node_tasks_are_orphaned_replaced_and_stopped_when_it_returns,
            drain_moves_tasks_off_the_node,
            unschedulable_service_explains_why,
            invalid_manifest_sets_status_error_and_leaves_tasks_alone,
            deleted_service_loses_its_tasks_and_status,
            global_service_runs_on_every_eligible_node,
            template_change_replaces_tasks_and_keeps_the_previous_spec,
            services_sharing_a_host_port_never_share_a_node,
            swarm_constraint_walkthrough,
            task_statuses_are_left_to_their_agent_which_deletes_them_when_it_returns,
            a_node_down_past_node_gone_after_loses_its_tasks_statuses_and_settings,
            scaling_by_a_hundred_replicas_at_once_commits_in_batches,
        );
    };
}

/// One `#[tokio::test]` for each named scenario, on the cluster `$setup().await` gives.
macro_rules! scenario_tests {
    ($setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (_store, env) = $setup().await;
                cases::$name(env).await;
            }
        )*
    };
}
pub(crate) use {every_scenario, scenario_tests};
