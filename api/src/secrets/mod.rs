//! Secrets and configs in the API: the records under `secrets/<ns>/<name>` and
//! `configs/<ns>/<name>` (only the API writes them), the metadata views users see, which
//! services use each one, and the route handlers ([`handlers`]).
//!
//! A secret's value is sealed by [`crypto::KeyRing`] before it reaches the store; a config's
//! value is stored as is (base64). Both are immutable: a new value is a new name, rolled out by
//! changing the manifests' `source`. No view, log line or error carries a value; the only
//! answers that do are a config's `/data` and the node-scoped delivery routes, which answer a
//! node only for the objects its assigned tasks reference.

pub mod crypto;
pub mod handlers;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_core::model::{DesiredState, Task, TaskStatus, Timestamp};
use shoal_core::secret::{FileKind, FileRef};
use shoal_core::{Key, ServiceRef};
use shoal_store::Revision;
use utoipa::ToSchema;

use crate::ApiState;
use crate::error::ApiError;
use crate::handlers::{decode, parse_stored};

/// The record of a secret or config in the store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Size of the value in bytes.
    pub size: u64,
    /// Digest of the value: keyed (`hmac-sha256:<key-id>:<hex>`) for secrets,
    /// `sha256:<hex>` for configs.
    pub digest: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Secrets: the sealed value (`shoal:enc:v1:<key-id>:…`). Configs: the value in base64.
    pub data: String,
}

impl std::fmt::Debug for StoredFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredFile")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A service that uses a secret or config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileUse {
    /// The service, `namespace/name`.
    pub service: String,
    /// Whether the service's manifest names it.
    pub manifest: bool,
    /// Tasks of the service that use it and have not ended (during a rollout to a new
    /// `source`, the tasks still on the old one).
    pub tasks: u64,
}

/// What users see of a secret or config: metadata, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileView {
    /// `secret` or `config`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Digest of the value (keyed for secrets).
    pub digest: String,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Revision of its key.
    pub revision: Revision,
    /// Services using it (an object in use cannot be removed).
    #[serde(default)]
    pub used_by: Vec<FileUse>,
}

/// Answer of `POST /v1/secrets/rotate-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateKeyResponse {
    /// The key every secret is now sealed under.
    pub active_key: String,
    /// Secrets re-sealed by this call.
    pub resealed: u64,
    /// Secrets already under the active key.
    pub unchanged: u64,
}

/// The associated data a secret's value is sealed with: its `namespace/name`.
pub fn aad(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The references of one kind in a list of `(secrets, configs)`.
pub(crate) fn refs_of<'a>(
    kind: FileKind,
    secrets: &'a [FileRef],
    configs: &'a [FileRef],
) -> &'a [FileRef] {
    match kind {
        FileKind::Secret => secrets,
        FileKind::Config => configs,
    }
}

/// Whether a task is done with its files: told to stop, orphaned, or ended.
fn task_is_over(task: &Task, status: Option<&TaskStatus>) -> bool {
    task.desired_state == DesiredState::Shutdown
        || task.orphaned
        || status.is_some_and(|s| s.state.is_terminal())
}

/// Who uses what: for every `(kind, namespace, name)` referenced by a manifest or by a task
/// that has not ended, the services using it.
pub(crate) async fn usage(
    st: &ApiState,
) -> Result<BTreeMap<(FileKind, String, String), Vec<FileUse>>, ApiError> {
    type Users = BTreeMap<(FileKind, String, String), BTreeMap<ServiceRef, (bool, u64)>>;
    let mut users: Users = BTreeMap::new();
    let mut note = |kind, svc: &ServiceRef, name: &str, manifest: bool| {
        let e = users
            .entry((kind, svc.namespace.clone(), name.to_string()))
            .or_default()
            .entry(svc.clone())
            .or_default();
        if manifest {
            e.0 = true;
        } else {
            e.1 += 1;
        }
    };
    for kv in st.store.list(&st.keys.services_prefix()).await?.kvs {
        let Some(shoal_core::Key::Service(r)) = st.keys.parse(&kv.key) else {
            continue;
        };
        let Ok(svc) = parse_stored(&r, &kv) else {
            continue;
        };
        for kind in [FileKind::Secret, FileKind::Config] {
            let names: BTreeSet<&str> = refs_of(kind, &svc.spec.secrets, &svc.spec.configs)
                .iter()
                .map(|r| r.source.as_str())
                .collect();
            for name in names {
                note(kind, &svc.id(), name, true);
            }
        }
    }
    let mut statuses: BTreeMap<(String, String), TaskStatus> = BTreeMap::new();
    for kv in st.store.list(&st.keys.task_status_prefix()).await?.kvs {
        if let Some(Key::TaskStatus { node, task }) = st.keys.parse(&kv.key)
            && let Ok(s) = decode::<TaskStatus>(&kv)
        {
            statuses.insert((node, task), s);
        }
    }
    for kv in st.store.list(&st.keys.tasks_prefix()).await?.kvs {
        let Some(Key::Task { node, task: id }) = st.keys.parse(&kv.key) else {
            continue;
        };
        let Ok(task) = decode::<Task>(&kv) else {
            continue;
        };
        if task_is_over(&task, statuses.get(&(node, id))) {
            continue;
        }
        let t = &task.template;
        for kind in [FileKind::Secret, FileKind::Config] {
            let names: BTreeSet<&str> = refs_of(kind, &t.secrets, &t.configs)
                .iter()
                .map(|r| r.source.as_str())
                .collect();
            for name in names {
                note(kind, &task.service, name, false);
            }
        }
    }
    Ok(users
        .into_iter()
        .map(|(k, by)| {
            let uses = by
                .into_iter()
                .map(|(svc, (manifest, tasks))| FileUse {
                    service: svc.to_string(),
                    manifest,
                    tasks,
                })
                .collect();
            (k, uses)
        })
        .collect())
}

/// Whether a task assigned to `node` (told to run, not orphaned) references the object.
pub(crate) async fn node_needs(
    st: &ApiState,
    node: &str,
    kind: FileKind,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, ApiError> {
    for kv in st.store.list(&st.keys.node_tasks_prefix(node)).await?.kvs {
        let Ok(task) = decode::<Task>(&kv) else {
            continue;
        };
        if task.desired_state != DesiredState::Running || task.orphaned {
            continue;
        }
        let t = &task.template;
        if task.service.namespace == namespace
            && refs_of(kind, &t.secrets, &t.configs)
                .iter()
                .any(|r| r.source == name)
        {
            return Ok(Some(task.id));
        }
    }
    Ok(None)
}
