//! S6: real containers. A small cluster of its own (etcd, `shoal controller`, `shoal api`
//! and one `shoal agent --runtime docker` node) runs `shoal apply --wait` of a service of
//! `replicas` containers of the local test image; in the same run, `docker run -d` starts
//! as many containers of the same image and command one after the other, as a script would.
//! Both times and their ratio are reported. Every container either started is removed at the
//! end, also when the scenario fails.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::Client;
use serde_json::json;
use shoal_agent::test_support::{ContainerGuard, TEST_IMAGE, ensure_test_image};
use shoal_tests::etcd::EtcdFixture;
use tokio::process::Command;

use super::{Bench, PREFIX, Reach, ScenarioError, wait_count};

/// The command every container runs.
const COMMAND: [&str; 2] = ["sleep", "3600"];

/// Label of the containers `docker run` starts here.
const DOCKER_RUN_LABEL: &str = "io.shoal.bench=s6";

/// Runs `program args…`, returning how long it took; an error with its output when it fails.
async fn timed(program: &str, args: &[String]) -> Result<Duration, ScenarioError> {
    let t0 = Instant::now();
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| ScenarioError::Setup(format!("running {program}: {e}")))?;
    let took = t0.elapsed();
    if !out.status.success() {
        return Err(ScenarioError::Setup(format!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(took)
}

fn manifest(replicas: usize) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: s6-real\n  namespace: bench\nspec:\n  image: {TEST_IMAGE}\n  command: [{}, \"{}\"]\n  replicas: {replicas}\n  stopGracePeriod: 1s\n",
        COMMAND[0], COMMAND[1]
    )
}

impl Bench<'_> {
    /// S6: `shoal apply --wait` of `replicas` real containers vs. `docker run -d` × `replicas`.
    pub async fn s6_docker(
        &mut self,
        replicas: usize,
        work_dir: &Path,
    ) -> Result<(), ScenarioError> {
        tokio::task::spawn_blocking(ensure_test_image)
            .await
            .map_err(|e| ScenarioError::Setup(e.to_string()))?
            .map_err(|e| ScenarioError::Setup(format!("the test image {TEST_IMAGE}: {e}")))?;
        let node = format!("bench-s6-{}", std::process::id());
        // Dropped last (declared first): the containers go once the agent is stopped.
        let _shoal_containers = ContainerGuard::new(format!("io.shoal.node={node}"));
        let _docker_containers = ContainerGuard::new(DOCKER_RUN_LABEL);
        let etcd = tokio::task::spawn_blocking(EtcdFixture::start)
            .await
            .map_err(|e| ScenarioError::Setup(e.to_string()))?
            .map_err(|e| ScenarioError::Setup(format!("starting etcd for S6: {e}")))?;
        let cluster = self.cluster.with_store(&etcd.url());
        let data = work_dir.join("s6-agent");
        std::fs::create_dir_all(&data)
            .map_err(|e| ScenarioError::Setup(format!("the agent's data dir: {e}")))?;
        let mut agent = cluster.docker_agent(&node, "127.0.0.1", &data)?;
        let mut client = Client::connect([etcd.endpoint()], None).await?;
        wait_count(
            &mut client,
            &[format!("{PREFIX}nodes/")],
            Reach::AtLeast(1),
            Duration::from_secs(60),
        )
        .await?;
        let _controller = cluster.controller("s6-controller")?;
        wait_count(
            &mut client,
            &[format!("{PREFIX}leader")],
            Reach::AtLeast(1),
            Duration::from_secs(60),
        )
        .await?;
        let (_api, url) = cluster.api("s6-api")?;
        // Neither side pays for the image's first use.
        let warm: Vec<String> = ["run", "--rm", TEST_IMAGE, "true"].map(String::from).into();
        timed("docker", &warm).await?;

        let file = work_dir.join("s6.yaml");
        std::fs::write(&file, manifest(replicas))
            .map_err(|e| ScenarioError::Setup(format!("writing the manifest: {e}")))?;
        let apply: Vec<String> = vec![
            "apply".into(),
            "--wait".into(),
            "--timeout".into(),
            "5m".into(),
            "--server".into(),
            url.clone(),
            "-f".into(),
            file.display().to_string(),
        ];
        let shoal = timed(&cluster.binary().display().to_string(), &apply).await?;
        let running = containers(&format!("io.shoal.node={node}")).await?;

        let mut docker = Duration::ZERO;
        for i in 0..replicas {
            let mut args: Vec<String> = vec![
                "run".into(),
                "-d".into(),
                "--label".into(),
                DOCKER_RUN_LABEL.into(),
                "--name".into(),
                format!("{node}-docker-{i}"),
                TEST_IMAGE.into(),
            ];
            args.extend(COMMAND.map(String::from));
            docker += timed("docker", &args).await?;
        }
        let running_docker = containers(DOCKER_RUN_LABEL).await?;
        agent.kill9();
        let extra = json!({
            "replicas": replicas, "image": TEST_IMAGE, "command": COMMAND,
            "shoalContainersRunning": running, "dockerContainersRunning": running_docker,
        });
        let s = shoal.as_secs_f64();
        let d = docker.as_secs_f64();
        self.report
            .figure("S6", "shoal_apply_wait_s", s, "s", extra.clone());
        self.report
            .figure("S6", "docker_run_d_sequential_s", d, "s", extra);
        self.report.figure(
            "S6",
            "shoal_vs_docker_run",
            s / d.max(f64::EPSILON),
            "ratio",
            json!({"goal": 1.2}),
        );
        if running != replicas || running_docker != replicas {
            return Err(ScenarioError::Timeout(format!(
                "S6: {running}/{replicas} containers of shoal and {running_docker}/{replicas} of docker run running"
            )));
        }
        Ok(())
    }
}

/// Running containers labelled `label` (`key=value`).
async fn containers(label: &str) -> Result<usize, ScenarioError> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label={label}")])
        .output()
        .await
        .map_err(|e| ScenarioError::Setup(format!("docker ps: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count())
}
