//! The services table (`/ui/services`, filterable like `shoal get services -n NS -l SEL`)
//! and one service's page: status, spec, tasks, the last lines of each task's output,
//! rollout, placement, events and actions.

use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use serde::Deserialize;
use shoal_core::ServiceRef;

use super::{Nav, PageQuery, layout, pager, seg};
use crate::ApiState;
use crate::types::{ServiceResource, TaskEntry};
use crate::ui::data::{self, Page};
use crate::ui::{UiError, Viewer};

/// Query of `/ui/services`.
#[derive(Debug, Default, Deserialize)]
pub struct ServicesQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Label selector (`k=v,k2!=v,k3,!k4`).
    pub selector: Option<String>,
    /// 1-based page number.
    pub page: Option<usize>,
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn href(ns: &str, name: &str) -> String {
    format!("/ui/services/{}/{}", seg(ns), seg(name))
}

fn mode(s: &ServiceResource) -> &'static str {
    match s.service.as_ref().map(|x| x.spec.mode) {
        Some(m) => m.as_str(),
        None => "-",
    }
}

fn image(s: &ServiceResource) -> String {
    s.service
        .as_ref()
        .and_then(|x| x.spec.image.clone())
        .unwrap_or_else(|| "-".into())
}

fn labels(s: &ServiceResource) -> String {
    s.service
        .as_ref()
        .map(|x| {
            x.metadata
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `GET /ui/services`: the `shoal get services` table, paginated and filterable.
pub async fn services(
    State(st): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<ServicesQuery>,
) -> Result<Markup, UiError> {
    let (namespace, selector) = (non_empty(&q.namespace), non_empty(&q.selector));
    let revision = data::revision(&st).await?;
    let list = data::services(&st, namespace.clone(), selector.clone()).await?;
    let page = Page::new(q.page, list.len());
    let extra = format!(
        "namespace={}&selector={}&",
        seg(namespace.as_deref().unwrap_or("")),
        seg(selector.as_deref().unwrap_or(""))
    );
    let body = html! {
        form.filters method="get" action="/ui/services" role="search" aria-label="Filter services" {
            label for="namespace" { "Namespace" }
            input #namespace name="namespace" value=(namespace.clone().unwrap_or_default()) placeholder="all";
            label for="selector" { "Labels" }
            input #selector name="selector" value=(selector.clone().unwrap_or_default()) placeholder="app=web,tier!=db";
            button type="submit" { "Filter" }
        }
        div #services-table data-live {
            p #service-total { (list.len()) " services" }
            div.scroll {
                table #services {
                    caption.sr { "Services" }
                    thead { tr {
                        th scope="col" { "Namespace" } th scope="col" { "Name" } th scope="col" { "Mode" }
                        th scope="col" { "Replicas" } th scope="col" { "Image" } th scope="col" { "Status" }
                        th scope="col" { "Labels" }
                    } }
                    tbody {
                        @for s in page.slice(&list) {
                            @let (running, desired) = s.replica_counts();
                            tr data-service=(format!("{}/{}", s.namespace, s.name)) {
                                td { (s.namespace) }
                                td { a href=(href(&s.namespace, &s.name)) { (s.name) } }
                                td { (mode(s)) }
                                td { (running) "/" (desired) }
                                td { (image(s)) }
                                td { span.status data-phase=(data::phase_key(s)) { (s.phase()) } }
                                td { (labels(s)) }
                            }
                        }
                    }
                }
            }
            (pager(page, "/ui/services", &extra))
        }
    };
    Ok(layout(
        "Services",
        Some(&viewer),
        Nav::Services,
        Some(("/ui/watch".into(), revision)),
        body,
    ))
}

/// `GET /ui/services/{ns}/{name}`: one service.
pub async fn service(
    State(st): State<ApiState>,
    viewer: Viewer,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let r = ServiceRef {
        namespace: ns,
        name,
    };
    let revision = data::revision(&st).await?;
    let s = data::service(&st, &r).await?;
    let tasks = data::tasks(&st, Some(&r), None).await?;
    let page = Page::new(q.page, tasks.len());
    let body = html! {
        (summary(&s, &tasks))
        (actions(&s, &viewer))
        (rollout(&s))
        section aria-labelledby="tasks-h" {
            h2 #tasks-h { "Tasks" }
            div #tasks-table data-live {
                (task_table(page.slice(&tasks), true))
                (pager(page, &href(&r.namespace, &r.name), ""))
            }
        }
        (output(&st, &r).await)
        (events(&s))
        section aria-labelledby="spec-h" {
            h2 #spec-h { "Manifest" }
            p { "Revision " (s.revision) }
            pre.spec tabindex="0" aria-label="Manifest" { code { (s.manifest) } }
        }
    };
    let live = format!("/ui/watch?service={}", seg(&r.to_string()));
    Ok(layout(
        &r.to_string(),
        Some(&viewer),
        Nav::Services,
        Some((live, revision)),
        body,
    ))
}

/// Lines of output shown per task on a service's page.
const OUTPUT_LINES: u64 = 10;

/// How long a service's page waits for its tasks' output.
const OUTPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The last lines of each task's output, asked of the agents as `shoal logs --tail` does.
async fn output(st: &ApiState, r: &ServiceRef) -> Markup {
    let (lines, missing) = crate::logs::fanout::recent(st, r, OUTPUT_LINES, OUTPUT_WAIT).await;
    html! {
        section #output aria-labelledby="output-h" {
            h2 #output-h { "Output" }
            p.hint { "The last " (OUTPUT_LINES) " lines of each task (" code { "shoal logs " (r.name) " --tail " (OUTPUT_LINES) } "); stderr lines are marked !." }
            @for m in &missing {
                p.note.missing { (m) }
            }
            @if lines.is_empty() && missing.is_empty() {
                p.empty { "No output yet." }
            }
            @for (task, task_lines) in &lines {
                @let node = task_lines.first().map(|l| l.node.as_str()).unwrap_or("");
                h3 data-task=(task) { (task) " on " (node) }
                pre.output data-task=(task) tabindex="0" aria-label={ "Output of " (task) } {
                    @for l in task_lines {
                        @match l.stream {
                            shoal_core::logs::OutputStream::Stderr => span.stderr { "! " (l.line) "\n" },
                            shoal_core::logs::OutputStream::Stdout => span.stdout { (l.line) "\n" },
                        }
                    }
                }
            }
        }
    }
}

fn summary(s: &ServiceResource, tasks: &[TaskEntry]) -> Markup {
    let (running, desired) = s.replica_counts();
    let status = s.status.as_ref();
    html! {
        section #summary data-live aria-label="Status" {
            dl.facts {
                div { dt { "Status" } dd #phase data-phase=(data::phase_key(s)) { (s.phase()) } }
                div { dt { "Replicas" } dd #replicas data-running=(running) data-desired=(desired) { (running) "/" (desired) } }
                div { dt { "Running tasks" } dd #running-tasks { (tasks.iter().filter(|t| data::is_running(t)).count()) } }
                div { dt { "Mode" } dd { (mode(s)) } }
                div { dt { "Image" } dd { (image(s)) } }
                div { dt { "Labels" } dd { (labels(s)) } }
            }
            @if let Some(e) = &s.error { p.error role="alert" { "Invalid manifest: " (e) } }
            @if let Some(e) = status.and_then(|st| st.error.as_ref()) { p.error role="alert" { "Invalid: " (e) } }
            @if let Some(u) = status.and_then(|st| st.unschedulable.as_ref()) {
                div.warning #placement role="alert" {
                    h2 { "Why it cannot be placed" }
                    p { (u) }
                }
            }
        }
    }
}

fn actions(s: &ServiceResource, viewer: &Viewer) -> Markup {
    if !viewer.principal.can_write(&s.namespace) {
        return html! {};
    }
    let base = href(&s.namespace, &s.name);
    let replicas = s.service.as_ref().and_then(|x| x.spec.desired_replicas());
    let can_undo = s
        .status
        .as_ref()
        .is_some_and(|st| st.previous_spec.is_some());
    html! {
        section.actions aria-label="Actions" {
            @if let Some(n) = replicas {
                details.action #scale {
                    summary { "Scale…" }
                    form method="post" action=(format!("{base}/scale")) {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for="replicas-input" { "Replicas" }
                        input #replicas-input type="number" name="replicas" min="0" max="100000" value=(n) required;
                        button type="submit" { "Confirm scale of " (s.name) }
                    }
                }
            }
            @if can_undo {
                details.action #undo {
                    summary { "Undo rollout…" }
                    form method="post" action=(format!("{base}/rollback")) {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        p { "The previous spec becomes the manifest again and the tasks roll back." }
                        button type="submit" { "Confirm undo of " (s.name) }
                    }
                }
            }
        }
    }
}

fn rollout(s: &ServiceResource) -> Markup {
    let Some(st) = &s.status else {
        return html! {};
    };
    html! {
        section aria-labelledby="rollout-h" {
            h2 #rollout-h { "Rollout" }
            div #rollout data-live {
                @if let Some(r) = &st.rollout {
                    p {
                        label for="rollout-bar" { "State " strong { (r.state) } ", " (r.updated) " of " (r.total) " updated" }
                        " "
                        progress #rollout-bar max=(r.total.max(1)) value=(r.updated) {}
                    }
                    @if let Some(m) = &r.message { p { (m) } }
                } @else {
                    p { "No rollout yet." }
                }
                @if !st.rollout_history.is_empty() {
                    div.scroll {
                        table {
                            caption { "History" }
                            thead { tr { th scope="col" { "Started" } th scope="col" { "State" } th scope="col" { "Image" } th scope="col" { "Message" } } }
                            tbody {
                                @for h in st.rollout_history.iter().rev() {
                                    tr {
                                        td { (data::age(h.started_at)) " ago" }
                                        td { (h.state) }
                                        td { (h.image.as_deref().unwrap_or("-")) }
                                        td { (h.message.as_deref().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn events(s: &ServiceResource) -> Markup {
    let events = s.status.as_ref().map(|st| &st.events[..]).unwrap_or(&[]);
    html! {
        section aria-labelledby="events-h" {
            h2 #events-h { "Events" }
            div #events data-live {
                @if events.is_empty() { p { "No events." } } @else {
                    div.scroll {
                        table {
                            thead { tr { th scope="col" { "Age" } th scope="col" { "Type" } th scope="col" { "Reason" } th scope="col" { "Message" } } }
                            tbody {
                                @for e in events.iter().rev() {
                                    tr.warn[e.kind == "Warning"] {
                                        td { (data::age(e.time)) }
                                        td { (e.kind) }
                                        td { (e.reason) }
                                        td { (e.message) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The tasks table; `with_node` adds the node column (service pages), else the service
/// column (node pages).
pub(crate) fn task_table(tasks: &[TaskEntry], with_node: bool) -> Markup {
    html! {
        div.scroll {
            table #tasks {
                caption.sr { "Tasks" }
                thead { tr {
                    th scope="col" { "Task" }
                    @if with_node { th scope="col" { "Node" } } @else { th scope="col" { "Service" } }
                    th scope="col" { "Slot" } th scope="col" { "State" } th scope="col" { "Health" }
                    th scope="col" { "Ports" } th scope="col" { "Age" } th scope="col" { "Message" }
                } }
                tbody {
                    @for t in tasks {
                        @let st = t.status.as_ref();
                        tr data-task=(t.task.id) data-state=(data::task_state(t)) data-history[t.history] {
                            td {
                                @if t.history { span.history title="In its slot's history: replaced by a newer task" { "\\_ " } }
                                code { (t.task.id) }
                            }
                            @if with_node {
                                td { a href=(format!("/ui/nodes/{}", seg(&t.task.node_id))) { (t.task.node_id) } }
                            } @else {
                                td { a href=(href(&t.task.service.namespace, &t.task.service.name)) { (t.task.service) } }
                            }
                            td { (t.task.slot) }
                            td { (data::task_state(t)) }
                            td { (st.and_then(|s| s.health).map(|h| format!("{h:?}").to_lowercase()).unwrap_or_else(|| "-".into())) }
                            td { (st.map(|s| s.host_ports.iter().map(|p| format!("{}→{}/{}", p.published, p.target, p.protocol)).collect::<Vec<_>>().join(", ")).filter(|p| !p.is_empty()).unwrap_or_else(|| "-".into())) }
                            td { (data::age(t.task.created_at)) }
                            td { (st.and_then(|s| s.message.as_deref()).unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}
