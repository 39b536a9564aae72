//! Request and response bodies of the `/v1` API, shared by the server and the typed client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_core::model::Availability;
use shoal_core::{Service, ServiceStatus};
use shoal_store::Revision;
use utoipa::ToSchema;

/// A stored service: its manifest text as written, the parsed manifest, and its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceResource {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Revision of the manifest key (use it with `If-Match`).
    pub revision: Revision,
    /// The manifest text as the user wrote it.
    pub manifest: String,
    /// The parsed manifest (absent when the stored text is invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub service: Option<Service>,
    /// Why the stored text is invalid, with line and column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Observed status written by the controller, once it has seen the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub status: Option<ServiceStatus>,
    /// The service's endpoints as the controller published them (its stable address and the
    /// tasks receiving traffic); only on single-service reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub endpoints: Option<shoal_core::endpoints::Endpoints>,
    /// Nodes holding tasks of this service whose agents cannot give them names and service
    /// addresses, with the agent's reason (node id to reason); only on single-service reads.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names_unavailable: BTreeMap<String, String>,
}

impl ServiceResource {
    /// Running and desired replicas, as `shoal get services` shows them (`running/desired`).
    pub fn replica_counts(&self) -> (u64, u64) {
        let desired = match (&self.status, &self.service) {
            (Some(st), _) => st.desired,
            (None, Some(svc)) => svc.spec.desired_replicas().unwrap_or(0),
            _ => 0,
        };
        (self.status.as_ref().map_or(0, |st| st.running), desired)
    }

    /// The STATUS word of `shoal get services`: `Invalid`, `Pending`, `Unschedulable`, a
    /// rollout phase (`Updating`, `Paused`, `RolledBack`, ...; an automatic rollback adds
    /// ` (manifest not running)`), `Converged` or `Progressing`.
    pub fn phase(&self) -> String {
        if self.error.is_some() {
            return "Invalid".into();
        }
        let Some(st) = &self.status else {
            return "Pending".into();
        };
        if st.error.is_some() {
            return "Invalid".into();
        }
        if st.unschedulable.is_some() {
            return "Unschedulable".into();
        }
        if let Some(r) = &st.rollout
            && !matches!(r.state, shoal_core::model::RolloutState::Completed)
        {
            let name = format!("{:?}", r.state);
            // After an automatic rollback the tasks do not run what the manifest says.
            return if r.state.is_rollback() {
                format!("{name} (manifest not running)")
            } else {
                name
            };
        }
        if st.observed_generation < self.revision {
            return "Pending".into();
        }
        // The same decision `apply --wait` and `rollout status` make.
        match judge(Some(st), self.revision) {
            Verdict::Converged => "Converged".into(),
            Verdict::Failed(_) => "Failed".into(),
            Verdict::Progressing(_) => "Progressing".into(),
        }
    }
}

/// Where one service stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still converging; the text says how far.
    Progressing(String),
    /// Done.
    Converged,
    /// Will not converge without a change; the text says why.
    Failed(String),
}

/// Judges a status against the revision the user applied.
pub fn judge(status: Option<&shoal_core::ServiceStatus>, revision: i64) -> Verdict {
    let Some(s) = status else {
        return Verdict::Progressing("waiting for the controller to observe the service".into());
    };
    if s.observed_generation < revision {
        return Verdict::Progressing(format!(
            "waiting for the controller to observe revision {revision} (at {})",
            s.observed_generation
        ));
    }
    if let Some(e) = &s.error {
        return Verdict::Failed(format!("invalid manifest: {e}"));
    }
    if let Some(job) = &s.job {
        return judge_job(job, s.unschedulable.as_deref());
    }
    if let Some(r) = &s.rollout {
        let why = r.message.clone().unwrap_or_default();
        match r.state {
            shoal_core::model::RolloutState::Paused => {
                return Verdict::Failed(format!("rollout paused: {why}"));
            }
            shoal_core::model::RolloutState::RolledBack => {
                return Verdict::Failed(format!("rollout rolled back: {why}"));
            }
            shoal_core::model::RolloutState::RollbackPaused => {
                return Verdict::Failed(format!("rollback paused: {why}"));
            }
            _ => {}
        }
    }
    if let Some(u) = &s.unschedulable {
        return Verdict::Failed(format!("unschedulable: {u}"));
    }
    let rolling = s.rollout.as_ref().is_some_and(|r| {
        matches!(
            r.state,
            shoal_core::model::RolloutState::Updating
                | shoal_core::model::RolloutState::RollingBack
        )
    });
    if s.running == s.desired && s.updated == s.desired && !rolling {
        return Verdict::Converged;
    }
    Verdict::Progressing(format!(
        "{}/{} running, {} updated",
        s.running, s.desired, s.updated
    ))
}

/// A job is done when its last run finished: converged when it completed, failed when it
/// failed. A scheduled job without runs yet has nothing to wait for.
fn judge_job(job: &shoal_core::job::JobStatus, unschedulable: Option<&str>) -> Verdict {
    use shoal_core::job::RunState;
    let Some(run) = job.last() else {
        return Verdict::Converged;
    };
    match run.state {
        RunState::Complete => Verdict::Converged,
        RunState::Failed => Verdict::Failed(format!(
            "job run {} failed ({}): {}",
            run.number,
            run.reason.as_deref().unwrap_or("unknown"),
            run.message.as_deref().unwrap_or("")
        )),
        RunState::Running => match unschedulable {
            Some(u) => Verdict::Failed(format!("unschedulable: {u}")),
            None => Verdict::Progressing(format!(
                "run {}: {}/{} succeeded, {} failed",
                run.number, run.succeeded, run.completions, run.failed
            )),
        },
    }
}

/// What happened to one service in a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The service did not exist and was written.
    Created,
    /// The service existed with a different spec and was rewritten.
    Configured,
    /// The service exists with an equal spec; nothing was written.
    Unchanged,
    /// The service carried the prune selector, was not in the applied set, and was deleted.
    Pruned,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Pruned => "pruned",
        })
    }
}

/// One service's outcome in a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteResult {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened (or would happen, in a dry run).
    pub action: Action,
    /// Revision of the manifest key after the write (0 when pruned or in a dry run of a create).
    pub revision: Revision,
}

/// Answer of `POST /v1/apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// One entry per applied or pruned service, applied ones in document order, then pruned
    /// ones sorted by namespace and name.
    pub results: Vec<WriteResult>,
}

/// Answer of `DELETE /v1/services/{ns}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResponse {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Store revision after the delete.
    pub revision: Revision,
}

/// Tasks joined with their statuses and nodes joined with their settings and readiness, as
/// `GET /v1/tasks` and `GET /v1/nodes` answer them.
pub use shoal_core::view::{NodeEntry, TaskEntry};

/// Body of `PATCH /v1/nodes/{id}`: only the given fields change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePatch {
    /// New availability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub availability: Option<Availability>,
    /// Labels to set (a string value) or remove (`null`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Option<String>>,
}

/// One problem in a manifest, located in the request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What failed and why.
    pub error: String,
    /// Located manifest problems, for invalid manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
    /// The current revision of the key, for conflicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<Revision>,
}

/// Kind of record a watch event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum WatchKind {
    /// `status/services/<ns>/<name>`.
    ServiceStatus,
    /// `tasks/<node>/<task>`.
    Task,
    /// `taskstatus/<node>/<task>`.
    TaskStatus,
    /// `nodes/<node>`: the node's record, written by its agent while it is alive (a deletion:
    /// the node went down).
    Node,
    /// `nodeconfig/<node>`: the node's settings (availability, labels).
    NodeConfig,
}

impl WatchKind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::ServiceStatus => "serviceStatus",
            WatchKind::Task => "task",
            WatchKind::TaskStatus => "taskStatus",
            WatchKind::Node => "node",
            WatchKind::NodeConfig => "nodeConfig",
        }
    }
}

/// One change delivered by `GET /v1/watch` (the SSE `data`; the SSE `id` is `revision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchEvent {
    /// Store revision of the change.
    pub revision: Revision,
    /// Record kind.
    pub kind: WatchKind,
    /// Whether the record was deleted.
    pub deleted: bool,
    /// Service, for service statuses and tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service name, for service statuses and tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Node, for tasks, task statuses, nodes and node settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Task id, for tasks and task statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The record's JSON (absent on delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub value: Option<serde_json::Value>,
}
