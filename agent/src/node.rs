//! Node registration and heartbeat: writes `nodes/<id>` bound to a lease and keeps the lease
//! alive (every TTL/3). When the lease is lost (it expired while the store was away) a new one
//! is granted and the node records are written again.
//!
//! Hollow nodes of one agent process share one lease: registering and keeping alive thousands
//! of nodes then costs one keep-alive per TTL/3 instead of thousands, at the price that the
//! hollow nodes of a process live and die together (as they would anyway when the process
//! dies).

use std::sync::Arc;
use std::time::Duration;

use shoal_core::keys::Keys;
use shoal_core::model::{self, Capacity, NodeInfo};
use shoal_core::units::ByteSize;
use shoal_store::{LeaseId, Store, StoreError, Txn, TxnOp};
use tokio::sync::watch;

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

    async fn register(&self) -> Result<LeaseId, StoreError> {
        let lease = self.store.grant_lease(self.ttl).await?;
        let max = self.store.max_txn_ops().max(1);
        for chunk in self.nodes.chunks(max) {
            let ops = chunk
                .iter()
                .map(|n| TxnOp::Put {
                    key: self.keys.node(&n.id),
                    value: model::encode(n),
                    lease: Some(lease),
                })
                .collect();
            self.store
                .txn(Txn {
                    compares: Vec::new(),
                    ops,
                })
                .await?;
        }
        tracing::info!(nodes = self.nodes.len(), lease, "node registered");
        Ok(lease)
    }

    /// Registers and keeps the lease alive until `shutdown` becomes true; `registered` turns
    /// true while the records are in the store under a live lease.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, registered: watch::Sender<bool>) {
        let period = self.ttl / 3;
        let mut delay = Duration::from_millis(200);
        loop {
            let lease = tokio::select! {
                r = self.register() => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let lease = match lease {
                Ok(l) => l,
                Err(e) => {
                    registered.send_replace(false);
                    tracing::warn!(error = %e, "cannot register the node; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    delay = (delay * 2).min(period.max(Duration::from_millis(200)));
                    continue;
                }
            };
            delay = Duration::from_millis(200);
            registered.send_replace(true);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                let refresh = shoal_store::refresh_lease(
                    self.store.as_ref(),
                    lease,
                    period,
                    self.ttl.saturating_sub(period),
                );
                match refresh.await {
                    Ok(()) => {}
                    Err(StoreError::LeaseNotFound(_)) => {
                        tracing::warn!(lease, "node lease lost; registering again");
                        registered.send_replace(false);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(lease, error = %e, "lease keep-alive failed; tasks keep running");
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
