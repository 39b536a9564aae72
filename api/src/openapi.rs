//! The documents the API describes itself with: the manifest's JSON Schema and the OpenAPI
//! 3.1 document of every route.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::handlers::{apply, cluster, services};
use crate::types;

/// The OpenAPI document of the Shoal API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shoal API",
        description = "Declarative container orchestration: services, tasks, nodes, secrets and configs."
    ),
    paths(
        crate::handlers::healthz,
        crate::handlers::readyz,
        crate::metrics::scrape,
        services::list,
        services::get_one,
        services::put,
        services::delete,
        services::status,
        crate::logs::service_logs,
        crate::logs::task_logs,
        crate::handlers::rollback::rollback,
        crate::handlers::jobrun::run,
        apply::apply,
        cluster::tasks,
        cluster::nodes,
        cluster::node,
        cluster::patch_node,
        cluster::remove_node,
        crate::secrets::handlers::list_secrets,
        crate::secrets::handlers::create_secret,
        crate::secrets::handlers::get_secret,
        crate::secrets::handlers::delete_secret,
        crate::secrets::handlers::rotate_key,
        crate::secrets::handlers::node_secret,
        crate::secrets::handlers::list_configs,
        crate::secrets::handlers::create_config,
        crate::secrets::handlers::get_config,
        crate::secrets::handlers::config_data,
        crate::secrets::handlers::delete_config,
        crate::secrets::handlers::node_config,
        crate::watch::watch,
        service_schema,
        openapi_json,
    ),
    components(schemas(
        types::ServiceResource,
        types::Action,
        types::WriteResult,
        crate::handlers::jobrun::RunAccepted,
        types::ApplyResponse,
        types::DeleteResponse,
        types::TaskEntry,
        types::NodeEntry,
        types::NodePatch,
        types::ErrorBody,
        types::ErrorDetail,
        types::WatchKind,
        types::WatchEvent,
        crate::logs::LogStreamEvent,
        crate::secrets::FileView,
        crate::secrets::FileUse,
        crate::secrets::RotateKeyResponse,
    ))
)]
pub struct ApiDoc;

/// The JSON Schema of a Service manifest (for editors and `shoal schema`).
pub fn service_schema_value() -> serde_json::Value {
    shoal_core::schema::service_schema()
}

/// Serves the JSON Schema of a Service manifest.
#[utoipa::path(get, path = "/v1/schema/service", responses((status = 200, description = "JSON Schema (2020-12)", body = Object)))]
pub async fn service_schema() -> impl IntoResponse {
    Json(service_schema_value())
}

/// Serves the OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
