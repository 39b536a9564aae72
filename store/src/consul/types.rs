//! Request and response bodies of the Consul HTTP API, as Consul spells them (PascalCase JSON,
//! base64 values, Go duration strings).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::encode::{b64, go_duration};

/// One KV entry (`structs.DirEntry`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    /// Times the key's lock was acquired.
    #[serde(default)]
    pub lock_index: u64,
    /// Full key.
    pub key: String,
    /// Opaque flags stored with the key.
    #[serde(default)]
    pub flags: u64,
    /// Value bytes (`None` when Consul sends `null`: an empty value or a result without value).
    #[serde(default, with = "b64")]
    pub value: Option<Vec<u8>>,
    /// Session holding the key's lock, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Index at which the key was created.
    #[serde(default)]
    pub create_index: u64,
    /// Index of the key's last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// Options of a KV PUT (`?cas`, `?flags`, `?acquire`, `?release`; at most one of the three
/// conditional ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Write only if the key's `ModifyIndex` is this (0 = only if absent).
    pub cas: Option<u64>,
    /// Flags stored with the key.
    pub flags: Option<u64>,
    /// Acquire the key's lock with this session.
    pub acquire: Option<String>,
    /// Release the key's lock held by this session.
    pub release: Option<String>,
}

/// A KV verb of `/v1/txn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnVerb {
    /// Unconditional write.
    Set,
    /// Write if `Index` matches (0 = create only).
    Cas,
    /// Write and acquire the lock with `Session`.
    Lock,
    /// Write and release the lock held by `Session`.
    Unlock,
    /// Read one key (fails when absent).
    Get,
    /// Read every key under a prefix.
    GetTree,
    /// Fail unless the key's `ModifyIndex` is `Index`.
    CheckIndex,
    /// Fail unless the key is locked by `Session`.
    CheckSession,
    /// Fail if the key exists.
    CheckNotExists,
    /// Delete one key.
    Delete,
    /// Delete every key under a prefix.
    DeleteTree,
    /// Delete if `Index` matches.
    DeleteCas,
}

/// One KV operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKvOp {
    /// What to do.
    pub verb: TxnVerb,
    /// Key (or prefix for the tree verbs).
    pub key: String,
    /// Value for the write verbs.
    #[serde(with = "b64", skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<u8>>,
    /// Flags for the write verbs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    /// `ModifyIndex` for `cas`, `check-index` and `delete-cas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Session for `lock`, `unlock` and `check-session`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl TxnKvOp {
    /// An operation with only a verb and a key.
    pub fn new(verb: TxnVerb, key: impl Into<String>) -> Self {
        Self {
            verb,
            key: key.into(),
            value: None,
            flags: None,
            index: None,
            session: None,
        }
    }

    /// Sets the value.
    pub fn value(mut self, value: Vec<u8>) -> Self {
        self.value = Some(value);
        self
    }

    /// Sets the index.
    pub fn index(mut self, index: u64) -> Self {
        self.index = Some(index);
        self
    }

    /// Sets the session.
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }
}

/// One failed operation of a rolled-back transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnError {
    /// Position of the failing operation in the request.
    pub op_index: usize,
    /// Consul's explanation.
    pub what: String,
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied; the KV results in request order (operations without a result add none).
    Committed(Vec<KvEntry>),
    /// Rolled back (409); every failing operation.
    RolledBack(Vec<TxnError>),
}

/// What happens to the keys a session holds when it is invalidated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBehavior {
    /// The locks are released; the keys stay.
    #[default]
    Release,
    /// The keys are deleted.
    Delete,
}

/// Body of `PUT /v1/session/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRequest {
    /// Free-text name.
    pub name: String,
    /// Node the session belongs to (the agent's node when `None`).
    pub node: Option<String>,
    /// Lock delay applied to held keys on invalidation (Consul's default 15s when `None`).
    pub lock_delay: Option<Duration>,
    /// What happens to held keys on invalidation.
    pub behavior: SessionBehavior,
    /// Time to live (none when `None`); Consul requires 10s..=24h.
    pub ttl: Option<Duration>,
    /// Node checks tied to the session (`["serfHealth"]` when `None`; empty = none).
    pub node_checks: Option<Vec<String>>,
}

impl SessionRequest {
    /// The JSON body Consul expects.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("Name".into(), self.name.clone().into());
        if let Some(node) = &self.node {
            body.insert("Node".into(), node.clone().into());
        }
        if let Some(delay) = self.lock_delay {
            body.insert("LockDelay".into(), go_duration(delay).into());
        }
        let behavior = match self.behavior {
            SessionBehavior::Release => "release",
            SessionBehavior::Delete => "delete",
        };
        body.insert("Behavior".into(), behavior.into());
        if let Some(ttl) = self.ttl {
            body.insert("TTL".into(), go_duration(ttl).into());
        }
        if let Some(checks) = &self.node_checks {
            body.insert("NodeChecks".into(), checks.clone().into());
        }
        serde_json::Value::Object(body)
    }
}

/// A session as `/v1/session/info`, `/list` and `/renew` return it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionInfo {
    /// Session UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Free-text name.
    #[serde(default)]
    pub name: String,
    /// Node it belongs to.
    #[serde(default)]
    pub node: String,
    /// Lock delay in nanoseconds.
    #[serde(default)]
    pub lock_delay: u64,
    /// `release` or `delete`.
    #[serde(default)]
    pub behavior: String,
    /// TTL as a Go duration string (empty = none). May be higher than requested.
    #[serde(default, rename = "TTL")]
    pub ttl: String,
    /// Index at which it was created.
    #[serde(default)]
    pub create_index: u64,
    /// Index of its last change.
    #[serde(default)]
    pub modify_index: u64,
}

impl SessionInfo {
    /// The TTL as a duration (`None` when the session has none).
    pub fn ttl_duration(&self) -> Option<std::time::Duration> {
        super::encode::parse_go_duration(&self.ttl).filter(|d| !d.is_zero())
    }
}

/// A check attached to a service registration. Durations are Go duration strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceCheck {
    /// Check ID (`service:<id>` when omitted).
    #[serde(rename = "CheckID", skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    /// Check name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// URL polled by an HTTP check.
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `host:port` dialled by a TCP check.
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Time to live of a TTL check.
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Interval of HTTP/TCP checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Timeout of HTTP/TCP checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Remove the service once the check has been critical this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
    /// Initial status (`passing`, `warning`, `critical`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Free-text notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Body of `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceRegistration {
    /// Service instance ID (unique on the agent).
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Address of the instance ("" = the node's address).
    #[serde(default)]
    pub address: String,
    /// Port of the instance.
    #[serde(default)]
    pub port: u16,
    /// Free-form metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Checks of the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<AgentServiceCheck>,
}

/// A service as `/v1/agent/services` and `/v1/health/service` return it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Instance ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Metadata.
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// Address ("" = the node's address).
    #[serde(default)]
    pub address: String,
}

/// A health check as the agent, catalog and health endpoints return it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// Node the check runs on.
    #[serde(default)]
    pub node: String,
    /// Check ID.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Check name.
    #[serde(default)]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(default)]
    pub status: String,
    /// Notes.
    #[serde(default)]
    pub notes: String,
    /// Output of the last run (or the note of the last TTL update).
    #[serde(default)]
    pub output: String,
    /// Service the check belongs to ("" for node checks).
    #[serde(default, rename = "ServiceID")]
    pub service_id: String,
    /// Name of that service.
    #[serde(default)]
    pub service_name: String,
    /// Check type (`http`, `tcp`, `ttl`, ...).
    #[serde(default, rename = "Type")]
    pub check_type: String,
}

/// The agent's view of a check (same shape as [`HealthCheck`]).
pub type AgentCheck = HealthCheck;

/// One instance of `/v1/catalog/service/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    /// Node name.
    pub node: String,
    /// Node address.
    #[serde(default)]
    pub address: String,
    /// Instance ID.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Tags.
    #[serde(default)]
    pub service_tags: Option<Vec<String>>,
    /// Instance address ("" = the node address).
    #[serde(default)]
    pub service_address: String,
    /// Metadata.
    #[serde(default)]
    pub service_meta: Option<BTreeMap<String, String>>,
    /// Port.
    #[serde(default)]
    pub service_port: u16,
}

/// The node part of a health entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthNode {
    /// Node name.
    pub node: String,
    /// Node address.
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
}

/// One instance of `/v1/health/service/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// Node the instance runs on.
    pub node: HealthNode,
    /// The instance.
    pub service: AgentService,
    /// Node and service checks.
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}
