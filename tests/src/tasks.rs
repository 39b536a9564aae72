//! An agent's view of the cluster for tests that play the controller: an embedded store in a
//! temporary directory to write assignments to and read task statuses from, and builders of
//! tasks and templates.

use std::sync::Arc;
use std::time::Instant;

use shoal_core::keys::Keys;
use shoal_core::manifest::{ConsulCheck, RuntimeKind, ServiceRef};
use shoal_core::model::{
    self, DesiredState, Health, Task, TaskState, TaskStatus, TaskTemplate, Timestamp,
};
use shoal_core::units::Dur;
use shoal_store::{EmbeddedStore, Store};

use crate::wait::DEADLINE;

/// A store in its own temp dir (kept alive with the store).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Key layout.
    pub keys: Keys,
    _dir: tempfile::TempDir,
}

/// A template with Swarm's defaults for `runtime`.
pub fn template(runtime: RuntimeKind, image: Option<&str>, command: &[&str]) -> TaskTemplate {
    TaskTemplate {
        runtime,
        image: image.map(str::to_string),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        ports: Vec::new(),
        limits: Default::default(),
        reservations: Default::default(),
        mounts: Vec::new(),
        healthcheck: None,
        stop_signal: "SIGTERM".to_string(),
        stop_grace_period: Dur::secs(10),
        consul: None,
        constraints: Vec::new(),
        secrets: Vec::new(),
        configs: Vec::new(),
    }
}

/// A Consul HTTP check of `/health` every 10 s (2 s timeout), deregistering the service
/// after a minute critical.
pub fn http_check() -> ConsulCheck {
    ConsulCheck {
        http: Some("/health".into()),
        tcp: false,
        interval: Dur::secs(10),
        timeout: Dur::secs(2),
        deregister_critical_service_after: Dur::secs(60),
    }
}

/// A task of service `default/<service>` on `node`.
pub fn task(id: &str, service: &str, node: &str, template: TaskTemplate) -> Task {
    let service = ServiceRef {
        namespace: "default".into(),
        name: service.into(),
    };
    Task::replica(id, service, 1, node, template, Timestamp::now())
}

/// A docker task of service `default/<service>` on `node` running `image`, with Swarm's
/// defaults otherwise.
pub fn docker_task(id: &str, service: &str, node: &str, image: &str) -> Task {
    task(
        id,
        service,
        node,
        template(RuntimeKind::Docker, Some(image), &[]),
    )
}

impl TestStore {
    /// Opens an embedded store in a fresh temp dir.
    pub async fn open() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path())
            .await
            .expect("embedded store opens");
        TestStore {
            store: Arc::new(store),
            keys: Keys::default(),
            _dir: dir,
        }
    }

    /// Writes (or rewrites) an assignment.
    pub async fn assign(&self, t: &Task) {
        self.store
            .put(&self.keys.task(&t.node_id, &t.id), model::encode(t), None)
            .await
            .expect("assignment written");
    }

    /// Sets an assignment's desired state to shutdown.
    pub async fn shut_down(&self, t: &Task) {
        let mut t = t.clone();
        t.desired_state = DesiredState::Shutdown;
        self.assign(&t).await;
    }

    /// Deletes an assignment, as the controller does (the agent deletes the status).
    pub async fn unassign(&self, t: &Task) {
        self.store
            .delete(&self.keys.task(&t.node_id, &t.id))
            .await
            .expect("delete");
    }

    /// The current status of a task.
    pub async fn status(&self, t: &Task) -> Option<TaskStatus> {
        let kv = self
            .store
            .get(&self.keys.task_status(&t.node_id, &t.id))
            .await
            .expect("get")?;
        Some(model::decode("task status", &kv.value).expect("status decodes"))
    }

    /// Waits until the task is in `state`; panics with the last status otherwise.
    pub async fn wait_state(&self, t: &Task, state: TaskState) -> TaskStatus {
        self.wait_status(t, &format!("{state:?}"), |s| s.state == state)
            .await
    }

    /// Waits until the task reports itself healthy.
    pub async fn wait_healthy(&self, t: &Task) -> TaskStatus {
        self.wait_status(t, "healthy", |s| s.health == Some(Health::Healthy))
            .await
    }

    /// Waits until the task failed on its healthcheck: as in Swarm, an unhealthy task is
    /// stopped and fails, saying so.
    pub async fn wait_failed_unhealthy(&self, t: &Task) -> TaskStatus {
        let s = self.wait_state(t, TaskState::Failed).await;
        assert_eq!(s.health, Some(Health::Unhealthy), "{s:?}");
        let message = s.message.clone().unwrap_or_default();
        assert!(message.contains("unhealthy"), "{message}");
        s
    }

    /// Waits until the task's status satisfies `pred`; panics with the last status otherwise.
    pub async fn wait_status(
        &self,
        t: &Task,
        what: &str,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> TaskStatus {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < DEADLINE {
            if let Some(s) = self.status(t).await {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("task {} never became {what}; last status: {last:?}", t.id);
    }
}
