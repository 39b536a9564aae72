//! Jobs end to end on a real etcd with the real agent on the sim runtime: a run reaches its
//! completions exactly once across a leader kill, never more than `parallelism` at once,
//! and an unchanged finished job starts no new run on re-apply or controller restart, also
//! after `ttlAfterFinished` removed its tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_core::job::{JobRun, RunState};
use shoal_core::model::{DesiredState, TaskState};
use shoal_tests::cluster::{Env, sim_agent};
use shoal_tests::wait::wait_for;

const TTL: Duration = Duration::from_secs(2);

fn job_manifest(body: &str) -> String {
    format!(
        "  mode: replicated-job\n  image: done/job:1s\n  restart: {{delay: 200ms}}\n  job:\n{body}"
    )
}

async fn runs(env: &Env, name: &str) -> Vec<JobRun> {
    env.status(name)
        .await
        .and_then(|s| s.job)
        .map(|j| j.runs)
        .unwrap_or_default()
}

async fn wait_run(env: &Env, name: &str, number: u64, state: RunState) -> JobRun {
    wait_for(&format!("run {number} of {name} is {state}"), || async {
        runs(env, name)
            .await
            .into_iter()
            .find(|r| r.number == number && r.state == state)
    })
    .await
}

/// Samples the most tasks of `name` seen running at once, in the background.
fn watch_most_running(env: &Env, name: &str) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let most = Arc::new(AtomicUsize::new(0));
    let m = most.clone();
    let env2 = Env::over(env.store.clone());
    let name = name.to_string();
    let h = tokio::spawn(async move {
        loop {
            let n = env2
                .tasks()
                .await
                .iter()
                .filter(|(t, s)| {
                    t.service.name == name
                        && s.as_ref().is_some_and(|s| s.state == TaskState::Running)
                })
                .count();
            m.fetch_max(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (most, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_completes_exactly_once_across_a_leader_kill_on_etcd() {
    let (_etcd, env) = Env::etcd().await;
    let _agent = sim_agent(&env, 3).await;
    let c1 = env.controller("c1", TTL);
    wait_for("c1 leads", || async { c1.is_leader().then_some(()) }).await;
    let c2 = env.controller("c2", TTL);
    let (most, watcher) = watch_most_running(&env, "batch");
    let started = std::time::Instant::now();
    env.put_spec(
        "batch",
        &job_manifest("    completions: 6\n    parallelism: 2\n"),
    )
    .await;
    wait_for("two completions", || async {
        runs(&env, "batch")
            .await
            .first()
            .filter(|r| r.succeeded >= 2)
            .map(|_| ())
    })
    .await;
    c1.kill();
    wait_for("c2 leads", || async { c2.is_leader().then_some(()) }).await;
    let run = wait_run(&env, "batch", 1, RunState::Complete).await;
    println!(
        "job of 6 x 1s tasks, parallelism 2, leader killed mid-run: complete in {:?}",
        started.elapsed()
    );
    watcher.abort();
    assert_eq!((run.succeeded, run.completions, run.failed), (6, 6, 0));
    let tasks = env.tasks().await;
    let complete = tasks
        .iter()
        .filter(|(t, s)| {
            t.run == Some(1) && s.as_ref().is_some_and(|s| s.state == TaskState::Complete)
        })
        .count();
    assert_eq!(complete, 6, "exactly 6 tasks completed: {tasks:#?}");
    let seen = most.load(Ordering::Relaxed);
    assert!(seen <= 2, "{seen} tasks ran at once with parallelism 2");
    assert!(
        tasks
            .iter()
            .all(|(t, s)| t.desired_state == DesiredState::Shutdown
                || s.as_ref().is_some_and(|s| s.state.is_terminal()))
    );
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_job_does_not_run_again_on_reapply_or_restart_after_its_ttl_on_etcd() {
    let (_etcd, env) = Env::etcd().await;
    let _agent = sim_agent(&env, 2).await;
    let c1 = env.controller("c1", TTL);
    let body = job_manifest("    completions: 2\n    parallelism: 2\n    ttlAfterFinished: 1s\n");
    env.put_spec("report", &body).await;
    wait_run(&env, "report", 1, RunState::Complete).await;
    wait_for("the run's tasks are removed after the ttl", || async {
        let left = env
            .tasks()
            .await
            .iter()
            .filter(|(t, _)| t.service.name == "report")
            .count();
        let cleaned = runs(&env, "report")
            .await
            .first()
            .is_some_and(|r| r.cleaned);
        (left == 0 && cleaned).then_some(())
    })
    .await;
    // Re-apply the same manifest (a new revision) and restart the controller.
    env.put_spec("report", &body).await;
    c1.stop().await;
    let c2 = env.controller("c2", TTL);
    wait_for("c2 leads", || async { c2.is_leader().then_some(()) }).await;
    let revision_seen = wait_for("the re-applied revision is observed", || async {
        let st = env.status("report").await?;
        (st.observed_generation > 0).then_some(st.observed_generation)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = runs(&env, "report").await;
    assert_eq!(
        after.len(),
        1,
        "no new run: {after:?} (revision {revision_seen})"
    );
    assert!(
        env.tasks()
            .await
            .iter()
            .all(|(t, _)| t.service.name != "report")
    );
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_job_every_second_with_forbid_never_overlaps_on_etcd() {
    let (_etcd, env) = Env::etcd().await;
    let _agent = sim_agent(&env, 1).await;
    let c = env.controller("c1", TTL);
    // Each run takes 2.5s, the schedule ticks every second: Forbid skips the ticks that find
    // a run active.
    let body = "  mode: replicated-job\n  image: done/job:2500ms\n  job:\n    schedule: \"@every 1s\"\n    concurrencyPolicy: Forbid\n    historyLimit: 10\n";
    env.put_spec("tick", body).await;
    let (most, watcher) = watch_most_running(&env, "tick");
    wait_run(&env, "tick", 3, RunState::Complete).await;
    watcher.abort();
    let all = runs(&env, "tick").await;
    for pair in all.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.finished_at.is_some_and(|f| f <= b.started_at),
            "run {} started before run {} finished: {all:#?}",
            b.number,
            a.number
        );
    }
    assert!(most.load(Ordering::Relaxed) <= 1);
    let skipped = env
        .status("tick")
        .await
        .unwrap()
        .events
        .iter()
        .filter(|e| e.reason == "RunSkipped")
        .count();
    assert!(skipped >= 1, "ticks during a run are skipped");
    c.stop().await;
}
