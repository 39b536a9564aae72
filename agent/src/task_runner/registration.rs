//! A task runner's Consul registration: started on first use, only with a registrar in the
//! context and a template that asks for it; deregistered before a stop (bounded wait) and when
//! the task ends on its own.

use crate::discovery::task::{DEREGISTER_WAIT, TaskRegistration};

use super::TaskRunner;

impl TaskRunner {
    /// The task's registration handle, started on first use; `None` without discovery or
    /// when the task asks for no Consul registration.
    pub(super) fn registration(&mut self) -> Option<&TaskRegistration> {
        if self.registration.is_none() {
            let registrar = self.ctx.discovery.clone()?;
            let task = self.task.as_ref()?;
            task.template.consul.as_ref()?;
            self.registration = Some(TaskRegistration::spawn(
                registrar,
                self.ctx.discovery_ready.clone(),
                task.clone(),
            ));
        }
        self.registration.as_ref()
    }

    /// Registers the running task with its host ports (in the background).
    pub(super) fn register(&mut self) {
        let ports = self.status.host_ports.clone();
        if let Some(r) = self.registration() {
            r.register(&ports);
        }
    }

    /// Deregisters the task (in the background): it ended on its own.
    pub(super) fn deregister(&mut self) {
        if let Some(r) = self.registration() {
            r.deregister();
        }
    }

    /// Deregisters the task before its container is stopped, waiting a bounded time.
    pub(super) async fn deregister_before_stop(&mut self) {
        if let Some(r) = self.registration()
            && !r.deregister_and_wait(DEREGISTER_WAIT).await
        {
            tracing::warn!(
                "consul did not confirm the deregistration in time; stopping the task anyway (it is retried in the background)"
            );
        }
    }

    /// Whether the task can never need a registration (so the template can go).
    pub(super) fn never_registers(&self) -> bool {
        self.ctx.discovery.is_none()
            || self
                .task
                .as_ref()
                .is_none_or(|t| t.template.consul.is_none())
    }
}
