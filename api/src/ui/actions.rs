//! The dashboard's actions, each a form post carrying the session's CSRF token and each
//! done by the `/v1` handler that does it for the CLI (with the viewer's principal, so the
//! handler's role checks and audit apply): scale (`shoal scale`), undo a rollout (`shoal
//! rollout undo`), drain and activate a node (`shoal node drain|activate`). Every action
//! answers with a redirect back to the page it came from.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Redirect;
use serde::Deserialize;
use shoal_core::ServiceRef;
use shoal_core::model::Availability;

use super::pages::seg;
use super::{UiError, Viewer};
use crate::ApiState;
use crate::error::ApiError;
use crate::handlers::{cluster, rollback, services};
use crate::types::NodePatch;

/// Body of the scale form.
#[derive(Debug, Deserialize)]
pub struct ScaleForm {
    /// The session's CSRF token.
    pub csrf: String,
    /// New replica count.
    pub replicas: String,
}

/// Body of the availability form.
#[derive(Debug, Deserialize)]
pub struct AvailabilityForm {
    /// The session's CSRF token.
    pub csrf: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
}

fn service_page(r: &ServiceRef) -> Redirect {
    Redirect::to(&format!(
        "/ui/services/{}/{}",
        seg(&r.namespace),
        seg(&r.name)
    ))
}

/// Writes the service's manifest with `replicas` (in place when the text allows it), at the
/// revision it was read, retrying when it changed in between.
async fn write_replicas(
    st: &ApiState,
    viewer: &Viewer,
    r: &ServiceRef,
    n: u64,
) -> Result<(), UiError> {
    for _ in 0..5 {
        let s = services::load_one(st, r).await?;
        let svc = s.service.as_ref().ok_or_else(|| {
            ApiError::BadRequest(format!(
                "service {r} has an invalid manifest: {}",
                s.error.clone().unwrap_or_default()
            ))
        })?;
        if svc.spec.desired_replicas().is_none() {
            return Err(ApiError::BadRequest(format!(
                "service {r} is global: it has no replica count"
            ))
            .into());
        }
        let (text, _) = crate::manifest::scaled_manifest(&s.manifest, svc, n)
            .map_err(|e| ApiError::Internal(format!("cannot write the manifest: {e}")))?;
        let put = services::put(
            State(st.clone()),
            viewer.principal.clone(),
            Path((r.namespace.clone(), r.name.clone())),
            Query(services::RevisionQuery {
                revision: Some(s.revision),
            }),
            HeaderMap::new(),
            text.into(),
        )
        .await;
        match put {
            Ok(_) => {
                tracing::info!(target: "shoal_api::audit", service = %r, replicas = n, token = %viewer.principal.token_id(), "scaled from the dashboard");
                return Ok(());
            }
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::BadRequest(format!(
        "service {r} kept changing while scaling; try again"
    ))
    .into())
}

/// `POST /ui/services/{ns}/{name}/scale`.
pub async fn scale(
    State(st): State<ApiState>,
    viewer: Viewer,
    Path((ns, name)): Path<(String, String)>,
    axum::Form(form): axum::Form<ScaleForm>,
) -> Result<Redirect, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let r = ServiceRef {
        namespace: ns,
        name,
    };
    viewer.principal.require_write(&r.namespace)?;
    let n: u64 = form.replicas.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "replicas must be a whole number, got {:?}",
            form.replicas
        ))
    })?;
    write_replicas(&st, &viewer, &r, n).await?;
    Ok(service_page(&r))
}

/// `POST /ui/services/{ns}/{name}/rollback`.
pub async fn rollback(
    State(st): State<ApiState>,
    viewer: Viewer,
    Path((ns, name)): Path<(String, String)>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Result<Redirect, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let r = ServiceRef {
        namespace: ns,
        name,
    };
    rollback::rollback(
        State(st),
        viewer.principal.clone(),
        Path((r.namespace.clone(), r.name.clone())),
        Query(services::RevisionQuery::default()),
        HeaderMap::new(),
    )
    .await?;
    tracing::info!(target: "shoal_api::audit", service = %r, token = %viewer.principal.token_id(), "rollout undone from the dashboard");
    Ok(service_page(&r))
}

/// `POST /ui/nodes/{id}/availability`.
pub async fn availability(
    State(st): State<ApiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<AvailabilityForm>,
) -> Result<Redirect, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let availability: Availability = form.availability.parse().map_err(ApiError::BadRequest)?;
    let patch = NodePatch {
        availability: Some(availability),
        labels: Default::default(),
    };
    let body = serde_json::to_vec(&patch).unwrap_or_default();
    let _changed = cluster::patch_node(
        State(st),
        viewer.principal.clone(),
        Path(id.clone()),
        body.into(),
    )
    .await?;
    tracing::info!(target: "shoal_api::audit", node = %id, %availability, token = %viewer.principal.token_id(), "node availability changed from the dashboard");
    Ok(Redirect::to(&format!("/ui/nodes/{}", seg(&id))))
}
