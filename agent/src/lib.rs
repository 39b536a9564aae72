//! shoal-agent: the per-node agent. It registers its node (`nodes/<id>`, leased), watches
//! the tasks assigned to it, runs them through a runtime (docker, process, or sim for hollow
//! nodes) and reports their state (`taskstatus/<node>/<task>`).
//!
//! In process:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn shoal_store::Store>) -> Result<(), shoal_agent::AgentError> {
//! use shoal_agent::{Agent, AgentConfig, RuntimeChoice};
//! let config = AgentConfig::new("node-1");
//! let runtime = shoal_agent::open_runtime(RuntimeChoice::Sim, "node-1", "/tmp/shoal").await?;
//! let agent = Agent::new(store, shoal_core::keys::Keys::default(), config, runtime).spawn();
//! // ... later
//! agent.stop().await;
//! # Ok(()) }
//! ```
//!
//! Hollow nodes: `AgentConfig { hollow_nodes: 1000, .. }` with the sim runtime registers
//! `node-1-0000` … `node-1-0999` under one shared lease and runs their tasks from one watch.
//!
//! Secrets and configs: with `AgentConfig::api` set, the agent fetches the secrets and configs
//! of its tasks from the API at task start and hands them to the task as in-memory files; see
//! [`secrets`].
//!
//! Discovery: with `AgentConfig::consul` set, running tasks whose template has `consul` are
//! registered in that (local) Consul agent and deregistered before they stop; see
//! [`discovery`]. Consul being unreachable never holds a task up.

pub mod address;
pub mod cluster;
pub mod discovery;
pub mod logs;
pub mod network;
pub mod node;
mod room;
pub mod runtime;
pub mod secrets;
pub mod status;
pub mod task_runner;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_core::keys::Keys;
use shoal_core::model::{Capacity, NodeInfo, Timestamp};
use shoal_store::Store;
use shoal_store::consul::{ConsulClient, ConsulConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::runtime::{Runtime, RuntimeError};
use crate::task_runner::TaskRunnerContext;

/// Version reported in node records.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What can stop an agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration cannot work.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// Secrets and configs cannot be delivered from the configured directory.
    #[error("cannot deliver secrets: {0}")]
    Secrets(#[from] secrets::DeliveryError),
    /// Another live agent holds this node id.
    #[error(transparent)]
    Register(#[from] node::RegisterError),
    /// The store is not the cluster of this node's containers.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// The runtime could not be opened.
    #[error("cannot open the {runtime} runtime: {source}")]
    Runtime {
        /// Runtime name.
        runtime: &'static str,
        /// What went wrong.
        #[source]
        source: RuntimeError,
    },
}

/// Which runtime an agent uses (`shoal agent --runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// Docker containers (the local Docker Engine).
    Docker,
    /// Host processes.
    Process,
    /// Nothing runs (hollow nodes for tests and benchmarks).
    Sim,
}

impl RuntimeChoice {
    /// Every choice, by the name `--runtime` takes.
    pub const NAMES: [&'static str; 3] = ["docker", "process", "sim"];

    /// The name `--runtime` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeChoice::Docker => "docker",
            RuntimeChoice::Process => "process",
            RuntimeChoice::Sim => "sim",
        }
    }
}

impl std::fmt::Display for RuntimeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RuntimeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker" => Ok(RuntimeChoice::Docker),
            "process" => Ok(RuntimeChoice::Process),
            "sim" => Ok(RuntimeChoice::Sim),
            _ => Err(format!(
                "unknown runtime {s:?}: expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Opens a runtime: docker connects to the local engine and follows `node`'s containers;
/// process keeps task logs under `data_dir/logs`.
pub async fn open_runtime(
    choice: RuntimeChoice,
    node: &str,
    data_dir: impl AsRef<Path>,
) -> Result<Arc<dyn Runtime>, AgentError> {
    Ok(match choice {
        RuntimeChoice::Docker => Arc::new(
            runtime::docker::DockerRuntime::connect(node)
                .await
                .map_err(|source| AgentError::Runtime {
                    runtime: "docker",
                    source,
                })?,
        ),
        RuntimeChoice::Process => {
            Arc::new(runtime::process::ProcessRuntime::new(data_dir.as_ref()))
        }
        RuntimeChoice::Sim => Arc::new(runtime::sim::SimRuntime::new()),
    })
}

/// How an agent presents its node(s).
#[derive(Clone)]
pub struct AgentConfig {
    /// Node id (stable across restarts); the base of hollow node ids.
    pub node_id: String,
    /// Host name.
    pub hostname: String,
    /// Address other hosts reach the node's tasks on.
    pub address: String,
    /// Engine labels.
    pub labels: BTreeMap<String, String>,
    /// Capacity; detected from the host when `None`.
    pub capacity: Option<Capacity>,
    /// Time to live of the node lease.
    pub lease_ttl: Duration,
    /// Number of hollow nodes (0: one real node named `node_id`).
    pub hollow_nodes: usize,
    /// The node's local Consul agent, where running tasks with `consul` are registered
    /// (`None`: no discovery). Not available with hollow nodes.
    pub consul: Option<ConsulConfig>,
    /// How often the Consul registrations are compared with the tasks and repaired
    /// ([`discovery::sync`]; 30 s by default).
    pub consul_sync_interval: Duration,
    /// The API that delivers the secrets and configs of this node's tasks, with the node's
    /// token (`None`: tasks that use secrets or configs are rejected).
    pub api: Option<ApiEndpoint>,
    /// Root of the tasks' in-memory directories of secrets and configs (on a tmpfs).
    pub secrets_dir: PathBuf,
    /// The node's role for `node.role` constraints: one of [`shoal_core::constraint::ROLES`].
    pub role: String,
    /// Service networking (names, load balancing, routing mesh) for docker tasks (`None`:
    /// off). Hollow nodes run none.
    pub network: Option<network::NetworkConfig>,
    /// Identifies this agent to its node records ([`node::instance_id_in`] keeps one in the
    /// data directory across restarts; a fresh one per process otherwise).
    pub instance_id: String,
    /// On a store without a cluster id, take the cluster id of the node's containers instead
    /// of refusing to start (`--adopt-orphans`).
    pub adopt_orphans: bool,
    /// Where this agent serves its tasks' output (`http://ADDR:PORT`), advertised in its node
    /// record so the API can reach it; `None` when it does not listen.
    pub agent_url: Option<String>,
}

/// How the agent reaches the API: its URL and the node's own token (`None` for an API
/// without a token file, which listens on loopback only).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiEndpoint {
    /// API URL (`http://127.0.0.1:7878`).
    pub url: String,
    /// The node token (`shoal token create --role node --node ID`).
    pub token: Option<String>,
}

impl std::fmt::Debug for ApiEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("ApiEndpoint")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Consul token stays out of logs.
        f.debug_struct("AgentConfig")
            .field("node_id", &self.node_id)
            .field("hostname", &self.hostname)
            .field("address", &self.address)
            .field("labels", &self.labels)
            .field("capacity", &self.capacity)
            .field("lease_ttl", &self.lease_ttl)
            .field("hollow_nodes", &self.hollow_nodes)
            .field("consul", &self.consul.as_ref().map(|c| &c.address))
            .field("api", &self.api)
            .field("secrets_dir", &self.secrets_dir)
            .field("role", &self.role)
            .field("network", &self.network)
            .field("agent_url", &self.agent_url)
            .finish()
    }
}

impl PartialEq for AgentConfig {
    fn eq(&self, other: &Self) -> bool {
        let consul_key = |c: &Option<ConsulConfig>| {
            c.as_ref().map(|c| {
                (
                    c.address.clone(),
                    c.token.clone(),
                    c.ca_file.clone(),
                    c.timeout,
                    c.connect_timeout,
                )
            })
        };
        self.node_id == other.node_id
            && self.hostname == other.hostname
            && self.address == other.address
            && self.labels == other.labels
            && self.capacity == other.capacity
            && self.lease_ttl == other.lease_ttl
            && self.hollow_nodes == other.hollow_nodes
            && consul_key(&self.consul) == consul_key(&other.consul)
            && self.api == other.api
            && self.secrets_dir == other.secrets_dir
            && self.network == other.network
            && self.agent_url == other.agent_url
    }
}

impl AgentConfig {
    /// Defaults for `node_id`: this host's name, address 127.0.0.1, no labels, detected
    /// capacity, a 5 s lease.
    pub fn new(node_id: &str) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| node_id.to_string());
        AgentConfig {
            node_id: node_id.to_string(),
            hostname,
            address: "127.0.0.1".to_string(),
            labels: BTreeMap::new(),
            capacity: None,
            lease_ttl: Duration::from_secs(5),
            hollow_nodes: 0,
            consul: None,
            consul_sync_interval: discovery::SYNC_INTERVAL,
            api: None,
            secrets_dir: PathBuf::from(secrets::DEFAULT_ROOT),
            role: "worker".to_string(),
            network: None,
            instance_id: node::new_instance_id(),
            adopt_orphans: false,
            agent_url: None,
        }
    }

    /// Ids of the nodes this agent runs.
    pub fn node_ids(&self) -> Vec<String> {
        if self.hollow_nodes == 0 {
            vec![self.node_id.clone()]
        } else {
            node::hollow_ids(&self.node_id, self.hollow_nodes)
        }
    }
}

/// A node agent.
pub struct Agent {
    store: Arc<dyn Store>,
    keys: Keys,
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    network: Option<network::Network>,
    /// Why service networking is configured but cannot run here (published in the node
    /// record).
    network_unavailable: Option<String>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("runtime", &self.runtime.name())
            .finish()
    }
}

/// A running agent started by [`Agent::spawn`].
#[derive(Debug)]
pub struct AgentHandle {
    shutdown: CancellationToken,
    registered: watch::Receiver<bool>,
    join: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl AgentHandle {
    /// Turns true once the node records are in the store (false while re-registering).
    pub fn registered(&self) -> watch::Receiver<bool> {
        self.registered.clone()
    }

    /// Stops the agent and waits for it (tasks that outlive the agent are left running).
    pub async fn stop(self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Config(format!(
                "agent task ended abnormally: {e}"
            ))),
        }
    }
}

/// Removes the secrets and configs of every task that no longer runs (at shutdown, once the
/// host processes are stopped; containers that keep running keep theirs).
async fn remove_files_of_stopped_tasks(
    runtime: &dyn Runtime,
    delivery: &secrets::Delivery,
    nodes: &BTreeSet<String>,
) {
    match runtime.list(nodes).await {
        Ok(existing) => {
            let running = existing
                .into_iter()
                .filter(|ex| ex.exit.is_none())
                .map(|ex| (ex.node_id, ex.task_id))
                .collect();
            delivery.sweep(nodes, &running);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the runtime's tasks; their secrets are removed at the next start")
        }
    }
}

impl Agent {
    /// An agent for `config`'s node(s) on `runtime`.
    pub fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        config: AgentConfig,
        runtime: Arc<dyn Runtime>,
    ) -> Self {
        let mut network_unavailable = None;
        let network = match &config.network {
            Some(n)
                if config.hollow_nodes == 0
                    && runtime
                        .offers()
                        .contains(&shoal_core::manifest::RuntimeKind::Docker) =>
            {
                match network::Network::new(n.clone()) {
                    Ok(net) => Some(net),
                    Err(why) => {
                        // Said once; tasks still run, without names, and the node record
                        // carries the reason for `shoal describe`.
                        tracing::warn!(node = %config.node_id, "service networking is off: {why}");
                        network_unavailable = Some(why);
                        None
                    }
                }
            }
            _ => None,
        };
        Agent {
            store,
            keys,
            config,
            runtime,
            network,
            network_unavailable,
        }
    }

    /// The node's service networking, when it is on (register its metrics before spawning).
    pub fn network(&self) -> Option<&network::Network> {
        self.network.as_ref()
    }

    /// The records this agent registers.
    pub fn node_infos(&self) -> Vec<NodeInfo> {
        let c = &self.config;
        let capacity = c.capacity.clone().unwrap_or_else(node::detect_capacity);
        let started_at = Timestamp::now();
        let hollow = c.hollow_nodes > 0;
        c.node_ids()
            .into_iter()
            .map(|id| NodeInfo {
                hostname: if hollow {
                    id.clone()
                } else {
                    c.hostname.clone()
                },
                id,
                address: c.address.clone(),
                labels: c.labels.clone(),
                runtimes: self.runtime.offers(),
                capacity: capacity.clone(),
                role: c.role.clone(),
                instance: c.instance_id.clone(),
                agent_version: AGENT_VERSION.to_string(),
                started_at,
                network_unavailable: self.network_unavailable.clone(),
                agent_url: (!hollow).then(|| c.agent_url.clone()).flatten(),
            })
            .collect()
    }

    /// Starts the agent on the current runtime; stop it with [`AgentHandle::stop`].
    pub fn spawn(self) -> AgentHandle {
        let shutdown = CancellationToken::new();
        let (reg_tx, registered) = watch::channel(false);
        let join = tokio::spawn(self.run_inner(shutdown.clone(), reg_tx));
        AgentHandle {
            shutdown,
            registered,
            join,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let (reg_tx, _reg) = watch::channel(false);
        self.run_inner(shutdown, reg_tx).await
    }

    async fn run_inner(
        self,
        shutdown: CancellationToken,
        registered: watch::Sender<bool>,
    ) -> Result<(), AgentError> {
        if self.config.hollow_nodes > 0 && self.runtime.name() != "sim" {
            return Err(AgentError::Config(
                "hollow nodes need the sim runtime".into(),
            ));
        }
        if let Some(problem) = shoal_core::validate::dns_label_problem(&self.config.node_id) {
            return Err(AgentError::Config(format!(
                "node id {:?} is not a DNS label: it {problem}",
                self.config.node_id
            )));
        }
        if self.config.hollow_nodes > 0 && self.config.consul.is_some() {
            return Err(AgentError::Config(
                "consul discovery is not available with hollow nodes".into(),
            ));
        }
        let discovery = match &self.config.consul {
            Some(c) => {
                let client = ConsulClient::new(c.clone())
                    .map_err(|e| AgentError::Config(format!("consul agent {}: {e}", c.address)))?;
                Some(Arc::new(
                    discovery::ConsulRegistrar::new(
                        client,
                        self.config.node_id.clone(),
                        self.config.address.clone(),
                    )
                    .with_sync_interval(self.config.consul_sync_interval),
                ))
            }
            None => None,
        };
        let delivery = match &self.config.api {
            Some(api) => Some(Arc::new(secrets::Delivery::new(
                shoal_api::Client::new(&api.url, api.token.clone()),
                &self.config.secrets_dir,
            )?)),
            None => None,
        };
        let infos = self.node_infos();
        let nodes: BTreeSet<String> = infos.iter().map(|n| n.id.clone()).collect();
        let span = tracing::info_span!("agent", node = %self.config.node_id, nodes = nodes.len(), runtime = self.runtime.name());
        async move {
            tracing::info!("agent starting");
            let registrar = node::Registrar::new(
                self.store.clone(),
                self.keys.clone(),
                infos,
                self.config.lease_ttl,
            );
            // Learn which cluster this is before touching anything on the node.
            let cluster_id = tokio::select! {
                r = cluster::resolve(
                    self.store.as_ref(),
                    &self.keys,
                    self.runtime.as_ref(),
                    &nodes,
                    self.config.adopt_orphans,
                ) => r?,
                () = shutdown.cancelled() => return Ok(()),
            };
            tracing::info!(cluster = %cluster_id, "serving cluster");
            self.runtime.set_cluster(&cluster_id);
            // Claim the node before running anything: a node id held by another live agent
            // must not run its tasks a second time.
            let lease = tokio::select! {
                r = registrar.claim() => r?,
                () = shutdown.cancelled() => return Ok(()),
            };
            // Stops with the agent, or on its own when the node is taken by another agent.
            let shutdown = shutdown.child_token();
            let reg = {
                let shutdown = shutdown.clone();
                tokio::spawn(
                    async move {
                        let r = registrar.run(lease, shutdown.clone(), registered).await;
                        if r.is_err() {
                            shutdown.cancel();
                        }
                        r
                    }
                    .in_current_span(),
                )
            };
            if self.config.hollow_nodes == 0 {
                let address = self.config.address.parse().ok();
                self.runtime
                    .configure_network(address, self.network.clone());
            }
            let net = self.network.clone().map(|n| {
                tokio::spawn(
                    n.run(self.store.clone(), self.keys.clone(), shutdown.clone())
                        .in_current_span(),
                )
            });
            let (sink, writer) = status::spawn(self.store.clone(), self.keys.clone());
            let (ready_tx, ready_rx) = watch::channel(false);
            let mut ctx =
                TaskRunnerContext::new(self.runtime.clone(), sink.clone(), self.keys.clone());
            ctx.discovery = discovery;
            ctx.discovery_ready = ready_rx;
            ctx.delivery = delivery.clone();
            let worker =
                worker::Worker::new(self.store.clone(), self.keys.clone(), nodes.clone(), ctx)
                    .with_stale_cleanup(ready_tx)
                    .with_cluster(cluster_id);
            worker.run(shutdown.clone()).await;
            // The worker (and its runners) are gone: tasks that outlive the agent keep running.
            if !self.runtime.tasks_outlive_agent() {
                self.runtime.shutdown().await;
            }
            if let Some(delivery) = &delivery {
                remove_files_of_stopped_tasks(self.runtime.as_ref(), delivery, &nodes).await;
            }
            if tokio::time::timeout(Duration::from_secs(3), sink.flush())
                .await
                .is_err()
            {
                tracing::warn!("some task statuses could not be written before shutdown");
            }
            writer.abort();
            if let Some(net) = net {
                let _ = net.await;
            }
            if let Ok(Err(e)) = reg.await {
                tracing::error!(error = %e, "agent stopped: its node is held by another agent");
                return Err(e.into());
            }
            tracing::info!("agent stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}
