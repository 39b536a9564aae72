//! `shoal-ui-bench`: times every dashboard page over a big sample cluster in a real etcd
//! (see `shoal_bench::ui` and BENCHMARKS.md).

use clap::Parser;
use shoal_api::sample::SampleSize;
use shoal_bench::cluster::start_etcd;
use shoal_bench::report::{Report, RunContext};

/// Dashboard rendering benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Services in the sample cluster.
    #[arg(long, default_value_t = 500)]
    services: usize,
    /// Replicas (tasks) per service.
    #[arg(long, default_value_t = 10)]
    replicas: usize,
    /// Nodes.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Requests per page (after two warm-up requests).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Where JSON lines go.
    #[arg(long, default_value = "bench/results")]
    results: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (etcd, etcd_version) = start_etcd().await?;
    let endpoint = etcd.endpoint();
    println!("etcd {etcd_version} on {endpoint}");
    let ctx = RunContext {
        git_revision: shoal_bench::report::git_revision(),
        etcd_version,
        run: "ui".into(),
        calibration_start: None,
        calibration_end: None,
    };
    let mut report = Report::new(&args.results, ctx)?;
    let size = SampleSize {
        services: args.services,
        replicas: args.replicas,
        nodes: args.nodes,
    };
    let timings = shoal_bench::ui::run(&etcd.url(), size, args.rounds, &mut report).await?;
    println!(
        "\n{:<20} {:>9} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "p95 ms", "max ms", "KiB"
    );
    for (name, t) in &timings {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<20} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            ms(t.p50),
            ms(t.p95),
            ms(t.max),
            t.bytes as f64 / 1024.0
        );
    }
    let path = report.finish()?;
    println!("results: {}", path.display());
    Ok(())
}
