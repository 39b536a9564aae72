//! Secrets end to end, with real processes: a real etcd, `shoal api` (token file and cluster
//! key), `shoal controller` and `shoal agent` on the docker runtime with real containers, all
//! logging at `RUST_LOG=trace`, driven by the `shoal` CLI.
//!
//! What a user must see: the service reads `/run/secrets/db_password` (tmpfs, mode 0400); a
//! node with no task using the secret is refused it (403); `rm` is refused while in use;
//! rotating to `db-password-v2` is a rolling update; a missing secret makes a service Invalid;
//! and no value ever shows up in the etcd data directory, the agent's data directory, Docker's
//! container directory once the tasks stopped, API answers, the SSE stream, or any log line.

#[path = "harness/mod.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use harness::{
    Proc, docker_agent_args, http_get, log_tail, running_tasks, shoal_at, shoal_token, succeeded,
    wait_for,
};
use shoal_agent::test_support::{ContainerGuard, TEST_IMAGE, ensure_test_image};
use shoal_tests::docker::docker;
use shoal_tests::etcd::EtcdFixture;
use shoal_tests::leaks::files_with;

const DEADLINE: Duration = Duration::from_secs(120);

/// A value nobody else could have written anywhere.
fn unique_value(tag: &str) -> String {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{tag}-{hex}")
}

fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], log: PathBuf, stdout: Stdio) -> Proc {
    harness::spawn(args, &log, stdout, "trace")
}

/// etcd, the API, the controller and one docker agent.
struct Cluster {
    etcd: EtcdFixture,
    url: String,
    admin: String,
    node_token: String,
    other_node_token: String,
    node: String,
    data: tempfile::TempDir,
    secrets_root: tempfile::TempDir,
    procs: Vec<Proc>,
    /// Every answer the test read from the API or the CLI (checked for values at the end).
    seen: Mutex<String>,
    _guard: ContainerGuard,
    _dir: tempfile::TempDir,
}

/// A fresh cluster key file (mode 0600) with one random key.
fn write_key_file(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    let line = base64::engine::general_purpose::STANDARD.encode(key);
    writeln!(f, "k1 {line}").unwrap();
}

/// Starts `shoal api` with tokens and a key; returns it and its URL.
fn start_api(store: &str, tokens: &Path, key_file: &Path, log: PathBuf) -> (Proc, String) {
    let extra = [
        "--token-file".to_string(),
        tokens.to_string_lossy().into_owned(),
        "--secret-key-file".to_string(),
        key_file.to_string_lossy().into_owned(),
    ];
    harness::start_api(store, &extra, &log, "trace")
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        ensure_test_image().unwrap_or_else(|e| panic!("these tests need Docker: {e}"));
        let etcd = EtcdFixture::start().expect("etcd starts (make deps installs it)");
        let dir = tempfile::tempdir().unwrap();
        let node = format!("sec-{name}-{}", std::process::id());
        let guard = ContainerGuard::new(format!("io.shoal.node={node}"));
        guard.cleanup();
        let tokens = dir.path().join("tokens");
        let admin = shoal_token(&tokens, &["--role", "admin"]);
        let node_token = shoal_token(&tokens, &["--role", "node", "--node", &node]);
        let other_node = format!("{node}-b");
        let other_node_token = shoal_token(&tokens, &["--role", "node", "--node", &other_node]);
        let node_token_file = dir.path().join("node-token");
        std::fs::write(&node_token_file, format!("{node_token}\n")).unwrap();
        let key_file = dir.path().join("secret.key");
        write_key_file(&key_file);
        let store = etcd.url();
        let log = |n: &str| dir.path().join(format!("{n}.log"));
        let (api, url) = start_api(&store, &tokens, &key_file, log("api"));
        let controller_args = ["controller", "--store", &store, "--lease-ttl", "2s"];
        let controller = spawn(&controller_args, log("controller"), Stdio::null());
        let data = tempfile::tempdir().unwrap();
        let secrets_root = tempfile::tempdir_in("/dev/shm").unwrap();
        let extra = [
            "--api",
            &url,
            "--api-token-file",
            node_token_file.to_str().unwrap(),
            "--secrets-dir",
            secrets_root.path().to_str().unwrap(),
        ];
        let agent_args = docker_agent_args(&store, &node, "127.0.0.1", data.path(), &extra);
        let agent = spawn(&agent_args, log("agent"), Stdio::null());
        let c = Cluster {
            etcd,
            url,
            admin,
            node_token,
            other_node_token,
            node,
            data,
            secrets_root,
            procs: vec![api, controller, agent],
            seen: Mutex::new(String::new()),
            _guard: guard,
            _dir: dir,
        };
        // Ready once its node is registered: a service applied before that is judged
        // unschedulable on 0 nodes, and `apply --wait` reports it (exit 1).
        let quoted = format!("\"{}\"", c.node);
        c.wait_for("the node to register", || {
            let (status, body) = c.get("/v1/nodes", &c.admin);
            (status == 200 && body.contains(&quoted)).then_some(())
        });
        c
    }

    fn note(&self, text: &str) {
        self.seen.lock().unwrap().push_str(text);
    }

    /// Runs the CLI as the admin; `stdin` is fed to it.
    fn shoal(&self, args: &[&str], stdin: &str) -> Output {
        let out = shoal_at(&self.url, Some(&self.admin), args, stdin);
        self.note(&String::from_utf8_lossy(&out.stdout));
        self.note(&String::from_utf8_lossy(&out.stderr));
        out
    }

    fn shoal_ok(&self, args: &[&str], stdin: &str) -> String {
        succeeded(args, &self.shoal(args, stdin))
    }

    /// A raw GET: status and body.
    fn get(&self, path: &str, token: &str) -> (u16, String) {
        http_get(&format!("{}{path}", self.url), Some(token))
    }

    /// GETs JSON as the admin (and keeps the answer for the final check).
    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path, &self.admin);
        self.note(&body);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Follows `/v1/watch` in the background; the bytes received so far.
    fn follow_watch(&self) -> (Arc<Mutex<Vec<u8>>>, TcpStream) {
        let addr = self.url.trim_start_matches("http://").to_string();
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /v1/watch HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            self.admin
        )
        .unwrap();
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (s.try_clone().unwrap(), buf.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, s)
    }

    /// The service's tasks that run, with their container ids.
    fn running_containers(&self, service: &str) -> Vec<(String, String)> {
        let tasks = self.json(&format!("/v1/tasks?service=default/{service}"));
        running_tasks(&tasks)
            .into_iter()
            .map(|(task, container, _)| (task, container))
            .collect()
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        let context = || format!("agent log tail:\n{}", log_tail(&self.procs[2].log, 30));
        wait_for(what, DEADLINE, context, f)
    }
}

/// The plaintext and the base64 forms a value could leak as.
fn forms(value: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    vec![value.to_string(), b64.trim_end_matches('=').to_string()]
}

fn manifest(secret: &str, replicas: u32) -> String {
    format!(
        "apiVersion: shoal/v1
kind: Service
metadata:
  name: web
spec:
  replicas: {replicas}
  image: {TEST_IMAGE}
  command: [sh, -c, 'cat /run/secrets/db_password; echo; exec sleep 600']
  stopGracePeriod: 1s
  update: {{parallelism: 1, monitor: 1s}}
  secrets:
    - source: {secret}
      target: db_password
      mode: 0400
      uid: \"0\"
      gid: \"0\"
"
    )
}

/// The logs of a container once it printed something.
fn printed(c: &Cluster, id: &str) -> String {
    c.wait_for("the task printed", || {
        let l = docker(&["logs", id]);
        (!l.trim().is_empty()).then_some(l)
    })
}

/// Each container printed `value` from /run/secrets/db_password, a read-only tmpfs file with
/// mode 0400 and owner 0:0.
fn assert_reads_secret_from_tmpfs(c: &Cluster, containers: &[(String, String)], value: &str) {
    for (task, id) in containers {
        assert_eq!(
            printed(c, id).trim(),
            value,
            "task {task} prints the secret"
        );
        let mounts = docker(&["exec", id, "cat", "/proc/mounts"]);
        let line = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/run/secrets/db_password"))
            .unwrap_or_else(|| panic!("no mount at /run/secrets/db_password:\n{mounts}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2], "tmpfs", "{line}");
        assert!(fields[3].split(',').any(|o| o == "ro"), "{line}");
        let ls = docker(&["exec", id, "ls", "-ln", "/run/secrets/db_password"]);
        let cols: Vec<&str> = ls.split_whitespace().collect();
        assert_eq!(
            (cols[0], cols[2], cols[3]),
            ("-r--------", "0", "0"),
            "mode 0400, owner 0:0: {ls}"
        );
    }
}

/// Only the node whose task uses the secret gets it.
fn assert_delivery_is_node_scoped(c: &Cluster, value: &str) {
    let mine = format!("/v1/nodes/{}/secrets/default/db-password", c.node);
    let (status, body) = c.get(&mine, &c.node_token);
    assert_eq!(
        (status, body.as_str()),
        (200, value),
        "the node's own delivery"
    );
    let other = format!("/v1/nodes/{}-b/secrets/default/db-password", c.node);
    for (path, token, who) in [
        (
            &other,
            &c.other_node_token,
            "a node without a task using it",
        ),
        (&mine, &c.other_node_token, "another node's token"),
        (&mine, &c.admin, "an admin"),
    ] {
        let (status, body) = c.get(path, token);
        assert_eq!(status, 403, "{who}: {body}");
        c.note(&body);
    }
}

/// No file under the node's data, secrets or Docker container directories, nor in etcd's
/// data directory (WAL and db), holds a value (or its base64).
fn assert_no_value_on_disk(c: &Cluster, values: &[&str]) {
    let docker_root = docker(&["info", "--format", "{{.DockerRootDir}}"]);
    let containers = Path::new(docker_root.trim()).join("containers");
    let etcd = c.etcd.data_dir();
    for v in values {
        for dir in [c.data.path(), c.secrets_root.path(), containers.as_path()] {
            let hits = files_with(dir, v);
            assert!(
                hits.is_empty(),
                "{v} found under {}: {hits:?}",
                dir.display()
            );
        }
        for form in forms(v) {
            let hits = files_with(&etcd, &form);
            assert!(hits.is_empty(), "{form} in etcd's data: {hits:?}");
        }
    }
}

/// No API answer, SSE event or log line (at trace) holds a value (or its base64).
fn assert_no_value_in_answers_events_or_logs(c: &Cluster, events: &str, values: &[&str]) {
    assert!(events.contains("event: task"), "the watch saw the tasks");
    let seen = c.seen.lock().unwrap().clone();
    let logs: Vec<(String, String)> = c
        .procs
        .iter()
        .map(|p| {
            let name = p.log.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p.log).unwrap_or_default())
        })
        .collect();
    for (name, log) in &logs {
        println!("{name}: {} lines at trace searched", log.lines().count());
        assert!(log.contains("TRACE"), "{name} logged at trace");
    }
    for v in values {
        for form in forms(v) {
            assert!(!events.contains(&form), "{form} in the SSE stream");
            assert!(!seen.contains(&form), "{form} in an API or CLI answer");
            for (name, log) in &logs {
                assert!(!log.contains(&form), "{form} in {name}");
            }
        }
    }
}

#[test]
fn secrets_reach_containers_in_memory_only_and_rotate_by_rolling_update() {
    let c = Cluster::start("main");
    let (watch, watch_conn) = c.follow_watch();
    let v1 = unique_value("pw1");
    let v2 = unique_value("pw2");
    let apply = ["apply", "-f", "-", "--wait", "--timeout", "2m"];

    let out = c.shoal_ok(&["secret", "create", "db-password", "-"], &v1);
    assert!(out.contains("secret default/db-password created"), "{out}");
    c.shoal_ok(&apply, &manifest("db-password", 2));
    let first = c.wait_for("two running tasks", || {
        let r = c.running_containers("web");
        (r.len() == 2).then_some(r)
    });
    assert_reads_secret_from_tmpfs(&c, &first, &v1);
    assert_delivery_is_node_scoped(&c, &v1);

    // In use: rm is refused, naming the service.
    let out = c.shoal(&["secret", "rm", "db-password"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by default/web"), "{err}");
    let shown = c.shoal_ok(&["secret", "inspect", "db-password", "-o", "json"], "");
    assert!(shown.contains("\"service\": \"default/web\""), "{shown}");
    let listed = c.shoal_ok(&["secret", "ls"], "");
    assert!(
        listed.contains("db-password") && listed.contains("default/web"),
        "{listed}"
    );

    // Rotation: a new secret, a new source, a rolling update.
    c.shoal_ok(&["secret", "create", "db-password-v2", "-"], &v2);
    let started = Instant::now();
    c.shoal_ok(&apply, &manifest("db-password-v2", 2));
    println!("rotation rolled out in {:?}", started.elapsed());
    let second = c.wait_for("two tasks on v2", || {
        let r = c.running_containers("web");
        let fresh = r.iter().all(|(t, _)| first.iter().all(|(f, _)| f != t));
        (r.len() == 2 && fresh).then_some(r)
    });
    for (_, id) in &second {
        assert_eq!(printed(&c, id).trim(), v2);
    }
    let status = c.json("/v1/services/default/web/status");
    assert_eq!(status["rollout"]["state"], "completed", "{status}");
    assert_eq!(status["rollout"]["updated"], 2, "{status}");
    let old = c.shoal_ok(&["secret", "inspect", "db-password", "-o", "json"], "");
    assert!(
        old.contains("\"usedBy\": []"),
        "v1 is no longer used: {old}"
    );
    c.shoal_ok(&["secret", "rm", "db-password"], "");

    // Once the tasks stop, nothing on the node holds a value.
    c.shoal_ok(&["delete", "service", "web"], "");
    let label = format!("label=io.shoal.node={}", c.node);
    c.wait_for("the containers to be removed", || {
        let left = docker(&["ps", "-aq", "--filter", &label]);
        left.trim().is_empty().then_some(())
    });
    c.wait_for("the task directories to go", || {
        let left = std::fs::read_dir(c.secrets_root.path().join(&c.node))
            .map(|d| d.count())
            .unwrap_or(0);
        (left == 0).then_some(())
    });
    assert_no_value_on_disk(&c, &[&v1, &v2]);

    c.json("/v1/tasks");
    c.json("/v1/services");
    c.json("/v1/secrets");
    let _ = watch_conn.shutdown(std::net::Shutdown::Both);
    let events = String::from_utf8_lossy(&watch.lock().unwrap()).into_owned();
    assert_no_value_in_answers_events_or_logs(&c, &events, &[&v1, &v2]);
}

#[test]
fn a_missing_secret_makes_the_service_invalid_until_it_exists() {
    let c = Cluster::start("missing");
    let v = unique_value("late");
    let with_config = manifest("not-yet", 1).replace(
        "  secrets:\n",
        "  configs:\n    - {source: app, target: /etc/app/app.conf, mode: \"0440\"}\n  secrets:\n",
    );
    c.shoal_ok(&["apply", "-f", "-"], &with_config);
    let error = c.wait_for("the service to be Invalid", || {
        let st = c.get("/v1/services/default/web/status", &c.admin);
        (st.0 == 200).then_some(st.1).and_then(|b| {
            let v: serde_json::Value = serde_json::from_str(&b).ok()?;
            v["error"].as_str().map(String::from)
        })
    });
    for missing in ["secret \"not-yet\"", "config \"app\""] {
        assert!(
            error.contains(&format!(
                "{missing} does not exist in namespace \"default\""
            )),
            "{error}"
        );
    }
    let got = c.shoal_ok(&["get", "services"], "");
    assert!(got.contains("Invalid"), "{got}");
    assert_eq!(
        c.json("/v1/tasks?service=default/web"),
        serde_json::json!([]),
        "no task starts"
    );

    let conf = "listen 8080\n";
    c.shoal_ok(&["config", "create", "app", "-"], conf);
    assert_eq!(
        c.shoal_ok(&["config", "inspect", "app", "--data"], ""),
        conf
    );
    c.shoal_ok(&["secret", "create", "not-yet", "-"], &v);
    let running = c.wait_for("the service to start", || {
        let r = c.running_containers("web");
        (r.len() == 1).then_some(r)
    });
    let id = &running[0].1;
    assert_eq!(printed(&c, id).trim(), v);
    assert_eq!(docker(&["exec", id, "cat", "/etc/app/app.conf"]), conf);
    let ls = docker(&["exec", id, "ls", "-ln", "/etc/app/app.conf"]);
    assert!(ls.starts_with("-r--r-----"), "config mode 0440: {ls}");
    let listed = c.shoal_ok(&["config", "ls"], "");
    assert!(
        listed.contains("app") && listed.contains("default/web"),
        "{listed}"
    );
    let out = c.shoal(&["config", "rm", "app"], "");
    assert_eq!(out.status.code(), Some(1), "a config in use stays");
}
