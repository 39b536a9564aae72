//! The `sim` runtime: runs nothing. Tasks walk their states at once, which makes it cheap
//! enough for one process to host thousands of hollow nodes.
//!
//! Failure injection by image name:
//! - `missing/...`: prepare fails permanently (as if the image did not exist),
//! - `fail/...`: start fails permanently,
//! - `crash/...`: the task exits with code 1 shortly after it starts,
//! - `done/...`: the task exits with code 0 after the duration its tag names (`done/job:2s`;
//!   [`CRASH_AFTER`] without a tag), as a job's task does,
//! - `unhealthy/...`: with a healthcheck, the task never becomes healthy.
//!
//! State lives in this process only; an agent restarted with the same [`SimRuntime`] value
//! adopts its tasks like the docker runtime would.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compact_str::CompactString;
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{Health, PortBinding, Task};
use tokio::sync::{mpsc, watch};

use super::{Existing, Exit, ExitNotice, Handle, Runtime, RuntimeError, TaskFiles};

mod table;
use table::Table;

/// How long a `crash/` task runs before it exits.
pub const CRASH_AFTER: Duration = Duration::from_millis(300);

/// First dynamic host port the simulation hands out.
const FIRST_DYNAMIC_PORT: u64 = 30_000;

/// Prefix of simulated handle ids (`sim-00000042`).
const HANDLE_PREFIX: &str = "sim-";

/// Where a task runs: its node and the cluster it was labelled with. One is shared by
/// every task a node started under the same cluster.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    node_id: Box<str>,
    cluster: Option<Arc<str>>,
}

/// One simulated task, kept small: hollow agents hold one per task.
struct Entry {
    /// In place when short (up to 24 bytes).
    task_id: CompactString,
    origin: Arc<Origin>,
    /// What few tasks have: published ports, a health, an exit (`None` while none is set).
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    host_ports: Box<[PortBinding]>,
    health: Option<Health>,
    exit: Option<Exit>,
}

impl Entry {
    /// A task just started (no exit yet).
    fn new(
        task_id: &str,
        origin: Arc<Origin>,
        host_ports: &[PortBinding],
        health: Option<Health>,
    ) -> Self {
        let extra = (!host_ports.is_empty() || health.is_some()).then(|| {
            Box::new(Extra {
                host_ports: host_ports.into(),
                health,
                exit: None,
            })
        });
        Entry {
            task_id: task_id.into(),
            origin,
            extra,
        }
    }

    fn exit(&self) -> Option<&Exit> {
        self.extra.as_ref()?.exit.as_ref()
    }

    fn set_exit(&mut self, exit: Exit) {
        self.extra.get_or_insert_with(Box::default).exit = Some(exit);
    }

    fn health(&self) -> Option<Health> {
        self.extra.as_ref()?.health
    }

    fn host_ports(&self) -> &[PortBinding] {
        self.extra.as_ref().map_or(&[], |x| &x.host_ports)
    }
}

#[derive(Default)]
struct State {
    /// Labelled on every task started from now on.
    cluster: Option<Arc<str>>,
    /// Tasks by the number in their handle id.
    entries: Table<Entry>,
    /// Each node's origin under the current cluster, shared by its tasks.
    origins: HashMap<Box<str>, Arc<Origin>>,
    /// Workers that asked to hear about exits.
    notices: Vec<mpsc::UnboundedSender<ExitNotice>>,
}

impl State {
    /// The origin of a task `node` starts now (under the current cluster).
    fn origin(&mut self, node: &str) -> Arc<Origin> {
        match self.origins.get(node) {
            Some(o) if o.cluster == self.cluster => o.clone(),
            _ => {
                let o = Arc::new(Origin {
                    node_id: node.into(),
                    cluster: self.cluster.clone(),
                });
                self.origins.insert(node.into(), o.clone());
                o
            }
        }
    }

    /// Drops the shared origin once the last task that had it (`origin`, being removed) goes.
    fn forget_origin(&mut self, origin: &Arc<Origin>) {
        let shared = self.origins.get(&origin.node_id);
        if Arc::strong_count(origin) == 2 && shared.is_some_and(|o| Arc::ptr_eq(o, origin)) {
            self.origins.remove(&origin.node_id);
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Bumped whenever a task exits or is removed; waiters look again.
    changes: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an exit (the first one wins) and tells waiters and workers.
    fn exit(&self, n: u64, code: i64) {
        let mut st = self.lock();
        let State {
            entries, notices, ..
        } = &mut *st;
        let Some(e) = entries.get_mut(n) else {
            return;
        };
        if e.exit().is_some() {
            return;
        }
        e.set_exit(Exit {
            code,
            message: None,
        });
        let notice = ExitNotice {
            node_id: e.origin.node_id.to_string(),
            task_id: e.task_id.to_string(),
        };
        notices.retain(|tx| tx.send(notice.clone()).is_ok());
        drop(st);
        self.changes.send_modify(|c| *c = c.wrapping_add(1));
    }
}

/// A runtime that only pretends.
pub struct SimRuntime {
    shared: Arc<Shared>,
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
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changes: watch::channel(0).0,
            }),
            next: AtomicU64::new(0),
        }
    }

    /// Number of tasks the simulation currently holds (running or exited, not removed).
    pub fn len(&self) -> usize {
        self.shared.lock().entries.len()
    }

    /// Whether the simulation holds no task.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes a running task exit with `code`, as if it crashed (for tests).
    pub fn exit(&self, handle_id: &str, code: i64) {
        if let Some(n) = parse_handle(handle_id) {
            self.shared.exit(n, code);
        }
    }
}

fn handle_id(n: u64) -> String {
    format!("{HANDLE_PREFIX}{n:08}")
}

fn parse_handle(id: &str) -> Option<u64> {
    id.strip_prefix(HANDLE_PREFIX)?.parse().ok()
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

    fn set_cluster(&self, cluster: &str) {
        self.shared.lock().cluster = Some(Arc::from(cluster));
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

    async fn start(&self, task: &Task, _files: &TaskFiles) -> Result<Handle, RuntimeError> {
        let img = image(task);
        if img.starts_with("fail/") {
            return Err(RuntimeError::Permanent(format!(
                "simulated start failure for image {img}"
            )));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = handle_id(n);
        let host_ports = task
            .template
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortBinding {
                target: p.target,
                published: p.host_port().unwrap_or_else(|| {
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
        {
            let mut st = self.shared.lock();
            let origin = st.origin(&task.node_id);
            let entry = Entry::new(&task.id, origin, &host_ports, health);
            st.entries.insert(n, entry);
        }
        if img.starts_with("crash/") {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CRASH_AFTER).await;
                shared.exit(n, 1);
            });
        }
        if img.starts_with("done/") {
            let after = img
                .rsplit_once(':')
                .and_then(|(_, tag)| tag.parse::<shoal_core::units::Dur>().ok())
                .map(shoal_core::units::Dur::get)
                .unwrap_or(CRASH_AFTER);
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                shared.exit(n, 0);
            });
        }
        Ok(Handle { id, host_ports })
    }

    async fn wait(&self, handle: &Handle) -> Result<Exit, RuntimeError> {
        let removed = || RuntimeError::Permanent(format!("task {} was removed", handle.id));
        let n = parse_handle(&handle.id);
        let mut changes = self.shared.changes.subscribe();
        let mut first = true;
        loop {
            match n.and_then(|n| self.shared.lock().entries.get(n).map(|e| e.exit().cloned())) {
                Some(Some(exit)) => return Ok(exit),
                Some(None) => {}
                None if first => {
                    return Err(RuntimeError::Permanent(format!(
                        "no such task {}",
                        handle.id
                    )));
                }
                None => return Err(removed()),
            }
            first = false;
            if changes.changed().await.is_err() {
                return Err(removed());
            }
        }
    }

    async fn health(&self, handle: &Handle) -> Result<Option<Health>, RuntimeError> {
        let Some(n) = parse_handle(&handle.id) else {
            return Ok(None);
        };
        Ok(self.shared.lock().entries.get(n).and_then(Entry::health))
    }

    async fn stop(
        &self,
        handle: &Handle,
        _signal: &str,
        _grace: Duration,
    ) -> Result<(), RuntimeError> {
        if let Some(n) = parse_handle(&handle.id) {
            self.shared.exit(n, 143);
        }
        Ok(())
    }

    async fn remove(&self, handle: &Handle) -> Result<(), RuntimeError> {
        if let Some(n) = parse_handle(&handle.id) {
            let mut st = self.shared.lock();
            if let Some(e) = st.entries.remove(n) {
                // Drop the interned node id once its last task is gone.
                st.forget_origin(&e.origin);
            }
            drop(st);
            self.shared.changes.send_modify(|c| *c = c.wrapping_add(1));
        }
        Ok(())
    }

    fn exit_notices(&self) -> Option<mpsc::UnboundedReceiver<ExitNotice>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.lock().notices.push(tx);
        Some(rx)
    }

    async fn list(&self, nodes: &BTreeSet<String>) -> Result<Vec<Existing>, RuntimeError> {
        let mut out: Vec<Existing> = self
            .shared
            .lock()
            .entries
            .iter()
            .filter(|(_, e)| nodes.contains(&*e.origin.node_id))
            .map(|(n, e)| Existing {
                task_id: e.task_id.to_string(),
                node_id: e.origin.node_id.to_string(),
                handle: Handle {
                    id: handle_id(n),
                    host_ports: e.host_ports().to_vec(),
                },
                exit: e.exit().cloned(),
                cluster: e.origin.cluster.as_deref().map(str::to_string),
            })
            .collect();
        out.sort_by(|a, b| a.handle.id.cmp(&b.handle.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_tests::tasks::docker_task;

    #[test]
    fn an_entry_is_small() {
        // Hollow nodes hold one per task (80 bytes with ports, health, exit, node and
        // cluster inline; 32 with the task id in a box of its own).
        assert!(
            std::mem::size_of::<Entry>() <= 40,
            "Entry grew to {} bytes",
            std::mem::size_of::<Entry>()
        );
    }

    #[tokio::test]
    async fn the_table_shrinks_after_a_mass_removal_and_exits_are_kept() {
        let rt = SimRuntime::new();
        let files = TaskFiles::default();
        let mut handles = Vec::new();
        for i in 0..5_000 {
            let t = docker_task(&format!("web.{i}.x"), "web", "n1", "app:1");
            handles.push(rt.start(&t, &files).await.expect("sim starts"));
        }
        let grown = rt.shared.lock().entries.capacity();
        rt.stop(&handles[0], "SIGTERM", Duration::ZERO)
            .await
            .expect("sim stops");
        for h in &handles[10..] {
            rt.remove(h).await.expect("sim removes");
        }
        assert_eq!(rt.len(), 10);
        let shrunk = rt.shared.lock().entries.capacity();
        assert!(
            shrunk <= 1024 && grown > 4096,
            "capacity {grown} -> {shrunk}"
        );
        let exit = rt.wait(&handles[0]).await.expect("the stopped task's exit");
        assert_eq!(exit.code, 143);
        let listed = rt
            .list(&BTreeSet::from(["n1".to_string()]))
            .await
            .expect("sim lists");
        assert_eq!(listed.len(), 10);
        assert_eq!(listed[0].exit.as_ref().map(|e| e.code), Some(143));
        assert!(listed[1].exit.is_none());
    }
}
