//! etcd between and at the start of scenarios: its history is compacted to the current
//! revision and its database defragmented, so that one scenario's garbage (or the
//! calibration's mass write and delete) does not slow the next; then the state each scenario
//! starts from (etcd's DB size and RSS, the controller's RSS) is recorded with its figures.

use std::time::Instant;

use etcd_client::{Client, CompactionOptions};
use serde_json::json;

use super::{Bench, ScenarioError};
use crate::cluster::proc_stats;

/// What compacting and defragmenting did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cleaned {
    /// Revision compacted to (the current one).
    pub revision: i64,
    /// DB size before, in bytes.
    pub db_before: i64,
    /// DB size after, in bytes.
    pub db_after: i64,
    /// How long compaction and defragmentation took, in seconds.
    pub seconds: f64,
}

/// etcd's database size and current revision.
pub async fn etcd_size(client: &mut Client) -> Result<(i64, i64), etcd_client::Error> {
    let st = client.status().await?;
    let rev = st.header().map_or(0, |h| h.revision());
    Ok((st.db_size(), rev))
}

/// Compacts etcd's history to the current revision (waiting until it is physically applied)
/// and defragments the database. A revision the controller compacted already is not an
/// error.
pub async fn compact_and_defragment(client: &mut Client) -> Result<Cleaned, etcd_client::Error> {
    let t0 = Instant::now();
    let (db_before, revision) = etcd_size(client).await?;
    if let Err(e) = client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        && !e.to_string().contains("compacted")
    {
        return Err(e);
    }
    client.defragment().await?;
    let (db_after, _) = etcd_size(client).await?;
    Ok(Cleaned {
        revision,
        db_before,
        db_after,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl Bench<'_> {
    /// Compacts and defragments etcd, then records the state `scenario` starts from:
    /// etcd's DB size and RSS, and the controller's RSS when `controller` (a pid) is given.
    pub async fn scenario_start(
        &mut self,
        scenario: &str,
        controller: Option<u32>,
    ) -> Result<(), ScenarioError> {
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        let c = compact_and_defragment(&mut client).await?;
        let extra = json!({
            "compactedToRevision": c.revision, "dbSizeBeforeDefragment": c.db_before,
            "compactAndDefragmentS": c.seconds,
        });
        self.report.figure(
            scenario,
            "etcd_db_size_at_start",
            c.db_after as f64,
            "bytes",
            extra,
        );
        self.report.figure(
            scenario,
            "etcd_rss_at_start",
            proc_stats(self.etcd_pid).rss as f64,
            "bytes",
            json!({}),
        );
        if let Some(pid) = controller {
            self.report.figure(
                scenario,
                "controller_rss_at_start",
                proc_stats(pid).rss as f64,
                "bytes",
                json!({}),
            );
        }
        Ok(())
    }
}
