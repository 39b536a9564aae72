//! [`ConsulClient`]: a thin HTTP client for Consul's KV, transaction, session, agent, catalog
//! and health endpoints, and [`IndexTracker`] for well-behaved blocking-query loops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::Rng as _;
use reqwest::{Method, StatusCode};

use super::encode::{go_duration, percent_encode};
use super::types::{
    AgentCheck, AgentService, AgentServiceRegistration, CatalogService, KvEntry, PutOptions,
    ServiceEntry, SessionInfo, SessionRequest, TxnError, TxnKvOp, TxnOutcome,
};
use super::{ConsulError, MAX_TXN_OPS};

/// How to reach a Consul agent.
#[derive(Clone)]
pub struct ConsulConfig {
    /// `host:port` or a full `http(s)://host:port` URL.
    pub address: String,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// PEM file with the CA that signed Consul's certificate (implies `https` when the
    /// address has no scheme).
    pub ca_file: Option<PathBuf>,
    /// Timeout of a non-blocking request.
    pub timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConsulConfig {
    /// A configuration for `address` with default timeouts and no token.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            token: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Options of a read that may block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Block until the result's index exceeds this (0 = answer at once).
    pub index: u64,
    /// Longest time to block (Consul's default 5 min when `None`; capped at 10 min).
    pub wait: Option<Duration>,
}

impl QueryOptions {
    /// A blocking read from `index` waiting at most `wait`.
    pub fn blocking(index: u64, wait: Duration) -> Self {
        Self {
            index,
            wait: Some(wait),
        }
    }
}

/// Follows `X-Consul-Index` across a blocking-query loop: resets to 0 when the index goes
/// backwards (snapshot restore, tombstone reaping), never blocks with an index below 1 and
/// spaces requests at least `min_interval` apart (plus jitter), so a misbehaving server
/// cannot make the loop spin.
#[derive(Debug, Clone)]
pub struct IndexTracker {
    index: u64,
    min_interval: Duration,
    last_request: Option<Instant>,
}

impl IndexTracker {
    /// A tracker starting at `index`.
    pub fn new(index: u64, min_interval: Duration) -> Self {
        Self {
            index,
            min_interval,
            last_request: None,
        }
    }

    /// Index to send with the next query (0 = non-blocking).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Records the index a response carried; returns `true` when it went backwards (the
    /// tracker then resets to 0 so the next query reads the current state at once).
    pub fn observe(&mut self, returned: u64) -> bool {
        if returned < self.index {
            self.index = 0;
            true
        } else {
            self.index = returned;
            false
        }
    }

    /// Sleeps until the next request may go out.
    pub async fn pace(&mut self) {
        if let Some(last) = self.last_request {
            let jitter_ms = self.min_interval.as_millis() as u64 / 4;
            let jitter = Duration::from_millis(if jitter_ms > 0 {
                rand::rng().random_range(0..jitter_ms)
            } else {
                0
            });
            let due = last + self.min_interval + jitter;
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        self.last_request = Some(Instant::now());
    }
}

/// A response with the status Consul answered and its index header.
struct Reply {
    status: StatusCode,
    index: u64,
    body: bytes::Bytes,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConsulError> {
        serde_json::from_slice(&self.body).map_err(|e| ConsulError::Decode(e.to_string()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A thin client of one Consul agent's HTTP API. Cheap to clone.
#[derive(Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ConsulClient {
    /// Builds a client (no request is made).
    pub fn new(config: ConsulConfig) -> Result<Self, ConsulError> {
        let address = config.address.trim_end_matches('/');
        if address.is_empty() {
            return Err(ConsulError::Config("empty Consul address".into()));
        }
        let base = if address.contains("://") {
            address.to_string()
        } else if config.ca_file.is_some() {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        };
        let mut builder = reqwest::Client::builder().connect_timeout(config.connect_timeout);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ConsulError::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ConsulError::Config(format!("bad CA file {}: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ConsulError::Config(e.to_string()))?;
        Ok(Self {
            http,
            base,
            token: config.token,
            timeout: config.timeout,
        })
    }

    /// Base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, ConsulError> {
        let mut url = format!("{}{}", self.base, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            if !v.is_empty() {
                url.push('=');
                url.push_str(&percent_encode(v, false));
            }
        }
        let mut req = self.http.request(method, &url).timeout(timeout);
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ConsulError::Transport(e.to_string()))?;
        let status = resp.status();
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let body = resp
            .bytes()
            .await
            .map_err(|e| ConsulError::Transport(e.to_string()))?;
        let reply = Reply {
            status,
            index,
            body,
        };
        match status.as_u16() {
            200 | 404 | 409 => Ok(reply),
            403 => Err(ConsulError::PermissionDenied(reply.text())),
            s => Err(ConsulError::Status {
                status: s,
                body: reply.text(),
            }),
        }
    }

    fn blocking_query(&self, opts: QueryOptions, query: &mut Vec<(&str, String)>) -> Duration {
        if opts.index == 0 {
            return self.timeout;
        }
        query.push(("index", opts.index.to_string()));
        let wait = opts
            .wait
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(600));
        query.push(("wait", go_duration(wait)));
        // Consul adds up to wait/16 of jitter.
        wait + wait / 16 + self.timeout
    }

    fn not_found(reply: &Reply) -> Result<(), ConsulError> {
        if reply.status == StatusCode::NOT_FOUND {
            Err(ConsulError::NotFound(reply.text()))
        } else {
            Ok(())
        }
    }

    fn kv_path(key: &str) -> String {
        format!("/v1/kv/{}", percent_encode(key, true))
    }

    // ---- KV ----

    /// Reads one key; returns it (if present) and `X-Consul-Index`.
    pub async fn kv_get(
        &self,
        key: &str,
        opts: QueryOptions,
    ) -> Result<(Option<KvEntry>, u64), ConsulError> {
        let mut query = Vec::new();
        let timeout = self.blocking_query(opts, &mut query);
        let reply = self
            .call(Method::GET, &Self::kv_path(key), &query, None, timeout)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((None, reply.index));
        }
        let mut entries: Vec<KvEntry> = reply.json()?;
        Ok((entries.pop(), reply.index))
    }

    /// Lists every key under `prefix` (sorted by key) with `X-Consul-Index`; an empty
    /// prefix (404) gives an empty list.
    pub async fn kv_list(
        &self,
        prefix: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<KvEntry>, u64), ConsulError> {
        let mut query = vec![("recurse", String::new())];
        let timeout = self.blocking_query(opts, &mut query);
        let reply = self
            .call(Method::GET, &Self::kv_path(prefix), &query, None, timeout)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), reply.index));
        }
        let mut entries: Vec<KvEntry> = reply.json()?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((entries, reply.index))
    }

    /// Writes a key; returns Consul's `true`/`false` (false: cas, acquire or release refused).
    pub async fn kv_put(
        &self,
        key: &str,
        value: Vec<u8>,
        opts: &PutOptions,
    ) -> Result<bool, ConsulError> {
        let mut query = Vec::new();
        if let Some(cas) = opts.cas {
            query.push(("cas", cas.to_string()));
        }
        if let Some(flags) = opts.flags {
            query.push(("flags", flags.to_string()));
        }
        if let Some(s) = &opts.acquire {
            query.push(("acquire", s.clone()));
        }
        if let Some(s) = &opts.release {
            query.push(("release", s.clone()));
        }
        let reply = self
            .call(
                Method::PUT,
                &Self::kv_path(key),
                &query,
                Some(value),
                self.timeout,
            )
            .await?;
        Self::not_found(&reply)?;
        reply.json()
    }

    /// Takes the lock of `key` with `session` and writes `value`; `false` when another
    /// session holds it (or during lock-delay).
    pub async fn kv_acquire(
        &self,
        key: &str,
        value: Vec<u8>,
        session: &str,
    ) -> Result<bool, ConsulError> {
        let opts = PutOptions {
            acquire: Some(session.to_string()),
            ..Default::default()
        };
        self.kv_put(key, value, &opts).await
    }

    /// Releases the lock `session` holds on `key`, writing `value`.
    pub async fn kv_release(
        &self,
        key: &str,
        value: Vec<u8>,
        session: &str,
    ) -> Result<bool, ConsulError> {
        let opts = PutOptions {
            release: Some(session.to_string()),
            ..Default::default()
        };
        self.kv_put(key, value, &opts).await
    }

    /// Deletes a key (with `cas`: only at that `ModifyIndex`); returns Consul's answer.
    pub async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool, ConsulError> {
        let query: Vec<(&str, String)> = cas.map(|c| ("cas", c.to_string())).into_iter().collect();
        self.kv_delete_query(key, &query).await
    }

    /// Deletes every key under `prefix`.
    pub async fn kv_delete_tree(&self, prefix: &str) -> Result<bool, ConsulError> {
        self.kv_delete_query(prefix, &[("recurse", String::new())])
            .await
    }

    /// `DELETE /v1/kv/<key>` with `query`; returns Consul's answer.
    async fn kv_delete_query(
        &self,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<bool, ConsulError> {
        let reply = self
            .call(
                Method::DELETE,
                &Self::kv_path(key),
                query,
                None,
                self.timeout,
            )
            .await?;
        Self::not_found(&reply)?;
        reply.json()
    }

    /// Applies a transaction of at most [`MAX_TXN_OPS`] KV operations.
    pub async fn txn(&self, ops: &[TxnKvOp]) -> Result<TxnOutcome, ConsulError> {
        if ops.len() > MAX_TXN_OPS {
            return Err(ConsulError::TooManyOps {
                ops: ops.len(),
                max: MAX_TXN_OPS,
            });
        }
        let body: Vec<serde_json::Value> = ops
            .iter()
            .map(|op| serde_json::json!({ "KV": op }))
            .collect();
        let body = serde_json::to_vec(&body).map_err(|e| ConsulError::Decode(e.to_string()))?;
        let reply = self
            .call(Method::PUT, "/v1/txn", &[], Some(body), self.timeout)
            .await?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            #[serde(default)]
            results: Option<Vec<BTreeMap<String, serde_json::Value>>>,
            #[serde(default)]
            errors: Option<Vec<TxnError>>,
        }
        Self::not_found(&reply)?;
        let answer: Answer = reply.json()?;
        if reply.status == StatusCode::CONFLICT {
            return Ok(TxnOutcome::RolledBack(answer.errors.unwrap_or_default()));
        }
        let mut entries = Vec::new();
        for result in answer.results.unwrap_or_default() {
            if let Some(kv) = result.get("KV") {
                let entry: KvEntry = serde_json::from_value(kv.clone())
                    .map_err(|e| ConsulError::Decode(e.to_string()))?;
                entries.push(entry);
            }
        }
        Ok(TxnOutcome::Committed(entries))
    }

    // ---- sessions ----

    /// Creates a session; returns its ID.
    pub async fn session_create(&self, req: &SessionRequest) -> Result<String, ConsulError> {
        let body =
            serde_json::to_vec(&req.to_json()).map_err(|e| ConsulError::Decode(e.to_string()))?;
        let reply = self
            .call(
                Method::PUT,
                "/v1/session/create",
                &[],
                Some(body),
                self.timeout,
            )
            .await?;
        Self::not_found(&reply)?;
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        Ok(reply.json::<Created>()?.id)
    }

    /// Renews a session; `None` when it no longer exists (expired or destroyed).
    pub async fn session_renew(&self, id: &str) -> Result<Option<SessionInfo>, ConsulError> {
        let path = format!("/v1/session/renew/{}", percent_encode(id, false));
        let reply = self
            .call(Method::PUT, &path, &[], None, self.timeout)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut sessions: Vec<SessionInfo> = reply.json()?;
        Ok(sessions.pop())
    }

    /// Destroys a session (idempotent); keys it holds are released or deleted per its
    /// behaviour.
    pub async fn session_destroy(&self, id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/session/destroy/{}", percent_encode(id, false));
        let reply = self
            .call(Method::PUT, &path, &[], None, self.timeout)
            .await?;
        Self::not_found(&reply)
    }

    /// Reads a session; `None` when unknown.
    pub async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>, ConsulError> {
        let path = format!("/v1/session/info/{}", percent_encode(id, false));
        let reply = self
            .call(Method::GET, &path, &[], None, self.timeout)
            .await?;
        Self::not_found(&reply)?;
        let mut sessions: Vec<SessionInfo> = reply.json()?;
        Ok(sessions.pop())
    }

    /// Lists every session.
    pub async fn session_list(&self) -> Result<Vec<SessionInfo>, ConsulError> {
        let reply = self
            .call(Method::GET, "/v1/session/list", &[], None, self.timeout)
            .await?;
        Self::not_found(&reply)?;
        reply.json()
    }

    /// The address of the cluster's raft leader (`/v1/status/leader`, which needs no ACL
    /// permission): a reachability check that reads nothing.
    pub async fn status_leader(&self) -> Result<String, ConsulError> {
        let reply = self
            .call(Method::GET, "/v1/status/leader", &[], None, self.timeout)
            .await?;
        Self::not_found(&reply)?;
        reply.json()
    }

    // ---- agent ----

    /// Registers (or replaces) a service on the local agent, replacing its earlier checks.
    pub async fn agent_service_register(
        &self,
        reg: &AgentServiceRegistration,
    ) -> Result<(), ConsulError> {
        let body = serde_json::to_vec(reg).map_err(|e| ConsulError::Decode(e.to_string()))?;
        let query = vec![("replace-existing-checks", "true".to_string())];
        let reply = self
            .call(
                Method::PUT,
                "/v1/agent/service/register",
                &query,
                Some(body),
                self.timeout,
            )
            .await?;
        Self::not_found(&reply)
    }

    /// Deregisters a service; [`ConsulError::NotFound`] for an unknown ID.
    pub async fn agent_service_deregister(&self, id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/service/deregister/{}", percent_encode(id, false));
        let reply = self
            .call(Method::PUT, &path, &[], None, self.timeout)
            .await?;
        Self::not_found(&reply)
    }

    /// Services registered on the local agent, by ID.
    pub async fn agent_services(&self) -> Result<BTreeMap<String, AgentService>, ConsulError> {
        let reply = self
            .call(Method::GET, "/v1/agent/services", &[], None, self.timeout)
            .await?;
        Self::not_found(&reply)?;
        reply.json()
    }

    /// Checks registered on the local agent, by check ID.
    pub async fn agent_checks(&self) -> Result<BTreeMap<String, AgentCheck>, ConsulError> {
        let reply = self
            .call(Method::GET, "/v1/agent/checks", &[], None, self.timeout)
            .await?;
        Self::not_found(&reply)?;
        reply.json()
    }

    async fn check_ttl(&self, verb: &str, id: &str, note: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/check/{verb}/{}", percent_encode(id, false));
        let query: Vec<(&str, String)> = if note.is_empty() {
            Vec::new()
        } else {
            vec![("note", note.to_string())]
        };
        let reply = self
            .call(Method::PUT, &path, &query, None, self.timeout)
            .await?;
        Self::not_found(&reply)
    }

    /// Marks a TTL check passing (and resets its timer).
    pub async fn check_pass(&self, id: &str, note: &str) -> Result<(), ConsulError> {
        self.check_ttl("pass", id, note).await
    }

    /// Marks a TTL check warning.
    pub async fn check_warn(&self, id: &str, note: &str) -> Result<(), ConsulError> {
        self.check_ttl("warn", id, note).await
    }

    /// Marks a TTL check critical.
    pub async fn check_fail(&self, id: &str, note: &str) -> Result<(), ConsulError> {
        self.check_ttl("fail", id, note).await
    }

    /// Sets a TTL check's status (`passing`, `warning`, `critical`) and output.
    pub async fn check_update(
        &self,
        id: &str,
        status: &str,
        output: &str,
    ) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/check/update/{}", percent_encode(id, false));
        let body = serde_json::to_vec(&serde_json::json!({ "Status": status, "Output": output }))
            .map_err(|e| ConsulError::Decode(e.to_string()))?;
        let reply = self
            .call(Method::PUT, &path, &[], Some(body), self.timeout)
            .await?;
        Self::not_found(&reply)
    }

    // ---- catalog and health ----

    /// Every service name in the catalog with the union of its tags, and the index.
    pub async fn catalog_services(
        &self,
        opts: QueryOptions,
    ) -> Result<(BTreeMap<String, Vec<String>>, u64), ConsulError> {
        let mut query = Vec::new();
        let timeout = self.blocking_query(opts, &mut query);
        let reply = self
            .call(Method::GET, "/v1/catalog/services", &query, None, timeout)
            .await?;
        Self::not_found(&reply)?;
        let mut services: BTreeMap<String, Vec<String>> = reply.json()?;
        for tags in services.values_mut() {
            tags.sort();
        }
        Ok((services, reply.index))
    }

    /// Instances of one service in the catalog (optionally with a tag), and the index.
    pub async fn catalog_service(
        &self,
        name: &str,
        tag: Option<&str>,
        opts: QueryOptions,
    ) -> Result<(Vec<CatalogService>, u64), ConsulError> {
        let mut query: Vec<(&str, String)> =
            tag.map(|t| ("tag", t.to_string())).into_iter().collect();
        let timeout = self.blocking_query(opts, &mut query);
        let path = format!("/v1/catalog/service/{}", percent_encode(name, false));
        let reply = self.call(Method::GET, &path, &query, None, timeout).await?;
        Self::not_found(&reply)?;
        let mut list: Vec<CatalogService> = reply.json()?;
        list.sort_by(|a, b| (&a.node, &a.service_id).cmp(&(&b.node, &b.service_id)));
        Ok((list, reply.index))
    }

    /// Instances of one service with their checks (only healthy ones when `passing`).
    pub async fn health_service(
        &self,
        name: &str,
        tag: Option<&str>,
        passing: bool,
        opts: QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, u64), ConsulError> {
        let mut query: Vec<(&str, String)> =
            tag.map(|t| ("tag", t.to_string())).into_iter().collect();
        if passing {
            query.push(("passing", String::new()));
        }
        let timeout = self.blocking_query(opts, &mut query);
        let path = format!("/v1/health/service/{}", percent_encode(name, false));
        let reply = self.call(Method::GET, &path, &query, None, timeout).await?;
        Self::not_found(&reply)?;
        let mut list: Vec<ServiceEntry> = reply.json()?;
        list.sort_by(|a, b| (&a.node.node, &a.service.id).cmp(&(&b.node.node, &b.service.id)));
        Ok((list, reply.index))
    }
}
