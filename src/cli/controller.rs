//! `shoal controller`.

use std::process::ExitCode;

use clap::Args;

/// Flags of `shoal controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {}

/// Runs `shoal controller`.
pub async fn run(_args: ControllerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("shoal controller is not available in this build yet")
}
