//! `shoal scale`, `shoal rollout status|undo` and `shoal node ...`.

use shoal_core::units::Dur;
use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use shoal_api::types::NodePatch;
use shoal_core::model::Availability;

use super::table::{Output, json, render};
use super::wait::{Target, wait_for};
use super::{CmdResult, ConnArgs, EXIT_OK, Failure};

/// Flags of `shoal scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `NAME=REPLICAS` pairs.
    #[arg(required = true)]
    pub pairs: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shoal scale`.
pub async fn scale(a: ScaleArgs) -> CmdResult {
    let mut wanted = Vec::new();
    for p in &a.pairs {
        let (name, n) = p
            .split_once('=')
            .ok_or_else(|| Failure::invalid(format!("{p:?} is not NAME=REPLICAS")))?;
        let n: u64 = n
            .parse()
            .map_err(|_| Failure::invalid(format!("{p:?}: replicas must be a whole number")))?;
        wanted.push((name.to_string(), n));
    }
    let client = a.conn.client();
    let ns = a.conn.ns();
    for (name, n) in wanted {
        let mut done = false;
        for _ in 0..5 {
            let s = client
                .get_service(ns, &name)
                .await?
                .ok_or_else(|| Failure::failed(format!("service {ns}/{name} not found")))?;
            let svc = s.service.clone().ok_or_else(|| {
                Failure::failed(format!(
                    "service {ns}/{name} has an invalid manifest: {}",
                    s.error.clone().unwrap_or_default()
                ))
            })?;
            if svc.spec.desired_replicas().is_none() {
                return Err(Failure::invalid(format!(
                    "service {ns}/{name} is global: it has no replica count"
                )));
            }
            let (text, kept) = shoal_api::manifest::scaled_manifest(&s.manifest, &svc, n)
                .map_err(|e| Failure::failed(format!("cannot write the manifest: {e}")))?;
            if !kept {
                eprintln!(
                    "note: service/{name}: the manifest could not be edited in place; it was re-serialized (comments and formatting were not kept)"
                );
            }
            match client.put_service(ns, &name, &text, Some(s.revision)).await {
                Ok(_) => {
                    println!("service/{name} scaled to {n}");
                    done = true;
                    break;
                }
                Err(e) if e.status() == Some(409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !done {
            return Err(Failure::failed(format!(
                "service {ns}/{name} kept changing while scaling; try again"
            )));
        }
    }
    Ok(EXIT_OK)
}

/// Flags of `shoal rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    cmd: RolloutCmd,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Debug, Subcommand)]
enum RolloutCmd {
    /// Wait until the service's rollout converges (exit 0) or fails (1), or the timeout passes (3).
    Status {
        /// Service name.
        name: String,
        /// How long to wait.
        #[arg(long, default_value = "5m")]
        timeout: Dur,
    },
    /// Restore the service's previous spec: writes it back as the manifest (metadata kept),
    /// and the controller rolls the tasks back with the service's update policy.
    Undo {
        /// Service name.
        name: String,
        /// Then wait until the service converges (exit 0) or fails (1).
        #[arg(long)]
        wait: bool,
        /// How long to wait with `--wait`.
        #[arg(long, default_value = "5m")]
        timeout: Dur,
    },
}

/// Runs `shoal rollout ...`.
pub async fn rollout(a: RolloutArgs) -> CmdResult {
    let client = a.conn.client();
    let ns = a.conn.ns();
    match a.cmd {
        RolloutCmd::Status { name, timeout } => {
            let s = client
                .get_service(ns, &name)
                .await?
                .ok_or_else(|| Failure::failed(format!("service {ns}/{name} not found")))?;
            wait_for(
                &client,
                vec![Target {
                    namespace: ns.to_string(),
                    name,
                    revision: s.revision,
                }],
                timeout.get(),
            )
            .await
        }
        RolloutCmd::Undo {
            name,
            wait,
            timeout,
        } => {
            let res = client.rollback_service(ns, &name, None).await?;
            match res.action {
                shoal_api::types::Action::Unchanged => println!(
                    "service/{name} unchanged: the manifest already holds the previous spec"
                ),
                _ => println!(
                    "service/{name} rolled back to its previous spec (revision {})",
                    res.revision
                ),
            }
            if !wait {
                return Ok(EXIT_OK);
            }
            wait_for(
                &client,
                vec![Target {
                    namespace: ns.to_string(),
                    name,
                    revision: res.revision,
                }],
                timeout.get(),
            )
            .await
        }
    }
}

/// Flags of `shoal node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    cmd: NodeCmd,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// List nodes.
    Ls {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Move the node's tasks elsewhere and give it no new ones.
    Drain {
        /// Node id.
        node: String,
    },
    /// Keep the node's tasks but give it no new ones.
    Pause {
        /// Node id.
        node: String,
    },
    /// Let the node receive tasks again.
    Activate {
        /// Node id.
        node: String,
    },
    /// Remove a node: the controller deletes its tasks (replaced elsewhere), their statuses
    /// and its settings. Refused while the node is ready, unless --force.
    Rm {
        /// Node id.
        node: String,
        /// Remove it even though its agent is alive.
        #[arg(long)]
        force: bool,
    },
    /// Set (`k=v`) or remove (`k-`) operator labels.
    Label {
        /// Node id.
        node: String,
        /// Changes.
        #[arg(required = true)]
        changes: Vec<String>,
    },
}

/// Runs `shoal node ...`.
pub async fn node(a: NodeArgs) -> CmdResult {
    let client = a.conn.client();
    let (id, patch) = match a.cmd {
        NodeCmd::Ls { output } => {
            let list = client.nodes().await?;
            if output == Output::Json {
                print!("{}", json(&list));
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.clone(),
                            n.info.as_ref().map_or("-".into(), |i| i.hostname.clone()),
                            if n.ready {
                                "Ready".into()
                            } else {
                                "Down".into()
                            },
                            n.config.availability.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY"], &rows)
                );
            }
            return Ok(EXIT_OK);
        }
        NodeCmd::Rm { node, force } => {
            let v = client.remove_node(&node, force).await?;
            println!(
                "node/{node} removed{}",
                if v.ready {
                    " (its agent was still alive)"
                } else {
                    ""
                }
            );
            println!("{}", rbac_hint(&node));
            return Ok(EXIT_OK);
        }
        NodeCmd::Drain { node } => (
            node,
            NodePatch {
                availability: Some(Availability::Drain),
                ..Default::default()
            },
        ),
        NodeCmd::Pause { node } => (
            node,
            NodePatch {
                availability: Some(Availability::Pause),
                ..Default::default()
            },
        ),
        NodeCmd::Activate { node } => (
            node,
            NodePatch {
                availability: Some(Availability::Active),
                ..Default::default()
            },
        ),
        NodeCmd::Label { node, changes } => {
            let mut labels = BTreeMap::new();
            for c in changes {
                if let Some((k, v)) = c.split_once('=') {
                    labels.insert(k.to_string(), Some(v.to_string()));
                } else if let Some(k) = c.strip_suffix('-') {
                    labels.insert(k.to_string(), None);
                } else {
                    return Err(Failure::invalid(format!(
                        "{c:?}: use key=value to set or key- to remove"
                    )));
                }
            }
            (
                node,
                NodePatch {
                    availability: None,
                    labels,
                },
            )
        }
    };
    let v = client.patch_node(&id, &patch).await?;
    let labels: Vec<String> = v
        .config
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "node/{id} availability={} labels={}",
        v.config.availability,
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(",")
        }
    );
    Ok(EXIT_OK)
}

/// What `node rm` reminds the operator of: on a secured etcd the node's store user outlives it.
fn rbac_hint(node: &str) -> String {
    format!(
        "on an etcd secured with `shoal rbac apply`, run it again with --prune and the remaining \
         --nodes to remove the store user {}",
        shoal_store::etcd::rbac::agent_user(node)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_rm_says_to_prune_the_nodes_store_user() {
        let hint = super::rbac_hint("core-02");
        assert!(hint.contains("--prune"), "{hint}");
        assert!(hint.contains("shoal-agent-core-02"), "{hint}");
    }

    use shoal_api::manifest::set_replicas_in_text;

    #[test]
    fn scale_edit_keeps_comments() {
        let t =
            "# top\napiVersion: shoal/v1\nspec:\n  # how many\n  replicas: 3 # three\n  image: x\n";
        assert_eq!(
            set_replicas_in_text(t, 5).unwrap(),
            "# top\napiVersion: shoal/v1\nspec:\n  # how many\n  replicas: 5 # three\n  image: x\n"
        );
        let t = "spec:\n  image: x\nmetadata:\n  replicas: 1\n";
        assert_eq!(
            set_replicas_in_text(t, 2).unwrap(),
            "spec:\n  replicas: 2\n  image: x\nmetadata:\n  replicas: 1\n"
        );
    }
}
