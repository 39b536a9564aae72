//! Leader election with fencing. The leader record is created only if absent, bound to a
//! lease kept alive every TTL/3; standbys watch the key and try again when it disappears, or
//! as soon as the store's reports of the lease's time left prove it ran out ([`lease_end`]).
//! Every write of the leader compares the leader key's revision ([`Fence`]), so a deposed
//! leader's late writes fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_core::Keys;
use shoal_core::model::Timestamp;
use shoal_store::{
    Compare, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp, WatchEvent,
};

use super::lease_end;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The leader record (`leader`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// Who leads (host, process, random suffix).
    pub identity: String,
    /// Since when.
    pub since: Timestamp,
}

/// The compare every leader write carries: the leader key still has the revision it had
/// when this controller won, or when it last rewrote its own record ([`Fence::moved_to`]).
///
/// Clones share the revision: a move is seen by every writer of the term at once.
#[derive(Debug, Clone)]
pub struct Fence {
    /// Leader key.
    pub key: String,
    revision: Arc<AtomicI64>,
    /// The record as written (rewritten unchanged to move the fence).
    record: Vec<u8>,
    /// The lease the record is bound to.
    lease: Option<LeaseId>,
}

impl Fence {
    /// The fence of a record `record` written at `revision`, bound to `lease`.
    pub fn new(key: String, revision: Revision, record: Vec<u8>, lease: Option<LeaseId>) -> Self {
        Fence {
            key,
            revision: Arc::new(AtomicI64::new(revision)),
            record,
            lease,
        }
    }

    /// The leader key's revision writes compare against now.
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::SeqCst)
    }

    /// The transaction compare.
    pub fn compare(&self) -> Compare {
        Compare::ModRevision {
            key: self.key.clone(),
            revision: self.revision(),
        }
    }

    /// Whether `value` is this leader's own record (a rewrite of it is no loss).
    pub fn is_own_record(&self, value: &[u8]) -> bool {
        value == self.record.as_slice()
    }

    /// The write that moves the fence: the record rewritten unchanged, if the fence holds.
    pub fn rewrite(&self) -> Txn {
        Txn {
            compares: vec![self.compare()],
            ops: vec![TxnOp::Put {
                key: self.key.clone(),
                value: self.record.clone(),
                lease: self.lease,
            }],
        }
    }

    /// The record was rewritten at `revision`: writes compare against it from now on, and a
    /// write still carrying the old revision is refused wherever and whenever it arrives.
    pub fn moved_to(&self, revision: Revision) {
        self.revision.fetch_max(revision, Ordering::SeqCst);
    }
}

/// How the record of the leader before went, when this controller won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacated {
    /// There was none, or it was deleted: its leader resigned, or the store removed it when
    /// its lease ran out.
    Absent,
    /// Its lease was proven run out ([`lease_end`]) and this controller revoked it.
    LeaseRunOut,
}

impl Vacated {
    /// The metrics label (`absent`, `lease_run_out`).
    pub fn label(self) -> &'static str {
        match self {
            Vacated::Absent => "absent",
            Vacated::LeaseRunOut => "lease_run_out",
        }
    }
}

/// A won election. Leadership ends when `lost` is cancelled (keep-alive failed) or when
/// [`Leadership::resign`] is called.
pub struct Leadership {
    /// The fence for writes.
    pub fence: Fence,
    /// How the record of the leader before went.
    pub vacated: Vacated,
    /// The lease the record is bound to.
    pub lease: LeaseId,
    /// Cancelled when the lease could not be kept alive.
    pub lost: CancellationToken,
    keepalive: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("fence", &self.fence)
            .field("lease", &self.lease)
            .field("vacated", &self.vacated)
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Stops keeping the lease alive without revoking it (the record expires after its TTL,
    /// as when the process dies).
    pub fn abandon(self) {
        self.keepalive.abort();
    }

    /// Steps down: stops the keep-alive and revokes the lease so a standby takes over now.
    pub async fn resign(self) {
        self.keepalive.abort();
        if let Err(e) = self.store.revoke_lease(self.lease).await {
            warn!(error = %e, "could not revoke the leader lease; it expires on its own");
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// Campaigns until this controller leads, or `shutdown` is cancelled (then `Ok(None)`).
pub async fn campaign(
    store: &Arc<dyn Store>,
    keys: &Keys,
    identity: &str,
    ttl: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Leadership>, StoreError> {
    let key = keys.leader();
    // Set when the record is known gone: it is tried for at once, without reading it first
    // (a takeover is one lease grant and one write after the old lease ends).
    let mut known_gone = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let (current, vacated) = match known_gone.take() {
            Some(how) => (None, how),
            None => {
                let (record, read_at) = store.get_with_revision(&key).await?;
                (record.map(|kv| (kv, read_at)), Vacated::Absent)
            }
        };
        match current {
            None => {
                let lease = store.grant_lease(ttl).await?;
                let record = LeaderRecord {
                    identity: identity.to_string(),
                    since: Timestamp::now(),
                };
                let value = serde_json::to_vec(&record).unwrap_or_default();
                match store
                    .compare_and_put(&key, value.clone(), 0, Some(lease))
                    .await
                {
                    Ok(Some(revision)) => {
                        info!(identity, revision, ?vacated, "elected leader");
                        let lost = CancellationToken::new();
                        let keepalive =
                            tokio::spawn(keep_alive(store.clone(), lease, ttl, lost.clone()));
                        return Ok(Some(Leadership {
                            fence: Fence::new(key, revision, value, Some(lease)),
                            vacated,
                            lease,
                            lost,
                            keepalive,
                            store: store.clone(),
                        }));
                    }
                    Ok(None) => {
                        let _ = store.revoke_lease(lease).await;
                    }
                    Err(e) => {
                        let _ = store.revoke_lease(lease).await;
                        return Err(e);
                    }
                }
            }
            Some((kv, read_at)) => {
                known_gone = wait_for_vacancy(store, &kv, read_at, ttl, shutdown).await?;
            }
        }
    }
}

/// Waits, as a standby, for the leader record `kv` (read at `read_at`) to go: its delete on
/// the watch, or its lease proven run out ([`lease_end`]) and revoked here, which is what the
/// store would do a little later. Returns how the record went; `None` when it changed, the
/// watch or the lease's reports failed, or on shutdown (the caller reads it again).
///
/// The watch starts after the read, not after the record's write: a leader of long standing
/// wrote its record before the history the store keeps, and a watch from there fails at once.
async fn wait_for_vacancy(
    store: &Arc<dyn Store>,
    kv: &KeyValue,
    read_at: Revision,
    ttl: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Vacated>, StoreError> {
    let mut stream = store.watch(&kv.key, read_at + 1).await?;
    let gone = async {
        while let Some(Ok(batch)) = stream.next().await {
            if batch
                .events
                .iter()
                .any(|e| matches!(e, WatchEvent::Delete { key, .. } if *key == kv.key))
            {
                return true;
            }
        }
        false
    };
    let run_out = async {
        match kv.lease {
            Some(lease) => lease_end::run_out(store.as_ref(), lease, lease_end::poll_period(ttl))
                .await
                .map(|()| lease),
            None => std::future::pending().await,
        }
    };
    tokio::pin!(gone, run_out);
    loop {
        tokio::select! {
            deleted = &mut gone => return Ok(deleted.then_some(Vacated::Absent)),
            ended = &mut run_out => {
                let revoked = revoke_run_out(store.as_ref(), ended).await;
                return Ok(revoked.then_some(Vacated::LeaseRunOut));
            }
            () = shutdown.cancelled() => return Ok(None),
            // A safety net beside the watch: the record read again every TTL.
            _ = tokio::time::sleep(ttl) => match store.get(&kv.key).await? {
                Some(now) if now.mod_revision == kv.mod_revision => {}
                Some(_) => return Ok(None),
                None => return Ok(Some(Vacated::Absent)),
            },
        }
    }
}

/// Revokes the leader lease `ended` proved run out; whether the record is gone now.
async fn revoke_run_out(store: &dyn Store, ended: Result<LeaseId, StoreError>) -> bool {
    let lease = match ended {
        Ok(lease) => lease,
        Err(e) => {
            warn!(error = %e, "could not read the leader lease's time left");
            return false;
        }
    };
    match store.revoke_lease(lease).await {
        Ok(()) | Err(StoreError::LeaseNotFound(_)) => {
            info!(lease, "the leader lease ran out: revoked it to take over");
            true
        }
        Err(e) => {
            warn!(lease, error = %e, "could not revoke the leader lease that ran out");
            false
        }
    }
}

/// Keeps the lease alive every TTL/3; reports loss when the lease is gone or a whole TTL
/// passed without a successful refresh.
async fn keep_alive(store: Arc<dyn Store>, lease: LeaseId, ttl: Duration, lost: CancellationToken) {
    let period = ttl / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let budget = ttl.saturating_sub(last_ok.elapsed());
        match shoal_store::refresh_lease(store.as_ref(), lease, period, budget).await {
            Ok(()) => last_ok = tokio::time::Instant::now(),
            Err(StoreError::LeaseNotFound(_)) => {
                warn!(lease, "leader lease expired");
                lost.cancel();
                return;
            }
            Err(e) => {
                warn!(lease, error = %e, "leader keep-alive failed");
                if last_ok.elapsed() >= ttl {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
