//! `POST /v1/services/{ns}/{name}/rollback`: writes the previous spec the controller kept in
//! the service status back as the manifest (metadata kept), so the store stays the single
//! source of truth and the controller rolls the tasks back like any other update.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use shoal_core::{Service, ServiceRef, ServiceStatus};

use shoal_store::KeyValue;

use super::services::RevisionQuery;
use super::{decode, etag, if_match, parse_stored};
use crate::ApiState;
use crate::auth::Principal;
use crate::cas::{self, Attempt};
use crate::error::ApiError;
use crate::types::{Action, WriteResult};

/// Renders a service as manifest text, as JSON when the stored text was JSON, else YAML.
fn render(svc: &Service, json: bool) -> Result<String, ApiError> {
    if json {
        serde_json::to_string_pretty(svc).map_err(|e| ApiError::Internal(e.to_string()))
    } else {
        yaml_serde::to_string(svc).map_err(|e| ApiError::Internal(e.to_string()))
    }
}

/// Restores the previous spec of a service (`shoal rollout undo`). Honors `If-Match`.
#[utoipa::path(post, path = "/v1/services/{ns}/{name}/rollback",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Service name"), RevisionQuery),
    responses(
        (status = 200, description = "The previous spec is the manifest again", body = WriteResult),
        (status = 400, description = "No previous spec", body = crate::types::ErrorBody),
        (status = 404, description = "No such service", body = crate::types::ErrorBody),
        (status = 409, description = "Stale revision", body = crate::types::ErrorBody),
        (status = 500, description = "The stored manifest is invalid", body = crate::types::ErrorBody)))]
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
    let expected = if_match(&headers)?.or(q.revision);
    let what = format!("service {r}");
    let (st, r, key, what) = (&st, &r, &key, &what);
    let (action, revision) = cas::retry(&*st.store, what, cas::ATTEMPTS, |_| async move {
        let kv = st
            .store
            .get(key)
            .await?
            .ok_or_else(|| ApiError::NotFound(what.clone()))?;
        if let Some(e) = expected
            && e != kv.mod_revision
        {
            return Err(ApiError::Conflict {
                what: what.clone(),
                expected: e,
                current: kv.mod_revision,
            });
        }
        let Some(text) = restore(st, r, &kv).await? else {
            return Ok(Attempt::Done((Action::Unchanged, kv.mod_revision)));
        };
        let written = st
            .store
            .compare_and_put(key, text.into_bytes(), kv.mod_revision, None)
            .await?;
        match written {
            Some(rev) => Ok(Attempt::Done((Action::Configured, rev))),
            None if expected.is_some() => {
                Err(cas::conflict(&*st.store, what.clone(), key, kv.mod_revision).await)
            }
            None => Ok(Attempt::Raced {
                key: key.clone(),
                expected: kv.mod_revision,
            }),
        }
    })
    .await?;
    tracing::info!(service = %r, %action, revision, "service rolled back to its previous spec");
    let body = WriteResult {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        action,
        revision,
    };
    Ok(([etag(revision)], Json(body)).into_response())
}

/// The text of the manifest of `r` with the previous spec its status keeps (JSON when the
/// stored text is JSON, else YAML); `None` when that is the stored manifest already.
async fn restore(st: &ApiState, r: &ServiceRef, kv: &KeyValue) -> Result<Option<String>, ApiError> {
    let current = parse_stored(r, kv).map_err(|e| ApiError::Corrupt {
        key: kv.key.clone(),
        message: format!("the stored manifest is invalid: {e}"),
    })?;
    let status: Option<ServiceStatus> = match st.store.get(&st.keys.service_status(r)).await? {
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
    if restored == current {
        return Ok(None);
    }
    let json = kv.value.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let text = render(&restored, json)?;
    // What is written must parse back to the same service (the controller reads it).
    match shoal_core::parse_stored(&kv.key, r, text.as_bytes()) {
        Ok(s) if s == restored => Ok(Some(text)),
        Ok(_) => Err(ApiError::Internal(
            "the previous spec does not render back to the same manifest".into(),
        )),
        Err(e) => Err(ApiError::Internal(format!(
            "the previous spec renders to an invalid manifest: {e}"
        ))),
    }
}
