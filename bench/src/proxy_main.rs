//! `shoal-proxy-bench`: requests/s and latency of 1 KiB request/response directly to a task's
//! port and through the agent's service proxy, same run (see BENCHMARKS.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use shoal_bench::cluster::cpu_seconds;
use shoal_bench::proxy::{Connections, load, serve_backend, serve_proxy};

/// Service proxy benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Where the JSON line goes.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// How long each load runs.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    #[command(subcommand)]
    serve: Option<Serve>,
}

#[derive(Debug, Subcommand)]
enum Serve {
    /// Runs only the proxy (the benchmark starts itself this way as a child process).
    #[command(hide = true)]
    ServeProxy {
        listen: SocketAddr,
        backend: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Serve::ServeProxy { listen, backend }) = args.serve {
        // The proxy gets one core's worth of runtime, as a busy agent would.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        return Ok(rt.block_on(serve_proxy(listen, backend))?);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let backend_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend = backend_l.local_addr()?;
    tokio::spawn(serve_backend(backend_l));
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve-proxy", &listen.to_string(), &backend.to_string()])
        .spawn()
        .context("starting the proxy")?;
    let pid = child.id();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rows = Vec::new();
    println!("| connections | path | req/s | p50 ms | p99 ms | errors | proxy CPU-s per 10k req |");
    println!("|---|---|---|---|---|---|---|");
    for mode in [Connections::Persistent, Connections::New] {
        let direct = load(backend, mode, args.workers, args.duration).await;
        let cpu0 = cpu_seconds(pid);
        let proxied = load(listen, mode, args.workers, args.duration).await;
        let cpu = cpu_seconds(pid) - cpu0;
        let per_10k = cpu / (proxied.requests.max(1) as f64) * 10_000.0;
        for (path, r, c) in [
            ("direct", &direct, None),
            ("proxy", &proxied, Some(per_10k)),
        ] {
            println!(
                "| {mode:?} | {path} | {:.0} | {:.3} | {:.3} | {} | {} |",
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.errors,
                c.map_or("-".to_string(), |c| format!("{c:.3}"))
            );
        }
        rows.push(json!({
            "connections": mode,
            "direct": direct,
            "proxy": proxied,
            "throughput_ratio": proxied.rps / direct.rps.max(1e-9),
            "added_p99_ms": proxied.p99_ms - direct.p99_ms,
            "proxy_cpu_seconds_per_10k": per_10k,
        }));
    }
    let _ = child.kill();
    let _ = child.wait();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    std::fs::create_dir_all(&args.results)?;
    let path = args.results.join(format!("{now}-proxy.jsonl"));
    let line = json!({
        "benchmark": "proxy",
        "git": std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
        "message_bytes": shoal_bench::proxy::MESSAGE,
        "workers": args.workers,
        "duration_s": args.duration.as_secs_f64(),
        "runs": rows,
    });
    std::fs::write(&path, format!("{line}\n"))?;
    println!("results: {}", path.display());
    Ok(())
}
