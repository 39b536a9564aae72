//! The long-running commands as an operator runs them: signals, the `/metrics` and `/healthz`
//! endpoints of `shoal controller` and `shoal agent`, JSON-only logs, and no secret in logs.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::process::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// A server process killed if the test ends early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shoal runs"),
    )
}

/// The last word of the first stdout line that names a URL: the URL the process serves on
/// (an agent first prints its node address).
fn first_url(p: &mut Proc) -> String {
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("no URL printed; stdout was {seen:?}");
        }
        let word = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        if word.starts_with("http://") {
            assert!(word.starts_with("http://127.0.0.1:"), "line {line:?}");
            return word;
        }
        seen.push(line);
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits (generously) for the process to end; returns its exit code and stderr.
fn finish(mut p: Proc) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the process did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), err)
}

/// A plain HTTP/1.0 GET: status line and body.
fn get(url: &str, path: &str) -> (String, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn store(dir: &tempfile::TempDir) -> String {
    format!("file://{}", dir.path().join("store").display())
}

#[test]
fn api_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(&["api", "--store", &store(&dir), "--listen", "127.0.0.1:0"]);
    first_url(&mut p);
    signal(&p, "-TERM");
    let (code, err) = finish(p);
    assert_eq!(code, Some(0), "SIGTERM is a clean stop: {err}");
}

#[test]
fn controller_serves_metrics_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(&[
        "controller",
        "--store",
        &store(&dir),
        "--listen",
        "127.0.0.1:0",
    ]);
    let url = first_url(&mut p);
    assert_eq!(thp_enabled(&p), "0", "the controller turns huge pages off");
    let (status, body) = get(&url, "/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, body) = get(&url, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("shoal_controller_"), "{body}");
    signal(&p, "-TERM");
    let (code, err) = finish(p);
    assert_eq!(code, Some(0), "{err}");
}

/// `shoal agent` on the embedded store in `dir`, serving on a free loopback port.
fn spawn_agent(dir: &tempfile::TempDir, node: &str, runtime: &str, extra: &[&str]) -> Proc {
    let store = store(dir);
    let data = dir.path().join("agent");
    let mut args = vec![
        "agent",
        "--store",
        &store,
        "--node-id",
        node,
        "--runtime",
        runtime,
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

#[test]
fn agent_serves_metrics_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_agent(&dir, "metrics-node", "sim", &["--role", "manager"]);
    let url = first_url(&mut p);
    assert_eq!(
        thp_enabled(&p),
        "0",
        "a sim agent turns transparent huge pages off"
    );
    let (status, _) = get(&url, "/healthz");
    assert!(status.contains("200"), "{status}");
    let (_, body) = get(&url, "/metrics");
    assert!(
        body.contains("shoal_agent_info{")
            && body.contains("node=\"metrics-node\"")
            && body.contains("role=\"manager\""),
        "{body}"
    );
    signal(&p, "-TERM");
    let (code, err) = finish(p);
    assert_eq!(code, Some(0), "{err}");
}

/// `THP_enabled` of the process's `/proc/<pid>/status`: "0" once transparent huge pages are
/// off for it.
fn thp_enabled_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("the kernel reports THP_enabled")
        .trim()
        .to_string()
}

fn thp_enabled(p: &Proc) -> String {
    thp_enabled_of(p.0.id())
}

#[test]
fn an_agent_running_host_processes_leaves_huge_pages_to_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_agent(&dir, "process-node", "process", &[]);
    first_url(&mut p);
    // Its tasks would inherit the setting: it stays as the agent found it.
    assert_eq!(thp_enabled(&p), thp_enabled_of(std::process::id()));
    signal(&p, "-TERM");
    let (code, err) = finish(p);
    assert_eq!(code, Some(0), "{err}");
}

/// The system's transparent huge page mode: the bracketed word of
/// `/sys/kernel/mm/transparent_hugepage/enabled` (`always`, `madvise` or `never`).
fn thp_mode() -> String {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .expect("the kernel reports its transparent huge page mode");
    let start = text.find('[').expect("a bracketed mode") + 1;
    let end = text[start..].find(']').expect("a bracketed mode") + start;
    text[start..end].to_string()
}

/// Kilobytes of `AnonHugePages` in the process's `/proc/<pid>/smaps_rollup`.
fn anon_huge_pages_kb(p: &Proc) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", p.0.id()))
        .expect("proc smaps_rollup");
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("the kernel reports AnonHugePages")
}

/// Size of section `name` of the `shoal` binary, as `readelf` lists it.
fn section_size(name: &str) -> Option<u64> {
    let text = binutils("readelf", &["--section-headers", "--wide"]);
    // `[Nr] Name Type Address Off Size ...`: the size is the fourth field after the name.
    text.lines().find_map(|l| {
        let mut fields = l.split(']').nth(1)?.split_whitespace();
        (fields.next()? == name).then_some(())?;
        u64::from_str_radix(fields.nth(3)?, 16).ok()
    })
}

#[test]
fn shoal_carries_its_relocations_packed() {
    // A position-independent binary's relative relocations took 1.3 MB as `.rela.dyn`
    // entries, read at every process's start and kept mapped (in each hollow agent too);
    // packed (`DT_RELR`) they take a few kilobytes.
    let rela = section_size(".rela.dyn").unwrap_or(0);
    let relr = section_size(".relr.dyn").expect("a .relr.dyn section");
    eprintln!(".rela.dyn {rela} bytes, .relr.dyn {relr} bytes");
    assert!(rela < 64 * 1024, ".rela.dyn is {rela} bytes");
    assert!(relr > 0);
}

#[test]
fn shoal_places_its_hot_functions_first() {
    // The functions an agent and a controller run (`link/hot-functions.txt`) are linked
    // together at the start of the code: the kernel maps 64 KB around each page of code a
    // process touches, and spread over the whole binary they kept 10.5 MB of an idle agent's
    // code resident; together, 3 MB. The list names the release build's functions; this
    // build has fewer of them (other symbol hashes), and those must come first, in order.
    let hot: Vec<&str> = include_str!("../link/hot-functions.txt").lines().collect();
    let listed: HashSet<&str> = hot.iter().copied().collect();
    let code = functions_by_address();
    let mut first_at: HashMap<&str, u64> = HashMap::new();
    for (address, name) in &code {
        first_at.entry(name.as_str()).or_insert(*address);
    }
    let placed: Vec<(&str, u64)> = hot
        .iter()
        .filter_map(|f| Some((*f, *first_at.get(f)?)))
        .collect();
    eprintln!("{} of the listed functions are in this build", placed.len());
    let Some(&(_, end)) = placed.last() else {
        panic!("none of link/hot-functions.txt is in {BIN}")
    };
    let out_of_order: Vec<_> = placed.windows(2).filter(|w| w[0].1 > w[1].1).collect();
    assert!(
        out_of_order.is_empty(),
        "{} of {} listed functions out of the list's order, first {:?}",
        out_of_order.len(),
        placed.len(),
        out_of_order.first()
    );
    // Aliases of a placed function share its address; anything else before the last one
    // was placed among them.
    let at: HashSet<u64> = placed.iter().map(|(_, a)| *a).collect();
    let among: Vec<&str> = code
        .iter()
        .filter(|(a, n)| *a < end && !at.contains(a) && !listed.contains(n.as_str()))
        .map(|(_, n)| n.as_str())
        .collect();
    assert!(
        among.is_empty(),
        "{} unlisted functions among the listed ones, first {:?}",
        among.len(),
        among.first()
    );
}

/// The `shoal` binary's functions (address, name) in address order, as `nm` lists them.
fn functions_by_address() -> Vec<(u64, String)> {
    // `ADDRESS TYPE NAME`: functions are of type t or T (w or W when weak).
    binutils("nm", &["--numeric-sort", "--defined-only"])
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (address, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            let address = u64::from_str_radix(address, 16).ok()?;
            matches!(kind, "t" | "T" | "w" | "W").then(|| (address, name.to_string()))
        })
        .collect()
}

/// What binutils' `tool` prints about the `shoal` binary given `args`.
fn binutils(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(BIN)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool} runs (binutils, which Cargo's C toolchain installs): {e}")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn shoal_does_not_ask_for_huge_pages_for_its_heap() {
    // The allocator used to advise huge pages on the memory it reserves: a sim agent got a
    // 2 MiB page for the allocations made before `main` turned them off, and an agent
    // running host processes (which leaves the setting as it found it) one per 2 MiB of
    // heap touched. Where huge pages are only given on request (`madvise`, the usual
    // default) or never, no Shoal process holds one; with `always` the kernel gives them
    // to any process that has not turned them off.
    let mode = thp_mode();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = spawn_agent(&dir, "thp-sim", "sim", &[]);
    first_url(&mut sim);
    let other = tempfile::tempdir().unwrap();
    let mut process = spawn_agent(&other, "thp-process", "process", &[]);
    first_url(&mut process);
    let (sim_kb, process_kb) = (anon_huge_pages_kb(&sim), anon_huge_pages_kb(&process));
    eprintln!("huge pages ({mode}): sim agent {sim_kb} kB, process agent {process_kb} kB");
    if mode == "always" {
        // Only turning them off is Shoal's to check here.
        assert_eq!(thp_enabled(&sim), "0", "a sim agent turns huge pages off");
    } else {
        assert_eq!(sim_kb, 0, "a sim agent holds huge pages ({mode})");
        assert_eq!(process_kb, 0, "a process agent holds huge pages ({mode})");
    }
    for p in [sim, process] {
        signal(&p, "-TERM");
        let (code, err) = finish(p);
        assert_eq!(code, Some(0), "{err}");
    }
}

#[test]
fn dev_with_json_logs_prints_only_json() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let p = Proc(
        Command::new(BIN)
            .args(["--log-format", "json", "dev", "--runtime", "process"])
            .args(["--node-id", "json-node", "--listen", &listen])
            .arg("--data-dir")
            .arg(dir.path().join("dev"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Up once the API answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "shoal dev did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&p, "-INT");
    let (code, err) = finish(p);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("API on http://"), "{err}");
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON line: {line:?}"
        );
    }
}

/// A Consul ACL token given in the store URL appears in no log line, at any level.
#[test]
fn a_consul_token_in_the_store_url_is_never_logged() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens: the controller keeps failing and logging.
    let url = format!("consul://{addr}?token=s3cr3t-t0ken");
    let p = spawn(&["controller", "--store", &url]);
    std::thread::sleep(Duration::from_secs(2));
    signal(&p, "-TERM");
    let (_, err) = finish(p);
    assert!(
        err.contains(&addr.to_string()) || !err.is_empty(),
        "some log: {err}"
    );
    assert!(!err.contains("s3cr3t-t0ken"), "the token leaked: {err}");
}
