//! `shoal rbac apply|show`: the etcd users and roles Shoal's components run as (see
//! `shoal_store::etcd::rbac` for the permission table). Run with etcd's root credentials.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use shoal_core::Keys;
use shoal_store::etcd::rbac;

use crate::cli::StoreArgs;
use crate::cli::client::table;

/// `shoal rbac` subcommands.
#[derive(Debug, Args)]
pub struct RbacArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RbacCommand,
}

/// Rbac subcommands.
#[derive(Debug, Subcommand)]
pub enum RbacCommand {
    /// Create or update the users and roles (idempotent); passwords go to DIR/<user>.password.
    Apply(ApplyArgs),
    /// Print the shoal-* roles in etcd: users, permissions, and what `apply` would add.
    Show(ShowArgs),
}

/// Flags of `shoal rbac apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Store flags (etcd, with credentials allowed to manage users: root).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Node IDs whose agents get a user, comma-separated; may grow on later runs.
    #[arg(long, value_delimiter = ',', required = true, value_name = "N1,N2,...")]
    pub nodes: Vec<String>,
    /// Directory for the password files (created with mode 0700; files 0600).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Remove the agent users of nodes no longer listed.
    #[arg(long)]
    pub prune: bool,
}

/// Flags of `shoal rbac show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Store flags.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs a `shoal rbac` subcommand.
pub async fn run(args: RbacArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RbacCommand::Apply(a) => apply(a).await,
        RbacCommand::Show(a) => show(a).await,
    }
}

async fn apply(a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let store = shoal_store::open_etcd(&a.store.store, &a.store.options()).await?;
    let keys = Keys::new(&a.store.prefix);
    let nodes: Vec<String> = a
        .nodes
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    let report = rbac::apply(&store, &keys, &nodes, &a.out, a.prune).await?;
    for r in &report.roles_created {
        println!("role {r} created");
    }
    for g in &report.granted {
        println!("granted {g}");
    }
    for r in &report.revoked {
        println!("revoked {r}");
    }
    for u in &report.users_created {
        println!("user {u} created");
    }
    for u in &report.passwords_set {
        println!("user {u}: new password (its password file was missing)");
    }
    for u in &report.removed {
        println!("user {u} removed");
    }
    if !report.changed() {
        println!("users and roles already up to date");
    }
    for u in &report.stale {
        println!("user {u} kept: its node is not in --nodes (--prune removes it)");
    }
    println!(
        "passwords in {} (one <user>.password file each)",
        a.out.display()
    );
    if a.store.store_user.is_none() && a.store.store_cert.is_none() {
        eprintln!(
            "note: no --store-user was given, so etcd's authentication is off; the users and \
             roles take effect once it is on (etcdctl user add root; etcdctl auth enable)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = shoal_store::open_etcd(&a.store.store, &a.store.options()).await?;
    let roles = rbac::show(&store, &Keys::new(&a.store.prefix)).await?;
    let mut rows = Vec::new();
    for role in &roles {
        let users = if role.users.is_empty() {
            "-".to_string()
        } else {
            role.users.join(",")
        };
        for (access, key) in &role.grants {
            rows.push(vec![
                role.name.clone(),
                users.clone(),
                access.clone(),
                key.clone(),
            ]);
        }
        for (access, key) in &role.missing {
            rows.push(vec![
                role.name.clone(),
                users.clone(),
                format!("{access} (missing: run shoal rbac apply)"),
                key.clone(),
            ]);
        }
    }
    if rows.is_empty() {
        println!("no shoal-* roles in etcd: run shoal rbac apply --nodes ... --out DIR");
    } else {
        print!(
            "{}",
            table::render(&["ROLE", "USERS", "ACCESS", "KEY"], &rows)
        );
    }
    Ok(ExitCode::SUCCESS)
}
