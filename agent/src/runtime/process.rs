//! The `process` runtime: runs a task's `command` as a host process, for hosts without
//! Docker.
//!
//! stdout and stderr are appended to `<data-dir>/logs/<task>.log` line by line, each line with
//! its time and stream (see [`crate::logs::file`]), rotated by size (the previous file kept as
//! `<task>.log.1`, [`LOG_MAX_BYTES`] each unless set) and deleted once the task's assignment
//! is deleted (its record has left the task history). Each task runs in its own
//! process group so the stop signal reaches the whole tree (`sh -c ...`). Healthchecks run on
//! the host at the configured interval with Docker's semantics (timeout, retries, start
//! period). Processes do not outlive the agent: they cannot be adopted after a restart, so the
//! agent stops them when it shuts down. Published ports are reported as given: a process binds
//! its own ports, so validation refuses dynamic or remapped ports, resource limits and mounts
//! for this runtime rather than ignore them. A task's secrets and configs are
//! files in its own in-memory directories, named by `SHOAL_SECRETS_DIR` and
//! `SHOAL_CONFIGS_DIR` in its environment.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_core::manifest::{Healthcheck, RuntimeKind};
use shoal_core::model::{Health, PortBinding, Task};
use tokio::sync::watch;

use super::{Existing, Exit, Handle, Runtime, RuntimeError, TaskFiles, parse_signal};
use crate::logs::Lines;
use crate::logs::file::{LogWriter, OutputOpen, copy_lines, rotated_path};
use shoal_core::logs::{LogQuery, OutputStream};

struct Entry {
    task_id: String,
    node_id: String,
    pid: i32,
    host_ports: Vec<PortBinding>,
    exit: watch::Sender<Option<Exit>>,
    health: watch::Sender<Option<Health>>,
}

/// Size at which a task's log file is rotated (one previous file is kept).
pub const LOG_MAX_BYTES: u64 = 10 << 20;

/// Runs tasks as host processes.
pub struct ProcessRuntime {
    data_dir: PathBuf,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    log_max_bytes: u64,
    /// Per task whose output is being written: turns true once the process's output closed.
    output_closed: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl ProcessRuntime {
    /// A runtime writing task logs under `data_dir/logs`. It first kills the processes an
    /// earlier agent on the same data directory left running (it died without stopping them).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        reap_leftovers(&data_dir);
        ProcessRuntime {
            data_dir,
            entries: Arc::new(Mutex::new(HashMap::new())),
            log_max_bytes: LOG_MAX_BYTES,
            output_closed: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Rotates task logs at `bytes` instead of [`LOG_MAX_BYTES`] (a task's logs then take at
    /// most twice that: the current file and the previous one).
    pub fn with_log_max_bytes(mut self, bytes: u64) -> Self {
        self.log_max_bytes = bytes.max(1);
        self
    }

    /// The log file of a task.
    pub fn log_path(&self, task_id: &str) -> PathBuf {
        log_path(&self.data_dir, task_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn log_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join("logs").join(format!("{task_id}.log"))
}

fn pid_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join("pids").join(task_id)
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Records a task's process (`PID START-TIME`) until it exits.
fn record_pid(dir: &Path, task_id: &str, pid: i32) {
    let path = pid_path(dir, task_id);
    let line = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    if let Err(e) =
        std::fs::create_dir_all(dir.join("pids")).and_then(|()| std::fs::write(&path, line))
    {
        tracing::warn!(task = %task_id, error = %e, "cannot record the task's pid; a crash would leave it running");
    }
}

/// Kills the process groups recorded by an earlier runtime on `dir` that still run (same pid
/// and start time) and forgets every record; returns how many it killed.
pub fn reap_leftovers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return 0;
    };
    let mut killed = 0;
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut it = text.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pid)), Some(Ok(start))) = (it.next(), it.next())
            && let Ok(pid) = i32::try_from(pid)
            && start_time(pid) == Some(start)
        {
            let task = e.file_name().to_string_lossy().to_string();
            tracing::warn!(task = %task, pid, "killing a process an earlier agent left running");
            signal_group(pid, Signal::SIGKILL);
            killed += 1;
        }
        let _ = std::fs::remove_file(e.path());
    }
    killed
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit {
            code: i64::from(c),
            message: None,
        },
        (None, Some(s)) => Exit {
            code: 128 + i64::from(s),
            message: Some(format!("killed by signal {s}")),
        },
        _ => Exit {
            code: -1,
            message: None,
        },
    }
}

/// Runs one healthcheck probe; `true` when it passed within the timeout.
async fn probe(hc: &Healthcheck) -> bool {
    let argv: Vec<String> = match hc.test.first().map(String::as_str) {
        Some("CMD") => hc.test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["sh".into(), "-c".into(), hc.test[1..].join(" ")],
        Some("NONE") | None => return true,
        Some(_) => hc.test.clone(),
    };
    let Some((prog, args)) = argv.split_first() else {
        return true;
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(hc.timeout.get(), child).await, Ok(Ok(s)) if s.success())
}

/// Runs `hc` until the task exits, publishing the health it observes.
async fn health_loop(
    hc: Healthcheck,
    health: watch::Sender<Option<Health>>,
    mut exit: watch::Receiver<Option<Exit>>,
) {
    let started = Instant::now();
    let mut failures = 0u32;
    let interval = hc.interval.get().max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = exit.wait_for(|x| x.is_some()) => return,
        }
        let ok = probe(&hc).await;
        let in_start_period = started.elapsed() < hc.start_period.get();
        let next = if ok {
            failures = 0;
            Some(Health::Healthy)
        } else if in_start_period {
            None
        } else {
            failures += 1;
            (failures >= hc.retries.max(1)).then_some(Health::Unhealthy)
        };
        if let Some(h) = next {
            health.send_if_modified(|cur| {
                let changed = *cur != Some(h);
                *cur = Some(h);
                changed
            });
        }
    }
}

fn signal_group(pid: i32, sig: Signal) {
    // The process may already be gone: ESRCH is fine.
    let _ = killpg(Pid::from_raw(pid), sig);
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn offers(&self) -> Vec<RuntimeKind> {
        vec![RuntimeKind::Process]
    }

    fn tasks_outlive_agent(&self) -> bool {
        false
    }

    async fn prepare(&self, task: &Task) -> Result<(), RuntimeError> {
        if task.template.command.is_empty() {
            return Err(RuntimeError::Permanent(
                "the process runtime needs a command to run".to_string(),
            ));
        }
        let logs = self.data_dir.join("logs");
        tokio::fs::create_dir_all(&logs).await.map_err(|e| {
            RuntimeError::Temporary(format!(
                "cannot create log directory {}: {e}",
                logs.display()
            ))
        })
    }

    async fn start(&self, task: &Task, files: &TaskFiles) -> Result<Handle, RuntimeError> {
        let Some((prog, args)) = task.template.command.split_first() else {
            return Err(RuntimeError::Permanent(
                "the process runtime needs a command to run".into(),
            ));
        };
        let path = self.log_path(&task.id);
        let log = LogWriter::open(path.clone(), self.log_max_bytes).map_err(|e| {
            RuntimeError::Temporary(format!("cannot open log {}: {e}", path.display()))
        })?;
        let log = Arc::new(Mutex::new(log));
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .envs(&task.template.env)
            .envs(&files.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| RuntimeError::Permanent(format!("cannot run {prog:?}: {e}")))?;
        let (closed_tx, closed_rx) = watch::channel(false);
        let open = Arc::new(OutputOpen(closed_tx));
        self.output_closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.id.clone(), closed_rx);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(copy_lines(
                out,
                OutputStream::Stdout,
                log.clone(),
                open.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(copy_lines(err, OutputStream::Stderr, log, open));
        }
        let Some(pid) = child.id() else {
            return Err(RuntimeError::Permanent(format!("{prog:?} exited at once")));
        };
        let pid = pid as i32;
        record_pid(&self.data_dir, &task.id, pid);
        let record = pid_path(&self.data_dir, &task.id);
        let (exit_tx, exit_rx) = watch::channel(None);
        let (health_tx, _) =
            watch::channel(task.template.healthcheck.as_ref().map(|_| Health::Starting));
        let waiter = exit_tx.clone();
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(s) => exit_of(s),
                Err(e) => Exit {
                    code: -1,
                    message: Some(format!("cannot wait for process: {e}")),
                },
            };
            let _ = std::fs::remove_file(&record);
            waiter.send_replace(Some(exit));
        });
        if let Some(hc) = task.template.healthcheck.clone() {
            tokio::spawn(health_loop(hc, health_tx.clone(), exit_rx));
        }
        let host_ports: Vec<PortBinding> = task
            .template
            .ports
            .iter()
            .map(|p| PortBinding {
                target: p.target,
                published: p.host_port().unwrap_or(p.target),
                protocol: p.protocol,
            })
            .collect();
        let id = pid.to_string();
        self.lock().insert(
            id.clone(),
            Entry {
                task_id: task.id.clone(),
                node_id: task.node_id.clone(),
                pid,
                host_ports: host_ports.clone(),
                exit: exit_tx,
                health: health_tx,
            },
        );
        tracing::info!(task = %task.id, pid, log = %path.display(), "process started");
        Ok(Handle { id, host_ports })
    }

    async fn wait(&self, handle: &Handle) -> Result<Exit, RuntimeError> {
        let rx = self.lock().get(&handle.id).map(|e| e.exit.subscribe());
        let Some(mut rx) = rx else {
            return Err(RuntimeError::Permanent(format!(
                "no such process {}",
                handle.id
            )));
        };
        match rx.wait_for(|x| x.is_some()).await {
            Ok(x) => Ok(x.clone().unwrap_or(Exit {
                code: -1,
                message: None,
            })),
            Err(_) => Err(RuntimeError::Permanent(format!(
                "process {} was removed",
                handle.id
            ))),
        }
    }

    async fn health(&self, handle: &Handle) -> Result<Option<Health>, RuntimeError> {
        Ok(self.lock().get(&handle.id).and_then(|e| *e.health.borrow()))
    }

    async fn stop(
        &self,
        handle: &Handle,
        signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let sig = parse_signal(signal).unwrap_or(Signal::SIGTERM);
        let found = self
            .lock()
            .get(&handle.id)
            .map(|e| (e.pid, e.exit.subscribe()));
        let Some((pid, mut rx)) = found else {
            return Ok(());
        };
        if rx.borrow().is_some() {
            return Ok(());
        }
        signal_group(pid, sig);
        let exited = tokio::time::timeout(grace, rx.wait_for(|x| x.is_some()))
            .await
            .is_ok();
        if !exited {
            tracing::info!(pid, "grace period over, killing the process");
            signal_group(pid, Signal::SIGKILL);
            let _ =
                tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|x| x.is_some())).await;
        }
        Ok(())
    }

    async fn remove(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.lock().remove(&handle.id);
        Ok(())
    }

    async fn logs(
        &self,
        _node_id: &str,
        task_id: &str,
        query: &LogQuery,
    ) -> Result<Option<Lines>, RuntimeError> {
        // Only this runtime's own files: the node's tasks, nothing else.
        if task_id.is_empty() || task_id.contains(['/', '\\']) || task_id.starts_with('.') {
            return Ok(None);
        }
        let closed = self
            .output_closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_id)
            .cloned();
        crate::logs::file::read(self.log_path(task_id), query.clone(), closed).await
    }

    async fn discard(&self, _node_id: &str, task_id: &str) {
        self.output_closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
        let path = self.log_path(task_id);
        for p in [rotated_path(&path), path] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(log = %p.display(), error = %e, "cannot delete a task's log")
                }
            }
        }
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
                // Host processes end with the agent: only this process's own are listed.
                cluster: None,
            })
            .collect();
        out.sort_by(|a, b| a.handle.id.cmp(&b.handle.id));
        Ok(out)
    }

    async fn shutdown(&self) {
        let running: Vec<Handle> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.exit.borrow().is_none())
            .map(|(id, e)| Handle {
                id: id.clone(),
                host_ports: e.host_ports.clone(),
            })
            .collect();
        for h in running {
            let _ = self.stop(&h, "SIGTERM", Duration::from_secs(10)).await;
        }
    }
}
