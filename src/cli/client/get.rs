//! `shoal get` and `shoal describe`.

use std::time::Duration;

use clap::{Args, ValueEnum};
use shoal_api::types::{NodeEntry, ServiceResource, TaskEntry};
use shoal_core::manifest::PortMode;
use shoal_core::view::in_slot_order;

use super::follow::{Followed, Follower};
use super::table::{Output, json, render, yaml};
use super::{CmdResult, ConnArgs, EXIT_OK, EXIT_UNREACHABLE, Failure};

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Services.
    #[value(alias = "service", alias = "svc")]
    Services,
    /// Tasks.
    #[value(alias = "task")]
    Tasks,
    /// Nodes.
    #[value(alias = "node")]
    Nodes,
    /// Jobs (services with mode replicated-job or global-job) and their last run.
    #[value(alias = "job")]
    Jobs,
}

/// Flags of `shoal get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// services, tasks or nodes.
    pub kind: Kind,
    /// One service or node by name; for tasks, the service whose tasks to list.
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Label selector (services).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Keep printing when something changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Tasks: also each slot's earlier finished tasks (its history), beneath its current
    /// task.
    #[arg(short = 'a', long)]
    pub all: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

fn replicas(s: &ServiceResource) -> (String, u64, u64) {
    let (running, desired) = s.replica_counts();
    (format!("{running}/{desired}"), running, desired)
}

fn state(s: &ServiceResource) -> String {
    s.phase()
}

fn service_rows(list: &[ServiceResource], wide: bool) -> String {
    let mut header = vec!["NAME", "MODE", "REPLICAS", "IMAGE", "PORTS", "STATUS"];
    if wide {
        header.extend(["UPDATED", "REVISION", "LABELS"]);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let spec = s.service.as_ref().map(|x| &x.spec);
            let mode = spec.map_or("-", |p| p.mode.as_str());
            let image = spec
                .and_then(|p| p.image.clone())
                .unwrap_or_else(|| "-".into());
            let ports = spec
                .map(|p| {
                    p.ports
                        .iter()
                        .map(|pt| match pt.published {
                            Some(h) => format!("{h}->{}/{}", pt.target, pt.protocol),
                            None => format!("{}/{}", pt.target, pt.protocol),
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "-".into());
            let mut row = vec![
                s.name.clone(),
                mode.into(),
                replicas(s).0,
                image,
                ports,
                state(s),
            ];
            if wide {
                row.push(
                    s.status
                        .as_ref()
                        .map_or("0".into(), |st| st.updated.to_string()),
                );
                row.push(s.revision.to_string());
                let labels = s.service.as_ref().map(|x| {
                    x.metadata
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                row.push(
                    labels
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| "<none>".into()),
                );
            }
            row
        })
        .collect();
    render(&header, &rows)
}

fn task_rows(list: &[TaskEntry], wide: bool, all: bool) -> String {
    let mut header = vec![
        "ID", "SERVICE", "SLOT", "NODE", "DESIRED", "STATE", "EXIT", "MESSAGE",
    ];
    if wide {
        header.extend(["IMAGE", "PORTS", "CONTAINER"]);
    }
    // IDs of history tasks are prefixed `\_ `, as `docker service ps` does.
    let rows: Vec<Vec<String>> = in_slot_order(list, all)
        .into_iter()
        .map(|t| {
            let st = t.status.as_ref();
            let id = if t.history {
                format!("\\_ {}", t.task.id)
            } else {
                t.task.id.clone()
            };
            let mut row = vec![
                id,
                t.task.service.name.clone(),
                t.task.slot.to_string(),
                t.task.node_id.clone(),
                format!("{:?}", t.task.desired_state).to_lowercase(),
                st.map_or("assigned".into(), |s| s.state.to_string()),
                st.and_then(|s| s.exit_code)
                    .map_or_else(|| "-".into(), |c| c.to_string()),
                st.and_then(|s| s.message.clone()).unwrap_or_default(),
            ];
            if wide {
                row.push(t.task.template.image.clone().unwrap_or_else(|| "-".into()));
                let ports = st.map(|s| {
                    s.host_ports
                        .iter()
                        .map(|p| format!("{}->{}", p.published, p.target))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                row.push(
                    ports
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "-".into()),
                );
                row.push(
                    st.and_then(|s| s.container_id.clone())
                        .map(|c| c.chars().take(12).collect())
                        .unwrap_or_else(|| "-".into()),
                );
            }
            row
        })
        .collect();
    render(&header, &rows)
}

fn node_rows(list: &[NodeEntry], wide: bool) -> String {
    let mut header = vec!["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "ADDRESS"];
    if wide {
        header.extend(["RUNTIMES", "CPUS", "MEMORY", "LABELS", "VERSION", "NAMES"]);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let info = n.info.as_ref();
            let mut row = vec![
                n.id.clone(),
                info.map_or("-".into(), |i| i.hostname.clone()),
                if n.ready {
                    "Ready".into()
                } else {
                    "Down".into()
                },
                n.config.availability.to_string(),
                info.map_or("-".into(), |i| i.address.clone()),
            ];
            if wide {
                row.push(info.map_or("-".into(), |i| {
                    i.runtimes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                }));
                row.push(info.map_or("-".into(), |i| i.capacity.cpus.to_string()));
                row.push(info.map_or("-".into(), |i| i.capacity.memory.to_string()));
                let mut labels = info.map(|i| i.labels.clone()).unwrap_or_default();
                labels.extend(n.config.labels.clone());
                let l = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                row.push(if l.is_empty() { "<none>".into() } else { l });
                row.push(info.map_or("-".into(), |i| i.agent_version.clone()));
                // Why the node's tasks get no names, as its agent published it.
                row.push(
                    info.and_then(|i| i.network_unavailable.as_ref())
                        .map_or("-".into(), |why| format!("unavailable: {why}")),
                );
            }
            row
        })
        .collect();
    render(&header, &rows)
}

async fn render_once(a: &GetArgs) -> Result<String, Failure> {
    let client = a.conn.client();
    let ns = a.conn.ns();
    let wide = a.output == Output::Wide;
    Ok(match a.kind {
        Kind::Services => {
            let list = match &a.name {
                Some(n) => vec![
                    client
                        .get_service(ns, n)
                        .await?
                        .ok_or_else(|| Failure::failed(format!("service {ns}/{n} not found")))?,
                ],
                None => {
                    client
                        .list_services(Some(ns), a.selector.as_deref())
                        .await?
                }
            };
            match a.output {
                Output::Json if a.name.is_some() => json(&list[0]),
                Output::Json => json(&list),
                Output::Yaml => list
                    .iter()
                    .map(|s| {
                        let m = &s.manifest;
                        format!("---\n{m}{}", if m.ends_with('\n') { "" } else { "\n" })
                    })
                    .collect(),
                _ => service_rows(&list, wide),
            }
        }
        Kind::Tasks => {
            let service = a.name.as_ref().map(|n| {
                if n.contains('/') {
                    n.clone()
                } else {
                    format!("{ns}/{n}")
                }
            });
            let list = client.tasks(service.as_deref(), None).await?;
            let shown = in_slot_order(&list, a.all);
            match a.output {
                Output::Json => json(&shown),
                Output::Yaml => yaml(&shown),
                _ => task_rows(&list, wide, a.all),
            }
        }
        Kind::Jobs => {
            let mut list = match &a.name {
                Some(n) => vec![
                    client
                        .get_service(ns, n)
                        .await?
                        .ok_or_else(|| Failure::failed(format!("job {ns}/{n} not found")))?,
                ],
                None => {
                    client
                        .list_services(Some(ns), a.selector.as_deref())
                        .await?
                }
            };
            list.retain(|s| s.service.as_ref().is_some_and(|x| x.spec.mode.is_job()));
            match a.output {
                Output::Json => json(&list),
                Output::Yaml => yaml(&list),
                _ => super::jobs::job_rows(&list, shoal_core::Timestamp::now()),
            }
        }
        Kind::Nodes => {
            let mut list = client.nodes().await?;
            if let Some(n) = &a.name {
                list.retain(|x| &x.id == n || x.info.as_ref().is_some_and(|i| &i.hostname == n));
                if list.is_empty() {
                    return Err(Failure::failed(format!("node {n} not found")));
                }
            }
            match a.output {
                Output::Json if a.name.is_some() => json(&list[0]),
                Output::Json => json(&list),
                Output::Yaml => yaml(&list),
                _ => node_rows(&list, wide),
            }
        }
    })
}

/// Runs `shoal get`.
pub async fn get(a: GetArgs) -> CmdResult {
    let mut last = render_once(&a).await?;
    print!("{last}");
    if !a.watch {
        return Ok(EXIT_OK);
    }
    // Nodes follow the whole stream (node records and settings are on it); a named service
    // only its own events.
    let service = a.name.as_ref().filter(|_| a.kind != Kind::Nodes).map(|n| {
        if n.contains('/') {
            n.clone()
        } else {
            format!("{}/{n}", a.conn.ns())
        }
    });
    let mut follower = Follower::new(a.conn.client(), service);
    loop {
        if let Followed::Lost(_) = follower.next().await? {
            continue;
        }
        // A burst of changes (a rollout step, the records of a fresh stream) prints once.
        while let Ok(step) = tokio::time::timeout(SETTLE, follower.next()).await {
            if let Followed::Lost(_) = step? {
                break;
            }
        }
        reprint(&a, &mut last).await?;
    }
}

/// How long `get --watch` lets a burst of changes settle before it reads again.
const SETTLE: Duration = Duration::from_millis(100);

/// Reads again and prints when the output changed; an API that is briefly unreachable is
/// skipped over rather than ending the watch.
async fn reprint(a: &GetArgs, last: &mut String) -> Result<(), Failure> {
    let now = match render_once(a).await {
        Ok(now) => now,
        Err(f) if f.code == EXIT_UNREACHABLE => return Ok(()),
        Err(f) => return Err(f),
    };
    if now != *last {
        println!();
        print!("{now}");
        *last = now;
    }
    Ok(())
}

/// Flags of `shoal describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// `service` or `job`.
    pub kind: String,
    /// Service or job name.
    pub name: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shoal describe service NAME`.
pub async fn describe(a: DescribeArgs) -> CmdResult {
    let job = matches!(a.kind.as_str(), "job" | "jobs");
    if !job && !matches!(a.kind.as_str(), "service" | "services" | "svc") {
        return Err(Failure::invalid(format!(
            "cannot describe {:?}: only `service NAME` or `job NAME`",
            a.kind
        )));
    }
    let client = a.conn.client();
    let ns = a.conn.ns();
    let s = client
        .get_service(ns, &a.name)
        .await?
        .ok_or_else(|| Failure::failed(format!("service {ns}/{} not found", a.name)))?;
    if job && !s.service.as_ref().is_some_and(|x| x.spec.mode.is_job()) {
        return Err(Failure::failed(format!(
            "{ns}/{} is a service, not a job: use `shoal describe service {}`",
            a.name, a.name
        )));
    }
    let tasks = client
        .tasks(Some(&format!("{ns}/{}", a.name)), None)
        .await?;
    let mut out = String::new();
    out.push_str(&format!(
        "Name:          {}\nNamespace:     {}\nRevision:      {}\n",
        s.name, s.namespace, s.revision
    ));
    if let Some(e) = &s.error {
        out.push_str(&format!("Manifest error: {e}\n"));
    }
    if let Some(svc) = &s.service {
        let labels: Vec<String> = svc
            .metadata
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!(
            "Labels:        {}\n",
            if labels.is_empty() {
                "<none>".into()
            } else {
                labels.join(",")
            }
        ));
        let spec = &svc.spec;
        let mode = match spec.desired_replicas() {
            Some(n) => format!("replicated ({n} replicas)"),
            None => spec.mode.as_str().into(),
        };
        out.push_str(&format!(
            "Mode:          {mode}\nRuntime:       {}\n",
            spec.runtime
        ));
        if let Some(i) = &spec.image {
            out.push_str(&format!("Image:         {i}\n"));
        }
        if !spec.command.is_empty() {
            out.push_str(&format!("Command:       {}\n", spec.command.join(" ")));
        }
        for p in &spec.ports {
            let host = match (p.published, p.mode) {
                (None, _) => "dynamic host port".to_string(),
                (Some(h), PortMode::Ingress) => format!("{h} on every node (ingress)"),
                (Some(h), PortMode::Host) => format!("host {h} on the task's node (host)"),
            };
            out.push_str(&format!(
                "Port:          {}/{} -> {host}\n",
                p.target, p.protocol
            ));
        }
        for c in &spec.placement.constraints {
            out.push_str(&format!("Constraint:    {c}\n"));
        }
    }
    match &s.status {
        None => out.push_str("Status:        not yet observed by the controller\n"),
        Some(st) => {
            out.push_str(&format!(
                "Replicas:      {} running / {} desired / {} updated (observed revision {})\n",
                st.running, st.desired, st.updated, st.observed_generation
            ));
            if let Some(r) = &st.rollout {
                out.push_str(&rollout_lines(r));
            }
            if let Some(u) = &st.unschedulable {
                out.push_str(&format!("Unschedulable: {u}\n"));
            }
            if let Some(e) = &st.error {
                out.push_str(&format!("Error:         {e}\n"));
            }
        }
    }
    out.push_str(&super::jobs::job_lines(&s, shoal_core::Timestamp::now()));
    out.push_str(&endpoint_lines(&s));
    let history = s
        .status
        .as_ref()
        .map(|st| st.rollout_history.clone())
        .unwrap_or_default();
    if !history.is_empty() {
        out.push_str("\nRollout history:\n");
        let rows: Vec<Vec<String>> = history
            .iter()
            .map(|h| {
                vec![
                    h.started_at.to_string(),
                    h.completed_at.map_or("-".into(), |t| t.to_string()),
                    h.state.to_string(),
                    h.image.clone().unwrap_or_else(|| "-".into()),
                    h.target_hash.chars().take(12).collect(),
                    h.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let header = [
            "STARTED",
            "COMPLETED",
            "STATE",
            "IMAGE",
            "TEMPLATE",
            "MESSAGE",
        ];
        for line in render(&header, &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str("\nTasks:\n");
    if tasks.is_empty() {
        out.push_str("  <none>\n");
    } else {
        for line in task_rows(&tasks, false, true).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str("\nEvents:\n");
    let events = s
        .status
        .as_ref()
        .map(|st| st.events.clone())
        .unwrap_or_default();
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .rev()
            .take(15)
            .rev()
            .map(|e| {
                vec![
                    e.time.to_string(),
                    e.kind.clone(),
                    e.reason.clone(),
                    e.message.clone(),
                ]
            })
            .collect();
        for line in render(&["TIME", "TYPE", "REASON", "MESSAGE"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    print!("{out}");
    Ok(EXIT_OK)
}

/// The rollout part of `describe`: state, progress, reason, and a warning when an automatic
/// rollback left the manifest naming a template that does not run.
pub(crate) fn rollout_lines(r: &shoal_core::model::RolloutStatus) -> String {
    let mut out = format!(
        "Rollout:       {} {}/{} updated",
        r.state, r.updated, r.total
    );
    if let Some(img) = &r.image {
        out.push_str(&format!(", image {img}"));
    }
    if let Some(prev) = &r.previous_image {
        out.push_str(&format!(" (from {prev})"));
    }
    out.push('\n');
    out.push_str(&format!("Started:       {}\n", r.started_at));
    if let Some(t) = r.completed_at {
        out.push_str(&format!("Completed:     {t}\n"));
    }
    if let Some(m) = &r.message {
        out.push_str(&format!("Message:       {m}\n"));
    }
    if r.state.is_rollback() {
        out.push_str(&format!(
            "Note:          the update to {} was rolled back automatically: the tasks run the \
             previous template ({}), not the manifest's. Change the manifest, or run \
             `shoal rollout undo` to make it match what runs.\n",
            r.image.as_deref().unwrap_or("the new template"),
            r.previous_image.as_deref().unwrap_or("previous spec"),
        ));
    }
    out
}

/// The `Endpoints:` section of `describe service`: names, address, ports, the tasks that
/// receive new connections, and the nodes where the service's tasks get no names (with the
/// agent's reason).
fn endpoint_lines(s: &shoal_api::types::ServiceResource) -> String {
    let mut out = published_endpoint_lines(s);
    for (node, why) in &s.names_unavailable {
        out.push_str(&format!(
            "  Unavailable: names, service addresses and ingress on {node}: {why}\n"
        ));
    }
    out
}

fn published_endpoint_lines(s: &shoal_api::types::ServiceResource) -> String {
    let Some(e) = &s.endpoints else {
        return "Endpoints:     not published yet (the controller writes them once it has seen the service)\n"
            .to_string();
    };
    let mut out = format!(
        "Endpoints:     {} (names {}, {}.{}, {}.{}.shoal)\n",
        e.address, s.name, s.name, s.namespace, s.name, s.namespace
    );
    for p in &e.ports {
        let mesh = p
            .ingress_port()
            .map(|h| format!(", ingress {h} on every node"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  Port:        {}:{}/{} ({}{mesh})\n",
            e.address, p.target, p.protocol, p.mode
        ));
    }
    if e.tasks.is_empty() {
        out.push_str("  Receiving:   no task (none running and healthy)\n");
    }
    for t in &e.tasks {
        let ports: Vec<String> = t
            .ports
            .iter()
            .map(|p| format!("{}:{}->{}", t.address, p.published, p.target))
            .collect();
        out.push_str(&format!(
            "  Receiving:   {} on {} {}\n",
            t.task_id,
            t.node_id,
            ports.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_api::types::ServiceResource;
    use shoal_core::ServiceStatus;

    /// `get` says Converged exactly when `--wait` would return 0: all running *and* updated.
    #[test]
    fn get_and_wait_agree_on_converged() {
        let status = |running, updated| ServiceStatus {
            observed_generation: 3,
            desired: 2,
            running,
            updated,
            ..Default::default()
        };
        let resource = |st: ServiceStatus| {
            let mut v = serde_json::json!({
                "namespace": "default", "name": "web", "revision": 3, "manifest": "",
            });
            v["status"] = serde_json::to_value(st).unwrap();
            serde_json::from_value::<ServiceResource>(v).unwrap()
        };
        assert_eq!(super::state(&resource(status(2, 2))), "Converged");
        assert_eq!(super::state(&resource(status(2, 1))), "Progressing");
        assert_eq!(super::state(&resource(status(1, 2))), "Progressing");
    }

    /// `get nodes -o wide` says which nodes give their tasks no names, and why.
    #[test]
    fn wide_node_rows_show_why_names_are_unavailable() {
        let node = |id: &str, why: Option<&str>| {
            let mut info = serde_json::json!({"id":id,"hostname":id,"address":"10.0.0.1",
                "runtimes":["docker"],"capacity":{"cpus":2.0,"memory":"1Gi"},
                "agentVersion":"0.1.0","startedAt":"2026-01-01T00:00:00Z"});
            if let Some(w) = why {
                info["networkUnavailable"] = w.into();
            }
            serde_json::from_value::<shoal_api::types::NodeEntry>(serde_json::json!({
                "id": id, "info": info, "config": {}, "ready": true, "configRevision": 0,
            }))
            .unwrap()
        };
        let out = super::node_rows(
            &[
                node("n1", None),
                node("n2", Some("the agent lacks CAP_NET_ADMIN")),
            ],
            true,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].trim_end().ends_with("NAMES"), "{out}");
        assert!(lines[1].trim_end().ends_with(" -"), "{out}");
        assert!(
            lines[2].ends_with("unavailable: the agent lacks CAP_NET_ADMIN"),
            "{out}"
        );
    }

    /// `describe service` says on which nodes the service's tasks get no names, and why.
    #[test]
    fn describe_shows_nodes_without_names_and_why() {
        let mut s = serde_json::from_value::<ServiceResource>(serde_json::json!({
            "namespace": "default", "name": "web", "revision": 3, "manifest": "",
            "endpoints": {
                "service": {"namespace": "default", "name": "web"},
                "address": "127.64.0.7", "ports": [], "tasks": [],
            },
        }))
        .unwrap();
        assert!(!super::endpoint_lines(&s).contains("Unavailable"));
        s.names_unavailable.insert(
            "n2".into(),
            "the agent lacks CAP_NET_ADMIN (iptables cannot read the nat table)".into(),
        );
        let out = super::endpoint_lines(&s);
        assert!(
            out.starts_with("Endpoints:     127.64.0.7 (names web,"),
            "{out}"
        );
        assert!(
            out.contains(
                "  Unavailable: names, service addresses and ingress on n2: the agent lacks \
                 CAP_NET_ADMIN (iptables cannot read the nat table)\n"
            ),
            "{out}"
        );
    }
}
