//! `shoal token create|ls|revoke`: the API's token file. A token is printed once, when it is
//! created; the file keeps only its SHA-256 (see `shoal_api::auth::token`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use shoal_api::auth::{NewToken, Role, TokenTable, token};

use crate::cli::client::table;

/// `shoal token` subcommands.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token, print it once, and append its hashed line to the token file.
    Create(CreateArgs),
    /// List the tokens of a token file (IDs and roles; the file holds no token).
    Ls(FileArg),
    /// Remove a token from the token file; a running API refuses it from its next request.
    Revoke(RevokeArgs),
}

/// The token file flag.
#[derive(Debug, Args)]
pub struct FileArg {
    /// Token file (the one `shoal api --token-file` reads).
    #[arg(long, env = "SHOAL_TOKEN_FILE", value_name = "FILE")]
    pub file: PathBuf,
}

/// Role flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleFlag {
    /// GET requests only.
    Read,
    /// Change services, secrets and configs (in --namespaces, or all).
    Write,
    /// Everything, including nodes and cluster-wide settings.
    Admin,
    /// What the agent of --node needs (its own secrets).
    Node,
}

/// Flags of `shoal token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Token file.
    #[command(flatten)]
    pub file: FileArg,
    /// What the token may do.
    #[arg(long, value_enum)]
    pub role: RoleFlag,
    /// Namespaces a write token may change, comma-separated (default: all).
    #[arg(long, value_name = "NS,...")]
    pub namespaces: Option<String>,
    /// Node a node token speaks for.
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    /// Token ID (default: `<role>-<random>`); letters, digits, `-` and `_`.
    #[arg(long)]
    pub id: Option<String>,
}

/// Flags of `shoal token revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// ID of the token to revoke.
    pub id: String,
    /// Token file.
    #[command(flatten)]
    pub file: FileArg,
}

/// Runs a `shoal token` subcommand.
pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TokenCommand::Create(a) => create(a),
        TokenCommand::Ls(a) => list(a),
        TokenCommand::Revoke(a) => {
            token::revoke(&a.file.file, &a.id)?;
            eprintln!("token {} revoked", a.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let role = match a.role {
        RoleFlag::Read => Role::Read,
        RoleFlag::Write => Role::Write,
        RoleFlag::Admin => Role::Admin,
        RoleFlag::Node => Role::Node,
    };
    let namespaces = match &a.namespaces {
        Some(list) => token::parse_namespaces(list).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let new = NewToken {
        id: a.id,
        role,
        namespaces,
        node: a.node,
    };
    let created = token::create(&a.file.file, &new)
        .with_context(|| format!("creating a token in {}", a.file.file.display()))?;
    println!("{}", created.reveal());
    eprintln!(
        "token {} ({role}) added to {}; it is shown only now: store it where it is used",
        created.id(),
        a.file.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn list(a: FileArg) -> anyhow::Result<ExitCode> {
    let tokens = TokenTable::load(&a.file)?;
    let rows: Vec<Vec<String>> = tokens
        .entries()
        .map(|e| {
            let p = e.principal();
            let namespaces = if p.namespaces().is_empty() {
                match p.role() {
                    Role::Write => "*".to_string(),
                    _ => "-".to_string(),
                }
            } else {
                p.namespaces().iter().cloned().collect::<Vec<_>>().join(",")
            };
            vec![
                p.token_id().to_string(),
                p.role().to_string(),
                namespaces,
                p.node().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["ID", "ROLE", "NAMESPACES", "NODE"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}
