//! `shoal api`.

use std::process::ExitCode;

use clap::Args;

/// Flags of `shoal api`.
#[derive(Debug, Args)]
pub struct ApiArgs {}

/// Runs `shoal api`.
pub async fn run(_args: ApiArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("shoal api is not available in this build yet")
}
