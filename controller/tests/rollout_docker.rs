//! The classic rolling-update walkthrough with real containers: an embedded store, the
//! controller in-process and one agent on the docker runtime, running a 3-replica busybox
//! httpd service built locally as `shoal-test/web:v1` and `shoal-test/web:v2` (no registry).
//!
//! 1. v1 runs on three tasks, each serving `v1` on its dynamic host port.
//! 2. The update to v2 goes one slot at a time (stop-first, parallelism 1) with the 2 s delay
//!    between slots, ends `completed` with three tasks serving `v2`, and no v1 container is
//!    left behind.
//! 3. An update to an image that does not exist pauses after one slot, naming the task and
//!    Docker's reason; the two other slots keep serving v2.
//! 4. With `failureAction: rollback`, the same bad update is rolled back: three tasks serve
//!    `v2` again.
//!
//! The test fails with a clear message when Docker is not reachable, and removes every
//! container of its node (a node id unique to the run) even when it fails.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_agent::runtime::{LABEL_NODE, LABEL_SERVICE};
use shoal_agent::test_support::{APPLETS, BUSYBOX, ContainerGuard, ensure_test_image};
use shoal_core::model::{
    DesiredState, RolloutState, RolloutStatus, Task, TaskState, TaskStatus, Timestamp,
};
use shoal_tests::cluster::{Env, docker_agent};
use shoal_tests::docker::node_containers;
use shoal_tests::wait::wait_for_within;

/// How long each step may take with real containers.
const DEADLINE: Duration = Duration::from_secs(90);
/// The update delay of the service (`update.delay`).
const DELAY: Duration = Duration::from_secs(2);
const CONTROLLER_TTL: Duration = Duration::from_secs(2);
const SERVICE: &str = "web";
const MISSING: &str = "shoal-test/web:does-not-exist";
/// Image label recording the page an image serves (so an image is rebuilt only when stale).
const PAGE_LABEL: &str = "io.shoal.test.page";

type Tasks = Vec<(Task, Option<TaskStatus>)>;

#[test]
fn rolling_update_pause_and_rollback_with_real_containers() {
    ensure_test_image().unwrap_or_else(|e| {
        panic!("this test runs real containers and needs a reachable Docker: {e}")
    });
    let node = format!("rollout-dk-{}-{}", std::process::id(), Timestamp::now().0);
    // Declared before the runtime so it drops after it: once the agent's tasks are gone, no
    // container can appear behind the cleanup.
    let _guard = NodeContainers::new(&node);
    let v1 = ensure_web_image("v1");
    let v2 = ensure_web_image("v2");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(walkthrough(&node, &v1, &v2));
}

async fn walkthrough(node: &str, v1: &str, v2: &str) {
    let env = Env::embedded().await;
    let agent = docker_agent(&env, node).await;
    let controller = env.controller("c1", CONTROLLER_TTL);

    // 1. Three tasks on v1, each serving its page.
    env.put_spec(SERVICE, &manifest(v1, "")).await;
    wait_up_on(&env, v1, 3).await;
    for port in host_ports(&env.tasks().await, v1) {
        wait_serves(port, "shoal web v1").await;
    }

    // 2. The update to v2, one slot at a time with the delay in between.
    let (sampler, samples) = sample_slots(&env);
    env.put_spec(SERVICE, &manifest(v2, "")).await;
    let r = wait_rollout(&env, v2, RolloutState::Completed).await;
    sampler.abort();
    let (min_up, seen) = *samples.lock().unwrap();
    assert!(seen > 0, "the rollout was never sampled");
    assert!(
        min_up >= 2,
        "stop-first with parallelism 1 took more than one slot down at once (as few as \
         {min_up} of 3 running in {seen} samples)"
    );
    assert_eq!(r.updated, 3, "{r:?}");
    let tasks = wait_up_on(&env, v2, 3).await;
    let mut new: Vec<_> = service_tasks(&tasks)
        .filter(|(t, _)| t.template.image.as_deref() == Some(v2))
        .collect();
    assert_eq!(new.len(), 3, "each slot was updated exactly once");
    new.sort_by_key(|(t, _)| t.created_at);
    for pair in new.windows(2) {
        let (prev, prev_status) = pair[0];
        let up = prev_status
            .as_ref()
            .and_then(|s| s.started_at)
            .expect("an updated task reports when it started");
        let next = &pair[1].0;
        eprintln!(
            "{} up at {up}, {} created at {}",
            prev.id, next.id, next.created_at
        );
        assert!(
            next.created_at >= up.plus(DELAY),
            "task {} was created at {} although {} only came up at {} (delay {DELAY:?})",
            next.id,
            next.created_at,
            prev.id,
            up
        );
    }
    for port in host_ports(&tasks, v2) {
        wait_serves(port, "shoal web v2").await;
    }
    wait_containers_only_on(v2, node).await;

    // 3. A missing image pauses the rollout after one slot.
    let before: BTreeSet<String> = running_ids(&env.tasks().await, v2);
    assert_eq!(before.len(), 3, "three v2 tasks before the bad update");
    env.put_spec(SERVICE, &manifest(MISSING, "")).await;
    let r = wait_rollout(&env, MISSING, RolloutState::Paused).await;
    let msg = r.message.clone().unwrap_or_default();
    eprintln!("paused: {msg}");
    let tasks = env.tasks().await;
    let rejected: Vec<&Task> = service_tasks(&tasks)
        .filter(|(t, s)| {
            t.template.image.as_deref() == Some(MISSING)
                && s.as_ref().map(|s| s.state) == Some(TaskState::Rejected)
        })
        .map(|(t, _)| t)
        .collect();
    assert!(
        rejected.iter().any(|t| msg.contains(&t.id)),
        "the pause message names the rejected task ({:?}): {msg:?}",
        rejected.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    assert!(
        [
            "No such image",
            "pull access denied",
            "does-not-exist",
            "registry"
        ]
        .iter()
        .any(|m| msg.contains(m)),
        "the pause message carries Docker's reason: {msg:?}"
    );
    let after = running_ids(&tasks, v2);
    assert_eq!(after.len(), 2, "only one slot was touched: {tasks:#?}");
    assert!(
        after.is_subset(&before),
        "the two other slots kept their v2 tasks"
    );
    for port in host_ports(&tasks, v2) {
        wait_serves(port, "shoal web v2").await;
    }

    // 4. Back to v2 with `failureAction: rollback`, then the same bad update is rolled back.
    let rollback = "    failureAction: rollback\n";
    env.put_spec(SERVICE, &manifest(v2, rollback)).await;
    wait_rollout(&env, v2, RolloutState::Completed).await;
    wait_up_on(&env, v2, 3).await;
    env.put_spec(SERVICE, &manifest(MISSING, rollback)).await;
    let r = wait_rollout(&env, MISSING, RolloutState::RolledBack).await;
    assert_eq!(r.previous_image.as_deref(), Some(v2), "{r:?}");
    let tasks = wait_up_on(&env, v2, 3).await;
    for port in host_ports(&tasks, v2) {
        wait_serves(port, "shoal web v2").await;
    }
    wait_containers_only_on(v2, node).await;

    controller.stop().await;
    agent.stop().await.expect("the agent stops");
}

/// Removes every container of the test's node, now and when dropped (twice, so that a
/// container whose creation was in flight when the agent was torn down goes too).
struct NodeContainers(ContainerGuard);

impl NodeContainers {
    fn new(node: &str) -> Self {
        let g = ContainerGuard::new(format!("{LABEL_NODE}={node}"));
        g.cleanup();
        NodeContainers(g)
    }
}

impl Drop for NodeContainers {
    fn drop(&mut self) {
        self.0.cleanup();
        std::thread::sleep(Duration::from_millis(500));
        self.0.cleanup();
    }
}

/// The service manifest body on `image`; `update_extra` adds lines to `update`.
fn manifest(image: &str, update_extra: &str) -> String {
    format!(
        "  replicas: 3\n  image: {image}\n  command: [httpd, -f, -p, \"8080\", -h, /www]\n  \
         ports:\n    - target: 8080\n  stopGracePeriod: 1s\n  update:\n    parallelism: 1\n    \
         delay: 2s\n{update_extra}"
    )
}

/// Builds `shoal-test/web:<version>` serving `shoal web <version>` from `/www`, with
/// `docker import` of a busybox rootfs; kept when it exists with the right page label.
fn ensure_web_image(version: &str) -> String {
    let image = format!("shoal-test/web:{version}");
    let page = format!("shoal web {version}");
    let have = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            &format!("{{{{index .Config.Labels \"{PAGE_LABEL}\"}}}}"),
            &image,
        ])
        .output()
        .expect("the docker CLI runs");
    if have.status.success() && String::from_utf8_lossy(&have.stdout).trim() == page {
        return image;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("rootfs");
    for d in ["bin", "etc", "tmp", "www"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet link");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("www/index.html"), format!("{page}\n")).expect("index.html");
    let tar = dir.path().join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar runs")
        .success();
    assert!(ok, "tar of the {image} rootfs failed");
    let out = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin"])
        .args([
            "--change",
            "CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]",
        ])
        .args(["--change", &format!("LABEL {PAGE_LABEL}=\"{page}\"")])
        .arg(&tar)
        .arg(&image)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker import of {image} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

fn service_tasks(tasks: &Tasks) -> impl Iterator<Item = &(Task, Option<TaskStatus>)> {
    tasks.iter().filter(|(t, _)| t.service.name == SERVICE)
}

fn is_running(s: &Option<TaskStatus>) -> bool {
    s.as_ref().map(|s| s.state) == Some(TaskState::Running)
}

/// Ids of the wanted, running tasks on `image`.
fn running_ids(tasks: &Tasks, image: &str) -> BTreeSet<String> {
    service_tasks(tasks)
        .filter(|(t, s)| {
            t.desired_state == DesiredState::Running
                && is_running(s)
                && t.template.image.as_deref() == Some(image)
        })
        .map(|(t, _)| t.id.clone())
        .collect()
}

/// Host ports of the wanted, running tasks on `image`.
fn host_ports(tasks: &Tasks, image: &str) -> Vec<u16> {
    let ids = running_ids(tasks, image);
    service_tasks(tasks)
        .filter(|(t, _)| ids.contains(&t.id))
        .map(|(t, s)| {
            let s = s.as_ref().expect("a running task has a status");
            assert_eq!(s.host_ports.len(), 1, "task {} reports its port", t.id);
            s.host_ports[0].published
        })
        .collect()
}

/// Waits until exactly `n` wanted tasks run `image` and the status counts them.
async fn wait_up_on(env: &Env, image: &str, n: usize) -> Tasks {
    wait_for_within(
        &format!("{n} running tasks on {image}"),
        DEADLINE,
        || async {
            let tasks = env.tasks().await;
            let st = env.status(SERVICE).await?;
            (running_ids(&tasks, image).len() == n && st.running == n as u64).then_some(tasks)
        },
    )
    .await
}

/// Waits until the rollout to `image` reaches `state`.
async fn wait_rollout(env: &Env, image: &str, state: RolloutState) -> RolloutStatus {
    wait_for_within(
        &format!("the rollout to {image} reaches {state}"),
        DEADLINE,
        || async {
            let r = env.status(SERVICE).await?.rollout?;
            (r.state == state && r.image.as_deref() == Some(image)).then_some(r)
        },
    )
    .await
}

/// Samples the service's tasks every 100 ms: the fewest slots with a running task seen, and
/// how many samples were taken.
fn sample_slots(env: &Env) -> (tokio::task::JoinHandle<()>, Arc<Mutex<(usize, usize)>>) {
    let samples = Arc::new(Mutex::new((usize::MAX, 0)));
    let out = samples.clone();
    let env = Env::over(env.store.clone());
    let h = tokio::spawn(async move {
        loop {
            let tasks = env.tasks().await;
            let up: BTreeSet<_> = service_tasks(&tasks)
                .filter(|(_, s)| is_running(s))
                .map(|(t, _)| t.slot.clone())
                .collect();
            {
                let mut g = out.lock().unwrap();
                g.0 = g.0.min(up.len());
                g.1 += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (h, samples)
}

/// `GET /` on the host port.
fn http_get(port: u16) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Waits until the host port answers 200 with `page`.
async fn wait_serves(port: u16, page: &str) {
    let start = tokio::time::Instant::now();
    loop {
        let last = match tokio::task::spawn_blocking(move || http_get(port))
            .await
            .expect("http task")
        {
            Ok(body) if body.contains("200 OK") && body.contains(page) => return,
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        assert!(
            start.elapsed() < DEADLINE,
            "port {port} did not serve {page:?}; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the service's running containers on `node` are exactly three, all on `image`
/// (stopped ones stay while their tasks are in the task history).
async fn wait_containers_only_on(image: &str, node: &str) {
    wait_for_within(
        &format!("the containers of {SERVICE} on {node} are three, all on {image}"),
        DEADLINE,
        || async {
            let service = format!("label={LABEL_SERVICE}=default/{SERVICE}");
            let images = node_containers(node, "{{.Image}}", &["--filter", &service]);
            (images.len() == 3 && images.iter().all(|i| i == image)).then_some(())
        },
    )
    .await
}
