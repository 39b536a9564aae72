//! `shoal dev`.

use std::process::ExitCode;

use clap::Args;

/// Flags of `shoal dev`.
#[derive(Debug, Args)]
pub struct DevArgs {}

/// Runs `shoal dev`.
pub async fn run(_args: DevArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("shoal dev is not available in this build yet")
}
