//! The hollow agent's heap per task, counted: an agent with hollow nodes on the sim runtime
//! runs in this process against a real etcd, the benchmark writes assignments straight to the
//! store, and a counting allocator (installed by `shoal-agent-memory-bench`) reads the live
//! heap once the agent has settled: with no task, with every task running, with every task
//! shut down and kept (a service's task history), and after the assignments are deleted.
//!
//! Unlike the RSS of `shoal-bench`'s hollow agents, the figure does not depend on what the
//! allocator keeps resident or on the other scenarios of a run: it is the bytes the agent's
//! own data structures hold per task, the same in every run of the same code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::runtime::sim::SimRuntime;
use shoal_agent::{Agent, AgentConfig, AgentHandle};
use shoal_core::keys::Keys;
use shoal_core::manifest::{RuntimeKind, ServiceRef};
use shoal_core::model::{self, DesiredState, Task, TaskState, TaskStatus, TaskTemplate, Timestamp};
use shoal_store::{Store, StoreError, Txn, TxnOp};

/// Errors of the memory benchmark.
#[derive(Debug, thiserror::Error)]
pub enum AgentMemoryError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The agent did not reach the expected state in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The agent stopped with an error.
    #[error("agent: {0}")]
    Agent(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Hollow nodes of the agent.
    pub nodes: usize,
    /// Tasks assigned, spread over the nodes.
    pub tasks: usize,
    /// Return once every task runs, leaving the agent running (the caller exits the process
    /// without dropping anything: a heap profiler then lists what a running task holds as the
    /// memory left at exit).
    pub exit_when_running: bool,
}

/// Live heap at each step, in bytes.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The agent registered, no task.
    pub idle: usize,
    /// Every task running.
    pub running: usize,
    /// Every task shut down, its assignment kept.
    pub ended: usize,
    /// Every assignment deleted.
    pub deleted: usize,
}

impl Measured {
    /// Bytes per task of `at` over the idle agent.
    pub fn per_task(&self, at: usize, tasks: usize) -> f64 {
        (at as f64 - self.idle as f64) / tasks as f64
    }
}

/// Runs the steps against `store`; `live` reads the live heap (the binary's counting
/// allocator).
pub async fn run(
    store: Arc<dyn Store>,
    sizes: &Sizes,
    live: fn() -> usize,
) -> Result<Measured, AgentMemoryError> {
    let keys = Keys::default();
    let rt = Arc::new(SimRuntime::new());
    let mut cfg = AgentConfig::new("mem");
    cfg.hollow_nodes = sizes.nodes;
    cfg.lease_ttl = Duration::from_secs(10);
    let agent = Agent::new(store.clone(), keys.clone(), cfg, rt.clone()).spawn();
    let nodes = shoal_agent::node::hollow_ids("mem", sizes.nodes);
    wait_until("the hollow nodes to register", || async {
        Ok(store.list(&keys.nodes_prefix()).await?.kvs.len() == sizes.nodes)
    })
    .await?;
    let mut m = Measured {
        idle: settled(live).await,
        ..Measured::default()
    };
    // Assignments are made as they are written: the benchmark keeps none of them, so the
    // live heap is the agent's.
    let batch = Batch::new(&nodes, &keys, sizes.tasks);
    batch.write(store.as_ref(), DesiredState::Running).await?;
    wait_states(store.as_ref(), &keys, sizes.tasks, TaskState::Running).await?;
    m.running = settled(live).await;
    if sizes.exit_when_running {
        // Left running: the caller exits the process without dropping it.
        std::mem::forget(agent);
        return Ok(m);
    }
    batch.write(store.as_ref(), DesiredState::Shutdown).await?;
    wait_states(store.as_ref(), &keys, sizes.tasks, TaskState::Shutdown).await?;
    m.ended = settled(live).await;
    batch.delete(store.as_ref()).await?;
    wait_until("the sim runtime to remove every task", || async {
        Ok(rt.is_empty())
    })
    .await?;
    m.deleted = settled(live).await;
    stop(agent).await?;
    Ok(m)
}

async fn stop(agent: AgentHandle) -> Result<(), AgentMemoryError> {
    agent
        .stop()
        .await
        .map_err(|e| AgentMemoryError::Agent(e.to_string()))
}

/// The benchmark's assignments: `tasks` tasks of services of 100 replicas each, spread
/// over `nodes` in turn, as the controller writes them for `shoal-bench`'s services.
struct Batch<'a> {
    nodes: &'a [String],
    keys: &'a Keys,
    tasks: usize,
    /// Every task's template (one per service revision, all alike here).
    template: TaskTemplate,
}

impl<'a> Batch<'a> {
    fn new(nodes: &'a [String], keys: &'a Keys, tasks: usize) -> Self {
        let mut template =
            shoal_tests::tasks::template(RuntimeKind::Docker, Some("bench/app:1"), &[]);
        template.env.insert("REV".into(), "0".into());
        Batch {
            nodes,
            keys,
            tasks,
            template,
        }
    }

    fn service(i: usize) -> ServiceRef {
        ServiceRef {
            namespace: "bench".into(),
            name: format!("svc-{:04}", i / 100),
        }
    }

    fn slot(i: usize) -> u64 {
        (i % 100) as u64 + 1
    }

    /// Task `i`'s id, `<service>.<slot>.<suffix>` as the controller names tasks.
    fn id(i: usize) -> String {
        let suffix = (i as u32).wrapping_mul(2_654_435_761);
        format!("svc-{:04}.{}.{suffix:08x}", i / 100, Self::slot(i))
    }

    fn node(&self, i: usize) -> &str {
        &self.nodes[i % self.nodes.len()]
    }

    /// Task `i`'s assignment key.
    fn key(&self, i: usize) -> String {
        self.keys.task(self.node(i), &Self::id(i))
    }

    /// Task `i`.
    fn task(&self, i: usize, desired: DesiredState) -> Task {
        let replica = Task::replica(
            Self::id(i),
            Self::service(i),
            Self::slot(i),
            self.node(i),
            self.template.clone(),
            Timestamp::now(),
        );
        Task {
            desired_state: desired,
            ..replica
        }
    }

    /// Writes every assignment with `desired`, 100 per transaction.
    async fn write(&self, store: &dyn Store, desired: DesiredState) -> Result<(), StoreError> {
        self.in_chunks(store, |i| TxnOp::Put {
            key: self.key(i),
            value: model::encode(&self.task(i, desired)),
            lease: None,
        })
        .await
    }

    /// Deletes every assignment, 100 per transaction.
    async fn delete(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.in_chunks(store, |i| TxnOp::Delete { key: self.key(i) })
            .await
    }

    async fn in_chunks(
        &self,
        store: &dyn Store,
        op: impl Fn(usize) -> TxnOp,
    ) -> Result<(), StoreError> {
        for start in (0..self.tasks).step_by(100) {
            let ops = (start..(start + 100).min(self.tasks)).map(&op).collect();
            store
                .txn(Txn {
                    compares: Vec::new(),
                    ops,
                })
                .await?;
        }
        Ok(())
    }
}

async fn wait_states(
    store: &dyn Store,
    keys: &Keys,
    n: usize,
    state: TaskState,
) -> Result<(), AgentMemoryError> {
    wait_until(&format!("{n} tasks {state:?}"), || async {
        let list = store.list(&keys.task_status_prefix()).await?;
        let reached = list
            .kvs
            .iter()
            .filter_map(|kv| model::decode::<TaskStatus>("task status", &kv.value).ok())
            .filter(|s| s.state == state)
            .count();
        Ok(reached == n)
    })
    .await
}

async fn wait_until<F, Fut>(what: &str, mut done: F) -> Result<(), AgentMemoryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done().await? {
        if Instant::now() > deadline {
            return Err(AgentMemoryError::Timeout(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// The live heap once it has stopped moving: the agent's last status writes and the
/// benchmark's own lists are done (two readings 500 ms apart within 0.1%).
async fn settled(live: fn() -> usize) -> usize {
    let mut last = live();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = live();
        if now.abs_diff(last) * 1000 <= last {
            return now;
        }
        last = now;
    }
    last
}
