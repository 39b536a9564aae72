//! `shoal controller`: runs the controller (leader-elected; several may run) until SIGINT or
//! SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use shoal_controller::{Controller, ControllerConfig};
use shoal_core::keys::Keys;
use shoal_core::units::Dur;

use crate::cli::StoreArgs;

/// Flags of `shoal controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Store flags.
    #[command(flatten)]
    pub store: StoreArgs,
    /// TTL of the leader lease: a standby takes over within this long after the leader dies.
    #[arg(long, default_value = "5s")]
    pub lease_ttl: Dur,
    /// Services reconciled at once.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Every service is reconciled at least this often, changes or not.
    #[arg(long, default_value = "60s")]
    pub resync: Dur,
    /// Serve `/metrics` (Prometheus) and `/healthz` on this address (`127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

/// Runs `shoal controller`.
pub async fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let stop = crate::cli::shutdown_signal();
    let store = args.store.open().await?;
    anyhow::ensure!(
        !args.lease_ttl.is_zero(),
        "--lease-ttl must be greater than zero"
    );
    let config = ControllerConfig {
        lease_ttl: args.lease_ttl.get(),
        workers: args.workers.max(1),
        resync_interval: args.resync.get().max(Duration::from_secs(1)),
        ..ControllerConfig::default()
    };
    tracing::info!(store = %args.store.shown_url(), prefix = %args.store.prefix, identity = %config.identity, "starting controller");
    let keys = Keys::new(&args.store.prefix);
    // The cluster id agents label containers with: written once, by the first controller.
    loop {
        match shoal_store::cluster::ensure_cluster_id(store.as_ref(), &keys, None).await {
            Ok(cluster) => {
                tracing::info!(%cluster, "cluster id");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or write the cluster id; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let controller = Controller::new(store, keys, config);
    let mut registry = prometheus_client::registry::Registry::default();
    controller.metrics().register(&mut registry);
    crate::cli::serve_ops(args.listen, registry, "controller").await?;
    controller.run(stop).await?;
    Ok(ExitCode::SUCCESS)
}
