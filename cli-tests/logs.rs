//! `shoal logs` end to end, with real processes: a real etcd, `shoal api` (tokens and the
//! agent token), `shoal controller`, two `shoal agent`s on the docker runtime with real
//! containers and one on the process runtime, every agent serving its tasks' output on its
//! own `--listen` address behind the agent token.
//!
//! What a user must see: the lines of every task of a service, prefixed with task and node,
//! stderr marked and on stderr; `--tail`, `--since`, `--no-prefix`, `--timestamps`; `-f`
//! picking up a task that starts later (the delay is measured and printed) and Ctrl-C leaving
//! no stream open on any agent; the output of a task that finished; a process task's
//! output; the agent refusing requests without the agent token and the API refusing a token
//! without the read role; a stopped agent reported as `node … unreachable: …` with exit 4.

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use harness::{BIN, Proc, http_get, log_tail, shoal_token, spawn, start_api, wait_for};
use shoal_agent::test_support::{ContainerGuard, TEST_IMAGE, ensure_test_image};
use shoal_tests::etcd::EtcdFixture;

const DEADLINE: Duration = Duration::from_secs(120);
const RUST_LOG: &str = "info";

const TALK: &str = r#"apiVersion: shoal/v1
kind: Service
metadata:
  name: talk
spec:
  image: IMAGE
  command: [sh, -c, "echo hello-from-task; echo trouble >&2; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.5; done"]
  replicas: 2
  stopGracePeriod: 1s
"#;

const ONCE: &str = r#"apiVersion: shoal/v1
kind: Service
metadata:
  name: once
spec:
  image: IMAGE
  command: [sh, -c, "echo done-once"]
  replicas: 1
  restart:
    condition: on-failure
"#;

const PROC: &str = r#"apiVersion: shoal/v1
kind: Service
metadata:
  name: proc
spec:
  runtime: process
  command: [sh, -c, "echo proc-start; echo proc-trouble >&2; while true; do echo proc-tick; sleep 0.5; done"]
  replicas: 1
  stopGracePeriod: 1s
"#;

struct Cluster {
    _etcd: EtcdFixture,
    url: String,
    admin: String,
    reader: String,
    node_token: String,
    agent_token: String,
    docker_nodes: Vec<String>,
    process_node: String,
    agents: BTreeMap<String, Proc>,
    procs: Vec<Proc>,
    _guards: Vec<ContainerGuard>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        ensure_test_image().unwrap_or_else(|e| panic!("this test needs Docker: {e}"));
        let etcd = EtcdFixture::start().expect("etcd starts (make deps installs it)");
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        let tokens = dir.path().join("tokens");
        let admin = shoal_token(&tokens, &["--role", "admin"]);
        let reader = shoal_token(&tokens, &["--role", "read"]);
        let node_token = shoal_token(&tokens, &["--role", "node", "--node", "somewhere"]);
        let agent_token = format!(
            "agent-token-{pid}-{}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let agent_token_file = dir.path().join("agent-token");
        std::fs::write(&agent_token_file, format!("{agent_token}\n")).unwrap();
        let store = etcd.url();
        let log = |n: &str| dir.path().join(format!("{n}.log"));
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (api, url) = start_api(
            &store,
            &s(&[
                "--token-file",
                tokens.to_str().unwrap(),
                "--agent-token-file",
                agent_token_file.to_str().unwrap(),
            ]),
            &log("api"),
            RUST_LOG,
        );
        let controller = spawn(
            &s(&["controller", "--store", &store, "--lease-ttl", "2s"]),
            &log("controller"),
            Stdio::null(),
            RUST_LOG,
        );
        let docker_nodes: Vec<String> = (1..=2).map(|i| format!("logs-{pid}-d{i}")).collect();
        let process_node = format!("logs-{pid}-p");
        let mut guards = Vec::new();
        let mut agents = BTreeMap::new();
        for node in docker_nodes.iter().chain([&process_node]) {
            let runtime = if node == &process_node {
                "process"
            } else {
                let guard = ContainerGuard::new(format!("io.shoal.node={node}"));
                guard.cleanup();
                guards.push(guard);
                "docker"
            };
            let data = dir.path().join(format!("data-{node}"));
            let args = s(&[
                "agent",
                "--store",
                &store,
                "--node-id",
                node,
                "--address",
                "127.0.0.1",
                "--runtime",
                runtime,
                "--lease-ttl",
                "3s",
                "--data-dir",
                data.to_str().unwrap(),
                "--no-service-network",
                "--listen",
                "127.0.0.1:0",
                "--agent-token-file",
                agent_token_file.to_str().unwrap(),
            ]);
            agents.insert(
                node.clone(),
                spawn(&args, &log(node), Stdio::null(), RUST_LOG),
            );
        }
        let c = Cluster {
            _etcd: etcd,
            url,
            admin,
            reader,
            node_token,
            agent_token,
            docker_nodes,
            process_node,
            agents,
            procs: vec![api, controller],
            _guards: guards,
            dir,
        };
        c.wait("three nodes ready with their agent's address", || {
            let nodes = c.json("/v1/nodes");
            let ready = nodes
                .as_array()?
                .iter()
                .filter(|n| n["ready"] == true && n["info"]["agentUrl"].is_string())
                .count();
            (ready == 3).then_some(())
        });
        c
    }

    fn context(&self) -> String {
        let mut out = format!("logs in {}:\n", self.dir.path().display());
        for (node, p) in &self.agents {
            out.push_str(&format!("--- {node}\n{}\n", log_tail(&p.log, 20)));
        }
        for p in &self.procs {
            out.push_str(&format!(
                "--- {}\n{}\n",
                p.log.display(),
                log_tail(&p.log, 20)
            ));
        }
        out
    }

    fn wait<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_for(what, DEADLINE, || self.context(), f)
    }

    fn shoal_as(&self, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("SHOAL_SERVER", &self.url)
            .env_remove("SHOAL_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("SHOAL_TOKEN", t);
        }
        let mut c = cmd.spawn().unwrap();
        use std::io::Write as _;
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    fn shoal(&self, args: &[&str]) -> Output {
        self.shoal_as(Some(&self.reader), args, "")
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(&format!("{}{path}", self.url), Some(&self.admin));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Tasks of a service: (id, node, state, desired state, startedAt).
    fn tasks(&self, service: &str) -> Vec<(String, String, String, String, Option<String>)> {
        let tasks = self.json(&format!("/v1/tasks?service=default/{service}"));
        tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["task"]["id"].as_str().unwrap().to_string(),
                    t["task"]["nodeId"].as_str().unwrap().to_string(),
                    t["status"]["state"].as_str().unwrap_or("").to_string(),
                    t["task"]["desiredState"].as_str().unwrap_or("").to_string(),
                    t["status"]["startedAt"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    fn agent_url(&self, node: &str) -> String {
        let n = self.json(&format!("/v1/nodes/{node}"));
        n["info"]["agentUrl"].as_str().unwrap().to_string()
    }

    /// `shoal_agent_log_streams` on a node's agent.
    fn open_streams(&self, node: &str) -> Option<i64> {
        let (_, body) = http_get(&format!("{}/metrics", self.agent_url(node)), None);
        body.lines()
            .find(|l| l.starts_with("shoal_agent_log_streams "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines per task id of `shoal logs` output (`TASK@NODE | …` or `TASK@NODE ! …`).
fn per_task(out: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in out.lines() {
        let Some((prefix, _)) = l.split_once(' ') else {
            continue;
        };
        let Some((task, _node)) = prefix.split_once('@') else {
            continue;
        };
        m.entry(task.to_string()).or_default().push(l.to_string());
    }
    m
}

#[test]
fn logs_follow_tasks_across_agents() {
    let c = Cluster::start();
    let manifests = [TALK, ONCE, PROC]
        .join("---\n")
        .replace("IMAGE", TEST_IMAGE);
    let applied = c.shoal_as(Some(&c.admin), &["apply", "-f", "-"], &manifests);
    assert!(applied.status.success(), "{}", text(&applied.stderr));

    // Both docker tasks, one per node, have written a few lines.
    let out = c.wait("output of both talk tasks", || {
        let o = c.shoal(&["logs", "talk"]);
        let stdout = text(&o.stdout);
        let tasks = per_task(&stdout);
        let ok = o.status.success()
            && tasks.len() == 2
            && tasks
                .values()
                .all(|v| v.iter().any(|l| l.ends_with("| tick-3")))
            && c.docker_nodes
                .iter()
                .all(|n| stdout.contains(&format!("@{n} | ")));
        ok.then_some(o)
    });
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    for (task, lines) in per_task(&stdout) {
        assert!(
            lines[0].ends_with("| hello-from-task"),
            "{task} starts at its first line: {lines:?}"
        );
        let ticks: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.rsplit_once("| tick-")?.1.parse().ok())
            .collect();
        assert!(
            ticks.windows(2).all(|w| w[1] == w[0] + 1),
            "{task}'s lines in order: {ticks:?}"
        );
        assert!(
            stderr.contains(&format!("{task}@")) && stderr.contains(" ! trouble"),
            "stderr lines marked, on stderr: {stderr}"
        );
    }
    assert!(
        !stdout.contains("trouble"),
        "no stderr line on stdout: {stdout}"
    );

    // --tail: the last N lines of each task.
    let o = c.shoal(&["logs", "talk", "--tail", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let tails = per_task(&text(&o.stdout));
    assert_eq!(tails.len(), 2, "{tails:?}");
    assert!(
        tails
            .values()
            .all(|v| v.len() == 2 && v.iter().all(|l| l.contains("| tick-"))),
        "{tails:?}"
    );

    // --since: nothing older, and the first lines are long gone.
    let since = SystemTime::now();
    std::thread::sleep(Duration::from_secs(2));
    let stamp = humantime::format_rfc3339_nanos(since).to_string();
    let o = c.shoal(&[
        "logs",
        "talk",
        "--since",
        &stamp,
        "--timestamps",
        "--no-prefix",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<String> = text(&o.stdout).lines().map(str::to_string).collect();
    assert!(
        lines.len() >= 4,
        "two seconds of ticks of two tasks: {lines:?}"
    );
    for l in &lines {
        let (t, rest) = l.split_once(' ').unwrap();
        let t = humantime::parse_rfc3339_weak(t).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(t >= since, "{l:?} is older than --since {stamp}");
        assert!(
            rest.starts_with("tick-"),
            "--no-prefix prints the line alone: {l:?}"
        );
    }
    let o = c.shoal(&["logs", "talk", "--since", "10m"]);
    assert!(
        text(&o.stdout).contains("| hello-from-task"),
        "--since 10m reaches the start"
    );

    // -f: a task started by a scale-up joins the stream.
    let before: Vec<String> = c.tasks("talk").into_iter().map(|t| t.0).collect();
    let mut follow = Command::new(BIN)
        .args(["logs", "talk", "-f"])
        .env("SHOAL_SERVER", &c.url)
        .env("SHOAL_TOKEN", &c.reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen: Arc<Mutex<Vec<(SystemTime, String)>>> = Arc::default();
    let sink = seen.clone();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((SystemTime::now(), line));
        }
    });
    c.wait("the followed stream to show both tasks", || {
        let seen = seen.lock().unwrap();
        (per_task(
            &seen
                .iter()
                .map(|(_, l)| l.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .len()
            == 2)
            .then_some(())
    });
    assert!(
        c.agents
            .keys()
            .filter(|n| **n != c.process_node)
            .all(|n| c.open_streams(n) == Some(1))
    );
    let scaled = c.shoal_as(Some(&c.admin), &["scale", "talk=3"], "");
    assert!(scaled.status.success(), "{}", text(&scaled.stderr));
    let (new_task, started) = c.wait("the new task to start", || {
        c.tasks("talk")
            .into_iter()
            .find(|t| !before.contains(&t.0) && t.4.is_some())
            .map(|t| (t.0, t.4.unwrap()))
    });
    let arrived = c.wait("the new task's first line in the followed stream", || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.starts_with(&format!("{new_task}@")))
            .map(|(t, l)| (*t, l.clone()))
    });
    assert!(arrived.1.ends_with("| hello-from-task"), "{arrived:?}");
    let started = humantime::parse_rfc3339_weak(&started).unwrap();
    let delay = arrived.0.duration_since(started).unwrap_or_default();
    println!(
        "measured: the first line of a task started by a scale-up reached `shoal logs -f` {} ms after the task started (goal: 2000 ms)",
        delay.as_millis()
    );
    // A rolling update: the tasks that replace the old ones join the followed stream.
    let before_update: Vec<String> = c.tasks("talk").into_iter().map(|t| t.0).collect();
    let updated = TALK
        .replace("IMAGE", TEST_IMAGE)
        .replace("replicas: 2", "replicas: 3\n  env: {ROUND: \"2\"}");
    let applied = c.shoal_as(Some(&c.admin), &["apply", "-f", "-"], &updated);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let (updated_task, _) = c.wait(
        "a task of the rolling update in the followed stream",
        || {
            seen.lock().unwrap().iter().find_map(|(_, l)| {
                let task = l.split('@').next()?;
                (!before_update.iter().any(|id| id == task)).then(|| (task.to_string(), l.clone()))
            })
        },
    );
    assert!(
        c.tasks("talk").iter().any(|t| t.0 == updated_task),
        "{updated_task} is a task of talk"
    );
    println!("measured: {updated_task}, started by the rolling update, joined `shoal logs -f`");
    // Ctrl-C: the command ends, and no agent keeps a stream open.
    harness::signal(&follow, "INT");
    let status = follow.wait().unwrap();
    reader.join().unwrap();
    assert!(
        status.success(),
        "Ctrl-C ends `shoal logs -f` cleanly: {status:?}"
    );
    for n in &c.docker_nodes {
        c.wait(&format!("no log stream left open on {n}"), || {
            (c.open_streams(n) == Some(0)).then_some(())
        });
    }

    // A task that finished keeps its output while it is in the task history.
    let done = c.wait("the once task to complete", || {
        c.tasks("once")
            .into_iter()
            .find(|t| t.2 == "complete")
            .map(|t| t.0)
    });
    let o = c.shoal(&["logs", &done]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let tasks = per_task(&text(&o.stdout));
    assert_eq!(tasks.keys().collect::<Vec<_>>(), [&done], "only that task");
    assert!(
        tasks[&done].iter().any(|l| l.ends_with("| done-once")),
        "{tasks:?}"
    );

    // A process task's output, from its log file.
    let o = c.wait("the process task's output", || {
        let o = c.shoal(&["logs", "proc", "--tail", "3"]);
        text(&o.stdout).contains("| proc-tick").then_some(o)
    });
    let tasks = per_task(&text(&o.stdout));
    assert!(tasks.values().all(|v| v.len() <= 3), "{tasks:?}");
    assert!(text(&o.stdout).contains(&format!("@{} | proc-tick", c.process_node)));
    let o = c.shoal(&["logs", "proc"]);
    assert!(
        text(&o.stderr).contains(" ! proc-trouble"),
        "{}",
        text(&o.stderr)
    );

    // The agent serves nobody without the agent token; the API needs the read role.
    let node = &c.docker_nodes[0];
    let (task, _, _, _, _) = c
        .tasks("talk")
        .into_iter()
        .find(|t| &t.1 == node && t.3 == "running")
        .unwrap();
    let url = format!("{}/v1/tasks/{task}/logs?tail=1", c.agent_url(node));
    assert_eq!(http_get(&url, None).0, 401, "no token");
    assert_eq!(http_get(&url, Some("wrong")).0, 401, "wrong token");
    let (status, body) = http_get(&url, Some(&c.agent_token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"kind\":\"line\""), "{body}");
    let o = c.shoal_as(None, &["logs", "talk"], "");
    assert_eq!(o.status.code(), Some(1), "no token: {}", text(&o.stderr));
    let o = c.shoal_as(Some(&c.node_token), &["logs", "talk"], "");
    assert_eq!(o.status.code(), Some(1), "node token: {}", text(&o.stderr));
    assert!(text(&o.stderr).contains("node role"), "{}", text(&o.stderr));
    for log in c
        .agents
        .values()
        .map(|p| &p.log)
        .chain(c.procs.iter().map(|p| &p.log))
    {
        let content = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            !content.contains(&c.agent_token),
            "the agent token in {}",
            log.display()
        );
    }

    // A stopped agent: its part is reported, the rest is printed, exit 4.
    let stopped = c.docker_nodes[1].clone();
    let mut agents = c.agents;
    agents.get_mut(&stopped).unwrap().terminate();
    let start = Instant::now();
    let o = Command::new(BIN)
        .args(["logs", "talk", "--tail", "1"])
        .env("SHOAL_SERVER", &c.url)
        .env("SHOAL_TOKEN", &c.reader)
        .output()
        .unwrap();
    println!(
        "measured: `shoal logs` with one agent stopped answered in {} ms",
        start.elapsed().as_millis()
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("node {stopped} unreachable: ")),
        "{err}"
    );
    assert!(
        text(&o.stdout).contains(&format!("@{} | tick-", c.docker_nodes[0])),
        "the other node's part: {}",
        text(&o.stdout)
    );
}
