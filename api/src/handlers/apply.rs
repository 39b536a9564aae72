//! `POST /v1/apply`: write many manifests at once (kubectl apply), optionally pruning the
//! services that carry a selector but are no longer in the set — only in the namespaces the
//! apply is about (its `namespace`, else the ones its documents name), as `kubectl apply
//! --prune` does.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Query, State};
use bytes::Bytes;
use serde::Deserialize;
use shoal_core::{Key, ParsedService, ServiceRef};
use shoal_store::{Compare, Txn, TxnOp};
use utoipa::IntoParams;

use super::{body_text, parse_stored};
use crate::ApiState;
use crate::auth::Principal;
use crate::cas::{self, Attempt};
use crate::error::ApiError;
use crate::manifest::{Selector, parse_body, place_in_namespace};
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
    body: Bytes,
) -> Result<Json<ApplyResponse>, ApiError> {
    let text = body_text(&body)?;
    let mut docs = parse_body(text, "body").map_err(ApiError::InvalidManifest)?;
    if let Some(ns) = &q.namespace {
        for d in &mut docs {
            place_in_namespace(d, ns, "body").map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
    }
    let mut seen = BTreeSet::new();
    for d in &docs {
        let id = d.service.id();
        principal.require_write(&id.namespace)?;
        if !seen.insert(id.clone()) {
            return Err(ApiError::BadRequest(format!(
                "service {id} appears twice in the body (line {})",
                d.line
            )));
        }
    }
    super::check_ingress_ports(&st, &docs).await?;
    let prune = prune_selector(&q, &principal)?;
    // Read, decide, then write everything in one transaction that compares every revision
    // read; if anything moved in between, decide again.
    let plan = Plan {
        docs: &docs,
        seen: &seen,
        prune: prune.as_ref(),
        namespace: q.namespace.as_deref(),
    };
    let (st, plan, dry_run) = (&st, &plan, q.dry_run);
    let response = cas::retry(&*st.store, "apply", cas::ATTEMPTS, |_| async move {
        let (txn, results) = plan.decide(st).await?;
        let written = if dry_run || txn.ops.is_empty() {
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
            let compares = txn.compares.clone();
            let res = st.store.txn(txn).await?;
            if !res.succeeded {
                let (key, expected) = first_moved(st, &compares).await?;
                return Ok(Attempt::Raced { key, expected });
            }
            Some(res.revision)
        };
        Ok(Attempt::Done(respond(results, written, dry_run)))
    })
    .await?;
    Ok(Json(response))
}

/// The selector of `prune`, required with it; pruning in the apply's namespace needs the
/// right to write there.
fn prune_selector(q: &ApplyQuery, principal: &Principal) -> Result<Option<Selector>, ApiError> {
    if !q.prune {
        return Ok(None);
    }
    let sel = q.selector.as_deref().unwrap_or("").trim();
    if sel.is_empty() {
        return Err(ApiError::BadRequest(
            "prune needs a label selector (selector=k=v) to bound what it deletes".into(),
        ));
    }
    if let Some(ns) = &q.namespace {
        principal.require_write(ns)?;
    }
    Selector::parse(sel)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// What an apply writes: its documents, and what it prunes.
struct Plan<'a> {
    docs: &'a [ParsedService],
    seen: &'a BTreeSet<ServiceRef>,
    prune: Option<&'a Selector>,
    namespace: Option<&'a str>,
}

/// A service an apply touches: what happens to it, and the revision it was read at.
type Decided = (ServiceRef, Action, i64);

impl Plan<'_> {
    /// Reads every service the apply touches and decides: the transaction (comparing every
    /// revision read) and what happens to each service.
    async fn decide(&self, st: &ApiState) -> Result<(Txn, Vec<Decided>), ApiError> {
        let mut txn = Txn::default();
        let mut results = Vec::new();
        for d in self.docs {
            let r = d.service.id();
            let key = st.keys.service(&r);
            let current = st.store.get(&key).await?;
            let rev = current.as_ref().map_or(0, |kv| kv.mod_revision);
            let action = match &current {
                None => Action::Created,
                Some(kv) if parse_stored(&r, kv).is_ok_and(|s| s == d.service) => Action::Unchanged,
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
        if let Some(sel) = self.prune {
            results.extend(self.prune(st, sel, &mut txn).await?);
        }
        Ok((txn, results))
    }

    /// Adds to `txn` the deletion of every service matching `sel` and not in the apply (and of
    /// its `shoal job run` request), in the namespaces the apply is about (as kubectl: never
    /// the whole cluster).
    async fn prune(
        &self,
        st: &ApiState,
        sel: &Selector,
        txn: &mut Txn,
    ) -> Result<Vec<Decided>, ApiError> {
        let namespaces: BTreeSet<&str> = match self.namespace {
            Some(ns) => [ns].into(),
            None => self.seen.iter().map(|r| r.namespace.as_str()).collect(),
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
            if self.seen.contains(&r) {
                continue;
            }
            if parse_stored(&r, &kv).is_ok_and(|s| sel.matches(&s.metadata.labels)) {
                txn.compares.push(Compare::ModRevision {
                    key: kv.key.clone(),
                    revision: kv.mod_revision,
                });
                txn.ops.push(TxnOp::Delete {
                    key: kv.key.clone(),
                });
                // A job's last `shoal job run` request goes with it, as with `shoal delete`.
                txn.ops.push(TxnOp::Delete {
                    key: st.keys.job_run(&r),
                });
                pruned.push((r, kv.mod_revision));
            }
        }
        pruned.sort();
        Ok(pruned
            .into_iter()
            .map(|(r, rev)| (r, Action::Pruned, rev))
            .collect())
    }
}

/// The first compared key whose revision moved (the one a failed transaction lost on).
async fn first_moved(st: &ApiState, compares: &[Compare]) -> Result<(String, i64), ApiError> {
    let mut first = None;
    for c in compares {
        if let Compare::ModRevision { key, revision } = c {
            first.get_or_insert_with(|| (key.clone(), *revision));
            let now = st.store.get(key).await?.map_or(0, |kv| kv.mod_revision);
            if now != *revision {
                return Ok((key.clone(), *revision));
            }
        }
    }
    Ok(first.unwrap_or_default())
}

/// The answer of an apply: what happened to each service, with the revision written (or
/// read, when unchanged or not written).
fn respond(results: Vec<Decided>, written: Option<i64>, dry_run: bool) -> ApplyResponse {
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
        tracing::info!(service = %format!("{}/{}", r.namespace, r.name), action = %r.action, dry_run, "apply");
    }
    ApplyResponse { dry_run, results }
}
