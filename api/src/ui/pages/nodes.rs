//! The nodes table (`/ui/nodes`: state, availability, labels, reserved capacity as bars,
//! tasks) and one node's page with its tasks and the drain / activate actions.

use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use shoal_core::model::Availability;

use super::services::task_table;
use super::{Nav, PageQuery, layout, meter, pager, seg};
use crate::ApiState;
use crate::types::NodeEntry;
use crate::ui::data::{self, Page, Usage};
use crate::ui::{UiError, Viewer};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn labels(n: &NodeEntry) -> String {
    let mut l = n
        .info
        .as_ref()
        .map(|i| i.labels.clone())
        .unwrap_or_default();
    l.extend(n.config.labels.clone());
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cpu_bar(n: &NodeEntry, u: Usage) -> Markup {
    let cap = n.info.as_ref().map_or(0.0, |i| i.capacity.cpus);
    meter(
        &format!("CPU reserved on {}", n.id),
        u.cpus,
        cap,
        &format!("{:.2} / {cap} CPU", u.cpus),
    )
}

fn memory_bar(n: &NodeEntry, u: Usage) -> Markup {
    let cap = n.info.as_ref().map_or(0, |i| i.capacity.memory.0) as f64 / GIB;
    let used = u.memory as f64 / GIB;
    meter(
        &format!("Memory reserved on {}", n.id),
        used,
        cap,
        &format!("{used:.1} / {cap:.1} GiB"),
    )
}

/// `GET /ui/nodes`: every node with its reserved capacity and task count.
pub async fn nodes(
    State(st): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let revision = data::revision(&st).await?;
    let list = data::nodes(&st).await?;
    let usage = data::usage_by_node(&data::tasks(&st, None, None).await?);
    let page = Page::new(q.page, list.len());
    let body = html! {
        div #nodes-table data-live {
            p #node-total { (list.len()) " nodes" }
            div.scroll {
                table #nodes {
                    caption.sr { "Nodes" }
                    thead { tr {
                        th scope="col" { "Node" } th scope="col" { "State" } th scope="col" { "Availability" }
                        th scope="col" { "Address" } th scope="col" { "Labels" } th scope="col" { "CPU reserved" }
                        th scope="col" { "Memory reserved" } th scope="col" { "Tasks" }
                    } }
                    tbody {
                        @for n in page.slice(&list) {
                            @let u = usage.get(&n.id).copied().unwrap_or_default();
                            tr data-node=(n.id) data-availability=(n.config.availability) {
                                td { a href=(format!("/ui/nodes/{}", seg(&n.id))) { (n.id) } }
                                td { (data::node_state(n)) }
                                td { (n.config.availability) }
                                td { (n.info.as_ref().map_or("-", |i| i.address.as_str())) }
                                td { (labels(n)) }
                                td { (cpu_bar(n, u)) }
                                td { (memory_bar(n, u)) }
                                td { (u.tasks) }
                            }
                        }
                    }
                }
            }
            (pager(page, "/ui/nodes", ""))
        }
    };
    Ok(layout(
        "Nodes",
        Some(&viewer),
        Nav::Nodes,
        Some(("/ui/watch".into(), revision)),
        body,
    ))
}

/// `GET /ui/nodes/{id}`: one node and its tasks.
pub async fn node(
    State(st): State<ApiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let revision = data::revision(&st).await?;
    let n = data::node(&st, &id).await?;
    let tasks = data::tasks(&st, None, Some(&id)).await?;
    let u = data::usage_by_node(&tasks).remove(&id).unwrap_or_default();
    let page = Page::new(q.page, tasks.len());
    let info = n.info.as_ref();
    let body = html! {
        section #node-summary data-live aria-label="Node" {
            dl.facts {
                div { dt { "State" } dd #node-state { (data::node_state(&n)) } }
                div { dt { "Availability" } dd #availability { (n.config.availability) } }
                div { dt { "Hostname" } dd { (info.map_or("-", |i| i.hostname.as_str())) } }
                div { dt { "Address" } dd { (info.map_or("-", |i| i.address.as_str())) } }
                div { dt { "Runtimes" } dd { (info.map(|i| i.runtimes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")).unwrap_or_default()) } }
                div { dt { "Labels" } dd { (labels(&n)) } }
                div { dt { "CPU reserved" } dd { (cpu_bar(&n, u)) } }
                div { dt { "Memory reserved" } dd { (memory_bar(&n, u)) } }
                div { dt { "Agent" } dd { (info.map_or("-", |i| i.agent_version.as_str())) } }
            }
        }
        (actions(&n, &viewer))
        section aria-labelledby="tasks-h" {
            h2 #tasks-h { "Tasks" }
            div #tasks-table data-live {
                (task_table(page.slice(&tasks), false))
                (pager(page, &format!("/ui/nodes/{}", seg(&id)), ""))
            }
        }
    };
    Ok(layout(
        &format!("Node {id}"),
        Some(&viewer),
        Nav::Nodes,
        Some(("/ui/watch".into(), revision)),
        body,
    ))
}

fn actions(n: &NodeEntry, viewer: &Viewer) -> Markup {
    if !viewer.principal.is_admin() {
        return html! {};
    }
    let action = format!("/ui/nodes/{}/availability", seg(&n.id));
    let (to, label, why) = match n.config.availability {
        Availability::Drain | Availability::Pause => {
            ("active", "Activate", "The node receives new tasks again.")
        }
        Availability::Active => (
            "drain",
            "Drain",
            "Its tasks move to other nodes and it receives no new ones.",
        ),
    };
    html! {
        section.actions #node-actions aria-label="Actions" {
            details.action #availability-action {
                summary { (label) "…" }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    input type="hidden" name="availability" value=(to);
                    p { (why) }
                    button type="submit" { "Confirm " (label.to_lowercase()) " of " (n.id) }
                }
            }
        }
    }
}
