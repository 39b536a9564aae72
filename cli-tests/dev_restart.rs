//! `shoal dev` stopped for longer than the node lease TTL and started again keeps its
//! workloads: the same tasks, the same Docker containers, no restart. A controller that takes
//! the lead gives nodes one TTL to register again before it declares them lost.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::process::{free_port, interrupt};
use shoal_tests::wait::blocking_eventually;

const BIN: &str = env!("CARGO_BIN_EXE_shoal");
/// How long a step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(120);
const NODE: &str = "dev-restart-node";
/// The agent's and the controller's default lease TTL.
const TTL: Duration = Duration::from_secs(5);

fn start_dev(data: &Path, port: u16) -> Child {
    Command::new(BIN)
        .args(["dev", "--runtime", "docker", "--node-id", NODE])
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop_dev(child: &mut Child) {
    interrupt(child, Duration::from_secs(30));
}

/// Stops `shoal dev` and removes the containers of its node, whatever the test's outcome.
struct Cleanup(Option<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            stop_dev(c);
        }
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.shoal.node={NODE}"),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

fn shoal(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SHOAL_SERVER", url)
        .env_remove("SHOAL_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every task record: (id, attempt, state, container id).
fn tasks(url: &str) -> Vec<(String, u64, String, String)> {
    let o = shoal(url, &["get", "tasks", "-o", "json"]);
    if !o.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let s = |t: &serde_json::Value, p: &str| {
        t.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut out: Vec<_> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        s(t, "/task/id"),
                        t.pointer("/task/attempt")
                            .and_then(|x| x.as_u64())
                            .unwrap_or_default(),
                        s(t, "/status/state"),
                        s(t, "/status/containerId"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn dev_stopped_longer_than_the_ttl_keeps_the_same_containers_and_restarts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut guard = Cleanup(Some(start_dev(&data, port)));
    let manifest = dir.path().join("sleeper.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: sleeper\nspec:\n  image: shoal-test/busybox:latest\n  command: [sleep, \"3600\"]\n  replicas: 2\n  stopGracePeriod: 1s\n",
    )
    .unwrap();
    blocking_eventually("the API", DEADLINE, || {
        shoal(&url, &["get", "nodes"]).status.success()
    });
    let o = shoal(
        &url,
        &[
            "apply",
            "-f",
            manifest.to_str().unwrap(),
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut before = Vec::new();
    blocking_eventually("two running tasks", DEADLINE, || {
        before = tasks(&url);
        before.len() == 2 && before.iter().all(|t| t.2 == "running" && !t.3.is_empty())
    });

    stop_dev(guard.0.as_mut().unwrap());
    // Longer than the node lease: the node record is gone when the controller starts.
    std::thread::sleep(2 * TTL);
    let started = Instant::now();
    guard.0 = Some(start_dev(&data, port));
    blocking_eventually("the API again", DEADLINE, || {
        shoal(&url, &["get", "nodes"]).status.success()
    });
    // Past the new leader's grace and a few reconciles more.
    while started.elapsed() < 3 * TTL {
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = tasks(&url);
    println!("tasks before the restart: {before:?}\ntasks after: {after:?}");
    assert_eq!(
        after, before,
        "the same tasks run in the same containers, none restarted or replaced"
    );
    let o = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=io.shoal.node={NODE}"),
        ])
        .output()
        .unwrap();
    let mut running: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    running.sort();
    let mut ids: Vec<String> = before.iter().map(|t| t.3.clone()).collect();
    ids.sort();
    assert_eq!(
        running.len(),
        2,
        "exactly the two containers run: {running:?}"
    );
    for id in &ids {
        assert!(
            running.iter().any(|r| r.starts_with(id.as_str())),
            "container {id} still runs: {running:?}"
        );
    }
}
