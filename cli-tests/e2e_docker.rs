//! End to end with real processes: a real etcd, `shoal controller` and two `shoal agent`s on
//! the docker runtime with real containers. A two-replica service spreads one container per
//! node; one agent is killed (its container keeps running): its task is replaced on the other
//! node; when the agent comes back, the lost node's stale container is stopped and removed.

#[path = "harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use harness::{Proc, docker_agent_args};
use shoal_agent::test_support::{ContainerGuard, TEST_IMAGE, ensure_test_image};
use shoal_core::keys::Keys;
use shoal_core::model::{self, Task, TaskState, TaskStatus};
use shoal_store::Store;
use shoal_tests::docker::node_containers;
use shoal_tests::etcd::EtcdFixture;
use shoal_tests::wait::eventually_within;

const DEADLINE: Duration = Duration::from_secs(120);
const NODES: [&str; 2] = ["e2e-dock-a", "e2e-dock-b"];

/// Starts `shoal ARGS` logging at debug into `log`.
fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], log: &Path) -> Proc {
    harness::spawn(
        args,
        log,
        Stdio::null(),
        "shoal=debug,shoal_controller=debug,shoal_agent=debug,shoal_store=info",
    )
}

fn agent(store: &str, node: &str, dir: &Path) -> Proc {
    let data = dir.join(node);
    std::fs::create_dir_all(&data).unwrap();
    // Each agent on its own loopback address, as hosts of a cluster would be.
    let address = if node == NODES[0] {
        "127.0.31.1"
    } else {
        "127.0.31.2"
    };
    let args = docker_agent_args(store, node, address, &data, &["--lease-ttl", "2s"]);
    spawn(&args, &dir.join(format!("{node}.log")))
}

/// Running containers of `node`.
fn containers(node: &str) -> Vec<String> {
    node_containers(node, "{{.ID}}", &[])
}

/// Every task record with its status.
async fn tasks(store: &Arc<dyn Store>, keys: &Keys) -> Vec<(Task, Option<TaskStatus>)> {
    let Ok(list) = store.list(&keys.tasks_prefix()).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for kv in list.kvs {
        let Ok(t) = model::decode::<Task>("task", &kv.value) else {
            continue;
        };
        let st = store
            .get(&keys.task_status(&t.node_id, &t.id))
            .await
            .ok()
            .flatten()
            .and_then(|kv| model::decode::<TaskStatus>("task status", &kv.value).ok());
        out.push((t, st));
    }
    out
}

/// Running tasks wanted running, per node.
async fn running(store: &Arc<dyn Store>, keys: &Keys) -> Vec<String> {
    let mut nodes: Vec<String> = tasks(store, keys)
        .await
        .into_iter()
        .filter(|(t, s)| {
            t.desired_state == model::DesiredState::Running
                && s.as_ref().is_some_and(|s| s.state == TaskState::Running)
        })
        .map(|(t, _)| t.node_id)
        .collect();
    nodes.sort();
    nodes
}

/// Prints the tail of every component's log in `dir` when the test fails, so a failure says
/// what the controller and the agents were doing.
struct DumpLogsOnFailure<'a>(&'a Path);

impl Drop for DumpLogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.0) else {
            return;
        };
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("==== {} (last 60 lines)", e.path().display());
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_docker_agents_spread_survive_node_loss_and_clean_up_on_return() {
    ensure_test_image().expect("the test image builds (Docker is required)");
    let guards: Vec<ContainerGuard> = NODES
        .iter()
        .map(|n| ContainerGuard::new(format!("io.shoal.node={n}")))
        .collect();
    for g in &guards {
        g.cleanup();
    }
    let etcd = EtcdFixture::start().unwrap_or_else(|e| panic!("etcd is required: {e}"));
    let store: Arc<dyn Store> = Arc::new(etcd.store().await.expect("etcd store"));
    let keys = Keys::default();
    let url = etcd.url();
    let dir = tempfile::tempdir().unwrap();
    let _dump = DumpLogsOnFailure(dir.path());
    let _controller = spawn(
        &[
            "controller",
            "--store",
            &url,
            "--lease-ttl",
            "2s",
            "--node-grace",
            "2s",
            // No task history: the stale task's record goes as soon as it stopped.
            "--task-history-limit",
            "0",
        ],
        &dir.path().join("controller.log"),
    );
    let _a = agent(&url, NODES[0], dir.path());
    let b = agent(&url, NODES[1], dir.path());
    // Both nodes registered before the service exists: placement spreads over the nodes it
    // knows and does not rebalance later (as in Swarm), so a late agent would get nothing.
    eventually_within("both nodes registered", DEADLINE, || async {
        let mut n = 0;
        for node in NODES {
            if store.get(&keys.node(node)).await.ok().flatten().is_some() {
                n += 1;
            }
        }
        n == NODES.len()
    })
    .await;
    let manifest = format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: sleeper\nspec:\n  image: {TEST_IMAGE}\n  command: [sleep, \"3600\"]\n  replicas: 2\n  stopGracePeriod: 1s\n  restart: {{delay: 1s}}\n"
    );
    store
        .put(
            &keys.service(&shoal_core::ServiceRef {
                namespace: "default".into(),
                name: "sleeper".into(),
            }),
            manifest.into_bytes(),
            None,
        )
        .await
        .unwrap();

    // Spread: one running container on each node.
    eventually_within("one task running on each node", DEADLINE, || async {
        running(&store, &keys).await == NODES
    })
    .await;
    for n in NODES {
        assert_eq!(containers(n).len(), 1, "one container on {n}");
    }
    let stale = containers(NODES[1]);

    // Node loss: b's agent dies; its container runs on, its task is replaced on a.
    drop(b);
    eventually_within(
        "the lost node's task replaced on the other node",
        DEADLINE,
        || async { running(&store, &keys).await == [NODES[0], NODES[0]] },
    )
    .await;
    assert_eq!(containers(NODES[0]).len(), 2);
    assert_eq!(
        containers(NODES[1]),
        stale,
        "the lost node's container still runs while its agent is away"
    );

    // Return: b's agent stops and removes its stale container; nothing moves back.
    let _b = agent(&url, NODES[1], dir.path());
    eventually_within(
        "the returning node's stale container removed",
        DEADLINE,
        || async { containers(NODES[1]).is_empty() },
    )
    .await;
    eventually_within("the stale task record deleted", DEADLINE, || async {
        tasks(&store, &keys)
            .await
            .iter()
            .all(|(t, _)| t.node_id != NODES[1])
    })
    .await;
    // A stopped container stays while its task is assigned (its output serves `shoal logs`;
    // the task history keeps such records), and goes with the assignment.
    eventually_within(
        "the stale container removed, not only stopped",
        DEADLINE,
        || async { node_containers(NODES[1], "{{.ID}}", &["-a"]).is_empty() },
    )
    .await;
    assert_eq!(running(&store, &keys).await, [NODES[0], NODES[0]]);
    assert_eq!(containers(NODES[0]).len(), 2);
    for g in &guards {
        g.cleanup();
    }
}
