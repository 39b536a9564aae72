//! The benchmark scenarios (S1 bulk placement, S2 burst, S3 churn, S4 node failure,
//! S5 controller failover) and the footprint figures, each reported through [`Report`].

mod cpu_spent;
pub mod failover;
pub mod observer;
pub mod repeat;
pub mod s6_docker;
pub mod store_state;

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, Txn, TxnOp};
use serde_json::json;

use crate::calibrate::Calibration;
use crate::cluster::{Cluster, Proc};
use crate::report::Report;
use cpu_spent::{CpuCount, Roles};
use observer::{Observer, percentile};
use store_state::etcd_size;

/// Errors of a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// etcd failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A process failed to start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// Something a scenario needs (a process, a file, docker) failed.
    #[error("{0}")]
    Setup(String),
    /// The cluster did not reach a state in the allotted time.
    #[error("{0}")]
    Timeout(String),
}

/// Sizes of one run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Hollow nodes for S1.
    pub nodes: usize,
    /// Services for S1.
    pub services: usize,
    /// Replicas per S1 service.
    pub replicas: usize,
    /// Replicas of the S2 service.
    pub burst_replicas: usize,
    /// Nodes in the cluster during S2.
    pub s2_nodes: usize,
    /// Churn duration for S3.
    pub churn: Duration,
    /// Manifest changes per second in S3.
    pub churn_rate: u32,
    /// Nodes whose heartbeats stop in S4.
    pub failed_nodes: usize,
    /// Upper bound on any one wait.
    pub limit: Duration,
}

/// Shared handles for the scenarios.
pub struct Bench<'a> {
    /// etcd client endpoint.
    pub endpoint: String,
    /// Process launcher.
    pub cluster: &'a Cluster,
    /// Figures.
    pub report: &'a mut Report,
    /// Start calibration (for ratios).
    pub calibration: Calibration,
    /// Lease TTL the processes use.
    pub lease_ttl: Duration,
    /// etcd's process id (for its RSS).
    pub etcd_pid: u32,
    /// The hollow agents' process ids (for their CPU time).
    pub agent_pids: Vec<u32>,
}

const PREFIX: &str = "/shoal/";

/// Revisions of history the benchmark's controllers keep (`--history-revisions`).
pub const BENCH_HISTORY_REVISIONS: i64 = 500;

/// The manifest of one bulk service: `replicas` of `bench/app:1`, its environment `REV=env`,
/// constrained to zone b when `constrained`.
pub(crate) fn manifest(name: &str, replicas: usize, constrained: bool, env: u64) -> String {
    let constraint = if constrained {
        "\n  placement:\n    constraints: [\"node.labels.zone == b\"]"
    } else {
        ""
    };
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: bench\nspec:\n  replicas: {replicas}\n  image: bench/app:1\n  env: {{REV: \"{env}\"}}\n  restart: {{delay: 1s}}{constraint}\n"
    )
}

async fn write_manifests(
    client: &mut Client,
    items: &[(String, String)],
) -> Result<(), etcd_client::Error> {
    for chunk in items.chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(name, text)| {
                TxnOp::put(format!("{PREFIX}services/bench/{name}"), text.clone(), None)
            })
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

async fn count(client: &mut Client, prefix: &str) -> Result<i64, etcd_client::Error> {
    let r = client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    Ok(r.count())
}

/// The keys under all of `prefixes`.
async fn count_all(client: &mut Client, prefixes: &[String]) -> Result<i64, etcd_client::Error> {
    let mut n = 0;
    for prefix in prefixes {
        n += count(client, prefix).await?;
    }
    Ok(n)
}

/// What a wait for a number of keys waits for.
#[derive(Debug, Clone, Copy)]
enum Reach {
    /// At least this many (keys being written).
    AtLeast(i64),
    /// At most this many (keys being deleted, or expiring).
    AtMost(i64),
}

/// Counts the keys under all of `prefixes` every 200 ms until their number reaches `want`,
/// for at most `limit`.
async fn wait_count(
    client: &mut Client,
    prefixes: &[String],
    want: Reach,
    limit: Duration,
) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + limit;
    loop {
        let n = count_all(client, prefixes).await?;
        let reached = match want {
            Reach::AtLeast(w) => n >= w,
            Reach::AtMost(w) => n <= w,
        };
        if reached {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ScenarioError::Timeout(format!(
                "{}: {n} keys, waiting for {want:?}, after {limit:?}",
                prefixes.join(" + ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Bench<'_> {
    /// Starts hollow agents for `nodes` nodes: 90% in zone a, 10% in zone b.
    pub async fn start_nodes(
        &mut self,
        id: &str,
        nodes: usize,
    ) -> Result<Vec<Proc>, ScenarioError> {
        let b = (nodes / 10).max(1);
        let procs = vec![
            self.cluster
                .hollow_agent(&format!("{id}a"), nodes - b, &[("zone", "a")])?,
            self.cluster
                .hollow_agent(&format!("{id}b"), b, &[("zone", "b")])?,
        ];
        self.agent_pids.extend(procs.iter().map(Proc::pid));
        Ok(procs)
    }

    /// Waits until `n` node keys exist.
    pub async fn wait_nodes(&self, n: usize) -> Result<(), ScenarioError> {
        let mut c = Client::connect([self.endpoint.as_str()], None).await?;
        wait_count(
            &mut c,
            &[format!("{PREFIX}nodes/")],
            Reach::AtLeast(n as i64),
            Duration::from_secs(120),
        )
        .await
    }

    /// Waits until a leader key exists.
    pub async fn wait_leader(&self) -> Result<(), ScenarioError> {
        let mut c = Client::connect([self.endpoint.as_str()], None).await?;
        wait_count(
            &mut c,
            &[format!("{PREFIX}leader")],
            Reach::AtLeast(1),
            Duration::from_secs(60),
        )
        .await
    }

    /// Waits until the controller serving `metrics_url` has loaded the store into its cache
    /// (`shoal_controller_relists_total` ≥ 1): a standby is warm from then on. Returns how
    /// long that took.
    pub async fn wait_warm(&self, metrics_url: &str) -> Result<Duration, ScenarioError> {
        let t0 = Instant::now();
        let http = reqwest::Client::new();
        let limit = Duration::from_secs(120);
        loop {
            let relists =
                metric_sum(&http, metrics_url, "shoal_controller_relists_total", &[]).await;
            if relists >= 1.0 {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                return Err(ScenarioError::Timeout(format!(
                    "the standby at {metrics_url} had not loaded the store after {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One bulk placement run (S1's runs, and S5's when a `standby` pid is given): `services` ×
    /// `replicas`, services named after `scenario` (`S1.2` → `s1-2-00000` …).
    pub async fn s1_bulk(
        &mut self,
        sizes: &Sizes,
        controller: &mut Proc,
        scenario: &str,
        standby: Option<u32>,
    ) -> Result<BulkRun, ScenarioError> {
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        let obs = Observer::start(&self.endpoint, PREFIX).await?;
        let total = sizes.services * sizes.replicas;
        let items = bulk_items(scenario, sizes);
        let writes0 = obs.writes();
        // The standby's CPU from the same moment as the leader's: both read the manifests.
        let mut spent = CpuCount::start(Roles {
            etcd: self.etcd_pid,
            leader: controller.pid(),
            standby,
            agents: self.agent_pids.clone(),
        });
        let t0 = Instant::now();
        write_manifests(&mut client, &items).await?;
        let mut killed_at = None;
        let mut gap = None;
        if standby.is_some() {
            obs.wait_until(t0, sizes.limit, |a, _| a >= total / 3).await;
            killed_at = Some(t0.elapsed());
            let cpu = spent.leader_killed();
            controller.kill9();
            let placed = obs.counts_since(t0).0;
            self.cpu_before_kill(scenario, placed, cpu.controllers());
            self.report_cpu_before_kill(scenario, cpu, placed);
        }
        let placed = obs.wait_until(t0, sizes.limit, |a, _| a >= total).await;
        let t_placed = t0.elapsed();
        let running = obs.wait_until(t0, sizes.limit, |_, r| r >= total).await;
        let t_running = t0.elapsed();
        let (a, r) = obs.counts_since(t0);
        self.report_cpu_spent(scenario, &spent, a);
        let secs = t_running.as_secs() as usize + 1;
        let (curve, running_curve) = obs.curves(t0, secs);
        let seen = Seen {
            t0,
            placed: a,
            running: r,
            t_placed,
            t_running,
            curve,
            running_curve,
            slots: total,
            completed: placed && running,
            first_placement: obs.assigned_since(t0).first().copied(),
        };
        let sustained = self.rate_figures(scenario, sizes.nodes, &seen);
        let writes = obs.writes() - writes0;
        self.report.figure(
            scenario,
            "store_writes_per_placement",
            writes as f64 / a.max(1) as f64,
            "writes/task",
            json!({"writes": writes}),
        );
        let cpu_per_1000 = spent.leader_spent() / (a.max(1) as f64 / 1000.0);
        if standby.is_none() {
            self.report.figure(
                scenario,
                "controller_cpu_s_per_1000_placements",
                cpu_per_1000,
                "cpu-s",
                json!({}),
            );
        }
        if let Some(k) = killed_at {
            gap = Some(
                self.failover_figures(scenario, k, &seen, &obs, &mut client, &items)
                    .await?,
            );
        }
        let incomplete = (!(placed && running)).then(|| {
            format!(
                "{scenario}: {a}/{total} placed, {r}/{total} running after {:?}",
                sizes.limit
            )
        });
        let outside = t_placed
            .saturating_sub(gap.unwrap_or_default())
            .as_secs_f64()
            .max(1.0);
        Ok(BulkRun {
            rate: sustained,
            cpu_per_1000,
            rate_outside_gap: a as f64 / outside,
            gap,
            incomplete,
        })
    }

    /// The rate figures of one bulk run; returns its sustained placements per second.
    fn rate_figures(&mut self, scenario: &str, nodes: usize, seen: &Seen) -> f64 {
        let (a, r) = (seen.placed, seen.running);
        let peak = seen
            .curve
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain(seen.curve.first().copied())
            .max()
            .unwrap_or(0);
        let sustained = a as f64 / seen.t_placed.as_secs_f64();
        let extra = json!({
            "nodes": nodes, "tasks": seen.slots, "placed": a, "running": r,
            "completed": seen.completed, "scheduledCurve": seen.curve,
            "runningCurve": seen.running_curve,
            "firstPlacementS": seen.first_placement.map(|t| t.as_secs_f64()),
        });
        let figures = [
            ("placements_per_s_sustained", sustained, "tasks/s", extra),
            (
                "placements_per_s_peak_1s",
                peak as f64,
                "tasks/s",
                json!({}),
            ),
            (
                "time_to_all_placed",
                seen.t_placed.as_secs_f64(),
                "s",
                json!({"placed": a}),
            ),
            (
                "time_to_all_running",
                seen.t_running.as_secs_f64(),
                "s",
                json!({"running": r}),
            ),
            (
                "R_place",
                self.r_place(sustained),
                "ratio",
                json!({"lBatch": self.calibration.l_batch, "definition": "placements/s / (L_batch / 2)"}),
            ),
            (
                "R_place_vs_L_par",
                sustained / self.calibration.l_par,
                "ratio",
                json!({"lPar": self.calibration.l_par}),
            ),
        ];
        for (name, value, unit, extra) in figures {
            self.report.figure(scenario, name, value, unit, extra);
        }
        sustained
    }

    /// S2: one service with many replicas: manifest write → all running.
    pub async fn s2_burst(&mut self, sizes: &Sizes) -> Result<(), ScenarioError> {
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        let obs = Observer::start(&self.endpoint, PREFIX).await?;
        let n = sizes.burst_replicas;
        let t0 = Instant::now();
        write_manifests(
            &mut client,
            &[("s2-burst".into(), manifest("s2-burst", n, false, 1))],
        )
        .await?;
        let ok = obs.wait_until(t0, sizes.limit, |_, r| r >= n).await;
        let t = t0.elapsed().as_secs_f64();
        let (a, r) = obs.counts_since(t0);
        self.report.figure(
            "S2",
            "write_to_all_running",
            t,
            "s",
            json!({"replicas": n, "nodes": sizes.s2_nodes, "placed": a, "running": r, "completed": ok}),
        );
        if !ok {
            return Err(ScenarioError::Timeout(format!("S2: {r}/{n} running")));
        }
        Ok(())
    }

    /// After S2: deletes its service and waits until its tasks and statuses are gone (down
    /// to `task_keys_before`, S2's start), then stops the hollow nodes started for it
    /// (`extra`) and waits until their records have expired with their leases. S3–S5 then
    /// run on S1's cluster, as S1 did, not on S2's leftovers.
    pub async fn s2_clean_up(
        &mut self,
        sizes: &Sizes,
        task_keys_before: i64,
        extra: Vec<Proc>,
    ) -> Result<(), ScenarioError> {
        self.delete_services("S2", task_keys_before, sizes.limit)
            .await?;
        let t0 = Instant::now();
        let stopped: Vec<u32> = extra.iter().map(Proc::pid).collect();
        self.agent_pids.retain(|p| !stopped.contains(p));
        drop(extra);
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        wait_count(
            &mut client,
            &[format!("{PREFIX}nodes/")],
            Reach::AtMost(sizes.nodes as i64),
            sizes.limit,
        )
        .await?;
        self.report.figure(
            "S2",
            "extra_nodes_gone_after",
            t0.elapsed().as_secs_f64(),
            "s",
            json!({"nodes": sizes.nodes}),
        );
        Ok(())
    }

    /// S3: manifest changes at a steady rate on a populated cluster; per-task latency.
    pub async fn s3_churn(&mut self, sizes: &Sizes) -> Result<(), ScenarioError> {
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        let obs = Observer::start(&self.endpoint, PREFIX).await?;
        let names: Vec<String> = (0..50).map(|i| format!("s3-{i:03}")).collect();
        let items: Vec<(String, String)> = names
            .iter()
            .map(|n| (n.clone(), manifest(n, 10, false, 0)))
            .collect();
        write_manifests(&mut client, &items).await?;
        let t_setup = Instant::now();
        obs.wait_until(t_setup, sizes.limit, |_, r| r >= 500).await;
        let (db0, rev0) = etcd_size(&mut client).await?;
        let t0 = Instant::now();
        let period = Duration::from_secs_f64(1.0 / f64::from(sizes.churn_rate.max(1)));
        let mut i = 0u64;
        let mut sizes_mb: Vec<f64> = Vec::new();
        let mut next_sample = t0;
        while t0.elapsed() < sizes.churn {
            if Instant::now() >= next_sample {
                let (db, _) = etcd_size(&mut client).await?;
                sizes_mb.push((db as f64 / 1e6 * 10.0).round() / 10.0);
                next_sample += Duration::from_secs(5);
            }
            let name = &names[(i as usize) % names.len()];
            let replicas = 10 + (i % 3) as usize;
            write_manifests(
                &mut client,
                &[(name.clone(), manifest(name, replicas, false, i))],
            )
            .await?;
            i += 1;
            tokio::time::sleep(period).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (db1, rev1) = etcd_size(&mut client).await?;
        // The leader compacts (keeping BENCH_HISTORY_REVISIONS): a read at the churn's first revision
        // fails once that history is gone, and the database stops growing with it.
        let compacted = rev1 - rev0 > BENCH_HISTORY_REVISIONS
            && client
                .get(
                    format!("{PREFIX}services/"),
                    Some(GetOptions::new().with_revision(rev0).with_count_only()),
                )
                .await
                .is_err();
        self.report.figure(
            "S3",
            "etcd_db_size_growth_during_churn",
            (db1 - db0) as f64,
            "bytes",
            json!({"before": db0, "after": db1, "revisions": rev1 - rev0, "historyBeforeChurnCompacted": compacted, "dbSizeMbEvery5s": sizes_mb}),
        );
        let l = obs.latencies_since(t0);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let extra = json!({"changes": i, "tasks": l.len()});
        self.report.figure(
            "S3",
            "task_latency_p50",
            ms(percentile(&l, 50.0)),
            "ms",
            extra.clone(),
        );
        self.report.figure(
            "S3",
            "task_latency_p99",
            ms(percentile(&l, 99.0)),
            "ms",
            extra.clone(),
        );
        self.report.figure(
            "S3",
            "task_latency_max",
            ms(l.last().copied().unwrap_or_default()),
            "ms",
            extra,
        );
        Ok(())
    }

    /// S4: the heartbeats of `failed_nodes` nodes stop (their agent is killed).
    pub async fn s4_node_failure(&mut self, sizes: &Sizes) -> Result<(), ScenarioError> {
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        let mut victim = self
            .cluster
            .hollow_agent("s4v", sizes.failed_nodes, &[("zone", "c")])?;
        let before = count(&mut client, &format!("{PREFIX}nodes/")).await?;
        wait_count(
            &mut client,
            &[format!("{PREFIX}nodes/")],
            Reach::AtLeast(before + sizes.failed_nodes as i64),
            Duration::from_secs(60),
        )
        .await?;
        // A global service puts exactly one task on each victim node.
        let obs = Observer::start(&self.endpoint, PREFIX).await?;
        let text = "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: s4-victims\n  namespace: bench\nspec:\n  replicas: 0\n  image: bench/app:1\n".to_string();
        write_manifests(&mut client, &[("s4-victims".into(), text)]).await?;
        let n = sizes.failed_nodes * 20;
        let text = format!(
            "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: s4-load\n  namespace: bench\nspec:\n  replicas: {n}\n  image: bench/app:1\n  placement:\n    constraints: [\"node.labels.zone == c\"]\n"
        );
        let t_setup = Instant::now();
        write_manifests(&mut client, &[("s4-load".into(), text.clone())]).await?;
        if !obs.wait_until(t_setup, sizes.limit, |_, r| r >= n).await {
            return Err(ScenarioError::Timeout(
                "S4: load did not reach running".into(),
            ));
        }
        // Let the load move anywhere once its nodes are gone.
        let relaxed = text.replace(
            "    constraints: [\"node.labels.zone == c\"]\n",
            "    constraints: []\n",
        );
        let obs2 = Observer::start(&self.endpoint, PREFIX).await?;
        let t0 = Instant::now();
        victim.kill9();
        write_manifests(&mut client, &[("s4-load".into(), relaxed)]).await?;
        let detected = loop {
            if obs2.view.lock().map(|v| v.nodes_gone.len()).unwrap_or(0) >= sizes.failed_nodes {
                break Some(t0.elapsed());
            }
            if t0.elapsed() > sizes.limit {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let committed = obs2
            .wait_until(t0, sizes.limit, |a, _| a >= n)
            .await
            .then(|| t0.elapsed());
        let running = obs2
            .wait_until(t0, sizes.limit, |_, r| r >= n)
            .await
            .then(|| t0.elapsed());
        let ttl = self.lease_ttl.as_secs_f64();
        for (name, t) in [
            ("detection", detected),
            ("replacements_committed", committed),
            ("replacements_running", running),
        ] {
            let s = t.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
            self.report.figure(
                "S4",
                &format!("{name}_s"),
                s,
                "s",
                json!({"tasks": n, "nodes": sizes.failed_nodes}),
            );
            self.report.figure(
                "S4",
                &format!("{name}_ttls"),
                s / ttl,
                "lease TTLs",
                json!({"leaseTtlS": ttl}),
            );
        }
        Ok(())
    }
}

impl Bench<'_> {
    /// R_place: a placement rate ÷ (`L_batch` / 2), the store's ceiling at two writes (task
    /// and status) per placement.
    pub fn r_place(&self, rate: f64) -> f64 {
        rate / (self.calibration.l_batch / 2.0)
    }
}

/// What one bulk run saw, for its figures.
struct Seen {
    t0: Instant,
    /// Tasks first assigned, and running, since `t0`.
    placed: usize,
    running: usize,
    t_placed: Duration,
    t_running: Duration,
    /// Tasks placed, and running, at the end of each second since `t0`.
    curve: Vec<usize>,
    running_curve: Vec<usize>,
    /// Slots of the run's services.
    slots: usize,
    completed: bool,
    /// When the first task was assigned, since `t0`.
    first_placement: Option<Duration>,
}

/// Figures of one bulk placement run.
#[derive(Debug, Clone)]
pub struct BulkRun {
    /// Sustained placements per second.
    pub rate: f64,
    /// Controller CPU-seconds per 1,000 placements.
    pub cpu_per_1000: f64,
    /// Sustained placements per second over the run without its longest gap after a
    /// leader kill (S5; equal to `rate` without a kill).
    pub rate_outside_gap: f64,
    /// That gap (S5; `None` without a kill).
    pub gap: Option<Duration>,
    /// Why the run did not complete (placed and running) in time, if it did not.
    pub incomplete: Option<String>,
}

/// The sum of metric `name`'s series with `labels` that `url` (a `/metrics` page) serves
/// now; 0 when it cannot be read.
pub(super) async fn metric_sum(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let text = match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    shoal_tests::metrics::sum(&text, name, labels)
}

/// Service names of a scenario (`S1.2` → `s1-2`).
pub fn service_prefix(scenario: &str) -> String {
    scenario.to_lowercase().replace('.', "-")
}

/// The manifests of a bulk run: `services` services of `replicas`, one in ten constrained to
/// zone b.
fn bulk_items(scenario: &str, sizes: &Sizes) -> Vec<(String, String)> {
    let prefix = service_prefix(scenario);
    (0..sizes.services)
        .map(|i| {
            let name = format!("{prefix}-{i:05}");
            let text = manifest(&name, sizes.replicas, i % 10 == 0, 1);
            (name, text)
        })
        .collect()
}
