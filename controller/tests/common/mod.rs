//! Test support: a store in a temp dir, controllers run in-process, and simulated agents
//! that register nodes with a lease and report task states in reaction to assignments.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::node::Registrar;
use shoal_controller::{Controller, ControllerConfig};
use shoal_core::Keys;
use shoal_core::manifest::{RuntimeKind, ServiceRef};
use shoal_core::model::{
    self, Capacity, DesiredState, NodeInfo, ServiceStatus, Task, TaskState, TaskStatus, Timestamp,
};
use shoal_core::units::ByteSize;
use shoal_store::{EmbeddedStore, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long conditions are waited for.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// Polls `check` until it returns `Some`, or fails the test after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it returns `Some`, or fails the test after `deadline` (for steps
/// slower than [`DEADLINE`] allows, such as real containers).
pub async fn wait_for_within<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A store and the keys, for one test.
pub struct Env {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    /// The controllers' grace for nodes without a record when they take the lead.
    pub node_grace: Duration,
    /// The controllers' grace after a node record disappears (`--node-grace` on Consul).
    pub node_record_grace: Duration,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    /// An embedded store in a fresh temp dir.
    pub async fn embedded() -> Env {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("shoal_controller=debug")
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path())
            .await
            .expect("embedded store opens");
        Env {
            store: Arc::new(store),
            keys: Keys::new("/shoal"),
            // The simulated agents' leases last 1s.
            node_grace: Duration::from_secs(1),
            node_record_grace: Duration::ZERO,
            _dir: Some(dir),
        }
    }

    /// The same environment seen through a wrapper of its store (for fault injection).
    pub fn wrapped(self, wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> Env {
        Env {
            store: wrap(self.store),
            keys: self.keys,
            node_grace: self.node_grace,
            node_record_grace: self.node_record_grace,
            _dir: self._dir,
        }
    }

    /// An environment over an existing store.
    pub fn over(store: Arc<dyn Store>) -> Env {
        Env {
            store,
            keys: Keys::new("/shoal"),
            // The simulated agents' leases last 1s.
            node_grace: Duration::from_secs(1),
            node_record_grace: Duration::ZERO,
            _dir: None,
        }
    }

    pub fn sref(name: &str) -> ServiceRef {
        ServiceRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// Writes a manifest exactly as given (as `etcdctl put` would).
    pub async fn put_manifest(&self, name: &str, yaml: &str) {
        self.store
            .put(
                &self.keys.service(&Self::sref(name)),
                yaml.as_bytes().to_vec(),
                None,
            )
            .await
            .expect("put manifest");
    }

    /// Writes a manifest for `name` with the given spec body (indented two spaces).
    pub async fn put_service(&self, name: &str, spec: &str) {
        let yaml = format!(
            "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  image: nginx\n{spec}"
        );
        self.put_manifest(name, &yaml).await;
    }

    pub async fn delete_service(&self, name: &str) {
        self.store
            .delete(&self.keys.service(&Self::sref(name)))
            .await
            .expect("delete manifest");
    }

    /// Every task with its status.
    pub async fn tasks(&self) -> Vec<(Task, Option<TaskStatus>)> {
        let tasks = self
            .store
            .list(&self.keys.tasks_prefix())
            .await
            .expect("list tasks");
        let mut out = Vec::new();
        for kv in tasks.kvs {
            let t: Task = model::decode("task", &kv.value).expect("task decodes");
            let st = self
                .store
                .get(&self.keys.task_status(&t.node_id, &t.id))
                .await
                .expect("get status")
                .map(|kv| {
                    model::decode::<TaskStatus>("task status", &kv.value).expect("status decodes")
                });
            out.push((t, st));
        }
        out
    }

    /// Running, wanted tasks of `name` per node.
    pub async fn running(&self, name: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (t, st) in self.tasks().await {
            if t.service.name == name
                && t.desired_state == DesiredState::Running
                && st.is_some_and(|s| s.state == TaskState::Running)
            {
                *out.entry(t.node_id).or_default() += 1;
            }
        }
        out
    }

    pub async fn status(&self, name: &str) -> Option<ServiceStatus> {
        let kv = self
            .store
            .get(&self.keys.service_status(&Self::sref(name)))
            .await
            .expect("get status")?;
        Some(model::decode("service status", &kv.value).expect("status decodes"))
    }

    /// Waits until `name` has exactly `per_node` running tasks per node.
    pub async fn wait_running(&self, name: &str, total: usize) -> BTreeMap<String, usize> {
        wait_for(&format!("{total} running tasks of {name}"), || async {
            let r = self.running(name).await;
            let s = self.status(name).await;
            (r.values().sum::<usize>() == total && s.is_some_and(|s| s.running == total as u64))
                .then_some(r)
        })
        .await
    }

    pub async fn set_availability(&self, node: &str, availability: &str) {
        let v = format!("{{\"availability\":\"{availability}\"}}");
        self.store
            .put(&self.keys.node_config(node), v.into_bytes(), None)
            .await
            .expect("put nodeconfig");
    }

    /// Writes a final state for a task, as its agent would.
    pub async fn finish_task(&self, task: &Task, state: TaskState, exit_code: i64) {
        let now = Timestamp::now();
        let st = TaskStatus {
            task_id: task.id.clone(),
            state,
            container_id: None,
            host_ports: vec![],
            health: None,
            exit_code: Some(exit_code),
            message: Some("exited".into()),
            updated_at: now,
            started_at: None,
            finished_at: Some(now),
        };
        self.store
            .put(
                &self.keys.task_status(&task.node_id, &task.id),
                model::encode(&st),
                None,
            )
            .await
            .expect("put status");
    }

    /// Starts a controller; returns a handle to stop or kill it.
    pub fn controller(&self, name: &str, ttl: Duration) -> RunningController {
        self.controller_with(name, ttl, |_| {})
    }

    /// Starts a controller with settings changed by `tweak`.
    pub fn controller_with(
        &self,
        name: &str,
        ttl: Duration,
        tweak: impl FnOnce(&mut ControllerConfig),
    ) -> RunningController {
        let mut config = ControllerConfig {
            identity: name.to_string(),
            lease_ttl: ttl,
            resync_interval: Duration::from_secs(2),
            node_grace: self.node_grace,
            node_record_grace: self.node_record_grace,
            ..ControllerConfig::default()
        };
        tweak(&mut config);
        let c = Controller::new(self.store.clone(), self.keys.clone(), config);
        let leading = c.leading();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(c.run(stop.clone()));
        RunningController {
            leading,
            stop,
            handle,
        }
    }
}

/// A controller running in the test process.
pub struct RunningController {
    pub leading: watch::Receiver<bool>,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), shoal_controller::ControllerError>>,
}

impl RunningController {
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Kills it as a crash would: its lease is not revoked, it expires.
    pub fn kill(self) {
        self.handle.abort();
    }

    /// Stops it cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

/// A simulated agent: registers `nodes/<id>` with a lease and moves its tasks along.
pub struct Agent {
    pub id: String,
    handle: JoinHandle<()>,
}

impl Agent {
    pub async fn start(env: &Env, id: &str, labels: &[(&str, &str)]) -> Agent {
        let store = env.store.clone();
        let keys = env.keys.clone();
        let info = NodeInfo {
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
        };
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
            let shutdown = CancellationToken::new();
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
