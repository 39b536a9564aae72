//! The embedded store's engine: redb tables, the single writer that applies transactions at
//! one new revision, the persisted watch history and the leases.
//!
//! All methods block (redb is synchronous); the async facade calls them on the blocking pool.
//! Every write holds the writer lock from `begin_write` until the broadcast of its events, so
//! live watchers see revisions in order.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::broadcast;

use super::codec::{self, KvRecord, LeaseRecord};
use super::{BACKEND, RevisionEvents};
use crate::{
    Compare, KeyValue, LeaseId, ListResult, Revision, StoreError, Txn, TxnOp, TxnResult, WatchEvent,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const EVENTS: TableDefinition<i64, &[u8]> = TableDefinition::new("events");
const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<&[u8], ()> = TableDefinition::new("lease_keys");

const META_REVISION: &str = "revision";
const META_COMPACT: &str = "compact_revision";

/// Revision of an empty store (as etcd's).
const INITIAL_REVISION: Revision = 1;

/// Why opening the database failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is held by another handle (possibly one of this process still closing).
    #[error("database already open")]
    AlreadyOpen,
    /// Anything else.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Removes the events of the revisions below `floor`.
fn drop_events_below(
    events: &mut redb::Table<'_, i64, &[u8]>,
    floor: i64,
) -> Result<(), StoreError> {
    let old: Vec<i64> = events
        .range(..floor)
        .map_err(db_err)?
        .map(|r| r.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
    for rev in old {
        events.remove(rev).map_err(db_err)?;
    }
    Ok(())
}

pub(super) fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: e.to_string(),
    }
}

pub(super) fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: format!("blocking task failed: {e}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A slice of the watch history: the events of each revision read, then the store revision
/// and the compact revision of the same snapshot.
pub(super) type HistoryChunk = (Vec<(Revision, Vec<WatchEvent>)>, Revision, Revision);

/// State only the writer touches, mirrored from the database.
#[derive(Debug)]
struct WriterState {
    revision: Revision,
    compact_revision: Revision,
    leases: HashMap<LeaseId, LeaseRecord>,
}

/// What a write produced, applied to the in-memory state once it committed.
#[derive(Debug, Default)]
struct Staged {
    events: Vec<WatchEvent>,
    lease_changes: Vec<(LeaseId, Option<LeaseRecord>)>,
}

/// The database and its writer.
pub struct Inner {
    db: Database,
    writer: Mutex<WriterState>,
    /// Live event feed; `pub(super)` for the watch task.
    pub(super) events_tx: broadcast::Sender<Arc<RevisionEvents>>,
    history: i64,
    /// Read without the writer lock for cheap progress reports.
    revision_hint: std::sync::atomic::AtomicI64,
    /// Declared last so it is dropped after `db` has released the file.
    _held: HeldHere,
}

/// Database files this process holds open: a file held by another process is refused at once,
/// while one held here may be about to close (a restarting component), so it is waited for.
static HELD_HERE: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

/// Marks one database file as held by this process while it lives.
#[derive(Debug)]
struct HeldHere(std::path::PathBuf);

impl HeldHere {
    fn new(path: &Path) -> Self {
        let mut held = HELD_HERE.lock().unwrap_or_else(|e| e.into_inner());
        held.push(path.to_path_buf());
        Self(path.to_path_buf())
    }
}

impl Drop for HeldHere {
    fn drop(&mut self) {
        let mut held = HELD_HERE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|p| *p == self.0) {
            held.swap_remove(i);
        }
    }
}

/// Whether a handle of this process holds the database file at `path`.
pub fn held_here(path: &Path) -> bool {
    let held = HELD_HERE.lock().unwrap_or_else(|e| e.into_inner());
    held.iter().any(|p| p == path)
}

impl Inner {
    /// Opens or creates the database file and loads the writer state.
    pub fn open(path: &Path, history: i64) -> Result<Self, OpenError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::AlreadyOpen),
            Err(e) => {
                return Err(OpenError::Store(StoreError::Backend {
                    backend: BACKEND,
                    message: format!("cannot open {}: {e}", path.display()),
                }));
            }
        };
        let wtx = db.begin_write().map_err(db_err)?;
        let state = {
            let mut meta = wtx.open_table(META).map_err(db_err)?;
            // Create every table so readers never meet a missing one.
            wtx.open_table(KV).map_err(db_err)?;
            wtx.open_table(EVENTS).map_err(db_err)?;
            wtx.open_table(LEASE_KEYS).map_err(db_err)?;
            let leases_table = wtx.open_table(LEASES).map_err(db_err)?;
            let stored = meta.get(META_REVISION).map_err(db_err)?.map(|v| v.value());
            let revision = match stored {
                Some(rev) => rev,
                None => {
                    meta.insert(META_REVISION, INITIAL_REVISION)
                        .map_err(db_err)?;
                    INITIAL_REVISION
                }
            };
            let compact_revision = meta
                .get(META_COMPACT)
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut leases = HashMap::new();
            for item in leases_table.iter().map_err(db_err)? {
                let (id, rec) = item.map_err(db_err)?;
                leases.insert(
                    id.value(),
                    LeaseRecord::decode(rec.value()).map_err(db_err)?,
                );
            }
            WriterState {
                revision,
                compact_revision,
                leases,
            }
        };
        wtx.commit().map_err(db_err)?;
        Ok(Self {
            db,
            revision_hint: std::sync::atomic::AtomicI64::new(state.revision),
            writer: Mutex::new(state),
            events_tx: super::new_broadcast(),
            history,
            _held: HeldHere::new(path),
        })
    }

    /// Current revision (may lag a write in progress by one).
    pub fn revision(&self) -> Revision {
        self.revision_hint
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock(&self) -> Result<MutexGuard<'_, WriterState>, StoreError> {
        self.writer
            .lock()
            .map_err(|_| db_err("writer lock poisoned by a panic"))
    }

    /// Reads one key.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let rtx = self.db.begin_read().map_err(db_err)?;
        let kv = rtx.open_table(KV).map_err(db_err)?;
        match kv.get(key).map_err(db_err)? {
            Some(v) => Ok(Some(
                KvRecord::decode(v.value())
                    .map_err(db_err)?
                    .into_key_value(key.into()),
            )),
            None => Ok(None),
        }
    }

    /// Lists every key under `prefix` with the revision of the same snapshot.
    pub fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let rtx = self.db.begin_read().map_err(db_err)?;
        let meta = rtx.open_table(META).map_err(db_err)?;
        let revision = meta
            .get(META_REVISION)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(INITIAL_REVISION);
        let kv = rtx.open_table(KV).map_err(db_err)?;
        let mut kvs = Vec::new();
        for item in kv.range(prefix..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            kvs.push(
                KvRecord::decode(v.value())
                    .map_err(db_err)?
                    .into_key_value(key.to_string()),
            );
        }
        Ok(ListResult { kvs, revision })
    }

    /// Reads the persisted history of revisions `from..=up to limit revisions`, returning the
    /// events of each revision, the store revision of the snapshot and the compact revision.
    pub(super) fn history(&self, from: Revision, limit: usize) -> Result<HistoryChunk, StoreError> {
        let rtx = self.db.begin_read().map_err(db_err)?;
        let meta = rtx.open_table(META).map_err(db_err)?;
        let revision = meta
            .get(META_REVISION)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(INITIAL_REVISION);
        let compact = meta
            .get(META_COMPACT)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0);
        if from < compact {
            return Ok((Vec::new(), revision, compact));
        }
        let events = rtx.open_table(EVENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in events.range(from..).map_err(db_err)?.take(limit) {
            let (rev, bytes) = item.map_err(db_err)?;
            out.push((
                rev.value(),
                codec::decode_events(bytes.value()).map_err(db_err)?,
            ));
        }
        Ok((out, revision, compact))
    }

    /// Runs one write: `f` stages changes in `wtx` at revision `state.revision + 1`; if it
    /// produced events the revision is bumped and the history appended; then everything
    /// commits and live watchers are told.
    fn write<R>(
        &self,
        f: impl FnOnce(&WriteTransaction, &WriterState, Revision, &mut Staged) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut state = self.lock()?;
        let wtx = self.db.begin_write().map_err(db_err)?;
        let new_rev = state.revision + 1;
        let mut staged = Staged::default();
        let out = f(&wtx, &state, new_rev, &mut staged)?;
        let bumped = !staged.events.is_empty();
        let mut new_compact = state.compact_revision;
        if bumped {
            let mut meta = wtx.open_table(META).map_err(db_err)?;
            meta.insert(META_REVISION, new_rev).map_err(db_err)?;
            let mut events = wtx.open_table(EVENTS).map_err(db_err)?;
            events
                .insert(new_rev, codec::encode_events(&staged.events).as_slice())
                .map_err(db_err)?;
            // Keep a bounded history: revisions below `new_rev - history + 1` are dropped.
            let floor = new_rev - self.history + 1;
            if floor > new_compact {
                drop_events_below(&mut events, floor)?;
                meta.insert(META_COMPACT, floor).map_err(db_err)?;
                new_compact = floor;
            }
        }
        if bumped || !staged.lease_changes.is_empty() {
            wtx.commit().map_err(db_err)?;
        } else {
            wtx.abort().map_err(db_err)?;
        }
        for (id, rec) in staged.lease_changes {
            match rec {
                Some(rec) => state.leases.insert(id, rec),
                None => state.leases.remove(&id),
            };
        }
        if bumped {
            state.revision = new_rev;
            state.compact_revision = new_compact;
            self.revision_hint
                .store(new_rev, std::sync::atomic::Ordering::Release);
            // No receiver is fine: nobody is watching.
            let _ = self.events_tx.send(Arc::new(RevisionEvents {
                revision: new_rev,
                events: staged.events,
            }));
        }
        Ok(out)
    }

    /// Applies a transaction (the op count was checked by the caller).
    pub fn txn(&self, txn: &Txn) -> Result<TxnResult, StoreError> {
        Ok(self.apply(txn)?.0)
    }

    /// Applies a transaction; also returns how many events it produced.
    fn apply(&self, txn: &Txn) -> Result<(TxnResult, usize), StoreError> {
        let mut seen = BTreeSet::new();
        for op in &txn.ops {
            let key = match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
            };
            if !seen.insert(key.as_str()) {
                return Err(db_err(format!("duplicate key {key:?} in one transaction")));
            }
        }
        self.write(|wtx, state, new_rev, staged| {
            let now = now_ms();
            let mut kv = wtx.open_table(KV).map_err(db_err)?;
            for cmp in &txn.compares {
                let (key, expected) = match cmp {
                    Compare::ModRevision { key, revision } => (key, Some(*revision)),
                    Compare::Exists { key } => (key, None),
                };
                let current = match kv.get(key.as_str()).map_err(db_err)? {
                    Some(v) => KvRecord::decode(v.value()).map_err(db_err)?.mod_revision,
                    None => 0,
                };
                let holds = match expected {
                    Some(revision) => current == revision,
                    None => current != 0,
                };
                if !holds {
                    return Ok((
                        TxnResult {
                            succeeded: false,
                            revision: state.revision,
                        },
                        0,
                    ));
                }
            }
            for op in &txn.ops {
                if let TxnOp::Put {
                    lease: Some(id), ..
                } = op
                {
                    match state.leases.get(id) {
                        Some(rec) if rec.deadline_ms > now => {}
                        _ => return Err(StoreError::LeaseNotFound(*id)),
                    }
                }
            }
            let mut lease_keys = wtx.open_table(LEASE_KEYS).map_err(db_err)?;
            for op in &txn.ops {
                match op {
                    TxnOp::Put { key, value, lease } => {
                        let old = match kv.get(key.as_str()).map_err(db_err)? {
                            Some(v) => Some(KvRecord::decode(v.value()).map_err(db_err)?),
                            None => None,
                        };
                        let rec = KvRecord {
                            create_revision: old.as_ref().map_or(new_rev, |o| o.create_revision),
                            mod_revision: new_rev,
                            lease: lease.unwrap_or(0),
                            value: value.clone(),
                        };
                        if let Some(old) = &old
                            && old.lease != 0
                            && old.lease != rec.lease
                        {
                            lease_keys
                                .remove(codec::lease_key(old.lease, key).as_slice())
                                .map_err(db_err)?;
                        }
                        if rec.lease != 0 {
                            lease_keys
                                .insert(codec::lease_key(rec.lease, key).as_slice(), ())
                                .map_err(db_err)?;
                        }
                        kv.insert(key.as_str(), rec.encode().as_slice())
                            .map_err(db_err)?;
                        staged
                            .events
                            .push(WatchEvent::Put(rec.into_key_value(key.clone())));
                    }
                    TxnOp::Delete { key } => {
                        let old = match kv.remove(key.as_str()).map_err(db_err)? {
                            Some(v) => Some(KvRecord::decode(v.value()).map_err(db_err)?),
                            None => None,
                        };
                        if let Some(old) = old {
                            if old.lease != 0 {
                                lease_keys
                                    .remove(codec::lease_key(old.lease, key).as_slice())
                                    .map_err(db_err)?;
                            }
                            staged.events.push(WatchEvent::Delete {
                                key: key.clone(),
                                mod_revision: new_rev,
                            });
                        }
                    }
                }
            }
            let revision = if staged.events.is_empty() {
                state.revision
            } else {
                new_rev
            };
            Ok((
                TxnResult {
                    succeeded: true,
                    revision,
                },
                staged.events.len(),
            ))
        })
    }

    /// Deletes one key; returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let txn = Txn {
            compares: vec![],
            ops: vec![TxnOp::Delete {
                key: key.to_string(),
            }],
        };
        Ok(self.apply(&txn)?.1 > 0)
    }

    /// Grants a lease of `ttl`.
    pub fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.write(|wtx, state, _, staged| {
            let mut rng = rand::rng();
            let id = loop {
                let id: i64 = rng.random_range(1..i64::MAX);
                if !state.leases.contains_key(&id) {
                    break id;
                }
            };
            let ttl_ms = duration_ms(ttl);
            let rec = LeaseRecord {
                ttl_ms,
                deadline_ms: now_ms().saturating_add(ttl_ms),
            };
            let mut leases = wtx.open_table(LEASES).map_err(db_err)?;
            leases.insert(id, rec.encode().as_slice()).map_err(db_err)?;
            staged.lease_changes.push((id, Some(rec)));
            Ok(id)
        })
    }

    /// Refreshes a lease's deadline.
    pub fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(|wtx, state, _, staged| {
            let now = now_ms();
            let rec = match state.leases.get(&lease) {
                Some(rec) if rec.deadline_ms > now => *rec,
                _ => return Err(StoreError::LeaseNotFound(lease)),
            };
            let rec = LeaseRecord {
                deadline_ms: now.saturating_add(rec.ttl_ms),
                ..rec
            };
            let mut leases = wtx.open_table(LEASES).map_err(db_err)?;
            leases
                .insert(lease, rec.encode().as_slice())
                .map_err(db_err)?;
            staged.lease_changes.push((lease, Some(rec)));
            Ok(())
        })
    }

    /// Revokes a lease, deleting its keys at one revision.
    pub fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(|wtx, state, new_rev, staged| {
            if !state.leases.contains_key(&lease) {
                return Err(StoreError::LeaseNotFound(lease));
            }
            remove_lease(wtx, lease, new_rev, staged)
        })
    }

    /// Whether any lease is past its deadline (cheap, for the reaper's tick).
    pub fn has_expired_leases(&self) -> bool {
        let now = now_ms();
        self.lock()
            .map(|s| s.leases.values().any(|l| l.deadline_ms <= now))
            .unwrap_or(false)
    }

    /// Expires every lease past its deadline, each at its own revision (as etcd does).
    pub fn expire_leases(&self) -> Result<(), StoreError> {
        let now = now_ms();
        let mut expired: Vec<LeaseId> = {
            let state = self.lock()?;
            state
                .leases
                .iter()
                .filter(|(_, l)| l.deadline_ms <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        expired.sort_unstable();
        for lease in expired {
            self.write(|wtx, state, new_rev, staged| {
                // A keep-alive may have raced the check above.
                match state.leases.get(&lease) {
                    Some(rec) if rec.deadline_ms <= now_ms() => {}
                    _ => return Ok(()),
                }
                tracing::debug!(lease, "embedded store: lease expired");
                remove_lease(wtx, lease, new_rev, staged)
            })?;
        }
        Ok(())
    }

    /// Drops the watch history below `revision`.
    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if revision > state.revision {
            return Err(db_err(format!(
                "cannot compact to revision {revision}: the store is at {}",
                state.revision
            )));
        }
        if revision <= state.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision: state.compact_revision,
            });
        }
        let wtx = self.db.begin_write().map_err(db_err)?;
        {
            let mut events = wtx.open_table(EVENTS).map_err(db_err)?;
            drop_events_below(&mut events, revision)?;
            let mut meta = wtx.open_table(META).map_err(db_err)?;
            meta.insert(META_COMPACT, revision).map_err(db_err)?;
        }
        wtx.commit().map_err(db_err)?;
        state.compact_revision = revision;
        Ok(())
    }
}

/// Deletes a lease and every key bound to it, staging Delete events at `new_rev`.
fn remove_lease(
    wtx: &WriteTransaction,
    lease: LeaseId,
    new_rev: Revision,
    staged: &mut Staged,
) -> Result<(), StoreError> {
    let mut lease_keys = wtx.open_table(LEASE_KEYS).map_err(db_err)?;
    let prefix = codec::lease_prefix(lease);
    let mut index_keys = Vec::new();
    for item in lease_keys.range(prefix.as_slice()..).map_err(db_err)? {
        let (k, _) = item.map_err(db_err)?;
        let k = k.value();
        if !k.starts_with(&prefix) {
            break;
        }
        index_keys.push(k.to_vec());
    }
    let mut kv = wtx.open_table(KV).map_err(db_err)?;
    for index_key in index_keys {
        lease_keys.remove(index_key.as_slice()).map_err(db_err)?;
        let key = String::from_utf8_lossy(&index_key[prefix.len()..]).into_owned();
        if kv.remove(key.as_str()).map_err(db_err)?.is_some() {
            staged.events.push(WatchEvent::Delete {
                key,
                mod_revision: new_rev,
            });
        }
    }
    let mut leases = wtx.open_table(LEASES).map_err(db_err)?;
    leases.remove(lease).map_err(db_err)?;
    staged.lease_changes.push((lease, None));
    Ok(())
}
