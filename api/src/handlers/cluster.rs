//! `/v1/tasks` and `/v1/nodes`: tasks joined with their status, nodes joined with their
//! operator settings, and node settings changes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use shoal_core::{Key, NodeConfig, NodeInfo, Task, TaskStatus};
use utoipa::IntoParams;

use super::decode;
use crate::ApiState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::types::{NodePatch, NodeView, TaskView};

/// Query of `GET /v1/tasks`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct TaskQuery {
    /// Only tasks of this service (`namespace/name`, or `name` in `default`).
    pub service: Option<String>,
    /// Only tasks assigned to this node.
    pub node: Option<String>,
}

/// Lists tasks with their status, sorted by service, slot and creation time.
#[utoipa::path(get, path = "/v1/tasks", params(TaskQuery), responses(
    (status = 200, description = "Tasks", body = Vec<TaskView>)))]
pub async fn tasks(
    State(st): State<ApiState>,
    Query(q): Query<TaskQuery>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    let service = q.service.as_deref().map(|s| match s.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (
            shoal_core::manifest::DEFAULT_NAMESPACE.to_string(),
            s.to_string(),
        ),
    });
    let (tprefix, sprefix) = match &q.node {
        Some(n) => (
            st.keys.node_tasks_prefix(n),
            st.keys.node_task_status_prefix(n),
        ),
        None => (st.keys.tasks_prefix(), st.keys.task_status_prefix()),
    };
    let tasks = st.store.list(&tprefix).await?;
    let statuses = st.store.list(&sprefix).await?;
    let mut by_id: BTreeMap<(String, String), TaskStatus> = BTreeMap::new();
    for kv in &statuses.kvs {
        if let Some(Key::TaskStatus { node, task }) = st.keys.parse(&kv.key)
            && let Ok(s) = decode::<TaskStatus>(kv)
        {
            by_id.insert((node, task), s);
        }
    }
    let mut out = Vec::new();
    for kv in &tasks.kvs {
        let Some(Key::Task { node, task: id }) = st.keys.parse(&kv.key) else {
            continue;
        };
        let task: Task = decode(kv)?;
        if let Some((ns, name)) = &service
            && (&task.service.namespace != ns || &task.service.name != name)
        {
            continue;
        }
        let status = by_id.remove(&(node, id));
        out.push(TaskView { task, status });
    }
    out.sort_by(|a, b| {
        (&a.task.service, &a.task.slot, a.task.created_at, &a.task.id).cmp(&(
            &b.task.service,
            &b.task.slot,
            b.task.created_at,
            &b.task.id,
        ))
    });
    Ok(Json(out))
}

async fn load_nodes(st: &ApiState) -> Result<BTreeMap<String, NodeView>, ApiError> {
    let infos = st.store.list(&st.keys.nodes_prefix()).await?;
    let configs = st.store.list(&st.keys.node_config_prefix()).await?;
    // A node known only from its tasks is down, and still shown (until it is gone for good).
    let tasks = st.store.list(&st.keys.tasks_prefix()).await?;
    let mut out: BTreeMap<String, NodeView> = BTreeMap::new();
    let blank = |id: &str| NodeView {
        id: id.to_string(),
        info: None,
        config: NodeConfig::default(),
        ready: false,
        config_revision: 0,
    };
    for kv in &infos.kvs {
        let Some(Key::Node(id)) = st.keys.parse(&kv.key) else {
            continue;
        };
        let info: NodeInfo = decode(kv)?;
        let v = out.entry(id.clone()).or_insert_with(|| blank(&id));
        v.info = Some(info);
        v.ready = true;
    }
    for kv in &configs.kvs {
        let Some(Key::NodeConfig(id)) = st.keys.parse(&kv.key) else {
            continue;
        };
        let config: NodeConfig = decode(kv)?;
        let v = out.entry(id.clone()).or_insert_with(|| blank(&id));
        v.config = config;
        v.config_revision = kv.mod_revision;
    }
    for kv in &tasks.kvs {
        if let Some(Key::Task { node, .. }) = st.keys.parse(&kv.key) {
            out.entry(node.clone()).or_insert_with(|| blank(&node));
        }
    }
    Ok(out)
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
        (status = 200, description = "The node, marked removed", body = NodeView),
        (status = 404, description = "No such node", body = crate::types::ErrorBody),
        (status = 409, description = "The node is ready (use force)", body = crate::types::ErrorBody)))]
pub async fn remove_node(
    State(st): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(q): Query<RemoveNodeQuery>,
) -> Result<Json<NodeView>, ApiError> {
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
        return Err(ApiError::Conflict {
            what: format!("node {id} settings"),
            expected: view.config_revision,
            current: st.store.get(&key).await?.map_or(0, |kv| kv.mod_revision),
        });
    }
    tracing::info!(node = %id, ready = view.ready, "node removed");
    Ok(Json(view))
}

/// Lists nodes (agent record, operator settings, readiness), sorted by id.
#[utoipa::path(get, path = "/v1/nodes", responses((status = 200, description = "Nodes", body = Vec<NodeView>)))]
pub async fn nodes(State(st): State<ApiState>) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(load_nodes(&st).await?.into_values().collect()))
}

/// Reads one node.
#[utoipa::path(get, path = "/v1/nodes/{id}", params(("id" = String, Path, description = "Node id")), responses(
    (status = 200, description = "The node", body = NodeView),
    (status = 404, description = "No such node", body = crate::types::ErrorBody)))]
pub async fn node(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
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
        (status = 200, description = "The node after the change", body = NodeView),
        (status = 404, description = "No such node", body = crate::types::ErrorBody)))]
pub async fn patch_node(
    State(st): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<Json<NodeView>, ApiError> {
    principal.require_admin(&format!("change node {id}"))?;
    let patch: NodePatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid node patch: {e}")))?;
    let key = st.keys.node_config(&id);
    for _ in 0..32 {
        let current = st.store.get(&key).await?;
        if current.is_none() && st.store.get(&st.keys.node(&id)).await?.is_none() {
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
        let value = serde_json::to_vec(&config).unwrap_or_default();
        if st
            .store
            .compare_and_put(&key, value, rev, None)
            .await?
            .is_some()
        {
            tracing::info!(node = %id, availability = %config.availability, "node settings changed");
            return load_nodes(&st)
                .await?
                .remove(&id)
                .map(Json)
                .ok_or_else(|| ApiError::NotFound(format!("node {id}")));
        }
    }
    Err(ApiError::Conflict {
        what: format!("node {id} settings (kept changing concurrently)"),
        expected: 0,
        current: 0,
    })
}
