//! `shoal secret create|ls|inspect|rm|rotate-key` and `shoal config create|ls|inspect|rm`.
//! Output shows metadata only; `config inspect --data` prints a config's value (secrets
//! cannot be read back).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use shoal_api::secrets::FileView;
use shoal_core::secret::{FileKind, MAX_SIZE};
use zeroize::Zeroizing;

use super::table::{self, Output};
use super::{CmdResult, ConnArgs, EXIT_OK, Failure};

/// `shoal secret`.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SecretCommand,
}

/// Secret subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret from a file (`-` reads stdin); at most 500 KiB, immutable.
    Create(CreateArgs),
    /// List secrets (name, size, digest, creation, users).
    Ls(LsArgs),
    /// Show a secret's metadata and the services using it (never its value).
    Inspect(InspectArgs),
    /// Remove a secret (refused while a service uses it).
    Rm(RmArgs),
    /// Re-seal every secret under the API's active key (the first line of its key file).
    RotateKey(RotateArgs),
}

/// `shoal config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// Config subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create a config from a file (`-` reads stdin); at most 500 KiB, immutable.
    Create(CreateArgs),
    /// List configs (name, size, digest, creation, users).
    Ls(LsArgs),
    /// Show a config's metadata and users, or with --data its value.
    Inspect(ConfigInspectArgs),
    /// Remove a config (refused while a service uses it).
    Rm(RmArgs),
}

/// Flags of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name (a DNS label), unique in the namespace.
    pub name: String,
    /// File holding the value; `-` reads stdin.
    pub file: PathBuf,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Flags of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Every namespace, not only -n.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Flags of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Name.
    pub name: String,
    /// Output format (table shows a summary).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Flags of `config inspect`.
#[derive(Debug, Args)]
pub struct ConfigInspectArgs {
    /// Name.
    pub name: String,
    /// Print the config's value instead of its metadata.
    #[arg(long)]
    pub data: bool,
    /// Output format of the metadata.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Flags of `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Names.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Flags of `rotate-key`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shoal secret …`.
pub async fn secret(a: SecretArgs) -> CmdResult {
    let kind = FileKind::Secret;
    match a.command {
        SecretCommand::Create(a) => create(kind, a).await,
        SecretCommand::Ls(a) => ls(kind, a).await,
        SecretCommand::Inspect(a) => inspect(kind, &a.name, a.output, &a.conn).await,
        SecretCommand::Rm(a) => rm(kind, a).await,
        SecretCommand::RotateKey(a) => {
            let r = a.conn.client().rotate_secret_key().await?;
            println!(
                "every secret is sealed under key {}: {} re-sealed, {} already were",
                r.active_key, r.resealed, r.unchanged
            );
            Ok(EXIT_OK)
        }
    }
}

/// Runs `shoal config …`.
pub async fn config(a: ConfigArgs) -> CmdResult {
    let kind = FileKind::Config;
    match a.command {
        ConfigCommand::Create(a) => create(kind, a).await,
        ConfigCommand::Ls(a) => ls(kind, a).await,
        ConfigCommand::Inspect(a) if a.data => {
            let value = a.conn.client().config_data(a.conn.ns(), &a.name).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&value)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))?;
            Ok(EXIT_OK)
        }
        ConfigCommand::Inspect(a) => inspect(kind, &a.name, a.output, &a.conn).await,
        ConfigCommand::Rm(a) => rm(kind, a).await,
    }
}

/// Reads the value from a file or stdin, refusing more than the API accepts.
fn read_value(path: &PathBuf) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut value = Zeroizing::new(Vec::new());
    let limit = MAX_SIZE as u64 + 1;
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut value)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut value))
    };
    read.map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    if value.len() > MAX_SIZE {
        return Err(Failure::invalid(format!(
            "{} is larger than 500 KiB, the most a secret or config holds",
            path.display()
        )));
    }
    Ok(value)
}

async fn create(kind: FileKind, a: CreateArgs) -> CmdResult {
    let value = read_value(&a.file)?;
    let ns = a.conn.ns();
    let v = a
        .conn
        .client()
        .create_file(kind, ns, &a.name, value.to_vec())
        .await?;
    println!(
        "{kind} {}/{} created ({} bytes, {})",
        v.namespace, v.name, v.size, v.digest
    );
    Ok(EXIT_OK)
}

fn users(v: &FileView) -> String {
    if v.used_by.is_empty() {
        return "-".to_string();
    }
    v.used_by
        .iter()
        .map(|u| match (u.manifest, u.tasks) {
            (true, _) => u.service.clone(),
            (false, n) => format!("{} ({n} old task(s))", u.service),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn short_digest(d: &str) -> String {
    match d.rsplit_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", &hex[..hex.len().min(12)]),
        None => d.to_string(),
    }
}

async fn ls(kind: FileKind, a: LsArgs) -> CmdResult {
    let ns = (!a.all_namespaces).then_some(a.conn.ns());
    let list = a.conn.client().list_files(kind, ns).await?;
    let text = match a.output {
        Output::Json => table::json(&list),
        Output::Yaml => table::yaml(&list),
        Output::Table | Output::Wide => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|v| {
                    let digest = if a.output == Output::Wide {
                        v.digest.clone()
                    } else {
                        short_digest(&v.digest)
                    };
                    vec![
                        v.namespace.clone(),
                        v.name.clone(),
                        v.size.to_string(),
                        digest,
                        v.created_at.to_string(),
                        users(v),
                    ]
                })
                .collect();
            table::render(
                &["NAMESPACE", "NAME", "SIZE", "DIGEST", "CREATED", "USED BY"],
                &rows,
            )
        }
    };
    print!("{text}");
    Ok(EXIT_OK)
}

async fn inspect(kind: FileKind, name: &str, output: Output, conn: &ConnArgs) -> CmdResult {
    let v = conn.client().get_file(kind, conn.ns(), name).await?;
    let text = match output {
        Output::Json => table::json(&v),
        Output::Yaml => table::yaml(&v),
        Output::Table | Output::Wide => format!(
            "{kind}: {}/{}\nsize: {} bytes\ndigest: {}\ncreated: {}\nused by: {}\n",
            v.namespace,
            v.name,
            v.size,
            v.digest,
            v.created_at,
            users(&v)
        ),
    };
    print!("{text}");
    Ok(EXIT_OK)
}

async fn rm(kind: FileKind, a: RmArgs) -> CmdResult {
    let client = a.conn.client();
    let mut failures = Vec::new();
    for name in &a.names {
        match client.delete_file(kind, a.conn.ns(), name).await {
            Ok(d) => println!("{kind} {}/{} removed", d.namespace, d.name),
            Err(e) => failures.push(Failure::from(e)),
        }
    }
    match failures.len() {
        0 => Ok(EXIT_OK),
        1 => Err(failures.remove(0)),
        n => {
            for f in &failures {
                eprintln!("error: {}", f.message);
            }
            Err(Failure::failed(format!(
                "{n} of {} {kind}s could not be removed",
                a.names.len()
            )))
        }
    }
}
