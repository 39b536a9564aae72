//! `/v1/services`: read, write and delete manifests, and read their status.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use shoal_core::{Key, NodeInfo, ServiceRef, ServiceStatus, Task};
use shoal_store::Revision;
use utoipa::IntoParams;

use super::{body_text, decode, etag, if_match, parse_stored, resource};
use crate::ApiState;
use crate::auth::Principal;
use crate::cas::{self, Attempt};
use crate::error::ApiError;
use crate::manifest::{Selector, parse_body};
use crate::types::{Action, DeleteResponse, ServiceResource, WriteResult};

/// Query of `GET /v1/services`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this namespace (all when omitted).
    pub namespace: Option<String>,
    /// Label selector: `k=v,k2!=v,k3,!k4`.
    pub selector: Option<String>,
}

/// Query of writes that accept a revision precondition.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct RevisionQuery {
    /// Write only if the stored manifest is at this revision (same as `If-Match`).
    pub revision: Option<Revision>,
}

fn sref(ns: String, name: String) -> ServiceRef {
    ServiceRef {
        namespace: ns,
        name,
    }
}

/// Lists services with their status, sorted by namespace and name.
#[utoipa::path(get, path = "/v1/services", params(ListQuery), responses(
    (status = 200, description = "Services", body = Vec<ServiceResource>),
    (status = 400, description = "Invalid selector", body = crate::types::ErrorBody)))]
pub async fn list(
    State(st): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ServiceResource>>, ApiError> {
    let selector = Selector::parse(q.selector.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let prefix = match &q.namespace {
        Some(ns) => st.keys.services_ns_prefix(ns),
        None => st.keys.services_prefix(),
    };
    let manifests = st.store.list(&prefix).await?;
    let statuses = st.store.list(&st.keys.service_status_prefix()).await?;
    let mut status_by_ref = BTreeMap::new();
    for kv in &statuses.kvs {
        if let Some(Key::ServiceStatus(r)) = st.keys.parse(&kv.key)
            && let Ok(s) = decode::<ServiceStatus>(kv)
        {
            status_by_ref.insert(r, s);
        }
    }
    let mut out = Vec::new();
    for kv in &manifests.kvs {
        let Some(Key::Service(r)) = st.keys.parse(&kv.key) else {
            continue;
        };
        let res = resource(&r, kv, status_by_ref.remove(&r));
        let labels = res.service.as_ref().map(|s| &s.metadata.labels);
        if !selector.is_empty() && !labels.is_some_and(|l| selector.matches(l)) {
            continue;
        }
        out.push(res);
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(Json(out))
}

/// Reads one service: its manifest text, parsed manifest and status. `ETag` is the revision.
#[utoipa::path(get, path = "/v1/services/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The service", body = ServiceResource),
        (status = 404, description = "No such service", body = crate::types::ErrorBody)))]
pub async fn get_one(
    State(st): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let res = load_one(&st, &sref(ns, name)).await?;
    Ok(([etag(res.revision)], Json(res)).into_response())
}

/// One service with its status, as `GET /v1/services/{ns}/{name}` answers it.
pub(crate) async fn load_one(st: &ApiState, r: &ServiceRef) -> Result<ServiceResource, ApiError> {
    let kv = st
        .store
        .get(&st.keys.service(r))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {r}")))?;
    let status = match st.store.get(&st.keys.service_status(r)).await? {
        Some(s) => decode::<ServiceStatus>(&s).ok(),
        None => None,
    };
    let mut res = resource(r, &kv, status);
    res.endpoints = match st.store.get(&st.keys.endpoints(r)).await? {
        Some(e) => decode(&e).ok(),
        None => None,
    };
    res.names_unavailable = names_unavailable(st, r).await?;
    Ok(res)
}

/// The nodes holding tasks of `r` whose agents published why service networking cannot run
/// there (`NodeInfo::network_unavailable`), with that reason.
async fn names_unavailable(
    st: &ApiState,
    r: &ServiceRef,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for kv in st.store.list(&st.keys.nodes_prefix()).await?.kvs {
        let Ok(info) = decode::<NodeInfo>(&kv) else {
            continue;
        };
        let Some(why) = info.network_unavailable else {
            continue;
        };
        let tasks = st.store.list(&st.keys.node_tasks_prefix(&info.id)).await?;
        let holds = tasks
            .kvs
            .iter()
            .filter_map(|kv| decode::<Task>(kv).ok())
            .any(|t| &t.service == r);
        if holds {
            out.insert(info.id, why);
        }
    }
    Ok(out)
}

/// Creates or replaces one service's manifest (YAML or JSON). Honors `If-Match: <revision>`.
#[utoipa::path(put, path = "/v1/services/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Service name"), RevisionQuery),
    request_body(content = String, description = "The manifest (YAML or JSON)", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Configured or unchanged", body = WriteResult),
        (status = 201, description = "Created", body = WriteResult),
        (status = 400, description = "Invalid manifest", body = crate::types::ErrorBody),
        (status = 409, description = "Stale revision", body = crate::types::ErrorBody)))]
pub async fn put(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RevisionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require_write(&ns)?;
    let r = sref(ns, name);
    let text = body_text(&body)?;
    let docs = parse_body(text, "body").map_err(ApiError::InvalidManifest)?;
    let [doc] = docs.as_slice() else {
        return Err(ApiError::BadRequest(format!(
            "the body holds {} manifests; PUT takes one (use POST /v1/apply for several)",
            docs.len()
        )));
    };
    let id = doc.service.id();
    if id != r {
        return Err(ApiError::BadRequest(format!(
            "the manifest is for service {id}, but the path names {r}"
        )));
    }
    super::check_ingress_ports(&st, &docs).await?;
    let expected = if_match(&headers)?.or(q.revision);
    let key = st.keys.service(&r);
    let what = format!("service {r}");
    let (st, r, key, what) = (&st, &r, &key, &what);
    let (action, revision) = cas::retry(&*st.store, what, cas::ATTEMPTS, |_| async move {
        let current = st.store.get(key).await?;
        let current_rev = current.as_ref().map_or(0, |kv| kv.mod_revision);
        if let Some(e) = expected
            && e != current_rev
        {
            return Err(ApiError::Conflict {
                what: what.clone(),
                expected: e,
                current: current_rev,
            });
        }
        let action = match &current {
            None => Action::Created,
            Some(kv) if parse_stored(r, kv).is_ok_and(|s| s == doc.service) => Action::Unchanged,
            Some(_) => Action::Configured,
        };
        if action == Action::Unchanged {
            return Ok(Attempt::Done((action, current_rev)));
        }
        let written = st
            .store
            .compare_and_put(key, doc.text.clone().into_bytes(), current_rev, None)
            .await?;
        match written {
            Some(rev) => Ok(Attempt::Done((action, rev))),
            // The caller asked for this revision: it is gone, deciding again cannot help.
            None if expected.is_some() => {
                Err(cas::conflict(&*st.store, what.clone(), key, current_rev).await)
            }
            None => Ok(Attempt::Raced {
                key: key.clone(),
                expected: current_rev,
            }),
        }
    })
    .await?;
    tracing::info!(service = %r, %action, revision, "service written");
    let code = if action == Action::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = WriteResult {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        action,
        revision,
    };
    Ok((code, [etag(revision)], Json(body)).into_response())
}

/// Deletes one service's manifest. Honors `If-Match: <revision>`.
#[utoipa::path(delete, path = "/v1/services/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Service name"), RevisionQuery),
    responses(
        (status = 200, description = "Deleted", body = DeleteResponse),
        (status = 404, description = "No such service", body = crate::types::ErrorBody),
        (status = 409, description = "Stale revision", body = crate::types::ErrorBody)))]
pub async fn delete(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RevisionQuery>,
    headers: HeaderMap,
) -> Result<Json<DeleteResponse>, ApiError> {
    principal.require_write(&ns)?;
    let r = sref(ns, name);
    let key = st.keys.service(&r);
    let expected = if_match(&headers)?.or(q.revision);
    let current = st
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {r}")))?;
    let rev = expected.unwrap_or(current.mod_revision);
    if !st.store.compare_and_delete(&key, rev).await? {
        return Err(cas::conflict(&*st.store, format!("service {r}"), &key, rev).await);
    }
    // A job's last run request goes with it (a job created again later starts afresh).
    st.store.delete(&st.keys.job_run(&r)).await?;
    let revision = st
        .store
        .list(&key)
        .await
        .map(|l| l.revision)
        .unwrap_or_default();
    tracing::info!(service = %r, "service deleted");
    Ok(Json(DeleteResponse {
        namespace: r.namespace,
        name: r.name,
        revision,
    }))
}

/// Reads the status the controller wrote for a service.
#[utoipa::path(get, path = "/v1/services/{ns}/{name}/status",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The status", body = Object),
        (status = 404, description = "No status yet", body = crate::types::ErrorBody)))]
pub async fn status(
    State(st): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let r = sref(ns, name);
    let kv = st
        .store
        .get(&st.keys.service_status(&r))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "status of service {r} (the controller has not observed it yet)"
            ))
        })?;
    let status: ServiceStatus = decode(&kv)?;
    Ok(([etag(kv.mod_revision)], Json(status)).into_response())
}
