//! An agent keeps its tasks running while the store is unreachable (it does not stop
//! everything, as fleet did) and catches up when the store returns: against a real etcd that is
//! killed and started again, with a host process as the task.

use std::sync::Arc;
use std::time::Duration;

use shoal_agent::{Agent, AgentConfig, RuntimeChoice};
use shoal_core::Keys;
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{self, Slot, Task, TaskState, TaskStatus};
use shoal_core::units::Dur;
use shoal_store::Store;
use shoal_tests::etcd::EtcdFixture;
use shoal_tests::tasks::{task, template};
use shoal_tests::wait::{eventually, wait_for};

const NODE: &str = "outage-node";

fn sleeper(id: &str) -> Task {
    let mut template = template(RuntimeKind::Process, None, &["sleep", "600"]);
    template.stop_grace_period = Dur::secs(2);
    task(id, "sleeper", NODE, template)
}

async fn status(store: &Arc<dyn Store>, keys: &Keys, id: &str) -> Option<TaskStatus> {
    let kv = store.get(&keys.task_status(NODE, id)).await.ok()??;
    model::decode("task status", &kv.value).ok()
}

async fn wait_running(store: &Arc<dyn Store>, keys: &Keys, id: &str) -> TaskStatus {
    wait_for(&format!("task {id} reaches running"), || async {
        status(store, keys, id)
            .await
            .filter(|s| s.state == TaskState::Running)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_keep_running_while_etcd_is_down_and_the_agent_catches_up() {
    let mut etcd = EtcdFixture::start().expect("etcd starts (install etcd-server: make deps)");
    let store: Arc<dyn Store> = Arc::new(etcd.store().await.expect("connect"));
    let keys = Keys::default();
    let data = tempfile::tempdir().unwrap();
    let runtime = shoal_agent::open_runtime(RuntimeChoice::Process, NODE, data.path())
        .await
        .expect("process runtime");
    let mut config = AgentConfig::new(NODE);
    config.lease_ttl = Duration::from_secs(2);
    let agent = Agent::new(store.clone(), keys.clone(), config, runtime).spawn();

    let first = sleeper("sleeper.1.before");
    store
        .put(&keys.task(NODE, &first.id), model::encode(&first), None)
        .await
        .unwrap();
    let before = wait_running(&store, &keys, &first.id).await;
    let pid = before
        .container_id
        .clone()
        .expect("the process runtime reports the pid");
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(&pid));

    // The store goes away for several lease TTLs.
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        alive(&pid),
        "the task's process must survive the store outage"
    );

    // The store returns: the agent re-registers its node and picks up new work.
    etcd.restart().expect("etcd restarts");
    eventually("the node registers again", || async {
        store.get(&keys.node(NODE)).await.ok().flatten().is_some()
    })
    .await;
    let mut second = sleeper("sleeper.2.after");
    second.slot = Slot::Replica(2);
    store
        .put(&keys.task(NODE, &second.id), model::encode(&second), None)
        .await
        .unwrap();
    wait_running(&store, &keys, &second.id).await;

    let after = status(&store, &keys, &first.id)
        .await
        .expect("first task status");
    assert_eq!(
        after.state,
        TaskState::Running,
        "the first task is still running"
    );
    assert_eq!(
        after.container_id.as_deref(),
        Some(pid.as_str()),
        "and was never restarted"
    );
    assert!(alive(&pid));
    agent.stop().await.expect("agent stops");
}
