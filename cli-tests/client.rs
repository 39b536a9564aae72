//! The `shoal` client commands against a real `shoal api` process over an embedded store.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

#[path = "harness/mod.rs"]
mod harness;

use harness::{BIN, Proc, start_api};
use shoal_tests::process::free_port;

struct Server {
    api: Proc,
    url: String,
    store: String,
    _dir: tempfile::TempDir,
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("data").display());
    let (api, url) = start_api(&store, &[], &dir.path().join("api.log"), "warn");
    Server {
        api,
        url,
        store,
        _dir: dir,
    }
}

fn shoal(s: &Server, args: &[&str], stdin: Option<&str>) -> Output {
    shoal_at(&s.url, args, stdin)
}

fn shoal_at(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    harness::shoal_at(url, None, args, stdin.unwrap_or(""))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn manifest(name: &str, replicas: u64) -> String {
    format!(
        "# keep me\napiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{app: shop}}\nspec:\n  replicas: {replicas} # count\n  image: nginx:1.27\n"
    )
}

#[test]
fn apply_get_diff_scale_delete() {
    let s = start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("web.yaml"), manifest("web", 2)).unwrap();
    std::fs::write(dir.path().join("sub/db.yml"), manifest("db", 1)).unwrap();
    let d = dir.path().to_str().unwrap();

    let o = shoal(&s, &["apply", "-f", d], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(text(&o), "service/db created\nservice/web created\n");

    let o = shoal(&s, &["apply", "-f", d], None);
    assert_eq!(text(&o), "service/db unchanged\nservice/web unchanged\n");

    let o = shoal(&s, &["get", "services", "-o", "json"], None);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[1]["name"], "web");
    assert_eq!(v[1]["service"]["spec"]["replicas"], 2);

    let o = shoal(&s, &["get", "services"], None);
    let out = text(&o);
    assert!(
        out.starts_with("NAME   MODE         REPLICAS   IMAGE"),
        "{out}"
    );
    assert!(
        out.contains("web    replicated   0/2        nginx:1.27"),
        "{out}"
    );

    // diff: 0 when equal, 1 when different (with a unified diff), 2 on invalid input.
    let o = shoal(&s, &["diff", "-f", d], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = shoal(&s, &["diff", "-f", "-"], Some(&manifest("web", 4)));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("-spec:\n") || text(&o).contains("+  replicas: 4 # count"),
        "{}",
        text(&o)
    );
    let o = shoal(
        &s,
        &["diff", "-f", "-"],
        Some("apiVersion: shoal/v1\nkind: Service\nmetadata: {name: web}\nspec: {replica: 1}\n"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("<stdin>:4:"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // scale keeps comments.
    let o = shoal(&s, &["scale", "web=5"], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = shoal(&s, &["get", "services", "web", "-o", "yaml"], None);
    assert!(
        text(&o).contains("# keep me\n") && text(&o).contains("  replicas: 5 # count\n"),
        "{}",
        text(&o)
    );

    // prune with a selector from stdin.
    let o = shoal(
        &s,
        &["apply", "-f", "-", "--prune", "-l", "app=shop"],
        Some(&manifest("web", 5)),
    );
    assert_eq!(text(&o), "service/web unchanged\nservice/db pruned\n");

    let o = shoal(&s, &["delete", "service", "web"], None);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o), "service/web deleted\n");
    let o = shoal(&s, &["delete", "service", "web"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}

#[test]
fn invalid_manifest_exits_2_with_location() {
    let s = start();
    let o = shoal(
        &s,
        &["apply", "-f", "-"],
        Some("apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  bogus: 1\n"),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("<stdin>:6:") && err.contains("bogus"), "{err}");
    let o = shoal(&s, &["get", "services", "-o", "json"], None);
    assert_eq!(text(&o).trim(), "[]");
}

#[test]
fn rollout_status_times_out_without_a_controller() {
    let s = start();
    shoal(&s, &["apply", "-f", "-"], Some(&manifest("web", 1)));
    let o = shoal(&s, &["rollout", "status", "web", "--timeout", "1s"], None);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("timed out"));
}

#[test]
fn unreachable_server_is_a_clear_failure() {
    let o = Command::new(BIN)
        .args(["get", "services", "--server", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the Shoal API"));
}

#[test]
fn rollout_undo_without_a_previous_spec_fails_clearly() {
    let s = start();
    shoal(&s, &["apply", "-f", "-"], Some(&manifest("web", 1)));
    let o = shoal(&s, &["rollout", "undo", "web"], None);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("no previous spec"));
    let o = shoal(&s, &["rollout", "undo", "nope"], None);
    assert_eq!(o.status.code(), Some(1));
}

/// The embedded store serves one process: a second process opening it is refused at once with
/// a message saying what `file://` is for, instead of waiting and failing obscurely.
#[test]
fn a_second_process_on_a_file_store_is_refused_clearly() {
    let s = start();
    let started = std::time::Instant::now();
    let o = Command::new(BIN)
        .args(["controller", "--store", &s.store])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    println!("second opener refused after {:?}", started.elapsed());
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains("one process only (`shoal dev`)"), "{err}");
}

/// `apply -n NS` puts documents without a namespace into NS, and `--prune` then deletes only in
/// NS: a pipeline applying one team's namespace never touches another's.
#[test]
fn apply_honours_namespace_and_prunes_only_inside_it() {
    let s = start();
    let o = shoal(&s, &["apply", "-f", "-"], Some(&manifest("web", 1)));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = shoal(
        &s,
        &["apply", "-n", "shop", "-f", "-"],
        Some(&manifest("db", 1)),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(text(&o), "service/shop/db created\n");
    let o = shoal(
        &s,
        &[
            "apply", "-n", "shop", "--prune", "-l", "app=shop", "-f", "-",
        ],
        Some(&manifest("cache", 1)),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        text(&o),
        "service/shop/cache created\nservice/shop/db pruned\n"
    );
    let o = shoal(&s, &["get", "services", "-o", "json"], None);
    assert!(
        text(&o).contains("\"web\""),
        "default/web survives: {}",
        text(&o)
    );
    let o = shoal(&s, &["get", "services", "-n", "shop", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["name"], "cache");
}

/// A YAML list or a JSON array of services (valid manifests) applies one service per element.
#[test]
fn apply_takes_a_list_of_services() {
    let s = start();
    let dir = tempfile::tempdir().unwrap();
    let list = "- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: a}\n  spec: {image: nginx}\n- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: b}\n  spec: {image: redis}\n";
    let json = r#"[{"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"c"},"spec":{"image":"nginx"}},
  {"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"d"},"spec":{"image":"redis"}}]"#;
    std::fs::write(dir.path().join("list.yaml"), list).unwrap();
    std::fs::write(dir.path().join("list.json"), json).unwrap();
    let o = shoal(&s, &["apply", "-f", dir.path().to_str().unwrap()], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        text(&o),
        "service/c created\nservice/d created\nservice/a created\nservice/b created\n"
    );
    let o = shoal(&s, &["diff", "-f", dir.path().to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// The README's exit code table, row by row: 0 success, 1 a verdict, 2 invalid input,
/// 3 timeout, 4 API unreachable.
#[test]
fn exit_codes_follow_the_table() {
    let s = start();
    let web = manifest("web", 1);
    let bad = "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  replica: 1\n";
    // 0: success, no difference.
    assert_eq!(code(&shoal(&s, &["apply", "-f", "-"], Some(&web))), Some(0));
    assert_eq!(code(&shoal(&s, &["diff", "-f", "-"], Some(&web))), Some(0));
    assert_eq!(
        code(&shoal(&s, &["validate", "-f", "-"], Some(&web))),
        Some(0)
    );
    assert_eq!(code(&shoal(&s, &["get", "services"], None)), Some(0));
    // 1: a verdict — a difference, a service that does not exist.
    assert_eq!(
        code(&shoal(&s, &["diff", "-f", "-"], Some(&manifest("web", 3)))),
        Some(1)
    );
    assert_eq!(
        code(&shoal(&s, &["delete", "service", "nope"], None)),
        Some(1)
    );
    // 2: invalid input — manifests, flags, arguments — for every command alike.
    for args in [
        &["validate", "-f", "-"][..],
        &["apply", "-f", "-"],
        &["diff", "-f", "-"],
    ] {
        let o = shoal(&s, args, Some(bad));
        assert_eq!(
            code(&o),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(
        code(&shoal(&s, &["get", "services", "--bogus"], None)),
        Some(2)
    );
    assert_eq!(code(&shoal(&s, &["delete"], None)), Some(2));
    assert_eq!(
        code(&shoal(&s, &["apply", "-f", "/nonexistent.yaml"], None)),
        Some(2)
    );
    // 3: timeout (no controller runs here, so nothing converges).
    let o = shoal(
        &s,
        &["apply", "-f", "-", "--wait", "--timeout", "1s"],
        Some(&web),
    );
    assert_eq!(code(&o), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    // 4: the API cannot be reached — never mistaken for a difference or a failure.
    for args in [
        &["get", "services"][..],
        &["diff", "-f", "-"],
        &["apply", "-f", "-"],
        &["rollout", "status", "web"],
    ] {
        let o = Command::new(BIN)
            .args(args)
            .args(["--server", "http://127.0.0.1:1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(web.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            code(&o),
            Some(4),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `apply --wait` rides out an API that goes away: it keeps asking until its timeout (exit 3)
/// instead of calling the rollout failed.
#[test]
fn apply_wait_retries_an_unreachable_api_until_the_timeout() {
    let mut s = start();
    let mut c = Command::new(BIN)
        .args(["apply", "-f", "-", "--wait", "--timeout", "3s"])
        .env("SHOAL_SERVER", &s.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(manifest("web", 1).as_bytes())
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "service/web created\n");
    s.api.child.kill().unwrap();
    s.api.child.wait().unwrap();
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("timed out") && err.contains("API unavailable"),
        "{err}"
    );
}

/// Sums the API's request counter for one route and method from its `/metrics` text.
fn requests(metrics: &str, route: &str, method: &str) -> u64 {
    let labels = [("route", route), ("method", method)];
    shoal_tests::metrics::sum(metrics, "shoal_api_requests_total", &labels) as u64
}

/// `apply --wait` follows the API's watch: it rides out the API going away and coming back
/// (as `shoal dev`, with a controller and an agent, on the same store and address), sees the
/// service converge on the new stream, and never asks for the service's status by polling.
#[test]
fn apply_wait_follows_the_watch_across_an_api_restart_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    // First only the API, on the store `shoal dev` uses: nothing converges yet.
    let mut api = Command::new(BIN)
        .args(["api", "--listen", &listen, "--store"])
        .arg(format!("file://{}", data.join("store").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(api.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let manifest = "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: sleeper\nspec:\n  runtime: process\n  command: [sleep, \"600\"]\n  replicas: 2\n  stopGracePeriod: 1s\n";
    let started = std::time::Instant::now();
    let mut wait = Command::new(BIN)
        .args(["apply", "-f", "-", "--wait", "--timeout", "120s"])
        .env("SHOAL_SERVER", &url)
        .env_remove("SHOAL_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait.stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let mut out = BufReader::new(wait.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "service/sleeper created\n");
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    assert!(second.contains("waiting for the controller"), "{second}");
    api.kill().unwrap();
    api.wait().unwrap();
    // The API comes back, now with a controller and an agent.
    let mut dev = Command::new(BIN)
        .args([
            "dev",
            "--runtime",
            "process",
            "--node-id",
            "wait-watch-node",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let o = wait.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let metrics = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(format!("{url}/metrics")).await?.text().await })
        .unwrap_or_default();
    let _ = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status();
    let _ = dev.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{first}{second}{rest}\n{err}");
    assert!(rest.contains("service/sleeper: converged"), "{rest}");
    println!("apply --wait converged {elapsed:?} after the apply, across one API restart");
    let status_gets = requests(&metrics, "/v1/services/{ns}/{name}/status", "GET");
    let watches = requests(&metrics, "/v1/watch", "GET");
    println!("after the restart: {watches} watch request(s), {status_gets} status GET(s)");
    assert!(watches >= 1, "the wait reopened the watch:\n{metrics}");
    assert_eq!(status_gets, 0, "the wait polled the status:\n{metrics}");
}

/// `get services --watch` prints again when the service changes (it follows the watch),
/// reads nothing while nothing changes, and carries on after the API restarts.
#[test]
fn get_watch_prints_changes_and_reads_nothing_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let start_dev = || {
        Command::new(BIN)
            .args(["dev", "--runtime", "process", "--node-id", "get-watch-node"])
            .arg("--data-dir")
            .arg(dir.path().join("dev"))
            .args(["--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stop_dev = |dev: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-INT", &dev.id().to_string()])
            .status();
        let _ = dev.wait();
    };
    // Up once its node is registered and ready.
    let dev_ready = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let o = shoal_at(&url, &["get", "nodes"], None);
            if text(&o)
                .lines()
                .any(|l| l.starts_with("get-watch-node") && l.contains(" Ready"))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shoal dev did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let mut dev = start_dev();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = || {
        rt.block_on(async { reqwest::get(format!("{url}/metrics")).await?.text().await })
            .unwrap_or_default()
    };
    dev_ready();
    let sleeper = |replicas: u64| {
        format!(
            "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: sleeper\nspec:\n  runtime: process\n  command: [sleep, \"600\"]\n  replicas: {replicas}\n  stopGracePeriod: 1s\n"
        )
    };
    let o = shoal_at(&url, &["apply", "-f", "-", "--wait"], Some(&sleeper(1)));
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let mut watch = Command::new(BIN)
        .args(["get", "services", "sleeper", "--watch"])
        .env("SHOAL_SERVER", &url)
        .env_remove("SHOAL_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_line = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("sleeper") && l.contains(want) => return,
                Ok(_) => {}
                Err(e) => panic!("no line with {want:?}: {e}"),
            }
        }
    };
    wait_line("1/1");
    // Idle: the watch is open, nothing changes, nothing is read.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = requests(&metrics(), "/v1/services/{ns}/{name}", "GET");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = requests(&metrics(), "/v1/services/{ns}/{name}", "GET");
    println!(
        "get --watch read the service {} time(s) in 3 s idle",
        after - before
    );
    assert_eq!(before, after, "get --watch polled while nothing changed");
    let changed = std::time::Instant::now();
    let o = shoal_at(&url, &["scale", "sleeper=2"], None);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    wait_line("2/2");
    println!(
        "get --watch printed 2/2 {:?} after the scale",
        changed.elapsed()
    );
    // The API goes away and comes back: the watch is reopened and the next change printed.
    stop_dev(&mut dev);
    dev = start_dev();
    dev_ready();
    let o = shoal_at(&url, &["scale", "sleeper=3"], None);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    wait_line("3/3");
    let _ = watch.kill();
    let _ = watch.wait();
    stop_dev(&mut dev);
}
