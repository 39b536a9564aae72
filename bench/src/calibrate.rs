//! Calibration: what etcd itself sustains on this machine, with the same client and the same
//! transaction shape the controller uses for a placement (compare + put of ~300 B).
//!
//! - `L_seq`: one transaction in flight, transactions per second;
//! - `L_par`: `in_flight` transactions in flight (the controller's maximum), per second;
//! - `L_batch`: transactions of `ops` puts each, `in_flight` at once, keys per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::Serialize;

/// Calibration figures of one run.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Calibration {
    /// One placement-shaped txn in flight: txns/s.
    pub l_seq: f64,
    /// `in_flight` placement-shaped txns in flight: txns/s.
    pub l_par: f64,
    /// Batched txns at the op limit: keys/s.
    pub l_batch: f64,
    /// In-flight count used for `l_par` and `l_batch`.
    pub in_flight: usize,
    /// Ops per batched txn.
    pub batch_ops: usize,
}

fn value() -> Vec<u8> {
    vec![b'x'; 300]
}

/// Runs `workers` writers for `per_figure`, each committing transactions of `batch`
/// placement-shaped writes (create-if-absent compare + ~300 B put per key); returns keys/s,
/// which is transactions/s when `batch` is 1.
async fn keys_per_second(
    client: &Client,
    prefix: &str,
    workers: usize,
    batch: usize,
    per_figure: Duration,
) -> Result<f64, etcd_client::Error> {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let mut c = client.clone();
        let counter = counter.clone();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < per_figure {
                let mut cmps = Vec::with_capacity(batch);
                let mut ops = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let key = format!("{prefix}/{w:03}/{i:08}");
                    cmps.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                    ops.push(TxnOp::put(key, value(), None));
                    i += 1;
                }
                c.txn(Txn::new().when(cmps).and_then(ops)).await?;
                counter.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for h in handles {
        h.await.expect("calibration worker panicked")?;
    }
    Ok(counter.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Measures `L_seq`, `L_par` and `L_batch` for about `per_figure` each, under `prefix`.
/// Keys written are deleted afterwards.
pub async fn calibrate(
    endpoint: &str,
    prefix: &str,
    in_flight: usize,
    batch_ops: usize,
    per_figure: Duration,
) -> Result<Calibration, etcd_client::Error> {
    let client = Client::connect([endpoint], None).await?;
    let l_seq = keys_per_second(&client, &format!("{prefix}/seq"), 1, 1, per_figure).await?;
    let l_par =
        keys_per_second(&client, &format!("{prefix}/par"), in_flight, 1, per_figure).await?;
    let l_batch = keys_per_second(
        &client,
        &format!("{prefix}/batch"),
        in_flight,
        batch_ops,
        per_figure,
    )
    .await?;

    let mut c = client.clone();
    c.delete(
        prefix,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await?;
    Ok(Calibration {
        l_seq,
        l_par,
        l_batch,
        in_flight,
        batch_ops,
    })
}
