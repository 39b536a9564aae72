//! Service networking on a node: names, load balancing and the routing mesh, without overlay
//! networks or an external proxy (see docs/networking.md).
//!
//! The agent watches `endpoints/` (written by the controller) into a routing [`table`]. For
//! every running task container it opens, *inside the container's network namespace* (the
//! trick Docker uses for its embedded DNS; see [`netns`]):
//! - a resolver ([`dns`]) on [`RESOLVER_ADDRESS`]`:53`, UDP and TCP, given to the container as
//!   its nameserver with search domains `<ns>.shoal shoal`;
//! - one TCP listener on [`RESOLVER_ADDRESS`]`:`[`REDIRECT_PORT`] that proxies ([`proxy`]) to
//!   the service's eligible tasks at `node address:host port`. Each service has a stable
//!   address in 127.64.0.0/10; one NAT rule in the container's namespace sends connections
//!   to that range there, and the proxy reads the original destination (`SO_ORIGINAL_DST`).
//!   A listener per service address would collide with a task listening on the same port on
//!   all addresses (`0.0.0.0:8080` in a task that calls another service on 8080).
//!
//! On the node itself it listens on `--address:published` for every ingress port and forwards
//! to eligible tasks anywhere (the routing mesh). Sockets go with their container; the agent
//! checks the containers it serves every second, so adopted containers get theirs again after
//! an agent restart and nothing outlives a container.

pub mod dns;
pub mod metrics;
pub mod netns;
pub mod proxy;
pub mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use hickory_server::Server;
use shoal_core::endpoints::{Endpoints, RESOLVER_ADDRESS};
use shoal_core::keys::Keys;
use shoal_store::Store;
use shoal_store::reflector::{Event, watcher};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

pub use metrics::NetMetrics;
use netns::{Opened, Want};
use proxy::Target;
use table::Table;

/// Port of the proxy inside each container (on [`RESOLVER_ADDRESS`]).
pub const REDIRECT_PORT: u16 = 41953;

/// Idle timeout of TCP connections to the resolver.
const DNS_TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Networking settings of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The node's address: ingress listeners bind it.
    pub address: IpAddr,
    /// Resolvers names outside `.shoal` are forwarded to.
    pub upstream: Vec<SocketAddr>,
    /// The `iptables` command that adds the redirect rule in containers' namespaces (found on
    /// `PATH` unless a path is given).
    pub iptables: PathBuf,
}

impl NetworkConfig {
    /// Settings for `address`, forwarding to `upstream` or, when empty, to the host's
    /// `/etc/resolv.conf` resolvers.
    pub fn new(address: IpAddr, upstream: Vec<SocketAddr>) -> Self {
        let upstream = if upstream.is_empty() {
            dns::upstream_from_resolv_conf(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            )
        } else {
            upstream
        };
        NetworkConfig {
            address,
            upstream,
            iptables: PathBuf::from("iptables"),
        }
    }
}

/// The sockets opened in one container's namespace.
struct Sandbox {
    ns_path: PathBuf,
    dns: Server<dns::Resolver>,
    proxy: AbortHandle,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.dns.shutdown_token().cancel();
        self.proxy.abort();
    }
}

/// The NAT rule that sends a container's connections to service addresses to its proxy.
fn redirect_rule() -> Vec<String> {
    [
        "OUTPUT",
        "-d",
        shoal_core::endpoints::SERVICE_RANGE,
        "-p",
        "tcp",
        "-j",
        "DNAT",
        "--to-destination",
    ]
    .into_iter()
    .map(str::to_string)
    .chain([format!("{RESOLVER_ADDRESS}:{REDIRECT_PORT}")])
    .collect()
}

struct Inner {
    config: NetworkConfig,
    table: Arc<RwLock<Arc<Table>>>,
    records: Mutex<BTreeMap<String, Endpoints>>,
    sandboxes: Mutex<HashMap<String, Sandbox>>,
    mesh: Mutex<BTreeMap<u16, AbortHandle>>,
    metrics: NetMetrics,
    changed: watch::Sender<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for l in self
            .mesh
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            l.abort();
        }
    }
}

/// Service networking of one node. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Network {
    /// Networking for `config`, or why this process cannot provide it (a sentence naming the
    /// missing privilege or command).
    pub fn new(config: NetworkConfig) -> Result<Self, String> {
        netns::check_privilege(&config.iptables)?;
        Ok(Network {
            inner: Arc::new(Inner {
                config,
                table: Arc::new(RwLock::new(Arc::new(Table::default()))),
                records: Mutex::new(BTreeMap::new()),
                sandboxes: Mutex::new(HashMap::new()),
                mesh: Mutex::new(BTreeMap::new()),
                metrics: NetMetrics::default(),
                changed: watch::channel(0).0,
            }),
        })
    }

    /// The counters (register them with [`NetMetrics::register`]).
    pub fn metrics(&self) -> &NetMetrics {
        &self.inner.metrics
    }

    /// The node address ingress listeners bind.
    pub fn address(&self) -> IpAddr {
        self.inner.config.address
    }

    /// Ids of the containers currently served.
    pub fn attached(&self) -> BTreeSet<String> {
        lock(&self.inner.sandboxes).keys().cloned().collect()
    }

    /// Ingress ports the node listens on.
    pub fn ingress_ports(&self) -> BTreeSet<u16> {
        lock(&self.inner.mesh).keys().copied().collect()
    }

    fn table(&self) -> Arc<Table> {
        self.inner
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the resolver and the proxy in the namespace at `ns_path` of container `id`,
    /// whose service lives in `namespace`, and redirects service addresses to the proxy.
    /// Again for the same namespace: nothing happens.
    pub async fn attach(&self, id: &str, ns_path: &Path, namespace: &str) -> std::io::Result<()> {
        if lock(&self.inner.sandboxes)
            .get(id)
            .is_some_and(|s| s.ns_path == ns_path)
        {
            return Ok(());
        }
        let dns_addr = SocketAddr::from((RESOLVER_ADDRESS, 53));
        let proxy_addr = SocketAddr::from((RESOLVER_ADDRESS, REDIRECT_PORT));
        let path = ns_path.to_owned();
        let iptables = self.inner.config.iptables.clone();
        let opened = tokio::task::spawn_blocking(move || {
            netns::open_in(
                &path,
                vec![
                    Want::Udp(dns_addr),
                    Want::Tcp(dns_addr),
                    Want::Tcp(proxy_addr),
                ],
                &iptables,
                redirect_rule(),
            )
        })
        .await
        .map_err(std::io::Error::other)??;
        let resolver = dns::Resolver {
            table: self.inner.table.clone(),
            namespace: namespace.to_string(),
            upstream: Arc::new(self.inner.config.upstream.clone()),
            metrics: self.inner.metrics.clone(),
        };
        let mut server = Server::new(resolver);
        let mut proxy = None;
        for o in opened {
            match o {
                Opened::Udp(u) => server.register_socket(tokio::net::UdpSocket::from_std(u)?),
                Opened::Tcp(t) if proxy.is_none() && t.local_addr()?.port() == REDIRECT_PORT => {
                    let l = tokio::net::TcpListener::from_std(t)?;
                    let h = tokio::spawn(proxy::serve(
                        l,
                        Target::Redirected,
                        self.inner.table.clone(),
                        self.inner.metrics.clone(),
                    ));
                    proxy = Some(h.abort_handle());
                }
                Opened::Tcp(t) => server.register_listener(
                    tokio::net::TcpListener::from_std(t)?,
                    DNS_TCP_TIMEOUT,
                    64,
                ),
            }
        }
        let proxy =
            proxy.ok_or_else(|| std::io::Error::other("the proxy socket was not opened"))?;
        let sandbox = Sandbox {
            ns_path: ns_path.to_owned(),
            dns: server,
            proxy,
        };
        lock(&self.inner.sandboxes).insert(id.to_string(), sandbox);
        tracing::debug!(container = %id, "resolver and proxy open in the container's namespace");
        Ok(())
    }

    /// Closes everything opened for container `id`.
    pub fn detach(&self, id: &str) {
        if lock(&self.inner.sandboxes).remove(id).is_some() {
            tracing::debug!(container = %id, "container's sockets closed");
        }
    }

    /// Opens the ingress listeners the table has and the node lacks; closes the others.
    fn sync_mesh(&self) {
        let wanted = self.table().ingress_ports();
        let mut mesh = lock(&self.inner.mesh);
        mesh.retain(|p, h| {
            let keep = wanted.contains(p);
            if !keep {
                h.abort();
            }
            keep
        });
        for port in wanted {
            if mesh.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.inner.config.address, port);
            match proxy::bind_host(addr) {
                Ok(l) => {
                    let h = tokio::spawn(proxy::serve(
                        l,
                        Target::Ingress(port),
                        self.inner.table.clone(),
                        self.inner.metrics.clone(),
                    ));
                    mesh.insert(port, h.abort_handle());
                    tracing::info!(%addr, "routing mesh listening");
                }
                Err(e) => {
                    self.inner.metrics.error("bind");
                    tracing::warn!(%addr, error = %e, "cannot open an ingress listener; retrying at the next change");
                }
            }
        }
    }

    fn apply(&self, ev: Event<Option<Endpoints>>) {
        let mut recs = lock(&self.inner.records);
        match ev {
            Event::Init(all) => {
                *recs = all
                    .into_iter()
                    .filter_map(|(k, v, _)| Some((k, v?)))
                    .collect();
            }
            Event::Apply(k, Some(v), _) => {
                recs.insert(k, v);
            }
            Event::Apply(k, None, _) | Event::Delete(k, _) => {
                recs.remove(&k);
            }
        }
        let previous = self.table();
        let table = Arc::new(Table::build(recs.values(), &previous));
        *self.inner.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// Follows `endpoints/` until `shutdown` is cancelled, keeping the table, the containers' listeners and
    /// the ingress listeners up to date. Everything opened is closed when it returns.
    pub async fn run(self, store: Arc<dyn Store>, keys: Keys, shutdown: CancellationToken) {
        let mut events =
            watcher(
                store,
                &keys.endpoints_prefix(),
                |key, bytes| match serde_json::from_slice::<Endpoints>(&bytes) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "ignoring an unreadable endpoints record");
                        None
                    }
                },
            );
        loop {
            tokio::select! {
                ev = events.next() => {
                    let Some(ev) = ev else { break };
                    self.apply(ev);
                    self.sync_mesh();
                    self.inner.changed.send_modify(|n| *n += 1);
                }
                () = shutdown.cancelled() => break,
            }
        }
        lock(&self.inner.sandboxes).clear();
        for h in std::mem::take(&mut *lock(&self.inner.mesh)).into_values() {
            h.abort();
        }
    }

    /// Changes once per endpoints update applied (for tests).
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }
}
