//! The records a parked task leaves behind: what [`resume`](super::resume) needs to pick the
//! task up again, and nothing else. Hollow nodes hold one per task, so every field is sized
//! for it: the status without its task id (the worker keys the record by it); published
//! ports, the fields only an ended task has, and a stop signal or grace period other than
//! Swarm's defaults in one optional box; and the service name shared by the records of one
//! service ([`ServiceNames`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use shoal_core::model::{Health, PortBinding, Task, TaskState, TaskStatus, Timestamp};

/// How to stop a task, kept from its template once the rest is no longer needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StopSpec {
    /// `None`: `SIGTERM`, the usual one (no allocation per task).
    pub(super) signal: Option<Box<str>>,
    pub(super) grace: Duration,
}

impl StopSpec {
    const DEFAULT_SIGNAL: &str = "SIGTERM";
    /// Swarm's default grace period (a template's default too).
    const DEFAULT_GRACE: Duration = Duration::from_secs(10);

    pub(super) fn of(task: &Task) -> Self {
        let signal = &task.template.stop_signal;
        StopSpec {
            signal: (signal != Self::DEFAULT_SIGNAL).then(|| signal.as_str().into()),
            grace: task.template.stop_grace_period.get(),
        }
    }

    pub(super) fn signal(&self) -> &str {
        self.signal.as_deref().unwrap_or(Self::DEFAULT_SIGNAL)
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for StopSpec {
    /// `SIGTERM` and 10 s.
    fn default() -> Self {
        StopSpec {
            signal: None,
            grace: Self::DEFAULT_GRACE,
        }
    }
}

/// What few parked tasks have: published ports, a stop spec other than the defaults, and
/// what only an ended task's status has. One box, allocated only when any is set.
#[derive(Debug, Default)]
struct Rare {
    host_ports: Box<[PortBinding]>,
    stop: StopSpec,
    exit_code: Option<i64>,
    message: Option<Box<str>>,
    finished_at: Option<Timestamp>,
}

impl Rare {
    /// `None` when the status and stop spec have none of the rare fields.
    fn of(s: &TaskStatus, stop: &StopSpec) -> Option<Box<Self>> {
        let any = !s.host_ports.is_empty()
            || !stop.is_default()
            || s.exit_code.is_some()
            || s.message.is_some()
            || s.finished_at.is_some();
        any.then(|| {
            Box::new(Rare {
                host_ports: s.host_ports.as_slice().into(),
                stop: stop.clone(),
                exit_code: s.exit_code,
                message: s.message.as_deref().map(Into::into),
                finished_at: s.finished_at,
            })
        })
    }
}

/// A running task whose runner has ended: what is needed to pick it up again with
/// [`resume`](super::resume). Its container is the one in its status (`container_id`,
/// `host_ports`). It holds the status without its task id (the worker keys the record by
/// it), the start time without an `Option`'s 8 bytes of tag (`started` says whether there is
/// one), and the service name shared with the worker's other records of the service (see
/// [`ServiceNames`]).
#[derive(Debug)]
pub struct Parked {
    state: TaskState,
    health: Option<Health>,
    /// Whether `started_at` is set.
    started: bool,
    updated_at: Timestamp,
    started_at: Timestamp,
    /// In place when short (up to 24 bytes, as the sim runtime's are).
    container_id: Option<CompactString>,
    /// `<namespace>/<name>` of the owning service (for logs), behind a thin pointer.
    service: Arc<String>,
    /// `None`: no published port, the default stop spec (`SIGTERM`, 10 s), not ended.
    rare: Option<Box<Rare>>,
}

impl Parked {
    pub(super) fn new(s: &TaskStatus, service: Arc<String>, stop: &StopSpec) -> Self {
        Parked {
            state: s.state,
            health: s.health,
            started: s.started_at.is_some(),
            updated_at: s.updated_at,
            started_at: s.started_at.unwrap_or(Timestamp(0)),
            container_id: s.container_id.as_deref().map(Into::into),
            service,
            rare: Rare::of(s, stop),
        }
    }

    /// Whether the task has ended (it only waits for its assignment to be deleted, which
    /// removes its container): nothing but the deletion concerns it any more.
    pub fn has_ended(&self) -> bool {
        self.state.is_terminal()
    }

    /// The owning service, `<namespace>/<name>`.
    pub(super) fn service(&self) -> &str {
        &self.service
    }

    /// Makes the record hold `names`' copy of its service name (its own goes).
    pub(crate) fn share_service(&mut self, names: &mut ServiceNames) {
        self.service = names.share(&self.service);
    }

    /// The status (of task `task_id`), the service and the stop spec back.
    pub(super) fn into_parts(self, task_id: String) -> (TaskStatus, Arc<String>, StopSpec) {
        let Rare {
            host_ports,
            stop,
            exit_code,
            message,
            finished_at,
        } = self.rare.map(|r| *r).unwrap_or_default();
        let status = TaskStatus {
            task_id,
            state: self.state,
            container_id: self.container_id.map(String::from),
            host_ports: host_ports.into_vec(),
            health: self.health,
            exit_code,
            message: message.map(String::from),
            updated_at: self.updated_at,
            started_at: self.started.then_some(self.started_at),
            finished_at,
        };
        (status, self.service, stop)
    }
}

/// One copy of each service name for the parked records of a worker: without it, each of
/// a hollow node's records would hold its own. Names no record holds any more are dropped
/// whenever the set has doubled since it was last swept, so it stays within twice what is
/// in use (plus a few).
#[derive(Debug)]
pub(crate) struct ServiceNames {
    names: HashSet<Arc<String>>,
    /// Sweep when the set reaches this size.
    sweep_at: usize,
}

impl Default for ServiceNames {
    fn default() -> Self {
        ServiceNames {
            names: HashSet::new(),
            sweep_at: Self::MIN_SWEEP,
        }
    }
}

impl ServiceNames {
    /// Below this many names the set is never swept.
    const MIN_SWEEP: usize = 64;

    /// The shared copy of `name` (which becomes it when there is none).
    fn share(&mut self, name: &Arc<String>) -> Arc<String> {
        if let Some(shared) = self.names.get(&**name) {
            return shared.clone();
        }
        if self.names.len() >= self.sweep_at {
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.sweep_at = (2 * self.names.len()).max(Self::MIN_SWEEP);
        }
        self.names.insert(name.clone());
        name.clone()
    }

    /// Number of names held (in use or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::manifest::Protocol;

    fn status() -> TaskStatus {
        TaskStatus {
            task_id: "web.1.abc".into(),
            state: TaskState::Running,
            container_id: Some("sim-00000042".into()),
            host_ports: vec![PortBinding {
                target: 80,
                published: 30_001,
                protocol: Protocol::Tcp,
            }],
            health: Some(Health::Healthy),
            exit_code: None,
            message: None,
            updated_at: Timestamp(2),
            started_at: Some(Timestamp(1)),
            finished_at: None,
        }
    }

    #[test]
    fn a_parked_record_gives_back_the_status_it_was_made_of() {
        let running = status();
        let bare = TaskStatus {
            host_ports: Vec::new(),
            health: None,
            started_at: None,
            container_id: None,
            ..status()
        };
        let ended = TaskStatus {
            state: TaskState::Failed,
            exit_code: Some(137),
            message: Some("task exited with code 137".into()),
            finished_at: Some(Timestamp(3)),
            ..status()
        };
        let custom = StopSpec {
            signal: Some("SIGINT".into()),
            grace: Duration::from_secs(3),
        };
        let cases = [
            (&running, StopSpec::default()),
            (&bare, StopSpec::default()),
            (&bare, custom.clone()),
            (&ended, custom),
        ];
        for (s, stop) in cases {
            let p = Parked::new(s, Arc::new("default/web".to_string()), &stop);
            assert_eq!(p.has_ended(), s.state.is_terminal());
            assert_eq!(p.service(), "default/web");
            let (back, service, stop_back) = p.into_parts("web.1.abc".into());
            assert_eq!(&back, s);
            assert_eq!(service.as_str(), "default/web");
            assert_eq!(stop_back, stop);
        }
    }

    #[test]
    fn a_running_task_without_published_ports_takes_one_small_allocation() {
        let bare = TaskStatus {
            host_ports: Vec::new(),
            ..status()
        };
        let p = Parked::new(
            &bare,
            Arc::new("default/web".to_string()),
            &StopSpec::default(),
        );
        assert!(p.rare.is_none(), "{p:?}");
    }

    #[test]
    fn a_parked_task_is_a_small_record() {
        // Hollow nodes hold one of these per task (208 bytes with the whole status and stop
        // spec inline, 96 with the ended fields and stop spec in boxes of their own); growing
        // it is a choice to make consciously.
        assert!(
            std::mem::size_of::<Parked>() <= 64,
            "Parked grew to {} bytes",
            std::mem::size_of::<Parked>()
        );
    }

    #[test]
    fn records_of_one_service_share_its_name() {
        let mut names = ServiceNames::default();
        let s = status();
        let stop = StopSpec::default();
        let mut a = Parked::new(&s, Arc::new("default/web".to_string()), &stop);
        let mut b = Parked::new(&s, Arc::new("default/web".to_string()), &stop);
        let mut c = Parked::new(&s, Arc::new("default/redis".to_string()), &stop);
        for p in [&mut a, &mut b, &mut c] {
            p.share_service(&mut names);
        }
        assert!(Arc::ptr_eq(&a.service, &b.service));
        assert_eq!(c.service(), "default/redis");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn names_no_record_holds_are_swept_as_the_set_grows() {
        let mut names = ServiceNames::default();
        let stop = StopSpec::default();
        let mut kept = Parked::new(&status(), Arc::new("default/kept".to_string()), &stop);
        kept.share_service(&mut names);
        // 1,000 services come and go, one record at a time.
        for i in 0..1_000 {
            let mut p = Parked::new(&status(), Arc::new(format!("default/s{i}")), &stop);
            p.share_service(&mut names);
            assert!(
                names.len() <= 2 * ServiceNames::MIN_SWEEP,
                "{}",
                names.len()
            );
        }
        assert_eq!(kept.service(), "default/kept");
        let mut again = Parked::new(&status(), Arc::new("default/kept".to_string()), &stop);
        again.share_service(&mut names);
        assert!(Arc::ptr_eq(&kept.service, &again.service));
    }

    #[test]
    fn the_usual_stop_signal_takes_no_allocation() {
        assert_eq!(StopSpec::default().signal(), "SIGTERM");
        assert!(StopSpec::default().is_default());
        let custom = StopSpec {
            signal: Some("SIGINT".into()),
            grace: Duration::from_secs(1),
        };
        assert_eq!(custom.signal(), "SIGINT");
        assert!(!custom.is_default());
    }
}
