//! Turning a plan into store writes: batched transactions of at most `max_txn_ops` ops,
//! each carrying the leader fence. Deleting a task deletes its assignment only: the status
//! under `taskstatus/` belongs to the node's agent, which deletes it.

use std::collections::BTreeMap;

use shoal_core::Keys;
use shoal_core::model::{self, DesiredState, Task, TaskEncoder};
use shoal_store::{Revision, Store, StoreError, Txn, TxnOp, split_ops};

use super::leader::Fence;
use crate::reconcile::{EndpointsChange, Plan, ReconcileInput};

/// Errors committing a plan.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The fence compare failed: another controller leads now.
    #[error("write refused: this controller is no longer the leader")]
    Fenced,
    /// The fence moved (after an unanswered write) while this write was in flight: it was
    /// refused and nothing was written; it is tried again under the new fence.
    #[error("write refused: the fence moved while it was in flight; retrying")]
    FenceMoved,
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
    let mut ops = Vec::with_capacity(plan.task_ops() + 2);
    // First: a task leaves the endpoints before (or with) the write that stops it.
    match &plan.endpoints {
        EndpointsChange::Put(e) => ops.push(TxnOp::Put {
            key: keys.endpoints(&input.service_ref),
            value: model::encode(e.as_ref()),
            lease: None,
        }),
        EndpointsChange::Delete => ops.push(TxnOp::Delete {
            key: keys.endpoints(&input.service_ref),
        }),
        EndpointsChange::Keep => {}
    }
    let mut encoder = TaskEncoder::default();
    let mut put = |t: &Task| TxnOp::Put {
        key: keys.task(&t.node_id, &t.id),
        value: encoder.encode(t),
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
    ops.extend(plan.creates.iter().map(&mut put));
    // The task's status is its agent's to delete once it sees the assignment gone (single
    // writer); only a node gone for good has its statuses removed by the controller.
    for r in &plan.deletes {
        ops.push(TxnOp::Delete {
            key: keys.task(&r.node, &r.task),
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

/// Why a plan cannot be written: one of its task records alone is larger than a transaction
/// may be (a service with a huge env or command), said in a way its author can act on.
pub fn oversized_task(ops: &[TxnOp], max_bytes: usize) -> Option<String> {
    let op = ops.iter().find(|op| op.bytes() > max_bytes)?;
    let key = match op {
        TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
    };
    let kib = |b: usize| b.div_ceil(1024);
    Some(format!(
        "a task of this service is {} KiB once written ({key}), more than the {} KiB one store \
         transaction may carry: make its env, command or other settings smaller",
        kib(op.bytes()),
        kib(max_bytes)
    ))
}

/// Moves the fence after a write whose outcome is unknown (the store did not answer): the
/// leader record is rewritten unchanged, so that write — which may still be applied later,
/// e.g. a request stuck on a connection to an unreachable member that arrives when the
/// network heals — now fails its compare instead of landing after the leader acted as if it
/// had failed. Returns the new fence revision.
pub async fn refence(store: &dyn Store, fence: &Fence) -> Result<Revision, CommitError> {
    let res = store.txn(fence.rewrite()).await?;
    if !res.succeeded {
        return Err(CommitError::Fenced);
    }
    fence.moved_to(res.revision);
    Ok(res.revision)
}

/// Writes `ops` in fenced transactions of at most `store.max_txn_ops()` ops (one less for
/// the fence) and `store.max_txn_bytes()` bytes. Calls `applied(ops, revision)` after each
/// committed batch.
pub async fn commit(
    store: &dyn Store,
    fence: &Fence,
    ops: &[TxnOp],
    mut applied: impl FnMut(&[TxnOp], Revision),
) -> Result<(), CommitError> {
    let max_ops = store.max_txn_ops().saturating_sub(1).max(1);
    let max_bytes = store.max_txn_bytes().saturating_sub(fence.key.len());
    for batch in split_ops(ops, max_ops, max_bytes) {
        let fenced_at = fence.revision();
        let res = store
            .txn(Txn {
                compares: vec![fence.compare()],
                ops: batch.to_vec(),
            })
            .await?;
        if !res.succeeded {
            return Err(refused(store, fence, fenced_at).await);
        }
        applied(batch, res.revision);
    }
    Ok(())
}

/// Why a write carrying the fence at `fenced_at` was refused: the fence moved (this leader
/// rewrote its own record meanwhile, perhaps not done noting the move yet), or another
/// controller leads.
async fn refused(store: &dyn Store, fence: &Fence, fenced_at: Revision) -> CommitError {
    if fence.revision() != fenced_at {
        return CommitError::FenceMoved;
    }
    match store.get(&fence.key).await {
        Ok(Some(kv)) if kv.mod_revision > fenced_at && fence.is_own_record(&kv.value) => {
            CommitError::FenceMoved
        }
        Ok(_) => CommitError::Fenced,
        Err(e) => CommitError::Store(e),
    }
}
