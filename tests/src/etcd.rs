//! A real etcd for tests: [`EtcdFixture`] runs Debian's `etcd` on free loopback ports with a
//! temporary data directory, waits until it answers, can restart it on the same ports and
//! data, compacts its history, and kills it when dropped.
//!
//! A missing `etcd` is a failure, never a silent skip: the message says to run `make deps`
//! (and, under `CI=true`, that CI must install it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_store::{EtcdStore, Revision, Store, StoreError};

use futures::FutureExt;

use crate::conformance::{Compactor, Harness};

/// How long etcd may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the fixture could not run etcd.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// No `etcd` binary was found.
    #[error("{0}")]
    Missing(String),
    /// etcd did not come up.
    #[error("etcd did not start: {0}")]
    Start(String),
    /// A file-system or process operation failed.
    #[error("etcd fixture i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Finds the etcd binary: `$SHOAL_ETCD_BIN`, else `etcd` on `PATH`.
pub fn etcd_binary() -> Result<PathBuf, FixtureError> {
    if let Some(bin) = std::env::var_os("SHOAL_ETCD_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("etcd");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let hint = if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        "etcd is not installed on this CI machine (CI=true): the etcd store tests require it; \
         run `make deps` in the CI script (installs Debian's etcd-server)"
    } else {
        "etcd is not installed: run `make deps` (installs Debian's etcd-server) to run the \
         etcd store tests"
    };
    Err(FixtureError::Missing(hint.to_string()))
}

fn free_port() -> Result<u16, FixtureError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running etcd owned by a test.
#[derive(Debug)]
pub struct EtcdFixture {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdFixture {
    /// Starts etcd on free loopback ports and waits until it is healthy.
    pub fn start() -> Result<Self, FixtureError> {
        let binary = etcd_binary()?;
        let mut last_error = None;
        // Another process may grab a port between the probe and etcd's bind: retry.
        for _ in 0..3 {
            let mut fixture = Self {
                binary: binary.clone(),
                dir: tempfile::tempdir()?,
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            };
            match fixture.launch() {
                Ok(()) => return Ok(fixture),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| FixtureError::Start("no attempt made".into())))
    }

    /// `host:port` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The store URL of this etcd (`etcd://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A store client for this etcd.
    pub async fn store(&self) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(&[self.endpoint()]).await
    }

    /// Kills etcd and starts it again on the same ports and data directory.
    pub fn restart(&mut self) -> Result<(), FixtureError> {
        self.kill();
        self.launch()
    }

    /// Stops etcd (kill, then wait for the process).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; either way it is gone after wait.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Compacts etcd's history up to `revision`.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.store().await?.compact(revision).await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn launch(&mut self) -> Result<(), FixtureError> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.binary)
            .arg("--name=shoal-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=shoal-test={peer}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        match self.wait_healthy() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                let tail = tail_of(&self.log_path());
                Err(FixtureError::Start(format!("{e}; etcd log tail:\n{tail}")))
            }
        }
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("etcd exited with {status}"));
            }
            if health(addr) {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(format!("not healthy after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdFixture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether etcd's `/health` endpoint says it is healthy.
fn health(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if conn.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs the conformance suite against a real etcd.
pub struct EtcdHarness {
    fixture: EtcdFixture,
    store: Arc<EtcdStore>,
}

impl EtcdHarness {
    /// Starts etcd and connects. Panics with the fixture's message when etcd is missing.
    pub async fn new() -> Self {
        let fixture = match EtcdFixture::start() {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        let store = Arc::new(fixture.store().await.expect("connect to etcd"));
        Self { fixture, store }
    }

    /// The fixture (for its endpoint and data directory).
    pub fn fixture(&self) -> &EtcdFixture {
        &self.fixture
    }
}

#[async_trait::async_trait]
impl Harness for EtcdHarness {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.store.compact(revision).await
    }

    fn compactor(&self) -> Compactor {
        let store = Arc::clone(&self.store);
        Arc::new(move |revision| {
            let store = Arc::clone(&store);
            async move { store.compact(revision).await }.boxed()
        })
    }

    async fn restart(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        // The same client keeps working: the point is that it reconnects by itself.
        let fixture = &mut self.fixture;
        tokio::task::block_in_place(|| fixture.restart()).expect("restart etcd");
        store
    }

    fn watches_survive_restart(&self) -> bool {
        true
    }
}
