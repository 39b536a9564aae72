//! Service networking end to end, with real processes: a real etcd, `shoal api`,
//! `shoal controller` and three `shoal agent`s on the docker runtime, each on its own
//! 127.0.0.0/8 address, with real containers from the resolver test image.
//!
//! What a user must see: a client task reaches a 3-replica backend by `backend` and
//! `backend.default`; a name outside `.shoal` is forwarded (to a resolver this test runs on
//! loopback, given as `--upstream-dns`); an unknown `.shoal` name does not exist; every backend
//! task serves and connections are spread over all of them; the routing mesh answers on all
//! three node addresses; a start-first rolling update and a scale-in lose no request made on
//! a new connection; after an agent is killed and started again, the client's requests
//! succeed again. Measured times are printed (`measured: ...`).

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::{
    Proc, docker_agent_args, log_tail, running_tasks, shoal_at, start_api, succeeded, wait_for,
};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use shoal_agent::test_support::{ContainerGuard, RESOLVER_IMAGE, ensure_resolver_image};
use shoal_tests::etcd::EtcdFixture;

const DEADLINE: Duration = Duration::from_secs(180);
/// The ingress port of the backend (answers on every node's own address).
const MESH_PORT: u16 = 28481;
/// What the test's upstream resolver answers for [`EXTERNAL_NAME`].
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 88, 77);
const EXTERNAL_NAME: &str = "outside.example";

/// What the server processes log.
const RUST_LOG: &str = "info,hickory_server=warn,shoal_agent::network=debug";

fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], log: &Path, stdout: Stdio) -> Proc {
    harness::spawn(args, log, stdout, RUST_LOG)
}

/// The upstream resolver the agents forward to: knows one external name.
#[derive(Clone)]
struct Upstream;

#[async_trait::async_trait]
impl RequestHandler for Upstream {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut rh: R,
    ) -> ResponseInfo {
        let b = MessageResponseBuilder::from_message_request(request);
        let info = request.request_info().expect("one query");
        let mut md = Metadata::response_from_request(info.metadata);
        let name = info.query.name().to_string();
        let mut answers = Vec::new();
        if name.trim_end_matches('.') == EXTERNAL_NAME {
            if info.query.query_type() == RecordType::A {
                answers.push(Record::from_rdata(
                    Name::from(info.query.name().clone()),
                    60,
                    RData::A(A(EXTERNAL_IP)),
                ));
            }
        } else {
            md.response_code = ResponseCode::NXDomain;
        }
        let r = b.build(
            md,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        rh.send_response(r).await.expect("answer sent")
    }
}

/// Runs the upstream resolver on `addr` (UDP) in a thread of its own.
fn start_upstream(addr: SocketAddr) {
    let sock = std::net::UdpSocket::bind(addr).expect("upstream resolver binds");
    sock.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut server = Server::new(Upstream);
            server.register_socket(tokio::net::UdpSocket::from_std(sock).unwrap());
            let _ = server.block_until_done().await;
        });
    });
}

struct Cluster {
    _etcd: EtcdFixture,
    url: String,
    nodes: Vec<(String, String)>,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
    _guards: Vec<ContainerGuard>,
}

impl Cluster {
    fn start() -> Cluster {
        ensure_resolver_image().unwrap_or_else(|e| panic!("this test needs Docker: {e}"));
        let etcd = EtcdFixture::start().expect("etcd starts (make deps installs it)");
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        // Addresses of our own: several runs (and other tests) share the host.
        let base = [127, 100 + (pid % 100) as u8, ((pid / 100) % 250) as u8];
        let upstream = SocketAddr::from(([base[0], base[1], base[2], 53], 5353));
        start_upstream(upstream);
        let store = etcd.url();
        let log = |n: &str| dir.path().join(format!("{n}.log"));
        let (api, url) = start_api(&store, &[], &log("api"), RUST_LOG);
        let controller_args = ["controller", "--store", &store, "--lease-ttl", "2s"];
        let controller = spawn(&controller_args, &log("controller"), Stdio::null());
        let mut procs = vec![api, controller];
        let mut nodes = Vec::new();
        let mut guards = Vec::new();
        for i in 1..=3u8 {
            let node = format!("net-{pid}-{i}");
            let address = Ipv4Addr::new(base[0], base[1], base[2], i).to_string();
            let guard = ContainerGuard::new(format!("io.shoal.node={node}"));
            guard.cleanup();
            guards.push(guard);
            let data = dir.path().join(format!("data-{i}"));
            let (upstream, listen) = (upstream.to_string(), format!("{address}:29464"));
            let extra = [
                "--lease-ttl",
                "3s",
                "--upstream-dns",
                &upstream,
                "--listen",
                &listen,
            ];
            let args = docker_agent_args(&store, &node, &address, &data, &extra);
            procs.push(spawn(&args, &log(&node), Stdio::null()));
            nodes.push((node, address));
        }
        Cluster {
            _etcd: etcd,
            url,
            nodes,
            procs,
            dir,
            _guards: guards,
        }
    }

    fn shoal(&self, args: &[&str], stdin: &str) -> Output {
        shoal_at(&self.url, None, args, stdin)
    }

    fn shoal_ok(&self, args: &[&str], stdin: &str) -> String {
        succeeded(args, &self.shoal(args, stdin))
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (_, body) = harness::http_get(&format!("{}{path}", self.url), None);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Running tasks of a service wanted running: (task id, container id, node id).
    fn running(&self, service: &str) -> Vec<(String, String, String)> {
        let tasks = self.json(&format!("/v1/tasks?service=default/{service}"));
        running_tasks(&tasks)
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        let context = || {
            let tails: Vec<String> = self.procs[2..]
                .iter()
                .map(|p| log_tail(&p.log, 15))
                .collect();
            format!(
                "logs in {}:\n{}",
                self.dir.path().display(),
                tails.join("\n---\n")
            )
        };
        wait_for(what, DEADLINE, context, f)
    }

    /// Runs `sh -c script` in the client's container.
    fn in_client(&self, script: &str) -> Option<String> {
        let (_, container, _) = self.running("client").into_iter().next()?;
        let out = Command::new("docker")
            .args(["exec", &container, "sh", "-c", script])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn backend(replicas: u32, version: &str) -> String {
    format!(
        r#"apiVersion: shoal/v1
kind: Service
metadata:
  name: backend
spec:
  image: {RESOLVER_IMAGE}
  replicas: {replicas}
  env: {{VERSION: "{version}"}}
  command: [sh, -c, "echo $HOSTNAME > /www/index.html; exec httpd -f -p 8080 -h /www"]
  ports: [{{target: 8080, published: {MESH_PORT}}}]
  stopGracePeriod: 2s
  update: {{order: start-first, parallelism: 1, monitor: 1s}}
"#
    )
}

const CLIENT: &str = r#"apiVersion: shoal/v1
kind: Service
metadata:
  name: client
spec:
  image: shoal-test/resolver:latest
  command: [sleep, "3600"]
  stopGracePeriod: 1s
"#;

/// One HTTP/1.0 request on a new connection; the body.
fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status_ok = resp
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    status_ok
        .then(|| {
            resp.split_once("\r\n\r\n")
                .map(|(_, b)| b.trim().to_string())
        })
        .flatten()
}

/// New connections through the mesh, round the node addresses, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let join = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let a = &addrs[i % addrs.len()];
                i += 1;
                match http_get(a) {
                    Some(_) => o.fetch_add(1, Ordering::Relaxed),
                    None => f.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Load {
            stop,
            ok,
            failed,
            join: Some(join),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

const FETCH: &str = "/usr/bin/wget -q -T 5 -O- http://";

#[test]
fn services_reach_each_other_by_name_balanced_and_published_ports_answer_on_every_node() {
    let c = Cluster::start();
    let started = Instant::now();
    c.shoal_ok(
        &["apply", "-f", "-"],
        &format!("{}---\n{CLIENT}", backend(3, "1")),
    );
    let backends = c.wait_for("3 backend tasks running", || {
        let r = c.running("backend");
        (r.len() == 3).then_some(r)
    });
    let first = c.wait_for("the client reaching the backend by name", || {
        c.in_client(&format!("{FETCH}backend:8080/"))
    });
    println!(
        "measured: first request by name answered {:.1}s after apply",
        started.elapsed().as_secs_f64()
    );
    assert!(!first.trim().is_empty());

    // describe shows the endpoints: address, names, and the three tasks receiving traffic.
    let d = c.wait_for("describe listing 3 receiving tasks", || {
        let d = c.shoal_ok(&["describe", "service", "backend"], "");
        (d.matches("Receiving:").count() == 3).then_some(d)
    });
    assert!(d.contains("Endpoints:     127."), "{d}");
    assert!(
        d.contains(&format!("ingress {MESH_PORT} on every node")),
        "{d}"
    );

    // A second service may not claim the same ingress port.
    let clash = c.shoal(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  image: {RESOLVER_IMAGE}\n  ports: [{{target: 80, published: {MESH_PORT}}}]\n"
        ),
    );
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(!clash.status.success());
    assert!(
        err.contains(&format!(
            "ingress port {MESH_PORT}/tcp is already published by service default/backend"
        )),
        "{err}"
    );

    // Both name forms, and the search-domain form.
    for name in ["backend", "backend.default", "backend.default.shoal"] {
        let body = c
            .in_client(&format!("{FETCH}{name}:8080/"))
            .unwrap_or_else(|| panic!("{name}:8080 answers"));
        assert!(!body.trim().is_empty(), "{name}");
    }
    // External names are forwarded; unknown Shoal names do not exist.
    let ext = c
        .in_client(&format!("/usr/bin/getent hosts {EXTERNAL_NAME}"))
        .expect("the external name resolves through the upstream resolver");
    assert!(ext.contains(&EXTERNAL_IP.to_string()), "{ext}");
    assert!(
        c.in_client("/usr/bin/getent hosts nope.default.shoal")
            .is_none()
    );
    assert!(c.in_client("/usr/bin/getent hosts nope.default").is_none());

    // Every backend task serves, from inside a task.
    let script = format!("i=0; while [ $i -lt 30 ]; do {FETCH}backend:8080/; i=$((i+1)); done");
    let seen = c.in_client(&script).expect("30 requests by name");
    let mut by_host: BTreeMap<String, usize> = BTreeMap::new();
    for l in seen.lines() {
        *by_host.entry(l.trim().to_string()).or_default() += 1;
    }
    let ids: Vec<String> = backends
        .iter()
        .map(|(_, cid, _)| cid[..12].to_string())
        .collect();
    for id in &ids {
        assert!(
            by_host.contains_key(id),
            "task container {id} served: {by_host:?}"
        );
    }

    // The mesh answers on all three node addresses; 300 connections spread over all tasks.
    let mesh: Vec<String> = c
        .nodes
        .iter()
        .map(|(_, a)| format!("{a}:{MESH_PORT}"))
        .collect();
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..300 {
        let body = c.wait_for("the mesh answering", || http_get(&mesh[i % 3]));
        *spread.entry(body).or_default() += 1;
    }
    println!("measured: 300 mesh connections per task: {spread:?}");
    // The agents count what they proxied.
    let metrics_addr = format!("{}:29464", c.nodes[0].1);
    let mut m = TcpStream::connect(&metrics_addr).expect("agent metrics listen");
    write!(m, "GET /metrics HTTP/1.0\r\nHost: {metrics_addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    m.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("shoal_agent_network_proxied_connections_total{service=\"default/backend\"}"),
        "{text}"
    );
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(
        spread.values().all(|&n| n >= 60),
        "each task ≥ 20%: {spread:?}"
    );

    // A start-first rolling update loses no request on a new connection.
    let load = Load::start(mesh.clone());
    let t = Instant::now();
    c.shoal_ok(
        &["apply", "-f", "-", "--wait", "--timeout", "150s"],
        &backend(3, "2"),
    );
    let updated = c.wait_for("3 new backend tasks", || {
        let r = c.running("backend");
        (r.len() == 3
            && r.iter()
                .all(|(id, _, _)| !backends.iter().any(|b| &b.0 == id)))
        .then_some(r)
    });
    std::thread::sleep(Duration::from_secs(1));
    let (ok, failed) = load.finish();
    println!(
        "measured: rolling update took {:.1}s, {ok} requests, {failed} failed",
        t.elapsed().as_secs_f64()
    );
    assert!(ok > 0);
    assert_eq!(failed, 0, "no request lost during the rolling update");

    // The new tasks all serve (the old ones left the endpoints).
    let new_ids: Vec<String> = updated
        .iter()
        .map(|(_, cid, _)| cid[..12].to_string())
        .collect();
    let t = Instant::now();
    c.wait_for("only new tasks answering", || {
        let seen: Vec<String> = (0..9).filter_map(|i| http_get(&mesh[i % 3])).collect();
        (seen.len() == 9 && seen.iter().all(|b| new_ids.contains(b))).then_some(())
    });
    println!(
        "measured: old tasks out of rotation {:.2}s after the rollout finished",
        t.elapsed().as_secs_f64()
    );

    // A scale-in loses no request either.
    let load = Load::start(mesh.clone());
    c.shoal_ok(
        &["apply", "-f", "-", "--wait", "--timeout", "150s"],
        &backend(1, "2"),
    );
    c.wait_for("one backend task", || {
        (c.running("backend").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failed) = load.finish();
    println!("measured: scale-in: {ok} requests, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0, "no request lost during the scale-in");

    // Kill the agent of the client's node and start it again: names work again.
    let (_, _, client_node) = c.running("client").into_iter().next().expect("client runs");
    let idx = 2 + c
        .nodes
        .iter()
        .position(|(n, _)| *n == client_node)
        .expect("client on one of our nodes");
    let mut c = c;
    let args = c.procs[idx].args.clone();
    let log = c.procs[idx].log.clone();
    let _ = c.procs[idx].child.kill();
    let _ = c.procs[idx].child.wait();
    assert!(
        c.in_client(&format!("{FETCH}backend:8080/")).is_none(),
        "names go with the agent"
    );
    let t = Instant::now();
    c.procs[idx] = spawn(&args, &log, Stdio::null());
    c.wait_for("the client reaching the backend again", || {
        c.in_client(&format!("{FETCH}backend:8080/"))
    });
    println!(
        "measured: names answer again {:.1}s after the agent restarted",
        t.elapsed().as_secs_f64()
    );
}
