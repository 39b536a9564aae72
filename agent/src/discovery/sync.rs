//! Anti-entropy between the agent's tasks and its Consul agent's registrations.
//!
//! Consul removes registrations on its own: a check critical for longer than
//! `DeregisterCriticalServiceAfter` takes its service away while the task may still run (a
//! slow start, a dependency down for a while), and a Consul agent that lost its state
//! (restarted without its data directory, or in `-dev` mode) forgets every service. Hands
//! other than Shoal may also deregister a task, or register something under this node's name.
//! Every [`ConsulRegistrar::with_sync_interval`] (30 s by default) the agent lists its Consul
//! agent's services and, under the lock that orders it with the tasks' own registrations:
//!
//! - registers again every wanted registration that is missing (or registered with another
//!   address or port);
//! - deregisters every registration carrying this node's `shoal-node` meta that is no task
//!   this agent wants registered.
//!
//! The registrations the agent wants are kept by [`ConsulRegistrar::register`] and
//! [`ConsulRegistrar::deregister`]: a task is wanted from the moment its registration is sent
//! until its deregistration is, so a pass never brings back a task on its way out nor removes
//! one being registered.

use std::sync::Arc;

use tokio::sync::watch;

use super::{ConsulRegistrar, DiscoveryError};

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Task ids registered again, sorted.
    pub registered: Vec<String>,
    /// Registration ids removed, sorted.
    pub removed: Vec<String>,
}

impl ConsulRegistrar {
    /// One anti-entropy pass (see the module docs).
    pub async fn sync(&self) -> Result<SyncReport, DiscoveryError> {
        let desired = self.desired.lock().await;
        let services = self.client.agent_services().await?;
        let mut report = SyncReport::default();
        for (id, reg) in desired.iter() {
            let present = services
                .get(id)
                .is_some_and(|s| s.port == reg.port && s.address == reg.address);
            if !present {
                self.client.agent_service_register(reg).await?;
                tracing::info!(task = %id, service = %reg.name, port = reg.port, "registered a task consul had lost");
                report.registered.push(id.clone());
            }
        }
        for (id, svc) in &services {
            if self.owns(svc) && !desired.contains_key(id) {
                match self.client.agent_service_deregister(id).await {
                    Ok(()) | Err(shoal_store::consul::ConsulError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(registration = %id, "removed a consul registration that is no task of this node");
                report.removed.push(id.clone());
            }
        }
        Ok(report)
    }
}

/// Runs [`ConsulRegistrar::sync`] every sync interval until `shutdown` turns true; a pass
/// that fails (Consul unreachable) is tried again at the next interval.
pub async fn keep_in_sync(registrar: Arc<ConsulRegistrar>, mut shutdown: watch::Receiver<bool>) {
    let interval = registrar.sync_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match registrar.sync().await {
            Ok(r) if r.registered.is_empty() && r.removed.is_empty() => {
                tracing::debug!("consul registrations in sync");
            }
            Ok(r) => tracing::info!(
                registered = r.registered.len(),
                removed = r.removed.len(),
                "consul registrations brought back in line with the tasks"
            ),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?interval, "cannot compare consul registrations with the tasks; trying again later (tasks are not affected)");
            }
        }
    }
}
