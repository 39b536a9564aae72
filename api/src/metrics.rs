//! `/metrics`: Prometheus text computed from the store on every scrape (tasks by state, nodes
//! by state, services), the API's request counters, and optionally the process's own registry
//! (e.g. the controller's reconcile metrics).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shoal_core::TaskState;
use shoal_core::view;

use crate::ApiState;
use crate::error::ApiError;
use crate::handlers::cluster::records;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/v1/services/{ns}/{name}`), `unmatched` for unknown paths.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    state: String,
    availability: String,
}

/// The API's own metrics.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    extra: Option<Arc<Registry>>,
}

impl ApiMetrics {
    /// Metrics that also serve `extra` on scrape.
    pub fn with_extra(extra: Option<Arc<Registry>>) -> Self {
        ApiMetrics {
            requests: Family::default(),
            extra,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
    }
}

/// Middleware: counts every request by route, method and status.
pub async fn count_requests(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().to_string();
    let resp = next.run(req).await;
    st.metrics.observe(&route, &method, resp.status().as_u16());
    resp
}

/// Encodes the store-derived gauges, the request counters and the extra registry.
pub async fn render(st: &ApiState) -> Result<String, ApiError> {
    let mut reg = Registry::default();
    let tasks = Family::<StateLabels, Gauge>::default();
    let nodes = Family::<NodeLabels, Gauge>::default();
    let services = Gauge::<i64>::default();
    for s in TaskState::ALL {
        tasks
            .get_or_create(&StateLabels {
                state: s.as_str().to_string(),
            })
            .set(0);
    }
    let task_list = st.store.list(&st.keys.tasks_prefix()).await?;
    let statuses = st.store.list(&st.keys.task_status_prefix()).await?;
    let joined = view::join_tasks(&st.keys, records(&task_list.kvs), records(&statuses.kvs));
    for t in &joined.view {
        tasks
            .get_or_create(&StateLabels {
                state: t.state().as_str().to_string(),
            })
            .inc();
    }
    let infos = st.store.list(&st.keys.nodes_prefix()).await?;
    let configs = st.store.list(&st.keys.node_config_prefix()).await?;
    let joined = view::join_nodes(
        &st.keys,
        records(&infos.kvs),
        records(&configs.kvs),
        task_list.kvs.iter().map(|kv| kv.key.as_str()),
    );
    for n in joined.view.values() {
        nodes
            .get_or_create(&NodeLabels {
                state: if n.ready { "ready" } else { "down" }.to_string(),
                availability: n.config.availability.to_string(),
            })
            .inc();
    }
    let n_services = st.store.list(&st.keys.services_prefix()).await?.kvs.len();
    services.set(n_services as i64);
    reg.register(
        "shoal_tasks",
        "Tasks by state (tasks not yet seen by an agent count as assigned)",
        tasks,
    );
    reg.register(
        "shoal_nodes",
        "Nodes by state (ready or down) and availability",
        nodes,
    );
    reg.register(
        "shoal_services",
        "Services with a stored manifest",
        services,
    );
    reg.register(
        "shoal_api_requests",
        "API requests by route, method and status",
        st.metrics.requests.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &reg)
        .map_err(|e| ApiError::Internal(format!("cannot encode metrics: {e}")))?;
    if let Some(extra) = &st.metrics.extra {
        let mut more = String::new();
        encode(&mut more, extra)
            .map_err(|e| ApiError::Internal(format!("cannot encode metrics: {e}")))?;
        if let Some(head) = out.strip_suffix("# EOF\n") {
            out = format!("{head}{more}");
        }
    }
    Ok(out)
}

/// Serves the metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text", body = String)))]
pub async fn scrape(State(st): State<ApiState>) -> Response {
    match render(&st).await {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Serves `registry` alone at `GET /metrics` on `listener` until the process ends: the
/// `/metrics` of components without an API (`shoal agent --metrics-listen`).
pub async fn serve_registry(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                match encode(&mut text, &registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app).await
}
