//! One node offering several runtimes: Docker containers and host processes side by side, each
//! task sent to the runtime its template names. `shoal dev` uses it so a laptop with Docker
//! still runs `runtime: process` services.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{Health, Task};

use super::{Existing, Exit, Handle, Runtime, RuntimeError, TaskFiles};

/// Docker and process runtimes behind one [`Runtime`].
pub struct MultiRuntime {
    docker: Arc<dyn Runtime>,
    process: Arc<dyn Runtime>,
}

impl std::fmt::Debug for MultiRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiRuntime").finish_non_exhaustive()
    }
}

impl MultiRuntime {
    /// Combines a docker and a process runtime.
    pub fn new(docker: Arc<dyn Runtime>, process: Arc<dyn Runtime>) -> Self {
        MultiRuntime { docker, process }
    }

    fn for_task(&self, task: &Task) -> &Arc<dyn Runtime> {
        match task.template.runtime {
            RuntimeKind::Docker => &self.docker,
            RuntimeKind::Process => &self.process,
        }
    }

    /// Process handles are pids (digits only); container ids are hexadecimal digests.
    fn for_handle(&self, handle: &Handle) -> &Arc<dyn Runtime> {
        if !handle.id.is_empty() && handle.id.bytes().all(|b| b.is_ascii_digit()) {
            &self.process
        } else {
            &self.docker
        }
    }
}

#[async_trait::async_trait]
impl Runtime for MultiRuntime {
    fn name(&self) -> &'static str {
        "docker+process"
    }

    fn offers(&self) -> Vec<RuntimeKind> {
        let mut o: Vec<RuntimeKind> = self
            .docker
            .offers()
            .into_iter()
            .chain(self.process.offers())
            .collect();
        o.sort();
        o.dedup();
        o
    }

    fn tasks_outlive_agent(&self) -> bool {
        // Host processes end with the agent; `shutdown` stops only those.
        false
    }

    fn set_cluster(&self, cluster: &str) {
        self.docker.set_cluster(cluster);
        self.process.set_cluster(cluster);
    }

    async fn prepare(&self, task: &Task) -> Result<(), RuntimeError> {
        self.for_task(task).prepare(task).await
    }

    async fn start(&self, task: &Task, files: &TaskFiles) -> Result<Handle, RuntimeError> {
        self.for_task(task).start(task, files).await
    }

    async fn wait(&self, handle: &Handle) -> Result<Exit, RuntimeError> {
        self.for_handle(handle).wait(handle).await
    }

    async fn health(&self, handle: &Handle) -> Result<Option<Health>, RuntimeError> {
        self.for_handle(handle).health(handle).await
    }

    async fn stop(
        &self,
        handle: &Handle,
        signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.for_handle(handle).stop(handle, signal, grace).await
    }

    async fn remove(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.for_handle(handle).remove(handle).await
    }

    async fn list(&self, nodes: &BTreeSet<String>) -> Result<Vec<Existing>, RuntimeError> {
        let mut all = self.docker.list(nodes).await?;
        all.extend(self.process.list(nodes).await?);
        all.sort_by(|a, b| {
            a.task_id
                .cmp(&b.task_id)
                .then(a.handle.id.cmp(&b.handle.id))
        });
        Ok(all)
    }

    fn configure_network(
        &self,
        address: Option<std::net::IpAddr>,
        network: Option<crate::network::Network>,
    ) {
        self.docker.configure_network(address, network);
    }

    async fn discard(&self, node_id: &str, task_id: &str) {
        self.process.discard(node_id, task_id).await;
        self.docker.discard(node_id, task_id).await;
    }

    async fn shutdown(&self) {
        if !self.process.tasks_outlive_agent() {
            self.process.shutdown().await;
        }
        if !self.docker.tasks_outlive_agent() {
            self.docker.shutdown().await;
        }
    }

    async fn logs(
        &self,
        node_id: &str,
        task_id: &str,
        query: &shoal_core::logs::LogQuery,
    ) -> Result<Option<crate::logs::Lines>, RuntimeError> {
        // A task's output is in one runtime or the other: its log file, else its container.
        match self.process.logs(node_id, task_id, query).await? {
            Some(lines) => Ok(Some(lines)),
            None => self.docker.logs(node_id, task_id, query).await,
        }
    }
}
