//! [`ConsulHarness`]: runs the store conformance suite on a [`ConsulStore`] talking to a
//! fresh [`ConsulFake`].

use std::sync::Arc;

use shoal_store::consul::{ConsulClient, ConsulConfig, ConsulStore, ConsulStoreOptions};
use shoal_store::{Revision, Store, StoreError};

use super::{ConsulFake, FakeOptions};
use crate::conformance::{Compactor, Harness};

/// A fake Consul (timers at a tenth of real time, so 10 s sessions expire in 1–2 s; values
/// up to 2 MiB, as an operator raising `kv_max_value_size` would allow) and a store on it.
#[derive(Debug)]
pub struct ConsulHarness {
    /// The fake server.
    pub fake: ConsulFake,
    store: Arc<ConsulStore>,
}

impl ConsulHarness {
    /// Starts a fresh fake and connects a store to it.
    pub async fn new() -> Self {
        let options = FakeOptions {
            time_scale: 0.1,
            kv_max_value_size: 2 * 1024 * 1024,
            ..FakeOptions::default()
        };
        let fake = ConsulFake::start_with(options).await;
        let client = ConsulClient::new(ConsulConfig::new(fake.http_url())).expect("client");
        let store = Arc::new(ConsulStore::new(client, ConsulStoreOptions::default()));
        Self { fake, store }
    }

    /// The Consul store itself.
    pub fn consul(&self) -> Arc<ConsulStore> {
        Arc::clone(&self.store)
    }
}

#[async_trait::async_trait]
impl Harness for ConsulHarness {
    fn store(&self) -> Arc<dyn Store> {
        self.consul()
    }

    /// Consul keeps no history to compact: watches from old revisions already report
    /// [`StoreError::Compacted`] whenever a delete may have been missed.
    async fn compact(&self, _revision: Revision) -> Result<(), StoreError> {
        Ok(())
    }

    fn compactor(&self) -> Compactor {
        Arc::new(|_| Box::pin(async { Ok(()) }))
    }

    async fn restart(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        self.fake.restart().await;
        store
    }

    fn watches_survive_restart(&self) -> bool {
        true
    }
}
