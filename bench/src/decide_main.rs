//! `shoal-decide-bench`: the controller's decide path timed in this process, without a store
//! (see [`shoal_bench::decide`] and BENCHMARKS.md). Several rounds on a fresh cache each; the
//! median and spread of their CPU time per 1,000 placements. Then as many standby rounds: the
//! median and spread of a standby's CPU time per 1,000 placements, following the same store
//! (applying the changes it held back is reported beside it, as `catchUpCpuS`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use shoal_bench::decide::{Sizes, round};
use shoal_bench::report::{Report, RunContext, git_revision};
use shoal_bench::scenarios::repeat::Spread;

/// mimalloc, as `shoal` uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Controller CPU per placement, in process.
#[derive(Debug, Parser)]
struct Args {
    /// Where the JSON lines go.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Services.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Replicas per service.
    #[arg(long, default_value_t = 100)]
    replicas: usize,
    /// Services already placed and running when a round starts (S5 starts beside S1's last
    /// run), placed untimed.
    #[arg(long, default_value_t = 0)]
    existing_services: usize,
    /// Nodes whose records appeared and went before a round starts (S3 to S5 run after S2's
    /// extra nodes left), untimed.
    #[arg(long, default_value_t = 0)]
    gone_nodes: usize,
    /// Rounds, each on a fresh cache.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn main() -> anyhow::Result<()> {
    // As `shoal controller` does before its first allocation (see `src/main.rs`).
    nix::sys::prctl::set_thp_disable(true).context("turning transparent huge pages off")?;
    let args = Args::parse();
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let sizes = Sizes {
        nodes: args.nodes,
        services: args.services,
        replicas: args.replicas,
        existing_services: args.existing_services,
        gone_nodes: args.gone_nodes,
    };
    let ctx = RunContext {
        git_revision: git_revision(),
        etcd_version: String::new(),
        run: "decide".into(),
        calibration_start: None,
        calibration_end: None,
    };
    let mut report = Report::new(&args.results, ctx)?;
    let extra = json!({"nodes": sizes.nodes, "services": sizes.services, "replicas": sizes.replicas, "existingServices": sizes.existing_services, "goneNodes": sizes.gone_nodes});
    let kinds = [
        ("decide", false, "cpu_s_per_1000_placements_median"),
        ("standby", true, "standby_cpu_s_per_1000_placements_median"),
    ];
    for (kind, standby, median) in kinds {
        let mut runs = Vec::new();
        for i in 1..=args.rounds {
            let (per_1000, e) = round(&sizes, standby).figure(extra.clone());
            let scenario = format!("{kind}.{i}");
            report.figure(&scenario, "cpu_s_per_1000_placements", per_1000, "cpu-s", e);
            runs.push(per_1000);
        }
        let spread = Spread::of(&runs).context("no round measured")?;
        let mut e = extra.clone();
        e["runs"] = json!(runs);
        e["spread"] = json!(spread.relative());
        report.figure("decide", median, spread.median, "cpu-s", e);
    }
    report.finish()?;
    Ok(())
}
