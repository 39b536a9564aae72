//! An in-process fake of a Consul agent's HTTP API (a single dev-mode server), faithful to
//! `shared/reference/consul-http-api.md`: KV with a raft-like global index and tombstones,
//! blocking queries, `/v1/txn`, sessions with TTL and lock-delay, agent services and
//! checks (HTTP and TCP checks run for real against their targets, and a service whose check
//! stays critical past `DeregisterCriticalServiceAfter` is reaped), catalog and health, and
//! Consul's limit of connections per client IP. Tests start it with [`ConsulFake::start`] and drive its
//! timers and failure modes through its hooks.

mod agent;
mod conn;
mod harness;
mod http;
mod probe;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use harness::ConsulHarness;
use state::State;

/// Tuning of a [`ConsulFake`].
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Factor applied to Consul's own timers (session TTLs, lock-delay, TTL checks, critical
    /// service reaping): 0.1 makes a 10 s session TTL expire after 1–2 s.
    pub time_scale: f64,
    /// Entries accepted in one transaction, checks (`check-index`, ...) counted as ops like
    /// every other entry (`agent/txn_endpoint.go`). 64 by default: the limit Shoal relies on,
    /// accepted by every Consul version (1.14 and later accept 128).
    pub max_txn_ops: usize,
    /// `kv_max_value_size` (512 KiB by default).
    pub kv_max_value_size: usize,
    /// When set, every request must carry this ACL token (else 403 `Permission denied`).
    pub acl_token: Option<String>,
    /// With `acl_token`: the token's policy is `key_prefix "<this>" { policy = "write" }`
    /// (plus session writes). Other keys give 403 `Permission denied`, and recurse and
    /// `?keys` lists leave them out silently, as Consul filters results by ACL.
    pub acl_kv_prefix: Option<String>,
    /// `limits.http_max_conns_per_client` (200 by default): open connections allowed per
    /// client IP; more are answered 429 and closed.
    pub max_conns_per_client: usize,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            max_txn_ops: 64,
            kv_max_value_size: 512 * 1024,
            acl_token: None,
            acl_kv_prefix: None,
            max_conns_per_client: 200,
        }
    }
}

/// State shared by the HTTP handlers and the hooks.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub changed: watch::Sender<u64>,
    pub options: FakeOptions,
    /// Injected failures: (remaining count, status).
    pub failures: Mutex<(usize, u16)>,
    /// Connections per client IP and blocking queries in flight.
    pub conns: conn::Counts,
    /// Renewals of sessions that do not exist (answered 404).
    pub renew_misses: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// Locks the state (a poisoned lock still holds usable data in a test fake).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the ACL policy lets the caller touch `key` (see [`FakeOptions::acl_kv_prefix`]).
    pub(crate) fn kv_allowed(&self, key: &str) -> bool {
        match (&self.options.acl_token, &self.options.acl_kv_prefix) {
            (Some(_), Some(prefix)) => key.starts_with(prefix.as_str()),
            _ => true,
        }
    }

    /// Wakes blocking queries.
    pub(crate) fn notify(&self) {
        let index = self.lock().index;
        self.changed.send_replace(index);
    }
}

/// A running fake Consul agent on `127.0.0.1`.
pub struct ConsulFake {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    /// Servers of the other agents ([`ConsulFake::add_agent`]).
    others: Vec<JoinHandle<()>>,
    ticker: JoinHandle<()>,
    /// Runs the HTTP and TCP checks.
    prober: JoinHandle<()>,
}

impl std::fmt::Debug for ConsulFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulFake")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ConsulFake {
    /// Starts a fake with default options on an ephemeral port.
    pub async fn start() -> Self {
        Self::start_with(FakeOptions::default()).await
    }

    /// Starts a fake on an ephemeral port with its timers (TTLs, check intervals, reaping)
    /// running at `time_scale` of Consul's (0.1: ten times faster).
    pub async fn start_scaled(time_scale: f64) -> Self {
        Self::start_with(FakeOptions {
            time_scale,
            ..FakeOptions::default()
        })
        .await
    }

    /// Starts a fake with the given options on an ephemeral port.
    pub async fn start_with(options: FakeOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Consul");
        Self::start_on(listener, options)
    }

    /// Starts a fake with the given options on `listener`.
    pub fn start_on(listener: tokio::net::TcpListener, options: FakeOptions) -> Self {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(options.time_scale)),
            changed,
            options,
            failures: Mutex::new((0, 500)),
            conns: Default::default(),
            renew_misses: Default::default(),
        });
        let addr = listener.local_addr().expect("local address");
        let server = Some(Self::serve(Arc::clone(&shared), listener));
        let weak = Arc::downgrade(&shared);
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Some(shared) = weak.upgrade() else { return };
                if shared.lock().tick(Instant::now()) {
                    shared.notify();
                }
            }
        });
        let prober = tokio::spawn(probe::run(Arc::downgrade(&shared)));
        Self {
            shared,
            addr,
            server,
            others: Vec::new(),
            ticker,
            prober,
        }
    }

    fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> JoinHandle<()> {
        let node = shared.lock().node.clone();
        Self::serve_as(shared, listener, node)
    }

    fn serve_as(
        shared: Arc<Shared>,
        listener: tokio::net::TcpListener,
        node: String,
    ) -> JoinHandle<()> {
        let listener = conn::LimitedListener {
            inner: listener,
            counts: Arc::clone(&shared.conns),
            limit: shared.options.max_conns_per_client,
        };
        let app = http::router(shared, node);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `consul://127.0.0.1:PORT`, for `open_store`.
    pub fn store_url(&self) -> String {
        format!("consul://{}", self.addr)
    }

    /// The current raft index.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }

    /// Every KV key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.shared.lock().kv.keys().cloned().collect()
    }

    /// Every live session ID, sorted.
    pub fn sessions(&self) -> Vec<String> {
        self.shared.lock().sessions.keys().cloned().collect()
    }

    /// Every registered service ID, sorted.
    pub fn services(&self) -> Vec<String> {
        self.shared.lock().services.keys().cloned().collect()
    }

    /// How many renewals named a session that does not exist (404): a client that learns of
    /// its session's end another way renews none.
    pub fn renewals_of_missing_sessions(&self) -> usize {
        self.shared
            .renew_misses
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections open now from `ip`.
    pub fn connections_from(&self, ip: std::net::IpAddr) -> usize {
        conn::open_from(&self.shared.conns, ip)
    }

    /// Connections refused with 429 so far (over `max_conns_per_client`).
    pub fn refused_connections(&self) -> usize {
        conn::snapshot(&self.shared.conns).0
    }

    /// Blocking queries (watches) in flight now.
    pub fn blocking_queries(&self) -> usize {
        conn::snapshot(&self.shared.conns).1
    }

    /// Most blocking queries in flight at once since the start or the last
    /// [`ConsulFake::reset_blocking_peak`].
    pub fn blocking_queries_peak(&self) -> usize {
        conn::snapshot(&self.shared.conns).2
    }

    /// Restarts the peak of blocking queries from those in flight now.
    pub fn reset_blocking_peak(&self) {
        conn::reset_peak(&self.shared.conns);
    }

    /// Invalidates a session now, as if its TTL ran out; returns whether it existed.
    pub fn expire_session(&self, id: &str) -> bool {
        let existed = self.shared.lock().invalidate_session(id);
        self.shared.notify();
        existed
    }

    /// Invalidates every session now.
    pub fn expire_all_sessions(&self) {
        for id in self.sessions() {
            self.expire_session(&id);
        }
    }

    /// Reaps every tombstone, as Consul does periodically: prefix indexes may then go
    /// backwards (blocking queries wake up with a lower index).
    pub fn reap_tombstones(&self) {
        self.shared.lock().tombstones.clear();
        self.shared.notify();
    }

    /// Sets a check's status as if it had run (`passing`, `warning`, `critical`).
    pub fn set_check_status(&self, check_id: &str, status: &str) -> bool {
        let found = {
            let mut st = self.shared.lock();
            let found = match st.checks.get_mut(check_id) {
                Some(c) => {
                    c.status = status.to_string();
                    c.critical_since = (status == "critical").then(Instant::now);
                    true
                }
                None => false,
            };
            if found {
                st.bump_catalog();
            }
            found
        };
        self.shared.notify();
        found
    }

    /// The services reaped so far for a check critical past its
    /// `DeregisterCriticalServiceAfter`, in order.
    pub fn reaped_services(&self) -> Vec<String> {
        self.shared.lock().reaped.clone()
    }

    /// The status of a check (`passing`, `warning`, `critical`), if it exists.
    pub fn check_status(&self, check_id: &str) -> Option<String> {
        self.shared
            .lock()
            .checks
            .get(check_id)
            .map(|c| c.status.clone())
    }

    /// Deregisters a service behind its registrant's back, as an operator's
    /// `consul services deregister` would; returns whether it existed.
    pub fn remove_service(&self, id: &str) -> bool {
        let existed = {
            let mut st = self.shared.lock();
            let existed = st.remove_service(id);
            if existed {
                st.bump_catalog();
            }
            existed
        };
        self.shared.notify();
        existed
    }

    /// Registers a service directly in the agent's state (as any other client of the Consul
    /// agent could), with `meta`, no check.
    pub fn add_service(&self, id: &str, name: &str, port: u64, meta: &[(&str, &str)]) {
        {
            let mut st = self.shared.lock();
            st.bump_catalog();
            let at = st.index;
            st.services.insert(
                id.to_string(),
                state::Service {
                    id: id.to_string(),
                    name: name.to_string(),
                    tags: Vec::new(),
                    address: "127.0.0.1".into(),
                    port,
                    meta: meta
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    create_index: at,
                    modify_index: at,
                },
            );
        }
        self.shared.notify();
    }

    /// The agent loses its local state (restarted without its data directory, or a `-dev`
    /// agent restarted): every service and check registered through it is gone. Returns
    /// how many services went.
    pub fn lose_agent_state(&self) -> usize {
        let gone = {
            let mut st = self.shared.lock();
            let n = st.services.len();
            st.services.clear();
            st.checks.clear();
            st.bump_catalog();
            n
        };
        self.shared.notify();
        gone
    }

    /// Makes the next `count` requests fail with `status` (text body `injected failure`).
    pub fn fail_next_requests(&self, count: usize, status: u16) {
        *self
            .shared
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (count, status);
    }

    /// Stops listening (connections fail) while keeping the data.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Starts another Consul agent of the same cluster, on node `node` and its own port:
    /// sessions created through it are bound to `node`, so they outlive a
    /// [`ConsulFake::leave`] of this agent (as a controller's session on another host does).
    /// Returns its `http://` URL. It stops with the fake.
    pub async fn add_agent(&mut self, node: &str) -> String {
        self.shared.lock().other_nodes.insert(node.to_string());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the other fake Consul agent");
        let addr = listener.local_addr().expect("local address");
        self.others.push(Self::serve_as(
            Arc::clone(&self.shared),
            listener,
            node.to_string(),
        ));
        format!("http://{addr}")
    }

    /// The agent's node leaves the cluster: Consul deregisters the node, and deregistering
    /// a node destroys every session bound to it, whatever its `NodeChecks`
    /// (`agent/consul/state/catalog.go` deleteNodeTxn → `deleteSessionTxn` in
    /// `agent/consul/state/session.go`). Their keys are released or deleted as on expiry.
    /// Returns how many sessions went.
    pub fn leave(&self) -> usize {
        let gone = {
            let mut st = self.shared.lock();
            let node = st.node.clone();
            let ids: Vec<String> = st
                .sessions
                .values()
                .filter(|s| s.node == node)
                .map(|s| s.id.clone())
                .collect();
            for id in &ids {
                st.invalidate_session(id);
            }
            ids.len()
        };
        self.shared.notify();
        gone
    }

    /// A routine restart of the Consul agent: it leaves gracefully on the way down (the
    /// default of client agents, `leave_on_terminate`), so its node's sessions are destroyed
    /// ([`ConsulFake::leave`]), then it listens again on the same port and rejoins.
    pub async fn restart_agent(&mut self) {
        self.stop();
        self.leave();
        self.restart().await;
    }

    /// Stops and starts listening again on the same port with the same data, as a Consul
    /// agent restart would (open connections break).
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for the fake Consul port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind the fake Consul on {}: {e}", self.addr),
            }
        };
        self.server = Some(Self::serve(Arc::clone(&self.shared), listener));
    }
}

impl Drop for ConsulFake {
    fn drop(&mut self) {
        self.stop();
        for o in &self.others {
            o.abort();
        }
        self.ticker.abort();
        self.prober.abort();
    }
}
