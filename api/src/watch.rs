//! `GET /v1/watch`: Server-Sent Events of service status, task and task status changes.
//!
//! Each event's SSE `id` is the store revision of the change, so a client that lost the
//! connection resumes with `Last-Event-ID` (or `?revision=`) and misses nothing that the
//! store still retains. Without a revision the stream starts with the current records
//! (all carrying the revision of that read), then follows changes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use shoal_core::Key;
use shoal_store::{KeyValue, Revision, WatchEvent as StoreEvent};
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

/// Builds the watch event of a key, or `None` for keys the watch does not carry.
fn to_event(
    st: &ApiState,
    key: &str,
    kv: Option<&KeyValue>,
    revision: Revision,
) -> Option<WatchEvent> {
    let value = kv.and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok());
    let mut ev = WatchEvent {
        revision,
        kind: WatchKind::Task,
        deleted: kv.is_none(),
        namespace: None,
        service: None,
        node: None,
        task: None,
        value,
    };
    match st.keys.parse(key)? {
        Key::ServiceStatus(r) => {
            ev.kind = WatchKind::ServiceStatus;
            ev.namespace = Some(r.namespace);
            ev.service = Some(r.name);
        }
        Key::Task { node, task } => {
            ev.kind = WatchKind::Task;
            if let Some(svc) = ev.value.as_ref().and_then(|v| v.get("service")) {
                ev.namespace = svc
                    .get("namespace")
                    .and_then(|s| s.as_str())
                    .map(String::from);
                ev.service = svc.get("name").and_then(|s| s.as_str()).map(String::from);
            }
            ev.node = Some(node);
            ev.task = Some(task);
        }
        Key::TaskStatus { node, task } => {
            ev.kind = WatchKind::TaskStatus;
            ev.node = Some(node);
            ev.task = Some(task);
        }
        _ => return None,
    }
    Some(ev)
}

fn sse(ev: &WatchEvent) -> Event {
    Event::default()
        .id(ev.revision.to_string())
        .event(ev.kind.as_str())
        .data(serde_json::to_string(ev).unwrap_or_default())
}

/// Streams status and task changes as Server-Sent Events.
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
    let prefix = format!("{}/", st.keys.prefix());
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let start = match from {
        Some(r) => {
            // Resuming: learn the services of the tasks that exist now.
            for kv in st.store.list(&st.keys.tasks_prefix()).await?.kvs {
                if let Some(mut ev) = to_event(&st, &kv.key, Some(&kv), kv.mod_revision) {
                    filter.keep(&mut ev);
                }
            }
            r + 1
        }
        None => {
            let list = st.store.list(&prefix).await?;
            // Tasks first, so their statuses find their service.
            let (tasks, rest): (Vec<_>, Vec<_>) = list
                .kvs
                .iter()
                .partition(|kv| matches!(st.keys.parse(&kv.key), Some(Key::Task { .. })));
            for kv in tasks.into_iter().chain(rest) {
                if let Some(mut ev) = to_event(&st, &kv.key, Some(kv), list.revision)
                    && filter.keep(&mut ev)
                    && tx.send(sse(&ev)).await.is_err()
                {
                    break;
                }
            }
            list.revision + 1
        }
    };
    let mut stream = st.store.watch(&prefix, start).await?;
    tokio::spawn(async move {
        // Ends with the client: a closed connection drops the receiver.
        while let Some(batch) = tokio::select! {
            b = stream.next() => b,
            () = tx.closed() => None,
        } {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let msg = serde_json::json!({"error": e.to_string()}).to_string();
                    let _ = tx.send(Event::default().event("error").data(msg)).await;
                    return;
                }
            };
            for ev in &batch.events {
                let out = match ev {
                    StoreEvent::Put(kv) => to_event(&st, &kv.key, Some(kv), kv.mod_revision),
                    StoreEvent::Delete { key, mod_revision } => {
                        to_event(&st, key, None, *mod_revision)
                    }
                };
                if let Some(mut out) = out
                    && filter.keep(&mut out)
                    && tx.send(sse(&out)).await.is_err()
                {
                    return;
                }
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
