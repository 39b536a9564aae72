//! An in-process cluster: a store (embedded in a temp dir, or any other), controllers run
//! in the test process, and agents — simulated ones that move their tasks along on their
//! own ([`Agent`]), or the real agent on the sim runtime ([`sim_agent`]) or on Docker
//! ([`docker_agent`]) — with views of the tasks and services they produce.

mod agents;
mod rollout;

pub use agents::{Agent, docker_agent, node_info, sim_agent};
pub use rollout::{per_slot_image, slots_up, up_on, wait_rollout, watch_min_up};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_controller::{Controller, ControllerConfig};
use shoal_core::Keys;
use shoal_core::manifest::ServiceRef;
use shoal_core::model::{
    self, DesiredState, ServiceStatus, Task, TaskState, TaskStatus, Timestamp,
};
use shoal_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::etcd::EtcdFixture;
use crate::wait::wait_for;

/// A spec body with `replicas`, `image` and `extra` lines (indented two spaces).
pub fn spec(replicas: u64, image: &str, extra: &str) -> String {
    format!("  replicas: {replicas}\n  image: {image}\n{extra}")
}

/// A store and the keys, for one test.
pub struct Env {
    /// The store every component of the cluster uses.
    pub store: Arc<dyn Store>,
    /// Key layout.
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
        let (store, dir) = crate::api::embedded_store().await;
        Env {
            store,
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

    /// A real etcd (make deps installs it) and an environment over it; the fixture stops
    /// etcd when dropped.
    pub async fn etcd() -> (EtcdFixture, Env) {
        let fixture =
            EtcdFixture::start().unwrap_or_else(|e| panic!("etcd is required for this test: {e}"));
        let store = fixture.store().await.expect("connect to etcd");
        (fixture, Env::over(Arc::new(store)))
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

    /// `default/<name>`.
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
    pub async fn put_spec(&self, name: &str, spec: &str) {
        let yaml = format!(
            "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}"
        );
        self.put_manifest(name, &yaml).await;
    }

    /// Writes a manifest for `name` with `image: nginx` and the given spec body (indented two
    /// spaces).
    pub async fn put_service(&self, name: &str, spec: &str) {
        self.put_spec(name, &format!("  image: nginx\n{spec}"))
            .await;
    }

    /// Deletes the manifest of `name`.
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

    /// The status the controller wrote for `name`.
    pub async fn status(&self, name: &str) -> Option<ServiceStatus> {
        let kv = self
            .store
            .get(&self.keys.service_status(&Self::sref(name)))
            .await
            .expect("get status")?;
        Some(model::decode("service status", &kv.value).expect("status decodes"))
    }

    /// Waits until `name` has `total` running tasks (and its status says so); returns them
    /// per node.
    pub async fn wait_running(&self, name: &str, total: usize) -> BTreeMap<String, usize> {
        wait_for(&format!("{total} running tasks of {name}"), || async {
            let r = self.running(name).await;
            let s = self.status(name).await;
            (r.values().sum::<usize>() == total && s.is_some_and(|s| s.running == total as u64))
                .then_some(r)
        })
        .await
    }

    /// Sets a node's availability (`active`, `pause`, `drain`) as an operator would.
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
        let metrics = c.metrics().clone();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(c.run(stop.clone()));
        RunningController {
            name: name.to_string(),
            leading,
            metrics,
            stop,
            handle,
        }
    }
}

/// A controller running in the test process.
pub struct RunningController {
    name: String,
    /// Whether it leads.
    pub leading: watch::Receiver<bool>,
    /// Its metrics.
    pub metrics: shoal_controller::Metrics,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), shoal_controller::ControllerError>>,
}

impl RunningController {
    /// Whether it leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until it leads.
    pub async fn wait_leading(&self) {
        let what = format!("{} leads", self.name);
        crate::wait::eventually(&what, || std::future::ready(self.is_leader())).await;
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
