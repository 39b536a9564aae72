//! Consul: a thin HTTP client for the parts of Consul's API Shoal uses, and the `consul://`
//! store backend built on it.
//!
//! - [`ConsulClient`] speaks Consul's HTTP API (KV, blocking queries, `/v1/txn`, sessions,
//!   agent services and checks, catalog and health) with an optional ACL token, a CA file for
//!   TLS and timeouts. It follows the behaviour of the real Consul API: values are base64 in
//!   JSON, blocking queries reset their index when `X-Consul-Index` goes backwards, a
//!   transaction carries at most [`MAX_TXN_OPS`] operations (the limit of Consul before 1.14;
//!   later versions accept 128, so 64 works everywhere).
//! - [`ConsulStore`] implements [`crate::Store`] on top of it. See [`store`] for how revisions,
//!   watches and leases map onto `ModifyIndex`, blocking queries and sessions, and where the
//!   semantics differ from etcd's.

mod client;
mod encode;
pub mod store;
mod types;
mod watch;

pub use client::{ConsulClient, ConsulConfig, IndexTracker, QueryOptions};
pub use store::{ConsulStore, ConsulStoreOptions};
pub use types::{
    AgentCheck, AgentService, AgentServiceCheck, AgentServiceRegistration, CatalogService,
    HealthCheck, HealthNode, KvEntry, PutOptions, ServiceEntry, SessionBehavior, SessionInfo,
    SessionRequest, TxnError, TxnKvOp, TxnOutcome, TxnVerb,
};

/// Most operations Shoal puts in one Consul transaction (Consul < 1.14 accepts 64, later 128).
pub const MAX_TXN_OPS: usize = 64;

/// Most bytes of keys and values Shoal puts in one Consul transaction: Consul refuses a
/// request over 512 KiB (`txn_max_req_len`), and values travel base64-encoded in JSON
/// (4/3 of their size), with room left for the JSON around them.
pub const MAX_TXN_BYTES: usize = 512 * 1024 * 3 / 4 - 16 * 1024;

/// Backend name used in errors and metrics.
pub const BACKEND: &str = "consul";

/// What can go wrong talking to Consul.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The client configuration is unusable (bad address, unreadable CA file).
    #[error("invalid Consul client configuration: {0}")]
    Config(String),
    /// The request did not complete (connection refused, timeout, broken body).
    #[error("Consul request failed: {0}")]
    Transport(String),
    /// Consul answered 404 (missing session, unknown service or check ID).
    #[error("not found: {0}")]
    NotFound(String),
    /// Consul refused the ACL token (403).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A transaction carries more operations than Shoal sends at once.
    #[error("transaction has {ops} operations; at most {max} are sent to Consul at once")]
    TooManyOps {
        /// Operations in the transaction.
        ops: usize,
        /// The limit.
        max: usize,
    },
    /// Consul answered with an unexpected status.
    #[error("Consul answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body (Consul's errors are plain text).
        body: String,
    },
    /// The response body could not be decoded.
    #[error("cannot decode Consul response: {0}")]
    Decode(String),
}

impl ConsulError {
    /// Whether retrying later may succeed (transport errors, 429, 5xx other than Consul's
    /// validation errors are treated as transient).
    pub fn is_transient(&self) -> bool {
        match self {
            ConsulError::Transport(_) => true,
            ConsulError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl From<ConsulError> for crate::StoreError {
    fn from(e: ConsulError) -> Self {
        match e {
            ConsulError::TooManyOps { ops, max } => crate::StoreError::TooManyOps {
                ops,
                max,
                backend: BACKEND,
            },
            e if e.is_transient() => crate::StoreError::Unavailable(e.to_string()),
            e => crate::StoreError::Backend {
                backend: BACKEND,
                message: e.to_string(),
            },
        }
    }
}
