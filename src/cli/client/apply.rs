//! `shoal apply`, `shoal diff` and `shoal delete`.

use shoal_core::units::Dur;

use clap::Args;
use shoal_api::client::ApplyOptions;
use shoal_api::types::Action;

use super::files::{join, read_manifests};
use super::wait::{Target, wait_for};
use super::{CmdResult, ConnArgs, EXIT_FAILED, EXIT_OK, Failure};

/// Flags of `shoal apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest files or directories (recursively; `-` reads standard input).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Show what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete services matching `-l` that are not in the manifests, only in the namespaces the
    /// manifests name (or `-n`).
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector for `--prune` (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Wait until every applied service has converged (or failed).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (exit 3 when it passes).
    #[arg(long, default_value = "5m")]
    pub timeout: Dur,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shoal apply`.
pub async fn apply(a: ApplyArgs) -> CmdResult {
    let docs = read_manifests(&a.files, a.conn.namespace.as_deref())?;
    let client = a.conn.client();
    let opts = ApplyOptions {
        dry_run: a.dry_run,
        prune_selector: if a.prune { a.selector.clone() } else { None },
        namespace: a.conn.namespace.clone(),
    };
    let resp = client.apply(&join(&docs), &opts).await?;
    let suffix = if a.dry_run { " (dry run)" } else { "" };
    for r in &resp.results {
        let ns = if r.namespace == "default" {
            String::new()
        } else {
            format!("{}/", r.namespace)
        };
        println!("service/{ns}{} {}{suffix}", r.name, r.action);
    }
    if !a.wait || a.dry_run {
        return Ok(EXIT_OK);
    }
    let targets: Vec<Target> = resp
        .results
        .iter()
        .filter(|r| r.action != Action::Pruned)
        .map(|r| Target {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            revision: r.revision,
        })
        .collect();
    wait_for(&client, targets, a.timeout.get()).await
}

/// Flags of `shoal diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Manifest files or directories (`-` reads standard input).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shoal diff`: exit 1 when some service differs, 0 when none does.
pub async fn diff(a: DiffArgs) -> CmdResult {
    let docs = read_manifests(&a.files, a.conn.namespace.as_deref())?;
    let client = a.conn.client();
    let mut differ = false;
    for d in &docs {
        let id = d.doc.service.id();
        let live = client.get_service(&id.namespace, &id.name).await?;
        let (old, same) = match &live {
            Some(l) => (
                l.manifest.clone(),
                l.service.as_ref() == Some(&d.doc.service),
            ),
            None => (String::new(), false),
        };
        if same {
            continue;
        }
        differ = true;
        let text = similar::TextDiff::from_lines(&old, &d.doc.text);
        print!(
            "{}",
            text.unified_diff()
                .context_radius(3)
                .header(&format!("live/{id}"), &format!("{}/{id}", d.source))
        );
    }
    Ok(if differ { EXIT_FAILED } else { EXIT_OK })
}

/// Flags of `shoal delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// `service` (with NAME...); omit with `-f`.
    pub kind: Option<String>,
    /// Service names.
    pub names: Vec<String>,
    /// Delete the services these manifests describe.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Do not fail when a service does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shoal delete`.
pub async fn delete(a: DeleteArgs) -> CmdResult {
    let mut ids = Vec::new();
    if !a.files.is_empty() {
        for d in read_manifests(&a.files, a.conn.namespace.as_deref())? {
            let id = d.doc.service.id();
            ids.push((id.namespace, id.name));
        }
    } else {
        match a.kind.as_deref() {
            Some("service" | "services" | "svc") => {}
            Some(other) => {
                return Err(Failure::invalid(format!(
                    "cannot delete {other:?}: only `service NAME` or -f FILE"
                )));
            }
            None => {
                return Err(Failure::invalid(
                    "say what to delete: `shoal delete service NAME` or `-f FILE`",
                ));
            }
        }
        if a.names.is_empty() {
            return Err(Failure::invalid("name the services to delete"));
        }
        ids.extend(a.names.iter().map(|n| (a.conn.ns().to_string(), n.clone())));
    }
    let client = a.conn.client();
    let mut code = EXIT_OK;
    for (ns, name) in ids {
        match client.delete_service(&ns, &name).await {
            Ok(_) => println!("service/{name} deleted"),
            Err(e) if e.status() == Some(404) && a.ignore_not_found => {}
            Err(e) if e.status() == Some(404) => {
                eprintln!("error: service {ns}/{name} not found");
                code = EXIT_FAILED;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}
