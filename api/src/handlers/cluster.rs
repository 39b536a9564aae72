//! `/v1/tasks` and `/v1/nodes`: tasks joined with their status, nodes joined with their
//! operator settings and readiness (the views of `shoal_core::view`), and node settings
//! changes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use shoal_core::view::{self, Record};
use shoal_core::{Key, NodeConfig, ServiceRef};
use shoal_store::KeyValue;
use utoipa::IntoParams;

use super::decode;
use crate::ApiState;
use crate::auth::Principal;
use crate::cas::{self, Attempt};
use crate::error::ApiError;
use crate::types::{NodeEntry, NodePatch, TaskEntry};

/// Node settings change rarely and by small patches: decide again more often than for
/// manifests before giving up.
const NODE_ATTEMPTS: usize = 32;

/// Query of `GET /v1/tasks`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct TaskQuery {
    /// Only tasks of this service (`namespace/name`, or `name` in `default`).
    pub service: Option<String>,
    /// Only tasks assigned to this node.
    pub node: Option<String>,
    /// `false`: only each slot's current tasks (what `shoal get tasks` shows); `true`: only
    /// the history (finished tasks replaced by a newer one, kept up to the controller's
    /// `--task-history-limit`). Absent: both, history tasks marked `"history": true`.
    pub history: Option<bool>,
}

/// Lists tasks with their status, sorted by service, slot and creation time; tasks in their
/// slot's history are marked (and filtered with `history`).
#[utoipa::path(get, path = "/v1/tasks", params(TaskQuery), responses(
    (status = 200, description = "Tasks", body = Vec<TaskEntry>)))]
pub async fn tasks(
    State(st): State<ApiState>,
    Query(q): Query<TaskQuery>,
) -> Result<Json<Vec<TaskEntry>>, ApiError> {
    let service: Option<ServiceRef> = q
        .service
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: shoal_core::ServiceRefError| ApiError::BadRequest(e.to_string()))?;
    // Every task is read, whatever the filters: whether a task is history depends on the
    // other tasks of its slot, wherever they run.
    let tasks = st.store.list(&st.keys.tasks_prefix()).await?;
    let statuses = st.store.list(&st.keys.task_status_prefix()).await?;
    let joined = view::join_tasks(&st.keys, records(&tasks.kvs), records(&statuses.kvs));
    // An unreadable assignment is the server's fault; an unreadable status is left out.
    if let Some(bad) = joined
        .unreadable
        .into_iter()
        .find(|u| matches!(st.keys.parse(&u.key), Some(Key::Task { .. })))
    {
        return Err(ApiError::Corrupt {
            key: bad.key,
            message: bad.error.to_string(),
        });
    }
    let mut out = joined.view;
    view::mark_history(&mut out);
    out.retain(|e| {
        service.as_ref().is_none_or(|r| &e.task.service == r)
            && q.node.as_ref().is_none_or(|n| &e.task.node_id == n)
            && q.history.is_none_or(|h| e.history == h)
    });
    Ok(Json(out))
}

/// Store records as the views read them.
pub(crate) fn records(kvs: &[KeyValue]) -> impl Iterator<Item = Record<'_>> {
    kvs.iter().map(|kv| Record {
        key: &kv.key,
        value: &kv.value,
        revision: kv.mod_revision,
    })
}

/// Every node (agent record, settings, readiness), by id; a node known only from its tasks
/// is down, and still shown (until it is gone for good).
pub(crate) async fn load_nodes(st: &ApiState) -> Result<BTreeMap<String, NodeEntry>, ApiError> {
    let infos = st.store.list(&st.keys.nodes_prefix()).await?;
    let configs = st.store.list(&st.keys.node_config_prefix()).await?;
    let tasks = st.store.list(&st.keys.tasks_prefix()).await?;
    let joined = view::join_nodes(
        &st.keys,
        records(&infos.kvs),
        records(&configs.kvs),
        tasks.kvs.iter().map(|kv| kv.key.as_str()),
    );
    if let Some(bad) = joined.unreadable.into_iter().next() {
        return Err(ApiError::Corrupt {
            key: bad.key,
            message: bad.error.to_string(),
        });
    }
    Ok(joined.view)
}

/// Query of `DELETE /v1/nodes/{id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct RemoveNodeQuery {
    /// Remove the node even though its agent is alive (its tasks move elsewhere).
    #[serde(default)]
    pub force: bool,
}

/// Removes a node (`shoal node rm`): marks its settings removed, and the controller deletes its
/// tasks, their statuses and the settings. Refused while the node is ready unless `force`.
#[utoipa::path(delete, path = "/v1/nodes/{id}", params(("id" = String, Path, description = "Node id"), RemoveNodeQuery),
    responses(
        (status = 200, description = "The node, marked removed", body = NodeEntry),
        (status = 404, description = "No such node", body = crate::types::ErrorBody),
        (status = 409, description = "The node is ready (use force)", body = crate::types::ErrorBody)))]
pub async fn remove_node(
    State(st): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(q): Query<RemoveNodeQuery>,
) -> Result<Json<NodeEntry>, ApiError> {
    principal.require_admin(&format!("remove node {id}"))?;
    let Some(mut view) = load_nodes(&st).await?.remove(&id) else {
        return Err(ApiError::NotFound(format!("node {id}")));
    };
    if view.ready && !q.force {
        return Err(ApiError::InUse(format!(
            "node {id} is ready (its agent is alive): stop its agent first, or remove it anyway with --force"
        )));
    }
    view.config.removed = true;
    let value = serde_json::to_vec(&view.config).unwrap_or_default();
    let key = st.keys.node_config(&id);
    if st
        .store
        .compare_and_put(&key, value, view.config_revision, None)
        .await?
        .is_none()
    {
        let what = format!("node {id} settings");
        return Err(cas::conflict(&*st.store, what, &key, view.config_revision).await);
    }
    tracing::info!(node = %id, ready = view.ready, "node removed");
    Ok(Json(view))
}

/// Lists nodes (agent record, operator settings, readiness), sorted by id.
#[utoipa::path(get, path = "/v1/nodes", responses((status = 200, description = "Nodes", body = Vec<NodeEntry>)))]
pub async fn nodes(State(st): State<ApiState>) -> Result<Json<Vec<NodeEntry>>, ApiError> {
    Ok(Json(load_nodes(&st).await?.into_values().collect()))
}

/// Reads one node.
#[utoipa::path(get, path = "/v1/nodes/{id}", params(("id" = String, Path, description = "Node id")), responses(
    (status = 200, description = "The node", body = NodeEntry),
    (status = 404, description = "No such node", body = crate::types::ErrorBody)))]
pub async fn node(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<NodeEntry>, ApiError> {
    load_nodes(&st)
        .await?
        .remove(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("node {id}")))
}

/// Changes a node's availability and labels (compare-and-swap on `nodeconfig/<id>`, so
/// concurrent changes are all kept).
#[utoipa::path(patch, path = "/v1/nodes/{id}", params(("id" = String, Path, description = "Node id")),
    request_body = NodePatch,
    responses(
        (status = 200, description = "The node after the change", body = NodeEntry),
        (status = 404, description = "No such node", body = crate::types::ErrorBody)))]
pub async fn patch_node(
    State(st): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<Json<NodeEntry>, ApiError> {
    principal.require_admin(&format!("change node {id}"))?;
    let patch: NodePatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid node patch: {e}")))?;
    let key = st.keys.node_config(&id);
    let what = format!("node {id} settings");
    let (st, id, key, patch) = (&st, &id, &key, &patch);
    let availability = cas::retry(&*st.store, &what, NODE_ATTEMPTS, |_| async move {
        let current = st.store.get(key).await?;
        if current.is_none() && st.store.get(&st.keys.node(id)).await?.is_none() {
            return Err(ApiError::NotFound(format!("node {id}")));
        }
        let (mut config, rev) = match &current {
            Some(kv) => (decode::<NodeConfig>(kv)?, kv.mod_revision),
            None => (NodeConfig::default(), 0),
        };
        if let Some(a) = patch.availability {
            config.availability = a;
        }
        for (k, v) in &patch.labels {
            match v {
                Some(v) => config.labels.insert(k.clone(), v.clone()),
                None => config.labels.remove(k),
            };
        }
        let value = serde_json::to_vec(&config).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(
            match st.store.compare_and_put(key, value, rev, None).await? {
                Some(_) => Attempt::Done(config.availability),
                None => Attempt::Raced {
                    key: key.clone(),
                    expected: rev,
                },
            },
        )
    })
    .await?;
    tracing::info!(node = %id, %availability, "node settings changed");
    load_nodes(st)
        .await?
        .remove(id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("node {id}")))
}
