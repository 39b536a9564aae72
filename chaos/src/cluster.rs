//! The processes of a chaos cluster, each started inside its host's namespace with
//! `ip netns exec`: one etcd member per host (Debian's `etcd`), two `shoal controller`s,
//! one `shoal agent` per host on the `process` runtime, and one `shoal api`. Each can be
//! killed with -9 and restarted, paused and resumed; an etcd member can be replaced (stopped,
//! data wiped, `member remove`, `member add`, started as a new member), as etcd's runbook says.
//!
//! Dropping the [`Cluster`] kills every process and removes the etcd data directories (the
//! logs stay in the run directory), then the network goes (its own drop).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{Net, kill_all_in};

/// etcd's client port on every host.
pub const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
/// The API's port (on the API's host).
pub const API_PORT: u16 = 7878;

/// Errors running cluster processes.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// The component.
        what: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// An etcd membership call failed.
    #[error("etcd membership change for {member}: {message}")]
    Membership {
        /// Member name.
        member: String,
        /// The client's error.
        message: String,
    },
    /// A file-system operation failed.
    #[error("cluster i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A component of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The etcd member on host N.
    Etcd(usize),
    /// Controller N (host N).
    Controller(usize),
    /// The agent on host N (node `hN`).
    Agent(usize),
    /// The API (last host).
    Api,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Etcd(n) => write!(f, "etcd-{n}"),
            Role::Controller(n) => write!(f, "controller-{n}"),
            Role::Agent(n) => write!(f, "agent-{n}"),
            Role::Api => f.write_str("api"),
        }
    }
}

/// Node id of the agent on host `n`.
pub fn node_id(n: usize) -> String {
    format!("h{n}")
}

struct Proc {
    role: Role,
    child: Option<Child>,
    paused: bool,
}

/// Paths and settings of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `shoal` binary.
    pub shoal: PathBuf,
    /// The `etcd` binary.
    pub etcd: PathBuf,
    /// Data and log directory of the run.
    pub dir: PathBuf,
    /// Lease TTL of controllers and agents.
    pub lease_ttl: Duration,
}

/// The running cluster; owns the network.
pub struct Cluster {
    cfg: ClusterConfig,
    procs: Vec<Proc>,
    /// Current etcd member name of each host (changes when a member is replaced).
    etcd_names: Vec<String>,
    /// Admin token of the API.
    pub token: String,
    /// The network (dropped after the processes are killed).
    pub net: Net,
}

impl Cluster {
    /// A cluster on `net` with nothing started yet.
    pub fn new(cfg: ClusterConfig, net: Net) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(cfg.dir.join("logs"))?;
        let etcd_names = (0..net.hosts.len()).map(|i| format!("etcd-{i}")).collect();
        let token = create_token(&cfg)?;
        Ok(Cluster {
            cfg,
            procs: Vec::new(),
            etcd_names,
            token,
            net,
        })
    }

    /// Host of a component.
    pub fn host_of(&self, role: Role) -> usize {
        match role {
            Role::Etcd(n) | Role::Controller(n) | Role::Agent(n) => n,
            Role::Api => self.net.hosts.len() - 1,
        }
    }

    /// Client endpoints (`IP:2379`) of every etcd member.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.net
            .hosts
            .iter()
            .map(|h| format!("{}:{ETCD_CLIENT_PORT}", h.ip))
            .collect()
    }

    /// The store URL the Shoal components use.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.etcd_endpoints().join(","))
    }

    /// The API's base URL.
    pub fn api_url(&self) -> String {
        format!(
            "http://{}:{API_PORT}",
            self.net.hosts[self.host_of(Role::Api)].ip
        )
    }

    fn peer_url(&self, host: usize) -> String {
        format!("http://{}:{ETCD_PEER_PORT}", self.net.hosts[host].ip)
    }

    fn etcd_dir(&self, host: usize) -> PathBuf {
        self.cfg.dir.join(format!("etcd-{host}"))
    }

    fn etcd_args(&self, host: usize, initial_cluster: &str, state: &str) -> Vec<String> {
        let ip = self.net.hosts[host].ip;
        let client = format!("http://{ip}:{ETCD_CLIENT_PORT}");
        vec![
            format!("--name={}", self.etcd_names[host]),
            format!("--data-dir={}", self.etcd_dir(host).display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={}", self.peer_url(host)),
            format!("--initial-advertise-peer-urls={}", self.peer_url(host)),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={state}"),
            format!("--initial-cluster-token=shoal-chaos-{}", self.net.run_id),
            "--max-txn-ops=128".into(),
        ]
    }

    fn initial_cluster(&self) -> String {
        (0..self.net.hosts.len())
            .map(|h| format!("{}={}", self.etcd_names[h], self.peer_url(h)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn shoal_args(&self, role: Role) -> Vec<String> {
        let ttl = humantime_secs(self.cfg.lease_ttl);
        let store = self.store_url();
        let mut args: Vec<String> = match role {
            Role::Controller(_) => vec!["controller".into(), "--lease-ttl".into(), ttl],
            Role::Agent(n) => {
                let shm = format!("/dev/shm/shoal-chaos-{}/agent-{n}", self.net.run_id);
                let data = self.cfg.dir.join(format!("agent-{n}"));
                vec![
                    "agent".into(),
                    "--node-id".into(),
                    node_id(n),
                    "--address".into(),
                    self.net.hosts[n].ip.to_string(),
                    "--runtime".into(),
                    "process".into(),
                    "--lease-ttl".into(),
                    ttl,
                    "--cpus".into(),
                    "64".into(),
                    "--memory".into(),
                    "64Gi".into(),
                    "--data-dir".into(),
                    data.display().to_string(),
                    "--secrets-dir".into(),
                    shm,
                ]
            }
            Role::Api => vec![
                "api".into(),
                "--listen".into(),
                format!("{}:{API_PORT}", self.net.hosts[self.host_of(Role::Api)].ip),
                // Cleartext on the run's private bridge only.
                "--insecure-listen".into(),
                "--token-file".into(),
                self.cfg.dir.join("tokens").display().to_string(),
            ],
            Role::Etcd(_) => unreachable!("etcd is not a shoal component"),
        };
        args.push("--store".into());
        args.push(store);
        args
    }

    fn spawn(&mut self, role: Role, program: &Path, args: &[String]) -> Result<(), ClusterError> {
        let host = self.host_of(role);
        let ns = self.net.hosts[host].ns.clone();
        let log_path = self.cfg.dir.join("logs").join(format!("{role}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_CHAOS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                what: role.to_string(),
                source,
            })?;
        match self.procs.iter_mut().find(|p| p.role == role) {
            Some(p) => {
                p.child = Some(child);
                p.paused = false;
            }
            None => self.procs.push(Proc {
                role,
                child: Some(child),
                paused: false,
            }),
        }
        Ok(())
    }

    /// Starts (or restarts) a component.
    pub fn start(&mut self, role: Role) -> Result<(), ClusterError> {
        match role {
            Role::Etcd(h) => {
                let args = self.etcd_args(h, &self.initial_cluster(), "new");
                let etcd = self.cfg.etcd.clone();
                self.spawn(role, &etcd, &args)
            }
            _ => {
                let args = self.shoal_args(role);
                let shoal = self.cfg.shoal.clone();
                self.spawn(role, &shoal, &args)
            }
        }
    }

    /// Every component of a full cluster, etcd first.
    pub fn roles(&self) -> Vec<Role> {
        let n = self.net.hosts.len();
        let mut roles: Vec<Role> = (0..n).map(Role::Etcd).collect();
        roles.extend([Role::Controller(0), Role::Controller(1)]);
        roles.extend((0..n).map(Role::Agent));
        roles.push(Role::Api);
        roles
    }

    /// Process id of a running component.
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| p.role == role)
            .and_then(|p| p.child.as_ref().map(Child::id))
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self, role: Role) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.role == role)
            && let Some(mut child) = p.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
            p.paused = false;
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT.
    pub fn signal_pause(&mut self, role: Role, pause: bool) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.role == role)
            && let Some(child) = &p.child
        {
            let sig = if pause {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = kill(Pid::from_raw(child.id() as i32), sig);
            p.paused = pause;
        }
    }

    /// Resumes every paused process.
    pub fn resume_all(&mut self) {
        let paused: Vec<Role> = self
            .procs
            .iter()
            .filter(|p| p.paused)
            .map(|p| p.role)
            .collect();
        for r in paused {
            self.signal_pause(r, false);
        }
    }

    /// Replaces the etcd member of `host`: stop it, wipe its data, `member remove` it through
    /// the other members, `member add` it back under a new name and start it as `existing`.
    /// The membership calls are retried (the cluster may be electing after a partition).
    pub async fn replace_etcd_member(&mut self, host: usize) -> Result<(), ClusterError> {
        self.kill9(Role::Etcd(host));
        std::fs::remove_dir_all(self.etcd_dir(host)).or_else(ignore_missing)?;
        let old = self.etcd_names[host].clone();
        let generation = old
            .rsplit_once("-g")
            .and_then(|(_, g)| g.parse::<u32>().ok())
            .unwrap_or(1);
        let new_name = format!("etcd-{host}-g{}", generation + 1);
        let mut last = String::new();
        for attempt in 0..30u64 {
            match self.rejoin(host, &new_name).await {
                Ok(initial) => {
                    self.etcd_names[host] = new_name;
                    let args = self.etcd_args(host, &initial, "existing");
                    let etcd = self.cfg.etcd.clone();
                    return self.spawn(Role::Etcd(host), &etcd, &args);
                }
                Err(e) => last = e,
            }
            tracing::warn!(member = %old, attempt, error = %last, "etcd membership change failed; retrying");
            tokio::time::sleep(Duration::from_millis(500 + 250 * attempt.min(8))).await;
        }
        Err(ClusterError::Membership {
            member: old,
            message: last,
        })
    }

    /// One try of `member remove` + `member add` for `host`; returns `--initial-cluster`.
    async fn rejoin(&self, host: usize, new_name: &str) -> Result<String, String> {
        let others: Vec<String> = self
            .etcd_endpoints()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != host)
            .map(|(_, e)| e)
            .collect();
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10));
        let mut client = etcd_client::Client::connect(others, Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        let peer = self.peer_url(host);
        let list = client.member_list().await.map_err(|e| e.to_string())?;
        let mine = list
            .members()
            .iter()
            .find(|m| m.peer_urls().contains(&peer));
        // A member with our peer URL and a name is the old one; without a name it is the
        // new one, added by an earlier try whose answer was lost.
        let members = match mine {
            Some(m) if m.name().is_empty() => list.members().to_vec(),
            found => {
                if let Some(m) = found {
                    client
                        .member_remove(m.id())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let added = client
                    .member_add([peer.as_str()], None)
                    .await
                    .map_err(|e| e.to_string())?;
                added.member_list().to_vec()
            }
        };
        Ok(members
            .iter()
            .map(|m| {
                let name = if m.peer_urls().contains(&peer) {
                    new_name.to_string()
                } else {
                    m.name().to_string()
                };
                format!(
                    "{name}={}",
                    m.peer_urls().first().cloned().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(","))
    }
}

/// `shoal token create --role admin` into the run's token file; returns the token.
fn create_token(cfg: &ClusterConfig) -> Result<String, ClusterError> {
    let file = cfg.dir.join("tokens");
    let out = Command::new(&cfg.shoal)
        .args(["token", "create", "--role", "admin", "--file"])
        .arg(&file)
        .output()
        .map_err(|source| ClusterError::Spawn {
            what: format!("{} token create", cfg.shoal.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(ClusterError::Spawn {
            what: "shoal token create".into(),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).to_string()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ignore_missing(e: std::io::Error) -> Result<(), std::io::Error> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for h in &self.net.hosts {
            kill_all_in(&h.ns);
        }
        let _ = std::fs::remove_dir_all(format!("/dev/shm/shoal-chaos-{}", self.net.run_id));
        // etcd preallocates its WAL (~120 MB a member); logs and the request record stay.
        for h in 0..self.net.hosts.len() {
            let _ = std::fs::remove_dir_all(self.etcd_dir(h));
        }
    }
}
