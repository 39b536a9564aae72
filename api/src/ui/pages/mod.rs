//! The dashboard's HTML, rendered on the server with `maud` (checked at compile time): the
//! shared layout (landmarks, navigation, the live-update status line), the overview, the
//! sign-in and error pages, and the widgets the service and node pages share.

mod nodes;
mod services;

pub use nodes::{node, nodes};
pub use services::{service, services};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::data::{self, Page};
use super::{UiError, Viewer};
use crate::ApiState;
use crate::types::TaskEntry;

/// Query of paginated pages.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// 1-based page number.
    pub page: Option<usize>,
}

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Services,
    Nodes,
    None,
}

/// Characters escaped in a path segment or query value: all but RFC 3986's unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment (or query value), percent-encoded.
pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The page every dashboard page sits in. `watch` is the live-update stream of the page
/// (`None`: no live updates); `revision` the store revision the page was rendered at.
pub(crate) fn layout(
    title: &str,
    viewer: Option<&Viewer>,
    nav: Nav,
    live: Option<(String, shoal_store::Revision)>,
    body: Markup,
) -> Markup {
    let link = |to: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == to).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Shoal" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                link rel="icon" href="/ui/assets/icon.svg" type="image/svg+xml";
                script src="/ui/assets/ui.js" defer {}
            }
            body data-watch=[live.as_ref().map(|l| &l.0)]
                 data-revision=[live.as_ref().map(|l| l.1)] {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        ul {
                            li.brand { a href="/ui/" { "Shoal" } }
                            (link(Nav::Overview, "/ui/", "Overview"))
                            (link(Nav::Services, "/ui/services", "Services"))
                            (link(Nav::Nodes, "/ui/nodes", "Nodes"))
                        }
                    }
                    @if let Some(v) = viewer.filter(|v| v.signed_in) {
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            span { "Token " code { (v.principal.token_id()) } " (" (v.principal.role()) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
                footer {
                    p #live role="status" aria-live="polite" {
                        @if live.is_some() { "Live updates start when scripts run." }
                    }
                }
            }
        }
    }
}

/// Links to the other pages of a paginated table, keeping the page's other query parameters.
pub(crate) fn pager(page: Page, base: &str, extra: &str) -> Markup {
    let href = |n: usize| format!("{base}?{extra}page={n}");
    html! {
        @if page.count > 1 {
            nav.pager aria-label="Pages" {
                @if page.number > 1 { a href=(href(page.number - 1)) rel="prev" { "← Previous" } }
                span { "Page " (page.number) " of " (page.count) " (" (page.total) " in all)" }
                @if page.number < page.count { a href=(href(page.number + 1)) rel="next" { "Next →" } }
            }
        }
    }
}

/// A labelled bar of `value` out of `max`.
pub(crate) fn meter(label: &str, value: f64, max: f64, text: &str) -> Markup {
    html! {
        span.bar {
            meter min="0" max=(max.max(0.0)) value=(value) aria-label=(label) {}
            span { (text) }
        }
    }
}

/// `<dl>` of counts, each `<dd>` carrying `data-count` with its key.
pub(crate) fn counts(id: &str, label: &str, items: &[(String, usize)]) -> Markup {
    html! {
        section aria-labelledby=(format!("{id}-h")) {
            h2 #(format!("{id}-h")) { (label) }
            dl.counts #(id) data-live {
                @for (k, n) in items {
                    div.count data-zero[*n == 0] {
                        dt { (k) }
                        dd data-count=(k) { (n) }
                    }
                }
            }
        }
    }
}

/// `GET /ui/`: counts of services by status, nodes by state, tasks by state, and the
/// recent warning events.
pub async fn overview(State(st): State<ApiState>, viewer: Viewer) -> Result<Markup, UiError> {
    let revision = data::revision(&st).await?;
    let services = data::services(&st, None, None).await?;
    let tasks = data::tasks(&st, None, None).await?;
    let nodes = data::nodes(&st).await?;
    let by_phase = data::count_by(&services, &data::SERVICE_PHASES, data::phase_key);
    let node_states = data::count_by(&nodes, &["Ready", "Down"], |n| {
        data::node_state(n).to_string()
    });
    let availability = data::count_by(&nodes, &["active", "pause", "drain"], |n| {
        n.config.availability.to_string()
    });
    let task_order: Vec<&str> = shoal_core::model::TaskState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    // Tasks in a slot's history (replaced, kept for their exit codes and logs) are not
    // counted by state: a slot restarted five times is one task, not five failed ones.
    let (earlier, tasks): (Vec<TaskEntry>, Vec<TaskEntry>) =
        tasks.into_iter().partition(|t| t.history);
    let task_states = data::count_by(&tasks, &task_order, data::task_state);
    let warnings = data::recent_warnings(&services, 20);
    let body = html! {
        p {
            (services.len()) " services, " (nodes.len()) " nodes, " (tasks.len()) " tasks"
            @if !earlier.is_empty() { " (and " span #history-count { (earlier.len()) } " finished ones in their slots' history)" }
            "."
        }
        div.grid {
            (counts("service-counts", "Services by status", &by_phase))
            (counts("node-counts", "Nodes by state", &node_states))
            (counts("availability-counts", "Nodes by availability", &availability))
            (counts("task-counts", "Tasks by state", &task_states))
        }
        section aria-labelledby="warnings-h" {
            h2 #warnings-h { "Recent warnings" }
            div #warnings data-live {
                @if warnings.is_empty() {
                    p { "No warning events." }
                } @else {
                    div.scroll {
                        table {
                            thead { tr { th scope="col" { "Age" } th scope="col" { "Service" } th scope="col" { "Reason" } th scope="col" { "Message" } } }
                            tbody {
                                @for w in &warnings {
                                    tr {
                                        td { (data::age(w.event.time)) }
                                        td { a href=(format!("/ui/services/{}/{}", seg(&w.service.namespace), seg(&w.service.name))) { (w.service) } }
                                        td { (w.event.reason) }
                                        td { (w.event.message) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        "Overview",
        Some(&viewer),
        Nav::Overview,
        Some(("/ui/watch".into(), revision)),
        body,
    ))
}

/// `GET /ui/login`: the sign-in form (straight to the overview without tokens).
pub async fn login(State(st): State<ApiState>) -> Response {
    if st.tokens.is_none() {
        return Redirect::to("/ui/").into_response();
    }
    login_page(None).into_response()
}

/// The sign-in form, with an optional error.
pub fn login_page(error: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.login method="post" action="/ui/login" {
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" required
                aria-describedby="token-help";
            p #token-help { "A token made with " code { "shoal token create" } ". It is sent once; the browser then keeps only a session cookie." }
            button type="submit" { "Sign in" }
        }
    };
    layout("Sign in", None, Nav::None, None, body)
}

/// A page that says what went wrong.
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    let body = html! {
        p.error role="alert" { (message) }
        p { a href="/ui/" { "Back to the overview" } }
    };
    layout(
        status.canonical_reason().unwrap_or("Error"),
        None,
        Nav::None,
        None,
        body,
    )
}
