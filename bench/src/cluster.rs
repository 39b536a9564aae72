//! The Shoal processes of a benchmark run: controllers and hollow agents, started from the
//! release `shoal` binary as child processes so that each can be measured (RSS, CPU) and
//! killed (`kill -9`) on its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use shoal_tests::etcd::{EtcdFixture, FixtureError};

/// Errors managing benchmark processes.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A child process could not be started.
    #[error("cannot start {what} ({binary}): {source}")]
    Spawn {
        /// Role of the process.
        what: String,
        /// Binary.
        binary: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The benchmark's etcd did not start or answer.
    #[error("etcd: {0}")]
    Etcd(#[from] FixtureError),
    /// Starting etcd was interrupted.
    #[error("starting etcd: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Starts a benchmark's own etcd (fresh data dir, loopback, an 8 GiB quota) and reads its
/// version.
pub async fn start_etcd() -> Result<(EtcdFixture, String), ClusterError> {
    let etcd = tokio::task::spawn_blocking(EtcdFixture::start_large).await??;
    let version = etcd.version().await?;
    Ok((etcd, version))
}

/// One child process of the cluster.
pub struct Proc {
    /// Role, e.g. `controller-0`.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
pub(crate) const TICKS_PER_S: f64 = 100.0;

/// Resident set size and CPU time of a process, read from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Current RSS in bytes.
    pub rss: u64,
    /// Peak RSS in bytes (VmHWM).
    pub peak_rss: u64,
    /// Anonymous part of the RSS in bytes (heap, stacks: what the process itself holds).
    pub rss_anon: u64,
    /// Proportional set size in bytes: the RSS with each page shared with other processes
    /// (the executable's code, mapped by every agent process) divided among them.
    pub pss: u64,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
}

/// Reads RSS, peak RSS, PSS and CPU time of `pid`; zeros when the process is gone.
pub fn proc_stats(pid: u32) -> ProcStats {
    let mut st = ProcStats::default();
    let kb = |l: &str| {
        l.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            if line.starts_with("VmRSS:") {
                st.rss = kb(line);
            } else if line.starts_with("VmHWM:") {
                st.peak_rss = kb(line);
            } else if line.starts_with("RssAnon:") {
                st.rss_anon = kb(line);
            }
        }
    }
    if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        st.pss = rollup.lines().find(|l| l.starts_with("Pss:")).map_or(0, kb);
    }
    st.cpu_seconds = cpu_seconds(pid);
    st
}

/// The user + system CPU seconds of `pid` (`/proc/<pid>/stat` alone, without the memory
/// figures [`proc_stats`] also reads); 0 when the process is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12 (in clock ticks).
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS_PER_S
}

/// Starts Shoal processes against one store.
#[derive(Debug, Clone)]
pub struct Cluster {
    binary: PathBuf,
    store_url: String,
    log_dir: PathBuf,
    lease_ttl: String,
}

impl Cluster {
    /// A cluster using `binary` (the release `shoal`) against `store_url`.
    pub fn new(binary: &Path, store_url: &str, log_dir: &Path, lease_ttl: &str) -> Self {
        Cluster {
            binary: binary.to_path_buf(),
            store_url: store_url.to_string(),
            log_dir: log_dir.to_path_buf(),
            lease_ttl: lease_ttl.to_string(),
        }
    }

    /// The same binary, logs and lease TTL against another store.
    pub fn with_store(&self, store_url: &str) -> Cluster {
        Cluster {
            store_url: store_url.to_string(),
            ..self.clone()
        }
    }

    /// The `shoal` binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn spawn(&self, name: &str, args: &[String]) -> Result<Proc, ClusterError> {
        self.spawn_with(name, args, Stdio::null())
    }

    fn spawn_with(&self, name: &str, args: &[String], stdout: Stdio) -> Result<Proc, ClusterError> {
        let log =
            std::fs::File::create(self.log_dir.join(format!("{name}.log"))).map_err(|source| {
                ClusterError::Spawn {
                    what: name.into(),
                    binary: self.binary.clone(),
                    source,
                }
            })?;
        let child = Command::new(&self.binary)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                what: name.into(),
                binary: self.binary.clone(),
                source,
            })?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// Starts a controller.
    pub fn controller(&self, name: &str) -> Result<Proc, ClusterError> {
        self.spawn(name, &self.controller_args())
    }

    /// Starts a controller serving `/metrics` on a free loopback port; returns it and the
    /// metrics URL.
    pub fn controller_with_metrics(&self, name: &str) -> Result<(Proc, String), ClusterError> {
        let addr = format!("127.0.0.1:{}", shoal_tests::process::free_port());
        let mut args = self.controller_args();
        args.extend(["--listen".to_string(), addr.clone()]);
        Ok((self.spawn(name, &args)?, format!("http://{addr}/metrics")))
    }

    fn controller_args(&self) -> Vec<String> {
        vec![
            "controller".to_string(),
            "--store".into(),
            self.store_url.clone(),
            "--lease-ttl".into(),
            self.lease_ttl.clone(),
            // Compact often, and keep a window S3's churn outgrows, so that the run shows
            // etcd's size staying bounded.
            "--compact-every".into(),
            "5s".into(),
            "--history-revisions".into(),
            crate::scenarios::BENCH_HISTORY_REVISIONS.to_string(),
        ]
    }

    /// Starts `shoal api` on a free loopback port; returns it and its URL (the address it
    /// prints once listening).
    pub fn api(&self, name: &str) -> Result<(Proc, String), ClusterError> {
        let args: Vec<String> = ["api", "--store", &self.store_url, "--listen", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut proc = self.spawn_with(name, &args, Stdio::piped())?;
        let mut line = String::new();
        if let Some(out) = proc.child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        if !url.starts_with("http") {
            return Err(ClusterError::Spawn {
                what: name.into(),
                binary: self.binary.clone(),
                source: std::io::Error::other(format!(
                    "it printed {line:?} instead of its address (log: {})",
                    self.log_dir.join(format!("{name}.log")).display()
                )),
            });
        }
        Ok((proc, url))
    }

    /// Starts an agent for one real node `node_id` on the docker runtime, advertising
    /// `address`, with its data under `data_dir`.
    pub fn docker_agent(
        &self,
        node_id: &str,
        address: &str,
        data_dir: &Path,
    ) -> Result<Proc, ClusterError> {
        let args = vec![
            "agent".to_string(),
            "--store".into(),
            self.store_url.clone(),
            "--node-id".into(),
            node_id.to_string(),
            "--address".into(),
            address.to_string(),
            "--runtime".into(),
            "docker".into(),
            "--lease-ttl".into(),
            self.lease_ttl.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        self.spawn(&format!("agent-{node_id}"), &args)
    }

    /// Starts one agent process hosting `count` hollow nodes named `<id>-NNNN`, labelled.
    pub fn hollow_agent(
        &self,
        id: &str,
        count: usize,
        labels: &[(&str, &str)],
    ) -> Result<Proc, ClusterError> {
        let mut args = vec![
            "agent".to_string(),
            "--store".into(),
            self.store_url.clone(),
            "--node-id".into(),
            id.to_string(),
            "--address".into(),
            "127.0.0.1".into(),
            "--runtime".into(),
            "sim".into(),
            "--hollow-nodes".into(),
            count.to_string(),
            "--lease-ttl".into(),
            self.lease_ttl.clone(),
            "--cpus".into(),
            "64".into(),
            "--memory".into(),
            "256Gi".into(),
        ];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        self.spawn(&format!("agent-{id}"), &args)
    }
}
