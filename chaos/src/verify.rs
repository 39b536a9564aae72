//! Final-state checks once the nemesis has stopped and every fault is healed:
//!
//! - every acknowledged apply is in the final state and nothing unacknowledged appears (each
//!   service is at its last acknowledged state or at a later request whose answer was lost);
//! - the cluster converges: every service's status observed its manifest, runs its desired
//!   count with every task updated and no rollout in flight — the time it took is reported;
//! - the hosts run exactly the processes the services ask for (none left behind by a killed
//!   agent or a stale copy).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_api::Client;
use shoal_core::manifest::Mode;
use shoal_core::model::{RolloutState, ServiceStatus};
use shoal_core::view::TaskEntry;

use crate::checker::Violation;
use crate::workload::{Desired, Model, NAMESPACE, SERVICES, service_name};

/// The final state of each workload service, as read through the API.
pub async fn final_state(client: &Client) -> Result<BTreeMap<String, Desired>, String> {
    let list = client
        .list_services(Some(NAMESPACE), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for r in list {
        let d = match &r.service {
            Some(s) => Desired::Present {
                replicas: match s.spec.mode {
                    Mode::Global => None,
                    _ => s.spec.replicas,
                },
                version: s
                    .spec
                    .env
                    .get("VERSION")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            },
            None => Desired::Present {
                replicas: None,
                version: 0,
            },
        };
        out.insert(r.name.clone(), d);
    }
    Ok(out)
}

/// Checks the final state against what the workload was told.
pub fn check_acknowledged(
    model: &Model,
    state: &BTreeMap<String, Desired>,
    t: f64,
) -> Vec<Violation> {
    let mut v = Vec::new();
    for i in 0..SERVICES {
        let name = service_name(i);
        let seen = state.get(&name).cloned().unwrap_or(Desired::Absent);
        let allowed = model.allowed(&name);
        if !allowed.contains(&seen) {
            v.push(Violation {
                t,
                invariant: "acknowledged-writes",
                detail: format!("{name} is {seen:?}; acknowledged or in doubt: {allowed:?}"),
            });
        }
    }
    for name in state
        .keys()
        .filter(|n| !(0..SERVICES).any(|i| service_name(i) == **n))
    {
        v.push(Violation {
            t,
            invariant: "acknowledged-writes",
            detail: format!("{name} exists but was never applied"),
        });
    }
    v
}

fn converged(s: &ServiceStatus, revision: i64) -> bool {
    let rolling = s
        .rollout
        .as_ref()
        .is_some_and(|r| matches!(r.state, RolloutState::Updating | RolloutState::RollingBack));
    s.observed_generation >= revision
        && s.error.is_none()
        && s.running == s.desired
        && s.updated == s.desired
        && !rolling
}

/// What else a status says about a service that has not converged: its rollout, why tasks
/// could not be placed, its last events (so that a failed run says where it stopped).
fn why_not(s: &ServiceStatus) -> String {
    let mut out = String::new();
    if let Some(r) = &s.rollout {
        out.push_str(&format!(
            "; rollout {:?} {}/{}{}",
            r.state,
            r.updated,
            r.total,
            r.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ));
    }
    if let Some(u) = &s.unschedulable {
        out.push_str(&format!("; unschedulable: {u}"));
    }
    let last: Vec<String> = s
        .events
        .iter()
        .rev()
        .take(3)
        .map(|e| format!("{} {}", e.reason, e.message))
        .collect();
    if !last.is_empty() {
        out.push_str(&format!("; last events: {}", last.join(" | ")));
    }
    out
}

/// The service's tasks as the store holds them, outside their slots' history: slot, id,
/// whether on the rollout's target template, desired and observed state, node — so that a
/// service that did not converge shows whether the store or the leader's view of it is off.
fn stored_tasks(tasks: &[TaskEntry], s: &ServiceStatus) -> String {
    let target = s.rollout.as_ref().map(|r| r.target_hash.as_str());
    let mut live: Vec<&TaskEntry> = tasks.iter().filter(|e| !e.history).collect();
    live.sort_by(|a, b| a.task.slot.cmp(&b.task.slot));
    let shown: Vec<String> = live
        .iter()
        .map(|e| {
            let template = match target {
                Some(h) if e.task.template_hash == h => "target",
                Some(_) => "older",
                None => "-",
            };
            format!(
                "slot {} {} {template} desired {:?} {} on {}{}",
                e.task.slot,
                e.task.id,
                e.task.desired_state,
                e.state(),
                e.task.node_id,
                if e.task.orphaned { " orphaned" } else { "" }
            )
        })
        .collect();
    format!("; tasks: {}", shown.join(" | "))
}

/// Services not converged yet (with why), empty when all are; with `list_tasks`, each
/// with its tasks as the store holds them (one more request per service, asked only when a
/// failure is reported).
pub async fn not_converged(client: &Client, list_tasks: bool) -> Vec<String> {
    let list = match client.list_services(Some(NAMESPACE), None).await {
        Ok(l) => l,
        Err(e) => return vec![format!("list: {e}")],
    };
    let mut out = Vec::new();
    for r in list {
        match client.service_status(NAMESPACE, &r.name).await {
            Ok(Some(s)) if converged(&s, r.revision) => {}
            Ok(Some(s)) => {
                let tasks = if list_tasks {
                    let service = format!("{NAMESPACE}/{}", r.name);
                    match client.tasks(Some(&service), None).await {
                        Ok(t) => stored_tasks(&t, &s),
                        Err(e) => format!("; tasks: {e}"),
                    }
                } else {
                    String::new()
                };
                out.push(format!(
                    "{}: {}/{} running, {} updated, observed {} of {}{}{tasks}",
                    r.name,
                    s.running,
                    s.desired,
                    s.updated,
                    s.observed_generation,
                    r.revision,
                    why_not(&s)
                ));
            }
            Ok(None) => out.push(format!("{}: no status", r.name)),
            Err(e) => out.push(format!("{}: {e}", r.name)),
        }
    }
    out
}

/// Waits until every service converges; returns the seconds taken, or what was left.
pub async fn wait_converged(client: &Client, bound: Duration) -> Result<f64, Vec<String>> {
    let t0 = Instant::now();
    loop {
        let last = t0.elapsed() > bound;
        let left = not_converged(client, last).await;
        if left.is_empty() {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if last {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Counts the workload's host processes of run `run_id` per service, from `/proc`; the
/// `orphans` entry counts those whose parent is init (their agent is gone).
pub fn processes(run_id: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let run = format!("CHAOS_RUN={run_id}");
    for e in dir.flatten() {
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if !vars.contains(&run.as_bytes()) {
            continue;
        }
        if let Some(svc) = vars
            .iter()
            .find_map(|v| std::str::from_utf8(v).ok()?.strip_prefix("CHAOS_SVC="))
        {
            *out.entry(svc.to_string()).or_insert(0) += 1;
            if parent(&e.path()) == Some(1) {
                *out.entry("orphans".into()).or_insert(0) += 1;
            }
        }
    }
    out
}

fn parent(proc_dir: &std::path::Path) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Compares processes with the final desired counts (`nodes` hosts for global services).
pub fn process_mismatches(
    state: &BTreeMap<String, Desired>,
    procs: &BTreeMap<String, u64>,
    nodes: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..SERVICES {
        let name = service_name(i);
        let want = match state.get(&name) {
            Some(Desired::Present { replicas, .. }) => replicas.unwrap_or(nodes),
            _ => 0,
        };
        let have = procs.get(&name).copied().unwrap_or(0);
        if want != have {
            out.push(format!("{name}: {have} processes for {want} desired"));
        }
    }
    if let Some(n) = procs.get("orphans").filter(|n| **n > 0) {
        out.push(format!(
            "{n} processes have lost their agent (parent is init)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::model::{Event, RolloutStatus, Task, Timestamp};

    /// A rollout in `state` towards `target`, `updated` of `total` slots done, without a message.
    fn rollout(state: RolloutState, target: &str, updated: u64, total: u64) -> RolloutStatus {
        RolloutStatus {
            state,
            target_hash: target.into(),
            updated,
            total,
            message: None,
            started_at: Timestamp(1),
            completed_at: None,
            image: None,
            previous_hash: None,
            previous_image: None,
            failed_tasks: Vec::new(),
            rollback_started_at: None,
        }
    }

    #[test]
    fn a_service_that_has_not_converged_says_where_its_rollout_stopped() {
        let event = |reason: &str, message: &str| Event {
            time: Timestamp(1),
            kind: "Warning".into(),
            reason: reason.into(),
            message: message.into(),
        };
        let s = ServiceStatus {
            desired: 4,
            running: 3,
            updated: 3,
            rollout: Some(RolloutStatus {
                message: Some("2 of 3 new tasks failed".into()),
                ..rollout(RolloutState::Paused, "abc", 3, 4)
            }),
            events: vec![event("Scheduled", "one"), event("UpdatePaused", "two")],
            ..ServiceStatus::default()
        };
        let why = why_not(&s);
        assert!(
            why.contains("rollout Paused 3/4 (2 of 3 new tasks failed)"),
            "{why}"
        );
        assert!(
            why.contains("last events: UpdatePaused two | Scheduled one"),
            "{why}"
        );
        assert_eq!(why_not(&ServiceStatus::default()), "");
    }

    #[test]
    fn a_service_that_has_not_converged_lists_its_tasks_as_stored() {
        use shoal_core::model::{DesiredState, Slot, TaskState, TaskStatus};
        use shoal_tests::tasks::docker_task;
        let old = docker_task("web.1.a", "web", "n1", "img:1");
        let mut new = docker_task("web.2.b", "web", "n2", "img:2");
        new.slot = Slot::Replica(2);
        let mut gone = docker_task("web.2.c", "web", "n1", "img:1");
        gone.slot = Slot::Replica(2);
        gone.desired_state = DesiredState::Shutdown;
        let s = ServiceStatus {
            rollout: Some(rollout(RolloutState::Updating, &new.template_hash, 1, 2)),
            ..ServiceStatus::default()
        };
        let running = |t: &Task| Some(TaskStatus::new(&t.id, TaskState::Running, Timestamp(2)));
        let mut history = TaskEntry::new(gone.clone(), None);
        history.history = true;
        let tasks = vec![
            TaskEntry::new(new.clone(), running(&new)),
            history,
            TaskEntry::new(old.clone(), running(&old)),
        ];
        let shown = stored_tasks(&tasks, &s);
        assert_eq!(
            shown,
            "; tasks: slot 1 web.1.a older desired Running running on n1 \
             | slot 2 web.2.b target desired Running running on n2"
        );
    }
}
