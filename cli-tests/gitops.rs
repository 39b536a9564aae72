//! End to end, the way a GitOps pipeline drives Shoal: a directory of manifests applied with
//! `--prune -l <selector> --wait` against `shoal dev` (embedded store, API, controller and a
//! local agent running host processes), one file removed from the directory, applied again:
//! that service is pruned and its tasks stop, the others are unchanged, and a service outside
//! the selector is never touched.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use shoal_tests::process::{free_port, interrupt};
use shoal_tests::wait::blocking_eventually;

const BIN: &str = env!("CARGO_BIN_EXE_shoal");
/// How long a step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

struct Dev {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SIGINT lets the agent stop its host processes on the way out.
        interrupt(&mut self.child, Duration::from_secs(30));
    }
}

fn start_dev() -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["dev", "--runtime", "process", "--node-id", "gitops-node"])
        .arg("--data-dir")
        .arg(dir.path().join("dev"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Dev {
        child,
        url,
        _dir: dir,
    };
    blocking_eventually("the node to register", DEADLINE, || {
        let o = shoal(&dev, &["get", "nodes", "-o", "json"]);
        o.status.success() && text(&o).contains("gitops-node")
    });
    dev
}

fn shoal(dev: &Dev, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SHOAL_SERVER", &dev.url)
        .env_remove("SHOAL_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_manifest(dir: &Path, name: &str, managed: bool) {
    let labels = if managed {
        "app.kubernetes.io/managed-by: shoal"
    } else {
        "team: data"
    };
    let text = format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  labels:\n    {labels}\nspec:\n  runtime: process\n  command: [sleep, \"600\"]\n  replicas: 1\n  stopGracePeriod: 2s\n"
    );
    std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
}

fn service_names(dev: &Dev) -> Vec<String> {
    let o = shoal(dev, &["get", "services", "-o", "json"]);
    assert!(
        o.status.success(),
        "get services: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .expect("a JSON array of services")
        .iter()
        .filter_map(|s| {
            s.pointer("/service/metadata/name")
                .or_else(|| s.pointer("/metadata/name"))
        })
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn running_tasks_of(dev: &Dev, service: &str) -> usize {
    running_tasks_in(&shoal(dev, &["get", "tasks", "-o", "json"]), service)
}

/// The running tasks of `service` in the output of `shoal get tasks -o json`. A failed command
/// or an answer that is not a list of tasks fails the test: it is never "0 tasks".
fn running_tasks_in(o: &Output, service: &str) -> usize {
    assert!(
        o.status.success(),
        "get tasks failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("get tasks printed no JSON ({e}): {}", text(o)));
    v.as_array()
        .unwrap_or_else(|| panic!("get tasks printed no list: {v}"))
        .iter()
        .filter(|t| t.pointer("/task/service/name").and_then(|n| n.as_str()) == Some(service))
        .filter(|t| t.pointer("/status/state").and_then(|s| s.as_str()) == Some("running"))
        .count()
}

/// A pipeline check that reads an unreachable API as "no tasks" would pass for the wrong
/// reason; the helper the test below relies on refuses to.
#[test]
#[should_panic(expected = "get tasks failed")]
fn a_failing_get_tasks_is_not_counted_as_zero_tasks() {
    let o = Command::new(BIN)
        .args([
            "get",
            "tasks",
            "-o",
            "json",
            "--server",
            "http://127.0.0.1:1",
        ])
        .env_remove("SHOAL_TOKEN")
        .output()
        .unwrap();
    running_tasks_in(&o, "cron");
}

/// `shoal apply -f <repo> --prune -l <sel> --wait`, which must succeed; returns its stdout.
fn apply_repo(dev: &Dev, repo: &str, selector: &str) -> String {
    let args = [
        "apply",
        "-f",
        repo,
        "--prune",
        "-l",
        selector,
        "--wait",
        "--timeout",
        "60s",
    ];
    let o = shoal(dev, &args);
    assert!(
        o.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

#[test]
fn pipeline_applies_a_directory_with_prune_and_wait() {
    let dev = start_dev();
    let repo = tempfile::tempdir().unwrap();
    for name in ["api", "worker", "cron"] {
        write_manifest(repo.path(), name, true);
    }
    let other = tempfile::tempdir().unwrap();
    write_manifest(other.path(), "reports", false);
    let o = shoal(
        &dev,
        &[
            "apply",
            "-f",
            other.path().to_str().unwrap(),
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let sel = "app.kubernetes.io/managed-by=shoal";
    let repo_path = repo.path().to_str().unwrap();
    let out = apply_repo(&dev, repo_path, sel);
    for name in ["api", "worker", "cron"] {
        assert!(out.contains(&format!("service/{name} created")), "{out}");
    }
    assert_eq!(
        running_tasks_of(&dev, "cron"),
        1,
        "cron runs after --wait returned"
    );

    // The pipeline removes one file from the repository and applies again.
    std::fs::remove_file(repo.path().join("cron.yaml")).unwrap();
    let out = apply_repo(&dev, repo_path, sel);
    assert!(out.contains("service/api unchanged"), "{out}");
    assert!(out.contains("service/worker unchanged"), "{out}");
    assert!(out.contains("service/cron pruned"), "{out}");
    assert!(
        !out.contains("reports"),
        "a service outside the selector is not touched: {out}"
    );

    assert_eq!(service_names(&dev), ["api", "reports", "worker"]);
    blocking_eventually("cron's task to stop", DEADLINE, || {
        running_tasks_of(&dev, "cron") == 0
    });
    assert_eq!(running_tasks_of(&dev, "api"), 1);
    assert_eq!(running_tasks_of(&dev, "reports"), 1);

    // Applying the same directory once more changes nothing.
    let o = shoal(&dev, &["apply", "-f", repo_path, "--prune", "-l", sel]);
    assert_eq!(
        text(&o),
        "service/api unchanged\nservice/worker unchanged\n"
    );
}
