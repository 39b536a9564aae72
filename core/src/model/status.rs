//! What the controller writes about each service: its rollout, recent events, conditions and
//! the `ServiceStatus` record that holds them (read by the API, `get`, `--wait` and the dashboard).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Timestamp;
use crate::manifest::ServiceSpec;

/// Phase of a rollout (Swarm's UpdateStatus states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RolloutState {
    /// Replacing tasks with the new template.
    Updating,
    /// Stopped after failures; resumes when the manifest changes.
    Paused,
    /// Every task runs the new template.
    Completed,
    /// Restoring the previous template.
    RollingBack,
    /// The previous template is back.
    RolledBack,
    /// A rollback stopped after failures.
    RollbackPaused,
}

/// Progress of the current (or last) rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Phase.
    pub state: RolloutState,
    /// Template hash being rolled out.
    pub target_hash: String,
    /// Slots on the target template and running.
    pub updated: u64,
    /// Slots in all.
    pub total: u64,
    /// Why it paused or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Image of the target template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Template hash the tasks ran before the rollout (what a rollback restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    /// Image of the previous template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// Tasks on the rolled-out template that failed during their monitor window (counted
    /// once each against `maxFailureRatio`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<String>,
    /// When the automatic rollback started. While the state is `rollingBack`, `rolledBack`
    /// or `rollbackPaused`, the tasks run the previous template (`previousHash`), not the
    /// manifest's (`targetHash`), until the manifest's template changes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_started_at: Option<Timestamp>,
}

impl RolloutState {
    /// Lowercase-camel name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Updating => "updating",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::RollingBack => "rollingBack",
            RolloutState::RolledBack => "rolledBack",
            RolloutState::RollbackPaused => "rollbackPaused",
        }
    }

    /// Whether the state belongs to an automatic rollback (the tasks run the previous
    /// template rather than the manifest's).
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            RolloutState::RollingBack | RolloutState::RolledBack | RolloutState::RollbackPaused
        )
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One past or current rollout, as `describe` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// Template hash rolled out.
    pub target_hash: String,
    /// Its image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Last known phase.
    pub state: RolloutState,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Why it paused or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A notable thing that happened to a service (`describe` shows the recent ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When.
    pub time: Timestamp,
    /// `Normal` or `Warning`.
    pub kind: String,
    /// Short machine-friendly reason (`Scheduled`, `Unschedulable`, `Restarted`, ...).
    pub reason: String,
    /// Sentence for people.
    pub message: String,
}

/// A condition, in Kubernetes' style (`Available`, `Progressing`, `Valid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it holds.
    pub status: bool,
    /// Short reason.
    pub reason: String,
    /// Sentence for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    pub last_transition: Timestamp,
}

/// Observed state of a service (`status/services/<ns>/<name>`), written by the controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Manifest revision this status reflects.
    pub observed_generation: i64,
    /// Tasks wanted (replicas, or eligible nodes for global).
    pub desired: u64,
    /// Tasks running (and healthy when there is a healthcheck).
    pub running: u64,
    /// Running tasks on the current template.
    pub updated: u64,
    /// Current or last rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Why tasks could not be placed, with counts per reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<String>,
    /// The manifest error (with line and column) when the stored manifest is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Recent events, oldest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// The spec before the last template change, for rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    /// The spec the current template comes from (so the next template change can keep it
    /// as `previousSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_spec: Option<ServiceSpec>,
    /// The last few rollouts, oldest first (the current one last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout_history: Vec<RolloutRecord>,
    /// Runs of a job (jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<crate::job::JobStatus>,
    /// When the status was written.
    #[serde(default)]
    pub updated_at: Timestamp,
}
