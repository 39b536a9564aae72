//! `shoal dev`: everything in one process on the embedded store — the API on 127.0.0.1:7878,
//! the controller, and one local agent (docker runtime when Docker answers, else process), like
//! `nomad agent -dev`. State lives in the data directory, so a restart finds everything where
//! it was — including the cluster key that seals secrets (`secret.key`, created on first
//! start). The local agent fetches its tasks' secrets from the API without a token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use shoal_agent::runtime::multi::MultiRuntime;
use shoal_agent::{Agent, AgentConfig, RuntimeChoice};
use shoal_api::ApiState;
use shoal_api::secrets::crypto::KeyRing;
use shoal_controller::{Controller, ControllerConfig};
use shoal_core::keys::Keys;
use shoal_store::Store;

/// Runtime choice for the local agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DevRuntime {
    /// Docker containers and host processes when the engine answers, else host processes.
    Auto,
    /// Docker containers.
    Docker,
    /// Host processes.
    Process,
}

/// Flags of `shoal dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory (embedded store, task logs).
    #[arg(long, env = "SHOAL_DEV_DATA", default_value = ".shoal-dev")]
    pub data_dir: PathBuf,
    /// API listen address (loopback only: `shoal dev` has no tokens).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Runtime of the local agent.
    #[arg(long, value_enum, default_value_t = DevRuntime::Auto)]
    pub runtime: DevRuntime,
    /// On a fresh store, make it the cluster of this node's containers instead of refusing to
    /// start (see `shoal agent --adopt-orphans`).
    #[arg(long)]
    pub adopt_orphans: bool,
    /// Node id of the local agent, a DNS label (default: this host's name made one).
    #[arg(long, value_parser = crate::cli::parse_node_id)]
    pub node_id: Option<String>,
    /// Node label `key=value` for the local node (repeatable).
    #[arg(long = "label", value_parser = crate::cli::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Consul discovery flags of the local agent.
    #[command(flatten)]
    pub consul: crate::cli::agent::ConsulArgs,
    /// Service networking flags of the local agent.
    #[command(flatten)]
    pub network: crate::cli::agent::NetworkArgs,
    /// Finished tasks each slot of a service keeps as its history (see `shoal controller
    /// --task-history-limit`).
    #[arg(long, default_value_t = shoal_controller::reconcile::DEFAULT_TASK_HISTORY_LIMIT)]
    pub task_history_limit: usize,
}

/// Runs `shoal dev` until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let stop = crate::cli::shutdown_signal();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "shoal dev serves the API without authentication, so it listens on loopback only; \
         {} is not a loopback address (run `shoal api --token-file` for that)",
        args.listen
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let store: Arc<dyn Store> = Arc::new(
        shoal_store::EmbeddedStore::open(data_dir.join("store"))
            .await
            .with_context(|| format!("opening the embedded store in {}", data_dir.display()))?,
    );
    let keys = Keys::default();
    let key_file = data_dir.join("secret.key");
    if !key_file.exists() {
        KeyRing::create_file(&key_file, "dev-1")?;
        tracing::info!(key_file = %key_file.display(), "shoal dev: created the cluster key");
    }
    let secret_keys = KeyRing::load(&key_file)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let api_addr = listener.local_addr()?;

    // Agent runtime: docker when it answers.
    let mut config = AgentConfig::new(args.node_id.as_deref().unwrap_or("local"));
    config.instance_id = shoal_agent::node::instance_id_in(&data_dir)?;
    config.adopt_orphans = args.adopt_orphans;
    if args.node_id.is_none() {
        // The host name as a DNS label (node ids are segments of store keys).
        let label: String = config
            .hostname
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(63)
            .collect();
        let label = label.trim_matches('-');
        config.node_id = if label.is_empty() {
            "local".into()
        } else {
            label.to_string()
        };
    }
    config.labels = args.labels.iter().cloned().collect();
    config.consul = args.consul.config();
    config.network = args.network.config(&config.address)?;
    config.api = Some(shoal_agent::ApiEndpoint {
        url: format!("http://{api_addr}"),
        token: None,
    });
    let node_id = config.node_id.clone();
    let runtime = match args.runtime {
        DevRuntime::Docker => shoal_agent::open_runtime(RuntimeChoice::Docker, &node_id, &data_dir)
            .await
            .context("connecting to Docker")?,
        DevRuntime::Process => {
            shoal_agent::open_runtime(RuntimeChoice::Process, &node_id, &data_dir).await?
        }
        DevRuntime::Auto => {
            let process =
                shoal_agent::open_runtime(RuntimeChoice::Process, &node_id, &data_dir).await?;
            match shoal_agent::open_runtime(RuntimeChoice::Docker, &node_id, &data_dir).await {
                Ok(docker) => Arc::new(MultiRuntime::new(docker, process)),
                Err(e) => {
                    tracing::warn!(error = %e, "Docker does not answer; the local agent runs host processes only");
                    process
                }
            }
        }
    };
    // The local agent serves its tasks' output to the API (`shoal logs`) on a loopback port.
    let logs = shoal_agent::logs::http::LogService::new(runtime.clone(), &node_id);
    let logs_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen for the local agent's task output")?;
    config.agent_url = Some(format!("http://{}", logs_listener.local_addr()?));
    let logs_router = logs.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(logs_listener, logs_router).await {
            tracing::warn!(error = %e, "the local agent's task output endpoint stopped");
        }
    });
    let agent = Agent::new(store.clone(), keys.clone(), config, runtime.clone());
    let mut registry = prometheus_client::registry::Registry::default();
    logs.register(&mut registry);
    if let Some(n) = agent.network() {
        n.metrics().register(&mut registry);
    }
    let agent = agent.spawn();
    // The controller starts once the local node is registered, so services already stored
    // (or applied right away) are placed on it rather than judged unschedulable on 0 nodes.
    let mut registered = agent.registered();
    if tokio::time::timeout(Duration::from_secs(10), registered.wait_for(|r| *r))
        .await
        .is_err()
    {
        tracing::warn!("the local agent has not registered its node after 10 s; starting anyway");
    }

    let config = ControllerConfig {
        task_history_limit: args.task_history_limit,
        ..ControllerConfig::default()
    };
    let controller = Controller::new(store.clone(), keys.clone(), config);
    controller.metrics().register(&mut registry);
    let controller_task = tokio::spawn(controller.run(stop.clone()));

    let state = ApiState::new(store.clone(), keys.clone())
        .with_registry(Arc::new(registry))
        .with_secret_keys(secret_keys);
    tracing::info!(
        "shoal dev: API on http://{api_addr}, node {node_id} ({} runtime), data in {}{}",
        runtime.name(),
        data_dir.display(),
        match args.consul.config() {
            Some(c) => format!(", consul discovery via {}", c.address),
            None => String::new(),
        }
    );
    let api_task = tokio::spawn(shoal_api::serve_listener(
        state,
        listener,
        stop.clone().cancelled_owned(),
    ));

    stop.cancelled().await;
    tracing::info!("shoal dev: stopping (tasks keep running; they are adopted on the next start)");
    let _ = api_task.await;
    match controller_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "controller stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "controller task ended abnormally"),
        Ok(Ok(())) => {}
    }
    agent.stop().await.context("stopping the local agent")?;
    Ok(ExitCode::SUCCESS)
}
