//! Request handlers of the `/v1` routes and the health probes.

pub mod apply;
pub mod cluster;
pub mod jobrun;
pub mod rollback;
pub mod services;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use shoal_core::{ServiceRef, ServiceStatus};
use shoal_store::{KeyValue, Revision};

use crate::ApiState;
use crate::error::ApiError;
use crate::types::ServiceResource;

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "The store answers"),
    (status = 503, description = "The store does not answer")))]
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    match state.store.get(&state.keys.leader()).await {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store {} unreachable: {e}\n", state.store.backend()),
        ),
    }
}

/// The body as UTF-8 text.
pub(crate) fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not UTF-8: {e}")))
}

/// The revision in `If-Match` (`"12"`, `12` or `W/"12"`), if any.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Revision>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default().trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse()
        .map(Some)
        .map_err(|_| ApiError::BadRequest(format!("If-Match must be a revision number, got {s:?}")))
}

/// An `ETag` value for a revision.
pub(crate) fn etag(revision: Revision) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{revision}\""))
}

/// Decodes a JSON record read from the store.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, ApiError> {
    serde_json::from_slice(&kv.value).map_err(|e| ApiError::Corrupt {
        key: kv.key.clone(),
        message: e.to_string(),
    })
}

/// Parses the manifest stored for `sref` (the rule the controller applies too): the service,
/// or the error text with line and column.
pub(crate) fn parse_stored(
    sref: &ServiceRef,
    kv: &KeyValue,
) -> Result<shoal_core::Service, String> {
    shoal_core::parse_stored(&kv.key, sref, &kv.value).map_err(|e| e.to_string())
}

/// Builds the resource view of a stored manifest.
pub(crate) fn resource(
    sref: &ServiceRef,
    kv: &KeyValue,
    status: Option<ServiceStatus>,
) -> ServiceResource {
    let (service, error) = match parse_stored(sref, kv) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    ServiceResource {
        namespace: sref.namespace.clone(),
        name: sref.name.clone(),
        revision: kv.mod_revision,
        manifest: String::from_utf8_lossy(&kv.value).into_owned(),
        service,
        error,
        status,
        endpoints: None,
        names_unavailable: std::collections::BTreeMap::new(),
    }
}

/// Refuses manifests whose ingress ports another service already publishes (stored, or
/// earlier in the same body), as Swarm does: one error per port, at its line and column.
pub(crate) async fn check_ingress_ports(
    st: &ApiState,
    docs: &[shoal_core::ParsedService],
) -> Result<(), ApiError> {
    if docs.iter().all(|d| {
        d.service
            .spec
            .ports
            .iter()
            .all(|p| p.ingress_port().is_none())
    }) {
        return Ok(());
    }
    let in_body: std::collections::BTreeSet<shoal_core::ServiceRef> =
        docs.iter().map(|d| d.service.id()).collect();
    let mut others: Vec<shoal_core::Service> = st
        .store
        .list(&st.keys.services_prefix())
        .await?
        .kvs
        .iter()
        .filter_map(|kv| match st.keys.parse(&kv.key) {
            Some(shoal_core::Key::Service(r)) => parse_stored(&r, kv).ok(),
            _ => None,
        })
        .filter(|s| !in_body.contains(&s.id()))
        .collect();
    let mut errors = Vec::new();
    for d in docs {
        let svc = &d.service;
        for (path, message) in shoal_core::endpoints::ingress_conflicts(svc, others.iter()) {
            let (line, column) = shoal_core::parse::locate(&d.text, &path).unwrap_or((1, 0));
            let line = line + d.line.max(1) - 1;
            errors.push(shoal_core::parse::ManifestError {
                source: "body".to_string(),
                line,
                column,
                message: format!("{path}: {message}"),
                snippet: d.text.lines().nth(line - d.line.max(1)).map(str::to_string),
            });
        }
        others.push(svc.clone());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidManifest(errors))
    }
}
