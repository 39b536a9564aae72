//! A job with real containers: an embedded store, the controller in-process and one agent on
//! the docker runtime run `job: {completions: 6, parallelism: 2}` of busybox tasks that sleep
//! a second and exit 0. Docker, sampled throughout, never shows more than 2 of the job's
//! containers running, and at the end shows exactly 6 exited with code 0.
//!
//! The test fails with a clear message when Docker is not reachable, and removes every
//! container of its node (a node id unique to the run) even when it fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_agent::runtime::LABEL_NODE;
use shoal_agent::test_support::{ContainerGuard, TEST_IMAGE, ensure_test_image};
use shoal_core::job::RunState;
use shoal_core::model::Timestamp;
use shoal_tests::cluster::{Env, docker_agent};
use shoal_tests::docker::{docker, node_containers};
use shoal_tests::wait::wait_for_within;

const DEADLINE: Duration = Duration::from_secs(120);

fn exit_code(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.ExitCode}}", id])
        .trim()
        .to_string()
}

#[test]
fn a_job_runs_six_containers_two_at_a_time() {
    ensure_test_image().unwrap_or_else(|e| {
        panic!("this test runs real containers and needs a reachable Docker: {e}")
    });
    let node = format!("job-dk-{}-{}", std::process::id(), Timestamp::now().0);
    let guard = ContainerGuard::new(format!("{LABEL_NODE}={node}"));
    guard.cleanup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(&node));
    guard.cleanup();
}

async fn run(node: &str) {
    let env = Env::embedded().await;
    let _agent = docker_agent(&env, node).await;
    let controller = env.controller("c1", Duration::from_secs(2));
    // The sampler stops on its own flag and returns its figures once joined.
    let stop = Arc::new(AtomicBool::new(false));
    let (halt, n) = (stop.clone(), node.to_string());
    let sampler = std::thread::spawn(move || {
        let (mut most, mut seen) = (0, 0);
        while !halt.load(Ordering::Relaxed) {
            let running = node_containers(&n, "{{.ID}}", &["--filter", "status=running"]).len();
            most = most.max(running);
            seen += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        (most, seen)
    });
    let started = Instant::now();
    let body = format!(
        "  mode: replicated-job\n  image: {TEST_IMAGE}\n  command: [sh, -c, \"sleep 1\"]\n  \
         job:\n    completions: 6\n    parallelism: 2\n"
    );
    env.put_spec("convert", &body).await;
    let run = wait_for_within("the job completes", DEADLINE, || async {
        let st = env.status("convert").await?;
        let run = st.job?.runs.pop()?;
        (run.state != RunState::Running).then_some(run)
    })
    .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (most, seen) = sampler.join().expect("the sampler ends");
    println!(
        "6 one-second containers, parallelism 2: {} in {took:?} (goal about 3 s plus start-up), \
         at most {most} running in {seen} docker ps samples",
        run.state
    );
    assert_eq!(
        (run.state, run.succeeded, run.failed),
        (RunState::Complete, 6, 0),
        "{run:?}"
    );
    assert!(
        seen > 10 && most >= 1,
        "docker was sampled ({seen} samples, at most {most})"
    );
    assert!(
        most <= 2,
        "Docker showed {most} of the job's containers running at once"
    );
    let exited = node_containers(node, "{{.ID}}", &["-a", "--filter", "status=exited"]);
    let codes: Vec<String> = exited.iter().map(|id| exit_code(id)).collect();
    assert_eq!(codes.len(), 6, "six exited containers: {codes:?}");
    assert!(
        codes.iter().all(|c| c == "0"),
        "every container exited 0: {codes:?}"
    );
    controller.stop().await;
}
