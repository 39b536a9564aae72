//! A throwaway etcd server for one benchmark run: fresh data dir on disk, loopback ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting or talking to the benchmark's etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The etcd binary could not be started.
    #[error("cannot start etcd ({binary}): {source} — install Debian's etcd-server (make deps)")]
    Spawn {
        /// Binary tried.
        binary: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd on {0} did not become ready within 30 s")]
    NotReady(String),
    /// A local I/O failure (ports, temp dir).
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A running etcd child process; killed on drop.
pub struct EtcdServer {
    child: Child,
    /// Client endpoint, `127.0.0.1:PORT`.
    pub endpoint: String,
    /// Data directory (kept alive as long as the server).
    pub data_dir: tempfile::TempDir,
    /// Reported server version.
    pub version: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts etcd with a fresh data directory and waits until it answers.
    pub async fn start() -> Result<Self, EtcdError> {
        let binary = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
        let data_dir = tempfile::Builder::new()
            .prefix("shoal-bench-etcd")
            .tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("127.0.0.1:{client}");
        let log = std::fs::File::create(data_dir.path().join("etcd.log"))?;
        let child = Command::new(&binary)
            .arg("--name=bench")
            .arg(format!(
                "--data-dir={}",
                data_dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls=http://{endpoint}"))
            .arg(format!("--advertise-client-urls=http://{endpoint}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=bench=http://127.0.0.1:{peer}"))
            .arg("--quota-backend-bytes=8589934592")
            .arg("--max-txn-ops=128")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| EtcdError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let mut server = EtcdServer {
            child,
            endpoint: endpoint.clone(),
            data_dir,
            version: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut c) = etcd_client::Client::connect([endpoint.as_str()], None).await
                && let Ok(st) = c.status().await
            {
                server.version = st.version().to_string();
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EtcdError::NotReady(endpoint))
    }

    /// The store URL Shoal components use for this server.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoint)
    }

    /// Process id (for RSS sampling).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Size of the etcd database file in bytes.
    pub fn db_size(&self) -> u64 {
        let p: PathBuf = self.data_dir.path().join("data/member/snap/db");
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
