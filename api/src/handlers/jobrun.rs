//! `POST /v1/services/{ns}/{name}/run`: asks the controller to start a run of a job now
//! (`shoal job run`). The request is written to `jobruns/<ns>/<name>`; the controller starts
//! one run per request it has not handled yet (with `force`, even while a run is active,
//! which it stops).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use shoal_core::job::RunRequest;
use shoal_core::model::{self, Timestamp};
use shoal_core::{ServiceRef, ServiceStatus};
use utoipa::{IntoParams, ToSchema};

use super::{decode, parse_stored};
use crate::ApiState;
use crate::auth::Principal;
use crate::error::ApiError;

/// Options of a run request.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct RunQuery {
    /// Start even while a run is active (the active run is stopped).
    #[serde(default)]
    pub force: bool,
}

/// What was asked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunAccepted {
    /// Namespace.
    pub namespace: String,
    /// Job name.
    pub name: String,
    /// The number the new run will have (unless another run starts first).
    pub next_run: u64,
    /// When the run was requested (RFC 3339).
    pub requested_at: String,
}

/// Starts a run of a job now.
#[utoipa::path(post, path = "/v1/services/{ns}/{name}/run",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Job name"), RunQuery),
    responses(
        (status = 202, description = "The controller starts the run", body = RunAccepted),
        (status = 400, description = "Not a job, or its manifest is invalid", body = crate::types::ErrorBody),
        (status = 404, description = "No such service", body = crate::types::ErrorBody),
        (status = 409, description = "A run is active and force was not given", body = crate::types::ErrorBody)))]
pub async fn run(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RunQuery>,
) -> Result<(axum::http::StatusCode, Json<RunAccepted>), ApiError> {
    principal.require_write(&ns)?;
    let r = ServiceRef {
        namespace: ns,
        name,
    };
    let kv = st
        .store
        .get(&st.keys.service(&r))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {r}")))?;
    let svc = parse_stored(&r, &kv).map_err(|e| ApiError::Corrupt {
        key: kv.key.clone(),
        message: format!("the stored manifest is invalid: {e}"),
    })?;
    if !svc.spec.mode.is_job() {
        return Err(ApiError::BadRequest(format!(
            "{r} is a {} service, not a job: only jobs have runs",
            svc.spec.mode.as_str()
        )));
    }
    let status: Option<ServiceStatus> = match st.store.get(&st.keys.service_status(&r)).await? {
        Some(s) => Some(decode(&s)?),
        None => None,
    };
    let job = status.and_then(|s| s.job).unwrap_or_default();
    if let Some(active) = job.active().next()
        && !q.force
    {
        return Err(ApiError::InUse(format!(
            "run {} of {r} is still active: use --force to stop it and start a new run",
            active.number
        )));
    }
    let req = RunRequest {
        requested_at: Timestamp::now(),
        force: q.force,
    };
    st.store
        .put(&st.keys.job_run(&r), model::encode(&req), None)
        .await?;
    tracing::info!(service = %r, force = q.force, "job run requested");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(RunAccepted {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            next_run: job.next_number(),
            requested_at: req.requested_at.to_string(),
        }),
    ))
}
