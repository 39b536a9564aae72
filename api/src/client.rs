//! The typed client of the Shoal API, used by the `shoal` CLI. Every call returns a typed
//! result or a [`ClientError`] that keeps the server's own message.

use std::pin::Pin;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, IF_MATCH};
use shoal_core::ServiceStatus;
use shoal_core::secret::FileKind;
use shoal_store::Revision;

use crate::secrets::{FileView, RotateKeyResponse};
use crate::types::{
    ApplyResponse, DeleteResponse, ErrorBody, ErrorDetail, NodeEntry, NodePatch, ServiceResource,
    TaskEntry, WatchEvent, WriteResult,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// Located manifest problems.
        details: Vec<ErrorDetail>,
        /// Current revision, for conflicts.
        current_revision: Option<Revision>,
    },
    /// The server could not be reached.
    #[error("cannot reach the Shoal API at {url}: {source}")]
    Connect {
        /// Server URL.
        url: String,
        /// Transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer could not be decoded.
    #[error("unexpected answer from {url}: {message}")]
    Decode {
        /// URL called.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The client could not be set up (unreadable or invalid CA certificate).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// Whether trying again may help: the server could not be reached, its answer was cut or
    /// garbled, or it answered 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Decode { .. } => true,
            ClientError::Api { status, .. } => *status >= 500,
            ClientError::Config(_) => false,
        }
    }

    /// The HTTP status when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Options of an apply.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Write nothing; report what would happen.
    pub dry_run: bool,
    /// Delete services matching this selector that are not in the set.
    pub prune_selector: Option<String>,
    /// Limit pruning to this namespace.
    pub namespace: Option<String>,
}

/// How long a node waits for one secret or config before it tries again.
pub const NODE_FILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long connecting to the API may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one request (not a watch) may take in all.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a watch may stay silent; the server sends a keep-alive every 15 s.
pub const WATCH_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);
/// How many times a read (GET) is tried when the server cannot be reached or answers 5xx.
pub const READ_ATTEMPTS: u32 = 3;

/// A stream of watch events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, ClientError>> + Send>>;

/// The CA certificates a client trusts for an `https://` server (`shoal --ca FILE`).
#[derive(Clone)]
pub struct CaBundle {
    source: String,
    certs: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("source", &self.source)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl CaBundle {
    /// Reads the PEM certificates of a CA file.
    pub fn load(path: &std::path::Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Config(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    /// The certificates, for another client that trusts them alone.
    pub fn certificates(&self) -> Vec<reqwest::Certificate> {
        self.certs.clone()
    }

    /// The PEM certificates in `pem` (named `source` in messages).
    pub fn from_pem(pem: &[u8], source: &str) -> Result<Self, ClientError> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::Config(format!("invalid CA file {source}: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Config(format!(
                "CA file {source} holds no PEM certificate"
            )));
        }
        Ok(CaBundle {
            source: source.to_string(),
            certs,
        })
    }
}

/// A client of one Shoal API server. `Debug` never shows the token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:7878`), with an optional bearer token.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = Self::http()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// Every request gives up on a silent server: connecting, and reading any part of an
    /// answer (a watch included), are bounded.
    fn http() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(WATCH_IDLE_TIMEOUT)
    }

    /// A client of an `https://` server whose certificate is signed by a CA of `ca`, trusting
    /// only those (a cluster's private CA).
    pub fn with_ca(base: &str, token: Option<String>, ca: &CaBundle) -> Result<Self, ClientError> {
        let http = Self::http()
            .tls_certs_only(ca.certs.clone())
            .build()
            .map_err(|e| ClientError::Config(format!("cannot set up TLS: {e}")))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// The server URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request bounded by [`REQUEST_TIMEOUT`].
    fn req(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let (url, b) = self.req_stream(method, path);
        (url, b.timeout(REQUEST_TIMEOUT))
    }

    /// A request whose answer is a stream: no total bound, only the idle one.
    fn req_stream(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{}", self.base, path);
        let mut b = self.http.request(method, &url);
        if let Some(t) = &self.token {
            // Marked sensitive: HTTP libraries then never print or index it.
            b = b.bearer_auth(t);
        }
        (url, b)
    }

    async fn send(
        &self,
        url: &str,
        b: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let request = b.build().map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })?;
        // Reads are safe to repeat: a GET that meets an unreachable server or a 5xx is tried
        // again a few times before the error is the caller's.
        let retry = matches!(
            *request.method(),
            reqwest::Method::GET | reqwest::Method::HEAD
        );
        let mut attempt = 1;
        let mut next = request;
        loop {
            let again = if retry && attempt < READ_ATTEMPTS {
                next.try_clone()
            } else {
                None
            };
            match (self.send_once(url, next).await, again) {
                (Err(e), Some(again)) if e.is_transient() => {
                    tracing::debug!(attempt, error = %e, "API read failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                    attempt += 1;
                    next = again;
                }
                (other, _) => return other,
            }
        }
    }

    async fn send_once(
        &self,
        url: &str,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .execute(request)
            .await
            .map_err(|source| ClientError::Connect {
                url: self.base.clone(),
                source,
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                message: body.error,
                details: body.details,
                current_revision: body.current_revision,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                message: format!("{status} from {url}: {}", text.trim()),
                details: Vec::new(),
                current_revision: None,
            },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        b: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(url, b).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// Applies one or more manifests (YAML documents or a JSON object).
    pub async fn apply(
        &self,
        manifests: &str,
        opts: &ApplyOptions,
    ) -> Result<ApplyResponse, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if opts.dry_run {
            query.push(("dryRun", "true".into()));
        }
        if let Some(sel) = &opts.prune_selector {
            query.push(("prune", "true".into()));
            query.push(("selector", sel.clone()));
        }
        if let Some(ns) = &opts.namespace {
            query.push(("namespace", ns.clone()));
        }
        let (url, b) = self.req(reqwest::Method::POST, "/v1/apply");
        let b = b
            .query(&query)
            .header(CONTENT_TYPE, "application/yaml")
            .body(manifests.to_string());
        self.json(&url, b).await
    }

    /// Reads one service (`None` when it does not exist).
    pub async fn get_service(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<ServiceResource>, ClientError> {
        let (url, b) = self.req(reqwest::Method::GET, &format!("/v1/services/{ns}/{name}"));
        match self.json(&url, b).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists services, optionally in one namespace and matching a label selector.
    pub async fn list_services(
        &self,
        ns: Option<&str>,
        selector: Option<&str>,
    ) -> Result<Vec<ServiceResource>, ClientError> {
        let mut query = Vec::new();
        if let Some(ns) = ns {
            query.push(("namespace", ns));
        }
        if let Some(sel) = selector {
            query.push(("selector", sel));
        }
        let (url, b) = self.req(reqwest::Method::GET, "/v1/services");
        self.json(&url, b.query(&query)).await
    }

    /// Writes one service's manifest, only if it is still at `if_match` when given.
    pub async fn put_service(
        &self,
        ns: &str,
        name: &str,
        manifest: &str,
        if_match: Option<Revision>,
    ) -> Result<WriteResult, ClientError> {
        let (url, mut b) = self.req(reqwest::Method::PUT, &format!("/v1/services/{ns}/{name}"));
        if let Some(r) = if_match {
            b = b.header(IF_MATCH, format!("\"{r}\""));
        }
        self.json(
            &url,
            b.header(CONTENT_TYPE, "application/yaml")
                .body(manifest.to_string()),
        )
        .await
    }

    /// Deletes one service.
    pub async fn delete_service(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<DeleteResponse, ClientError> {
        let (url, b) = self.req(
            reqwest::Method::DELETE,
            &format!("/v1/services/{ns}/{name}"),
        );
        self.json(&url, b).await
    }

    /// Writes the service's previous spec back as its manifest (`shoal rollout undo`), only
    /// if the manifest is still at `if_match` when given.
    pub async fn rollback_service(
        &self,
        ns: &str,
        name: &str,
        if_match: Option<Revision>,
    ) -> Result<WriteResult, ClientError> {
        let (url, mut b) = self.req(
            reqwest::Method::POST,
            &format!("/v1/services/{ns}/{name}/rollback"),
        );
        if let Some(r) = if_match {
            b = b.header(IF_MATCH, format!("\"{r}\""));
        }
        self.json(&url, b).await
    }

    /// Asks the controller to start a run of a job now (`shoal job run`); with `force`, even
    /// while a run is active (which is stopped).
    pub async fn run_job(
        &self,
        ns: &str,
        name: &str,
        force: bool,
    ) -> Result<crate::handlers::jobrun::RunAccepted, ClientError> {
        let (url, b) = self.req(
            reqwest::Method::POST,
            &format!("/v1/services/{ns}/{name}/run?force={force}"),
        );
        self.json(&url, b).await
    }

    /// Reads a service's status (`None` before the controller has observed it).
    pub async fn service_status(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<ServiceStatus>, ClientError> {
        let (url, b) = self.req(
            reqwest::Method::GET,
            &format!("/v1/services/{ns}/{name}/status"),
        );
        match self.json(&url, b).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists tasks, optionally of one service (`ns/name`) and/or on one node.
    pub async fn tasks(
        &self,
        service: Option<&str>,
        node: Option<&str>,
    ) -> Result<Vec<TaskEntry>, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        if let Some(n) = node {
            query.push(("node", n));
        }
        let (url, b) = self.req(reqwest::Method::GET, "/v1/tasks");
        self.json(&url, b.query(&query)).await
    }

    /// Lists nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeEntry>, ClientError> {
        let (url, b) = self.req(reqwest::Method::GET, "/v1/nodes");
        self.json(&url, b).await
    }

    /// Changes a node's availability or labels.
    pub async fn patch_node(&self, id: &str, patch: &NodePatch) -> Result<NodeEntry, ClientError> {
        let (url, b) = self.req(reqwest::Method::PATCH, &format!("/v1/nodes/{id}"));
        self.json(&url, b.json(patch)).await
    }

    /// Removes a node (`force`: even while its agent is alive).
    pub async fn remove_node(&self, id: &str, force: bool) -> Result<NodeEntry, ClientError> {
        let (url, b) = self.req(reqwest::Method::DELETE, &format!("/v1/nodes/{id}"));
        self.json(&url, b.query(&[("force", force)])).await
    }

    /// `/v1/secrets` or `/v1/configs`.
    fn files_path(kind: FileKind) -> &'static str {
        match kind {
            FileKind::Secret => "/v1/secrets",
            FileKind::Config => "/v1/configs",
        }
    }

    async fn octets(
        &self,
        url: &str,
        b: reqwest::RequestBuilder,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
        let resp = self.send(url, b).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        Ok(zeroize::Zeroizing::new(bytes.to_vec()))
    }

    /// Creates a secret or config holding `value` (secrets and configs are immutable).
    pub async fn create_file(
        &self,
        kind: FileKind,
        ns: &str,
        name: &str,
        value: Vec<u8>,
    ) -> Result<FileView, ClientError> {
        let path = format!("{}/{ns}/{name}", Self::files_path(kind));
        let (url, b) = self.req(reqwest::Method::POST, &path);
        let b = b
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(value);
        self.json(&url, b).await
    }

    /// Lists secrets or configs, in one namespace or all.
    pub async fn list_files(
        &self,
        kind: FileKind,
        ns: Option<&str>,
    ) -> Result<Vec<FileView>, ClientError> {
        let (url, b) = self.req(reqwest::Method::GET, Self::files_path(kind));
        let query: Vec<(&str, &str)> = ns.map(|n| ("namespace", n)).into_iter().collect();
        self.json(&url, b.query(&query)).await
    }

    /// A secret's or config's metadata and users.
    pub async fn get_file(
        &self,
        kind: FileKind,
        ns: &str,
        name: &str,
    ) -> Result<FileView, ClientError> {
        let path = format!("{}/{ns}/{name}", Self::files_path(kind));
        let (url, b) = self.req(reqwest::Method::GET, &path);
        self.json(&url, b).await
    }

    /// Removes a secret or config (refused while in use).
    pub async fn delete_file(
        &self,
        kind: FileKind,
        ns: &str,
        name: &str,
    ) -> Result<DeleteResponse, ClientError> {
        let path = format!("{}/{ns}/{name}", Self::files_path(kind));
        let (url, b) = self.req(reqwest::Method::DELETE, &path);
        self.json(&url, b).await
    }

    /// A config's value.
    pub async fn config_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
        let (url, b) = self.req(
            reqwest::Method::GET,
            &format!("/v1/configs/{ns}/{name}/data"),
        );
        self.octets(&url, b).await
    }

    /// Re-seals every secret under the API's active key.
    pub async fn rotate_secret_key(&self) -> Result<RotateKeyResponse, ClientError> {
        let (url, b) = self.req(reqwest::Method::POST, "/v1/secrets/rotate-key");
        self.json(&url, b).await
    }

    /// The value of a secret or config a task of `node` uses (the node's own token).
    pub async fn node_file(
        &self,
        kind: FileKind,
        node: &str,
        ns: &str,
        name: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
        let path = format!("/v1/nodes/{node}/{}s/{ns}/{name}", kind.as_str());
        let (url, b) = self.req(reqwest::Method::GET, &path);
        self.octets(&url, b.timeout(NODE_FILE_TIMEOUT)).await
    }

    /// Follows status and task changes, optionally of one service (`ns/name`), after
    /// `revision` (or from the current state when `None`).
    pub async fn watch(
        &self,
        service: Option<&str>,
        revision: Option<Revision>,
    ) -> Result<EventStream, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(("service", s.to_string()));
        }
        if let Some(r) = revision {
            query.push(("revision", r.to_string()));
        }
        let (url, b) = self.req_stream(reqwest::Method::GET, "/v1/watch");
        let resp = self.send(&url, b.query(&query)).await?;
        let mut events = resp.bytes_stream().eventsource();
        let stream = async_stream(move |tx| async move {
            while let Some(item) = events.next().await {
                let item = match item {
                    Ok(ev) => match decode_event(&ev, &url) {
                        Some(item) => item,
                        None => continue,
                    },
                    Err(e) => Err(ClientError::Decode {
                        url: url.clone(),
                        message: e.to_string(),
                    }),
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(stream)
    }
}

impl Client {
    /// Streams task output: of a service (`Selector::Service`) or one task, as `params` ask;
    /// heartbeats are passed on too (the caller skips them). The stream ends when the server
    /// ends it; an error item is the last.
    pub async fn logs(
        &self,
        selector: &crate::logs::Selector,
        params: &crate::logs::LogParams,
    ) -> Result<LogEventStream, ClientError> {
        let path = match selector {
            crate::logs::Selector::Service(s) => {
                format!("/v1/services/{}/{}/logs", s.namespace, s.name)
            }
            crate::logs::Selector::Task(id) => format!("/v1/tasks/{id}/logs"),
        };
        let (url, b) = self.req_stream(reqwest::Method::GET, &path);
        let resp = self.send(&url, b.query(params)).await?;
        let mut body = resp.bytes_stream();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut pending: Vec<u8> = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx
                            .send(Err(ClientError::Decode {
                                url: url.clone(),
                                message: format!("the stream was cut: {e}"),
                            }))
                            .await;
                        return;
                    }
                };
                pending.extend_from_slice(&chunk);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let item =
                        serde_json::from_slice::<shoal_core::logs::LogEvent>(&line).map_err(|e| {
                            ClientError::Decode {
                                url: url.clone(),
                                message: e.to_string(),
                            }
                        });
                    let last = item.is_err();
                    if tx.send(item).await.is_err() || last {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// A stream of task output events.
pub type LogEventStream =
    Pin<Box<dyn Stream<Item = Result<shoal_core::logs::LogEvent, ClientError>> + Send>>;

/// Turns one SSE event into a watch event (`None` for events without data).
fn decode_event(
    ev: &eventsource_stream::Event,
    url: &str,
) -> Option<Result<WatchEvent, ClientError>> {
    if ev.data.is_empty() {
        return None;
    }
    if ev.event == "error" {
        let msg = serde_json::from_str::<ErrorBody>(&ev.data)
            .map(|b| b.error)
            .unwrap_or_else(|_| ev.data.clone());
        return Some(Err(ClientError::Api {
            status: 200,
            message: msg,
            details: vec![],
            current_revision: None,
        }));
    }
    Some(
        serde_json::from_str(&ev.data).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        }),
    )
}

fn async_stream<F, Fut>(f: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<WatchEvent, ClientError>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
