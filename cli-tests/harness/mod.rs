//! What the multi-process tests share: `shoal` server processes (their stderr in a log file,
//! killed when dropped), the arguments of a docker agent, starting `shoal api` and reading its
//! URL, tokens made with `shoal token create`, running the `shoal` client against a server,
//! plain HTTP GETs with a bearer token, the running tasks of a `/v1/tasks` answer, and waiting
//! with a deadline.
//!
//! Each test file includes it with `#[path = "harness/mod.rs"] mod harness;` and uses what it
//! needs.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `shoal` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// A `shoal` server process whose stderr (its log) goes to a file.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its log.
    pub log: PathBuf,
    /// The arguments it was started with (to start it again).
    pub args: Vec<String>,
}

impl Proc {
    /// Reads the next line the process prints on stdout (it must have been piped).
    pub fn stdout_line(&mut self) -> String {
        let out = self.child.stdout.take().expect("stdout is piped");
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        reader.read_line(&mut line).expect("the process prints");
        self.child.stdout = Some(reader.into_inner());
        line.trim().to_string()
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn terminate(&mut self) {
        signal(&self.child, "TERM");
        let _ = self.child.wait();
    }
}

/// Sends `SIG` (`INT`, `TERM`) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `shoal ARGS` logging at `rust_log` into `log`.
pub fn spawn<S: AsRef<OsStr>>(args: &[S], log: &Path, stdout: Stdio, rust_log: &str) -> Proc {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", rust_log)
        .env_remove("SHOAL_TOKEN")
        .stdout(stdout)
        .stderr(err)
        .spawn()
        .expect("shoal starts");
    Proc {
        child,
        log: log.to_path_buf(),
        args: args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect(),
    }
}

/// The arguments of `shoal agent` on the docker runtime for `node` at `address` on `store`,
/// keeping its data in `data`, then `extra`.
pub fn docker_agent_args(
    store: &str,
    node: &str,
    address: &str,
    data: &Path,
    extra: &[&str],
) -> Vec<String> {
    let data = data.to_string_lossy();
    let args = [
        "agent",
        "--store",
        store,
        "--node-id",
        node,
        "--address",
        address,
        "--runtime",
        "docker",
        "--data-dir",
        &data,
    ];
    args.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// Starts `shoal api --listen 127.0.0.1:0 EXTRA…` on `store`; returns it and its URL.
pub fn start_api(store: &str, extra: &[String], log: &Path, rust_log: &str) -> (Proc, String) {
    let mut args: Vec<String> = ["api", "--store", store, "--listen", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend_from_slice(extra);
    let mut api = spawn(&args, log, Stdio::piped(), rust_log);
    let line = api.stdout_line();
    let url = line.rsplit(' ').next().unwrap_or_default().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line:?}");
    (api, url)
}

/// `shoal token create --file FILE ARGS…`: the new token.
pub fn shoal_token(file: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["token", "create", "--file"])
        .arg(file)
        .args(args)
        .output()
        .expect("shoal token runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the `shoal` client against the API at `url` (as `token`, or with none), `stdin` fed
/// on its standard input.
pub fn shoal_at(url: &str, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("SHOAL_SERVER", url)
        .env_remove("SHOAL_TOKEN");
    if let Some(t) = token {
        cmd.env("SHOAL_TOKEN", t);
    }
    let mut c = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shoal runs");
    c.stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("shoal reads its input");
    c.wait_with_output().expect("shoal ends")
}

/// The standard output of `shoal ARGS` that ran as `out`; fails the test with what it
/// printed when it did not succeed.
pub fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "shoal {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET url` (plain HTTP) with an optional bearer token: the status and the body.
pub fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The tasks of a `/v1/tasks` answer that run and are wanted running: (task id, container
/// id, node id) of each.
pub fn running_tasks(tasks: &serde_json::Value) -> Vec<(String, String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    tasks
        .as_array()
        .expect("a list of tasks")
        .iter()
        .filter(|t| t["status"]["state"] == "running" && t["task"]["desiredState"] == "running")
        .map(|t| {
            (
                text(&t["task"]["id"]),
                text(&t["status"]["containerId"]),
                text(&t["task"]["nodeId"]),
            )
        })
        .collect()
}

/// Calls `f` every 200 ms until it gives a value; panics with `what` and `context()` after
/// `deadline`.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `n` lines at INFO or above of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
