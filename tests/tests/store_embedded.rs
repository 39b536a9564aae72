//! The store conformance suite on the embedded (redb) backend.

use shoal_tests::conformance::{self, EmbeddedHarness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_delete() {
    let mut h = EmbeddedHarness::new().await;
    conformance::get_put_delete(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ordering_and_revision() {
    let mut h = EmbeddedHarness::new().await;
    conformance::list_ordering_and_revision(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_conflict() {
    let mut h = EmbeddedHarness::new().await;
    conformance::cas_conflict(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_exists() {
    let mut h = EmbeddedHarness::new().await;
    conformance::compare_exists(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_atomicity() {
    let mut h = EmbeddedHarness::new().await;
    conformance::txn_atomicity(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_ops_rejected() {
    let mut h = EmbeddedHarness::new().await;
    conformance::too_many_ops_rejected(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ordering_and_resume() {
    let mut h = EmbeddedHarness::new().await;
    conformance::watch_ordering_and_resume(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_yields_compacted() {
    let mut h = EmbeddedHarness::new().await;
    conformance::compaction_yields_compacted(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_keys() {
    let mut h = EmbeddedHarness::new().await;
    conformance::lease_expiry_deletes_keys(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_keeps_keys() {
    let mut h = EmbeddedHarness::new().await;
    conformance::keep_alive_keeps_keys(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expired_lease() {
    let mut h = EmbeddedHarness::new().await;
    conformance::keep_alive_expired_lease(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_writers() {
    let mut h = EmbeddedHarness::new().await;
    conformance::concurrent_cas_writers(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values() {
    let mut h = EmbeddedHarness::new().await;
    conformance::large_values(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_restart() {
    let mut h = EmbeddedHarness::new().await;
    conformance::watch_survives_restart(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_init_apply_delete() {
    let mut h = EmbeddedHarness::new().await;
    conformance::reflector_init_apply_delete(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_relists_after_compaction() {
    let mut h = EmbeddedHarness::new().await;
    conformance::reflector_relists_after_compaction(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_batches_reach_revisions() {
    let mut h = EmbeddedHarness::new().await;
    conformance::reflector_batches_reach_revisions(&mut h).await;
}
