//! [`ConsulStore`]: the `consul://HOST:PORT` backend of [`Store`].
//!
//! # Mapping
//!
//! - **Keys.** Shoal keys are absolute (`/shoal/tasks/...`) but Consul refuses a leading `/`,
//!   so the store strips it on the way in and adds it back on the way out: store key `/a/b` is
//!   Consul key `a/b`. Keys (and non-empty prefixes) without a leading `/` are refused.
//! - **Revisions** are Consul's raft indexes: a key's `mod_revision` is its `ModifyIndex`,
//!   `create_revision` its `CreateIndex`. A list's revision is the `X-Consul-Index` of the
//!   recurse read, i.e. the newest change (write or delete) under that prefix — watching from
//!   `list.revision + 1` misses nothing.
//! - **Transactions** go through `/v1/txn`: a `ModRevision` compare becomes `check-index`
//!   (`check-not-exists` for revision 0), a put becomes `set` (or `lock` with a lease), a
//!   delete becomes `delete`. At most [`MAX_TXN_OPS`] (64) compares plus ops; more is
//!   [`StoreError::TooManyOps`]. A successful transaction's revision is the `ModifyIndex` its
//!   writes got; when it only deletes (Consul returns no index for deletes) and after a failed
//!   compare, the revision is the KV table's current index.
//! - **Leases** are sessions with `TTL`, `Behavior=delete`, `LockDelay=0s` and no node checks.
//!   Consul accepts TTLs of 10s..24h, so shorter leases are rounded up to 10s, and Consul
//!   invalidates a session between TTL and 2×TTL after its last renewal (not exactly at TTL).
//!   A lease ID is derived from the session UUID (its first 63 bits), so any process can name
//!   a session by its lease ID. A put with a lease acquires the key with the session
//!   (`?acquire` / txn `lock`); if another session holds the key its lock is released first.
//!   A put without a lease on a key held by a session releases the lock in the same step
//!   (Consul would otherwise keep the key bound to the session). Inside a multi-op
//!   transaction, a lease-less put of a leased key keeps the binding: use a separate `put`.
//!   `keep_alive` renews the session (404 → [`StoreError::LeaseNotFound`]); `revoke_lease`
//!   destroys it, which deletes its keys.
//!
//! # Watch semantics
//!
//! Consul keeps no history, so a watch is a loop of blocking recurse reads on the prefix that
//! diffs successive snapshots: a key whose `ModifyIndex` is newer than the one last seen is a
//! `Put` (at its `ModifyIndex`), a key that disappeared is a `Delete` at the index of the
//! read that noticed it. Events of one read are emitted as one batch in `ModifyIndex` order
//! (deletes last, keys in order within one index). Intermediate values between two reads
//! are not seen (several updates of one key in between give one `Put` with the newest value).
//! Broken connections are retried with backoff from the last index; when Consul's index goes
//! backwards (snapshot restore, tombstone reaping) the loop re-reads at once and keeps
//! diffing against what it has, so nothing is lost or repeated.
//!
//! `watch(prefix, from)` reads the prefix before it returns (so every change after the call
//! is reported) and must first bring the caller from its state at `from - 1` to that read:
//!
//! - `from <= 0`: the watch starts at the current state and emits only later changes.
//! - if this store answered a `list(prefix)` at revision `from - 1` (the reflector's "list,
//!   then watch from `list.revision + 1`"), the watch diffs against that exact snapshot and
//!   reports every put and delete since, so the caller misses nothing;
//! - otherwise, if nothing under the prefix changed at or after `from` (the prefix index is
//!   below `from`) and this store saw revision `from - 1` less than Consul's tombstone TTL
//!   ago ([`ConsulStoreOptions::tombstone_ttl`]: after it, a delete's tombstone may be reaped
//!   and the prefix index go back, hiding the delete), or `from == 1` (the caller knows no
//!   key yet), it emits every key whose `ModifyIndex >= from` as a `Put`;
//! - otherwise a delete at or after `from` may have happened that the watch cannot name, so
//!   the stream yields [`StoreError::Compacted`] (`compact_revision` = the current prefix
//!   index) and ends: the caller lists again and watches from the list's revision + 1, which
//!   is then exact. This is the same contract as a compacted etcd revision.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::{ConsulClient, ConsulConfig, QueryOptions};
use super::types::{KvEntry, SessionBehavior, SessionRequest, TxnKvOp, TxnOutcome, TxnVerb};
use super::watch::{self, IndexClock, Snapshots};
use super::{BACKEND, ConsulError, MAX_TXN_BYTES, MAX_TXN_OPS};
use crate::{
    Compare, KeyValue, LeaseId, ListResult, Revision, Store, StoreError, Txn, TxnOp, TxnResult,
    WatchStream,
};

/// Shortest session TTL Consul accepts.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(10);

/// Longest session TTL Consul accepts.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Suffix of the key Shoal reads (and never writes) next to a key it uses, to learn the KV
/// table's current index: a missing key answers with the table index. Reading beside its own
/// keys keeps Shoal inside its prefix, where a prefix-scoped ACL token lets it read.
const INDEX_PROBE_SUFFIX: &str = "/.index-probe";

/// Tuning of a [`ConsulStore`].
#[derive(Debug, Clone)]
pub struct ConsulStoreOptions {
    /// How long one blocking read of a watch waits.
    pub watch_wait: Duration,
    /// Shortest time between two reads of one watch (rate limit).
    pub watch_min_interval: Duration,
    /// Longest backoff between retries of a broken watch.
    pub max_backoff: Duration,
    /// How many list snapshots are remembered for exact watch starts.
    pub snapshot_cache: usize,
    /// Consul's `tombstone_ttl` (15 min): a watch resuming from a revision first seen
    /// longer ago than this, without a remembered snapshot, is [`StoreError::Compacted`].
    pub tombstone_ttl: Duration,
}

impl Default for ConsulStoreOptions {
    fn default() -> Self {
        Self {
            watch_wait: Duration::from_secs(60),
            watch_min_interval: Duration::from_millis(20),
            max_backoff: Duration::from_secs(5),
            snapshot_cache: 32,
            tombstone_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// Shoal's store on a Consul agent's KV, transactions and sessions.
#[derive(Debug, Clone)]
pub struct ConsulStore {
    client: ConsulClient,
    options: ConsulStoreOptions,
    leases: Arc<Mutex<BTreeMap<LeaseId, String>>>,
    snapshots: Arc<Mutex<Snapshots>>,
    clock: Arc<Mutex<IndexClock>>,
}

/// The key of a transaction's first op (every Shoal transaction has one).
fn first_key(ops: &[TxnKvOp]) -> &str {
    ops.first().map_or("", |op| op.key.as_str())
}

/// The lease ID Shoal uses for a Consul session: the session UUID's first 63 bits.
pub fn lease_id_of(session: &str) -> LeaseId {
    let hex: String = session
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(16)
        .collect();
    let id = u64::from_str_radix(&hex, 16).unwrap_or(0) & (i64::MAX as u64);
    (id as i64).max(1)
}

/// Store key → Consul key.
fn to_consul(key: &str) -> Result<&str, StoreError> {
    key.strip_prefix('/').ok_or_else(|| StoreError::Backend {
        backend: BACKEND,
        message: format!("key {key:?} must start with '/' (Consul keys are stored without it)"),
    })
}

/// Store prefix → Consul prefix (`""` is the whole store).
fn prefix_to_consul(prefix: &str) -> Result<&str, StoreError> {
    if prefix.is_empty() {
        Ok("")
    } else {
        to_consul(prefix)
    }
}

/// A Consul entry as a store key-value.
pub(super) fn to_kv(e: KvEntry) -> KeyValue {
    KeyValue {
        key: format!("/{}", e.key),
        value: e.value.unwrap_or_default(),
        create_revision: e.create_index as Revision,
        mod_revision: e.modify_index as Revision,
        lease: e.session.as_deref().map(lease_id_of),
    }
}

impl ConsulStore {
    /// Records an index Consul answered with (see [`IndexClock`]).
    fn observe(&self, index: u64) {
        if let Ok(mut c) = self.clock.lock() {
            c.observe(index);
        }
    }

    /// A store on the given client.
    pub fn new(client: ConsulClient, options: ConsulStoreOptions) -> Self {
        let cache = options.snapshot_cache;
        let clock = Arc::new(Mutex::new(IndexClock::new(options.tombstone_ttl)));
        Self {
            client,
            clock,
            options,
            leases: Arc::new(Mutex::new(BTreeMap::new())),
            snapshots: Arc::new(Mutex::new(Snapshots::new(cache))),
        }
    }

    /// Opens `consul://HOST:PORT[?token=T&ca_file=PATH]`. Without them in the URL, the
    /// token and CA file come from `CONSUL_HTTP_TOKEN` and `CONSUL_CACERT`, as with the
    /// `consul` command. Checks that the agent answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_ca(url, None).await
    }

    /// Like [`ConsulStore::connect`], trusting the CA in `ca` (`--store-ca`) before the
    /// URL's `ca_file` and `CONSUL_CACERT`.
    pub async fn connect_with_ca(
        url: &str,
        ca: Option<std::path::PathBuf>,
    ) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: crate::url::redact_url(url),
            reason,
        };
        let rest = url
            .strip_prefix("consul://")
            .ok_or_else(|| invalid("expected consul://".into()))?;
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let addr = addr.trim_end_matches('/');
        if addr.is_empty() || addr.contains(',') {
            return Err(invalid("expected one HOST:PORT".into()));
        }
        let mut config = ConsulConfig::new(addr);
        config.token = std::env::var("CONSUL_HTTP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        config.ca_file = std::env::var("CONSUL_CACERT")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Into::into);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("token", v)) => config.token = Some(v.to_string()),
                Some(("ca_file", v)) => config.ca_file = Some(v.into()),
                Some((k, _)) => return Err(invalid(format!("unknown parameter {k:?}"))),
                None => return Err(invalid(format!("unknown parameter {pair:?}"))),
            }
        }
        if ca.is_some() {
            config.ca_file = ca;
        }
        let client = ConsulClient::new(config).map_err(|e| invalid(e.to_string()))?;
        let store = Self::new(client, ConsulStoreOptions::default());
        // Check the agent answers and the token is known, reading no key: a token may only
        // grant Shoal's own prefix, which the URL does not name.
        store.client.status_leader().await?;
        Ok(store)
    }

    /// The underlying Consul client.
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }

    /// The KV table's current index, read beside the Consul key `near` (one of Shoal's).
    async fn current_index(&self, near: &str) -> Result<Revision, StoreError> {
        let probe = format!("{}{INDEX_PROBE_SUFFIX}", near.trim_end_matches('/'));
        let (entry, index) = self.client.kv_get(&probe, QueryOptions::default()).await?;
        Ok(entry.map(|e| e.modify_index).unwrap_or(index).max(index) as Revision)
    }

    fn remember_lease(&self, lease: LeaseId, session: &str) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.insert(lease, session.to_string());
        }
    }

    fn forget_lease(&self, lease: LeaseId) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.remove(&lease);
        }
    }

    /// The session behind a lease ID (looked up in Consul when another process created it).
    async fn session_of(&self, lease: LeaseId) -> Result<String, StoreError> {
        if let Some(s) = self.leases.lock().ok().and_then(|l| l.get(&lease).cloned()) {
            return Ok(s);
        }
        let sessions = self.client.session_list().await?;
        let found = sessions.into_iter().find(|s| lease_id_of(&s.id) == lease);
        match found {
            Some(s) => {
                self.remember_lease(lease, &s.id);
                Ok(s.id)
            }
            None => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    /// Builds the Consul operations of a transaction. `holders` names the sessions known
    /// to hold keys a leased put must take over.
    async fn build_ops(
        &self,
        txn: &Txn,
        holders: &BTreeMap<String, String>,
    ) -> Result<Vec<TxnKvOp>, StoreError> {
        let mut ops = Vec::with_capacity(txn.compares.len() + txn.ops.len());
        for c in &txn.compares {
            ops.push(match c {
                Compare::ModRevision { key, revision } if *revision <= 0 => {
                    TxnKvOp::new(TxnVerb::CheckNotExists, to_consul(key)?)
                }
                Compare::ModRevision { key, revision } => {
                    TxnKvOp::new(TxnVerb::CheckIndex, to_consul(key)?).index(*revision as u64)
                }
                // A read of a missing key fails the transaction.
                Compare::Exists { key } => TxnKvOp::new(TxnVerb::Get, to_consul(key)?),
            });
        }
        for op in &txn.ops {
            match op {
                TxnOp::Put {
                    key,
                    value,
                    lease: None,
                } => {
                    ops.push(TxnKvOp::new(TxnVerb::Set, to_consul(key)?).value(value.clone()));
                }
                TxnOp::Put {
                    key,
                    value,
                    lease: Some(lease),
                } => {
                    let session = self.session_of(*lease).await?;
                    let key = to_consul(key)?;
                    if let Some(other) = holders.get(key).filter(|h| **h != session) {
                        ops.push(
                            TxnKvOp::new(TxnVerb::Unlock, key)
                                .value(value.clone())
                                .session(other),
                        );
                    }
                    ops.push(
                        TxnKvOp::new(TxnVerb::Lock, key)
                            .value(value.clone())
                            .session(session),
                    );
                }
                TxnOp::Delete { key } => ops.push(TxnKvOp::new(TxnVerb::Delete, to_consul(key)?)),
            }
        }
        Ok(ops)
    }

    /// The lease a txn op index refers to, for error messages.
    fn lease_of_op(txn: &Txn, key: &str) -> Option<LeaseId> {
        txn.ops.iter().find_map(|op| match op {
            TxnOp::Put {
                key: k,
                lease: Some(l),
                ..
            } if k.strip_prefix('/') == Some(key) => Some(*l),
            _ => None,
        })
    }

    /// Releases the lock another session holds on `key` while writing `value` unleased.
    async fn put_detached(
        &self,
        key: &str,
        value: Vec<u8>,
        entry: KvEntry,
    ) -> Result<Revision, StoreError> {
        let Some(holder) = entry.session else {
            return Ok(entry.modify_index as Revision);
        };
        let ops = vec![
            TxnKvOp::new(TxnVerb::CheckIndex, key).index(entry.modify_index),
            TxnKvOp::new(TxnVerb::Unlock, key)
                .value(value)
                .session(holder),
        ];
        match self.client.txn(&ops).await? {
            TxnOutcome::Committed(entries) => Ok(entries
                .iter()
                .map(|e| e.modify_index)
                .max()
                .unwrap_or(entry.modify_index)
                as Revision),
            // Changed meanwhile (another writer, or the session expired): the plain write
            // already happened; report its revision.
            TxnOutcome::RolledBack(_) => Ok(entry.modify_index as Revision),
        }
    }
}

#[async_trait::async_trait]
impl Store for ConsulStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }

    fn max_txn_bytes(&self) -> usize {
        MAX_TXN_BYTES
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let (entry, _) = self
            .client
            .kv_get(to_consul(key)?, QueryOptions::default())
            .await?;
        Ok(entry.map(to_kv))
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let cprefix = prefix_to_consul(prefix)?;
        let (entries, index) = self
            .client
            .kv_list(cprefix, QueryOptions::default())
            .await?;
        let index = index.max(1);
        self.observe(index);
        if let Ok(mut snaps) = self.snapshots.lock() {
            snaps.insert(
                cprefix,
                index,
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.modify_index))
                    .collect(),
            );
        }
        Ok(ListResult {
            kvs: entries.into_iter().map(to_kv).collect(),
            revision: index as Revision,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        if lease.is_some() {
            let txn = Txn {
                compares: vec![],
                ops: vec![TxnOp::Put {
                    key: key.to_string(),
                    value,
                    lease,
                }],
            };
            return Ok(self.txn(txn).await?.revision);
        }
        let ckey = to_consul(key)?;
        let ops = vec![TxnKvOp::new(TxnVerb::Set, ckey).value(value.clone())];
        match self.client.txn(&ops).await? {
            TxnOutcome::Committed(mut entries) => match entries.pop() {
                Some(entry) if entry.session.is_some() => {
                    self.put_detached(ckey, value, entry).await
                }
                Some(entry) => {
                    self.observe(entry.modify_index);
                    Ok(entry.modify_index as Revision)
                }
                None => self.current_index(ckey).await,
            },
            TxnOutcome::RolledBack(errors) => Err(StoreError::Backend {
                backend: BACKEND,
                message: format!("put {key} rolled back: {errors:?}"),
            }),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let ckey = to_consul(key)?;
        for _ in 0..8 {
            let (entry, _) = self.client.kv_get(ckey, QueryOptions::default()).await?;
            let Some(entry) = entry else { return Ok(false) };
            let ops = vec![TxnKvOp::new(TxnVerb::DeleteCas, ckey).index(entry.modify_index)];
            if let TxnOutcome::Committed(_) = self.client.txn(&ops).await? {
                return Ok(true);
            }
        }
        // The key keeps changing under us: delete it unconditionally.
        Ok(self.client.kv_delete(ckey, None).await?)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let count = txn.compares.len() + txn.ops.len();
        if count > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                ops: count,
                max: MAX_TXN_OPS,
                backend: BACKEND,
            });
        }
        let mut holders: BTreeMap<String, String> = BTreeMap::new();
        for _attempt in 0..4 {
            let ops = self.build_ops(&txn, &holders).await?;
            if ops.len() > MAX_TXN_OPS {
                return Err(StoreError::TooManyOps {
                    ops: ops.len(),
                    max: MAX_TXN_OPS,
                    backend: BACKEND,
                });
            }
            let errors = match self.client.txn(&ops).await? {
                TxnOutcome::Committed(entries) => {
                    let revision = match entries.iter().map(|e| e.modify_index).max() {
                        Some(r) => r as Revision,
                        None => self.current_index(first_key(&ops)).await?,
                    };
                    self.observe(revision.max(0) as u64);
                    return Ok(TxnResult {
                        succeeded: true,
                        revision,
                    });
                }
                TxnOutcome::RolledBack(errors) => errors,
            };
            if errors.iter().any(|e| e.op_index < txn.compares.len()) {
                return Ok(TxnResult {
                    succeeded: false,
                    revision: self.current_index(first_key(&ops)).await?,
                });
            }
            let mut retry = false;
            for e in &errors {
                let Some(op) = ops.get(e.op_index) else {
                    continue;
                };
                if e.what.contains("invalid session") || e.what.contains("missing session") {
                    let lease = Self::lease_of_op(&txn, &op.key).unwrap_or(0);
                    self.forget_lease(lease);
                    return Err(StoreError::LeaseNotFound(lease));
                }
                if e.what.contains("already held") || e.what.contains("isn't held") {
                    let (entry, _) = self.client.kv_get(&op.key, QueryOptions::default()).await?;
                    match entry.and_then(|e| e.session) {
                        Some(s) => holders.insert(op.key.clone(), s),
                        None => holders.remove(&op.key),
                    };
                    retry = true;
                }
            }
            if !retry {
                return Err(StoreError::Backend {
                    backend: BACKEND,
                    message: format!("transaction rolled back: {errors:?}"),
                });
            }
        }
        Err(StoreError::Backend {
            backend: BACKEND,
            message: "transaction kept conflicting with other sessions' locks".into(),
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let cprefix = prefix_to_consul(prefix)?.to_string();
        let base = if from_revision > 1 {
            self.snapshots
                .lock()
                .ok()
                .and_then(|s| s.get(&cprefix, (from_revision - 1) as u64))
        } else {
            None
        };
        watch::start(
            self.client.clone(),
            self.options.clone(),
            cprefix,
            from_revision,
            base,
            Arc::clone(&self.clock),
        )
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let ttl = Duration::from_secs(secs).clamp(MIN_SESSION_TTL, MAX_SESSION_TTL);
        let req = SessionRequest {
            name: "shoal-lease".into(),
            node: None,
            lock_delay: Some(Duration::ZERO),
            behavior: SessionBehavior::Delete,
            ttl: Some(ttl),
            node_checks: Some(Vec::new()),
        };
        let id = self.client.session_create(&req).await?;
        let lease = lease_id_of(&id);
        self.remember_lease(lease, &id);
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let session = self.session_of(lease).await?;
        match self.client.session_renew(&session).await? {
            Some(_) => Ok(()),
            None => {
                self.forget_lease(lease);
                Err(StoreError::LeaseNotFound(lease))
            }
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let session = self.session_of(lease).await?;
        // Destroy is idempotent in Consul: check the session still exists first.
        if self.client.session_info(&session).await?.is_none() {
            self.forget_lease(lease);
            return Err(StoreError::LeaseNotFound(lease));
        }
        let res = self.client.session_destroy(&session).await;
        self.forget_lease(lease);
        res.map_err(|e: ConsulError| e.into())
    }
}
