//! Secrets and configs on the node: fetched from the API at task start, written to the
//! task's own directory on an in-memory filesystem, and removed when the task ends.
//!
//! Only the API holds the cluster key. At task start the agent asks it for each secret and
//! config the task's template names (`GET /v1/nodes/<node>/secrets/<ns>/<name>`, with the
//! node's own token); the API answers only while a task of that node uses it. The values go
//! straight from the answer into files and are not kept: the agent holds them in memory only
//! while it writes them.
//!
//! Files live under `<root>/<node>/<task>/secrets/<target>` and
//! `<root>/<node>/<task>/configs/<target path>`, created with the reference's mode and owner
//! (`0444` and `0:0` by default; a host process's files keep the agent's own user unless the
//! reference names one). A container gets each file bind-mounted read-only at its path
//! (`/run/secrets/<target>`, or the config's target); a host process gets the two directories
//! in `SHOAL_SECRETS_DIR` and `SHOAL_CONFIGS_DIR`.
//!
//! The root must be on a tmpfs, so that no value ever reaches the node's disk; the default is
//! `/dev/shm/shoal`. `/dev/shm` rather than a tmpfs mounted per task: it is a tmpfs on every
//! Linux host, any user may write there (an agent running host processes need not be root,
//! mounting needs CAP_SYS_ADMIN), and there is no mount to leak when the agent dies — only
//! files, which the agent sweeps on its next start. The agent checks the filesystem type when
//! it starts and refuses any other. The root and every task directory are mode 0700.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use shoal_api::{Client, ClientError};
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::Task;
use shoal_core::secret::{FileKind, FileRef};

use crate::runtime::{DeliveredFile, TaskFiles};

/// Default root of the task directories (`/dev/shm` is a tmpfs on Linux).
pub const DEFAULT_ROOT: &str = "/dev/shm/shoal";
/// Environment variable naming a host process's directory of secrets.
pub const ENV_SECRETS_DIR: &str = "SHOAL_SECRETS_DIR";
/// Environment variable naming a host process's directory of configs.
pub const ENV_CONFIGS_DIR: &str = "SHOAL_CONFIGS_DIR";

/// Why a task's files could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The API cannot answer now (unreachable, no key, not accepting the token yet): the task
    /// waits in `preparing` and tries again.
    #[error("{0}")]
    Unavailable(String),
    /// The API refused (the object is gone, or no task of this node uses it), or a file could
    /// not be written as asked: the task is rejected.
    #[error("{0}")]
    Refused(String),
    /// The root directory cannot hold task files.
    #[error("{0}")]
    Setup(String),
}

/// Fetches the secrets and configs of this node's tasks and lays them out for the runtime.
pub struct Delivery {
    client: Client,
    root: PathBuf,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("api", &self.client.base())
            .field("root", &self.root)
            .finish()
    }
}

/// Whether `path` is on a tmpfs.
fn on_tmpfs(path: &Path) -> Result<bool, String> {
    let fs = nix::sys::statfs::statfs(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn io_refused(what: &str, path: &Path, e: std::io::Error) -> DeliveryError {
    DeliveryError::Refused(format!("cannot {what} {}: {e}", path.display()))
}

/// Classifies an API answer: what waiting can fix, and what it cannot.
fn classify(kind: FileKind, ns: &str, name: &str, e: ClientError) -> DeliveryError {
    let what = format!("{kind} {ns}/{name}");
    match e.status() {
        Some(403 | 404 | 400) => DeliveryError::Refused(format!("the API refused {what}: {e}")),
        Some(_) => DeliveryError::Unavailable(format!("the API cannot deliver {what}: {e}")),
        None => DeliveryError::Unavailable(e.to_string()),
    }
}

/// Creates a directory (and its parents) with mode 0700.
fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl Delivery {
    /// A delivery from the API behind `client` into task directories under `root`, which is
    /// created (mode 0700) and must be on a tmpfs.
    pub fn new(client: Client, root: &Path) -> Result<Self, DeliveryError> {
        let setup = |m: String| DeliveryError::Setup(m);
        private_dir(root).map_err(|e| setup(format!("cannot create {}: {e}", root.display())))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| setup(format!("cannot restrict {}: {e}", root.display())))?;
        if !on_tmpfs(root).map_err(setup)? {
            return Err(setup(format!(
                "{} is not on a tmpfs: secrets must never reach the node's disk; give \
                 --secrets-dir a directory on a tmpfs (e.g. under /dev/shm)",
                root.display()
            )));
        }
        Ok(Delivery {
            client,
            root: root.to_path_buf(),
        })
    }

    /// The root of the task directories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one task's files.
    pub fn task_dir(&self, node: &str, task: &str) -> PathBuf {
        self.root.join(node).join(task)
    }

    /// Fetches every secret and config `task` names and writes them into its directory
    /// (emptied first). Nothing is left behind on failure.
    pub async fn deliver(&self, task: &Task) -> Result<TaskFiles, DeliveryError> {
        let t = &task.template;
        if t.secrets.is_empty() && t.configs.is_empty() {
            return Ok(TaskFiles::default());
        }
        let dir = self.task_dir(&task.node_id, &task.id);
        self.discard(&task.node_id, &task.id);
        let result = self.write_all(task, &dir).await;
        if result.is_err() {
            self.discard(&task.node_id, &task.id);
        }
        result
    }

    async fn write_all(&self, task: &Task, dir: &Path) -> Result<TaskFiles, DeliveryError> {
        let t = &task.template;
        let ns = &task.service.namespace;
        let mut out = TaskFiles::default();
        for (kind, refs, sub, env) in [
            (FileKind::Secret, &t.secrets, "secrets", ENV_SECRETS_DIR),
            (FileKind::Config, &t.configs, "configs", ENV_CONFIGS_DIR),
        ] {
            if refs.is_empty() {
                continue;
            }
            let base = dir.join(sub);
            private_dir(&base).map_err(|e| io_refused("create", &base, e))?;
            out.env.insert(env.to_string(), base.display().to_string());
            for r in refs {
                let value = self
                    .client
                    .node_file(kind, &task.node_id, ns, &r.source)
                    .await
                    .map_err(|e| classify(kind, ns, &r.source, e))?;
                let path = base.join(r.relative_path(kind));
                write_file(&path, &value, r, t.runtime)?;
                out.files.push(DeliveredFile {
                    host_path: path,
                    container_path: r.container_path(kind),
                });
            }
        }
        tracing::info!(
            secrets = t.secrets.len(),
            configs = t.configs.len(),
            dir = %dir.display(),
            "secrets and configs delivered"
        );
        Ok(out)
    }

    /// Removes a task's directory, if any.
    pub fn discard(&self, node: &str, task: &str) {
        let dir = self.task_dir(node, task);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "task files removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a task's files")
            }
        }
    }

    /// Removes the directories of `nodes`' tasks except those in `keep` (`(node, task)`):
    /// what an agent that stopped abruptly left behind.
    pub fn sweep(&self, nodes: &BTreeSet<String>, keep: &BTreeSet<(String, String)>) {
        for node in nodes {
            let Ok(entries) = std::fs::read_dir(self.root.join(node)) else {
                continue;
            };
            for entry in entries.flatten() {
                let task = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&(node.clone(), task.clone())) {
                    tracing::info!(node = %node, task = %task, "removing the files of a task that no longer runs");
                    self.discard(node, &task);
                }
            }
        }
    }
}

/// Writes one file: created private, filled, then given its owner and mode.
fn write_file(
    path: &Path,
    value: &[u8],
    r: &FileRef,
    runtime: RuntimeKind,
) -> Result<(), DeliveryError> {
    if let Some(parent) = path.parent() {
        private_dir(parent).map_err(|e| io_refused("create", parent, e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_refused("create", path, e))?;
    file.write_all(value)
        .map_err(|e| io_refused("write", path, e))?;
    // Containers see files owned by root unless told otherwise; a host process runs as the
    // agent's user, which keeps the files unless the reference names an owner.
    let (uid, gid) = match runtime {
        RuntimeKind::Docker => (Some(r.uid().unwrap_or(0)), Some(r.gid().unwrap_or(0))),
        RuntimeKind::Process => (r.uid(), r.gid()),
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&file, uid, gid).map_err(|e| {
            io_refused(
                &format!(
                    "give owner {}:{} to",
                    uid.map_or("-".into(), |u| u.to_string()),
                    gid.map_or("-".into(), |g| g.to_string())
                ),
                path,
                e,
            )
        })?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(r.mode_bits()))
        .map_err(|e| io_refused("set the mode of", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_must_be_on_a_tmpfs() {
        let disk = tempfile::tempdir().unwrap();
        let client = Client::new("http://127.0.0.1:9", None);
        if !on_tmpfs(disk.path()).unwrap() {
            let e = Delivery::new(client.clone(), disk.path()).unwrap_err();
            assert!(e.to_string().contains("not on a tmpfs"), "{e}");
        }
        let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm exists");
        let root = shm.path().join("root");
        let d = Delivery::new(client, &root).expect("/dev/shm is a tmpfs");
        let mode = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(d.task_dir("n1", "t1"), root.join("n1").join("t1"));
    }

    #[test]
    fn files_get_their_mode_and_the_sweep_keeps_only_live_tasks() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let d = Delivery::new(Client::new("http://127.0.0.1:9", None), shm.path()).unwrap();
        let r = FileRef {
            source: "db".into(),
            target: None,
            mode: Some(shoal_core::secret::FileMode(0o400)),
            uid: None,
            gid: None,
        };
        let live = d.task_dir("n1", "web.1.a").join("secrets/db");
        let dead = d.task_dir("n1", "web.1.b").join("configs/etc/app.conf");
        write_file(&live, b"v", &r, RuntimeKind::Process).unwrap();
        write_file(&dead, b"v", &r, RuntimeKind::Process).unwrap();
        let mode = std::fs::metadata(&live).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
        assert!(
            write_file(&live, b"again", &r, RuntimeKind::Process).is_err(),
            "files are never overwritten in place"
        );
        let keep = BTreeSet::from([("n1".to_string(), "web.1.a".to_string())]);
        d.sweep(&BTreeSet::from(["n1".to_string()]), &keep);
        assert!(live.exists());
        assert!(!d.task_dir("n1", "web.1.b").exists());
        d.discard("n1", "web.1.a");
        assert!(!d.task_dir("n1", "web.1.a").exists());
    }
}
