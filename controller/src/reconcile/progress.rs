//! The rollout record in the service status: when a rollout starts, resumes, pauses, rolls
//! back and completes, and the short history `describe` shows.
//!
//! An automatic rollback is a controller decision recorded here, not a manifest write: while
//! the record's state is `rollingBack`, `rolledBack` or `rollbackPaused` and the manifest's
//! template is still the one that failed (`targetHash`), the controller reconciles towards
//! `status.previousSpec` (its template, with the manifest's replicas and policies). The
//! manifest then disagrees with what runs — as Swarm's `docker service inspect` shows
//! `rollback_completed` — until the user changes the manifest's template (or writes the
//! previous spec back with `shoal rollout undo`).

use std::time::Duration;

use shoal_core::manifest::{FailureAction, ServiceSpec, UpdateConfig};
use shoal_core::model::Timestamp;
use shoal_core::model::{RolloutRecord, RolloutState, RolloutStatus, ServiceStatus, TaskTemplate};

use super::rollout::ratio_exceeded;
use super::status::push_event;

/// Rollouts kept in `status.rolloutHistory`.
pub const HISTORY: usize = 5;

/// Most failed task ids a rollout record keeps.
const MAX_FAILED_TASKS: usize = 1000;

/// The spec an automatic rollback reconciles towards, when one is under way or done for
/// the manifest's current template: the previous spec's template with the manifest's
/// replicas and policies.
pub(super) fn rollback_spec(
    previous: Option<&ServiceStatus>,
    manifest: &ServiceSpec,
    manifest_hash: &str,
) -> Option<ServiceSpec> {
    let st = previous?;
    let r = st.rollout.as_ref()?;
    if !r.state.is_rollback() || r.target_hash != manifest_hash {
        return None;
    }
    let prev = st.previous_spec.as_ref()?;
    if Some(TaskTemplate::from_spec(prev).hash()) != r.previous_hash {
        return None;
    }
    let mut spec = prev.clone();
    spec.mode = manifest.mode;
    spec.replicas = manifest.replicas;
    spec.restart = manifest.restart.clone();
    spec.update = manifest.update.clone();
    spec.rollback = manifest.rollback.clone();
    Some(spec)
}

/// Starts a rollout when the template changed, resumes a paused one when the manifest
/// changed, drops a record the manifest no longer matches, and keeps `currentSpec` and
/// `previousSpec`. `earliest` is the creation time of the oldest live task already on
/// the target template (a new leader may find tasks its predecessor created).
pub(super) fn begin(
    st: &mut ServiceStatus,
    now: Timestamp,
    spec: &ServiceSpec,
    hash: &str,
    rollback_mode: bool,
    generation: i64,
    earliest: Option<Timestamp>,
) {
    let previous_hash = st
        .current_spec
        .as_ref()
        .map(|s| TaskTemplate::from_spec(s).hash());
    let manifest_changed = st.observed_generation != 0 && generation > st.observed_generation;
    if rollback_mode {
        if manifest_changed
            && let Some(r) = st.rollout.as_mut()
            && r.state == RolloutState::RollbackPaused
        {
            r.state = RolloutState::RollingBack;
            r.failed_tasks.clear();
            r.rollback_started_at = Some(now);
            push_event(st, now, "Normal", "RollbackResumed", "the manifest changed");
        }
    } else if previous_hash.as_deref().is_some_and(|h| h != hash) {
        let previous_image = st.current_spec.as_ref().and_then(|s| s.image.clone());
        st.previous_spec = st.current_spec.clone();
        let started_at = earliest.map_or(now, |e| e.min(now));
        st.rollout = Some(RolloutStatus {
            state: RolloutState::Updating,
            target_hash: hash.to_string(),
            updated: 0,
            total: 0,
            message: None,
            started_at,
            completed_at: None,
            image: spec.image.clone(),
            previous_hash,
            previous_image,
            failed_tasks: Vec::new(),
            rollback_started_at: None,
        });
        let msg = match &spec.image {
            Some(img) => format!("template changed (image {img}): replacing tasks"),
            None => "template changed: replacing tasks".to_string(),
        };
        push_event(st, now, "Normal", "RolloutStarted", &msg);
    } else if let Some(r) = st.rollout.as_mut() {
        if r.target_hash != hash {
            // The manifest went back to what runs (after a rollback): nothing to roll out.
            st.rollout = None;
        } else if manifest_changed && r.state == RolloutState::Paused {
            r.state = RolloutState::Updating;
            r.failed_tasks.clear();
            r.message = None;
            push_event(st, now, "Normal", "RolloutResumed", "the manifest changed");
        }
    }
    st.current_spec = Some(spec.clone());
}

/// The window in which new tasks are monitored: since when (tasks created earlier belong
/// to something else) and whether failures still count.
pub(super) struct Monitoring {
    /// Tasks on the target template created from then on belong to this rollout.
    pub(super) since: Option<Timestamp>,
    /// Whether a failure can still trigger the failure action.
    pub(super) active: bool,
}

/// The monitoring window of the current record.
pub(super) fn monitoring(st: &ServiceStatus, rollback_mode: bool) -> Monitoring {
    match &st.rollout {
        Some(r) if rollback_mode => Monitoring {
            since: r.rollback_started_at.or(Some(r.started_at)),
            active: r.state == RolloutState::RollingBack,
        },
        Some(r) if !r.state.is_rollback() => Monitoring {
            since: Some(r.started_at),
            active: r.state == RolloutState::Updating,
        },
        _ => Monitoring {
            since: None,
            active: false,
        },
    }
}

/// Whether batches may start: not while paused.
pub(super) fn may_advance(st: &ServiceStatus) -> bool {
    !st.rollout
        .as_ref()
        .is_some_and(|r| matches!(r.state, RolloutState::Paused | RolloutState::RollbackPaused))
}

/// Counts new failures against `maxFailureRatio` and fires the failure action. Returns
/// `true` when a rollback starts (the next reconcile acts on the previous template).
pub(super) fn record_failures(
    st: &mut ServiceStatus,
    now: Timestamp,
    failures: Vec<(String, String)>,
    policy: &UpdateConfig,
    total: u64,
) -> bool {
    if failures.is_empty() {
        return false;
    }
    let can_roll_back = st
        .previous_spec
        .as_ref()
        .map(|p| TaskTemplate::from_spec(p).hash())
        == st.rollout.as_ref().and_then(|r| r.previous_hash.clone());
    let Some(r) = st.rollout.as_mut() else {
        return false;
    };
    let rolling_back = r.state == RolloutState::RollingBack;
    let last = failures.last().map(|(_, m)| m.clone()).unwrap_or_default();
    for (id, _) in &failures {
        if r.failed_tasks.len() < MAX_FAILED_TASKS {
            r.failed_tasks.push(id.clone());
        }
    }
    let exceeded = ratio_exceeded(r.failed_tasks.len(), total, policy);
    let mut events: Vec<(&str, &str, String)> = failures
        .iter()
        .map(|(_, m)| ("Warning", "TaskFailedDuringRollout", m.clone()))
        .collect();
    let mut rollback = false;
    if exceeded {
        match (policy.failure_action, rolling_back) {
            (FailureAction::Continue, _) => {}
            (_, true) => {
                r.state = RolloutState::RollbackPaused;
                r.message = Some(last.clone());
                events.push(("Warning", "RollbackPaused", last.clone()));
            }
            (FailureAction::Rollback, false) if can_roll_back => {
                r.state = RolloutState::RollingBack;
                r.message = Some(last.clone());
                r.rollback_started_at = Some(now);
                rollback = true;
                events.push(("Warning", "RollbackStarted", last.clone()));
            }
            (action, false) => {
                let extra = if action == FailureAction::Rollback {
                    " (no previous spec to roll back to)"
                } else {
                    ""
                };
                r.state = RolloutState::Paused;
                r.message = Some(format!("{last}{extra}"));
                events.push(("Warning", "RolloutPaused", format!("{last}{extra}")));
            }
        }
    }
    for (kind, reason, msg) in events {
        push_event(st, now, kind, reason, &msg);
    }
    rollback
}

/// What the end of a reconcile knows about the rollout.
pub(super) struct Outcome {
    /// Slots up on the target template.
    pub(super) updated: u64,
    /// Slots wanted.
    pub(super) desired: u64,
    /// Slots whose new task failed and that the rollout moves past (`continue`).
    pub(super) failed_slots: u64,
    /// No slot runs or stops an older template any more.
    pub(super) all_current: bool,
    /// When the last new task's monitor window ends.
    pub(super) monitor_until: Option<Timestamp>,
}

/// Updates progress and completes the rollout (or rollback) once every slot runs the
/// target template and the monitor windows passed. Returns when to look again.
pub(super) fn finish(st: &mut ServiceStatus, now: Timestamp, o: &Outcome) -> Option<Duration> {
    let r = st.rollout.as_mut()?;
    r.updated = o.updated;
    r.total = o.desired;
    let done = o.all_current && o.updated + o.failed_slots >= o.desired;
    let (next, event) = match r.state {
        RolloutState::Updating => (RolloutState::Completed, "RolloutCompleted"),
        RolloutState::RollingBack => (RolloutState::RolledBack, "RollbackCompleted"),
        _ => return None,
    };
    if !done {
        return None;
    }
    if let Some(until) = o.monitor_until.filter(|&u| u > now) {
        return Some(until.since(now));
    }
    r.state = next;
    r.completed_at = Some(now);
    let msg = if next == RolloutState::Completed {
        "every task runs the current template".to_string()
    } else {
        "every task runs the previous template again; the manifest still names the one that \
         failed"
            .to_string()
    };
    push_event(st, now, "Normal", event, &msg);
    None
}

/// Mirrors the current rollout into the history (the last [`HISTORY`] rollouts).
pub(super) fn sync_history(st: &mut ServiceStatus) {
    let Some(r) = &st.rollout else {
        return;
    };
    let rec = RolloutRecord {
        target_hash: r.target_hash.clone(),
        image: r.image.clone(),
        state: r.state,
        started_at: r.started_at,
        completed_at: r.completed_at,
        message: r.message.clone(),
    };
    match st.rollout_history.last_mut() {
        Some(last) if last.target_hash == rec.target_hash && last.started_at == rec.started_at => {
            *last = rec;
        }
        _ => st.rollout_history.push(rec),
    }
    if st.rollout_history.len() > HISTORY {
        let extra = st.rollout_history.len() - HISTORY;
        st.rollout_history.drain(..extra);
    }
}
