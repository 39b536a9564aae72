//! shoal-api: the API server in front of the store (REST under `/v1`, an SSE watch, the
//! manifest JSON Schema, the OpenAPI document, Prometheus metrics, health probes), the
//! dashboard under `/ui/` ([`ui`]) and the typed client the `shoal` CLI uses.
//!
//! The server is stateless: every request reads or writes the store through
//! [`shoal_store::Store`], with keys built by [`shoal_core::Keys`]. Build an [`ApiState`],
//! get the [`router`] (tests drive it with `tower::ServiceExt::oneshot`) or [`serve`] it.

pub mod auth;
pub mod cas;
pub mod client;
pub mod error;
pub(crate) mod handlers;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod sample;
pub mod secrets;
pub mod server;
pub mod types;
pub mod ui;
pub mod watch;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, patch, post};
use shoal_core::Keys;
use shoal_store::Store;

pub use auth::{Principal, Role, TokenTable, Tokens};
pub use client::{Client, ClientError};
pub use error::ApiError;
pub use server::{ServeError, serve, serve_listener};

/// Everything a request handler needs: the store, the key layout, the accepted tokens and
/// the metrics. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// The store every request goes to.
    pub store: Arc<dyn Store>,
    /// Key layout under the configured prefix.
    pub keys: Keys,
    /// Accepted bearer tokens; `None` means no authentication (loopback only).
    pub tokens: Option<Arc<Tokens>>,
    /// Request counters and the optional process registry served on `/metrics`.
    pub metrics: Arc<metrics::ApiMetrics>,
    /// The cluster key that seals secrets (`None`: secrets can be neither created nor
    /// delivered; everything else works).
    pub secret_keys: Option<Arc<secrets::crypto::KeyRing>>,
    /// Dashboard sessions (and the CSRF token of an API without tokens).
    pub ui: Arc<ui::session::Sessions>,
    /// How task output is asked of the agents (their client and the agent token).
    pub agents: Arc<logs::Agents>,
    /// The one watch of the store that every `/v1/watch` client reads from.
    pub watch_hub: Arc<watch::hub::Hub>,
    /// Whether the API is served over TLS (the dashboard's cookie is then `Secure`).
    pub tls: bool,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("backend", &self.store.backend())
            .field("keys", &self.keys)
            .field("tokens", &self.tokens)
            .field("secret_keys", &self.secret_keys)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// A state over `store` with keys under `keys`, no authentication and no extra metrics.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        ApiState {
            watch_hub: Arc::new(watch::hub::Hub::new(Arc::clone(&store), keys.clone())),
            tls: false,
            store,
            keys,
            tokens: None,
            metrics: Arc::new(metrics::ApiMetrics::default()),
            secret_keys: None,
            ui: Arc::new(ui::session::Sessions::new()),
            agents: Arc::new(logs::Agents::default()),
        }
    }

    /// Asks agents for task output with `agents` (the agent token, the agents' CA).
    pub fn with_agents(mut self, agents: logs::Agents) -> Self {
        self.agents = Arc::new(agents);
        self
    }

    /// Seals and opens secrets with `keys` (the `--secret-key-file`).
    pub fn with_secret_keys(mut self, keys: secrets::crypto::KeyRing) -> Self {
        self.secret_keys = Some(Arc::new(keys));
        self
    }

    /// Requires bearer tokens from `tokens` on every request but the health probes and the
    /// schema documents.
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// Also serves the metrics of `registry` (e.g. the controller's) on `/metrics`.
    pub fn with_registry(mut self, registry: Arc<prometheus_client::registry::Registry>) -> Self {
        self.metrics = Arc::new(metrics::ApiMetrics::with_extra(Some(registry)));
        self
    }
}

/// The API's routes, with authentication, request metrics and tracing applied.
pub fn router(state: ApiState) -> Router {
    use handlers::{apply, cluster, services};
    use secrets::handlers as files;
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/services", get(services::list))
        .route(
            "/v1/services/{ns}/{name}",
            get(services::get_one)
                .put(services::put)
                .delete(services::delete),
        )
        .route("/v1/services/{ns}/{name}/status", get(services::status))
        .route("/v1/services/{ns}/{name}/logs", get(logs::service_logs))
        .route("/v1/tasks/{id}/logs", get(logs::task_logs))
        .route(
            "/v1/services/{ns}/{name}/rollback",
            post(handlers::rollback::rollback),
        )
        .route("/v1/services/{ns}/{name}/run", post(handlers::jobrun::run))
        .route("/v1/apply", post(apply::apply))
        .route("/v1/tasks", get(cluster::tasks))
        .route("/v1/nodes", get(cluster::nodes))
        .route(
            "/v1/nodes/{id}",
            patch(cluster::patch_node)
                .get(cluster::node)
                .delete(cluster::remove_node),
        )
        .route(
            "/v1/nodes/{id}/secrets/{ns}/{name}",
            get(files::node_secret),
        )
        .route(
            "/v1/nodes/{id}/configs/{ns}/{name}",
            get(files::node_config),
        )
        .route("/v1/secrets", get(files::list_secrets))
        .route("/v1/secrets/rotate-key", post(files::rotate_key))
        .route(
            "/v1/secrets/{ns}/{name}",
            get(files::get_secret)
                .post(files::create_secret)
                .delete(files::delete_secret),
        )
        .route("/v1/configs", get(files::list_configs))
        .route(
            "/v1/configs/{ns}/{name}",
            get(files::get_config)
                .post(files::create_config)
                .delete(files::delete_config),
        )
        .route("/v1/configs/{ns}/{name}/data", get(files::config_data))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/schema/service", get(openapi::service_schema))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        // Every route above is authenticated; a route added below this line would not be.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // The dashboard authenticates with its session cookie instead (see `ui::Viewer`).
        .merge(ui::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
