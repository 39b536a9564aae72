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
    /// After taking the lead, how long a node without a record keeps its tasks before it is
    /// declared lost (set it to the agents' --lease-ttl).
    #[arg(long, default_value = "5s")]
    pub node_grace: Dur,
    /// A node down this long is gone for good: its tasks, their statuses and its settings are
    /// deleted (`shoal node rm` does it at once).
    #[arg(long, default_value = "24h")]
    pub node_gone_after: Dur,
    /// Revisions of history the leader keeps when it compacts etcd (every minute); 0 leaves
    /// compaction to etcd's own --auto-compaction-retention.
    #[arg(long, default_value_t = 10_000)]
    pub history_revisions: i64,
    /// How often the leader compacts.
    #[arg(long, default_value = "1m")]
    pub compact_every: Dur,
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
        node_grace: args.node_grace.get(),
        node_gone_after: args.node_gone_after.get(),
        history_revisions: args.history_revisions.max(0),
        compact_interval: args.compact_every.get().max(Duration::from_secs(1)),
        ..ControllerConfig::default()
    };
    tracing::info!(store = %args.store.shown_url(), prefix = %args.store.prefix, identity = %config.identity, "starting controller");
    let controller = Controller::new(store, Keys::new(&args.store.prefix), config);
    let mut registry = prometheus_client::registry::Registry::default();
    controller.metrics().register(&mut registry);
    crate::cli::serve_ops(args.listen, registry, "controller").await?;
    controller.run(stop).await?;
    Ok(ExitCode::SUCCESS)
}
