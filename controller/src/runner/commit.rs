//! Turning a plan into store writes: batched transactions of at most `max_txn_ops` ops,
//! each carrying the leader fence.

use std::collections::BTreeMap;

use shoal_core::Keys;
use shoal_core::model::{self, DesiredState, Task};
use shoal_store::{Revision, Store, StoreError, Txn, TxnOp};

use super::leader::Fence;
use crate::reconcile::{Plan, ReconcileInput};

/// Errors committing a plan.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The fence compare failed: another controller leads now.
    #[error("write refused: this controller is no longer the leader")]
    Fenced,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The writes of a plan, in order: stops and orphans, creates, deletes, then the status
/// (only when it changed).
pub fn plan_ops(keys: &Keys, input: &ReconcileInput, plan: &Plan) -> Vec<TxnOp> {
    let by_id: BTreeMap<&str, &Task> = input
        .tasks
        .iter()
        .map(|e| (e.task.id.as_str(), &e.task))
        .collect();
    let mut ops = Vec::with_capacity(plan.task_ops() + 1);
    let put = |t: &Task| TxnOp::Put {
        key: keys.task(&t.node_id, &t.id),
        value: model::encode(t),
        lease: None,
    };
    for r in &plan.stops {
        if let Some(t) = by_id.get(r.task.as_str()) {
            let mut t = (*t).clone();
            t.desired_state = DesiredState::Shutdown;
            ops.push(put(&t));
        }
    }
    for r in &plan.orphans {
        if let Some(t) = by_id.get(r.task.as_str()) {
            let mut t = (*t).clone();
            t.desired_state = DesiredState::Shutdown;
            t.orphaned = true;
            ops.push(put(&t));
        }
    }
    ops.extend(plan.creates.iter().map(put));
    for r in &plan.deletes {
        ops.push(TxnOp::Delete {
            key: keys.task(&r.node, &r.task),
        });
        ops.push(TxnOp::Delete {
            key: keys.task_status(&r.node, &r.task),
        });
    }
    if let Some(st) = &plan.status
        && input.previous.as_ref() != Some(st)
    {
        ops.push(TxnOp::Put {
            key: keys.service_status(&input.service_ref),
            value: model::encode(st),
            lease: None,
        });
    }
    if plan.delete_status && input.previous.is_some() {
        ops.push(TxnOp::Delete {
            key: keys.service_status(&input.service_ref),
        });
    }
    ops
}

/// Writes `ops` in fenced transactions of at most `store.max_txn_ops()` entries, the fence
/// compare included (Consul counts checks and ops together). Calls `applied(ops, revision)`
/// after each committed batch.
pub async fn commit(
    store: &dyn Store,
    fence: &Fence,
    ops: Vec<TxnOp>,
    mut applied: impl FnMut(&[TxnOp], Revision),
) -> Result<(), CommitError> {
    let max = store.max_txn_ops().saturating_sub(1).max(1);
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let batch: Vec<TxnOp> = ops.by_ref().take(max).collect();
        let res = store
            .txn(Txn {
                compares: vec![fence.compare()],
                ops: batch.clone(),
            })
            .await?;
        if !res.succeeded {
            return Err(CommitError::Fenced);
        }
        applied(&batch, res.revision);
    }
    Ok(())
}
