//! Routes of `/v1/secrets` and `/v1/configs` (create, list, inspect, delete; a config's data;
//! re-sealing every secret under the active key) and the node-scoped delivery routes
//! `/v1/nodes/{id}/secrets/{ns}/{name}` and `/v1/nodes/{id}/configs/{ns}/{name}`.
//!
//! Creating and deleting need the write role in the namespace; re-sealing needs admin. A
//! delivery route answers only the node's own token (any caller when the API has no token
//! file: loopback only), and only while a task assigned to that node references the object.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use shoal_core::model::Timestamp;
use shoal_core::secret::{FileKind, MAX_SIZE};
use shoal_core::validate::dns_label_problem;
use shoal_store::KeyValue;
use utoipa::IntoParams;
use zeroize::Zeroizing;

use super::crypto::KeyRing;
use super::{FileView, RotateKeyResponse, StoredFile, aad, node_needs, usage};
use crate::ApiState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::handlers::decode;
use crate::types::DeleteResponse;

/// Query of the list routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this namespace (every namespace when absent).
    pub namespace: Option<String>,
}

fn key_of(st: &ApiState, kind: FileKind, ns: &str, name: &str) -> String {
    match kind {
        FileKind::Secret => st.keys.secret(ns, name),
        FileKind::Config => st.keys.config(ns, name),
    }
}

fn prefix_of(st: &ApiState, kind: FileKind, ns: Option<&str>) -> String {
    match (kind, ns) {
        (FileKind::Secret, Some(ns)) => st.keys.secrets_ns_prefix(ns),
        (FileKind::Secret, None) => st.keys.secrets_prefix(),
        (FileKind::Config, Some(ns)) => st.keys.configs_ns_prefix(ns),
        (FileKind::Config, None) => st.keys.configs_prefix(),
    }
}

fn ring(st: &ApiState) -> Result<&KeyRing, ApiError> {
    st.secret_keys.as_deref().ok_or(ApiError::NoSecretKey)
}

fn check_names(kind: FileKind, ns: &str, name: &str) -> Result<(), ApiError> {
    for (what, v) in [("namespace", ns), (kind.as_str(), name)] {
        if let Some(p) = dns_label_problem(v) {
            return Err(ApiError::BadRequest(format!(
                "invalid {what} name {v:?}: a name is a DNS label and {p}"
            )));
        }
    }
    Ok(())
}

fn view(
    kind: FileKind,
    kv: &KeyValue,
    record: StoredFile,
    st_uses: Vec<super::FileUse>,
) -> FileView {
    FileView {
        kind: kind.as_str().to_string(),
        namespace: record.namespace,
        name: record.name,
        size: record.size,
        digest: record.digest,
        created_at: record.created_at,
        revision: kv.mod_revision,
        used_by: st_uses,
    }
}

async fn list(st: &ApiState, kind: FileKind, q: ListQuery) -> Result<Vec<FileView>, ApiError> {
    let kvs = st
        .store
        .list(&prefix_of(st, kind, q.namespace.as_deref()))
        .await?
        .kvs;
    let mut uses = usage(st).await?;
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let record: StoredFile = decode(&kv)?;
        let used = uses
            .remove(&(kind, record.namespace.clone(), record.name.clone()))
            .unwrap_or_default();
        out.push(view(kind, &kv, record, used));
    }
    Ok(out)
}

async fn read(
    st: &ApiState,
    kind: FileKind,
    ns: &str,
    name: &str,
) -> Result<(KeyValue, StoredFile), ApiError> {
    let kv = st
        .store
        .get(&key_of(st, kind, ns, name))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{kind} {ns}/{name}")))?;
    let record = decode(&kv)?;
    Ok((kv, record))
}

async fn inspect(
    st: &ApiState,
    kind: FileKind,
    ns: &str,
    name: &str,
) -> Result<FileView, ApiError> {
    let (kv, record) = read(st, kind, ns, name).await?;
    let used = usage(st)
        .await?
        .remove(&(kind, ns.to_string(), name.to_string()))
        .unwrap_or_default();
    Ok(view(kind, &kv, record, used))
}

async fn create(
    st: &ApiState,
    principal: &Principal,
    kind: FileKind,
    ns: &str,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    principal.require_write(ns)?;
    check_names(kind, ns, name)?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(format!("a {kind} must not be empty")));
    }
    if body.len() > MAX_SIZE {
        return Err(ApiError::TooLarge(format!(
            "the {kind} is {} bytes; a {kind} holds at most {MAX_SIZE} bytes (500 KiB)",
            body.len()
        )));
    }
    let (digest, data) = match kind {
        FileKind::Secret => {
            let ring = ring(st)?;
            (ring.digest(body), ring.seal(&aad(ns, name), body)?)
        }
        FileKind::Config => (
            format!("sha256:{}", hex::encode(Sha256::digest(body))),
            STANDARD.encode(body),
        ),
    };
    let record = StoredFile {
        namespace: ns.to_string(),
        name: name.to_string(),
        size: body.len() as u64,
        digest,
        created_at: Timestamp::now(),
        data,
    };
    let key = key_of(st, kind, ns, name);
    let value = serde_json::to_vec(&record).unwrap_or_default();
    let Some(revision) = st.store.compare_and_put(&key, value, 0, None).await? else {
        return Err(ApiError::Exists(format!(
            "{kind} {ns}/{name} already exists, and {kind}s are immutable: create the new \
             value under a new name (e.g. {name}-v2) and change the manifests' `source` to it"
        )));
    };
    tracing::info!(kind = %kind, namespace = ns, name, size = record.size, revision, "created");
    let kv = KeyValue {
        key,
        value: Vec::new(),
        create_revision: revision,
        mod_revision: revision,
        lease: None,
    };
    let body = view(kind, &kv, record, Vec::new());
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn delete(
    st: &ApiState,
    principal: &Principal,
    kind: FileKind,
    ns: &str,
    name: &str,
) -> Result<DeleteResponse, ApiError> {
    principal.require_write(ns)?;
    let (kv, _) = read(st, kind, ns, name).await?;
    let used = usage(st)
        .await?
        .remove(&(kind, ns.to_string(), name.to_string()))
        .unwrap_or_default();
    if !used.is_empty() {
        let who: Vec<String> = used
            .iter()
            .map(|u| match (u.manifest, u.tasks) {
                (true, 0) => format!("{} (manifest)", u.service),
                (true, n) => format!("{} (manifest, {n} task(s))", u.service),
                (false, n) => format!("{} ({n} task(s) still running it)", u.service),
            })
            .collect();
        return Err(ApiError::InUse(format!(
            "{kind} {ns}/{name} is in use by {}: change or delete those services first",
            who.join(", ")
        )));
    }
    if !st
        .store
        .compare_and_delete(&kv.key, kv.mod_revision)
        .await?
    {
        let now = st.store.get(&kv.key).await?.map_or(0, |k| k.mod_revision);
        return Err(ApiError::Conflict {
            what: format!("{kind} {ns}/{name}"),
            expected: kv.mod_revision,
            current: now,
        });
    }
    tracing::info!(kind = %kind, namespace = ns, name, "deleted");
    let revision = st
        .store
        .list(&kv.key)
        .await
        .map(|l| l.revision)
        .unwrap_or_default();
    Ok(DeleteResponse {
        namespace: ns.to_string(),
        name: name.to_string(),
        revision,
    })
}

/// The value of an object, opened (secrets) or decoded (configs).
fn value_of(
    st: &ApiState,
    kind: FileKind,
    record: &StoredFile,
    key: &str,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    match kind {
        FileKind::Secret => {
            Ok(ring(st)?.open(&aad(&record.namespace, &record.name), &record.data)?)
        }
        FileKind::Config => STANDARD
            .decode(&record.data)
            .map(Zeroizing::new)
            .map_err(|e| ApiError::Corrupt {
                key: key.to_string(),
                message: format!("the value is not base64: {e}"),
            }),
    }
}

fn octets(mut value: Zeroizing<Vec<u8>>) -> Response {
    let body = std::mem::take(&mut *value);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn deliver(
    st: &ApiState,
    principal: &Principal,
    kind: FileKind,
    node: &str,
    ns: &str,
    name: &str,
) -> Result<Response, ApiError> {
    if st.tokens.is_some() && !principal.is_node(node) {
        return Err(ApiError::Forbidden(format!(
            "token {} may not read the {kind}s of node {node:?}: only that node's token may, for \
             the tasks assigned to it",
            principal.token_id()
        )));
    }
    let Some(task) = node_needs(st, node, kind, ns, name).await? else {
        return Err(ApiError::Forbidden(format!(
            "node {node:?} has no task that uses {kind} {ns}/{name}"
        )));
    };
    let (kv, record) = read(st, kind, ns, name).await?;
    let value = value_of(st, kind, &record, &kv.key)?;
    tracing::info!(node, task = %task, kind = %kind, namespace = ns, name, "delivered to node");
    Ok(octets(value))
}

/// Lists secrets (metadata and users, never values).
#[utoipa::path(get, path = "/v1/secrets", params(ListQuery), responses(
    (status = 200, description = "Secrets", body = Vec<FileView>)))]
pub async fn list_secrets(
    State(st): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<FileView>>, ApiError> {
    Ok(Json(list(&st, FileKind::Secret, q).await?))
}

/// Creates a secret from the request body (raw bytes, at most 500 KiB), sealed under the
/// active cluster key. Secrets are immutable: an existing name is refused.
#[utoipa::path(post, path = "/v1/secrets/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Secret name")),
    request_body(content = String, description = "The value", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Created", body = FileView),
        (status = 409, description = "Already exists", body = crate::types::ErrorBody),
        (status = 413, description = "Larger than 500 KiB", body = crate::types::ErrorBody),
        (status = 503, description = "The API has no secret key", body = crate::types::ErrorBody)))]
pub async fn create_secret(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(&st, &principal, FileKind::Secret, &ns, &name, &body).await
}

/// Shows a secret's metadata and the services using it (never its value).
#[utoipa::path(get, path = "/v1/secrets/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Secret name")),
    responses((status = 200, description = "The secret", body = FileView), (status = 404, description = "No such secret", body = crate::types::ErrorBody)))]
pub async fn get_secret(
    State(st): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<FileView>, ApiError> {
    Ok(Json(inspect(&st, FileKind::Secret, &ns, &name).await?))
}

/// Removes a secret; refused while a service uses it.
#[utoipa::path(delete, path = "/v1/secrets/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Secret name")),
    responses((status = 200, description = "Removed", body = DeleteResponse), (status = 409, description = "In use", body = crate::types::ErrorBody)))]
pub async fn delete_secret(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<DeleteResponse>, ApiError> {
    Ok(Json(
        delete(&st, &principal, FileKind::Secret, &ns, &name).await?,
    ))
}

/// Re-seals every secret under the active key of the key file (admin).
#[utoipa::path(post, path = "/v1/secrets/rotate-key", responses(
    (status = 200, description = "Every secret is under the active key", body = RotateKeyResponse),
    (status = 503, description = "The API has no secret key", body = crate::types::ErrorBody)))]
pub async fn rotate_key(
    State(st): State<ApiState>,
    principal: Principal,
) -> Result<Json<RotateKeyResponse>, ApiError> {
    principal.require_admin("re-seal every secret")?;
    let ring = ring(&st)?;
    let mut out = RotateKeyResponse {
        active_key: ring.active_id().to_string(),
        resealed: 0,
        unchanged: 0,
    };
    for mut kv in st.store.list(&st.keys.secrets_prefix()).await?.kvs {
        loop {
            let mut record: StoredFile = decode(&kv)?;
            if KeyRing::key_id_of(&record.data)? == ring.active_id() {
                out.unchanged += 1;
                break;
            }
            let value = value_of(&st, FileKind::Secret, &record, &kv.key)?;
            record.digest = ring.digest(&value);
            record.data = ring.seal(&aad(&record.namespace, &record.name), &value)?;
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            if st
                .store
                .compare_and_put(&kv.key, bytes, kv.mod_revision, None)
                .await?
                .is_some()
            {
                out.resealed += 1;
                break;
            }
            // Changed meanwhile (another rotation) or removed: look again.
            match st.store.get(&kv.key).await? {
                Some(now) => kv = now,
                None => break,
            }
        }
    }
    tracing::info!(active_key = %out.active_key, resealed = out.resealed, unchanged = out.unchanged, "secrets re-sealed");
    Ok(Json(out))
}

/// Delivers a secret's value to a node with a task that uses it.
#[utoipa::path(get, path = "/v1/nodes/{id}/secrets/{ns}/{name}",
    params(("id" = String, Path, description = "Node id"), ("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Secret name")),
    responses(
        (status = 200, description = "The value", content_type = "application/octet-stream", body = String),
        (status = 403, description = "Not this node's token, or no task of the node uses it", body = crate::types::ErrorBody)))]
pub async fn node_secret(
    State(st): State<ApiState>,
    principal: Principal,
    Path((node, ns, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    deliver(&st, &principal, FileKind::Secret, &node, &ns, &name).await
}

/// Lists configs (metadata and users).
#[utoipa::path(get, path = "/v1/configs", params(ListQuery), responses(
    (status = 200, description = "Configs", body = Vec<FileView>)))]
pub async fn list_configs(
    State(st): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<FileView>>, ApiError> {
    Ok(Json(list(&st, FileKind::Config, q).await?))
}

/// Creates a config from the request body (raw bytes, at most 500 KiB). Configs are
/// immutable: an existing name is refused.
#[utoipa::path(post, path = "/v1/configs/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Config name")),
    request_body(content = String, description = "The value", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Created", body = FileView),
        (status = 409, description = "Already exists", body = crate::types::ErrorBody),
        (status = 413, description = "Larger than 500 KiB", body = crate::types::ErrorBody)))]
pub async fn create_config(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(&st, &principal, FileKind::Config, &ns, &name, &body).await
}

/// Shows a config's metadata and the services using it.
#[utoipa::path(get, path = "/v1/configs/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Config name")),
    responses((status = 200, description = "The config", body = FileView), (status = 404, description = "No such config", body = crate::types::ErrorBody)))]
pub async fn get_config(
    State(st): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<FileView>, ApiError> {
    Ok(Json(inspect(&st, FileKind::Config, &ns, &name).await?))
}

/// A config's value (configs are not secret: any reader may read it back).
#[utoipa::path(get, path = "/v1/configs/{ns}/{name}/data",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Config name")),
    responses((status = 200, description = "The value", content_type = "application/octet-stream", body = String)))]
pub async fn config_data(
    State(st): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (kv, record) = read(&st, FileKind::Config, &ns, &name).await?;
    Ok(octets(value_of(&st, FileKind::Config, &record, &kv.key)?))
}

/// Removes a config; refused while a service uses it.
#[utoipa::path(delete, path = "/v1/configs/{ns}/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Config name")),
    responses((status = 200, description = "Removed", body = DeleteResponse), (status = 409, description = "In use", body = crate::types::ErrorBody)))]
pub async fn delete_config(
    State(st): State<ApiState>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<DeleteResponse>, ApiError> {
    Ok(Json(
        delete(&st, &principal, FileKind::Config, &ns, &name).await?,
    ))
}

/// Delivers a config's value to a node with a task that uses it.
#[utoipa::path(get, path = "/v1/nodes/{id}/configs/{ns}/{name}",
    params(("id" = String, Path, description = "Node id"), ("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Config name")),
    responses(
        (status = 200, description = "The value", content_type = "application/octet-stream", body = String),
        (status = 403, description = "Not this node's token, or no task of the node uses it", body = crate::types::ErrorBody)))]
pub async fn node_config(
    State(st): State<ApiState>,
    principal: Principal,
    Path((node, ns, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    deliver(&st, &principal, FileKind::Config, &node, &ns, &name).await
}
