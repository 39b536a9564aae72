//! The Shoal processes of a benchmark run: controllers and hollow agents, started from the
//! release `shoal` binary as child processes so that each can be measured (RSS, CPU) and
//! killed (`kill -9`) on its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Resident set size and CPU time of a process, read from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Current RSS in bytes.
    pub rss: u64,
    /// Peak RSS in bytes (VmHWM).
    pub peak_rss: u64,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
}

/// Reads RSS, peak RSS and CPU time of `pid`; zeros when the process is gone.
pub fn proc_stats(pid: u32) -> ProcStats {
    let mut st = ProcStats::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kb = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024
            };
            if line.starts_with("VmRSS:") {
                st.rss = kb(line);
            } else if line.starts_with("VmHWM:") {
                st.peak_rss = kb(line);
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r)
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after the command: state is index 0, utime 11, stime 12 (in clock ticks).
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        st.cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
    }
    st
}

/// Starts Shoal processes against one store.
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

    fn spawn(&self, name: &str, args: &[String]) -> Result<Proc, ClusterError> {
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
            .stdout(Stdio::null())
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
        let args = vec![
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
        ];
        self.spawn(name, &args)
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
