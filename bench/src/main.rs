//! `shoal-bench`: runs the hollow-node cluster benchmark (see the crate docs and BENCHMARKS.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use shoal_bench::calibrate::{Calibration, calibrate};
use shoal_bench::cluster::{Cluster, Proc, ProcStats, proc_stats, start_etcd};
use shoal_bench::report::{Report, RunContext, git_revision};
use shoal_bench::scenarios::{Bench, Sizes};
use shoal_tests::etcd::EtcdFixture;

/// Hollow-node cluster benchmark against a real etcd.
#[derive(Debug, Parser)]
struct Args {
    /// The full set (5,000 nodes for S2, 100k tasks for S1, longer churn).
    #[arg(long, conflicts_with = "quick")]
    full: bool,
    /// A quick run of a few minutes (default).
    #[arg(long)]
    quick: bool,
    /// The release `shoal` binary to measure.
    #[arg(long, default_value = "target/release/shoal")]
    binary: PathBuf,
    /// Where JSON lines go.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Lease TTL for agents and controllers.
    #[arg(long, default_value = "5s")]
    lease_ttl: String,
    /// Only these scenarios (comma-separated: s1,s2,s3,s4,s5,s6).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.binary.exists(),
        "{} not found: build it first with `cargo build --release --bin shoal` (make bench does)",
        args.binary.display()
    );
    let ttl: Duration = humantime_ttl(&args.lease_ttl)?;
    let sizes = sizes(args.full);
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);

    let (etcd, etcd_version) = start_etcd().await?;
    let endpoint = etcd.endpoint();
    println!("etcd {etcd_version} on {endpoint}");
    let per = Duration::from_secs(if args.full { 10 } else { 4 });
    let cal0 = calibrate(&endpoint, "/calibration", 64, 128, per).await?;
    println!("calibration: {cal0:?}");
    let ctx = RunContext {
        git_revision: git_revision(),
        etcd_version,
        run: if args.full {
            "full".into()
        } else {
            "quick".into()
        },
        calibration_start: Some(cal0),
        calibration_end: None,
    };
    let mut report = Report::new(&args.results, ctx)?;
    report_calibration(
        &mut report,
        &cal0,
        "start",
        json!({"inFlight": cal0.in_flight, "batchOps": cal0.batch_ops}),
    );
    let logs = tempfile::Builder::new()
        .prefix("shoal-bench-logs")
        .tempdir()?;
    let cluster = Cluster::new(&args.binary, &etcd.url(), logs.path(), &args.lease_ttl);
    let mut bench = Bench {
        endpoint: endpoint.clone(),
        cluster: &cluster,
        report: &mut report,
        calibration: cal0,
        lease_ttl: ttl,
        etcd_pid: etcd.pid().context("etcd is not running")?,
        agent_pids: Vec::new(),
    };
    if ["s1", "s2", "s3", "s4", "s5"].iter().any(|s| want(s)) {
        hollow_scenarios(&mut bench, &sizes, &want).await?;
        etcd_footprint(&mut bench, &etcd);
    }
    if want("s6")
        && let Err(e) = bench.s6_docker(S6_REPLICAS, logs.path()).await
    {
        eprintln!("S6 incomplete: {e}");
    }
    let cal1 = calibrate(&endpoint, "/calibration", 64, 128, per).await?;
    report_calibration(
        &mut report,
        &cal1,
        "end",
        json!({"storeState": "populated"}),
    );
    report.context_mut().calibration_end = Some(cal1);
    report.finish()?;
    Ok(())
}

/// Containers S6 starts, with Shoal and with `docker run`.
const S6_REPLICAS: usize = 20;

/// S1 to S5 on hollow nodes, each from a compacted and defragmented etcd, and the footprint
/// figures (controller after S1, hollow agents at the end).
async fn hollow_scenarios(
    bench: &mut Bench<'_>,
    sizes: &Sizes,
    want: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let agents = bench.start_nodes("s1", sizes.nodes).await?;
    bench.wait_nodes(sizes.nodes).await?;
    let mut controller = bench.cluster.controller("controller-0")?;
    bench.wait_leader().await?;
    let mut s1_median = None;
    let mut s1_keys = 0;
    if want("s1") {
        match bench.s1_repeated(sizes, &mut controller, S1_RUNS).await {
            Ok(m) => s1_median = m,
            Err(e) => eprintln!("S1 incomplete: {e}"),
        }
        controller_footprint(bench, sizes, controller.pid());
        s1_keys = bench.task_keys().await?;
    }
    if want("s2") {
        // The burst runs on `s2_nodes` nodes: add hollow nodes beyond S1's when needed.
        let extra_agents = if sizes.s2_nodes > sizes.nodes {
            let extra = bench
                .start_nodes("s2", sizes.s2_nodes - sizes.nodes)
                .await?;
            bench.wait_nodes(sizes.s2_nodes).await?;
            extra
        } else {
            Vec::new()
        };
        bench.scenario_start("S2", Some(controller.pid())).await?;
        let before = bench.task_keys().await?;
        if let Err(e) = bench.s2_burst(sizes).await {
            eprintln!("S2 incomplete: {e}");
        }
        // Its service and extra nodes go before S3: later scenarios run on S1's cluster.
        if let Err(e) = bench.s2_clean_up(sizes, before, extra_agents).await {
            eprintln!("S2 clean-up incomplete: {e}");
        }
    }
    if want("s3") {
        bench.scenario_start("S3", Some(controller.pid())).await?;
        if let Err(e) = bench.s3_churn(sizes).await {
            eprintln!("S3 incomplete: {e}");
        }
    }
    if want("s4") {
        bench.scenario_start("S4", Some(controller.pid())).await?;
        if let Err(e) = bench.s4_node_failure(sizes).await {
            eprintln!("S4 incomplete: {e}");
        }
    }
    if want("s5") {
        // S5 is S1 with a leader kill: each run starts where S1's later runs start, without
        // the services of S1's last run (S3's and S4's few remain).
        if want("s1") {
            let leave = bench.task_keys().await? - s1_keys;
            bench
                .delete_services(&format!("S1.{S1_RUNS}"), leave, sizes.limit)
                .await?;
        }
        if let Err(e) = bench
            .s5_repeated(sizes, &mut controller, S5_RUNS, s1_median)
            .await
        {
            eprintln!("S5 incomplete: {e}");
        }
    }
    hollow_agent_footprint(bench, sizes, &agents).await;
    Ok(())
}

/// etcd's RSS and database size at the end of the hollow-node scenarios.
fn etcd_footprint(bench: &mut Bench<'_>, etcd: &EtcdFixture) {
    bench.report.figure(
        "footprint",
        "etcd_rss",
        proc_stats(bench.etcd_pid).rss as f64,
        "bytes",
        json!({}),
    );
    bench.report.figure(
        "footprint",
        "etcd_db_size",
        etcd.db_size() as f64,
        "bytes",
        json!({}),
    );
}

/// Bulk placement runs in S1 (median and spread reported).
const S1_RUNS: usize = 3;

/// S5's runs, each killing the leader once.
const S5_RUNS: usize = 3;

/// The hollow agents' memory per node at the end: the sum of their RSS, and of their PSS,
/// which counts the executable's code (mapped by each agent process) once. Read right after
/// S5 (`…_at_s5_end`) and once it has settled ([`settled_stats`]): a burst's freed memory
/// goes back as the agents' threads next run out of work.
async fn hollow_agent_footprint(bench: &mut Bench<'_>, sizes: &Sizes, agents: &[Proc]) {
    let read = || -> Vec<ProcStats> { agents.iter().map(|p| proc_stats(p.pid())).collect() };
    let at_end = read();
    let started = std::time::Instant::now();
    let settled = settled_stats(read, at_end.clone()).await;
    let nodes = sizes.nodes as f64;
    for (suffix, stats, settled_after) in [
        ("_at_s5_end", &at_end, None),
        ("", &settled, Some(started.elapsed().as_secs_f64())),
    ] {
        let sum = |f: fn(&ProcStats) -> u64| stats.iter().map(f).sum::<u64>() as f64;
        let mut extra = json!({
            "nodes": sizes.nodes,
            "processes": stats.len(),
            "rssAnonPerNode": sum(|s| s.rss_anon) / nodes,
        });
        if let Some(s) = settled_after {
            extra["settledAfterS"] = json!(s);
        }
        for (name, total) in [
            ("hollow_agent_rss_per_node", sum(|s| s.rss)),
            ("hollow_agent_pss_per_node", sum(|s| s.pss)),
        ] {
            let name = format!("{name}{suffix}");
            bench
                .report
                .figure("footprint", &name, total / nodes, "bytes", extra.clone());
        }
    }
}

/// Readings this far apart (longer than a Shoal thread waits between two collections of
/// its heap, `src/heap.rs`) that differ by at most 1% in the RSS summed over the processes
/// are settled; after [`SETTLE_LIMIT`] the last reading is taken as it is.
const SETTLE_EVERY: Duration = Duration::from_secs(3);
/// How long the footprint is given to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// Reads the agents every [`SETTLE_EVERY`] from `first` until two readings agree, or
/// [`SETTLE_LIMIT`] has passed; returns the last reading.
async fn settled_stats(read: impl Fn() -> Vec<ProcStats>, first: Vec<ProcStats>) -> Vec<ProcStats> {
    let rss = |stats: &[ProcStats]| stats.iter().map(|s| s.rss).sum::<u64>();
    let mut last = first;
    let deadline = std::time::Instant::now() + SETTLE_LIMIT;
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(SETTLE_EVERY).await;
        let now = read();
        let settled = rss(&now).abs_diff(rss(&last)) * 100 <= rss(&last);
        last = now;
        if settled {
            break;
        }
    }
    last
}

/// The controller's RSS with S1's last run in the store.
fn controller_footprint(bench: &mut Bench<'_>, sizes: &Sizes, pid: u32) {
    let st = proc_stats(pid);
    let tasks = (sizes.services * sizes.replicas) as f64;
    let nodes = sizes.nodes as f64;
    bench.report.figure(
        "footprint",
        "controller_rss_steady",
        st.rss as f64,
        "bytes",
        json!({}),
    );
    bench.report.figure(
        "footprint",
        "controller_rss_peak",
        st.peak_rss as f64,
        "bytes",
        json!({}),
    );
    bench.report.figure(
        "footprint",
        "controller_bytes_per_task",
        st.rss as f64 / tasks,
        "bytes",
        json!({"tasks": tasks, "nodes": nodes}),
    );
    // The goal is 2 KB per task + 10 KB per node: what is left per task after the nodes' part.
    bench.report.figure(
        "footprint",
        "controller_bytes_per_task_after_10kb_per_node",
        (st.rss as f64 - 10_240.0 * nodes) / tasks,
        "bytes",
        json!({"tasks": tasks, "nodes": nodes}),
    );
}

fn humantime_ttl(s: &str) -> anyhow::Result<Duration> {
    let d: shoal_core::Dur = s.parse().map_err(|e| anyhow::anyhow!("--lease-ttl: {e}"))?;
    Ok(d.get())
}

/// The scenario sizes of a full or a quick run.
fn sizes(full: bool) -> Sizes {
    if full {
        Sizes {
            nodes: 1000,
            services: 1000,
            replicas: 100,
            burst_replicas: 10_000,
            s2_nodes: 5_000,
            churn: Duration::from_secs(120),
            churn_rate: 20,
            failed_nodes: 50,
            limit: Duration::from_secs(600),
        }
    } else {
        Sizes {
            nodes: 1000,
            services: 100,
            replicas: 100,
            burst_replicas: 2_000,
            s2_nodes: 1_000,
            churn: Duration::from_secs(30),
            churn_rate: 20,
            failed_nodes: 50,
            limit: Duration::from_secs(240),
        }
    }
}

/// Reports the three figures of a calibration, named `L_seq_<when>` and so on.
fn report_calibration(
    report: &mut Report,
    cal: &Calibration,
    when: &str,
    extra: serde_json::Value,
) {
    for (n, v, u) in [
        ("L_seq", cal.l_seq, "txn/s"),
        ("L_par", cal.l_par, "txn/s"),
        ("L_batch", cal.l_batch, "keys/s"),
    ] {
        report.figure("calibration", &format!("{n}_{when}"), v, u, extra.clone());
    }
}
