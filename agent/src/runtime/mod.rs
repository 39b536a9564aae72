//! The runtime contract: what the task runner asks of whatever actually runs a task (Docker,
//! a host process, or nothing at all for hollow nodes).
//!
//! Runtimes are driven one step at a time (prepare, start, wait, stop, remove) so the runner
//! can write the task's status between steps. Errors say whether retrying can help:
//! [`RuntimeError::Temporary`] is retried with backoff, [`RuntimeError::Permanent`] ends the
//! task with the runtime's own message.

pub mod docker;
pub mod multi;
pub mod process;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::network::Network;
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{Health, PortBinding, Task};

/// Label carrying the task id on every container Shoal creates.
pub const LABEL_TASK: &str = "io.shoal.task";
/// Label carrying the owning service (`<namespace>/<name>`).
pub const LABEL_SERVICE: &str = "io.shoal.service";
/// Label carrying the node id the container was started for.
pub const LABEL_NODE: &str = "io.shoal.node";
/// Label carrying the id of the cluster (store) the container was started for.
pub const LABEL_CLUSTER: &str = "io.shoal.cluster";

/// Why a runtime step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// Retrying may help (the runtime could not be reached, a transient daemon error).
    #[error("{0}")]
    Temporary(String),
    /// Retrying will not help (no such image, invalid configuration); the message is the
    /// runtime's own.
    #[error("{0}")]
    Permanent(String),
}

impl RuntimeError {
    /// Whether retrying may help.
    pub fn is_temporary(&self) -> bool {
        matches!(self, RuntimeError::Temporary(_))
    }
}

/// A running (or exited) task as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// Container id (docker), pid (process) or a simulated id (sim).
    pub id: String,
    /// Ports bound on the host, dynamic ones resolved.
    pub host_ports: Vec<PortBinding>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit code (128 + signal number when killed by a signal, as Docker reports it).
    pub code: i64,
    /// Extra explanation from the runtime (e.g. "OOM killed"), if any.
    pub message: Option<String>,
}

/// A task the runtime already runs, found by its labels (for adoption after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Task id label.
    pub task_id: String,
    /// Node id label.
    pub node_id: String,
    /// The task's handle.
    pub handle: Handle,
    /// `None` while it runs; how it ended otherwise.
    pub exit: Option<Exit>,
    /// The cluster it was started for (`None`: no label, e.g. started by an older agent).
    pub cluster: Option<String>,
}

/// One delivered file: where it lies on the node (an in-memory filesystem) and where the
/// task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredFile {
    /// Path on the node.
    pub host_path: PathBuf,
    /// Absolute path inside a container (`/run/secrets/<target>`, or a config's target).
    pub container_path: String,
}

/// The secrets and configs delivered for a task (see [`crate::secrets`]): files a container
/// gets bind-mounted read-only, and the environment a host process gets
/// (`SHOAL_SECRETS_DIR`, `SHOAL_CONFIGS_DIR`). Empty for tasks that use none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFiles {
    /// The files.
    pub files: Vec<DeliveredFile>,
    /// Environment variables naming the task's directories of files.
    pub env: BTreeMap<String, String>,
}

/// A task that exited on its own, as told by a runtime that reports exits itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitNotice {
    /// Node id the task runs for.
    pub node_id: String,
    /// Task id.
    pub task_id: String,
}

/// Something that runs tasks.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Short name for logs (`docker`, `process`, `sim`).
    fn name(&self) -> &'static str;

    /// Runtimes the node advertises when it uses this one.
    fn offers(&self) -> Vec<RuntimeKind>;

    /// Whether tasks outlive the agent process (and can therefore be adopted on restart).
    /// When false, the agent stops every task when it shuts down.
    fn tasks_outlive_agent(&self) -> bool;

    /// The cluster id to label what this runtime starts from now on (runtimes whose tasks
    /// end with the agent need none).
    fn set_cluster(&self, _cluster: &str) {}

    /// Makes sure everything needed to start the task is present (pulls the image only when
    /// it is absent).
    async fn prepare(&self, task: &Task) -> Result<(), RuntimeError>;

    /// Creates and starts the task with its delivered secrets and configs; the handle
    /// carries the host ports actually bound.
    async fn start(&self, task: &Task, files: &TaskFiles) -> Result<Handle, RuntimeError>;

    /// Resolves when the task exits (at once if it already has).
    async fn wait(&self, handle: &Handle) -> Result<Exit, RuntimeError>;

    /// Current health: `None` when the task has no healthcheck.
    async fn health(&self, handle: &Handle) -> Result<Option<Health>, RuntimeError>;

    /// Sends `signal`, waits up to `grace` for the task to exit, then kills it.
    async fn stop(
        &self,
        handle: &Handle,
        signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError>;

    /// Removes what is left of the task (container, bookkeeping). Absent is not an error.
    async fn remove(&self, handle: &Handle) -> Result<(), RuntimeError>;

    /// Every task this runtime runs (or ran and has not removed) for the given nodes.
    async fn list(&self, nodes: &BTreeSet<String>) -> Result<Vec<Existing>, RuntimeError>;

    /// Exit notices, for runtimes that report exits themselves (the sim runtime): the worker
    /// then lets the runner of a task that simply runs park as a compact record, and picks it
    /// up again on a notice or a change of the desired state, instead of keeping one waiting
    /// runner per task. Every call opens a new subscription. `None` (the default): runners
    /// wait on [`Runtime::wait`].
    fn exit_notices(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExitNotice>> {
        None
    }

    /// Called once when the agent shuts down (the process runtime stops its children).
    async fn shutdown(&self) {}

    /// Called once before the first task: published ports bind `address` (not every
    /// address), and with `network` the task containers get the node's service networking.
    /// Runtimes without containers ignore it.
    fn configure_network(&self, _address: Option<std::net::IpAddr>, _network: Option<Network>) {}
    /// The task's assignment was deleted (its record left the task history): drop what the
    /// runtime keeps of it beyond [`Runtime::remove`], such as its logs.
    async fn discard(&self, _node_id: &str, _task_id: &str) {}

    /// The output of task `task_id` of node `node_id` that `query` asks for; `None` when this
    /// runtime has none of it (not a task of this node, or its output is gone). The default:
    /// none (the sim runtime runs nothing).
    async fn logs(
        &self,
        _node_id: &str,
        _task_id: &str,
        _query: &shoal_core::logs::LogQuery,
    ) -> Result<Option<crate::logs::Lines>, RuntimeError> {
        Ok(None)
    }
}

/// Parses a stop signal as written in manifests (`SIGTERM`, `TERM`, `15`).
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, RuntimeError> {
    use std::str::FromStr;
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| RuntimeError::Permanent(format!("unknown stop signal {s:?}")));
    }
    let up = t.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map_err(|_| RuntimeError::Permanent(format!("unknown stop signal {s:?}")))
}

/// The `<namespace>/<name>` form used in the service label.
pub fn service_label(task: &Task) -> String {
    format!("{}/{}", task.service.namespace, task.service.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_spelling() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("SIGTERM").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("int").ok(), Some(Signal::SIGINT));
        assert_eq!(parse_signal("9").ok(), Some(Signal::SIGKILL));
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
