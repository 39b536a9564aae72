//! Waiting for services to converge (`apply --wait`, `rollout status`), with a progress bar
//! per service on a terminal and plain lines otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use shoal_api::Client;
use shoal_core::ServiceStatus;
use shoal_core::model::RolloutState;

use super::{CmdResult, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT};

/// A service to wait for, and the manifest revision it must have observed.
#[derive(Debug, Clone)]
pub struct Target {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Manifest revision the status must reflect.
    pub revision: i64,
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
pub fn judge(status: Option<&ServiceStatus>, revision: i64) -> Verdict {
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
    if let Some(r) = &s.rollout {
        let why = r.message.clone().unwrap_or_default();
        match r.state {
            RolloutState::Paused => return Verdict::Failed(format!("rollout paused: {why}")),
            RolloutState::RolledBack => {
                return Verdict::Failed(format!("rollout rolled back: {why}"));
            }
            RolloutState::RollbackPaused => {
                return Verdict::Failed(format!("rollback paused: {why}"));
            }
            _ => {}
        }
    }
    if let Some(u) = &s.unschedulable {
        return Verdict::Failed(format!("unschedulable: {u}"));
    }
    let rolling = s
        .rollout
        .as_ref()
        .is_some_and(|r| matches!(r.state, RolloutState::Updating | RolloutState::RollingBack));
    if s.running == s.desired && s.updated == s.desired && !rolling {
        return Verdict::Converged;
    }
    Verdict::Progressing(format!(
        "{}/{} running, {} updated",
        s.running, s.desired, s.updated
    ))
}

/// Polls every target's status until all converge, one fails, or `timeout` passes.
pub async fn wait_for(client: &Client, targets: Vec<Target>, timeout: Duration) -> CmdResult {
    let tty = std::io::stdout().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bars = BTreeMap::new();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut done: BTreeMap<String, bool> = BTreeMap::new();
    for t in &targets {
        let id = format!("{}/{}", t.namespace, t.name);
        if tty {
            let b = multi.add(ProgressBar::new(0));
            b.set_style(style.clone());
            b.set_prefix(t.name.clone());
            bars.insert(id.clone(), b);
        }
        done.insert(id, false);
    }
    let start = Instant::now();
    loop {
        for t in &targets {
            let id = format!("{}/{}", t.namespace, t.name);
            if done[&id] {
                continue;
            }
            let left = timeout.saturating_sub(start.elapsed());
            let status = match tokio::time::timeout(
                left,
                client.service_status(&t.namespace, &t.name),
            )
            .await
            {
                Ok(Ok(s)) => s,
                // An API that is restarting or briefly unreachable is not a failed rollout:
                // keep asking until the timeout.
                Ok(Err(e)) if e.is_transient() => {
                    last.insert(id.clone(), format!("API unavailable: {e}"));
                    continue;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => continue,
            };
            let verdict = judge(status.as_ref(), t.revision);
            if let (Some(b), Some(s)) = (bars.get(&id), &status) {
                b.set_length(s.desired);
                b.set_position(s.running.min(s.desired));
            }
            let line = match &verdict {
                Verdict::Progressing(m) => m.clone(),
                Verdict::Converged => "converged".to_string(),
                Verdict::Failed(m) => m.clone(),
            };
            if let Some(b) = bars.get(&id) {
                b.set_message(line.clone());
            } else if last.get(&id) != Some(&line) {
                println!("service/{}: {line}", t.name);
            }
            last.insert(id.clone(), line);
            match verdict {
                Verdict::Converged => {
                    if let Some(b) = bars.get(&id) {
                        b.finish_with_message("converged");
                    }
                    done.insert(id, true);
                }
                Verdict::Failed(why) => {
                    for b in bars.values() {
                        b.abandon();
                    }
                    eprintln!("error: service {id} failed: {why}");
                    return Ok(EXIT_FAILED);
                }
                Verdict::Progressing(_) => {}
            }
        }
        if done.values().all(|d| *d) {
            return Ok(EXIT_OK);
        }
        if start.elapsed() >= timeout {
            for b in bars.values() {
                b.abandon();
            }
            let pending: Vec<String> = done
                .iter()
                .filter(|(_, d)| !**d)
                .map(|(id, _)| format!("{id} ({})", last.get(id).cloned().unwrap_or_default()))
                .collect();
            eprintln!(
                "error: timed out after {} waiting for: {}",
                humantime::format_duration(timeout),
                pending.join(", ")
            );
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::Timestamp;
    use shoal_core::model::{RolloutState, RolloutStatus};

    use super::*;

    fn status(generation: i64, running: u64, desired: u64, updated: u64) -> ServiceStatus {
        ServiceStatus {
            observed_generation: generation,
            desired,
            running,
            updated,
            ..Default::default()
        }
    }

    #[test]
    fn verdicts_follow_the_status() {
        assert!(matches!(judge(None, 5), Verdict::Progressing(_)));
        assert!(
            matches!(judge(Some(&status(4, 3, 3, 3)), 5), Verdict::Progressing(_)),
            "older generation"
        );
        assert_eq!(judge(Some(&status(5, 3, 3, 3)), 5), Verdict::Converged);
        assert!(
            matches!(judge(Some(&status(5, 3, 3, 1)), 5), Verdict::Progressing(_)),
            "not all updated"
        );
        let mut s = status(5, 3, 3, 3);
        s.unschedulable = Some("0/2 nodes: 2 insufficient memory".into());
        assert!(
            matches!(judge(Some(&s), 5), Verdict::Failed(m) if m.contains("insufficient memory"))
        );
        let mut s = status(6, 3, 3, 3);
        s.rollout = Some(RolloutStatus {
            state: RolloutState::RolledBack,
            target_hash: "h".into(),
            updated: 0,
            total: 3,
            message: Some("task failed".into()),
            started_at: Timestamp(0),
            completed_at: None,
            image: None,
            previous_hash: None,
            previous_image: None,
            failed_tasks: vec![],
            rollback_started_at: None,
        });
        assert!(matches!(judge(Some(&s), 5), Verdict::Failed(m) if m.contains("rolled back")));
        for (state, word) in [
            (RolloutState::Paused, "paused"),
            (RolloutState::RollbackPaused, "rollback paused"),
        ] {
            let mut s = status(5, 3, 3, 1);
            s.rollout = Some(RolloutStatus {
                state,
                target_hash: "h".into(),
                updated: 1,
                total: 3,
                message: Some("task web.2.x was rejected: No such image".into()),
                started_at: Timestamp(0),
                completed_at: None,
                image: None,
                previous_hash: None,
                previous_image: None,
                failed_tasks: vec![],
                rollback_started_at: None,
            });
            assert!(
                matches!(judge(Some(&s), 5), Verdict::Failed(m) if m.contains(word) && m.contains("No such image")),
                "{state:?}"
            );
            // An older status never fails a newer revision.
            assert!(matches!(judge(Some(&s), 6), Verdict::Progressing(_)));
        }
        // Every task up to date but still in its monitor window, or rolling back: not done.
        for state in [RolloutState::Updating, RolloutState::RollingBack] {
            let mut s = status(5, 3, 3, 3);
            s.rollout = Some(RolloutStatus {
                state,
                target_hash: "h".into(),
                updated: 3,
                total: 3,
                message: None,
                started_at: Timestamp(0),
                completed_at: None,
                image: None,
                previous_hash: None,
                previous_image: None,
                failed_tasks: vec![],
                rollback_started_at: None,
            });
            assert!(matches!(judge(Some(&s), 5), Verdict::Progressing(_)));
        }
        let mut s = status(5, 3, 3, 3);
        s.error = Some("services/default/web:3:1: bad".into());
        assert!(matches!(judge(Some(&s), 5), Verdict::Failed(_)));
    }
}
