//! `POST /v1/services/{ns}/{name}/rollback`: writes the previous spec the controller kept in
//! the service status back as the manifest (metadata kept), so the store stays the single
//! source of truth and the controller rolls the tasks back like any other update.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use shoal_core::{Service, ServiceRef, ServiceStatus};

use super::services::RevisionQuery;
use super::{decode, etag, if_match, parse_stored};
use crate::ApiState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::types::{Action, WriteResult};

/// Renders a service as manifest text, as JSON when the stored text was JSON, else YAML.
fn render(svc: &Service, json: bool) -> Result<String, ApiError> {
    if json {
        serde_json::to_string_pretty(svc).map_err(|e| ApiError::BadRequest(e.to_string()))
    } else {
        yaml_serde::to_string(svc).map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

/// Restores the previous spec of a service (`shoal rollout undo`). Honors `If-Match`.
#[utoipa::path(post, path = "/v1/services/{ns}/{name}/rollback",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Service name"), RevisionQuery),
    responses(
        (status = 200, description = "The previous spec is the manifest again", body = WriteResult),
        (status = 400, description = "No previous spec, or the stored manifest is invalid", body = crate::types::ErrorBody),
        (status = 404, description = "No such service", body = crate::types::ErrorBody),
        (status = 409, description = "Stale revision", body = crate::types::ErrorBody)))]
pub async fn rollback(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RevisionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require_write(&ns)?;
    let r = ServiceRef {
        namespace: ns,
        name,
    };
    let key = st.keys.service(&r);
    let kv = st
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {r}")))?;
    let expected = if_match(&headers)?.or(q.revision);
    if let Some(e) = expected
        && e != kv.mod_revision
    {
        return Err(ApiError::Conflict {
            what: format!("service {r}"),
            expected: e,
            current: kv.mod_revision,
        });
    }
    let current = parse_stored(&kv)
        .map_err(|e| ApiError::BadRequest(format!("the stored manifest is invalid: {e}")))?;
    let status: Option<ServiceStatus> = match st.store.get(&st.keys.service_status(&r)).await? {
        Some(s) => Some(decode(&s)?),
        None => None,
    };
    let previous = status.and_then(|s| s.previous_spec).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "service {r} has no previous spec to roll back to (its template never changed)"
        ))
    })?;
    let restored = Service {
        spec: previous,
        ..current.clone()
    };
    let json = kv.value.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let text = render(&restored, json)?;
    // What is written must parse back to the same service (the controller reads it).
    match shoal_core::parse(&text, &key) {
        Ok(v) if v.len() == 1 && v[0].service == restored => {}
        Ok(_) => {
            return Err(ApiError::BadRequest(
                "the previous spec does not render back to the same manifest".into(),
            ));
        }
        Err(errs) => return Err(ApiError::InvalidManifest(errs)),
    }
    let (action, revision) = if restored == current {
        (Action::Unchanged, kv.mod_revision)
    } else {
        match st
            .store
            .compare_and_put(&key, text.into_bytes(), kv.mod_revision, None)
            .await?
        {
            Some(rev) => (Action::Configured, rev),
            None => {
                let now = st.store.get(&key).await?.map_or(0, |kv| kv.mod_revision);
                return Err(ApiError::Conflict {
                    what: format!("service {r}"),
                    expected: kv.mod_revision,
                    current: now,
                });
            }
        }
    };
    tracing::info!(service = %r, %action, revision, "service rolled back to its previous spec");
    let body = WriteResult {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        action,
        revision,
    };
    Ok(([etag(revision)], Json(body)).into_response())
}
