//! Job reconcile: scenarios and properties on the in-memory cluster of [`super::tests::Sim`],
//! with agents whose tasks finish (succeed or fail) as each test says.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use shoal_core::job::{JobRun, RunRequest, RunState, reason};
use shoal_core::model::{DesiredState, TaskState, Timestamp};

use super::tests::Sim;
use super::*;
use crate::testutil::{node, nodes, service};

fn job_sim(spec: &str, node_count: usize) -> Sim {
    let list = (0..node_count)
        .map(|i| node(&format!("n{i}"), &[]))
        .collect();
    Sim::new(service("web", spec), nodes(list))
}

impl Sim {
    /// Agents: start wanted tasks; a running task ends with `outcome(task index)` (`true`:
    /// exit 0); unwanted tasks shut down.
    fn job_agents(&mut self, outcome: &mut dyn FnMut(u64) -> bool, created: &mut u64) {
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let e = &self.tasks[&id];
            if !self.nodes.get(&e.task.node_id).is_some_and(|n| n.ready) || e.state().is_terminal()
            {
                continue;
            }
            match (e.task.desired_state, e.state()) {
                (DesiredState::Shutdown, _) => self.set_state(&id, TaskState::Shutdown),
                (DesiredState::Running, TaskState::Running) => {
                    let ok = outcome(*created);
                    *created += 1;
                    self.set_state(
                        &id,
                        if ok {
                            TaskState::Complete
                        } else {
                            TaskState::Failed
                        },
                    );
                }
                (DesiredState::Running, _) => self.set_state(&id, TaskState::Running),
            }
        }
    }

    fn running_now(&self) -> usize {
        self.tasks
            .values()
            .filter(|e| {
                e.state() == TaskState::Running && e.task.desired_state == DesiredState::Running
            })
            .count()
    }

    fn runs(&self) -> Vec<JobRun> {
        self.status().job.clone().unwrap_or_default().runs
    }

    fn in_state(&self, s: TaskState) -> usize {
        self.tasks.values().filter(|e| e.state() == s).count()
    }

    /// Steps (reconcile, agents, time moves by `tick`) until the last run finished; returns
    /// the most tasks seen running at once.
    fn run_job(&mut self, tick: Duration, outcome: &mut dyn FnMut(u64) -> bool) -> usize {
        let mut most = 0;
        let mut created = 0;
        for _ in 0..400 {
            self.step();
            most = most.max(self.running_now());
            if self.runs().last().is_some_and(JobRun::is_finished) {
                self.step();
                return most;
            }
            self.job_agents(outcome, &mut created);
            most = most.max(self.running_now());
            self.now = self.now.plus(tick);
        }
        panic!("the job did not finish: {:?}", self.runs());
    }
}

#[test]
fn a_job_runs_to_its_completions_at_most_parallelism_at_once() {
    let mut sim = job_sim(
        "  mode: replicated-job\n  job: {completions: 6, parallelism: 2}\n",
        3,
    );
    let most = sim.run_job(Duration::from_millis(100), &mut |_| true);
    assert_eq!(most, 2);
    let run = sim.runs().pop().unwrap();
    assert_eq!(
        (run.state, run.succeeded, run.completions),
        (RunState::Complete, 6, 6)
    );
    assert_eq!(sim.in_state(TaskState::Complete), 6);
    assert!(
        sim.status()
            .conditions
            .iter()
            .any(|c| c.kind == "Complete" && c.status)
    );
}

#[test]
fn an_unchanged_job_never_runs_again_and_its_tasks_go_after_the_ttl() {
    let spec =
        "  mode: replicated-job\n  job: {completions: 2, parallelism: 2, ttlAfterFinished: 10s}\n";
    let mut sim = job_sim(spec, 2);
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    // A controller restart (same status, same tasks) and a re-apply (a new revision of the
    // same manifest) start nothing.
    sim.svc = ServiceInput::Present {
        service: Box::new(service("web", spec)),
        generation: 9,
    };
    for _ in 0..3 {
        let plan = sim.step();
        assert!(plan.creates.is_empty(), "{plan:?}");
    }
    assert_eq!(sim.runs().len(), 1);
    sim.now = sim.now.plus(Duration::from_secs(11));
    let plan = sim.step();
    assert_eq!(plan.deletes.len(), 2, "the run's tasks go after the ttl");
    assert!(sim.tasks.is_empty());
    for _ in 0..3 {
        sim.now = sim.now.plus(Duration::from_secs(60));
        assert!(sim.step().creates.is_empty());
    }
    let run = sim.runs().pop().unwrap();
    assert!(run.cleaned && run.state == RunState::Complete && run.number == 1);
}

#[test]
fn a_changed_template_or_a_request_starts_the_next_run() {
    let mut sim = job_sim("  mode: replicated-job\n", 1);
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    sim.svc = ServiceInput::Present {
        service: Box::new(service("web", "  mode: replicated-job\n  env: {A: b}\n")),
        generation: 2,
    };
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    assert_eq!(
        sim.runs().iter().map(|r| r.number).collect::<Vec<_>>(),
        [1, 2]
    );
    sim.run_request = Some(RunRequest {
        requested_at: sim.now,
        force: false,
    });
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    assert_eq!(sim.runs().len(), 3);
    // The same request again starts nothing.
    assert!(sim.step().creates.is_empty());
}

#[test]
fn a_global_job_completes_once_per_node_including_nodes_that_join() {
    let mut sim = job_sim("  mode: global-job\n", 2);
    sim.step();
    assert_eq!(sim.tasks.len(), 2);
    let late = node("n9", &[]);
    sim.nodes.insert("n9".into(), late);
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    let run = sim.runs().pop().unwrap();
    assert_eq!((run.succeeded, run.completions), (3, 3));
    assert_eq!(sim.in_state(TaskState::Complete), 3);
    // A node joining after the run finished gets nothing.
    sim.nodes.insert("n10".into(), node("n10", &[]));
    assert!(sim.step().creates.is_empty());
}

#[test]
fn completions_count_once_across_node_loss() {
    let mut sim = job_sim(
        "  mode: replicated-job\n  job: {completions: 2, parallelism: 2}\n",
        3,
    );
    sim.step();
    sim.agents();
    let ids: Vec<String> = sim.tasks.keys().cloned().collect();
    // One task completes, then both nodes are lost: the completed one counts, the running
    // one is retried elsewhere.
    sim.set_state(&ids[0], TaskState::Complete);
    for id in &ids {
        let n = sim.tasks[id].task.node_id.clone();
        sim.nodes.get_mut(&n).unwrap().ready = false;
    }
    sim.step();
    sim.step();
    let run = sim.runs().pop().unwrap();
    assert_eq!(run.succeeded, 1, "{run:?}");
    let live: Vec<_> = sim
        .tasks
        .values()
        .filter(|e| {
            e.task.desired_state == DesiredState::Running
                && !e.task.orphaned
                && !e.state().is_terminal()
        })
        .collect();
    assert_eq!(live.len(), 1, "one retry of the lost running task");
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    let run = sim.runs().pop().unwrap();
    assert_eq!(
        (run.state, run.succeeded, run.failed),
        (RunState::Complete, 2, 0)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn never_more_than_parallelism_and_exactly_the_completions(
        completions in 1u64..10,
        parallelism in 1u64..5,
        nodes in 1usize..4,
        outcomes in prop::collection::vec(prop::bool::weighted(0.7), 64),
    ) {
        let spec = format!(
            "  mode: replicated-job\n  restart: {{delay: 1s}}\n  job: {{completions: {completions}, parallelism: {parallelism}, backoffLimit: 100}}\n"
        );
        let mut sim = job_sim(&spec, nodes);
        let most = sim.run_job(Duration::from_millis(300), &mut |i| outcomes[(i % 64) as usize]);
        prop_assert!(most as u64 <= parallelism, "{most} running > parallelism {parallelism}");
        let run = sim.runs().pop().unwrap();
        prop_assert_eq!(run.state, RunState::Complete);
        prop_assert_eq!(run.succeeded, completions);
        prop_assert_eq!(sim.in_state(TaskState::Complete) as u64, completions);
    }

    #[test]
    fn a_backoff_limit_of_n_means_exactly_n_plus_one_attempts(
        limit in 0u64..5,
        parallelism in 1u64..4,
    ) {
        let spec = format!(
            "  mode: replicated-job\n  restart: {{delay: 1s}}\n  job: {{completions: 3, parallelism: {parallelism}, backoffLimit: {limit}}}\n"
        );
        let mut sim = job_sim(&spec, 2);
        sim.run_job(Duration::from_millis(400), &mut |_| false);
        let run = sim.runs().pop().unwrap();
        prop_assert_eq!(run.state, RunState::Failed);
        prop_assert_eq!(run.reason.as_deref(), Some(reason::BACKOFF_LIMIT_EXCEEDED));
        // Tasks started in parallel may fail together: the attempts are the tasks started,
        // and no retry starts once the limit is passed.
        let attempts = sim.tasks.len() as u64;
        prop_assert!(attempts > limit && attempts <= limit + parallelism, "{attempts} attempts, limit {limit}");
        if parallelism == 1 {
            prop_assert_eq!(attempts, limit + 1);
        }
    }

    #[test]
    fn the_deadline_wins_over_retries(
        deadline_s in 1u64..6,
        delay_ms in 100u64..900,
    ) {
        let spec = format!(
            "  mode: replicated-job\n  restart: {{delay: {delay_ms}ms}}\n  job: {{completions: 2, backoffLimit: 1000, activeDeadline: {deadline_s}s}}\n"
        );
        let mut sim = job_sim(&spec, 1);
        let start = sim.now;
        sim.run_job(Duration::from_millis(100), &mut |_| false);
        let run = sim.runs().pop().unwrap();
        prop_assert_eq!(run.reason.as_deref(), Some(reason::DEADLINE_EXCEEDED));
        let end = start.plus(Duration::from_secs(deadline_s));
        prop_assert!(run.finished_at.is_some_and(|t| t >= end && t.since(end) < Duration::from_millis(200)));
        prop_assert!(sim.tasks.values().all(|e| e.task.created_at < end), "no task starts after the deadline");
        prop_assert!(sim.tasks.values().all(|e| e.task.desired_state == DesiredState::Shutdown || e.state().is_terminal()));
    }
}

#[test]
fn a_scheduled_job_with_forbid_never_overlaps() {
    let spec =
        "  mode: replicated-job\n  job: {schedule: \"@every 1s\", concurrencyPolicy: Forbid}\n";
    let mut sim = job_sim(spec, 1);
    sim.now = Timestamp(1_000_000_000);
    let mut created = 0;
    // Each task takes 2.5s: every other tick finds the previous run still active.
    let mut running_since: BTreeMap<String, Timestamp> = BTreeMap::new();
    for _ in 0..100 {
        sim.step();
        let active = sim.runs().iter().filter(|r| !r.is_finished()).count();
        assert!(active <= 1, "overlapping runs: {:?}", sim.runs());
        let now = sim.now;
        let ids: Vec<String> = sim.tasks.keys().cloned().collect();
        for id in ids {
            let e = &sim.tasks[&id];
            if e.state() == TaskState::Running {
                let since = *running_since.entry(id.clone()).or_insert(now);
                if now.since(since) >= Duration::from_millis(2500) {
                    sim.set_state(&id, TaskState::Complete);
                }
            } else if !e.state().is_terminal() && e.task.desired_state == DesiredState::Running {
                sim.set_state(&id, TaskState::Running);
                created += 1;
            }
        }
        sim.now = sim.now.plus(Duration::from_millis(250));
    }
    let runs = sim.runs();
    assert!(runs.len() >= 2 && created >= 5, "{runs:?}");
    assert!(sim.status().events.iter().any(|e| e.reason == "RunSkipped"));
}

#[test]
fn a_job_keeps_its_failed_attempts_until_the_ttl_whatever_the_task_history_limit() {
    let spec = "  mode: replicated-job\n  restart: {delay: 1s}\n  job: {completions: 1, backoffLimit: 7, ttlAfterFinished: 1h}\n";
    let mut sim = job_sim(spec, 1);
    sim.task_history_limit = 0;
    sim.run_job(Duration::from_millis(500), &mut |n| n >= 6);
    let run = sim.runs().pop().unwrap();
    assert_eq!(
        (run.state, run.failed, run.succeeded),
        (RunState::Complete, 6, 1)
    );
    assert_eq!(
        sim.in_state(TaskState::Failed),
        6,
        "every failed attempt kept"
    );
    sim.now = sim.now.plus(Duration::from_secs(3599));
    sim.step();
    assert_eq!(sim.tasks.len(), 7, "kept until ttlAfterFinished");
    sim.now = sim.now.plus(Duration::from_secs(2));
    sim.step();
    assert!(sim.tasks.is_empty(), "gone after ttlAfterFinished");
}

#[test]
fn a_job_that_becomes_a_service_keeps_no_job_record_and_back() {
    let mut sim = job_sim("  mode: replicated-job\n", 1);
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    assert_eq!(sim.runs().len(), 1);
    sim.set_spec(service("web", "  replicas: 1\n"), 2);
    sim.settle();
    assert_eq!(
        sim.status().job,
        None,
        "no stale job runs in a service's status"
    );
    assert_eq!(sim.running_now(), 1);
    sim.set_spec(service("web", "  mode: replicated-job\n"), 3);
    sim.run_job(Duration::from_millis(100), &mut |_| true);
    assert_eq!(
        sim.status().rollout,
        None,
        "no rollout record in a job's status"
    );
    let runs = sim.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        sim.tasks
            .values()
            .any(|e| e.task.generation == 3 && e.state() == TaskState::Complete),
        "the run ran a task of its own, not counting the old run 1's: {:?}",
        sim.tasks.keys()
    );
    assert_eq!(runs.last().unwrap().state, RunState::Complete);
    assert!(
        sim.tasks.values().all(|e| e.task.run.is_some()),
        "the service's tasks went with the mode change"
    );
}
