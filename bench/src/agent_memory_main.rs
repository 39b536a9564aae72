//! `shoal-agent-memory-bench`: the hollow agent's live heap per task, counted by this
//! binary's allocator (mimalloc, as `shoal` uses, wrapped by `cap` to count live bytes). See
//! [`shoal_bench::agent_memory`] and BENCHMARKS.md.

use std::path::PathBuf;

use anyhow::Context;
use cap::Cap;
use clap::Parser;
use serde_json::json;
use shoal_bench::agent_memory::{Measured, Sizes, run};
use shoal_bench::cluster::start_etcd;
use shoal_bench::report::{Report, RunContext, git_revision};

/// mimalloc, as `shoal` uses, counting the bytes it has handed out and not had back.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

/// The system allocator (feature `system-alloc`), so that `heaptrack` sees every allocation:
/// `cargo build --release --features system-alloc --bin shoal-agent-memory-bench`, then
/// `heaptrack target/release/shoal-agent-memory-bench`.
#[cfg(feature = "system-alloc")]
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Hollow agent heap per task.
#[derive(Debug, Parser)]
struct Args {
    /// Where the JSON lines go.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Hollow nodes of the agent.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Tasks assigned over them.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Exit once every task runs, dropping nothing (for `heaptrack`: what is left at exit is
    /// what the running tasks hold).
    #[arg(long)]
    exit_when_running: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (etcd, etcd_version) = start_etcd().await?;
    let store = shoal_store::url::open_store(&etcd.url())
        .await
        .context("connecting to etcd")?;
    let sizes = Sizes {
        nodes: args.nodes,
        tasks: args.tasks,
        exit_when_running: args.exit_when_running,
    };
    let m = run(store, &sizes, || ALLOCATOR.allocated()).await?;
    if args.exit_when_running {
        println!("every task running: live heap {} bytes; exiting", m.running);
        drop(etcd);
        std::process::exit(0);
    }
    let ctx = RunContext {
        git_revision: git_revision(),
        etcd_version,
        run: "agent-memory".into(),
        calibration_start: None,
        calibration_end: None,
    };
    let mut report = Report::new(&args.results, ctx)?;
    record(&mut report, &m, &sizes);
    report.finish()?;
    Ok(())
}

fn record(report: &mut Report, m: &Measured, sizes: &Sizes) {
    let extra = json!({"nodes": sizes.nodes, "tasks": sizes.tasks});
    report.figure(
        "agent-memory",
        "idle_heap",
        m.idle as f64,
        "bytes",
        extra.clone(),
    );
    for (name, at) in [
        ("heap_per_running_task", m.running),
        ("heap_per_ended_task", m.ended),
        ("heap_per_task_after_deletion", m.deleted),
    ] {
        report.figure(
            "agent-memory",
            name,
            m.per_task(at, sizes.tasks),
            "bytes",
            extra.clone(),
        );
    }
}
