//! Which cluster this agent serves: the store's cluster id, read (or, on an empty store,
//! created) before anything on the node is touched. A node that runs containers of a cluster
//! while the store has no id at all is a wrong `--store`/`--prefix` or a store restored from
//! nothing: the agent refuses to start there, so those containers are not removed, unless told
//! `--adopt-orphans` (the store then takes the containers' cluster id).

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_core::Keys;
use shoal_store::cluster::{cluster_id, ensure_cluster_id};
use shoal_store::{Backoff, Store, StoreError};

use crate::runtime::Runtime;

/// Why the agent will not serve this store.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node runs another cluster's containers and the store is empty.
    #[error(
        "this node runs containers of cluster {found}, but the store has no cluster id (a wrong --store or --prefix, or a store restored from nothing?); refusing to start so that they are not removed. Start with --adopt-orphans to make this store cluster {found}"
    )]
    Orphans {
        /// The cluster id the containers carry.
        found: String,
    },
    /// The node runs containers of several clusters: which to adopt is not for the agent to
    /// guess.
    #[error(
        "this node runs containers of several clusters ({found}), and the store has no cluster id: refusing to start; remove the containers of the clusters that are gone"
    )]
    Several {
        /// The cluster ids found.
        found: String,
    },
    /// The runtime could not list the node's containers.
    #[error("cannot list this node's containers: {0}")]
    Runtime(String),
}

/// The cluster id this agent serves; waits out an unreachable store (and, when this agent may
/// not write the id, the component that writes it).
pub async fn resolve(
    store: &dyn Store,
    keys: &Keys,
    runtime: &dyn Runtime,
    nodes: &BTreeSet<String>,
    adopt_orphans: bool,
) -> Result<String, ClusterError> {
    let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).delays();
    loop {
        match attempt(store, keys, runtime, nodes, adopt_orphans).await {
            Ok(Ok(id)) => return Ok(id),
            Ok(Err(e)) => return Err(e),
            Err(StoreError::PermissionDenied(_)) => {
                tracing::info!("waiting for the controller to create the cluster id");
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster id; retrying"),
        }
        tokio::time::sleep(delays.next_delay()).await;
    }
}

async fn attempt(
    store: &dyn Store,
    keys: &Keys,
    runtime: &dyn Runtime,
    nodes: &BTreeSet<String>,
    adopt_orphans: bool,
) -> Result<Result<String, ClusterError>, StoreError> {
    if let Some(id) = cluster_id(store, keys).await? {
        return Ok(Ok(id));
    }
    let existing = match runtime.list(nodes).await {
        Ok(e) => e,
        Err(e) => return Ok(Err(ClusterError::Runtime(e.to_string()))),
    };
    let found: BTreeSet<String> = existing.into_iter().filter_map(|e| e.cluster).collect();
    if found.len() > 1 {
        let found = found.into_iter().collect::<Vec<_>>().join(", ");
        return Ok(Err(ClusterError::Several { found }));
    }
    match found.into_iter().next() {
        Some(found) if !adopt_orphans => Ok(Err(ClusterError::Orphans { found })),
        Some(found) => {
            tracing::warn!(cluster = %found, "--adopt-orphans: this store becomes the cluster of the node's containers");
            ensure_cluster_id(store, keys, Some(&found)).await.map(Ok)
        }
        None => ensure_cluster_id(store, keys, None).await.map(Ok),
    }
}
