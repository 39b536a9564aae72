//! Task history end to end, on `shoal dev` with host processes: a service whose task keeps
//! failing keeps its newest `--task-history-limit` finished tasks per slot, shown by `shoal
//! get tasks --all` with their exit codes and by `shoal describe service` beneath the current
//! task; `shoal logs` of an earlier task prints its output; once a task is pushed out of the
//! history its record and its log file go.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[path = "harness/mod.rs"]
mod harness;

use shoal_tests::process::{free_port, interrupt};
use shoal_tests::wait::blocking_eventually;

use harness::BIN;

/// How long a step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(120);
const LIMIT: usize = 2;

const FAILING: &str = r#"apiVersion: shoal/v1
kind: Service
metadata:
  name: flaky
spec:
  runtime: process
  command: [sh, -c, "echo flaky-output; sleep 5; exit 3"]
  replicas: 1
  restart:
    condition: on-failure
    delay: 3s
"#;

/// Stops `shoal dev` (and so its processes), whatever the test's outcome.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        interrupt(&mut self.0, Duration::from_secs(30));
    }
}

fn shoal(url: &str, args: &[&str], stdin: &str) -> Output {
    harness::shoal_at(url, None, args, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A task as `get tasks -o json` shows it.
#[derive(Debug, Clone)]
struct Shown {
    slot: String,
    state: String,
    exit: Option<i64>,
    /// When the controller created it (RFC 3339: sorts as text).
    created: String,
}

fn tasks(url: &str, all: bool) -> BTreeMap<String, Shown> {
    let mut args = vec!["get", "tasks", "flaky", "-o", "json"];
    if all {
        args.push("--all");
    }
    let o = shoal(url, &args, "");
    if !o.status.success() {
        return BTreeMap::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let s = |p: &str| t.pointer(p).map(|x| x.to_string()).unwrap_or_default();
            (
                s("/task/id").trim_matches('"').to_string(),
                Shown {
                    slot: s("/task/slot"),
                    state: s("/status/state").trim_matches('"').to_string(),
                    exit: t.pointer("/status/exitCode").and_then(|x| x.as_i64()),
                    created: s("/task/createdAt"),
                },
            )
        })
        .collect()
}

fn log_file(data: &Path, task: &str) -> std::path::PathBuf {
    data.join("logs").join(format!("{task}.log"))
}

#[test]
fn a_failing_service_keeps_its_newest_tasks_with_their_exit_codes_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let node = format!("history-{}", std::process::id());
    let _dev = Dev(Command::new(BIN)
        .args(["dev", "--runtime", "process", "--node-id", &node])
        .args(["--task-history-limit", &LIMIT.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    blocking_eventually("the dev API answers", DEADLINE, || {
        shoal(&url, &["get", "nodes"], "").status.success()
    });
    let o = shoal(&url, &["apply", "-f", "-"], FAILING);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // The slot's current task and LIMIT failed ones; never more.
    let mut seen_most = 0;
    let mut first = BTreeMap::new();
    blocking_eventually("LIMIT earlier tasks of the slot", DEADLINE, || {
        let all = tasks(&url, true);
        seen_most = seen_most.max(all.len());
        assert!(all.len() <= LIMIT + 1, "{all:#?}");
        first = all.clone();
        all.values().filter(|t| t.exit == Some(3)).count() >= LIMIT && all.len() == LIMIT + 1
    });
    assert!(
        first.values().all(|t| t.slot == "{\"replica\":1}"),
        "{first:#?}"
    );
    for t in first.values().filter(|t| t.state == "failed") {
        assert_eq!(t.exit, Some(3), "{first:#?}");
    }
    let current = tasks(&url, false);
    assert_eq!(
        current.len(),
        1,
        "get tasks shows the current task only: {current:#?}"
    );
    let oldest = first
        .iter()
        .min_by_key(|(id, t)| (t.created.clone(), (*id).clone()))
        .map(|(id, _)| id.clone())
        .unwrap();

    // An earlier task's output is still there.
    let o = shoal(&url, &["logs", &oldest], "");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("flaky-output"),
        "{}",
        text(&o.stdout)
    );
    assert!(log_file(&data, &oldest).exists());

    // describe: the current task, its earlier ones beneath.
    let o = shoal(&url, &["describe", "service", "flaky"], "");
    let out = text(&o.stdout);
    assert!(out.contains(&format!("\\_ {oldest}")), "{out}");
    assert!(out.contains("EXIT"), "{out}");

    // More failures push the oldest out: its record, then its log file, go.
    blocking_eventually(
        "the oldest task pushed out of the history",
        DEADLINE,
        || {
            let all = tasks(&url, true);
            assert!(all.len() <= LIMIT + 1, "{all:#?}");
            !all.is_empty() && !all.contains_key(&oldest)
        },
    );
    blocking_eventually("the pushed-out task's log file deleted", DEADLINE, || {
        !log_file(&data, &oldest).exists()
    });
    println!("most tasks listed at once: {seen_most}");
}
