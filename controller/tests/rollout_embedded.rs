//! Rolling updates end to end: an embedded store, the controller in-process and the real
//! agent with its sim runtime (`missing/` images are rejected, `fail/` fail to start,
//! `unhealthy/` never pass their healthcheck).

use std::time::Duration;

use shoal_agent::AgentHandle;
use shoal_core::model::RolloutState;
use shoal_tests::api::Served;
use shoal_tests::cluster::{
    Env, RunningController, per_slot_image, sim_agent, spec, up_on, wait_rollout, watch_min_up,
};
use shoal_tests::wait::wait_for;

const TTL: Duration = Duration::from_secs(2);

/// An embedded store, the sim agent hosting `nodes` nodes and controller `c1`, with `web`
/// running `replicas` tasks of `nginx:1` (`extra` added to its spec).
async fn web_on_nginx_1(
    nodes: usize,
    replicas: u64,
    extra: &str,
) -> (Env, AgentHandle, RunningController) {
    let env = Env::embedded().await;
    let agent = sim_agent(&env, nodes).await;
    let c = env.controller("c1", TTL);
    env.put_spec("web", &spec(replicas, "nginx:1", extra)).await;
    env.wait_running("web", replicas as usize).await;
    (env, agent, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_first_replaces_one_slot_at_a_time_with_the_delay() {
    let extra = "  update: {parallelism: 1, delay: 1s, monitor: 1s}\n";
    let (env, _agent, c) = web_on_nginx_1(3, 3, extra).await;
    let (min_up, watcher) = watch_min_up(&env);
    env.put_spec("web", &spec(3, "nginx:2", extra)).await;
    wait_rollout(&env, "web", RolloutState::Completed).await;
    watcher.abort();
    assert!(
        *min_up.lock().unwrap() >= 2,
        "more than one slot was down at once"
    );
    let tasks = env.tasks().await;
    assert_eq!(up_on(&tasks, "nginx:2"), 3);
    // One new task per slot, created at least `delay` after the previous one came up.
    let mut new: Vec<_> = tasks
        .iter()
        .filter(|(t, _)| t.template.image.as_deref() == Some("nginx:2"))
        .collect();
    assert_eq!(new.len(), 3, "no slot updated twice");
    new.sort_by_key(|(t, _)| t.created_at);
    for pair in new.windows(2) {
        let up = pair[0]
            .1
            .as_ref()
            .and_then(|s| s.started_at)
            .expect("started");
        assert!(
            pair[1].0.created_at >= up.plus(Duration::from_secs(1)),
            "the next slot started before the delay passed"
        );
    }
    let st = env.status("web").await.expect("status");
    assert_eq!(
        st.previous_spec.and_then(|s| s.image).as_deref(),
        Some("nginx:1")
    );
    assert_eq!(st.rollout_history.len(), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_first_never_drops_below_the_replicas() {
    let extra = "  update: {parallelism: 2, order: start-first, monitor: 1s}\n";
    let (env, _agent, c) = web_on_nginx_1(3, 3, extra).await;
    let (min_up, watcher) = watch_min_up(&env);
    env.put_spec("web", &spec(3, "nginx:2", extra)).await;
    wait_rollout(&env, "web", RolloutState::Completed).await;
    watcher.abort();
    assert_eq!(*min_up.lock().unwrap(), 3, "a slot went down");
    assert_eq!(up_on(&env.tasks().await, "nginx:2"), 3);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_image_pauses_with_the_reason() {
    let (env, _agent, c) = web_on_nginx_1(3, 3, "").await;
    env.put_spec("web", &spec(3, "missing/nginx:2", "")).await;
    let msg = wait_rollout(&env, "web", RolloutState::Paused).await;
    assert!(
        msg.as_deref().is_some_and(|m| m.contains("No such image")),
        "{msg:?}"
    );
    assert_eq!(
        up_on(&env.tasks().await, "nginx:1"),
        2,
        "only one slot touched"
    );
    // A new manifest resumes (here: a fixed image).
    env.put_spec("web", &spec(3, "nginx:3", "")).await;
    wait_rollout(&env, "web", RolloutState::Completed).await;
    assert_eq!(up_on(&env.tasks().await, "nginx:3"), 3);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_action_rollback_runs_the_old_template_again() {
    let extra = "  update: {failureAction: rollback, monitor: 1s}\n  rollback: {parallelism: 0, monitor: 1s}\n";
    let (env, _agent, c) = web_on_nginx_1(3, 3, extra).await;
    env.put_spec("web", &spec(3, "fail/nginx:2", extra)).await;
    wait_rollout(&env, "web", RolloutState::RolledBack).await;
    wait_for("three tasks on the old template", || async {
        (up_on(&env.tasks().await, "nginx:1") == 3).then_some(())
    })
    .await;
    let st = env.status("web").await.expect("status");
    let r = st.rollout.expect("rollout");
    assert_eq!(r.image.as_deref(), Some("fail/nginx:2"));
    assert!(r.message.is_some_and(|m| m.contains("failed")));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthcheck_that_never_passes_pauses_the_rollout() {
    let extra = "  healthcheck: {test: [CMD, 'true'], interval: 1s, timeout: 1s, retries: 1}\n  update: {monitor: 1s}\n";
    let (env, _agent, c) = web_on_nginx_1(2, 2, extra).await;
    env.put_spec("web", &spec(2, "unhealthy/nginx:2", extra))
        .await;
    let msg = wait_rollout(&env, "web", RolloutState::Paused).await;
    assert!(
        msg.as_deref().is_some_and(|m| m.contains("unhealthy")),
        "{msg:?}"
    );
    let st = env.status("web").await.expect("status");
    assert_eq!(st.updated, 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollout_undo_through_the_api_restores_the_previous_image() {
    let extra = "  update: {monitor: 1s}\n";
    let (env, _agent, c) = web_on_nginx_1(3, 3, extra).await;
    let api = Served::over(env.store.clone(), env.keys.clone()).await;
    let client = &api.client;
    env.put_spec("web", &spec(3, "nginx:2", extra)).await;
    wait_rollout(&env, "web", RolloutState::Completed).await;
    let res = client
        .rollback_service("default", "web", None)
        .await
        .expect("rollback");
    wait_for("the status observes the undo", || async {
        let st = env.status("web").await?;
        (st.observed_generation >= res.revision).then_some(())
    })
    .await;
    wait_rollout(&env, "web", RolloutState::Completed).await;
    wait_for("three tasks on the previous image", || async {
        (up_on(&env.tasks().await, "nginx:1") == 3).then_some(())
    })
    .await;
    let svc = client.get_service("default", "web").await.unwrap().unwrap();
    assert_eq!(svc.service.unwrap().spec.image.as_deref(), Some("nginx:1"));
    api.stop.cancel();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_continues_a_rollout_without_updating_a_slot_twice() {
    let extra = "  update: {parallelism: 1, delay: 2s, monitor: 1s}\n";
    let (env, _agent, c1) = web_on_nginx_1(4, 4, extra).await;
    env.put_spec("web", &spec(4, "nginx:2", extra)).await;
    wait_for("one slot updated", || async {
        (up_on(&env.tasks().await, "nginx:2") >= 1).then_some(())
    })
    .await;
    c1.kill();
    let c2 = env.controller("c2", TTL);
    wait_rollout(&env, "web", RolloutState::Completed).await;
    let tasks = env.tasks().await;
    assert_eq!(up_on(&tasks, "nginx:2"), 4);
    for ((slot, image), n) in per_slot_image(&tasks) {
        if image == "nginx:2" {
            assert_eq!(n, 1, "slot {slot} updated {n} times");
        }
    }
    let slots: std::collections::BTreeSet<_> = per_slot_image(&tasks)
        .into_keys()
        .filter(|(_, i)| i == "nginx:2")
        .map(|(s, _)| s)
        .collect();
    assert_eq!(slots.len(), 4, "every slot updated");
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_running_task_is_stopped_and_replaced_under_the_restart_policy() {
    let env = Env::embedded().await;
    let _agent = sim_agent(&env, 2).await;
    let c = env.controller("c1", TTL);
    let extra = "  restart: {condition: on-failure, delay: 1s}\n  healthcheck: {test: [CMD, \"true\"], interval: 1s, retries: 1}\n";
    env.put_spec("web", &spec(1, "unhealthy/nginx:1", extra))
        .await;
    // As in Swarm: the unhealthy task fails (its container stopped) and a new task takes its
    // slot, again and again under the restart policy.
    let tasks = wait_for("the unhealthy task is replaced", || async {
        let tasks = env.tasks().await;
        let failed = tasks
            .iter()
            .filter(|(_, s)| {
                s.as_ref().is_some_and(|s| {
                    s.state == shoal_core::model::TaskState::Failed
                        && s.message
                            .as_deref()
                            .is_some_and(|m| m.contains("unhealthy"))
                })
            })
            .count();
        (failed >= 1 && tasks.iter().any(|(t, _)| t.attempt >= 1)).then_some(tasks)
    })
    .await;
    assert!(
        tasks.iter().all(|(t, _)| t.slot == tasks[0].0.slot),
        "the replacement takes the same slot"
    );
    c.stop().await;
}
