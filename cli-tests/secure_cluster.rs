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
use shoal_tests::process::interrupt;
use shoal_tests::wait::blocking_eventually;

const BIN: &str = env!("CARGO_BIN_EXE_shoal");
/// How long a step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(90);
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
        interrupt(&mut self.child, Duration::from_secs(20));
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
            "--address".into(),
            "127.0.0.1".into(),
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

impl Cluster {
    /// etcd (TLS, client certificates, JWTs), a Consul agent wanting an ACL token, and the
    /// users of nodes n1 and n2.
    async fn new() -> Cluster {
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
        let c = Cluster {
            etcd,
            pki,
            creds: dir.path().join("creds"),
            consul,
            procs: Vec::new(),
            api_url: None,
            dir,
        };
        let out = tokio::task::block_in_place(|| c.rbac_apply("n1,n2"));
        assert!(out.contains("user shoal-agent-n2 created"), "{out}");
        c
    }

    fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// `shoal token create --role ROLE`: the token it prints.
    fn create_token(&self, role: &str) -> String {
        let args = [
            "token",
            "create",
            "--file",
            &path(&self.tokens()),
            "--role",
            role,
        ];
        let o = self.run("token", &args.map(String::from), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_string()
    }

    /// The controller and the API (TLS) with their own credentials.
    fn start_control_plane(&mut self) {
        let cert = self.pki.client("shoal-controller");
        let mut args = vec!["controller".to_string()];
        args.extend(self.store_flags(&cert, Some("shoal-controller")));
        self.spawn("controller", args, &[]);
        let cert = self.pki.client("shoal-api");
        let serving = self.pki.server("api");
        let mut args = vec!["api".to_string()];
        args.extend(self.store_flags(&cert, Some("shoal-api")));
        args.extend(
            [
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                &path(&self.tokens()),
                "--tls-cert",
                &path(&serving.cert),
                "--tls-key",
                &path(&serving.key),
            ]
            .map(String::from),
        );
        let api = self.spawn("api", args, &[]);
        let pipe = api.child.stdout.take().expect("API stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(pipe), &mut line)
            .expect("API prints its address");
        let url = line
            .trim()
            .strip_prefix("shoal api listening on ")
            .unwrap_or_else(|| panic!("unexpected API output {line:?}"))
            .to_string();
        assert!(url.starts_with("https://"), "{url}");
        self.api_url = Some(url);
    }

    /// Waits until `node` is registered.
    fn wait_node(&self, token: &str, node: &str) -> Duration {
        blocking_eventually(&format!("{node} to register"), DEADLINE, || {
            let o = self.client(token, &["get", "nodes", "-o", "json"]);
            o.status.success() && stdout(&o).contains(&format!("\"{node}\""))
        })
    }

    /// Opens the store as a component would, with `user`'s password.
    async fn open_as(&self, user: Option<&str>, cert: CertFiles) -> Arc<dyn Store> {
        let options = StoreOptions {
            ca: Some(self.pki.ca_file()),
            cert: Some(cert.cert),
            key: Some(cert.key),
            user: user.map(str::to_string),
            password_file: user.map(|u| self.creds.join(format!("{u}.password"))),
        };
        shoal_store::open_store_with(&self.etcd.url(), &options)
            .await
            .expect("open the store")
    }

    /// Every secret of the run: passwords, API token secrets, the ACL token.
    fn secrets(&self, api_tokens: &[&str]) -> Vec<(String, String)> {
        let mut secrets: Vec<(String, String)> = vec![
            ("Consul ACL token".into(), ACL_TOKEN.into()),
            (
                "root password".into(),
                self.etcd.root_password().unwrap().into(),
            ),
        ];
        for entry in std::fs::read_dir(&self.creds).unwrap() {
            let p = entry.unwrap().path();
            let password = std::fs::read_to_string(&p).unwrap().trim().to_string();
            secrets.push((path(&p), password));
        }
        for t in api_tokens {
            secrets.push(("API token".into(), t.split_once('.').unwrap().1.to_string()));
        }
        secrets
    }

    /// Checks every log of the run for `secrets` and for etcd JWTs; returns the bytes read.
    fn assert_logs_hold_no(&self, secrets: &[(String, String)]) -> usize {
        let mut bytes = 0;
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            bytes += text.len();
            for (what, secret) in secrets {
                assert!(!text.contains(secret.as_str()), "{what} in {}", p.display());
            }
            // A JWT starts with the base64 of `{"alg":`.
            assert!(
                !text.contains("eyJhbGciOi"),
                "an etcd token in {}",
                p.display()
            );
        }
        bytes
    }
}

/// With agent n1's credentials etcd refuses everything that is not n1's; agent n2 logs in with
/// its certificate's common name and is confined the same way.
async fn check_agents_are_confined(c: &Cluster) {
    let keys = Keys::default();
    let n1 = c
        .open_as(Some("shoal-agent-n1"), c.pki.client("probe"))
        .await;
    refused(&*n1, &keys.task("n1", "forged")).await;
    refused(&*n1, &keys.node("n2")).await;
    refused(&*n1, &keys.task_status("n2", "x")).await;
    refused(&*n1, &format!("{}default/evil", keys.services_prefix())).await;
    refused(&*n1, &keys.leader()).await;
    match n1.list(&keys.secrets_prefix()).await {
        Err(StoreError::PermissionDenied(_)) => {}
        other => panic!("an agent read secrets/: {other:?}"),
    }
    let n2 = c.open_as(None, c.pki.client("shoal-agent-n2")).await;
    refused(&*n2, &keys.node("n1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secured_cluster_runs_with_least_privilege_and_leaks_nothing() {
    let mut c = Cluster::new().await;
    let (admin, read) = tokio::task::block_in_place(|| {
        let tokens = (c.create_token("admin"), c.create_token("read"));
        c.start_control_plane();
        c.agent("n1", true);
        c.agent("n2", false);
        let took = c.wait_node(&tokens.1, "n1") + c.wait_node(&tokens.1, "n2");
        println!("n1 and n2 registered in {took:?}");
        tokens
    });
    tokio::task::block_in_place(|| {
        println!("4 replicas converged in {:?}", c.deploy(&admin, 4));
        let placed = per_node(&c.tasks(&read));
        assert_eq!(placed.values().sum::<usize>(), 4, "{placed:?}");
        assert_eq!(placed.len(), 2, "both agents run tasks: {placed:?}");
        let o = c.client(&read, &["scale", "web=1"]);
        assert!(!o.status.success(), "a read token changed a service");
        assert!(stderr(&o).contains("read role"), "{}", stderr(&o));
    });
    check_agents_are_confined(&c).await;

    // Past several token lifetimes, everything still works: scale up and converge.
    tokio::time::sleep(JWT_TTL * 3).await;
    tokio::task::block_in_place(|| {
        let took = c.deploy(&admin, 6);
        println!("6 replicas converged in {took:?} after 3 JWT lifetimes");
        assert_eq!(per_node(&c.tasks(&read)).values().sum::<usize>(), 6);
    });

    // A third node: `rbac apply` changes users and roles, so every token in use goes stale.
    tokio::task::block_in_place(|| {
        let out = c.rbac_apply("n1,n2,n3");
        assert!(out.contains("user shoal-agent-n3 created"), "{out}");
        assert!(!out.contains("shoal-agent-n1 created"), "{out}");
        let mut args = vec!["rbac".to_string(), "show".into()];
        args.extend(c.root_flags());
        let o = c.run("rbac-show", &args, &[]);
        let shown = stdout(&o);
        assert!(o.status.success(), "{}", stderr(&o));
        let n3_node = |l: &str| l.starts_with("shoal-agent-n3") && l.ends_with("/shoal/nodes/n3");
        assert!(
            shown.lines().any(|l| n3_node(l) && l.contains("readwrite")),
            "{shown}"
        );
        assert!(!shown.contains("missing"), "{shown}");
        c.agent("n3", true);
        c.wait_node(&read, "n3");
        let took = c.deploy(&admin, 9);
        println!("9 replicas on 3 nodes converged in {took:?} after the auth change");
        let placed = per_node(&c.tasks(&read));
        let even = [
            ("n1".to_string(), 3),
            ("n2".to_string(), 3),
            ("n3".to_string(), 3),
        ];
        assert_eq!(placed, even.into(), "at most 3 per node puts work on n3");
    });

    // Remove the service so the agents stop their processes, stop everything, read the logs.
    tokio::task::block_in_place(|| {
        let o = c.client(&admin, &["delete", "service", "web"]);
        assert!(o.status.success(), "{}", stderr(&o));
        blocking_eventually("the tasks to stop", DEADLINE, || c.tasks(&read).is_empty());
        let mut procs = std::mem::take(&mut c.procs);
        procs.iter_mut().for_each(Proc::stop);
        for p in &procs {
            let text = std::fs::read_to_string(&p.log).unwrap();
            assert!(text.contains("TRACE"), "{} logged at trace level", p.name);
        }
        let secrets = c.secrets(&[&admin, &read]);
        let bytes = c.assert_logs_hold_no(&secrets);
        println!(
            "{bytes} bytes of trace logs hold none of {} secrets",
            secrets.len()
        );
    });
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
