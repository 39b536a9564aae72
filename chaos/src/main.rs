//! `shoal-chaos`: runs one seeded chaos scenario over a Shoal cluster in network namespaces
//! and appends its result line to a results file. Exit code 0 with no violation, 1 with
//! violations, 2 when the run could not be carried out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-chaos",
    about = "Faults across hosts: a seeded nemesis over a real Shoal cluster"
)]
struct Args {
    /// Seed of the fault schedule and the workload (the same seed gives the same schedule).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the nemesis runs, e.g. 30m, 90s.
    #[arg(long, default_value = "30m", value_parser = humantime_parse)]
    duration: Duration,
    /// The `shoal` binary (default: next to this one).
    #[arg(long, env = "SHOAL_BIN")]
    shoal: Option<PathBuf>,
    /// The `etcd` binary.
    #[arg(long, env = "SHOAL_ETCD_BIN", default_value = "etcd")]
    etcd: PathBuf,
    /// Results file the run's JSON line is appended to.
    #[arg(long, default_value = "chaos/results/chaos.jsonl")]
    results: PathBuf,
    /// Directory for the run's data and logs.
    #[arg(long, default_value = "target/chaos")]
    work_dir: PathBuf,
    /// Print the schedule for the seed and exit.
    #[arg(long)]
    schedule: bool,
    /// Print the fault matrix of the last line of --results as Markdown and exit.
    #[arg(long)]
    render: bool,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 90s, 30m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration {s:?}: expected e.g. 90s, 30m")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let cfg = shoal_chaos::Config::new(
        args.seed,
        args.duration,
        args.shoal,
        args.etcd,
        args.work_dir,
    );
    if args.render {
        let text = std::fs::read_to_string(&args.results).unwrap_or_default();
        return match shoal_chaos::report::render_matrix(&text) {
            Ok(md) => {
                print!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shoal-chaos: {}: {e}", args.results.display());
                ExitCode::from(2)
            }
        };
    }
    if args.schedule {
        for step in shoal_chaos::nemesis::schedule(cfg.seed, cfg.duration, 3, cfg.lease_ttl) {
            println!("{}", serde_json::to_string(&step).unwrap_or_default());
        }
        return ExitCode::SUCCESS;
    }
    match shoal_chaos::run(cfg).await {
        Ok(result) => {
            if let Err(e) = result.append_to(&args.results) {
                eprintln!("shoal-chaos: cannot write {}: {e}", args.results.display());
                return ExitCode::from(2);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            if result.violations == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("shoal-chaos: {e}");
            ExitCode::from(2)
        }
    }
}
