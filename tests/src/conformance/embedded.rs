//! The conformance harness for the embedded (redb) backend in a temporary data directory.

use std::sync::Arc;

use futures::FutureExt;
use shoal_store::{EmbeddedStore, Revision, Store, StoreError};

use super::{Compactor, Harness};

/// Runs the suite on the embedded backend in a temporary data directory.
pub struct EmbeddedHarness {
    dir: tempfile::TempDir,
    store: Option<Arc<EmbeddedStore>>,
}

impl EmbeddedHarness {
    /// Opens a fresh embedded store.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        Self {
            dir,
            store: Some(Arc::new(store)),
        }
    }

    /// The embedded store itself (for its extra methods).
    pub fn embedded(&self) -> Arc<EmbeddedStore> {
        Arc::clone(self.store.as_ref().expect("store is open"))
    }
}

#[async_trait::async_trait]
impl Harness for EmbeddedHarness {
    fn store(&self) -> Arc<dyn Store> {
        self.embedded()
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.embedded().compact(revision).await
    }

    fn compactor(&self) -> Compactor {
        let store = self.embedded();
        Arc::new(move |revision| {
            let store = Arc::clone(&store);
            async move { store.compact(revision).await }.boxed()
        })
    }

    async fn restart(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        // Every handle must go for the process to release the database file.
        drop(store);
        self.store = None;
        let reopened = EmbeddedStore::open(self.dir.path()).await.expect("reopen");
        self.store = Some(Arc::new(reopened));
        self.store()
    }

    fn watches_survive_restart(&self) -> bool {
        false
    }
}
