//! The agent listener's logs route, `GET /v1/tasks/{id}/logs` (same query as the API's):
//! the output of one of this node's tasks as NDJSON [`LogEvent`]s, for the API to merge. The
//! listener requires the cluster's agent token on it (see [`shoal_api::ops`]).
//!
//! `shoal_agent_log_streams` counts the streams open right now: a client that goes away
//! (Ctrl-C on `shoal logs -f`) closes its stream, and the runtime's behind it, at once.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use shoal_api::logs::LogParams;
use shoal_core::logs::{HEARTBEAT, LogEvent, LogLine, LogQuery, format_time};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Lines;
use crate::runtime::Runtime;

/// Serves the output of one node's tasks.
pub struct LogService {
    runtime: Arc<dyn Runtime>,
    node: String,
    open: Gauge,
}

impl std::fmt::Debug for LogService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogService")
            .field("node", &self.node)
            .field("open", &self.open.get())
            .finish()
    }
}

/// Decrements the open-stream gauge when a stream ends, however it ends.
struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl LogService {
    /// Serves the tasks `runtime` runs for `node`.
    pub fn new(runtime: Arc<dyn Runtime>, node: &str) -> Arc<Self> {
        Arc::new(LogService {
            runtime,
            node: node.to_string(),
            open: Gauge::default(),
        })
    }

    /// Registers `shoal_agent_log_streams`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "shoal_agent_log_streams",
            "Task output streams open on this agent",
            self.open.clone(),
        );
    }

    /// Streams open right now.
    pub fn open_streams(&self) -> i64 {
        self.open.get()
    }

    /// The route, for the agent's listener.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/tasks/{id}/logs", get(task_logs))
            .with_state(self.clone())
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

async fn task_logs(
    State(svc): State<Arc<LogService>>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> Response {
    let query = match params.query() {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let span = tracing::info_span!("logs", node = %svc.node, task = %id, follow = query.follow);
    let lines = match svc
        .runtime
        .logs(&svc.node, &id, &query)
        .instrument(span.clone())
        .await
    {
        Ok(Some(lines)) => lines,
        Ok(None) => {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("node {} has no output of task {id}", svc.node),
            );
        }
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    svc.open.inc();
    let guard = OpenStream(svc.open.clone());
    let (tx, rx) = mpsc::channel::<String>(64);
    let node = svc.node.clone();
    tokio::spawn(
        async move {
            let _guard = guard;
            send_events(lines, node, id, query, tx).await;
            tracing::debug!("log stream closed");
        }
        .instrument(span),
    );
    let body =
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// What the stream waits for next.
enum Next {
    Line(Option<Result<super::RawLine, crate::runtime::RuntimeError>>),
    Quiet,
    Gone,
}

/// Sends the lines as events until they end ([`LogEvent::End`]) or the client goes away.
async fn send_events(
    mut lines: Lines,
    node: String,
    task: String,
    query: LogQuery,
    tx: mpsc::Sender<String>,
) {
    loop {
        let next = tokio::select! {
            next = lines.next() => Next::Line(next),
            () = tokio::time::sleep(HEARTBEAT) => Next::Quiet,
            () = tx.closed() => Next::Gone,
        };
        let event = match next {
            Next::Gone => return,
            Next::Quiet => LogEvent::Heartbeat,
            Next::Line(Some(Ok(l))) => LogEvent::Line(LogLine {
                task: task.clone(),
                node: node.clone(),
                stream: l.stream,
                time: query.timestamps.then(|| format_time(l.time)),
                line: l.text,
            }),
            Next::Line(Some(Err(e))) => {
                let _ = tx
                    .send(
                        LogEvent::Missing {
                            node: node.clone(),
                            task: Some(task.clone()),
                            reason: e.to_string(),
                        }
                        .to_ndjson(),
                    )
                    .await;
                return;
            }
            Next::Line(None) => {
                let _ = tx.send(LogEvent::End { task, node }.to_ndjson()).await;
                return;
            }
        };
        if tx.send(event.to_ndjson()).await.is_err() {
            return;
        }
    }
}
