//! Client subcommands that talk to the API server: apply, diff, get, describe, logs, delete, scale,
//! rollout status, node operations, secrets and configs.
//!
//! Exit codes are for pipelines, one table for every command (the README's): 0 success
//! (converged, a job run completed, no difference), 1 a verdict (rollout paused or rolled
//! back, a job run failed, unschedulable,
//! difference found, the server refused), 2 invalid input (manifest, flags, arguments),
//! 3 timeout, 4 the API could not be reached or answered 5xx after retries (`logs`: a part of
//! the output could not be read).

mod apply;
mod files;
mod follow;
mod get;
mod jobs;
mod logs;
mod ops;
mod secrets;
pub(crate) mod table;
mod wait;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use shoal_api::client::CaBundle;
use shoal_api::{Client, ClientError};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: failed (or a difference was found).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: invalid input.
pub const EXIT_INVALID: u8 = 2;
/// Exit code: timeout.
pub const EXIT_TIMEOUT: u8 = 3;
/// Exit code: the API could not be reached, or answered 5xx after retries.
pub const EXIT_UNREACHABLE: u8 = 4;

/// The exit code table, shown by `--help` (and in the README).
pub const EXIT_HELP: &str = "Exit codes: 0 success/converged/job completed/no difference, 1 failed (rollout paused or rolled back, job run failed, unschedulable, difference found, refused), 2 invalid input, 3 timeout, 4 API unreachable or 5xx (logs: a node's part missing).";

/// How to reach the API server; accepted by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// API server URL.
    #[arg(
        long,
        env = "SHOAL_SERVER",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub server: String,
    /// Bearer token for the API server.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Namespace (default `default`). With `-f`, documents that name no namespace go into it
    /// and a document naming another one is refused; `apply --prune` prunes only in it.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// PEM file of the CA that signed an `https://` server's certificate (trusted alone).
    #[arg(long, env = "SHOAL_CA", value_name = "FILE", value_parser = parse_ca, global = true)]
    pub ca: Option<CaBundle>,
}

impl ConnArgs {
    /// The namespace commands act in: `-n`, else `default`.
    pub fn ns(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(shoal_core::manifest::DEFAULT_NAMESPACE)
    }

    fn client(&self) -> Client {
        let Some(ca) = &self.ca else {
            return Client::new(&self.server, self.token.clone());
        };
        match Client::with_ca(&self.server, self.token.clone(), ca) {
            Ok(client) => client,
            Err(e) => {
                // The CA file was read and parsed with the flags; only TLS setup is left.
                eprintln!("error: {e}");
                std::process::exit(i32::from(EXIT_INVALID));
            }
        }
    }
}

fn parse_ca(path: &str) -> Result<CaBundle, String> {
    CaBundle::load(std::path::Path::new(path)).map_err(|e| e.to_string())
}

/// Client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create or update services from manifests (files, directories, `-` for stdin).
    #[command(after_help = EXIT_HELP)]
    Apply(apply::ApplyArgs),
    /// Show how manifests differ from the stored ones (exit 1 when they differ).
    #[command(after_help = EXIT_HELP)]
    Diff(apply::DiffArgs),
    /// List services, tasks or nodes.
    #[command(after_help = EXIT_HELP)]
    Get(get::GetArgs),
    /// Show a service or job in detail: spec, tasks, rollout or runs, scheduling problems,
    /// events.
    #[command(after_help = EXIT_HELP)]
    Describe(get::DescribeArgs),
    /// Print the output of a service's tasks (or one task), merged from their nodes.
    #[command(after_help = EXIT_HELP)]
    Logs(logs::LogsArgs),
    /// Delete services by name or by manifest.
    #[command(after_help = EXIT_HELP)]
    Delete(apply::DeleteArgs),
    /// Set the replica count of services: `shoal scale web=5 api=2`.
    #[command(after_help = EXIT_HELP)]
    Scale(ops::ScaleArgs),
    /// Follow rollouts.
    #[command(after_help = EXIT_HELP)]
    Rollout(ops::RolloutArgs),
    /// Start job runs: `shoal job run NAME [--force] [--wait]`.
    #[command(after_help = EXIT_HELP)]
    Job(jobs::JobArgs),
    /// List nodes and change their availability or labels.
    #[command(after_help = EXIT_HELP)]
    Node(ops::NodeArgs),
    /// Manage secrets: encrypted at rest, delivered to tasks as in-memory files.
    #[command(after_help = EXIT_HELP)]
    Secret(secrets::SecretArgs),
    /// Manage configs: delivered to tasks as files.
    #[command(after_help = EXIT_HELP)]
    Config(secrets::ConfigArgs),
}

/// A failure with its exit code; the message goes to stderr.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// Invalid input (exit 2).
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_INVALID,
            message: message.into(),
        }
    }
    /// Failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Api {
                status: 400,
                details,
                ..
            } => {
                let mut msg = e.to_string();
                for d in details {
                    msg.push_str(&format!(
                        "\n  line {}, column {}: {}",
                        d.line, d.column, d.message
                    ));
                }
                Failure::invalid(msg)
            }
            e if e.is_transient() => Failure {
                code: EXIT_UNREACHABLE,
                message: e.to_string(),
            },
            _ => Failure::failed(e.to_string()),
        }
    }
}

/// Result of a client command.
pub type CmdResult = Result<u8, Failure>;

/// Runs a client subcommand.
pub async fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    let result = match command {
        ClientCommand::Apply(a) => apply::apply(a).await,
        ClientCommand::Diff(a) => apply::diff(a).await,
        ClientCommand::Get(a) => get::get(a).await,
        ClientCommand::Describe(a) => get::describe(a).await,
        ClientCommand::Logs(a) => logs::logs(a).await,
        ClientCommand::Delete(a) => apply::delete(a).await,
        ClientCommand::Scale(a) => ops::scale(a).await,
        ClientCommand::Rollout(a) => ops::rollout(a).await,
        ClientCommand::Job(a) => jobs::job(a).await,
        ClientCommand::Node(a) => ops::node(a).await,
        ClientCommand::Secret(a) => secrets::secret(a).await,
        ClientCommand::Config(a) => secrets::config(a).await,
    };
    Ok(ExitCode::from(match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> ClientError {
        ClientError::Api {
            status,
            message: format!("the server answered {status}"),
            details: Vec::new(),
            current_revision: None,
        }
    }

    #[test]
    fn server_faults_exit_4_and_only_a_400_is_invalid_input() {
        assert_eq!(Failure::from(answered(503)).code, EXIT_UNREACHABLE);
        assert_eq!(Failure::from(answered(500)).code, EXIT_UNREACHABLE);
        assert_eq!(Failure::from(answered(400)).code, EXIT_INVALID);
        assert_eq!(Failure::from(answered(409)).code, EXIT_FAILED);
    }
}
