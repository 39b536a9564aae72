//! The `sim` runtime: runs nothing. Tasks walk their states at once, which makes it cheap
//! enough for one process to host thousands of hollow nodes.
//!
//! Failure injection by image name:
//! - `missing/...`: prepare fails permanently (as if the image did not exist),
//! - `fail/...`: start fails permanently,
//! - `crash/...`: the task exits with code 1 shortly after it starts,
//! - `unhealthy/...`: with a healthcheck, the task never becomes healthy.
//!
//! State lives in this process only; an agent restarted with the same [`SimRuntime`] value
//! adopts its tasks like the docker runtime would.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{Health, PortBinding, Task};
use tokio::sync::watch;

use super::{Existing, Exit, Handle, Runtime, RuntimeError};

/// How long a `crash/` task runs before it exits.
pub const CRASH_AFTER: Duration = Duration::from_millis(300);

/// First dynamic host port the simulation hands out.
const FIRST_DYNAMIC_PORT: u64 = 30_000;

struct Entry {
    task_id: String,
    node_id: String,
    host_ports: Vec<PortBinding>,
    health: Option<Health>,
    exit: watch::Sender<Option<Exit>>,
}

/// A runtime that only pretends.
pub struct SimRuntime {
    entries: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

impl Default for SimRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime").finish_non_exhaustive()
    }
}

impl SimRuntime {
    /// An empty simulation.
    pub fn new() -> Self {
        SimRuntime {
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// Number of tasks the simulation currently holds (running or exited, not removed).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the simulation holds no task.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes a running task exit with `code`, as if it crashed (for tests).
    pub fn exit(&self, handle_id: &str, code: i64) {
        if let Some(e) = self.lock().get(handle_id) {
            e.exit.send_if_modified(|x| set_exit(x, code));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn set_exit(slot: &mut Option<Exit>, code: i64) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(Exit {
        code,
        message: None,
    });
    true
}

fn image(task: &Task) -> &str {
    task.template.image.as_deref().unwrap_or("")
}

#[async_trait::async_trait]
impl Runtime for SimRuntime {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn offers(&self) -> Vec<RuntimeKind> {
        vec![RuntimeKind::Docker, RuntimeKind::Process]
    }

    fn tasks_outlive_agent(&self) -> bool {
        true
    }

    async fn prepare(&self, task: &Task) -> Result<(), RuntimeError> {
        let img = image(task);
        if img.starts_with("missing/") {
            return Err(RuntimeError::Permanent(format!(
                "No such image: {img} (simulated)"
            )));
        }
        Ok(())
    }

    async fn start(&self, task: &Task) -> Result<Handle, RuntimeError> {
        let img = image(task);
        if img.starts_with("fail/") {
            return Err(RuntimeError::Permanent(format!(
                "simulated start failure for image {img}"
            )));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("sim-{n:08}");
        let host_ports = task
            .template
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortBinding {
                target: p.target,
                published: p.published.unwrap_or_else(|| {
                    ((FIRST_DYNAMIC_PORT + (n * 8 + i as u64) % 30_000) as u16).max(1)
                }),
                protocol: p.protocol,
            })
            .collect::<Vec<_>>();
        let health = task.template.healthcheck.as_ref().map(|_| {
            if img.starts_with("unhealthy/") {
                Health::Unhealthy
            } else {
                Health::Healthy
            }
        });
        let (tx, _) = watch::channel(None);
        if img.starts_with("crash/") {
            let crash = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CRASH_AFTER).await;
                crash.send_if_modified(|x| set_exit(x, 1));
            });
        }
        self.lock().insert(
            id.clone(),
            Entry {
                task_id: task.id.clone(),
                node_id: task.node_id.clone(),
                host_ports: host_ports.clone(),
                health,
                exit: tx,
            },
        );
        Ok(Handle { id, host_ports })
    }

    async fn wait(&self, handle: &Handle) -> Result<Exit, RuntimeError> {
        let rx = self.lock().get(&handle.id).map(|e| e.exit.subscribe());
        let Some(mut rx) = rx else {
            return Err(RuntimeError::Permanent(format!(
                "no such task {}",
                handle.id
            )));
        };
        match rx.wait_for(|x| x.is_some()).await {
            Ok(x) => Ok(x.clone().unwrap_or(Exit {
                code: 0,
                message: None,
            })),
            Err(_) => Err(RuntimeError::Permanent(format!(
                "task {} was removed",
                handle.id
            ))),
        }
    }

    async fn health(&self, handle: &Handle) -> Result<Option<Health>, RuntimeError> {
        Ok(self.lock().get(&handle.id).and_then(|e| e.health))
    }

    async fn stop(
        &self,
        handle: &Handle,
        _signal: &str,
        _grace: Duration,
    ) -> Result<(), RuntimeError> {
        if let Some(e) = self.lock().get(&handle.id) {
            e.exit.send_if_modified(|x| set_exit(x, 143));
        }
        Ok(())
    }

    async fn remove(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.lock().remove(&handle.id);
        Ok(())
    }

    async fn list(&self, nodes: &BTreeSet<String>) -> Result<Vec<Existing>, RuntimeError> {
        let mut out: Vec<Existing> = self
            .lock()
            .iter()
            .filter(|(_, e)| nodes.contains(&e.node_id))
            .map(|(id, e)| Existing {
                task_id: e.task_id.clone(),
                node_id: e.node_id.clone(),
                handle: Handle {
                    id: id.clone(),
                    host_ports: e.host_ports.clone(),
                },
                exit: e.exit.borrow().clone(),
            })
            .collect();
        out.sort_by(|a, b| a.handle.id.cmp(&b.handle.id));
        Ok(out)
    }
}
