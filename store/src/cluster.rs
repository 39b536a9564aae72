//! The cluster id: a random id written once under `cluster` by whichever component meets an
//! empty store first (the controller, the API, or an agent allowed to), and never changed.
//! Agents label what they start with it, so a node's containers are recognised as this
//! cluster's — and those of another cluster (a wrong `--prefix`, a restored snapshot, a
//! mistyped store URL) are never removed.

use shoal_core::Keys;

use crate::{Store, StoreError};

/// The cluster id in the store, if one was written.
pub async fn cluster_id(store: &dyn Store, keys: &Keys) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(&keys.cluster())
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).trim().to_string())
        .filter(|id| !id.is_empty()))
}

/// The cluster id, written first when the store has none: `proposed`, or a new random id.
/// Create-only, so of two components racing on an empty store one id wins for both.
pub async fn ensure_cluster_id(
    store: &dyn Store,
    keys: &Keys,
    proposed: Option<&str>,
) -> Result<String, StoreError> {
    loop {
        if let Some(id) = cluster_id(store, keys).await? {
            return Ok(id);
        }
        let id = proposed
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if store
            .compare_and_put(&keys.cluster(), id.clone().into_bytes(), 0, None)
            .await?
            .is_some()
        {
            tracing::info!(cluster = %id, "cluster id created");
            return Ok(id);
        }
    }
}
