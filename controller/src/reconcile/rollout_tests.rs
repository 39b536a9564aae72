//! Scenario and property tests of rollouts: batches, delay, start-first, health gating,
//! failure actions and automatic rollback, on the in-memory cluster of `tests`.

use std::time::Duration;

use proptest::prelude::*;
use shoal_core::manifest::Service;
use shoal_core::model::{DesiredState, Health, RolloutState, TaskState, TaskStatus};

use super::tests::Sim;
use crate::testutil::{node, nodes, service};

fn sim_with(replicas: u64, extra: &str) -> Sim {
    let ns = nodes((1..=4).map(|i| node(&format!("n{i}"), &[])).collect());
    let mut sim = Sim::new(
        service("web", &format!("  replicas: {replicas}\n{extra}")),
        ns,
    );
    sim.settle();
    sim
}

fn with_image(replicas: u64, extra: &str, image: &str) -> Service {
    let mut s = service("web", &format!("  replicas: {replicas}\n{extra}"));
    s.spec.image = Some(image.to_string());
    s
}

/// Agents that act on the tasks picked by `pick` (all when it says yes to everything):
/// wanted tasks start (or fail by image name), unwanted ones stop.
fn agents_where(sim: &mut Sim, mut pick: impl FnMut(&str) -> bool) {
    let now = sim.now;
    let ids: Vec<String> = sim.tasks.keys().cloned().collect();
    for id in ids {
        if !pick(&id) {
            continue;
        }
        let e = sim.tasks.get_mut(&id).expect("task");
        if e.state().is_terminal() {
            continue;
        }
        let image = e.task.template.image.clone().unwrap_or_default();
        let hc = e.task.template.healthcheck.is_some();
        let (state, health, message) = match e.task.desired_state {
            DesiredState::Shutdown => (TaskState::Shutdown, None, None),
            DesiredState::Running if e.state() == TaskState::Running => continue,
            DesiredState::Running if image.starts_with("missing/") => (
                TaskState::Rejected,
                None,
                Some(format!("No such image: {image}")),
            ),
            DesiredState::Running if image.starts_with("unhealthy/") => {
                (TaskState::Running, hc.then_some(Health::Unhealthy), None)
            }
            DesiredState::Running => (TaskState::Running, hc.then_some(Health::Healthy), None),
        };
        e.status = Some(TaskStatus {
            task_id: id.clone(),
            state,
            container_id: None,
            host_ports: vec![],
            health,
            exit_code: None,
            message,
            updated_at: now,
            started_at: (state == TaskState::Running).then_some(now),
            finished_at: state.is_terminal().then_some(now),
        });
    }
}

fn agents(sim: &mut Sim) {
    agents_where(sim, |_| true);
}

/// Reconcile, agents, advance the clock by the requeue (or `tick`); `check` after each step.
fn run(sim: &mut Sim, steps: usize, tick: Duration, mut check: impl FnMut(&Sim)) {
    for _ in 0..steps {
        let plan = sim.step();
        check(sim);
        agents(sim);
        check(sim);
        sim.now = sim.now.plus(plan.requeue_after.unwrap_or(tick).min(tick));
    }
}

/// Slots with a wanted task that is running on `image`.
fn up_on(sim: &Sim, image: &str) -> usize {
    sim.tasks
        .values()
        .filter(|e| {
            e.task.desired_state == DesiredState::Running
                && e.state() == TaskState::Running
                && e.task.template.image.as_deref() == Some(image)
        })
        .count()
}

/// Slots with a running, wanted task of any template.
fn slots_up(sim: &Sim) -> usize {
    let mut slots = std::collections::BTreeSet::new();
    for e in sim.tasks.values() {
        if e.state() == TaskState::Running && e.task.desired_state == DesiredState::Running {
            slots.insert(e.task.slot.clone());
        }
    }
    slots.len()
}

fn state(sim: &Sim) -> Option<RolloutState> {
    sim.status().rollout.as_ref().map(|r| r.state)
}

#[test]
fn stop_first_respects_parallelism_and_delay() {
    let extra = "  update: {parallelism: 2, delay: 10s, monitor: 1s}\n";
    let mut sim = sim_with(5, extra);
    sim.set_spec(with_image(5, extra, "nginx:2"), 2);
    let mut batches: Vec<(u64, usize)> = Vec::new();
    let mut last = 0;
    run(&mut sim, 200, Duration::from_secs(1), |sim| {
        assert!(slots_up(sim) >= 3, "more than 2 slots down at once");
        let n = up_on(sim, "nginx:2");
        if n != last {
            batches.push((sim.now.millis(), n));
            last = n;
        }
    });
    assert_eq!(up_on(&sim, "nginx:2"), 5);
    assert_eq!(state(&sim), Some(RolloutState::Completed));
    // Batches of two come up at least `delay` apart.
    let times: Vec<u64> = batches.iter().map(|b| b.0).collect();
    assert!(
        times.windows(2).any(|w| w[1] - w[0] >= 10_000),
        "batches: {batches:?}"
    );
    let r = sim.status().rollout.clone().expect("rollout");
    assert_eq!((r.updated, r.total), (5, 5));
    assert_eq!(sim.status().rollout_history.len(), 1);
}

#[test]
fn start_first_keeps_every_slot_running() {
    let extra = "  update: {order: start-first, parallelism: 2, monitor: 1s}\n";
    let mut sim = sim_with(4, extra);
    sim.set_spec(with_image(4, extra, "nginx:2"), 2);
    let mut max_wanted = 0;
    run(&mut sim, 100, Duration::from_secs(1), |sim| {
        assert!(
            slots_up(sim) >= 4,
            "a slot went down during a start-first update"
        );
        let wanted = sim
            .tasks
            .values()
            .filter(|e| e.task.desired_state == DesiredState::Running)
            .count();
        max_wanted = max_wanted.max(wanted);
    });
    assert!(
        max_wanted <= 6,
        "at most parallelism extra tasks: {max_wanted}"
    );
    assert!(
        max_wanted > 4,
        "replacements started before the old tasks stopped"
    );
    assert_eq!(up_on(&sim, "nginx:2"), 4);
    assert_eq!(state(&sim), Some(RolloutState::Completed));
}

#[test]
fn a_missing_image_pauses_with_the_reason_and_a_new_manifest_resumes() {
    let mut sim = sim_with(3, "");
    sim.set_spec(with_image(3, "", "missing/nginx:2"), 2);
    run(&mut sim, 30, Duration::from_secs(1), |_| {});
    assert_eq!(state(&sim), Some(RolloutState::Paused));
    let msg = sim
        .status()
        .rollout
        .as_ref()
        .and_then(|r| r.message.clone());
    assert!(
        msg.as_deref().is_some_and(|m| m.contains("No such image")),
        "{msg:?}"
    );
    assert_eq!(up_on(&sim, "nginx"), 2, "only the first slot was touched");
    sim.set_spec(with_image(3, "", "nginx:3"), 3);
    run(&mut sim, 60, Duration::from_secs(1), |_| {});
    assert_eq!(up_on(&sim, "nginx:3"), 3);
    assert_eq!(state(&sim), Some(RolloutState::Completed));
    let history: Vec<RolloutState> = sim
        .status()
        .rollout_history
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(history, vec![RolloutState::Paused, RolloutState::Completed]);
}

#[test]
fn failure_action_rollback_restores_the_previous_template() {
    let extra = "  update: {failureAction: rollback}\n";
    let mut sim = sim_with(3, extra);
    sim.set_spec(with_image(3, extra, "missing/nginx:2"), 2);
    let mut saw_rolling_back = false;
    run(&mut sim, 60, Duration::from_secs(1), |sim| {
        saw_rolling_back |= state(sim) == Some(RolloutState::RollingBack);
    });
    assert!(saw_rolling_back);
    assert_eq!(state(&sim), Some(RolloutState::RolledBack));
    assert_eq!(up_on(&sim, "nginx"), 3);
    let st = sim.status();
    assert_eq!(
        st.current_spec.as_ref().and_then(|s| s.image.as_deref()),
        Some("nginx")
    );
    assert!(
        st.rollout
            .as_ref()
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("was rejected")
    );
    // The rollback holds while the manifest keeps the template that failed.
    sim.set_spec(with_image(4, extra, "missing/nginx:2"), 3);
    run(&mut sim, 30, Duration::from_secs(1), |_| {});
    assert_eq!(
        up_on(&sim, "nginx"),
        4,
        "scaled on the rolled-back template"
    );
    assert_eq!(state(&sim), Some(RolloutState::RolledBack));
    // Writing the previous template back (rollout undo) leaves nothing to roll out.
    sim.set_spec(with_image(4, extra, "nginx"), 4);
    run(&mut sim, 10, Duration::from_secs(1), |_| {});
    assert_eq!(sim.status().rollout, None);
    assert_eq!(up_on(&sim, "nginx"), 4);
}

#[test]
fn a_healthcheck_that_never_passes_is_a_failure() {
    let extra = "  healthcheck: {test: [CMD, 'true'], interval: 1s, timeout: 1s, retries: 1}\n";
    let mut sim = sim_with(2, extra);
    // The plain agents of `Sim` report no health: ours do.
    let ids: Vec<String> = sim.tasks.keys().cloned().collect();
    for id in ids {
        sim.tasks.get_mut(&id).expect("task").status = None;
    }
    run(&mut sim, 3, Duration::from_secs(1), |_| {});
    assert_eq!(sim.status().running, 2);
    sim.set_spec(with_image(2, extra, "unhealthy/nginx:2"), 2);
    run(&mut sim, 30, Duration::from_secs(1), |_| {});
    assert_eq!(state(&sim), Some(RolloutState::Paused));
    let msg = sim
        .status()
        .rollout
        .as_ref()
        .and_then(|r| r.message.clone());
    assert!(
        msg.as_deref().is_some_and(|m| m.contains("unhealthy")),
        "{msg:?}"
    );
    assert_eq!(sim.status().updated, 0);
}

#[test]
fn completion_waits_for_the_monitor_window() {
    let extra = "  update: {monitor: 30s}\n";
    let mut sim = sim_with(1, extra);
    sim.set_spec(with_image(1, extra, "nginx:2"), 2);
    for _ in 0..5 {
        sim.step();
        agents(&mut sim);
    }
    assert_eq!(up_on(&sim, "nginx:2"), 1);
    assert_eq!(state(&sim), Some(RolloutState::Updating));
    let plan = sim.step();
    assert!(
        plan.requeue_after
            .is_some_and(|d| d <= Duration::from_secs(30))
    );
    sim.now = sim.now.plus(Duration::from_secs(31));
    sim.step();
    assert_eq!(state(&sim), Some(RolloutState::Completed));
}

#[test]
fn a_replica_change_alone_is_not_a_rollout() {
    let mut sim = sim_with(2, "");
    sim.set_spec(service("web", "  replicas: 4\n"), 2);
    sim.settle();
    assert_eq!(sim.status().rollout, None);
    assert_eq!(sim.running_total(), 4);
}

fn slots_down(sim: &Sim, replicas: usize) -> usize {
    replicas - slots_up(sim).min(replicas)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Agents act on random subsets of tasks; the rollout never takes more than
    /// `parallelism` slots down (stop-first), never leaves fewer than `replicas` running
    /// (start-first), and converges to every slot on the new template.
    #[test]
    fn rollouts_stay_within_bounds_and_converge(
        replicas in 1u64..7,
        parallelism in 0u64..4,
        delay_s in 0u64..3,
        start_first in any::<bool>(),
        picks in prop::collection::vec(any::<u64>(), 200),
    ) {
        let order = if start_first { "start-first" } else { "stop-first" };
        let extra = format!(
            "  update: {{parallelism: {parallelism}, delay: {delay_s}s, order: {order}, monitor: 1s}}\n"
        );
        let mut sim = sim_with(replicas, &extra);
        sim.set_spec(with_image(replicas, &extra, "nginx:2"), 2);
        let limit = if parallelism == 0 { replicas as usize } else { parallelism as usize };
        for (k, p) in picks.iter().enumerate() {
            let plan = sim.step();
            let down = slots_down(&sim, replicas as usize);
            if start_first {
                prop_assert_eq!(down, 0, "start-first left a slot down at step {}", k);
            } else {
                prop_assert!(down <= limit, "{} slots down with parallelism {}", down, parallelism);
            }
            let mut bit = 0;
            agents_where(&mut sim, |_| { bit += 1; (p >> (bit % 64)) & 1 == 1 });
            let down = slots_down(&sim, replicas as usize);
            if start_first {
                prop_assert_eq!(down, 0);
            } else {
                prop_assert!(down <= limit);
            }
            sim.now = sim.now.plus(plan.requeue_after.unwrap_or(Duration::from_millis(700)).min(Duration::from_millis(700)));
        }
        run(&mut sim, 100, Duration::from_secs(1), |_| {});
        prop_assert_eq!(up_on(&sim, "nginx:2"), replicas as usize);
        prop_assert_eq!(state(&sim), Some(RolloutState::Completed));
    }
}

/// A manifest written straight into the store is not bounded by validation: health check
/// durations that overflow when summed and multiplied must not panic the controller.
#[test]
fn overflowing_health_check_durations_do_not_panic() {
    use shoal_core::units::Dur;
    let extra = "  update: {order: start-first}\n  healthcheck: {test: [CMD, 'true'], interval: 1s, timeout: 1s, retries: 3}\n";
    let mut sim = sim_with(1, extra);
    let mut next = with_image(1, extra, "nginx:2");
    let hc = next.spec.healthcheck.as_mut().expect("healthcheck");
    hc.interval = Dur(Duration::MAX);
    hc.timeout = Dur(Duration::MAX);
    hc.retries = u32::MAX;
    sim.set_spec(next, 2);
    for _ in 0..5 {
        sim.step();
        // The new task runs but has not reported its health yet: its deadline is computed.
        let now = sim.now;
        for e in sim.tasks.values_mut() {
            if e.task.template.image.as_deref() == Some("nginx:2") && !e.state().is_terminal() {
                e.status = Some(TaskStatus {
                    task_id: e.task.id.clone(),
                    state: TaskState::Running,
                    container_id: None,
                    host_ports: vec![],
                    health: None,
                    exit_code: None,
                    message: None,
                    updated_at: now,
                    started_at: Some(now),
                    finished_at: None,
                });
            }
        }
        sim.now = sim.now.plus(Duration::from_secs(1));
    }
    assert!(sim.status().error.is_none(), "{:?}", sim.status().error);
    assert!(
        sim.tasks
            .values()
            .any(|e| e.task.template.image.as_deref() == Some("nginx:2"))
    );
}
