//! The records a parked task leaves behind: what [`resume`](super::resume) needs to pick the
//! task up again, and nothing else. Hollow nodes hold one per task, so every field is sized
//! for it: the status without its task id (the worker keys the record by it), the fields
//! only an ended task has in one optional box, and the stop signal and grace period only
//! when they are not Swarm's defaults.

use std::time::Duration;

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

/// What only an ended task's status has.
#[derive(Debug, Default)]
struct Ended {
    exit_code: Option<i64>,
    message: Option<Box<str>>,
    finished_at: Option<Timestamp>,
}

/// A [`TaskStatus`] without its task id, in fewer bytes: it converts back to the same
/// status.
#[derive(Debug)]
struct CompactStatus {
    state: TaskState,
    health: Option<Health>,
    updated_at: Timestamp,
    started_at: Option<Timestamp>,
    container_id: Option<Box<str>>,
    host_ports: Box<[PortBinding]>,
    /// `None` while none of its fields is set.
    ended: Option<Box<Ended>>,
}

impl CompactStatus {
    fn of(s: &TaskStatus) -> Self {
        let ended =
            (s.exit_code.is_some() || s.message.is_some() || s.finished_at.is_some()).then(|| {
                Box::new(Ended {
                    exit_code: s.exit_code,
                    message: s.message.as_deref().map(Into::into),
                    finished_at: s.finished_at,
                })
            });
        CompactStatus {
            state: s.state,
            health: s.health,
            updated_at: s.updated_at,
            started_at: s.started_at,
            container_id: s.container_id.as_deref().map(Into::into),
            host_ports: s.host_ports.as_slice().into(),
            ended,
        }
    }

    fn into_status(self, task_id: String) -> TaskStatus {
        let Ended {
            exit_code,
            message,
            finished_at,
        } = self.ended.map(|e| *e).unwrap_or_default();
        TaskStatus {
            task_id,
            state: self.state,
            container_id: self.container_id.map(String::from),
            host_ports: self.host_ports.into_vec(),
            health: self.health,
            exit_code,
            message: message.map(String::from),
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at,
        }
    }
}

/// A running task whose runner has ended: what is needed to pick it up again with
/// [`resume`](super::resume). Its container is the one in its status (`container_id`,
/// `host_ports`).
#[derive(Debug)]
pub struct Parked {
    status: CompactStatus,
    /// `<namespace>/<name>` of the owning service (for logs).
    service: Box<str>,
    /// `None`: the defaults (`SIGTERM`, 10 s).
    stop: Option<Box<StopSpec>>,
}

impl Parked {
    pub(super) fn new(status: &TaskStatus, service: Box<str>, stop: &StopSpec) -> Self {
        Parked {
            status: CompactStatus::of(status),
            service,
            stop: (!stop.is_default()).then(|| Box::new(stop.clone())),
        }
    }

    /// Whether the task has ended (it only waits for its assignment to be deleted, which
    /// removes its container): nothing but the deletion concerns it any more.
    pub fn has_ended(&self) -> bool {
        self.status.state.is_terminal()
    }

    /// The owning service, `<namespace>/<name>`.
    pub(super) fn service(&self) -> &str {
        &self.service
    }

    /// The status (of task `task_id`), the service and the stop spec back.
    pub(super) fn into_parts(self, task_id: String) -> (TaskStatus, Box<str>, StopSpec) {
        let stop = self.stop.map(|s| *s).unwrap_or_default();
        (self.status.into_status(task_id), self.service, stop)
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
        for (s, stop) in [(&running, StopSpec::default()), (&ended, custom)] {
            let p = Parked::new(s, "default/web".into(), &stop);
            assert_eq!(p.has_ended(), s.state.is_terminal());
            assert_eq!(p.service(), "default/web");
            let (back, service, stop_back) = p.into_parts("web.1.abc".into());
            assert_eq!(&back, s);
            assert_eq!(&*service, "default/web");
            assert_eq!(stop_back, stop);
        }
    }

    #[test]
    fn a_parked_task_is_a_small_record() {
        // Hollow nodes hold one of these per task (208 bytes with the whole status and stop
        // spec inline); growing it is a choice to make consciously.
        assert!(
            std::mem::size_of::<Parked>() <= 96,
            "Parked grew to {} bytes",
            std::mem::size_of::<Parked>()
        );
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
