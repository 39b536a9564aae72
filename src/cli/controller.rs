//! `shoal controller`: runs the controller (leader-elected; several may run) until SIGINT or
//! SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use shoal_controller::{Controller, ControllerConfig};
use shoal_core::keys::Keys;
use shoal_core::units::Dur;

use crate::cli::StoreArgs;

/// Default node grace on Consul: its shortest session TTL, so at least one agent lease TTL.
const CONSUL_NODE_GRACE: Duration = shoal_store::consul::store::MIN_SESSION_TTL;

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
    /// How long a node without a record keeps its tasks before it is declared lost: after
    /// this controller listed the store (a standby's grace is usually over when it takes the
    /// lead), and (on Consul) after a node's record disappears, as it does when the node's
    /// Consul agent restarts. Default: 5s (the agents' default --lease-ttl) after the list
    /// and 0 after a record goes on etcd and embedded (a record
    /// only goes after a TTL of silence there); 10s (Consul's shortest session TTL) for both
    /// on Consul. Given explicitly, it applies to both.
    #[arg(long)]
    pub node_grace: Option<Dur>,
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
    /// Finished tasks each slot of a service keeps as its history (for `shoal get tasks
    /// --all`, `shoal describe service` and `shoal logs`), the oldest pushed out first. 0
    /// keeps only what restart decisions need. Jobs keep their runs' tasks until
    /// `ttlAfterFinished` instead.
    #[arg(long, default_value_t = shoal_controller::reconcile::DEFAULT_TASK_HISTORY_LIMIT)]
    pub task_history_limit: usize,
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
        node_gone_after: args.node_gone_after.get(),
        history_revisions: args.history_revisions.max(0),
        compact_interval: args.compact_every.get().max(Duration::from_secs(1)),
        task_history_limit: args.task_history_limit,
        ..ControllerConfig::default()
    };
    let (node_grace, node_record_grace) = match (args.node_grace, store.backend()) {
        (Some(g), _) => (g.get(), g.get()),
        (None, "consul") => (CONSUL_NODE_GRACE, CONSUL_NODE_GRACE),
        (None, _) => (config.node_grace, Duration::ZERO),
    };
    let config = ControllerConfig {
        node_grace,
        node_record_grace,
        ..config
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
