//! `shoal-consul-fake --listen ADDR`: the Consul fake of Shoal's test kit as a server, so a
//! whole cluster can be tried against `consul://ADDR` from a shell. One dev-mode agent, KV,
//! transactions, sessions, agent services and checks, catalog and health; timers on the real
//! clock unless `--time-scale` says otherwise. Data lives in memory only.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use shoal_tests::consul_fake::{ConsulFake, FakeOptions};

/// Flags of `shoal-consul-fake`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "An in-memory stand-in for a Consul agent's HTTP API, for trying Shoal"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8500")]
    listen: String,
    /// Factor applied to Consul's timers (session TTLs, lock-delay, check reaping): 1 is
    /// Consul's own clock, 0.1 makes a 10 s session TTL expire in 1–2 s.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Require this ACL token on every request (else 403), as a Consul with ACLs on does.
    #[arg(long, env = "CONSUL_FAKE_ACL_TOKEN", hide_env_values = true)]
    acl_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.time_scale > 0.0 && args.time_scale.is_finite(),
        "--time-scale must be a positive number"
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let fake = ConsulFake::start_on(
        listener,
        FakeOptions {
            time_scale: args.time_scale,
            acl_token: args.acl_token,
            ..FakeOptions::default()
        },
    );
    println!(
        "consul fake listening on {} (use --store {})",
        fake.addr(),
        fake.store_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(fake);
    Ok(ExitCode::SUCCESS)
}
