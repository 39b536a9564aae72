//! `shoal agent`.

use std::process::ExitCode;

use clap::Args;

/// Flags of `shoal agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {}

/// Runs `shoal agent`.
pub async fn run(_args: AgentArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("shoal agent is not available in this build yet")
}
