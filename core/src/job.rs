//! Jobs: the `spec.job` settings of a `replicated-job` or `global-job` manifest, and the
//! record of its runs the controller keeps in the service status.
//!
//! A job's tasks run to completion. A *run* is one attempt at the whole job: `completions`
//! successful tasks (one per eligible node for `global-job`), at most `parallelism` at once.
//! Runs are numbered from 1; the status keeps the last `historyLimit` of them, so an unchanged
//! job is never run again by a controller restart or a re-apply of the same manifest.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Timestamp;
use crate::units::Dur;

/// Failed tasks tolerated before a run fails (Kubernetes' default).
pub const DEFAULT_BACKOFF_LIMIT: u64 = 6;
/// Runs kept in the status by default.
pub const DEFAULT_HISTORY_LIMIT: u64 = 3;

/// What happens when a scheduled run is due while the previous one is still active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start the new run alongside the active one.
    Allow,
    /// Skip the new run (default).
    #[default]
    Forbid,
    /// Stop the active run and start the new one.
    Replace,
}

/// Job settings (`spec.job`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// Successful tasks a run needs (default 1). Not allowed with `global-job`, which needs
    /// one per eligible node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<u64>,
    /// Tasks running at once (default 1 for `replicated-job`; unlimited for `global-job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
    /// Failed tasks retried (after the restart delay) before the run fails with
    /// `BackoffLimitExceeded` (default 6).
    #[serde(default = "default_backoff_limit")]
    pub backoff_limit: u64,
    /// A run still active this long after it started is stopped and fails with
    /// `DeadlineExceeded` (no limit when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline: Option<Dur>,
    /// A finished run's tasks (and their containers and logs) are removed this long after it
    /// finished; its record stays in the status (kept when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Dur>,
    /// Runs whose record the status keeps (default 3).
    #[serde(default = "default_history_limit")]
    pub history_limit: u64,
    /// When to start runs: 5-field cron (`*/5 * * * *`), `@hourly`-style names, or
    /// `@every 30s`. Without it the job runs once per template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone the cron schedule is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// `Allow`, `Forbid` (default) or `Replace`.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A scheduled run missed by more than this is not started (no limit when omitted; at
    /// most one missed run is started in any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Dur>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            completions: None,
            parallelism: None,
            backoff_limit: DEFAULT_BACKOFF_LIMIT,
            active_deadline: None,
            ttl_after_finished: None,
            history_limit: DEFAULT_HISTORY_LIMIT,
            schedule: None,
            time_zone: None,
            concurrency_policy: ConcurrencyPolicy::Forbid,
            starting_deadline: None,
        }
    }
}

fn default_backoff_limit() -> u64 {
    DEFAULT_BACKOFF_LIMIT
}

fn default_history_limit() -> u64 {
    DEFAULT_HISTORY_LIMIT
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunState {
    /// Tasks are running or waiting to run.
    Running,
    /// Every completion succeeded.
    Complete,
    /// The run gave up (see its reason).
    Failed,
}

impl RunState {
    /// The name shown by `shoal get jobs`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "Running",
            RunState::Complete => "Complete",
            RunState::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run failed.
pub mod reason {
    /// More than `backoffLimit` tasks failed.
    pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
    /// The run was active longer than `activeDeadline`.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// A newer scheduled run replaced it (`concurrencyPolicy: Replace`).
    pub const REPLACED: &str = "Replaced";
    /// A forced run (`shoal job run --force`) or a changed template replaced it.
    pub const SUPERSEDED: &str = "Superseded";
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RunTrigger {
    /// A new or changed template.
    Template,
    /// A schedule tick.
    Schedule,
    /// `shoal job run`.
    Manual,
}

/// One run of a job, as the status records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    /// Run number, from 1.
    pub number: u64,
    /// Manifest revision the run was started from.
    pub generation: i64,
    /// Hash of the task template the run's tasks use.
    pub template_hash: String,
    /// What started it.
    pub trigger: RunTrigger,
    /// Where it is.
    pub state: RunState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// The schedule tick it was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Timestamp>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Successes needed (for `global-job`: the eligible nodes seen so far).
    pub completions: u64,
    /// Tasks that succeeded (each counted once, by id).
    pub succeeded: u64,
    /// Tasks that failed (each counted once, by id).
    pub failed: u64,
    /// Ids of the tasks counted as succeeded, while the run is active (so a task is counted
    /// once across controller restarts and failovers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub succeeded_tasks: Vec<String>,
    /// Ids of the tasks counted as failed, while the run is active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<String>,
    /// For `global-job`: the nodes that completed, while the run is active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_nodes: Vec<String>,
    /// Whether `ttlAfterFinished` passed and the run's tasks were removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleaned: bool,
}

impl JobRun {
    /// Whether the run has finished (complete or failed).
    pub fn is_finished(&self) -> bool {
        self.state != RunState::Running
    }

    /// How long it ran (until `now` while active).
    pub fn duration(&self, now: Timestamp) -> std::time::Duration {
        self.finished_at.unwrap_or(now).since(self.started_at)
    }
}

/// A request to start a run now (`shoal job run`), written by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    /// When it was asked for; each distinct time starts at most one run.
    pub requested_at: Timestamp,
    /// Start even when a run is active (stopping it).
    #[serde(default)]
    pub force: bool,
}

/// The job part of a service status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// The last runs, oldest first (at most `historyLimit`, plus active ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<JobRun>,
    /// The last schedule tick handled (started or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule: Option<Timestamp>,
    /// The last `shoal job run` request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<Timestamp>,
    /// The next schedule tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule: Option<Timestamp>,
}

impl JobStatus {
    /// The newest run.
    pub fn last(&self) -> Option<&JobRun> {
        self.runs.last()
    }

    /// The runs still active.
    pub fn active(&self) -> impl Iterator<Item = &JobRun> {
        self.runs.iter().filter(|r| !r.is_finished())
    }

    /// The number the next run gets.
    pub fn next_number(&self) -> u64 {
        self.runs.iter().map(|r| r.number).max().unwrap_or(0) + 1
    }
}
