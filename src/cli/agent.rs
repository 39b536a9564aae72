//! `shoal agent`: runs a node agent (or, with the sim runtime, many hollow nodes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};
use shoal_agent::{Agent, AgentConfig, RuntimeChoice};
use shoal_core::keys::Keys;
use shoal_core::model::Capacity;
use shoal_core::units::{ByteSize, Dur};
use shoal_store::consul::ConsulConfig;

use crate::cli::StoreArgs;

/// `--runtime` values: the names of [`RuntimeChoice`], listed in `--help`.
fn runtime_choice() -> impl TypedValueParser<Value = RuntimeChoice> {
    clap::builder::PossibleValuesParser::new(RuntimeChoice::NAMES)
        .try_map(|s| s.parse::<RuntimeChoice>())
}

/// `--role` values (`node.role` in constraints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleFlag {
    /// A manager node.
    Manager,
    /// A worker node.
    Worker,
}

impl RoleFlag {
    /// The role as `node.role` compares it.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleFlag::Manager => "manager",
            RoleFlag::Worker => "worker",
        }
    }
}

/// Flags of `shoal agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Store flags.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Node id (stable across restarts; a DNS label); the base of hollow node ids.
    #[arg(long, env = "SHOAL_NODE_ID", value_parser = crate::cli::parse_node_id)]
    pub node_id: String,
    /// Host name reported for the node (default: this host's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Address other hosts reach this node's tasks on (advertised in the node record and the
    /// Consul registrations). Default: the source address of the default route, else the
    /// first non-loopback interface address; a loopback address is refused while the store
    /// or Consul is on another host, unless given here.
    #[arg(long)]
    pub address: Option<String>,
    /// Serve `/metrics` (Prometheus), `/healthz` and the node's task output (for the API,
    /// advertised in the node record) on this address (`127.0.0.1:9465`). Beyond loopback it
    /// needs --agent-token-file and --tls-cert/--tls-key.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// File holding the cluster's agent token (one line; the same file as the API's
    /// --agent-token-file): requests for task output without it are refused.
    #[arg(long, env = "SHOAL_AGENT_TOKEN_FILE", value_name = "FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// PEM certificate chain to serve --listen over HTTPS with (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Most disk one task's output may take (process runtime: the current log file and the
    /// previous one, each half of it).
    #[arg(long, default_value = "20Mi", value_name = "SIZE")]
    pub task_log_max_size: ByteSize,
    /// On a store without a cluster id, make it the cluster of this node's containers instead
    /// of refusing to start (their unassigned containers are then removed).
    #[arg(long)]
    pub adopt_orphans: bool,
    /// The node's role for `node.role` constraints, as in Swarm.
    #[arg(long, value_enum, default_value_t = RoleFlag::Worker)]
    pub role: RoleFlag,
    /// Node label `key=value` (repeatable), for placement constraints.
    #[arg(long = "label", value_parser = crate::cli::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Runtime that runs tasks.
    #[arg(long, default_value = "docker", value_parser = runtime_choice())]
    pub runtime: RuntimeChoice,
    /// CPUs offered (default: detected).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory offered, e.g. 8Gi (default: detected).
    #[arg(long)]
    pub memory: Option<ByteSize>,
    /// Time to live of the node lease: the node is lost about one TTL after the agent dies.
    /// On Consul a lease is a session: its TTL is at least 10s and Consul ends it about 2×TTL
    /// after the last renewal, so with the defaults a node's record goes after ~20s, and the
    /// controller's --node-grace (10s on Consul) follows: node loss takes ~30s on Consul.
    #[arg(long, default_value = "5s")]
    pub lease_ttl: Dur,
    /// Register this many hollow nodes (`<ID>-0000` …) sharing one lease (sim runtime only).
    #[arg(long, default_value_t = 0)]
    pub hollow_nodes: usize,
    /// Directory for task logs (process runtime).
    #[arg(long, default_value = "/var/lib/shoal/agent")]
    pub data_dir: PathBuf,
    /// Consul discovery flags.
    #[command(flatten)]
    pub consul: ConsulArgs,
    /// API that delivers the secrets and configs of this node's tasks (tasks that use any
    /// are rejected without it).
    #[arg(long = "api", env = "SHOAL_API", value_name = "URL")]
    pub api: Option<String>,
    /// File holding this node's API token (`shoal token create --role node --node ID`);
    /// not needed for an API without a token file.
    #[arg(
        long,
        env = "SHOAL_API_TOKEN_FILE",
        value_name = "FILE",
        requires = "api"
    )]
    pub api_token_file: Option<PathBuf>,
    /// Directory on a tmpfs for the tasks' secrets and configs (one 0700 directory per task,
    /// removed when the task ends).
    #[arg(long, env = "SHOAL_AGENT_SECRETS_DIR", default_value = shoal_agent::secrets::DEFAULT_ROOT)]
    pub secrets_dir: PathBuf,
    /// Service networking flags.
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// Service networking flags, shared by `shoal agent` and `shoal dev`.
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Resolver (`IP` or `IP:PORT`, repeatable) that names outside `.shoal` asked inside
    /// tasks are forwarded to (default: the nameservers of the host's /etc/resolv.conf).
    #[arg(long = "upstream-dns", value_name = "ADDR", value_parser = parse_dns_addr)]
    pub upstream_dns: Vec<std::net::SocketAddr>,
    /// Turn off service names, load balancing and the routing mesh on this node.
    #[arg(long)]
    pub no_service_network: bool,
}

impl NetworkArgs {
    /// The networking settings for a node reached at `address` (`None` when turned off).
    pub fn config(
        &self,
        address: &str,
    ) -> anyhow::Result<Option<shoal_agent::network::NetworkConfig>> {
        if self.no_service_network {
            return Ok(None);
        }
        let ip = address
            .parse()
            .with_context(|| format!("--address {address:?} is not an IP address"))?;
        Ok(Some(shoal_agent::network::NetworkConfig::new(
            ip,
            self.upstream_dns.clone(),
        )))
    }
}

fn parse_dns_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

/// Reads a node token file: its first non-empty line.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .with_context(|| format!("the API token file {} holds no token", path.display()))
}

/// Consul discovery flags, shared by `shoal agent` and `shoal dev`.
#[derive(Debug, Clone, Args)]
pub struct ConsulArgs {
    /// Local Consul agent (`HOST:PORT` or `http(s)://HOST:PORT`) where running tasks whose
    /// manifest has `discovery.consul` are registered; discovery is off when not given.
    #[arg(long = "consul", env = "SHOAL_CONSUL", value_name = "HOST:PORT")]
    pub consul_address: Option<String>,
    /// ACL token for the Consul agent (used only with --consul).
    #[arg(
        long = "consul-token",
        env = "CONSUL_HTTP_TOKEN",
        hide_env_values = true
    )]
    pub consul_token: Option<String>,
    /// PEM file with the CA that signed the Consul agent's certificate (used only with
    /// --consul; implies https when the address has no scheme).
    #[arg(long = "consul-ca-file", env = "CONSUL_CACERT")]
    pub consul_ca_file: Option<PathBuf>,
}

impl ConsulArgs {
    /// The Consul agent to register tasks in, when discovery is on.
    pub fn config(&self) -> Option<ConsulConfig> {
        let address = self
            .consul_address
            .as_ref()
            .filter(|a| !a.trim().is_empty())?;
        let mut config = ConsulConfig::new(address.trim());
        config.token = self.consul_token.clone().filter(|t| !t.is_empty());
        config.ca_file = self.consul_ca_file.clone();
        Some(config)
    }
}

/// Runs `shoal agent` until Ctrl-C or SIGTERM.
pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let stop = crate::cli::shutdown_signal();
    if args.hollow_nodes > 0 && args.runtime != RuntimeChoice::Sim {
        anyhow::bail!("--hollow-nodes needs --runtime sim");
    }
    let store = args.store.open().await?;
    let keys = Keys::new(&args.store.prefix);
    let mut config = AgentConfig::new(&args.node_id);
    if let Some(h) = args.hostname {
        config.hostname = h;
    }
    let (address, source) = shoal_agent::address::choose(args.address.as_deref());
    let mut remotes = shoal_agent::address::url_hosts(&args.store.store);
    if let Some(c) = &args.consul.consul_address {
        remotes.push(shoal_agent::address::host_of(c));
    }
    shoal_agent::address::check(&address, &source, &remotes)?;
    println!("node {} address {address} ({source})", args.node_id);
    tracing::info!(node = %args.node_id, %address, %source, "node address");
    config.network = if args.hollow_nodes > 0 || args.runtime != RuntimeChoice::Docker {
        None
    } else {
        args.network.config(&address)?
    };
    config.address = address;
    config.role = args.role.as_str().to_string();
    config.adopt_orphans = args.adopt_orphans;
    config.instance_id = shoal_agent::node::instance_id_in(&args.data_dir).with_context(|| {
        format!(
            "cannot keep the agent's instance id in {}",
            args.data_dir.display()
        )
    })?;
    config.labels = args.labels.into_iter().collect::<BTreeMap<_, _>>();
    config.lease_ttl = args.lease_ttl.get();
    config.hollow_nodes = args.hollow_nodes;
    config.consul = args.consul.config();
    config.secrets_dir = args.secrets_dir;
    if let Some(url) = args.api {
        let token = match &args.api_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        config.api = Some(shoal_agent::ApiEndpoint { url, token });
    }
    if config.consul.is_some() && args.hollow_nodes > 0 {
        anyhow::bail!("--consul is not available with --hollow-nodes");
    }
    if args.cpus.is_some() || args.memory.is_some() {
        let detected = shoal_agent::node::detect_capacity();
        config.capacity = Some(Capacity {
            cpus: args.cpus.unwrap_or(detected.cpus),
            memory: args.memory.unwrap_or(detected.memory),
        });
    }
    let runtime: std::sync::Arc<dyn shoal_agent::runtime::Runtime> = match args.runtime {
        RuntimeChoice::Process => std::sync::Arc::new(
            shoal_agent::runtime::process::ProcessRuntime::new(&args.data_dir)
                .with_log_max_bytes(args.task_log_max_size.0 / 2),
        ),
        choice => shoal_agent::open_runtime(choice, &args.node_id, &args.data_dir).await?,
    };
    let logs = shoal_agent::logs::http::LogService::new(runtime.clone(), &args.node_id);
    let options = shoal_api::ops::OpsOptions {
        // Hollow nodes run nothing: they have no output to serve.
        guarded: (args.hollow_nodes == 0).then(|| logs.router()),
        token: match &args.agent_token_file {
            Some(path) => Some(shoal_api::ops::AgentToken::load(path)?),
            None => None,
        },
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| shoal_api::server::TlsFiles { cert, key }),
    };
    let listener = crate::cli::bind_ops(args.listen, &options).await?;
    let mut registry = agent_registry(&config, runtime.name());
    logs.register(&mut registry);
    if let Some(l) = &listener {
        config.agent_url = Some(agent_url(l, &config.address, options.tls.is_some())?);
    }
    let agent = Agent::new(store, keys, config, runtime);
    if let Some(n) = agent.network() {
        n.metrics().register(&mut registry);
    }
    if let Some(listener) = listener {
        crate::cli::serve_ops_on(listener, registry, "agent", options)?;
    }
    agent.run(stop).await?;
    Ok(ExitCode::SUCCESS)
}

/// The URL the API reaches the listener at: its own address, or the node's address when it
/// listens on every address.
fn agent_url(
    listener: &tokio::net::TcpListener,
    address: &str,
    tls: bool,
) -> anyhow::Result<String> {
    let local = listener.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    let host = if local.ip().is_unspecified() {
        match address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => address.to_string(),
        }
    } else {
        match local.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    Ok(format!("{scheme}://{host}:{}", local.port()))
}

/// The agent's metrics: `shoal_agent_info{node,role,runtime} 1`.
fn agent_registry(config: &AgentConfig, runtime: &str) -> prometheus_client::registry::Registry {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let mut registry = prometheus_client::registry::Registry::default();
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    info.get_or_create(&vec![
        ("node".to_string(), config.node_id.clone()),
        ("role".to_string(), config.role.clone()),
        ("runtime".to_string(), runtime.to_string()),
    ])
    .set(1);
    registry.register("shoal_agent_info", "The node this agent runs", info);
    registry
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::{Cli, Command};

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn consul_flags_turn_discovery_on_for_agent_and_dev() {
        let cli = Cli::try_parse_from([
            "shoal",
            "agent",
            "--store",
            "file:///tmp/s",
            "--node-id",
            "n1",
            "--address",
            "10.0.0.7",
            "--consul",
            "127.0.0.1:8500",
            "--consul-token",
            "secret",
        ])
        .expect("agent flags parse");
        let Command::Agent(args) = cli.command else {
            panic!("not the agent command");
        };
        let config = args.consul.config().expect("discovery is on");
        assert_eq!(config.address, "127.0.0.1:8500");
        assert_eq!(config.token.as_deref(), Some("secret"));
        assert_eq!(args.address.as_deref(), Some("10.0.0.7"));

        let cli = Cli::try_parse_from(["shoal", "dev", "--consul", "127.0.0.1:8500"])
            .expect("dev flags parse");
        let Command::Dev(args) = cli.command else {
            panic!("not the dev command");
        };
        assert_eq!(
            args.consul.config().map(|c| c.address).as_deref(),
            Some("127.0.0.1:8500")
        );
    }

    #[test]
    fn discovery_is_off_without_an_address() {
        let args = super::ConsulArgs {
            consul_address: None,
            consul_token: Some("secret".into()),
            consul_ca_file: None,
        };
        assert!(
            args.config().is_none(),
            "a token alone does not turn discovery on"
        );
    }
}
