//! Command-line interface: the clap definitions and one module per subcommand family.

pub mod agent;
pub mod api;
pub mod client;
pub mod controller;
pub mod dev;
pub mod rbac;
pub mod token;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Shoal: a declarative container orchestrator.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// Log output format (filter with RUST_LOG, e.g. RUST_LOG=shoal=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SHOAL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Store flags shared by every server subcommand.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URL: etcd://HOST:PORT[,HOST:PORT...], consul://HOST:PORT, or file:///PATH (embedded).
    #[arg(long, env = "SHOAL_STORE")]
    pub store: String,
    /// Key prefix every Shoal key lives under.
    #[arg(long, env = "SHOAL_PREFIX", default_value = shoal_core::keys::DEFAULT_PREFIX)]
    pub prefix: String,
    /// CA certificate (PEM) the store's certificate must chain to; the store is then reached
    /// over TLS.
    #[arg(long, env = "SHOAL_STORE_CA", value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// Client certificate (PEM) for the store, with --store-key; etcd takes the user from its
    /// common name when no --store-user is given.
    #[arg(long, env = "SHOAL_STORE_CERT", value_name = "FILE")]
    pub store_cert: Option<PathBuf>,
    /// Private key (PEM) of --store-cert.
    #[arg(long, env = "SHOAL_STORE_KEY", value_name = "FILE")]
    pub store_key: Option<PathBuf>,
    /// etcd user name (`shoal rbac apply` makes shoal-controller, shoal-api, shoal-agent-<node>).
    #[arg(long, env = "SHOAL_STORE_USER", value_name = "NAME")]
    pub store_user: Option<String>,
    /// File holding the password of --store-user.
    #[arg(long, env = "SHOAL_STORE_PASSWORD_FILE", value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store's TLS and credential settings.
    pub fn options(&self) -> shoal_store::StoreOptions {
        shoal_store::StoreOptions {
            ca: self.store_ca.clone(),
            cert: self.store_cert.clone(),
            key: self.store_key.clone(),
            user: self.store_user.clone(),
            password_file: self.store_password_file.clone(),
        }
    }

    /// The store URL as it may be printed (credentials in it replaced by `***`).
    pub fn shown_url(&self) -> String {
        shoal_store::redact_url(&self.store)
    }

    /// Opens the store with these settings.
    pub async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn shoal_store::Store>> {
        use anyhow::Context as _;
        shoal_store::open_store_with(&self.store, &self.options())
            .await
            .with_context(|| format!("opening store {}", self.shown_url()))
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests without applying them; prints FILE:LINE:COL: message per error.
    #[command(after_help = client::EXIT_HELP)]
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of the Service manifest.
    Schema(validate::SchemaArgs),
    /// Run the controller (reconciles services into task placements).
    Controller(controller::ControllerArgs),
    /// Run a node agent (runs the tasks assigned to this node).
    Agent(Box<agent::AgentArgs>),
    /// Run the API server.
    Api(api::ApiArgs),
    /// Run everything in one process on an embedded store (API, controller, local agent).
    Dev(dev::DevArgs),
    /// Least-privilege etcd users and roles for the controller, the API and each agent.
    Rbac(rbac::RbacArgs),
    /// Manage the API's token file: create, list and revoke tokens.
    Token(token::TokenArgs),
    /// Client commands (talk to the API server).
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Runs one subcommand; the exit code is for pipelines.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate(a) => validate::run_validate(a).await,
        Command::Schema(a) => validate::run_schema(a).await,
        Command::Controller(a) => controller::run(a).await,
        Command::Agent(a) => agent::run(*a).await,
        Command::Api(a) => api::run(a).await,
        Command::Dev(a) => dev::run(a).await,
        Command::Rbac(a) => rbac::run(a).await,
        Command::Token(a) => token::run(a).await,
        Command::Client(c) => client::run(c).await,
    }
}

/// Installs the tracing subscriber: RUST_LOG filters (default `info`), text or JSON lines.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_signal() -> tokio_util::sync::CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered now, not when first awaited: a signal that arrives while the process is still
    // starting is not lost (nor left to the default action, which kills it).
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        token.cancel();
    });
    stop
}

/// Serves `/metrics` and `/healthz` on `addr`, if given, in the background.
pub async fn serve_ops(
    addr: Option<std::net::SocketAddr>,
    registry: prometheus_client::registry::Registry,
    component: &str,
) -> anyhow::Result<()> {
    let options = shoal_api::ops::OpsOptions::default();
    if let Some(listener) = bind_ops(addr, &options).await? {
        serve_ops_on(listener, registry, component, options)?;
    }
    Ok(())
}

/// Binds the operations endpoint's `addr`, if given, refusing what `options` may not serve
/// there.
pub async fn bind_ops(
    addr: Option<std::net::SocketAddr>,
    options: &shoal_api::ops::OpsOptions,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    use anyhow::Context as _;
    let Some(addr) = addr else {
        return Ok(None);
    };
    shoal_api::ops::check_listen(addr, options)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(Some(listener))
}

/// Serves the operations endpoint (and `options`' guarded routes) on `listener` in the
/// background.
pub fn serve_ops_on(
    listener: tokio::net::TcpListener,
    registry: prometheus_client::registry::Registry,
    component: &str,
    options: shoal_api::ops::OpsOptions,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let what = if options.guarded.is_some() {
        "/metrics, /healthz and task output"
    } else {
        "/metrics and /healthz"
    };
    println!("shoal {component} serving {what} on {scheme}://{local}");
    tracing::info!(listen = %local, tls = options.tls.is_some(), token = options.token.is_some(), "serving {what}");
    tokio::spawn(async move {
        let registry = std::sync::Arc::new(registry);
        let served =
            shoal_api::ops::serve_with(listener, registry, options, std::future::pending()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the operations endpoint stopped");
        }
    });
    Ok(())
}

/// Parses a `--node-id`: a DNS label (it is a segment of store keys).
pub fn parse_node_id(s: &str) -> Result<String, String> {
    match shoal_core::validate::dns_label_problem(s) {
        None => Ok(s.to_string()),
        Some(problem) => Err(format!("node id {s:?} is not a DNS label: it {problem}")),
    }
}

/// Parses a `key=value` label flag.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}
