//! The fake's data: a raft-like global index, the KV table with tombstones, sessions with
//! TTL and lock-delay, and the agent's services and checks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// One KV entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub flags: u64,
    pub value: Vec<u8>,
    pub session: Option<String>,
}

/// One session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: String,
    pub ttl: Duration,
    pub node_checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    pub deadline: Option<Instant>,
}

/// One service registered on the agent.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u64,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One check registered on the agent.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub id: String,
    pub name: String,
    pub status: String,
    pub output: String,
    pub notes: String,
    pub service_id: String,
    pub service_name: String,
    pub kind: String,
    pub definition: Value,
    pub ttl: Option<Duration>,
    pub ttl_deadline: Option<Instant>,
    pub deregister_after: Option<Duration>,
    pub critical_since: Option<Instant>,
    /// For HTTP and TCP checks: how often the agent runs them, and its timeout.
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    /// When the agent runs it next (`None`: at once).
    pub next_run: Option<Instant>,
}

/// A KV operation in the fake's own terms (the HTTP KV verbs map onto these too).
#[derive(Debug, Clone)]
pub(crate) struct KvOp {
    pub verb: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub flags: Option<u64>,
    pub index: Option<u64>,
    pub session: Option<String>,
}

/// Everything the fake Consul knows.
#[derive(Debug)]
pub(crate) struct State {
    pub index: u64,
    pub kv: BTreeMap<String, Entry>,
    pub tombstones: BTreeMap<String, u64>,
    /// When the raft index reached each value (sampled by the ticker), to reap tombstones
    /// older than the tombstone TTL.
    pub index_times: std::collections::VecDeque<(Instant, u64)>,
    /// `tombstone_ttl` (15 min in Consul, before scaling).
    pub tombstone_ttl: Duration,
    pub kv_index: u64,
    pub sessions: BTreeMap<String, Session>,
    pub session_index: u64,
    pub lock_delays: BTreeMap<String, Instant>,
    pub services: BTreeMap<String, Service>,
    pub checks: BTreeMap<String, Check>,
    pub catalog_index: u64,
    pub node: String,
    pub node_id: String,
    /// Nodes of the other agents ([`super::ConsulFake::add_agent`]).
    pub other_nodes: std::collections::BTreeSet<String>,
    /// Services reaped for a check critical past `DeregisterCriticalServiceAfter`, in order.
    pub reaped: Vec<String>,
    pub time_scale: f64,
}

/// The JSON of a KV entry in Consul's field order; `with_value` false gives `Value: null`.
pub(crate) fn entry_json(key: &str, e: &Entry, with_value: bool) -> Value {
    let value = if with_value && !e.value.is_empty() {
        Value::String(STANDARD.encode(&e.value))
    } else {
        Value::Null
    };
    let mut m = serde_json::Map::new();
    m.insert("LockIndex".into(), e.lock_index.into());
    m.insert("Key".into(), key.into());
    m.insert("Flags".into(), e.flags.into());
    m.insert("Value".into(), value);
    if let Some(s) = &e.session {
        m.insert("Session".into(), s.clone().into());
    }
    m.insert("CreateIndex".into(), e.create_index.into());
    m.insert("ModifyIndex".into(), e.modify_index.into());
    Value::Object(m)
}

fn under<'a, T>(
    map: &'a BTreeMap<String, T>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a T)> {
    map.range(prefix.to_string()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl State {
    pub(crate) fn new(time_scale: f64) -> Self {
        Self {
            index: 5,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            index_times: Default::default(),
            tombstone_ttl: Duration::from_secs(15 * 60),
            kv_index: 0,
            sessions: BTreeMap::new(),
            session_index: 0,
            lock_delays: BTreeMap::new(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            catalog_index: 5,
            node: "shoal-fake".into(),
            node_id: uuid::Uuid::new_v4().to_string(),
            other_nodes: Default::default(),
            reaped: Vec::new(),
            time_scale,
        }
    }

    /// Scales a Consul duration for the fake's clock.
    pub(crate) fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale)
    }

    /// `X-Consul-Index` of a single-key read.
    pub(crate) fn key_index(&self, key: &str) -> u64 {
        match self.kv.get(key) {
            Some(e) => e.modify_index,
            None => self.kv_index.max(1),
        }
    }

    /// `X-Consul-Index` of a prefix read: the newest entry or tombstone under the prefix.
    pub(crate) fn prefix_index(&self, prefix: &str) -> u64 {
        let entries = under(&self.kv, prefix).map(|(_, e)| e.modify_index).max();
        let tombs = under(&self.tombstones, prefix).map(|(_, i)| *i).max();
        match entries.max(tombs) {
            Some(i) => i.max(1),
            None => self.kv_index.max(1),
        }
    }

    /// Entries under a prefix, sorted by key.
    pub(crate) fn list(&self, prefix: &str) -> Vec<(String, Entry)> {
        under(&self.kv, prefix)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Applies KV operations atomically at one new index. `Ok` holds the result entries
    /// (`None` for operations without a result); `Err` every failing operation.
    pub(crate) fn apply(
        &mut self,
        ops: &[KvOp],
    ) -> Result<Vec<Option<Value>>, Vec<(usize, String)>> {
        let at = self.index + 1;
        let now = Instant::now();
        let mut kv = self.kv.clone();
        let mut tombs = self.tombstones.clone();
        let mut changed = false;
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.apply_one(&mut kv, &mut tombs, op, at, now, &mut changed, &mut results) {
                Ok(()) => {}
                Err(e) => errors.push((i, e)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if changed {
            self.kv = kv;
            self.tombstones = tombs;
            self.index = at;
            self.kv_index = at;
        }
        Ok(results)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_one(
        &self,
        kv: &mut BTreeMap<String, Entry>,
        tombs: &mut BTreeMap<String, u64>,
        op: &KvOp,
        at: u64,
        now: Instant,
        changed: &mut bool,
        results: &mut Vec<Option<Value>>,
    ) -> Result<(), String> {
        let key = op.key.as_str();
        if key.is_empty() && op.verb != "delete-tree" {
            return Err("Must provide key".into());
        }
        let value = op.value.clone().unwrap_or_default();
        let existing = kv.get(key).cloned();
        let mut write =
            |kv: &mut BTreeMap<String, Entry>, session: Option<String>, lock_index: u64| {
                let flags = op.flags.unwrap_or(0);
                let new = match &existing {
                    Some(e)
                        if e.value == value
                            && e.flags == flags
                            && e.session == session
                            && e.lock_index == lock_index =>
                    {
                        e.clone()
                    }
                    Some(e) => Entry {
                        modify_index: at,
                        flags,
                        value: value.clone(),
                        session,
                        lock_index,
                        ..e.clone()
                    },
                    None => Entry {
                        create_index: at,
                        modify_index: at,
                        lock_index,
                        flags,
                        value: value.clone(),
                        session,
                    },
                };
                if existing.as_ref() != Some(&new) {
                    *changed = true;
                }
                kv.insert(key.to_string(), new.clone());
                new
            };
        match op.verb.as_str() {
            "set" => {
                let (session, li) = existing.as_ref().map(|e| (e.session.clone(), e.lock_index)).unwrap_or((None, 0));
                let e = write(kv, session, li);
                results.push(Some(entry_json(key, &e, false)));
            }
            "cas" => {
                let idx = op.index.unwrap_or(0);
                let ok = match &existing {
                    None => idx == 0,
                    Some(e) => idx != 0 && e.modify_index == idx,
                };
                if !ok {
                    return Err(format!("failed to set key {key:?}, index is stale"));
                }
                let (session, li) = existing.as_ref().map(|e| (e.session.clone(), e.lock_index)).unwrap_or((None, 0));
                let e = write(kv, session, li);
                results.push(Some(entry_json(key, &e, false)));
            }
            "lock" => {
                let sid = op.session.clone().unwrap_or_default();
                if sid.is_empty() {
                    return Err("missing session".into());
                }
                if !self.sessions.contains_key(&sid) {
                    return Err(format!("invalid session {sid:?}"));
                }
                if self.lock_delays.get(key).is_some_and(|until| *until > now) {
                    return Err(format!("failed to lock key {key:?} due to lock delay"));
                }
                let e = match &existing {
                    Some(e) if e.session.as_deref() == Some(sid.as_str()) => write(kv, Some(sid), e.lock_index),
                    Some(e) if e.session.is_some() => {
                        return Err(format!("failed to lock key {key:?}, lock is already held"));
                    }
                    Some(e) => write(kv, Some(sid), e.lock_index + 1),
                    None => write(kv, Some(sid), 1),
                };
                results.push(Some(entry_json(key, &e, false)));
            }
            "unlock" => {
                let sid = op.session.clone().unwrap_or_default();
                match &existing {
                    Some(e) if !sid.is_empty() && e.session.as_deref() == Some(sid.as_str()) => {
                        let e = write(kv, None, e.lock_index);
                        results.push(Some(entry_json(key, &e, false)));
                    }
                    _ => {
                        return Err(format!(
                            "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                        ));
                    }
                }
            }
            "get" => match &existing {
                Some(e) => results.push(Some(entry_json(key, e, true))),
                None => return Err(format!("key {key:?} doesn't exist")),
            },
            "get-or-empty" => match &existing {
                Some(e) => results.push(Some(entry_json(key, e, true))),
                None => results.push(Some(json!({"LockIndex":0,"Key":key,"Flags":0,"Value":null,"CreateIndex":0,"ModifyIndex":0}))),
            },
            "get-tree" => {
                for (k, e) in under(kv, key) {
                    results.push(Some(entry_json(k, e, true)));
                }
            }
            "check-index" => {
                let idx = op.index.unwrap_or(0);
                match &existing {
                    None => return Err(format!("failed to check index, key {key:?} doesn't exist")),
                    Some(e) if e.modify_index != idx => {
                        return Err(format!(
                            "failed index check for key {key:?}, current modify index {} != {idx}",
                            e.modify_index
                        ));
                    }
                    Some(e) => results.push(Some(entry_json(key, e, false))),
                }
            }
            "check-session" => {
                let sid = op.session.clone().unwrap_or_default();
                match &existing {
                    None => return Err(format!("failed to check session, key {key:?} doesn't exist")),
                    Some(e) if e.session.as_deref().unwrap_or("") != sid => {
                        return Err(format!(
                            "failed session check for key {key:?}, current session {:?} != {sid:?}",
                            e.session.as_deref().unwrap_or("")
                        ));
                    }
                    Some(e) => results.push(Some(entry_json(key, e, false))),
                }
            }
            "check-not-exists" => {
                if existing.is_some() {
                    return Err(format!("key {key:?} exists"));
                }
            }
            "delete" => {
                if kv.remove(key).is_some() {
                    tombs.insert(key.to_string(), at);
                    *changed = true;
                }
            }
            "delete-tree" => {
                let keys: Vec<String> = under(kv, key).map(|(k, _)| k.clone()).collect();
                for k in keys {
                    kv.remove(&k);
                    tombs.insert(k, at);
                    *changed = true;
                }
            }
            "delete-cas" => {
                let idx = op.index.unwrap_or(0);
                if let Some(e) = &existing {
                    if e.modify_index != idx {
                        return Err(format!("failed to delete key {key:?}, index is stale"));
                    }
                    kv.remove(key);
                    tombs.insert(key.to_string(), at);
                    *changed = true;
                }
            }
            other => return Err(format!("unknown KV verb {other:?}")),
        }
        Ok(())
    }

    /// Destroys a session: its keys are released or deleted (per its behaviour) and get
    /// lock-delay, all at one new index. Returns whether it existed.
    pub(crate) fn invalidate_session(&mut self, id: &str) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let at = self.index + 1;
        let delay = session.lock_delay.min(Duration::from_secs(60));
        let until = Instant::now() + self.scaled(delay);
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &held {
            if session.behavior == "delete" {
                self.kv.remove(key);
                self.tombstones.insert(key.clone(), at);
            } else if let Some(e) = self.kv.get_mut(key) {
                e.session = None;
                e.modify_index = at;
            }
            if !delay.is_zero() {
                self.lock_delays.insert(key.clone(), until);
            }
        }
        if !held.is_empty() {
            self.kv_index = at;
        }
        self.session_index = at;
        self.index = at;
        true
    }

    /// Session JSON as info/list/renew return it.
    pub(crate) fn session_json(&self, s: &Session) -> Value {
        json!({
            "ID": s.id,
            "Name": s.name,
            "Node": s.node,
            "LockDelay": s.lock_delay.as_nanos() as u64,
            "Behavior": s.behavior,
            "TTL": if s.ttl.is_zero() { String::new() } else { format!("{}s", s.ttl.as_secs()) },
            "NodeChecks": s.node_checks,
            "ServiceChecks": Value::Null,
            "CreateIndex": s.create_index,
            "ModifyIndex": s.modify_index,
        })
    }

    /// Reaps tombstones older than the tombstone TTL, as Consul's tombstone GC does
    /// (`tombstone_ttl`, 15 min, `agent/consul/config.go`): prefix indexes may then go back.
    fn reap_old_tombstones(&mut self, now: Instant) -> bool {
        if self.index_times.back().is_none_or(|(_, i)| *i < self.index) {
            self.index_times.push_back((now, self.index));
        }
        let Some(horizon) = now.checked_sub(self.scaled(self.tombstone_ttl)) else {
            return false;
        };
        let mut reap_to = None;
        while let Some(&(t, i)) = self.index_times.front() {
            if t > horizon {
                break;
            }
            reap_to = Some(i);
            self.index_times.pop_front();
        }
        let Some(reap_to) = reap_to else { return false };
        let before = self.tombstones.len();
        self.tombstones.retain(|_, at| *at > reap_to);
        self.tombstones.len() != before
    }

    /// Runs the timers: session TTLs, TTL checks, critical-service reaping. Returns whether
    /// anything changed.
    pub(crate) fn tick(&mut self, now: Instant) -> bool {
        let mut changed = self.reap_old_tombstones(now);
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.deadline.is_some_and(|d| d <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            changed |= self.invalidate_session(&id);
        }
        let mut check_changed = false;
        for c in self.checks.values_mut() {
            if c.ttl_deadline.is_some_and(|d| d <= now) && c.status != "critical" {
                c.output = if c.output.is_empty() {
                    "TTL expired".into()
                } else {
                    format!(
                        "TTL expired (last output before timeout follows): {}",
                        c.output
                    )
                };
                c.status = "critical".into();
                c.critical_since = Some(now);
                c.ttl_deadline = None;
                check_changed = true;
            }
        }
        let reap: Vec<String> = self
            .checks
            .values()
            .filter(|c| {
                let (Some(after), Some(since)) = (c.deregister_after, c.critical_since) else {
                    return false;
                };
                c.status == "critical"
                    && now >= since + after.max(Duration::from_secs(60)).mul_f64(self.time_scale)
            })
            .map(|c| c.service_id.clone())
            .collect();
        for sid in reap {
            if self.remove_service(&sid) {
                self.reaped.push(sid);
                check_changed = true;
            }
        }
        if check_changed {
            self.bump_catalog();
        }
        changed || check_changed
    }

    /// Removes a service and its checks (no index bump).
    pub(crate) fn remove_service(&mut self, id: &str) -> bool {
        let existed = self.services.remove(id).is_some();
        self.checks.retain(|_, c| c.service_id != id);
        existed
    }

    /// Records a catalog change at a new index.
    pub(crate) fn bump_catalog(&mut self) {
        self.index += 1;
        self.catalog_index = self.index;
    }
}
