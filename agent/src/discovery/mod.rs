//! Discovery: registers running tasks that publish a port and carry `discovery.consul` in
//! the node's local Consul agent, deregisters them before their container stops, and on
//! agent start removes the registrations this node owns that no longer match a running task.
//!
//! A registration has ID = task id, Name = `consul.name` (else the service name), the
//! manifest's tags, Meta = the manifest's meta plus `shoal-service` (`ns/name`),
//! `shoal-node` and `shoal-task`, Address = the node address, Port = the host port bound for
//! the chosen target port (`consul.port`, else the first port), and the manifest's HTTP or
//! TCP check with its interval, timeout and `DeregisterCriticalServiceAfter`.
//!
//! The agent keeps each task's registration through a [`task::TaskRegistration`] (a
//! background worker, so Consul being down never holds a task up), runs [`clean_up_stale`]
//! once on start, and then keeps Consul in line with its tasks ([`sync`]): Consul itself
//! drops registrations (a check critical past `DeregisterCriticalServiceAfter`, a Consul
//! agent that lost its state), and other hands may add or remove some.

pub mod sync;
pub mod task;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use shoal_core::model::{PortBinding, Task};
use shoal_store::consul::{AgentServiceCheck, AgentServiceRegistration, ConsulClient, ConsulError};

/// Meta key naming the Shoal service (`ns/name`) of a registration.
pub const META_SERVICE: &str = "shoal-service";
/// Meta key naming the node that registered it.
pub const META_NODE: &str = "shoal-node";
/// Meta key naming the task.
pub const META_TASK: &str = "shoal-task";

/// What can go wrong registering tasks in Consul.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The Consul agent refused or did not answer.
    #[error("consul: {0}")]
    Consul(#[from] ConsulError),
    /// The task has no host port for the target to register.
    #[error("task {task} has no host port bound for target port {target}")]
    NoPort {
        /// Task id.
        task: String,
        /// Target port looked for.
        target: u16,
    },
}

/// How often the agent compares Consul's registrations with its tasks by default (Consul's
/// own agents sync their local state with the servers about once a minute).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Registers this node's tasks in its local Consul agent.
#[derive(Debug)]
pub struct ConsulRegistrar {
    client: ConsulClient,
    node_id: String,
    node_address: String,
    /// The registrations this agent wants, by task id (see [`sync`]).
    desired: tokio::sync::Mutex<std::collections::BTreeMap<String, AgentServiceRegistration>>,
    sync_interval: Duration,
}

fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

impl ConsulRegistrar {
    /// A registrar for node `node_id`, whose tasks are reachable on `node_address`.
    pub fn new(
        client: ConsulClient,
        node_id: impl Into<String>,
        node_address: impl Into<String>,
    ) -> Self {
        Self {
            client,
            node_id: node_id.into(),
            node_address: node_address.into(),
            desired: Default::default(),
            sync_interval: SYNC_INTERVAL,
        }
    }

    /// Compares Consul's registrations with the tasks every `interval` (default
    /// [`SYNC_INTERVAL`]).
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// The registration of a task given its bound ports; `None` when the task asks for no
    /// Consul registration or publishes no port.
    pub fn registration(
        &self,
        task: &Task,
        ports: &[PortBinding],
    ) -> Result<Option<AgentServiceRegistration>, DiscoveryError> {
        let Some(consul) = &task.template.consul else {
            return Ok(None);
        };
        let target = match consul
            .port
            .or_else(|| task.template.ports.first().map(|p| p.target))
        {
            Some(t) => t,
            None => return Ok(None),
        };
        let port = ports
            .iter()
            .find(|b| b.target == target)
            .map(|b| b.published)
            .ok_or_else(|| DiscoveryError::NoPort {
                task: task.id.clone(),
                target,
            })?;
        let mut meta = consul.meta.clone();
        meta.insert(META_SERVICE.into(), task.service.to_string());
        meta.insert(META_NODE.into(), self.node_id.clone());
        meta.insert(META_TASK.into(), task.id.clone());
        let checks = consul
            .check
            .as_ref()
            .and_then(|c| {
                let mut check = AgentServiceCheck {
                    interval: Some(go_duration(c.interval.0)),
                    timeout: Some(go_duration(c.timeout.0)),
                    deregister_critical_service_after: Some(go_duration(
                        c.deregister_critical_service_after.0,
                    )),
                    ..AgentServiceCheck::default()
                };
                if let Some(path) = &c.http {
                    let path = if path.starts_with('/') {
                        path.clone()
                    } else {
                        format!("/{path}")
                    };
                    check.http = Some(format!("http://{}:{port}{path}", self.node_address));
                } else if c.tcp {
                    check.tcp = Some(format!("{}:{port}", self.node_address));
                } else {
                    return None;
                }
                Some(check)
            })
            .into_iter()
            .collect();
        Ok(Some(AgentServiceRegistration {
            id: task.id.clone(),
            name: consul
                .name
                .clone()
                .unwrap_or_else(|| task.service.name.clone()),
            tags: consul.tags.clone(),
            address: self.node_address.clone(),
            port,
            meta,
            checks,
        }))
    }

    /// Registers a running task (replacing an earlier registration with the same ID);
    /// returns whether there was anything to register.
    pub async fn register(
        &self,
        task: &Task,
        ports: &[PortBinding],
    ) -> Result<bool, DiscoveryError> {
        let Some(reg) = self.registration(task, ports)? else {
            return Ok(false);
        };
        // Wanted before it is sent, so a sync pass never takes it for a foreign one.
        self.desired
            .lock()
            .await
            .insert(reg.id.clone(), reg.clone());
        self.client.agent_service_register(&reg).await?;
        tracing::debug!(task = %task.id, service = %reg.name, port = reg.port, "registered in consul");
        Ok(true)
    }

    /// Deregisters a task; a task that was not registered is not an error.
    pub async fn deregister(&self, task_id: &str) -> Result<(), DiscoveryError> {
        // No longer wanted before it goes, so a sync pass never brings it back.
        self.desired.lock().await.remove(task_id);
        match self.client.agent_service_deregister(task_id).await {
            Ok(()) | Err(ConsulError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes every registration owned by this node (Meta `shoal-node`) whose ID is not in
    /// `running`; returns the removed IDs, sorted.
    pub async fn remove_stale(
        &self,
        running: &BTreeSet<String>,
    ) -> Result<Vec<String>, DiscoveryError> {
        let services = self.client.agent_services().await?;
        let mut removed = Vec::new();
        for (id, svc) in services {
            if self.owns(&svc) && !running.contains(&id) {
                self.deregister(&id).await?;
                tracing::info!(task = %id, "removed a stale consul registration");
                removed.push(id);
            }
        }
        Ok(removed)
    }
}

impl ConsulRegistrar {
    /// Whether a registration is this node's (Meta `shoal-node` names it).
    fn owns(&self, svc: &shoal_store::consul::AgentService) -> bool {
        svc.meta
            .as_ref()
            .and_then(|m| m.get(META_NODE))
            .is_some_and(|n| *n == self.node_id)
    }
}

/// Removes this node's stale registrations (those whose ID is not in `running`), retrying
/// with backoff until Consul answers or `shutdown` turns true, then opens `ready` so the
/// tasks' registrations may go ahead, and from then on keeps Consul's registrations in line
/// with the tasks ([`sync::keep_in_sync`]) until `shutdown`.
pub async fn clean_up_stale(
    registrar: Arc<ConsulRegistrar>,
    running: BTreeSet<String>,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match registrar.remove_stale(&running).await {
            Ok(removed) => {
                tracing::info!(
                    removed = removed.len(),
                    kept = running.len(),
                    "stale consul registrations cleaned up"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot clean up stale consul registrations; retrying (tasks are not affected)");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    ready.send_replace(true);
    sync::keep_in_sync(registrar, shutdown).await;
}
