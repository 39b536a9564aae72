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

async fn placement_txn(client: &mut Client, key: String) -> Result<(), etcd_client::Error> {
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value(), None)]);
    client.txn(txn).await.map(|_| ())
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
    let counter = Arc::new(AtomicU64::new(0));

    // L_seq
    let mut c = client.clone();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < per_figure {
        placement_txn(&mut c, format!("{prefix}/seq/{n:08}")).await?;
        n += 1;
    }
    let l_seq = n as f64 / start.elapsed().as_secs_f64();

    // L_par
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..in_flight {
        let mut c = client.clone();
        let counter = counter.clone();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < per_figure {
                placement_txn(&mut c, format!("{prefix}/par/{w:03}/{i:08}")).await?;
                counter.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for h in handles {
        h.await.expect("calibration worker panicked")?;
    }
    let l_par = counter.swap(0, Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();

    // L_batch
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..in_flight {
        let mut c = client.clone();
        let counter = counter.clone();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < per_figure {
                let mut cmps = Vec::with_capacity(batch_ops);
                let mut ops = Vec::with_capacity(batch_ops);
                for _ in 0..batch_ops {
                    let key = format!("{prefix}/batch/{w:03}/{i:08}");
                    cmps.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                    ops.push(TxnOp::put(key, value(), None));
                    i += 1;
                }
                c.txn(Txn::new().when(cmps).and_then(ops)).await?;
                counter.fetch_add((batch_ops) as u64, Ordering::Relaxed);
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for h in handles {
        h.await.expect("calibration worker panicked")?;
    }
    let l_batch = counter.swap(0, Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();

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
