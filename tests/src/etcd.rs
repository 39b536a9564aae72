//! A real etcd for tests and benchmarks: [`EtcdFixture`] runs Debian's `etcd` on free
//! loopback ports with a temporary data directory, waits until it answers, can restart it on
//! the same ports and data, compacts its history, reports its version, process and database
//! size, and kills it when dropped. With [`EtcdSecurity`] it serves
//! TLS (certificates from [`crate::pki`]), can require client certificates, issues JWT auth
//! tokens with a short lifetime, and [`EtcdFixture::enable_auth`] turns authentication on
//! with a `root` user.
//!
//! A missing `etcd` is a failure, never a silent skip: the message says to run `make deps`
//! (and, under `CI=true`, that CI must install it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_store::{Credentials, EtcdOptions, EtcdStore, EtcdTls, Revision, Store, StoreError};

use crate::pki::{CertFiles, Pki};

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

/// TLS and authentication settings of a test etcd.
#[derive(Debug, Default)]
pub struct EtcdSecurity {
    /// Serve clients over TLS with a certificate of this CA (`127.0.0.1`).
    pub tls: Option<Arc<Pki>>,
    /// Require a client certificate of the CA (`--client-cert-auth`); etcd then takes the
    /// user from its common name when a request carries no token.
    pub client_cert_auth: bool,
    /// Issue JWT auth tokens with this lifetime instead of etcd's simple tokens (which every
    /// call extends, so they never expire under load).
    pub jwt_ttl: Option<Duration>,
}

/// A running etcd owned by a test.
#[derive(Debug)]
pub struct EtcdFixture {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    security: EtcdSecurity,
    server_cert: Option<CertFiles>,
    jwt_key: Option<CertFiles>,
    /// A client certificate for the fixture's own connections (with `client_cert_auth`).
    admin_cert: Option<CertFiles>,
    root_password: Option<String>,
    /// `--quota-backend-bytes` when etcd's default (2 GiB) is too small.
    quota_backend_bytes: Option<u64>,
    child: Option<Child>,
}

impl EtcdFixture {
    /// Starts etcd on free loopback ports and waits until it is healthy.
    pub fn start() -> Result<Self, FixtureError> {
        Self::start_with(EtcdSecurity::default())
    }

    /// Starts etcd with TLS and authentication settings.
    pub fn start_with(security: EtcdSecurity) -> Result<Self, FixtureError> {
        Self::start_configured(security, None)
    }

    /// Starts etcd with room for a large cluster's history: an 8 GiB backend quota instead
    /// of etcd's 2 GiB, which the larger benchmark scenarios fill.
    pub fn start_large() -> Result<Self, FixtureError> {
        Self::start_configured(EtcdSecurity::default(), Some(8 << 30))
    }

    fn start_configured(
        security: EtcdSecurity,
        quota_backend_bytes: Option<u64>,
    ) -> Result<Self, FixtureError> {
        let binary = etcd_binary()?;
        let server_cert = security.tls.as_ref().map(|pki| pki.server("etcd"));
        let admin_cert = match &security.tls {
            Some(pki) if security.client_cert_auth => Some(pki.client("fixture-admin")),
            _ => None,
        };
        let jwt_key = match (&security.tls, security.jwt_ttl) {
            (Some(pki), Some(_)) => Some(pki.signing_key("etcd-jwt")),
            (None, Some(_)) => Some(Pki::new("jwt").signing_key("etcd-jwt")),
            _ => None,
        };
        let mut security = Some(security);
        let mut last_error = None;
        // Another process may grab a port between the probe and etcd's bind: retry.
        for _ in 0..3 {
            let mut fixture = Self {
                binary: binary.clone(),
                dir: tempfile::tempdir()?,
                client_port: free_port()?,
                peer_port: free_port()?,
                metrics_port: free_port()?,
                security: security.take().unwrap_or_default(),
                server_cert: server_cert.clone(),
                jwt_key: jwt_key.clone(),
                admin_cert: admin_cert.clone(),
                root_password: None,
                quota_backend_bytes,
                child: None,
            };
            match fixture.launch() {
                Ok(()) => return Ok(fixture),
                Err(e) => {
                    last_error = Some(e);
                    security = Some(std::mem::take(&mut fixture.security));
                }
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

    /// The CA of a TLS etcd.
    pub fn pki(&self) -> Option<&Arc<Pki>> {
        self.security.tls.as_ref()
    }

    /// Connection settings for this etcd as `credentials` (TLS and, with client certificate
    /// authentication, the fixture's own client certificate).
    pub fn options(&self, credentials: Option<Credentials>) -> EtcdOptions {
        let tls = self.security.tls.as_ref().map(|pki| {
            let tls = EtcdTls::new(pki.ca_pem().into_bytes()).expect("CA PEM");
            match &self.admin_cert {
                Some(c) => tls
                    .with_identity(read(&c.cert), read(&c.key))
                    .expect("client certificate PEM"),
                None => tls,
            }
        });
        EtcdOptions {
            tls,
            credentials,
            ..EtcdOptions::default()
        }
    }

    /// A store client as `credentials`.
    pub async fn store_as(
        &self,
        credentials: Option<Credentials>,
    ) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(&[self.endpoint()], self.options(credentials)).await
    }

    /// The `root` credentials once [`EtcdFixture::enable_auth`] ran.
    pub fn root(&self) -> Option<Credentials> {
        self.root_password
            .as_ref()
            .map(|p| Credentials::new("root", p.clone()))
    }

    /// The `root` password once [`EtcdFixture::enable_auth`] ran.
    pub fn root_password(&self) -> Option<&str> {
        self.root_password.as_deref()
    }

    /// A file holding the `root` password (for `--store-password-file`).
    pub fn root_password_file(&self) -> Option<PathBuf> {
        let password = self.root_password.as_ref()?;
        let path = self.dir.path().join("root.password");
        std::fs::write(&path, format!("{password}\n")).ok()?;
        Some(path)
    }

    /// Creates the `root` user with a random password and turns authentication on.
    pub async fn enable_auth(&mut self) -> Result<(), FixtureError> {
        let password = format!("root-{}", uuid::Uuid::new_v4().simple());
        let failed = |e| self.failed("enabling auth", e);
        let mut client = self.admin_client().await.map_err(failed)?;
        client
            .user_add("root", password.clone(), None)
            .await
            .map_err(failed)?;
        client
            .user_grant_role("root", "root")
            .await
            .map_err(failed)?;
        client.auth_enable().await.map_err(failed)?;
        self.root_password = Some(password);
        Ok(())
    }

    /// The version etcd reports (`3.4.30`).
    pub async fn version(&self) -> Result<String, FixtureError> {
        let failed = |e| self.failed("reading the version", e);
        let mut client = self.admin_client().await.map_err(failed)?;
        let status = client.status().await.map_err(failed)?;
        Ok(status.version().to_string())
    }

    /// The etcd process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Size of etcd's database file in bytes (0 before etcd wrote it).
    pub fn db_size(&self) -> u64 {
        let db = self.data_dir().join("member/snap/db");
        std::fs::metadata(db).map(|m| m.len()).unwrap_or(0)
    }

    /// How many messages etcd has sent on watch streams (its `grpc_server_msg_sent_total`
    /// for `Watch`, from its metrics listener).
    pub async fn watch_messages_sent(&self) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = async { reqwest::get(&url).await?.text().await }
            .await
            .unwrap_or_else(|e| panic!("etcd's metrics at {url}: {e}"));
        let watch = [("grpc_method", "Watch")];
        crate::metrics::sum(&text, "grpc_server_msg_sent_total", &watch) as u64
    }

    /// An etcd client as the fixture itself (with its client certificate, without a user).
    async fn admin_client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let mut opts = etcd_client::ConnectOptions::new();
        if let Some(pki) = &self.security.tls {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(pki.ca_pem()));
            if let Some(c) = &self.admin_cert {
                tls = tls.identity(etcd_client::Identity::from_pem(read(&c.cert), read(&c.key)));
            }
            opts = opts.with_tls(tls);
        }
        etcd_client::Client::connect([self.client_url()], Some(opts)).await
    }

    /// A failure talking to etcd while `doing`, with the tail of etcd's log.
    fn failed(&self, doing: &str, e: etcd_client::Error) -> FixtureError {
        FixtureError::Start(format!(
            "{doing}: {e}; etcd log tail:\n{}",
            tail_of(&self.log_path())
        ))
    }

    fn client_url(&self) -> String {
        let scheme = if self.security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// etcd's own log (it may hold tokens: etcd 3.4 logs refused ones in full).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A store client for this etcd (as `root` once authentication is on).
    pub async fn store(&self) -> Result<EtcdStore, StoreError> {
        self.store_as(self.root()).await
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
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--name=shoal-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=shoal-test={peer}"))
            .arg(format!("--listen-metrics-urls={metrics}"))
            .arg("--initial-cluster-state=new");
        if let Some(bytes) = self.quota_backend_bytes {
            cmd.arg(format!("--quota-backend-bytes={bytes}"));
        }
        if let (Some(pki), Some(cert)) = (&self.security.tls, &self.server_cert) {
            cmd.arg(format!("--cert-file={}", cert.cert.display()))
                .arg(format!("--key-file={}", cert.key.display()));
            // etcd 3.4 asks every client for a certificate once it has a trusted CA.
            if self.security.client_cert_auth {
                cmd.arg(format!("--trusted-ca-file={}", pki.ca_file().display()))
                    .arg("--client-cert-auth");
            }
        }
        if let (Some(ttl), Some(key)) = (self.security.jwt_ttl, &self.jwt_key) {
            cmd.arg(format!(
                "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256,ttl={}s",
                key.cert.display(),
                key.key.display(),
                ttl.as_secs().max(1)
            ));
        }
        let child = cmd
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
        // The metrics listener serves /health in cleartext, TLS or not.
        let addr = SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
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

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
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
