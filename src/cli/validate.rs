//! `shoal validate` and `shoal schema`.

use std::process::ExitCode;

use clap::Args;

/// Flags of `shoal validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories to check (`-` reads standard input).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

/// Flags of `shoal schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {}

/// Runs `shoal validate`.
pub async fn run_validate(_args: ValidateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

/// Runs `shoal schema`.
pub async fn run_schema(_args: SchemaArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
