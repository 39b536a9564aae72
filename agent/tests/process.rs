//! The agent on the process runtime: a long task stops with its stop signal within the grace
//! period, a failing command reports its exit code, logs land in the task's log file, and a
//! host healthcheck drives the task's health; processes left by an agent killed with -9 are
//! killed by the next one on the same data directory.

use shoal_agent::runtime::process::ProcessRuntime;
use shoal_agent::{Agent, AgentConfig};
use shoal_core::manifest::{Healthcheck, RuntimeKind};
use shoal_core::model::TaskState;
use shoal_core::units::Dur;
use shoal_tests::tasks::{TestStore, task, template};
use shoal_tests::wait::eventually;
use std::sync::Arc;

fn agent(ts: &TestStore, rt: Arc<ProcessRuntime>) -> shoal_agent::AgentHandle {
    Agent::new(
        ts.store.clone(),
        ts.keys.clone(),
        AgentConfig::new("p1"),
        rt,
    )
    .spawn()
}

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn sleeping_task_stops_with_sigterm_within_its_grace_period() {
    let ts = TestStore::open().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(ProcessRuntime::new(dir.path()));
    let a = agent(&ts, rt);
    let mut tpl = template(RuntimeKind::Process, None, &["sleep", "3600"]);
    tpl.stop_grace_period = Dur::secs(30);
    let t = task("sleep.1.x", "sleep", "p1", tpl);
    ts.assign(&t).await;
    let s = ts.wait_state(&t, TaskState::Running).await;
    let pid: i32 = s
        .container_id
        .expect("pid reported")
        .parse()
        .expect("pid is a number");
    assert!(pid_alive(pid));
    ts.shut_down(&t).await;
    let s = ts.wait_state(&t, TaskState::Shutdown).await;
    // SIGTERM ends `sleep` at once: it did not wait for the 30 s grace period and a SIGKILL.
    assert_eq!(s.exit_code, Some(128 + 15), "ended by SIGTERM, not SIGKILL");
    assert!(!pid_alive(pid), "the process is gone");
    a.stop().await.unwrap();
}

#[tokio::test]
async fn failing_command_reports_its_exit_code_and_logs_land_in_the_file() {
    let ts = TestStore::open().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(ProcessRuntime::new(dir.path()));
    let a = agent(&ts, rt.clone());
    let mut tpl = template(
        RuntimeKind::Process,
        None,
        &["sh", "-c", "echo out-$GREETING; echo err >&2; exit 3"],
    );
    tpl.env.insert("GREETING".into(), "hello".into());
    let t = task("exit.1.x", "exit", "p1", tpl);
    ts.assign(&t).await;
    let s = ts.wait_state(&t, TaskState::Failed).await;
    assert_eq!(s.exit_code, Some(3));
    assert!(s.message.unwrap_or_default().contains("code 3"));
    let log = std::fs::read_to_string(rt.log_path("exit.1.x")).expect("log file exists");
    assert!(
        log.contains("out-hello"),
        "stdout with the task's env in the log: {log:?}"
    );
    assert!(log.contains("err"), "stderr in the log: {log:?}");

    let ok = task(
        "ok.1.x",
        "ok",
        "p1",
        template(RuntimeKind::Process, None, &["true"]),
    );
    ts.assign(&ok).await;
    let s = ts.wait_state(&ok, TaskState::Complete).await;
    assert_eq!(s.exit_code, Some(0));

    let missing = task(
        "nope.1.x",
        "nope",
        "p1",
        template(RuntimeKind::Process, None, &["/no/such/program"]),
    );
    ts.assign(&missing).await;
    let s = ts.wait_state(&missing, TaskState::Failed).await;
    assert!(s.message.unwrap_or_default().contains("/no/such/program"));
    a.stop().await.unwrap();
}

#[tokio::test]
async fn host_healthcheck_drives_health() {
    let ts = TestStore::open().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(ProcessRuntime::new(dir.path()));
    let a = agent(&ts, rt);
    let hc = |cmd: &str| Healthcheck {
        test: vec!["CMD-SHELL".into(), cmd.into()],
        interval: Dur::millis(200),
        timeout: Dur::secs(2),
        retries: 2,
        start_period: Dur::secs(0),
    };
    let mut good = template(RuntimeKind::Process, None, &["sleep", "3600"]);
    good.healthcheck = Some(hc("true"));
    let mut bad = good.clone();
    bad.healthcheck = Some(hc("exit 1"));
    let good = task("good.1.x", "good", "p1", good);
    let bad = task("bad.1.x", "bad", "p1", bad);
    ts.assign(&good).await;
    ts.assign(&bad).await;
    ts.wait_healthy(&good).await;
    // As in Swarm, the unhealthy task is stopped and fails (the restart policy replaces it).
    ts.wait_failed_unhealthy(&bad).await;
    a.stop().await.unwrap();
}

#[tokio::test]
async fn logs_rotate_by_size_and_go_when_the_assignment_is_deleted() {
    let ts = TestStore::open().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(ProcessRuntime::new(dir.path()).with_log_max_bytes(64 * 1024));
    let a = agent(&ts, rt.clone());
    // ~200 KiB of output, then the task waits.
    let tpl = template(
        RuntimeKind::Process,
        None,
        &[
            "sh",
            "-c",
            "head -c 204800 /dev/zero | tr '\\0' x; sleep 3600",
        ],
    );
    let t = task("chatty.1.x", "chatty", "p1", tpl);
    ts.assign(&t).await;
    ts.wait_state(&t, TaskState::Running).await;
    let log = rt.log_path(&t.id);
    let rotated = std::path::PathBuf::from(format!("{}.1", log.display()));
    eventually("the log rotated", || async { rotated.exists() }).await;
    eventually("all the output written", || async {
        let a = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let b = std::fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0);
        a > 0 && a + b >= 64 * 1024
    })
    .await;
    for p in [&log, &rotated] {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= 64 * 1024, "{} is {len} bytes", p.display());
    }
    // The controller deletes the assignment: the process stops and its logs go.
    ts.unassign(&t).await;
    eventually("the task's logs are deleted", || async {
        !log.exists() && !rotated.exists()
    })
    .await;
    a.stop().await.unwrap();
}

/// An agent killed with -9 cannot stop its processes; they must not keep running beside the
/// replacements the next agent starts (found by the chaos harness: after `kill -9` of an
/// agent, every task it ran stayed alive under init).
#[test]
fn processes_left_by_a_killed_agent_are_killed_by_the_next_one() {
    use shoal_agent::runtime::{Runtime, TaskFiles};
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let first = ProcessRuntime::new(dir.path());
    let t = task(
        "left.1.x",
        "left",
        "p1",
        template(RuntimeKind::Process, None, &["sleep", "3600"]),
    );
    let handle = tokio
        .block_on(first.start(&t, &TaskFiles::default()))
        .unwrap();
    let pid: i32 = handle.id.parse().unwrap();
    // The agent dies without running any destructor, as with kill -9.
    std::mem::forget(first);
    std::mem::forget(tokio);
    assert!(pid_alive(pid), "the task runs");

    let _second = ProcessRuntime::new(dir.path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pid_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !pid_alive(pid),
        "the next agent killed the leftover process {pid}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("pids")).unwrap().count(),
        0,
        "no pid record is left"
    );
}

#[test]
fn a_pid_record_of_another_process_is_not_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("3600")
        .spawn()
        .unwrap();
    let pid = other.id();
    std::fs::create_dir_all(dir.path().join("pids")).unwrap();
    // Same pid, another start time: the pid was reused, this is not our process.
    std::fs::write(
        dir.path().join("pids").join("old.1.x"),
        format!("{pid} 1\n"),
    )
    .unwrap();
    assert_eq!(shoal_agent::runtime::process::reap_leftovers(dir.path()), 0);
    assert!(pid_alive(pid as i32), "an unrelated process is left alone");
    other.kill().unwrap();
    other.wait().unwrap();
}
