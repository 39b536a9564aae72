//! Agents for an in-process cluster: a simulated agent that registers its node with a
//! lease and reports task states in reaction to assignments, and the real agent on the sim
//! runtime hosting hollow nodes.

use std::sync::Arc;
use std::time::Duration;

use shoal_agent::node::Registrar;
use shoal_agent::{AgentConfig, AgentHandle, RuntimeChoice, open_runtime};
use shoal_core::Keys;
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{
    self, Capacity, DesiredState, NodeInfo, Task, TaskState, TaskStatus, Timestamp,
};
use shoal_core::units::ByteSize;
use shoal_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Env;
use crate::wait::{wait_for, wait_for_within};

/// How long the docker agent may take to register (it first lists the node's containers).
const DOCKER_DEADLINE: Duration = Duration::from_secs(120);

/// A simulated agent: registers `nodes/<id>` with a lease and moves its tasks along.
pub struct Agent {
    /// Its node's id.
    pub id: String,
    handle: JoinHandle<()>,
}

impl Agent {
    /// Registers node `id` with `labels` and starts moving its tasks along; returns once
    /// the node is registered.
    pub async fn start(env: &Env, id: &str, labels: &[(&str, &str)]) -> Agent {
        let store = env.store.clone();
        let keys = env.keys.clone();
        let info = node_info(id, labels);
        // The agent's own registrar: the record is bound to a lease kept alive every TTL/3,
        // and written again at once under a new lease when the lease is lost.
        let registrar = Registrar::new(
            store.clone(),
            keys.clone(),
            vec![info],
            Duration::from_secs(1),
        );
        let (registered_tx, mut registered) = watch::channel(false);
        let node = id.to_string();
        let handle = tokio::spawn(async move {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let steps = async {
                loop {
                    let _ = step(&store, &keys, &node).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            let lease = registrar.claim().await.expect("the node is claimed");
            let (run, ()) = tokio::join!(registrar.run(lease, shutdown, registered_tx), steps);
            run.expect("the registrar runs");
        });
        registered
            .wait_for(|r| *r)
            .await
            .expect("the node registers");
        Agent {
            id: id.to_string(),
            handle,
        }
    }

    /// Stops the agent without deregistering: its node key expires with the lease.
    pub fn kill(self) {
        self.handle.abort();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// A docker worker node `id` with 4 CPUs, 8 GiB and `labels`, started now.
pub fn node_info(id: &str, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        id: id.to_string(),
        hostname: format!("host-{id}"),
        address: "127.0.0.1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        runtimes: vec![RuntimeKind::Docker],
        capacity: Capacity {
            cpus: 4.0,
            memory: ByteSize(8 << 30),
        },
        role: "worker".into(),
        instance: String::new(),
        agent_version: "sim".into(),
        network_unavailable: None,
        agent_url: None,
        started_at: Timestamp::now(),
    }
}

/// Starts the real agent in the test process hosting `nodes` hollow nodes with the sim
/// runtime (which fails tasks by image name); returns once it registered.
pub async fn sim_agent(env: &Env, nodes: usize) -> AgentHandle {
    let runtime = open_runtime(RuntimeChoice::Sim, "sim", std::env::temp_dir())
        .await
        .expect("sim runtime");
    let mut config = AgentConfig::new("sim");
    config.hollow_nodes = nodes;
    config.lease_ttl = Duration::from_secs(3);
    config.capacity = Some(Capacity {
        cpus: 8.0,
        memory: ByteSize(16 << 30),
    });
    let handle =
        shoal_agent::Agent::new(env.store.clone(), env.keys.clone(), config, runtime).spawn();
    let mut reg = handle.registered();
    wait_for("the sim agent registers", || {
        let ok = *reg.borrow_and_update();
        async move { ok.then_some(()) }
    })
    .await;
    handle
}

/// Starts the real agent in the test process for `node` on the docker runtime (Docker must
/// be reachable); returns once it registered.
pub async fn docker_agent(env: &Env, node: &str) -> AgentHandle {
    let runtime = open_runtime(RuntimeChoice::Docker, node, std::env::temp_dir())
        .await
        .unwrap_or_else(|e| panic!("Docker must be reachable for this test: {e}"));
    let handle = shoal_agent::Agent::new(
        env.store.clone(),
        env.keys.clone(),
        AgentConfig::new(node),
        runtime,
    )
    .spawn();
    let mut reg = handle.registered();
    wait_for_within("the docker agent registers", DOCKER_DEADLINE, || {
        let ok = *reg.borrow_and_update();
        async move { ok.then_some(()) }
    })
    .await;
    handle
}

/// One pass of a simulated agent: start wanted tasks, stop unwanted ones.
async fn step(
    store: &Arc<dyn Store>,
    keys: &Keys,
    node: &str,
) -> Result<(), shoal_store::StoreError> {
    let tasks = store.list(&keys.node_tasks_prefix(node)).await?;
    // Like the real agent: the status of a task whose assignment is gone is deleted.
    let statuses = store.list(&keys.node_task_status_prefix(node)).await?;
    for kv in statuses.kvs {
        let Some(shoal_core::keys::Key::TaskStatus { node, task }) = keys.parse(&kv.key) else {
            continue;
        };
        if !tasks.kvs.iter().any(|t| t.key == keys.task(&node, &task)) {
            store.delete(&kv.key).await?;
        }
    }
    for kv in tasks.kvs {
        let Ok(t) = model::decode::<Task>("task", &kv.value) else {
            continue;
        };
        let key = keys.task_status(node, &t.id);
        let cur = store
            .get(&key)
            .await?
            .and_then(|kv| model::decode::<TaskStatus>("task status", &kv.value).ok());
        let state = cur.as_ref().map(|s| s.state);
        if state.is_some_and(TaskState::is_terminal) {
            continue;
        }
        let next = match t.desired_state {
            DesiredState::Running if state != Some(TaskState::Running) => TaskState::Running,
            DesiredState::Shutdown => TaskState::Shutdown,
            _ => continue,
        };
        let now = Timestamp::now();
        let st = TaskStatus {
            task_id: t.id.clone(),
            state: next,
            container_id: Some(format!("c-{}", t.id)),
            host_ports: vec![],
            health: None,
            exit_code: next.is_terminal().then_some(0),
            message: None,
            updated_at: now,
            started_at: Some(now),
            finished_at: next.is_terminal().then_some(now),
        };
        store.put(&key, model::encode(&st), None).await?;
    }
    Ok(())
}
