//! `GET /v1/watch`: Server-Sent Events of service status, task, task status, node and node
//! settings changes.
//!
//! Each event's SSE `id` is the store revision of the change, so a client that lost the
//! connection resumes with `Last-Event-ID` (or `?revision=`) and misses nothing that the API
//! still holds ([`hub::HISTORY`] changes; older: an `error` event, and the client starts
//! again without a revision). Without a revision the stream starts with the current records
//! (all carrying the revision of the hub), then follows changes. Every client reads from one
//! shared watch of the store per API process ([`hub::Hub`]).

pub mod hub;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use shoal_store::Revision;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use crate::ApiState;
use crate::error::ApiError;
use crate::types::{WatchEvent, WatchKind};

/// Query of `GET /v1/watch`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct WatchQuery {
    /// Deliver changes after this revision (the last SSE id seen); overrides `Last-Event-ID`.
    pub revision: Option<Revision>,
    /// Only events of this service (`namespace/name`).
    pub service: Option<String>,
}

/// Which events a client asked for. Task statuses and task deletions carry no service, so
/// the filter remembers which service each task belongs to (from the task records it has
/// seen) and fills the event's namespace and service in from that.
#[derive(Debug, Clone, Default)]
struct Filter {
    service: Option<(String, String)>,
    owners: std::collections::HashMap<String, (String, String)>,
}

impl Filter {
    /// Completes `ev` with its task's service, then says whether the client wants it.
    fn keep(&mut self, ev: &mut WatchEvent) -> bool {
        if matches!(ev.kind, WatchKind::Task | WatchKind::TaskStatus)
            && let Some(task) = ev.task.clone()
        {
            match (&ev.namespace, &ev.service) {
                (Some(ns), Some(name)) if !ev.deleted => {
                    self.owners.insert(task, (ns.clone(), name.clone()));
                }
                _ => {
                    let owner = if ev.deleted && ev.kind == WatchKind::Task {
                        self.owners.remove(&task)
                    } else {
                        self.owners.get(&task).cloned()
                    };
                    if let Some((ns, name)) = owner {
                        ev.namespace = Some(ns);
                        ev.service = Some(name);
                    }
                }
            }
        }
        let Some((ns, name)) = &self.service else {
            return true;
        };
        ev.namespace.as_deref() == Some(ns.as_str()) && ev.service.as_deref() == Some(name.as_str())
    }
}

/// The `error` event telling a client that the API no longer holds the changes it asked for.
fn behind_event(behind: &hub::Behind) -> Event {
    let msg = serde_json::json!({"error": behind.to_string()}).to_string();
    Event::default().event("error").data(msg)
}

fn sse(ev: &WatchEvent) -> Event {
    Event::default()
        .id(ev.revision.to_string())
        .event(ev.kind.as_str())
        .data(serde_json::to_string(ev).unwrap_or_default())
}

/// Streams status, task and node changes as Server-Sent Events.
#[utoipa::path(get, path = "/v1/watch", params(WatchQuery), responses(
    (status = 200, description = "text/event-stream of WatchEvent (SSE id = revision)", body = WatchEvent)))]
pub async fn watch(
    State(st): State<ApiState>,
    Query(q): Query<WatchQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok());
    let from = q.revision.or(last_id);
    let service = match q.service.as_deref() {
        Some(s) => Some(
            s.split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("service must be namespace/name, got {s:?}"))
                })?,
        ),
        None => None,
    };
    let mut filter = Filter {
        service,
        ..Filter::default()
    };
    let hub = Arc::clone(&st.watch_hub);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let start = match hub.start(from).await {
        Some(Ok(start)) => start,
        // The API is shutting down: the stream ends at once.
        None => {
            drop(tx);
            return Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()));
        }
        Some(Err(behind)) => {
            // Said on the stream, as when a client falls behind later: the client starts over.
            let _ = tx.try_send(behind_event(&behind));
            drop(tx);
            let stream = ReceiverStream::new(rx).map(Ok);
            return Ok(Sse::new(stream).keep_alive(KeepAlive::default()));
        }
    };
    for task in &start.tasks {
        filter.keep(&mut (**task).clone());
    }
    let stop = hub.stopping();
    tokio::spawn(async move {
        // Ends with the client (a closed connection drops the receiver) or when the API
        // shuts down.
        tokio::select! {
            () = follow(&hub, start, filter, &tx) => {}
            () = stop.cancelled() => {}
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Sends a client its starting records, then the hub's changes after them.
async fn follow(
    hub: &hub::Hub,
    start: hub::Start,
    mut filter: Filter,
    tx: &tokio::sync::mpsc::Sender<Event>,
) {
    for mut ev in start.initial {
        if filter.keep(&mut ev) && tx.send(sse(&ev)).await.is_err() {
            return;
        }
    }
    let mut after = start.revision;
    loop {
        let events = match hub.since(after) {
            Ok(events) => events,
            Err(behind) => {
                let _ = tx.send(behind_event(&behind)).await;
                return;
            }
        };
        if events.is_empty() {
            tokio::select! {
                moved = hub.wait_past(after) => if !moved { return },
                () = tx.closed() => return,
            }
            continue;
        }
        for ev in events {
            after = after.max(ev.revision);
            let mut out = (*ev).clone();
            if filter.keep(&mut out) && tx.send(sse(&out)).await.is_err() {
                return;
            }
        }
    }
}
