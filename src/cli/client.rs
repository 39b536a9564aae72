//! Client subcommands that talk to the API server.

use std::process::ExitCode;

use clap::Subcommand;

/// Client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {}

/// Runs a client subcommand.
pub async fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {}
}
