//! `POST /v1/apply`: write many manifests at once (kubectl apply), optionally pruning the
//! services that carry a selector but are no longer in the set — only in the namespaces the
//! apply is about (its `namespace`, else the ones its documents name), as `kubectl apply
//! --prune` does.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;
use shoal_core::{Key, ServiceRef};
use shoal_store::{Compare, Txn, TxnOp};
use utoipa::IntoParams;

use super::{body_text, content_type, parse_stored};
use crate::ApiState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::manifest::{Selector, is_json, parse_body, place_in_namespace};
use crate::types::{Action, ApplyResponse, WriteResult};

/// Query of `POST /v1/apply`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ApplyQuery {
    /// Report what would happen; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Delete services that match `selector` and are not in the body.
    #[serde(default)]
    pub prune: bool,
    /// Label selector for pruning (required with `prune`).
    pub selector: Option<String>,
    /// The namespace of this apply (`kubectl apply -n`): documents that name no namespace go
    /// into it, a document naming another one is refused, and pruning stays inside it. Without
    /// it, pruning stays inside the namespaces the documents name.
    pub namespace: Option<String>,
}

/// Applies every manifest of the body; answers what happened to each service.
#[utoipa::path(post, path = "/v1/apply", params(ApplyQuery),
    request_body(content = String, description = "One or more manifests (YAML documents or one JSON object)", content_type = "application/yaml"),
    responses(
        (status = 200, description = "What happened to each service", body = ApplyResponse),
        (status = 400, description = "Invalid manifest or query", body = crate::types::ErrorBody),
        (status = 409, description = "Services kept changing concurrently", body = crate::types::ErrorBody)))]
pub async fn apply(
    State(st): State<ApiState>,
    principal: Principal,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ApplyResponse>, ApiError> {
    let text = body_text(&body)?;
    let mut docs = parse_body(text, is_json(content_type(&headers), text), "body")
        .map_err(ApiError::InvalidManifest)?;
    if let Some(ns) = &q.namespace {
        for d in &mut docs {
            place_in_namespace(d, ns, "body").map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
    }
    let mut seen = BTreeSet::new();
    for d in &docs {
        let id = d.parsed.service.id();
        principal.require_write(&id.namespace)?;
        if !seen.insert(id.clone()) {
            return Err(ApiError::BadRequest(format!(
                "service {id} appears twice in the body (line {})",
                d.parsed.line
            )));
        }
    }
    super::check_ingress_ports(&st, &docs).await?;
    let prune = if q.prune {
        let sel = q.selector.as_deref().unwrap_or("").trim();
        if sel.is_empty() {
            return Err(ApiError::BadRequest(
                "prune needs a label selector (selector=k=v) to bound what it deletes".into(),
            ));
        }
        if let Some(ns) = &q.namespace {
            principal.require_write(ns)?;
        }
        Some(Selector::parse(sel).map_err(|e| ApiError::BadRequest(e.to_string()))?)
    } else {
        None
    };
    // Read, decide, then write everything in one transaction that compares every revision
    // read; if anything moved in between, decide again.
    for attempt in 0..8 {
        let mut txn = Txn::default();
        let mut results = Vec::new();
        for d in &docs {
            let r = d.parsed.service.id();
            let key = st.keys.service(&r);
            let current = st.store.get(&key).await?;
            let rev = current.as_ref().map_or(0, |kv| kv.mod_revision);
            let action = match &current {
                None => Action::Created,
                Some(kv) if parse_stored(kv).is_ok_and(|s| s == d.parsed.service) => {
                    Action::Unchanged
                }
                Some(_) => Action::Configured,
            };
            txn.compares.push(Compare::ModRevision {
                key: key.clone(),
                revision: rev,
            });
            if action != Action::Unchanged {
                txn.ops.push(TxnOp::Put {
                    key,
                    value: d.text.clone().into_bytes(),
                    lease: None,
                });
            }
            results.push((r, action, rev));
        }
        if let Some(sel) = &prune {
            // As kubectl: only the namespaces this apply is about, never the whole cluster.
            let namespaces: BTreeSet<&str> = match &q.namespace {
                Some(ns) => [ns.as_str()].into(),
                None => seen.iter().map(|r| r.namespace.as_str()).collect(),
            };
            let mut listed = Vec::new();
            for ns in namespaces {
                listed.extend(st.store.list(&st.keys.services_ns_prefix(ns)).await?.kvs);
            }
            let mut pruned: Vec<(ServiceRef, i64)> = Vec::new();
            for kv in listed {
                let Some(Key::Service(r)) = st.keys.parse(&kv.key) else {
                    continue;
                };
                if seen.contains(&r) {
                    continue;
                }
                if parse_stored(&kv).is_ok_and(|s| sel.matches(&s.metadata.labels)) {
                    txn.compares.push(Compare::ModRevision {
                        key: kv.key.clone(),
                        revision: kv.mod_revision,
                    });
                    txn.ops.push(TxnOp::Delete {
                        key: kv.key.clone(),
                    });
                    pruned.push((r, kv.mod_revision));
                }
            }
            pruned.sort();
            results.extend(pruned.into_iter().map(|(r, rev)| (r, Action::Pruned, rev)));
        }
        let written = if q.dry_run || txn.ops.is_empty() {
            None
        } else {
            if txn.compares.len() + txn.ops.len() > st.store.max_txn_ops() {
                return Err(ApiError::BadRequest(format!(
                    "this apply touches {} services; the {} store applies at most {} operations at once: split it",
                    results.len(),
                    st.store.backend(),
                    st.store.max_txn_ops() / 2
                )));
            }
            let res = st.store.txn(txn).await?;
            if !res.succeeded {
                tracing::debug!(attempt, "apply raced a concurrent write; retrying");
                continue;
            }
            Some(res.revision)
        };
        let results = results
            .into_iter()
            .map(|(r, action, rev)| {
                let revision = match (action, written) {
                    (Action::Unchanged, _) => rev,
                    (Action::Pruned, _) => 0,
                    (_, Some(w)) => w,
                    (_, None) => rev,
                };
                WriteResult {
                    namespace: r.namespace,
                    name: r.name,
                    action,
                    revision,
                }
            })
            .collect::<Vec<_>>();
        for r in &results {
            tracing::info!(service = %format!("{}/{}", r.namespace, r.name), action = %r.action, dry_run = q.dry_run, "apply");
        }
        return Ok(Json(ApplyResponse {
            dry_run: q.dry_run,
            results,
        }));
    }
    Err(ApiError::Conflict {
        what: "apply (services kept changing concurrently)".into(),
        expected: 0,
        current: 0,
    })
}
