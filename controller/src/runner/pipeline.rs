//! Pipelined placement. Every plan is decided once, under the term's placement lock, against
//! the cache; the writes of a plan that places tasks are staged in the cache at once
//! ([`Cache::stage`]), so the next decision already counts the resources and host ports they
//! take. The lock is released before the commit, so as many placement transactions are in
//! flight as workers are placing, and the placement rate no longer is one transaction's
//! latency per service.
//!
//! When the commit is answered, its writes become the cache's truth ([`Cache::committed`]),
//! and the watch bringing them again changes nothing (the cache applies by key and
//! revision). When it fails, under the lock again, the keys go back to the store's truth as
//! the watch last brought it ([`Cache::unstage`]) and the service is queued again (with
//! backoff). A commit that went unanswered may still land: it marks the term unsure before
//! the rollback, so the next decision first moves the fence and waits for the watch to
//! reach it ([`Term::settle`], also run under the lock) — a decision never rests on the
//! rolled-back view of a write that could still land.
//!
//! [`Cache::stage`]: super::cache::Cache::stage
//! [`Cache::committed`]: super::cache::Cache::committed
//! [`Cache::unstage`]: super::cache::Cache::unstage

use std::sync::atomic::Ordering;

use shoal_core::manifest::ServiceRef;
use shoal_core::model::Timestamp;
use shoal_store::TxnOp;
use tokio::sync::MutexGuard;

use super::cache::Written;
use super::commit::{CommitError, commit};
use super::{ControllerError, Term};
use crate::reconcile::{Plan, ReconcileInput, reconcile};

/// A key shown with a write whose commit is in flight (the cache shows the write; its bytes
/// are not kept).
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    /// The store's value, as the watch last brought it.
    pub(crate) truth: Option<Vec<u8>>,
}

impl Term {
    /// Decides `s` against the cache now (under the placement lock).
    pub(super) fn decide(&self, s: &ServiceRef, seed: u64) -> (ReconcileInput, Plan) {
        let input = self.cache().input(s, Timestamp::now(), &self.grace, seed);
        let plan = reconcile(&input);
        (input, plan)
    }

    /// Places `s` by `plan`, decided under `placing`: stages the plan's writes, releases the
    /// lock and commits them. Returns the plan committed.
    pub(super) async fn place(
        &self,
        s: &ServiceRef,
        placing: MutexGuard<'_, ()>,
        input: ReconcileInput,
        plan: Plan,
    ) -> Result<Plan, ControllerError> {
        let (plan, ops) = self.writes(s, input, plan);
        if ops.is_empty() {
            return Ok(plan);
        }
        let written = Written::of(s, &plan);
        self.cache().stage(&ops, &written);
        drop(placing);
        let res = commit(self.store.as_ref(), &self.fence, &ops, |batch, rev| {
            self.cache().committed(batch, rev, &written);
        })
        .await;
        drop(written);
        match res {
            Ok(()) => Ok(plan),
            Err(e) => {
                self.roll_back(&ops, &e).await;
                Err(e.into())
            }
        }
    }

    /// After a failed commit: the staged keys not committed show the store's truth again.
    async fn roll_back(&self, ops: &[TxnOp], e: &CommitError) {
        let _placing = self.placement.lock().await;
        if matches!(e, CommitError::Store(_)) {
            self.unsure.store(true, Ordering::SeqCst);
        }
        let mut touched = self.cache().unstage(ops);
        // Resources came free: services that did not fit may fit now.
        touched.nodes_changed = true;
        self.enqueue_touched(touched);
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
