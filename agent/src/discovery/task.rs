//! One task's registration, kept by a small background worker so the task's runner never
//! waits on Consul: the runner says what it wants (registered with these host ports, or
//! deregistered) and the worker makes Consul match, retrying with backoff while Consul is
//! unreachable. Requests are applied in order, so a deregistration can never be overtaken by
//! an earlier registration still in flight.
//!
//! Registrations wait for the agent's start-up cleanup of stale registrations (the `ready`
//! gate), so the cleanup never mistakes a fresh registration for a stale one.

use std::sync::Arc;
use std::time::Duration;

use shoal_core::model::{PortBinding, Task};
use shoal_store::Backoff;
use tokio::sync::watch;
use tracing::Instrument;

use super::{ConsulRegistrar, DiscoveryError};

/// Longest time a runner waits for a deregistration before it stops the task anyway (the
/// deregistration goes on in the background).
pub const DEREGISTER_WAIT: Duration = Duration::from_secs(5);

/// Attempts at a deregistration once the task's runner is gone (about ten minutes with the
/// backoff); after that Consul's `DeregisterCriticalServiceAfter` and the next agent start
/// clean up.
const ORPHAN_DEREGISTER_ATTEMPTS: u32 = 25;

/// Retries of a registration or deregistration Consul refused.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

/// What the runner wants Consul to hold for its task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// Nothing asked yet.
    Nothing,
    /// Registered with these host ports.
    Registered(Vec<PortBinding>),
    /// Not registered.
    Deregistered,
}

/// What Consul is known to hold for the task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Applied {
    /// Unknown (an earlier agent may have registered it).
    Unknown,
    /// Registered with these host ports.
    Registered(Vec<PortBinding>),
    /// Not registered.
    Deregistered,
    /// The task cannot be registered (no host port for the chosen target): not retried.
    Impossible(Vec<PortBinding>),
}

/// A runner's handle on its task's Consul registration.
#[derive(Debug)]
pub struct TaskRegistration {
    want: watch::Sender<Want>,
    applied: watch::Receiver<Applied>,
}

impl TaskRegistration {
    /// Starts the background worker for `task` (which must carry `consul`). `ready` turns
    /// true once the agent's stale-registration cleanup is over.
    pub fn spawn(
        registrar: Arc<ConsulRegistrar>,
        ready: watch::Receiver<bool>,
        task: Task,
    ) -> Self {
        let (want, want_rx) = watch::channel(Want::Nothing);
        let (applied_tx, applied) = watch::channel(Applied::Unknown);
        let service = task
            .template
            .consul
            .as_ref()
            .and_then(|c| c.name.clone())
            .unwrap_or_else(|| task.service.name.clone());
        let span = tracing::info_span!("consul", task = %task.id, service = %service, node = %task.node_id);
        let worker = Worker {
            registrar,
            ready,
            task,
            service,
            want: want_rx,
            applied: applied_tx,
        };
        tokio::spawn(worker.run().instrument(span));
        TaskRegistration { want, applied }
    }

    /// Asks for the task to be registered with `ports` (its host ports); returns at once.
    pub fn register(&self, ports: &[PortBinding]) {
        let want = Want::Registered(ports.to_vec());
        self.want.send_if_modified(|w| {
            let changed = *w != want;
            *w = want;
            changed
        });
    }

    /// Asks for the task to be deregistered; returns at once.
    pub fn deregister(&self) {
        self.want.send_if_modified(|w| {
            let changed = *w != Want::Deregistered;
            *w = Want::Deregistered;
            changed
        });
    }

    /// Asks for the task to be deregistered and waits until it is, at most `limit`; returns
    /// whether Consul confirmed it (otherwise the worker keeps trying in the background).
    pub async fn deregister_and_wait(&self, limit: Duration) -> bool {
        self.deregister();
        let mut applied = self.applied.clone();
        let done = applied.wait_for(|a| *a == Applied::Deregistered);
        matches!(tokio::time::timeout(limit, done).await, Ok(Ok(_)))
    }

    /// Whether Consul is known to hold the task's registration.
    pub fn is_registered(&self) -> bool {
        matches!(*self.applied.borrow(), Applied::Registered(_))
    }
}

struct Worker {
    registrar: Arc<ConsulRegistrar>,
    ready: watch::Receiver<bool>,
    task: Task,
    service: String,
    want: watch::Receiver<Want>,
    applied: watch::Sender<Applied>,
}

impl Worker {
    async fn run(mut self) {
        let mut delays = RETRY.delays();
        let mut orphan_attempts = 0u32;
        loop {
            let want = self.want.borrow_and_update().clone();
            let applied = self.applied.borrow().clone();
            let runner_gone = self.want.has_changed().is_err();
            let result = match (&want, &applied) {
                (Want::Registered(p), Applied::Registered(q) | Applied::Impossible(q))
                    if p == q =>
                {
                    None
                }
                (Want::Registered(_), _) if runner_gone => {
                    // The runner was dropped while its task runs (the agent is stopping):
                    // the registration stays with the task.
                    return;
                }
                (Want::Registered(ports), _) => {
                    // A gate whose sender is gone will never open: go ahead.
                    let ready = *self.ready.borrow() || self.ready.has_changed().is_err();
                    if !ready {
                        // Wait for the start-up cleanup, or for the runner to change its mind.
                        tokio::select! {
                            _ = self.ready.wait_for(|r| *r) => {}
                            _ = self.want.changed() => {}
                        }
                        continue;
                    }
                    Some(self.register(ports).await)
                }
                (Want::Deregistered, Applied::Deregistered) => None,
                (Want::Deregistered, _) => {
                    if runner_gone {
                        orphan_attempts += 1;
                        if orphan_attempts > ORPHAN_DEREGISTER_ATTEMPTS {
                            tracing::warn!(
                                "giving up deregistering the task from consul; consul's critical-service reaping or the next agent start removes it"
                            );
                            return;
                        }
                    }
                    Some(self.deregister().await)
                }
                (Want::Nothing, _) => None,
            };
            match result {
                Some(Ok(())) => {
                    delays.reset();
                    continue;
                }
                Some(Err(())) => {
                    let wait = delays.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        r = self.want.changed() => {
                            if r.is_err() {
                                // The runner is gone: finish the retry wait, then go on.
                                tokio::time::sleep(wait).await;
                            }
                        }
                    }
                }
                None => {
                    if self.want.changed().await.is_err() {
                        // The runner is gone and nothing is pending.
                        return;
                    }
                }
            }
        }
    }

    async fn register(&self, ports: &[PortBinding]) -> Result<(), ()> {
        match self.registrar.register(&self.task, ports).await {
            Ok(registered) => {
                if registered {
                    tracing::info!(port = ?ports, "task registered in consul");
                } else {
                    tracing::debug!("task publishes no port; nothing registered in consul");
                }
                self.applied
                    .send_replace(Applied::Registered(ports.to_vec()));
                Ok(())
            }
            Err(e @ DiscoveryError::NoPort { .. }) => {
                tracing::warn!(error = %e, "task cannot be registered in consul");
                self.applied
                    .send_replace(Applied::Impossible(ports.to_vec()));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, task = %self.task.id, service = %self.service, "cannot register the task in consul; retrying (the task is not affected)");
                Err(())
            }
        }
    }

    async fn deregister(&self) -> Result<(), ()> {
        match self.registrar.deregister(&self.task.id).await {
            Ok(()) => {
                tracing::info!("task deregistered from consul");
                self.applied.send_replace(Applied::Deregistered);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, task = %self.task.id, service = %self.service, "cannot deregister the task from consul; retrying");
                Err(())
            }
        }
    }
}
