//! Node registration and heartbeat: writes `nodes/<id>` bound to a lease and keeps the lease
//! alive (every TTL/3). When the lease is lost (it expired while the store was away, or on
//! Consul its session was destroyed with the Consul agent's node) a new one is granted and the
//! node records are written again: at once when the agent sees its record deleted (it watches
//! it), else at the renewal that fails.
//!
//! A node id is claimed, not just written: a record is created only where none is, or where
//! the one there carries this agent's instance id (kept in its data directory, so a restarted
//! agent takes its registration back at once). A record of another live agent is waited on for
//! about one TTL (it goes if that agent is dead), and then the agent gives up naming the
//! holder: two agents with one node id would run every task twice.
//!
//! Hollow nodes of one agent process share one lease: registering and keeping alive thousands
//! of nodes then costs one keep-alive per TTL/3 instead of thousands, at the price that the
//! hollow nodes of a process live and die together (as they would anyway when the process
//! dies).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::keys::Keys;
use shoal_core::model::{self, Capacity, NodeInfo};
use shoal_core::units::ByteSize;
use shoal_store::{Backoff, Compare, LeaseId, Store, StoreError, Txn, TxnOp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// CPUs and memory of this host: CPUs from the available parallelism, memory from
/// `/proc/meminfo` (`MemTotal`).
pub fn detect_capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo(&s))
        .unwrap_or(0);
    Capacity {
        cpus,
        memory: ByteSize(memory),
    }
}

/// Bytes of `MemTotal` in a `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Ids of `n` hollow nodes: `<base>-0000` … (zero-padded to at least four digits).
pub fn hollow_ids(base: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{base}-{i:04}")).collect()
}

/// Name of the file holding the agent's instance id in its data directory.
pub const INSTANCE_FILE: &str = "instance-id";

/// A fresh instance id.
pub fn new_instance_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The instance id kept in `dir` (created there on first use).
pub fn instance_id_in(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(INSTANCE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let id = new_instance_id();
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// Why the node could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another live agent holds the node id.
    #[error(
        "node {node} is registered by another live agent (instance {instance}, host {hostname}, address {address}, since {since}) and stayed so for {waited:?}: two agents with one --node-id would run every task twice; stop that agent or give this one another --node-id"
    )]
    Taken {
        /// The node id.
        node: String,
        /// The holder's instance id.
        instance: String,
        /// The holder's host name.
        hostname: String,
        /// The holder's address.
        address: String,
        /// When the holder registered.
        since: String,
        /// How long this agent waited.
        waited: Duration,
    },
}

/// What one attempt to claim the node records found.
enum Claim {
    /// Every record is ours, under this lease.
    Ours(LeaseId),
    /// Another agent's live record.
    Held(Box<NodeInfo>),
    /// A record changed between the read and the write: try again.
    Raced,
}

/// Keeps a set of node records registered under one lease.
pub struct Registrar {
    store: Arc<dyn Store>,
    keys: Keys,
    nodes: Vec<NodeInfo>,
    ttl: Duration,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("nodes", &self.nodes.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Registrar {
    /// Registers `nodes` with a lease of `ttl`.
    pub fn new(store: Arc<dyn Store>, keys: Keys, nodes: Vec<NodeInfo>, ttl: Duration) -> Self {
        Registrar {
            store,
            keys,
            nodes,
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    /// Claims every node record; waits about one TTL (1.5×, for the store to expire a dead
    /// holder's lease) on a record of another agent, then gives up naming it.
    pub async fn claim(&self) -> Result<LeaseId, RegisterError> {
        let patience = self.ttl + self.ttl / 2;
        let mut held_since: Option<tokio::time::Instant> = None;
        let mut delays = self.retry().delays();
        loop {
            let claim = match self.try_claim().await {
                Ok(c) => c,
                // An unreachable store is waited out (tasks already running keep running).
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register the node; retrying");
                    tokio::time::sleep(delays.next_delay()).await;
                    continue;
                }
            };
            match claim {
                Claim::Ours(lease) => {
                    tracing::info!(nodes = self.nodes.len(), lease, "node registered");
                    return Ok(lease);
                }
                Claim::Raced => continue,
                Claim::Held(h) if held_since.is_some_and(|t| t.elapsed() >= patience) => {
                    return Err(RegisterError::Taken {
                        node: h.id,
                        instance: h.instance,
                        hostname: h.hostname,
                        address: h.address,
                        since: h.started_at.to_string(),
                        waited: held_since.map(|t| t.elapsed()).unwrap_or_default(),
                    });
                }
                Claim::Held(h) => {
                    if held_since.is_none() {
                        tracing::warn!(node = %h.id, holder = %h.instance, host = %h.hostname, "node id held by another agent; waiting for its lease to expire");
                        held_since = Some(tokio::time::Instant::now());
                    }
                    tokio::time::sleep((self.ttl / 5).max(Duration::from_millis(100))).await;
                }
            }
        }
    }

    /// Retries of a registration the store did not answer: from 200 ms up to a third of the
    /// lease TTL (the keep-alive period).
    fn retry(&self) -> Backoff {
        let max = (self.ttl / 3).max(Duration::from_millis(200));
        Backoff::new(Duration::from_millis(200), max)
    }

    /// Resolves when this agent's (first) node record is deleted. A watch that cannot be
    /// opened is tried again every `period` (the renewals notice a lost lease meanwhile).
    async fn record_gone(&self, period: Duration) {
        let Some(node) = self.nodes.first() else {
            return std::future::pending().await;
        };
        let key = self.keys.node(&node.id);
        loop {
            match self.watch_record(&key).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch the node record; trying again");
                    tokio::time::sleep(period).await;
                }
            }
        }
    }

    /// Watches `key` from its current revision; `Ok` once it is deleted (or found gone).
    async fn watch_record(&self, key: &str) -> Result<(), StoreError> {
        use futures::StreamExt;
        loop {
            let (record, read_at) = self.store.get_with_revision(key).await?;
            if record.is_none() {
                return Ok(());
            }
            let mut stream = self.store.watch(key, read_at + 1).await?;
            while let Some(batch) = stream.next().await {
                let batch = match batch {
                    Ok(b) => b,
                    // Compacted (or broken): read the key again, unhurried.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                };
                let deleted = batch.events.iter().any(
                    |ev| matches!(ev, shoal_store::WatchEvent::Delete { key: k, .. } if k == key),
                );
                if deleted {
                    return Ok(());
                }
            }
        }
    }

    async fn try_claim(&self) -> Result<Claim, StoreError> {
        let lease = self.store.grant_lease(self.ttl).await?;
        match self.write_records(lease).await {
            Ok(Claim::Ours(lease)) => Ok(Claim::Ours(lease)),
            other => {
                // Records already written under this lease go with it.
                let _ = self.store.revoke_lease(lease).await;
                other
            }
        }
    }

    async fn write_records(&self, lease: LeaseId) -> Result<Claim, StoreError> {
        let max = (self.store.max_txn_ops() / 2).max(1);
        for chunk in self.nodes.chunks(max) {
            let mut txn = Txn::default();
            for n in chunk {
                let key = self.keys.node(&n.id);
                let revision = match self.store.get(&key).await? {
                    None => 0,
                    Some(kv) => match serde_json::from_slice::<NodeInfo>(&kv.value) {
                        Ok(held) if held.instance != n.instance => {
                            return Ok(Claim::Held(Box::new(held)));
                        }
                        // Our own earlier registration (or an unreadable one): take it back.
                        _ => kv.mod_revision,
                    },
                };
                txn.compares.push(Compare::ModRevision {
                    key: key.clone(),
                    revision,
                });
                txn.ops.push(TxnOp::Put {
                    key,
                    value: model::encode(n),
                    lease: Some(lease),
                });
            }
            if !self.store.txn(txn).await?.succeeded {
                return Ok(Claim::Raced);
            }
        }
        Ok(Claim::Ours(lease))
    }

    /// Registers and keeps the lease alive until `shutdown` is cancelled; `registered` turns
    /// true while the records are in the store under a live lease.
    pub async fn run(
        self,
        lease: LeaseId,
        shutdown: CancellationToken,
        registered: watch::Sender<bool>,
    ) -> Result<(), RegisterError> {
        let period = self.ttl / 3;
        let mut delays = self.retry().delays();
        let mut lease = Some(lease);
        loop {
            let lease_now = match lease.take() {
                Some(l) => l,
                None => {
                    let claimed = tokio::select! {
                        r = self.claim() => r,
                        () = shutdown.cancelled() => return Ok(()),
                    };
                    match claimed {
                        Ok(l) => l,
                        Err(e @ RegisterError::Taken { .. }) => {
                            registered.send_replace(false);
                            return Err(e);
                        }
                        Err(e) => {
                            registered.send_replace(false);
                            tracing::warn!(error = %e, "cannot register the node; retrying");
                            if !delays.sleep(&shutdown).await {
                                return Ok(());
                            }
                            continue;
                        }
                    }
                }
            };
            delays.reset();
            registered.send_replace(true);
            let gone = self.record_gone(period);
            tokio::pin!(gone);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    () = &mut gone => {
                        // The lease ended without a failed renewal yet (on Consul: the Consul
                        // agent left and its node's sessions went with it): at once, not at
                        // the next renewal.
                        tracing::warn!(lease = lease_now, "node record deleted; registering again");
                        registered.send_replace(false);
                        break;
                    }
                    () = shutdown.cancelled() => return Ok(()),
                }
                let refresh = shoal_store::refresh_lease(
                    self.store.as_ref(),
                    lease_now,
                    period,
                    self.ttl.saturating_sub(period),
                );
                match refresh.await {
                    Ok(()) => {}
                    Err(StoreError::LeaseNotFound(_)) => {
                        tracing::warn!(lease = lease_now, "node lease lost; registering again");
                        registered.send_replace(false);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(lease = lease_now, error = %e, "lease keep-alive failed; tasks keep running");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       16384 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo(text), Some(16384 * 1024));
        assert_eq!(
            hollow_ids("h", 2),
            vec!["h-0000".to_string(), "h-0001".to_string()]
        );
    }
}
