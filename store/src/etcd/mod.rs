//! The etcd backend: Shoal's store on a real etcd cluster (v3 API, tested against etcd 3.4).
//!
//! etcd already has the model [`Store`] describes, so this is mostly a mapping. What the
//! client crate does not do, this module does: reconnecting broken watches from the last
//! revision seen (see [`watch`]), refusing transactions over etcd's op limit instead of
//! splitting them, bounding every call so a dead etcd yields [`StoreError::Unavailable`]
//! within seconds, and keeping the auth token of a TLS, user/password connection valid (see
//! [`auth`]). [`rbac`] creates the least-privilege users and roles Shoal's components run as.

mod auth;
pub mod rbac;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::PbKeyValue;
use etcd_client::{
    Client, CompactionOptions, CompareOp, ConnectOptions, GetOptions, KvClient, PutOptions,
};

pub use auth::{Credentials, EtcdTls};

use crate::{
    Compare, KeyValue, LeaseId, LeaseLeft, ListResult, Revision, Store, StoreError, Txn, TxnOp,
    TxnResult, WatchStream,
};

/// Backend name used in errors and metrics.
pub const BACKEND: &str = "etcd";

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Most bytes of keys and values Shoal puts in one etcd transaction: etcd refuses a request
/// over 1.5 MiB (`--max-request-bytes`), with room left for the request's framing.
pub const MAX_TXN_BYTES: usize = 1536 * 1024 - 64 * 1024;

/// Largest response accepted from etcd (lists of many keys, 1 MiB values).
const MAX_DECODING_MESSAGE: usize = 512 * 1024 * 1024;

/// Keys per page when listing a prefix.
const LIST_PAGE: i64 = 1000;

/// How to connect to etcd: timeouts, TLS and credentials.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one unary request.
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (detects dead connections under long watches).
    pub keep_alive_interval: Duration,
    /// How long an unanswered keep-alive ping may wait before the connection is dropped.
    pub keep_alive_timeout: Duration,
    /// TLS (endpoints are then reached over `https`); cleartext when `None`.
    pub tls: Option<EtcdTls>,
    /// User and password for etcd's authentication; none when `None` (or, with a client
    /// certificate, etcd takes the user from its common name).
    pub credentials: Option<Credentials>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(3),
            tls: None,
            credentials: None,
        }
    }
}

/// Shoal's store on etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    auth: Arc<auth::Auth>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`host:port` or `http://host:port`). The connection is
    /// lazy: an unreachable etcd shows up as [`StoreError::Unavailable`] on the first call.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, EtcdOptions::default()).await
    }

    /// Connects with explicit timeouts, TLS and credentials. Still lazy: with credentials, the
    /// first call authenticates (a wrong password shows up as [`StoreError::AuthFailed`]).
    pub async fn connect_with(
        endpoints: &[String],
        options: EtcdOptions,
    ) -> Result<Self, StoreError> {
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoints = endpoints
            .iter()
            .map(|e| match e.split_once("://") {
                None => Ok(format!("{scheme}://{e}")),
                Some((s, _)) if s == scheme => Ok(e.clone()),
                Some((s, _)) => Err(StoreError::InvalidUrl {
                    url: e.clone(),
                    reason: format!("{s}:// does not match the TLS settings ({scheme} expected)"),
                }),
            })
            .collect::<Result<Vec<String>, _>>()?;
        if endpoints.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: String::new(),
                reason: "no etcd endpoint given".into(),
            });
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            .with_keep_alive_while_idle(true)
            .with_auto_token_refresh(true);
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls.options());
        }
        let client = Client::connect(&endpoints, Some(connect))
            .await
            .map_err(map_err)?;
        tracing::debug!(
            ?endpoints,
            tls = options.tls.is_some(),
            user = options.credentials.as_ref().map(Credentials::user),
            "etcd store client created"
        );
        Ok(Self {
            client,
            endpoints,
            auth: Arc::new(auth::Auth::new(options.credentials)),
        })
    }

    /// Runs one call, authenticating first if it never did, and once more with a new token
    /// when etcd refuses the token it carried (expired, or older than the latest change of
    /// users and roles). A refused password is [`StoreError::AuthFailed`].
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let generation = self.auth.ensure(&self.client).await?;
        match f().await {
            Err(e) if self.auth.enabled() && auth::needs_new_token(&e) => {
                tracing::debug!(error = %e, "etcd refused the auth token; authenticating again");
                self.auth.renew(&self.client, generation).await?;
                f().await.map_err(map_err)
            }
            r => r.map_err(map_err),
        }
    }

    /// The endpoints this store talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Compacts etcd's history up to `revision` (waiting until it is applied); watches from
    /// older revisions then get [`StoreError::Compacted`].
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.run(|| {
            let mut kv = self.kv();
            async move {
                kv.compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
            }
        })
        .await
        .map(|_| ())
    }

    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_MESSAGE)
    }

    /// One page of a prefix list at `revision` (0 = current), starting at `from`: its keys,
    /// where the next page starts (`None`: this was the last) and the revision it was read
    /// at. A key that is not UTF-8 (written by another client) is skipped with a warning: it
    /// cannot be a Shoal key, and it must not stop every list of the prefix.
    async fn list_page(
        &self,
        from: &[u8],
        end: &[u8],
        revision: Revision,
    ) -> Result<(Vec<KeyValue>, Option<Vec<u8>>, Revision), StoreError> {
        let mut opts = GetOptions::new()
            .with_range(end.to_vec())
            .with_limit(LIST_PAGE);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = self
            .run(|| {
                let mut kv = self.kv();
                let (from, opts) = (from.to_vec(), opts.clone());
                async move { kv.get(from, Some(opts)).await }
            })
            .await?;
        let mut resp = resp;
        let rev = resp.header().map_or(0, |h| h.revision());
        let read = resp.take_kvs();
        // The next page starts after the last key read, readable or not.
        let next = read.last().filter(|_| resp.more()).map(|kv| {
            let mut from = kv.key().to_vec();
            from.push(0);
            from
        });
        let kvs = read
            .into_iter()
            .filter_map(|kv| readable(convert_kv(kv.0)))
            .collect();
        Ok((kvs, next, rev))
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's rule).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    for (i, b) in prefix.iter().enumerate().rev() {
        if *b < 0xff {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            return end;
        }
    }
    vec![0]
}

/// The key-value `converted` is, or `None` with a warning when its key is not UTF-8 (a list
/// or a watch of a prefix skips such keys; no Shoal component writes one).
fn readable(converted: Result<KeyValue, StoreError>) -> Option<KeyValue> {
    converted
        .inspect_err(|e| tracing::warn!(error = %e, "skipping an etcd key that is not UTF-8"))
        .ok()
}

/// Converts an etcd key-value, taking its key and value as they were received (a watcher
/// and a list see every value of the prefix: copying each again would double their cost).
fn convert_kv(kv: PbKeyValue) -> Result<KeyValue, StoreError> {
    let key = String::from_utf8(kv.key)
        .map_err(|e| backend(format!("key is not UTF-8: {}", e.utf8_error())))?;
    Ok(KeyValue {
        key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: (kv.lease != 0).then_some(kv.lease),
    })
}

fn backend(message: String) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message,
    }
}

/// Maps an etcd client error: connection problems become [`StoreError::Unavailable`].
pub(crate) fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => match i32::from(status.code()) {
            grpc_code::CANCELLED
            | grpc_code::DEADLINE_EXCEEDED
            | grpc_code::ABORTED
            | grpc_code::UNAVAILABLE => {
                StoreError::Unavailable(format!("etcd: {}", status.message()))
            }
            // Transport failures surface as Unknown with a transport message.
            grpc_code::UNKNOWN if status.message().contains("transport") => {
                StoreError::Unavailable(format!("etcd: {}", status.message()))
            }
            grpc_code::PERMISSION_DENIED => {
                StoreError::PermissionDenied(format!("etcd: {}", status.message()))
            }
            _ => backend(status.message().to_string()),
        },
        E::TransportError(e) => StoreError::Unavailable(format!("etcd transport: {e}")),
        E::IoError(e) => StoreError::Unavailable(format!("etcd i/o: {e}")),
        E::InvalidUri(e) => StoreError::InvalidUrl {
            url: String::new(),
            reason: format!("invalid etcd endpoint: {e}"),
        },
        other => backend(other.to_string()),
    }
}

/// Maps an error of a call naming `lease`: etcd's "lease not found" becomes
/// [`StoreError::LeaseNotFound`].
fn map_lease_err(lease: LeaseId, e: StoreError) -> StoreError {
    match e {
        StoreError::Backend { message, .. } if message.contains("lease not found") => {
            StoreError::LeaseNotFound(lease)
        }
        other => other,
    }
}

/// The gRPC status codes Shoal maps (numbers from the gRPC spec).
mod grpc_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAUTHENTICATED: i32 = 16;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const ABORTED: i32 = 10;
    pub const UNAVAILABLE: i32 = 14;
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }

    fn max_txn_bytes(&self) -> usize {
        MAX_TXN_BYTES
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        EtcdStore::compact(self, revision).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .run(|| {
                let mut kv = self.kv();
                async move { kv.get(key, None).await }
            })
            .await?;
        let mut resp = resp;
        resp.take_kvs()
            .into_iter()
            .next()
            .map(|kv| convert_kv(kv.0))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let (start, end) = if prefix.is_empty() {
            (vec![0u8], vec![0u8])
        } else {
            (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()))
        };
        // Pages are read at the revision of the first one, so the list is one snapshot.
        let (mut kvs, mut next, revision) = self.list_page(&start, &end, 0).await?;
        while let Some(from) = next {
            let (page, after, _) = self.list_page(&from, &end, revision).await?;
            kvs.extend(page);
            next = after;
        }
        Ok(ListResult { kvs, revision })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let opts = lease.map(|id| PutOptions::new().with_lease(id));
        let resp = self
            .run(|| {
                let mut kv = self.kv();
                let (value, opts) = (value.clone(), opts.clone());
                async move { kv.put(key, value, opts).await }
            })
            .await
            .map_err(|e| match lease {
                Some(id) => map_lease_err(id, e),
                None => e,
            })?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let resp = self
            .run(|| {
                let mut kv = self.kv();
                async move { kv.delete(key, None).await }
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        if txn.ops.len() > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                ops: txn.ops.len(),
                max: MAX_TXN_OPS,
                backend: BACKEND,
            });
        }
        let compares: Vec<etcd_client::Compare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision: 0 } => {
                    etcd_client::Compare::create_revision(key.as_str(), CompareOp::Equal, 0)
                }
                Compare::ModRevision { key, revision } => {
                    etcd_client::Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
                }
                Compare::Exists { key } => {
                    etcd_client::Compare::version(key.as_str(), CompareOp::Greater, 0)
                }
            })
            .collect();
        let leases: Vec<LeaseId> = txn
            .ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Put { lease, .. } => *lease,
                TxnOp::Delete { .. } => None,
            })
            .collect();
        let ops: Vec<etcd_client::TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => etcd_client::TxnOp::put(
                    key,
                    value,
                    lease.map(|id| PutOptions::new().with_lease(id)),
                ),
                TxnOp::Delete { key } => etcd_client::TxnOp::delete(key, None),
            })
            .collect();
        let request = etcd_client::Txn::new().when(compares).and_then(ops);
        let resp = self
            .run(|| {
                let mut kv = self.kv();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await
            .map_err(|e| match leases.first() {
                Some(id) if leases.len() == 1 => map_lease_err(*id, e),
                Some(id) => match map_lease_err(*id, e) {
                    // Several leases: etcd does not say which one is missing.
                    StoreError::LeaseNotFound(_) => {
                        backend(format!("one of the leases {leases:?} was not found"))
                    }
                    other => other,
                },
                None => e,
            })?;
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        Ok(watch::spawn(
            self.client.clone(),
            self.auth.clone(),
            prefix.to_string(),
            from_revision,
        ))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let resp = self
            .run(|| {
                let mut lease = self.client.lease_client();
                async move { lease.grant(secs, None).await }
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(backend(format!("lease grant refused: {}", resp.error())));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        // One refresh: open the keep-alive stream, which sends one request and waits for its
        // answer (TTL 0 = the lease is gone), then close it.
        self.run(|| {
            let mut client = self.client.lease_client();
            async move { client.keep_alive(lease).await }
        })
        .await
        .map(|_| ())
        .map_err(|e| map_lease_err(lease, e))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.run(|| {
            let mut client = self.client.lease_client();
            async move { client.revoke(lease).await }
        })
        .await
        .map(|_| ())
        .map_err(|e| map_lease_err(lease, e))
    }

    async fn lease_left(&self, lease: LeaseId) -> Result<Option<LeaseLeft>, StoreError> {
        let resp = self
            .run(|| {
                let mut client = self.client.lease_client();
                async move { client.time_to_live(lease, None).await }
            })
            .await?;
        // etcd says whole seconds rounded toward zero (0: under one second, or run out by
        // less than one), and -1 for a lease it no longer has or that ran out a second ago.
        Ok(Some(match u64::try_from(resp.ttl()) {
            Err(_) => LeaseLeft::Gone,
            Ok(whole) => LeaseLeft::Below {
                below: Duration::from_secs(whole.saturating_add(1)),
                granted: Duration::from_secs(u64::try_from(resp.granted_ttl()).unwrap_or(0)),
                step: Duration::from_secs(1),
            },
        }))
    }
}
