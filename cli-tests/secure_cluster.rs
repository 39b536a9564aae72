//! A secured cluster end to end, with the `shoal` binary: etcd over TLS with client
//! certificates, authentication on and JWT tokens that expire every 2 s; `shoal rbac apply`
//! makes the users; a controller, an API (TLS, hashed tokens) and two agents (one logging in
//! with a password, one with its certificate's common name) run a service with their own
//! credentials. An agent's credentials are refused everything that is not its own; the
//! cluster keeps converging past several token expiries and across an `rbac apply` that adds
//! a third node; and nothing secret reaches Shoal's logs at `RUST_LOG=trace`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::Keys;
use shoal_store::{Store, StoreError, StoreOptions};
use shoal_tests::consul_fake::{ConsulFake, FakeOptions};
use shoal_tests::etcd::{EtcdFixture, EtcdSecurity};
use shoal_tests::pki::{CertFiles, Pki};

const BIN: &str = env!("CARGO_BIN_EXE_shoal");
const JWT_TTL: Duration = Duration::from_secs(2);
const ACL_TOKEN: &str = "acl-5d1c0e7a-8f7e-4c55-9a63-secret";

/// One long-running `shoal` process; its stderr (the logs) goes to a file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cluster under test: etcd, its CA, the password directory and the processes.
struct Cluster {
    etcd: EtcdFixture,
    pki: Arc<Pki>,
    dir: tempfile::TempDir,
    creds: PathBuf,
    consul: ConsulFake,
    procs: Vec<Proc>,
    api_url: Option<String>,
}

impl Cluster {
    /// `--store …` flags for `user` (password from the rbac output) with a client certificate
    /// (etcd requires one from every client); `None` logs in with the certificate alone.
    fn store_flags(&self, cert: &CertFiles, user: Option<&str>) -> Vec<String> {
        let mut f = vec![
            "--store".to_string(),
            self.etcd.url(),
            "--store-ca".into(),
            path(&self.pki.ca_file()),
            "--store-cert".into(),
            path(&cert.cert),
            "--store-key".into(),
            path(&cert.key),
        ];
        if let Some(user) = user {
            f.extend([
                "--store-user".into(),
                user.to_string(),
                "--store-password-file".into(),
                path(&self.creds.join(format!("{user}.password"))),
            ]);
        }
        f
    }

    fn root_flags(&self) -> Vec<String> {
        let cert = self.pki.client("shoal-admin");
        let mut f = self.store_flags(&cert, None);
        f.extend([
            "--store-user".into(),
            "root".into(),
            "--store-password-file".into(),
            path(&self.etcd.root_password_file().expect("root password")),
        ]);
        f
    }

    fn rbac_apply(&self, nodes: &str) -> String {
        let mut args = vec!["rbac".to_string(), "apply".into()];
        args.extend(self.root_flags());
        args.extend([
            "--nodes".into(),
            nodes.into(),
            "--out".into(),
            path(&self.creds),
        ]);
        let o = self.run("rbac-apply", &args, &[]);
        assert!(o.status.success(), "rbac apply: {}", stderr(&o));
        stdout(&o)
    }

    /// Runs a short `shoal` command at trace level, keeping its logs with the others.
    fn run(&self, name: &str, args: &[String], env: &[(&str, &str)]) -> Output {
        let log = self
            .dir
            .path()
            .join(format!("{name}-{}.log", self.procs.len()));
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("RUST_LOG", "trace")
            .env_remove("SHOAL_TOKEN")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("run shoal");
        std::fs::write(&log, &o.stderr).expect("write log");
        o
    }

    fn spawn(&mut self, name: &str, args: Vec<String>, env: &[(&str, &str)]) -> &mut Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env("RUST_LOG", "trace")
            .env_remove("SHOAL_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn shoal");
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        self.procs.last_mut().expect("just pushed")
    }

    fn agent(&mut self, node: &str, password: bool) {
        let cert = self.pki.client(&format!("shoal-agent-{node}"));
        let user = format!("shoal-agent-{node}");
        let mut args = vec!["agent".to_string()];
        args.extend(self.store_flags(&cert, password.then_some(user.as_str())));
        let data = self.dir.path().join(format!("agent-{node}"));
        args.extend([
            "--node-id".into(),
            node.into(),
            "--runtime".into(),
            "process".into(),
            "--data-dir".into(),
            path(&data),
            "--lease-ttl".into(),
            "3s".into(),
            "--consul".into(),
            self.consul.addr().to_string(),
        ]);
        self.spawn(
            &format!("agent-{node}"),
            args,
            &[("CONSUL_HTTP_TOKEN", ACL_TOKEN)],
        );
    }

    /// A client command against the API over TLS with `token`.
    fn client(&self, token: &str, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--server".into(),
            self.api_url.clone().expect("API started"),
            "--ca".into(),
            path(&self.pki.ca_file()),
        ]);
        self.run("client", &all, &[("SHOAL_TOKEN", token)])
    }

    fn tasks(&self, token: &str) -> Vec<(String, String)> {
        let o = self.client(token, &["get", "tasks", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| {
                        t.pointer("/status/state").and_then(|s| s.as_str()) == Some("running")
                    })
                    .map(|t| {
                        let s = |p: &str| {
                            t.pointer(p)
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                                .to_string()
                        };
                        (s("/task/service/name"), s("/task/nodeId"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies the service with `replicas` and waits until it converges.
    fn deploy(&self, token: &str, replicas: u32) -> Duration {
        let manifest = self.dir.path().join("web.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  runtime: process\n  command: [sleep, \"600\"]\n  replicas: {replicas}\n  placement:\n    maxReplicasPerNode: 3\n  stopGracePeriod: 1s\n"
            ),
        )
        .unwrap();
        let start = Instant::now();
        let o = self.client(
            token,
            &[
                "apply",
                "-f",
                &path(&manifest),
                "--wait",
                "--timeout",
                "120s",
            ],
        );
        assert!(
            o.status.success(),
            "apply with {replicas} replicas: {}{}",
            stdout(&o),
            stderr(&o)
        );
        start.elapsed()
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out waiting for {what}");
}

fn per_node(tasks: &[(String, String)]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (_, node) in tasks {
        *m.entry(node.clone()).or_insert(0) += 1;
    }
    m
}

/// With `store`'s credentials, `key` may not be written.
async fn refused(store: &dyn Store, key: &str) {
    match store.put(key, b"{}".to_vec(), None).await {
        Err(StoreError::PermissionDenied(m)) => assert!(m.contains("permission denied"), "{m}"),
        other => panic!("writing {key} with an agent's credentials: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secured_cluster_runs_with_least_privilege_and_leaks_nothing() {
    let pki = Arc::new(Pki::new("shoal e2e CA"));
    let mut etcd = EtcdFixture::start_with(EtcdSecurity {
        tls: Some(pki.clone()),
        client_cert_auth: true,
        jwt_ttl: Some(JWT_TTL),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    etcd.enable_auth().await.expect("etcd auth on");
    let consul = ConsulFake::start_with(FakeOptions {
        acl_token: Some(ACL_TOKEN.to_string()),
        ..FakeOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let mut c = Cluster {
        etcd,
        pki,
        creds,
        consul,
        procs: Vec::new(),
        api_url: None,
        dir,
    };

    let out = tokio::task::block_in_place(|| c.rbac_apply("n1,n2"));
    assert!(out.contains("user shoal-agent-n2 created"), "{out}");

    // API tokens: created with the CLI, printed once.
    let tokens = c.dir.path().join("tokens");
    let create = |role: &str| {
        let o = c.run(
            "token",
            &[
                "token".into(),
                "create".into(),
                "--file".into(),
                path(&tokens),
                "--role".into(),
                role.into(),
            ],
            &[],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_string()
    };
    let admin = tokio::task::block_in_place(|| create("admin"));
    let read = tokio::task::block_in_place(|| create("read"));

    // Controller, API, two agents, each with its own credentials.
    let controller_cert = c.pki.client("shoal-controller");
    let mut args = vec!["controller".to_string()];
    args.extend(c.store_flags(&controller_cert, Some("shoal-controller")));
    c.spawn("controller", args, &[]);
    let api_cert = c.pki.client("shoal-api");
    let serving = c.pki.server("api");
    let mut args = vec!["api".to_string()];
    args.extend(c.store_flags(&api_cert, Some("shoal-api")));
    args.extend([
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--token-file".into(),
        path(&tokens),
        "--tls-cert".into(),
        path(&serving.cert),
        "--tls-key".into(),
        path(&serving.key),
    ]);
    let api = c.spawn("api", args, &[]);
    let mut line = String::new();
    let stdout_pipe = api.child.stdout.take().expect("API stdout");
    tokio::task::block_in_place(|| {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout_pipe), &mut line)
    })
    .expect("API prints its address");
    let url = line
        .trim()
        .strip_prefix("shoal api listening on ")
        .unwrap_or_else(|| panic!("unexpected API output {line:?}"))
        .to_string();
    assert!(url.starts_with("https://"), "{url}");
    c.api_url = Some(url);
    c.agent("n1", true);
    c.agent("n2", false);

    let took = tokio::task::block_in_place(|| {
        wait_for("both nodes to register", || {
            let o = c.client(&read, &["get", "nodes", "-o", "json"]);
            let t = stdout(&o);
            o.status.success() && t.contains("\"n1\"") && t.contains("\"n2\"")
        })
    });
    println!("both agents registered in {took:?}");
    let took = tokio::task::block_in_place(|| c.deploy(&admin, 4));
    println!("4 replicas converged in {took:?}");
    let placed = tokio::task::block_in_place(|| per_node(&c.tasks(&read)));
    assert_eq!(placed.values().sum::<usize>(), 4, "{placed:?}");
    assert_eq!(placed.len(), 2, "both agents run tasks: {placed:?}");

    // A read token cannot change anything.
    let o = tokio::task::block_in_place(|| c.client(&read, &["scale", "web=1"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("read role"), "{}", stderr(&o));

    // With agent n1's credentials, etcd refuses everything that is not n1's.
    let keys = Keys::default();
    let agent_cert = c.pki.client("probe");
    let as_agent = shoal_store::open_store_with(
        &c.etcd.url(),
        &StoreOptions {
            ca: Some(c.pki.ca_file()),
            cert: Some(agent_cert.cert.clone()),
            key: Some(agent_cert.key.clone()),
            user: Some("shoal-agent-n1".into()),
            password_file: Some(c.creds.join("shoal-agent-n1.password")),
        },
    )
    .await
    .expect("open as agent n1");
    refused(&*as_agent, &keys.task("n1", "forged")).await;
    refused(&*as_agent, &keys.node("n2")).await;
    refused(&*as_agent, &keys.task_status("n2", "x")).await;
    refused(
        &*as_agent,
        &format!("{}default/evil", keys.services_prefix()),
    )
    .await;
    refused(&*as_agent, &keys.leader()).await;
    match as_agent.list(&keys.secrets_prefix()).await {
        Err(StoreError::PermissionDenied(_)) => {}
        other => panic!("an agent read secrets/: {other:?}"),
    }
    // Agent n2 logs in with its certificate alone: its common name is its user.
    let n2_cert = c.pki.client("shoal-agent-n2");
    let as_n2 = shoal_store::open_store_with(
        &c.etcd.url(),
        &StoreOptions {
            ca: Some(c.pki.ca_file()),
            cert: Some(n2_cert.cert),
            key: Some(n2_cert.key),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    refused(&*as_n2, &keys.node("n1")).await;

    // Past several token lifetimes, everything still works: scale up and converge.
    tokio::time::sleep(JWT_TTL * 3).await;
    let took = tokio::task::block_in_place(|| c.deploy(&admin, 6));
    println!("6 replicas converged in {took:?} after 3 JWT lifetimes");
    let placed = tokio::task::block_in_place(|| per_node(&c.tasks(&read)));
    assert_eq!(placed.values().sum::<usize>(), 6, "{placed:?}");

    // A third node: `rbac apply` changes users and roles, so every token in use goes stale.
    let out = tokio::task::block_in_place(|| c.rbac_apply("n1,n2,n3"));
    assert!(out.contains("user shoal-agent-n3 created"), "{out}");
    assert!(!out.contains("shoal-agent-n1 created"), "{out}");
    let mut args = vec!["rbac".to_string(), "show".into()];
    args.extend(c.root_flags());
    let o = tokio::task::block_in_place(|| c.run("rbac-show", &args, &[]));
    let shown = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        shown.lines().any(|l| l.starts_with("shoal-agent-n3")
            && l.contains("readwrite")
            && l.ends_with("/shoal/nodes/n3")),
        "{shown}"
    );
    assert!(!shown.contains("missing"), "{shown}");
    c.agent("n3", true);
    tokio::task::block_in_place(|| {
        wait_for("n3 to register", || {
            let o = c.client(&read, &["get", "nodes", "-o", "json"]);
            o.status.success() && stdout(&o).contains("\"n3\"")
        })
    });
    let took = tokio::task::block_in_place(|| c.deploy(&admin, 9));
    println!("9 replicas on 3 nodes converged in {took:?} after the auth change");
    let placed = tokio::task::block_in_place(|| per_node(&c.tasks(&read)));
    assert_eq!(
        placed,
        [
            ("n1".to_string(), 3),
            ("n2".to_string(), 3),
            ("n3".to_string(), 3)
        ]
        .into(),
        "at most 3 per node puts work on the new node"
    );

    // Clean up: remove the service so the agents stop their processes, then stop everything.
    let o = tokio::task::block_in_place(|| c.client(&admin, &["delete", "service", "web"]));
    assert!(o.status.success(), "{}", stderr(&o));
    tokio::task::block_in_place(|| wait_for("the tasks to stop", || c.tasks(&read).is_empty()));
    let mut procs = std::mem::take(&mut c.procs);
    tokio::task::block_in_place(|| procs.iter_mut().for_each(Proc::stop));

    // No password, API token, etcd token or Consul ACL token in Shoal's logs.
    let mut secrets: Vec<(String, String)> = vec![
        ("Consul ACL token".into(), ACL_TOKEN.into()),
        (
            "root password".into(),
            c.etcd.root_password().unwrap().to_string(),
        ),
    ];
    for entry in std::fs::read_dir(&c.creds).unwrap() {
        let p = entry.unwrap().path();
        let password = std::fs::read_to_string(&p).unwrap().trim().to_string();
        secrets.push((path(&p), password));
    }
    for t in [&admin, &read] {
        secrets.push(("API token".into(), t.split_once('.').unwrap().1.to_string()));
    }
    let mut bytes = 0;
    for entry in std::fs::read_dir(c.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        bytes += text.len();
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} in {}", p.display());
        }
        // etcd issues JWTs; a JWT starts with the base64 of `{"alg":`.
        assert!(
            !text.contains("eyJhbGciOi"),
            "an etcd token in {}",
            p.display()
        );
    }
    for p in &procs {
        let text = std::fs::read_to_string(&p.log).unwrap();
        assert!(text.contains("TRACE"), "{} logged at trace level", p.name);
    }
    println!(
        "{bytes} bytes of trace logs checked for {} secrets",
        secrets.len()
    );
}

#[test]
fn the_api_refuses_cleartext_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let o = Command::new(BIN)
        .args([
            "token",
            "create",
            "--role",
            "admin",
            "--file",
            &path(&tokens),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let store = format!("file://{}", dir.path().join("store").display());
    // Refused before binding anything: no token file, then no TLS.
    for (extra, want) in [
        (vec![], "without TLS"),
        (vec!["--tls-cert", "/nonexistent"], "--tls-key"),
    ] {
        let mut args = vec!["api", "--store", &store, "--listen", "0.0.0.0:9"];
        args.extend(["--token-file", tokens.to_str().unwrap()]);
        args.extend(extra);
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    let o = Command::new(BIN)
        .args(["api", "--store", &store, "--listen", "0.0.0.0:9"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--token-file"), "{}", stderr(&o));
}
