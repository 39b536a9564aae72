//! Waiting for services to converge (`apply --wait`, `rollout status`) by following the
//! API's watch, with a progress bar per service on a terminal and plain lines otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use shoal_api::Client;
use shoal_api::types::WatchKind;
pub use shoal_api::types::{Verdict, judge};
use shoal_core::ServiceStatus;

use super::follow::{Followed, Follower};
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

/// Follows every target's status on the API's watch until all converge, one fails, or
/// `timeout` passes. A lost watch (the API restarting or unreachable) is reopened and resumed
/// until the timeout; it never counts as a failed rollout.
pub async fn wait_for(client: &Client, targets: Vec<Target>, timeout: Duration) -> CmdResult {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress = Progress::new(&targets);
    // One service: let the API filter; several: one stream, filtered here.
    let only = match targets.as_slice() {
        [t] => Some(format!("{}/{}", t.namespace, t.name)),
        _ => None,
    };
    let mut follower = Follower::new(client.clone(), only);
    let mut statuses: BTreeMap<String, ServiceStatus> = BTreeMap::new();
    let mut unavailable: Option<String> = None;
    loop {
        if let Some(code) = progress.judge_all(&targets, &statuses, unavailable.as_deref()) {
            return Ok(code);
        }
        let step = tokio::select! {
            step = follower.next() => step?,
            () = tokio::time::sleep_until(deadline) => return Ok(progress.timed_out(timeout)),
        };
        match step {
            Followed::Event(ev) => {
                unavailable = None;
                if ev.kind != WatchKind::ServiceStatus {
                    continue;
                }
                let (Some(ns), Some(name)) = (&ev.namespace, &ev.service) else {
                    continue;
                };
                let id = format!("{ns}/{name}");
                if !progress.done.contains_key(&id) {
                    continue;
                }
                match ev.value.and_then(|v| serde_json::from_value(v).ok()) {
                    Some(s) if !ev.deleted => statuses.insert(id, s),
                    _ => statuses.remove(&id),
                };
            }
            Followed::Lost(e) => unavailable = Some(format!("API unavailable: {e}")),
        }
    }
}

/// What the user sees while waiting: a bar per service on a terminal, lines otherwise.
struct Progress {
    /// Keeps the bars drawn together.
    _multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
    last: BTreeMap<String, String>,
    done: BTreeMap<String, bool>,
}

impl Progress {
    fn new(targets: &[Target]) -> Self {
        let tty = std::io::stdout().is_terminal();
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mut bars = BTreeMap::new();
        let mut done = BTreeMap::new();
        for t in targets {
            let id = format!("{}/{}", t.namespace, t.name);
            if tty {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(t.name.clone());
                bars.insert(id.clone(), b);
            }
            done.insert(id, false);
        }
        Progress {
            _multi: multi,
            bars,
            last: BTreeMap::new(),
            done,
        }
    }

    /// Judges every unfinished target; `Some(exit code)` when the wait is over.
    fn judge_all(
        &mut self,
        targets: &[Target],
        statuses: &BTreeMap<String, ServiceStatus>,
        unavailable: Option<&str>,
    ) -> Option<u8> {
        for t in targets {
            let id = format!("{}/{}", t.namespace, t.name);
            if self.done[&id] {
                continue;
            }
            let status = statuses.get(&id);
            let verdict = judge(status, t.revision);
            if let (Some(b), Some(s)) = (self.bars.get(&id), status) {
                b.set_length(s.desired);
                b.set_position(s.running.min(s.desired));
            }
            let line = match (&verdict, unavailable) {
                (Verdict::Progressing(_), Some(why)) => why.to_string(),
                (Verdict::Progressing(m) | Verdict::Failed(m), _) => m.clone(),
                (Verdict::Converged, _) => "converged".to_string(),
            };
            if let Some(b) = self.bars.get(&id) {
                b.set_message(line.clone());
            } else if self.last.get(&id) != Some(&line) {
                println!("service/{}: {line}", t.name);
            }
            self.last.insert(id.clone(), line);
            match verdict {
                Verdict::Converged => {
                    if let Some(b) = self.bars.get(&id) {
                        b.finish_with_message("converged");
                    }
                    self.done.insert(id, true);
                }
                Verdict::Failed(why) => {
                    self.abandon();
                    eprintln!("error: service {id} failed: {why}");
                    return Some(EXIT_FAILED);
                }
                Verdict::Progressing(_) => {}
            }
        }
        self.done.values().all(|d| *d).then_some(EXIT_OK)
    }

    fn timed_out(&self, timeout: Duration) -> u8 {
        self.abandon();
        let pending: Vec<String> = self
            .done
            .iter()
            .filter(|(_, d)| !**d)
            .map(|(id, _)| {
                let why = self.last.get(id).cloned().unwrap_or_default();
                format!("{id} ({why})")
            })
            .collect();
        eprintln!(
            "error: timed out after {} waiting for: {}",
            humantime::format_duration(timeout),
            pending.join(", ")
        );
        EXIT_TIMEOUT
    }

    fn abandon(&self) {
        for b in self.bars.values() {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::Timestamp;
    use shoal_core::model::{RolloutState, RolloutStatus};

    use super::*;

    /// A rollout to hash `h` of three tasks, `updated` of them done.
    fn rollout(state: RolloutState, updated: u64, message: Option<&str>) -> RolloutStatus {
        RolloutStatus {
            state,
            target_hash: "h".into(),
            updated,
            total: 3,
            message: message.map(str::to_string),
            started_at: Timestamp(0),
            completed_at: None,
            image: None,
            previous_hash: None,
            previous_image: None,
            failed_tasks: vec![],
            rollback_started_at: None,
        }
    }

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
        s.rollout = Some(rollout(RolloutState::RolledBack, 0, Some("task failed")));
        assert!(matches!(judge(Some(&s), 5), Verdict::Failed(m) if m.contains("rolled back")));
        for (state, word) in [
            (RolloutState::Paused, "paused"),
            (RolloutState::RollbackPaused, "rollback paused"),
        ] {
            let mut s = status(5, 3, 3, 1);
            s.rollout = Some(rollout(
                state,
                1,
                Some("task web.2.x was rejected: No such image"),
            ));
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
            s.rollout = Some(rollout(state, 3, None));
            assert!(matches!(judge(Some(&s), 5), Verdict::Progressing(_)));
        }
        let mut s = status(5, 3, 3, 3);
        s.error = Some("services/default/web:3:1: bad".into());
        assert!(matches!(judge(Some(&s), 5), Verdict::Failed(_)));
    }
}
