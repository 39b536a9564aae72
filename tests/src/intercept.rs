//! A store that forwards every call to another one, except the calls a test intercepts to
//! inject a fault (a lost answer, a hung keep-alive, a panicking watch).
//!
//! A test implements [`Intercept`] for its fault, overriding only the calls it changes (each
//! gets the inner store to delegate to) or [`Intercept::admit`] to fail every call alike (a
//! store that is down), and wraps a store in [`Intercepted`]:
//!
//! ```
//! use std::sync::Arc;
//!
//! use shoal_store::{Revision, Store, StoreError, WatchStream};
//! use shoal_tests::intercept::{Intercept, Intercepted};
//!
//! struct PanicOnWatch;
//!
//! #[async_trait::async_trait]
//! impl Intercept for PanicOnWatch {
//!     async fn watch(
//!         &self,
//!         _: &dyn Store,
//!         _: &str,
//!         _: Revision,
//!     ) -> Result<WatchStream, StoreError> {
//!         panic!("injected watcher fault")
//!     }
//! }
//!
//! fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
//!     Arc::new(Intercepted::new(inner, PanicOnWatch))
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use shoal_store::{
    KeyValue, LeaseId, LeaseLeft, ListResult, Revision, Store, StoreError, Txn, TxnResult,
    WatchStream,
};

/// The calls of a [`Store`] a test may intercept; each one delegates to `inner` unless
/// overridden, once [`Intercept::admit`] let it through.
#[async_trait::async_trait]
pub trait Intercept: Send + Sync + 'static {
    /// Checked before each call that is not overridden: an error is that call's answer.
    fn admit(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Reads one key.
    async fn get(&self, inner: &dyn Store, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.admit()?;
        inner.get(key).await
    }

    /// Lists every key under `prefix`.
    async fn list(&self, inner: &dyn Store, prefix: &str) -> Result<ListResult, StoreError> {
        self.admit()?;
        inner.list(prefix).await
    }

    /// Writes one key.
    async fn put(
        &self,
        inner: &dyn Store,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.admit()?;
        inner.put(key, value, lease).await
    }

    /// Deletes one key.
    async fn delete(&self, inner: &dyn Store, key: &str) -> Result<bool, StoreError> {
        self.admit()?;
        inner.delete(key).await
    }

    /// Applies a transaction (also what `compare_and_put` and `compare_and_delete` send).
    async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnResult, StoreError> {
        self.admit()?;
        inner.txn(txn).await
    }

    /// Watches every key under `prefix` from `from`.
    async fn watch(
        &self,
        inner: &dyn Store,
        prefix: &str,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.admit()?;
        inner.watch(prefix, from).await
    }

    /// Grants a lease.
    async fn grant_lease(&self, inner: &dyn Store, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.admit()?;
        inner.grant_lease(ttl).await
    }

    /// Refreshes a lease once.
    async fn keep_alive(&self, inner: &dyn Store, lease: LeaseId) -> Result<(), StoreError> {
        self.admit()?;
        inner.keep_alive(lease).await
    }

    /// Revokes a lease.
    async fn revoke_lease(&self, inner: &dyn Store, lease: LeaseId) -> Result<(), StoreError> {
        self.admit()?;
        inner.revoke_lease(lease).await
    }

    /// Compacts history up to `revision`.
    async fn compact(&self, inner: &dyn Store, revision: Revision) -> Result<(), StoreError> {
        self.admit()?;
        inner.compact(revision).await
    }

    /// Reports a lease's time left.
    async fn lease_left(
        &self,
        inner: &dyn Store,
        lease: LeaseId,
    ) -> Result<Option<LeaseLeft>, StoreError> {
        self.admit()?;
        inner.lease_left(lease).await
    }
}

/// A store whose calls go through `I` to an inner store.
pub struct Intercepted<I> {
    inner: Arc<dyn Store>,
    intercept: I,
}

impl<I: Intercept> Intercepted<I> {
    /// Wraps `inner`: calls go through `intercept`.
    pub fn new(inner: Arc<dyn Store>, intercept: I) -> Self {
        Self { inner, intercept }
    }

    /// The wrapped store, reached without interception.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The interception (for the state a test inspects, such as a call count).
    pub fn intercept(&self) -> &I {
        &self.intercept
    }
}

#[async_trait::async_trait]
impl<I: Intercept> Store for Intercepted<I> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
    fn max_txn_bytes(&self) -> usize {
        self.inner.max_txn_bytes()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.intercept.get(self.inner.as_ref(), key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        self.intercept.list(self.inner.as_ref(), prefix).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.intercept
            .put(self.inner.as_ref(), key, value, lease)
            .await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.intercept.delete(self.inner.as_ref(), key).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.intercept.txn(self.inner.as_ref(), txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.intercept
            .watch(self.inner.as_ref(), prefix, from)
            .await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.intercept.grant_lease(self.inner.as_ref(), ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.intercept.keep_alive(self.inner.as_ref(), lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.intercept
            .revoke_lease(self.inner.as_ref(), lease)
            .await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.intercept.compact(self.inner.as_ref(), revision).await
    }
    async fn lease_left(&self, lease: LeaseId) -> Result<Option<LeaseLeft>, StoreError> {
        self.intercept.lease_left(self.inner.as_ref(), lease).await
    }
}
