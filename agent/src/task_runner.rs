//! The task runner: one per task, a state machine that drives the runtime one step at a time
//! (`assigned → accepted → preparing → starting → running → {complete | failed | shutdown |
//! rejected}`) and reports the task's status at every change.
//!
//! States only move forward. Temporary runtime errors are retried with backoff; permanent
//! ones end the task (`rejected` when preparing, `failed` when starting) with the runtime's
//! message. A task that exits while it should run ends `complete` (code 0) or `failed`; so does
//! a running task whose healthcheck reports unhealthy, which the runner stops first (as Swarm
//! does). The agent never restarts a task (the controller does, as a new task). When the desired state
//! becomes `shutdown` the runner stops the task within its grace period, reports `shutdown`
//! and removes the container. When the assignment is deleted the runner cleans up the
//! container and writes nothing more.
//!
//! Discovery: with a Consul registrar in the context, a running task whose template has
//! `consul` is registered (in the background, retried while Consul is down); it is
//! deregistered before its container is stopped (waiting at most
//! [`DEREGISTER_WAIT`](crate::discovery::task::DEREGISTER_WAIT)) and when it exits on its own.
//!
//! Secrets and configs: a task that uses any gets them in `preparing`, after the runtime's own
//! preparation: the [`Delivery`] fetches them from the API and writes them to the task's
//! in-memory directory. While the API cannot answer the task waits in `preparing`, the reason
//! in its status message, and tries again with backoff; a refusal (the object is gone, or the
//! node may not have it) rejects the task. The files are removed when the task ends.
//!
//! Parking: on a runtime that reports exits itself ([`Runtime::exit_notices`], the sim
//! runtime), the runner of a task that simply runs (no healthcheck, no registration) ends
//! and hands back a [`Parked`] record: the few bytes needed to pick the task up again with
//! [`resume`] when it exits or the controller's wishes change. So does the runner of a task
//! that ended while its assignment stays (a task kept in its service's history): its record
//! is resumed when the assignment is deleted, to remove the container. Hollow nodes then cost
//! one small record per task instead of a waiting runner.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use shoal_core::keys::Keys;
use shoal_core::model::{self, DesiredState, Health, Task, TaskState, TaskStatus, Timestamp};
use shoal_store::retry::{Backoff, Delays};
use tokio::sync::watch;
use tracing::Instrument;

use crate::discovery::ConsulRegistrar;
use crate::discovery::task::TaskRegistration;
use crate::runtime::{Existing, Exit, Handle, Runtime, RuntimeError, TaskFiles};
use crate::secrets::{Delivery, DeliveryError};
use crate::status::StatusSink;

mod parked;
mod registration;

pub use parked::Parked;
pub(crate) use parked::ServiceNames;
use parked::StopSpec;

/// How often the runner asks the runtime for the health of a task with a healthcheck.
pub const HEALTH_POLL: Duration = Duration::from_millis(500);

/// Longest wait between two attempts to fetch a task's secrets and configs.
pub const DELIVERY_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the worker tells a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// The controller's desired state for the task.
    pub desired: DesiredState,
    /// The assignment was deleted: clean up and end.
    pub deleted: bool,
}

/// What every runner of an agent shares.
#[derive(Clone)]
pub struct TaskRunnerContext {
    /// Runtime that runs the tasks.
    pub runtime: Arc<dyn Runtime>,
    /// Where statuses go.
    pub status: StatusSink,
    /// Key layout.
    pub keys: Keys,
    /// Registers running tasks in the node's Consul agent (`None`: no discovery).
    pub discovery: Option<Arc<ConsulRegistrar>>,
    /// Turns true once the agent's start-up cleanup of stale registrations is over;
    /// registrations wait for it.
    pub discovery_ready: watch::Receiver<bool>,
    /// Runners of simply running tasks may park (the worker hears of exits from the runtime).
    pub parks: bool,
    /// Fetches the tasks' secrets and configs from the API (`None`: tasks that use any are
    /// rejected).
    pub delivery: Option<Arc<Delivery>>,
}

impl TaskRunnerContext {
    /// A context without discovery.
    pub fn new(runtime: Arc<dyn Runtime>, status: StatusSink, keys: Keys) -> Self {
        TaskRunnerContext {
            runtime,
            status,
            keys,
            discovery: None,
            discovery_ready: watch::channel(true).1,
            parks: false,
            delivery: None,
        }
    }
}

impl std::fmt::Debug for TaskRunnerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRunnerContext")
            .field("runtime", &self.runtime.name())
            .field("discovery", &self.discovery.is_some())
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// Why the runner stopped driving the task forward.
enum Interrupt {
    /// Desired state became shutdown.
    Shutdown,
    /// The assignment was deleted.
    Deleted,
}

struct TaskRunner {
    ctx: TaskRunnerContext,
    /// The assignment, until the task runs; `None` for a resumed runner (it never needs it:
    /// runners only park when nothing more is asked of the template than `stop`).
    task: Option<Task>,
    stop: StopSpec,
    /// `<namespace>/<name>` of the owning service (for logs).
    service: Arc<String>,
    checks_health: bool,
    key: String,
    status: TaskStatus,
    control: watch::Receiver<Control>,
    handle: Option<Handle>,
    registration: Option<TaskRegistration>,
    /// `(node, task)` of a task that uses secrets or configs: its delivered files are removed
    /// when it ends.
    delivered: Option<(String, String)>,
    /// An ended task's record, when the runner parked it instead of waiting for its
    /// assignment to be deleted (see [`TaskRunner::park_ended`]).
    ended: Option<Box<Parked>>,
}

fn span(task_id: &str, service: &str, node: &str) -> tracing::Span {
    tracing::info_span!("task", task = %task_id, service = %service, node = %node)
}

/// Runs one task to its end, or until it parks (see the module docs). `prior` is the status
/// already in the store (after an agent restart); `adopted` is the task's container found by
/// its labels, which is adopted as is (never restarted).
pub fn run(
    ctx: TaskRunnerContext,
    task: Task,
    control: watch::Receiver<Control>,
    prior: Option<TaskStatus>,
    adopted: Option<Existing>,
) -> impl Future<Output = Option<Box<Parked>>> + Send + 'static {
    let service = Arc::new(format!("{}/{}", task.service.namespace, task.service.name));
    let span = span(&task.id, &service, &task.node_id);
    let key = ctx.keys.task_status(&task.node_id, &task.id);
    let status = prior
        .unwrap_or_else(|| TaskStatus::new(task.id.clone(), TaskState::Assigned, Timestamp::now()));
    let uses_files = !(task.template.secrets.is_empty() && task.template.configs.is_empty());
    let runner = TaskRunner {
        ctx,
        stop: StopSpec::of(&task),
        service,
        checks_health: task.template.healthcheck.is_some(),
        delivered: uses_files.then(|| (task.node_id.clone(), task.id.clone())),
        task: Some(task),
        key,
        status,
        control,
        handle: None,
        registration: None,
        ended: None,
    };
    // Boxed: only the state the runner is in takes memory, not the largest of them all.
    Box::pin(async move {
        let mut runner = runner;
        let parked = runner.drive(adopted).await;
        parked.or_else(|| runner.ended.take())
    })
    .instrument(span)
}

/// Picks up a parked task of `node` again: it exited (the runtime said so) or the controller's
/// wishes changed. Parks again when neither is the case after all.
pub fn resume(
    ctx: TaskRunnerContext,
    node: &str,
    task_id: &str,
    parked: Parked,
    control: watch::Receiver<Control>,
) -> impl Future<Output = Option<Box<Parked>>> + Send + 'static {
    let span = span(task_id, parked.service(), node);
    let (status, service, stop) = parked.into_parts(task_id.to_string());
    let handle = status.container_id.clone().map(|id| Handle {
        id,
        host_ports: status.host_ports.clone(),
    });
    let runner = TaskRunner {
        key: ctx.keys.task_status(node, task_id),
        ctx,
        task: None,
        stop,
        service,
        checks_health: false,
        status,
        control,
        handle,
        registration: None,
        delivered: None,
        ended: None,
    };
    Box::pin(async move {
        let mut runner = runner;
        if runner.status.state.is_terminal() {
            // Only the deletion of its assignment concerns an ended task.
            runner.linger().await;
            return runner.ended.take();
        }
        let parked = runner.monitor().await;
        parked.or_else(|| runner.ended.take())
    })
    .instrument(span)
}

/// Retries of runtime steps (pull, create, start, ...).
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

fn backoff() -> Delays {
    RETRY.delays()
}

impl TaskRunner {
    fn interrupt(&self) -> Option<Interrupt> {
        let c = *self.control.borrow();
        if c.deleted {
            Some(Interrupt::Deleted)
        } else if c.desired == DesiredState::Shutdown {
            Some(Interrupt::Shutdown)
        } else {
            None
        }
    }

    /// Resolves when the runner must stop (desired shutdown or deletion).
    async fn interrupted(control: &mut watch::Receiver<Control>) -> Interrupt {
        loop {
            {
                let c = *control.borrow_and_update();
                if c.deleted {
                    return Interrupt::Deleted;
                }
                if c.desired == DesiredState::Shutdown {
                    return Interrupt::Shutdown;
                }
            }
            if control.changed().await.is_err() {
                // The worker is gone (agent shutting down): leave the task as it is.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The assignment is gone: delete the task's status and what the runtime keeps of it.
    fn forget(&self) {
        self.ctx.status.remove(self.key.clone());
        if let Some(shoal_core::keys::Key::TaskStatus { node, task }) =
            self.ctx.keys.parse(&self.key)
        {
            let rt = self.ctx.runtime.clone();
            tokio::spawn(async move { rt.discard(&node, &task).await });
        }
    }

    fn write(&mut self) {
        self.status.updated_at = Timestamp::now();
        self.ctx
            .status
            .put(self.key.clone(), model::encode(&self.status));
    }

    fn transition(&mut self, to: TaskState, message: Option<String>) {
        if let Err(e) = self.status.state.check_transition(to) {
            tracing::debug!(error = %e, "state change skipped");
            return;
        }
        tracing::info!(from = %self.status.state, to = %to, message = message.as_deref().unwrap_or(""), "task state");
        self.status.state = to;
        if message.is_some() {
            self.status.message = message;
        }
        let now = Timestamp::now();
        if to == TaskState::Running && self.status.started_at.is_none() {
            self.status.started_at = Some(now);
        }
        if to.is_terminal() {
            self.status.finished_at = Some(now);
            self.discard_files();
        }
        self.write();
    }

    /// Removes the task's delivered secrets and configs, if it has any.
    fn discard_files(&self) {
        if let (Some(d), Some((node, task))) = (&self.ctx.delivery, &self.delivered) {
            d.discard(node, task);
        }
    }

    /// Fetches the task's secrets and configs, waiting in `preparing` (with the reason in the
    /// status) while the API cannot answer. `None` when the runner is done.
    async fn deliver_files(&mut self, task: &Task) -> Option<TaskFiles> {
        if self.delivered.is_none() {
            return Some(TaskFiles::default());
        }
        let Some(delivery) = self.ctx.delivery.clone() else {
            self.transition(
                TaskState::Rejected,
                Some(
                    "the task uses secrets or configs, but this agent has no API to fetch them \
                     from: start it with --api URL --api-token-file FILE"
                        .into(),
                ),
            );
            self.linger().await;
            return None;
        };
        // Retried more often than runtime steps: the task starts soon after the API is back.
        let mut delays = RETRY.with_max(DELIVERY_RETRY_MAX).delays();
        loop {
            let res = tokio::select! {
                r = delivery.deliver(task) => r,
                i = Self::interrupted(&mut self.control) => {
                    self.end_before_start(i);
                    return None;
                }
            };
            let reason = match res {
                Ok(files) => {
                    self.status.message = None;
                    return Some(files);
                }
                Err(DeliveryError::Unavailable(reason)) => reason,
                Err(e) => {
                    self.transition(TaskState::Rejected, Some(e.to_string()));
                    self.linger().await;
                    return None;
                }
            };
            let message =
                format!("waiting for the API to deliver the task's secrets and configs: {reason}");
            if self.status.message.as_deref() != Some(message.as_str()) {
                tracing::warn!(%reason, "waiting for the task's secrets and configs");
                self.status.message = Some(message);
                self.write();
            }
            let delay = delays.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                i = Self::interrupted(&mut self.control) => {
                    self.end_before_start(i);
                    return None;
                }
            }
        }
    }

    fn set_handle(&mut self, h: Handle) {
        self.status.container_id = Some(h.id.clone());
        self.status.host_ports = h.host_ports.clone();
        self.handle = Some(h);
    }

    /// Ends the runner, keeping what [`resume`] needs.
    fn park(&mut self) -> Box<Parked> {
        Box::new(Parked::new(&self.status, self.service.clone(), &self.stop))
    }

    async fn drive(&mut self, adopted: Option<Existing>) -> Option<Box<Parked>> {
        if self.status.state.is_terminal() {
            // Nothing to run; remove what is left once told to.
            if let Some(ex) = adopted {
                self.handle = Some(ex.handle);
            }
            self.linger().await;
            return None;
        }
        match adopted {
            Some(ex) => {
                tracing::info!(container = %ex.handle.id, "adopting the task's container");
                self.set_handle(ex.handle);
                if let Some(exit) = ex.exit {
                    self.deregister();
                    self.finish(exit);
                    self.linger().await;
                    return None;
                }
                if self.status.state < TaskState::Running {
                    if self.checks_health {
                        self.status.health = Some(Health::Starting);
                    }
                    self.transition(TaskState::Running, None);
                }
                // Registering again is harmless and repairs a registration lost meanwhile.
                self.register();
            }
            None if self.status.state >= TaskState::Starting => {
                self.deregister();
                self.transition(
                    TaskState::Failed,
                    Some(
                        "the task's container is gone (it did not survive an agent restart)".into(),
                    ),
                );
                self.linger().await;
                return None;
            }
            None => {
                if !self.start().await {
                    return None;
                }
            }
        }
        self.monitor().await
    }

    /// Walks accepted → preparing → starting → running. Returns false when the runner is done.
    async fn start(&mut self) -> bool {
        self.transition(TaskState::Accepted, None);
        if let Some(i) = self.interrupt() {
            self.end_before_start(i);
            return false;
        }
        self.transition(TaskState::Preparing, None);
        let rt = self.ctx.runtime.clone();
        let Some(task) = self.task.clone() else {
            return false;
        };
        let prepare = (|| rt.prepare(&task))
            .retry(backoff())
            .when(RuntimeError::is_temporary)
            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "prepare failed; retrying"));
        let res = tokio::select! {
            r = prepare => r,
            i = Self::interrupted(&mut self.control) => {
                self.end_before_start(i);
                return false;
            }
        };
        if let Err(e) = res {
            self.transition(TaskState::Rejected, Some(e.to_string()));
            self.linger().await;
            return false;
        }
        let Some(files) = self.deliver_files(&task).await else {
            return false;
        };
        if let Some(i) = self.interrupt() {
            self.end_before_start(i);
            return false;
        }
        self.transition(TaskState::Starting, None);
        let start = (|| rt.start(&task, &files))
            .retry(backoff())
            .when(RuntimeError::is_temporary)
            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "start failed; retrying"));
        match start.await {
            Ok(h) => {
                tracing::info!(container = %h.id, "task started");
                self.set_handle(h);
                if self.checks_health {
                    self.status.health = Some(Health::Starting);
                }
                self.transition(TaskState::Running, None);
                self.register();
                true
            }
            Err(e) => {
                self.transition(TaskState::Failed, Some(e.to_string()));
                self.linger().await;
                false
            }
        }
    }

    fn end_before_start(&mut self, i: Interrupt) {
        self.discard_files();
        match i {
            Interrupt::Shutdown => {
                self.transition(
                    TaskState::Shutdown,
                    Some("shut down before it started".into()),
                );
            }
            Interrupt::Deleted => self.forget(),
        }
    }

    fn finish(&mut self, exit: Exit) {
        self.status.exit_code = Some(exit.code);
        if exit.code == 0 {
            self.transition(TaskState::Complete, exit.message);
        } else {
            let mut msg = format!("task exited with code {}", exit.code);
            if let Some(m) = exit.message {
                msg.push_str(": ");
                msg.push_str(&m);
            }
            self.transition(TaskState::Failed, Some(msg));
        }
    }

    /// Watches a running task: its exit, its health, and the controller's wishes. Returns the
    /// parked record when the runner may park (see the module docs) and nothing is happening.
    async fn monitor(&mut self) -> Option<Box<Parked>> {
        let handle = self.handle.clone()?;
        // Checked once both the exit and the controller's wishes were polled: an exit after
        // that comes as a notice to the worker, a change of wishes through the worker.
        let can_park = self.ctx.parks && !self.checks_health && self.never_registers();
        let rt = self.ctx.runtime.clone();
        let wait_rt = rt.clone();
        let wait_handle = handle.clone();
        let wait = async move { wait_rt.wait(&wait_handle).await };
        tokio::pin!(wait);
        let checks_health = self.checks_health;
        let mut tick = tokio::time::interval(HEALTH_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut control = self.control.clone();
            tokio::select! {
                biased;
                exit = &mut wait => {
                    self.deregister();
                    match exit {
                        Ok(exit) => self.finish(exit),
                        Err(e) => self.transition(TaskState::Failed, Some(e.to_string())),
                    }
                    Box::pin(self.linger()).await;
                    return None;
                }
                i = Self::interrupted(&mut control) => {
                    Box::pin(self.stop(i)).await;
                    return None;
                }
                _ = tick.tick(), if checks_health => {
                    match rt.health(&handle).await {
                        Ok(Some(h)) if self.status.health != Some(h) => {
                            tracing::info!(health = ?h, "task health");
                            self.status.health = Some(h);
                            if h == Health::Unhealthy {
                                Box::pin(self.fail_unhealthy()).await;
                                return None;
                            }
                            self.write();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "health check query failed"),
                    }
                }
                _ = std::future::ready(()), if can_park => return Some(self.park()),
            }
        }
    }

    /// As in Swarm: a running task whose healthcheck reports unhealthy is stopped and ends
    /// `failed`; the controller replaces it under the service's restart policy.
    async fn fail_unhealthy(&mut self) {
        let Some(handle) = self.handle.clone() else {
            return;
        };
        self.deregister_before_stop().await;
        tracing::warn!(container = %handle.id, "task unhealthy; stopping it");
        self.stop_container(&handle).await;
        self.record_exit(&handle).await;
        self.transition(
            TaskState::Failed,
            Some("unhealthy container: the healthcheck failed; task stopped".into()),
        );
        self.linger().await;
    }

    async fn stop(&mut self, i: Interrupt) {
        let Some(handle) = self.handle.clone() else {
            return;
        };
        self.deregister_before_stop().await;
        tracing::info!(container = %handle.id, grace = ?self.stop.grace, "stopping task");
        self.stop_container(&handle).await;
        if matches!(i, Interrupt::Shutdown) {
            self.record_exit(&handle).await;
            self.transition(TaskState::Shutdown, None);
        } else {
            self.forget();
        }
        self.remove_when_deleted(matches!(i, Interrupt::Shutdown))
            .await;
    }

    /// Stops the container with the task's stop signal and grace period, retrying the runtime's
    /// temporary errors.
    async fn stop_container(&self, handle: &Handle) {
        let rt = self.ctx.runtime.clone();
        let grace = self.stop.grace;
        let signal = self.stop.signal().to_string();
        let stop = (|| rt.stop(handle, &signal, grace))
            .retry(backoff().with_max_times(5))
            .when(RuntimeError::is_temporary);
        if let Err(e) = stop.await {
            tracing::warn!(error = %e, "stop failed");
        }
    }

    /// Records the stopped container's exit code, if the runtime reports it within 2 s.
    async fn record_exit(&mut self, handle: &Handle) {
        let rt = self.ctx.runtime.clone();
        if let Ok(Ok(exit)) = tokio::time::timeout(Duration::from_secs(2), rt.wait(handle)).await {
            self.status.exit_code = Some(exit.code);
        }
    }

    /// Removes the task's container, at once when its assignment is gone, else (a shut down
    /// task) once the assignment leaves the task history: until then the stopped container
    /// keeps the task's output for `shoal logs`.
    async fn remove_when_deleted(&mut self, shut_down: bool) {
        if shut_down && self.park_ended() {
            return;
        }
        if !shut_down || self.wait_deleted().await {
            self.remove().await;
        }
    }

    async fn remove(&mut self) {
        self.discard_files();
        let Some(handle) = self.handle.take() else {
            return;
        };
        let rt = self.ctx.runtime.clone();
        let remove = (|| rt.remove(&handle))
            .retry(backoff().with_max_times(5))
            .when(RuntimeError::is_temporary);
        if let Err(e) = remove.await {
            tracing::warn!(error = %e, container = %handle.id, "cannot remove the task's container");
        }
    }

    /// After the task ended: waits for shutdown or deletion, then removes the container.
    async fn linger(&mut self) {
        if self.park_ended() {
            return;
        }
        let i = Self::interrupted(&mut self.control).await;
        if matches!(i, Interrupt::Deleted) {
            self.forget();
        }
        self.remove_when_deleted(matches!(i, Interrupt::Shutdown))
            .await;
    }

    /// On a runtime whose runners park, an ended task whose assignment is still there (a shut
    /// down or exited task kept in the service's history) is parked rather than waited for:
    /// its record goes to the worker, which resumes it when the assignment is deleted. True
    /// when the runner parked it (and must end).
    fn park_ended(&mut self) -> bool {
        if !self.ctx.parks || self.control.borrow().deleted {
            return false;
        }
        self.ended = Some(self.park());
        true
    }

    /// Waits until the assignment is deleted and forgets the task (true), or until the agent
    /// stops (false).
    async fn wait_deleted(&mut self) -> bool {
        while !self.control.borrow_and_update().deleted {
            if self.control.changed().await.is_err() {
                return false;
            }
        }
        self.forget();
        true
    }
}
