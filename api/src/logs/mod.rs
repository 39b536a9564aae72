//! Task output: `GET /v1/services/{ns}/{name}/logs` and `GET /v1/tasks/{id}/logs`, streamed
//! as NDJSON ([`shoal_core::logs::LogEvent`], one per line). The API reads nothing of it from
//! the store: it asks the agents of the tasks' nodes (their `--listen` address, advertised in
//! the node record as `agentUrl`), presenting the cluster's agent token, and merges their
//! streams ([`fanout`]). Lines of one task stay in order; a node that is down or unreachable
//! is reported in the stream ([`shoal_core::logs::LogEvent::Missing`]) and holds nothing up.

pub mod fanout;

use std::convert::Infallible;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_core::logs::{LogQuery, format_time, parse_since};
use shoal_core::{Key, ServiceRef};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::error::ApiError;

pub use fanout::{Agents, Selector};

/// The query of the logs routes (the API's and the agents').
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Keep streaming: new lines as they are written, and (for a service) tasks that start
    /// later; a task's part ends with the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
    /// Only the last N lines of each task (`all`: every line, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
    /// Only lines written since then: a duration before now (`10m`) or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Include each line's timestamp (`time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamps: Option<bool>,
}

impl LogParams {
    /// The query these parameters ask for, or why they are invalid.
    pub fn query(&self) -> Result<LogQuery, String> {
        let tail = match self.tail.as_deref().map(str::trim) {
            None | Some("all") | Some("") => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| format!("tail {t:?} is not a number of lines (or `all`)"))?,
            ),
        };
        let since = match &self.since {
            None => None,
            Some(s) => Some(parse_since(s, SystemTime::now()).map_err(|e| e.to_string())?),
        };
        Ok(LogQuery {
            follow: self.follow.unwrap_or(false),
            tail,
            since,
            timestamps: self.timestamps.unwrap_or(false),
        })
    }

    /// The parameters that ask for `query` (`since` as an absolute time).
    pub fn of(query: &LogQuery) -> Self {
        LogParams {
            follow: query.follow.then_some(true),
            tail: query.tail.map(|t| t.to_string()),
            since: query.since.map(format_time),
            timestamps: query.timestamps.then_some(true),
        }
    }
}

/// One line of a logs stream (NDJSON), as documented; `kind` says which fields are present.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogStreamEvent {
    /// `line` (a line of output), `end` (a task's part is complete), `missing` (a part could
    /// not be read: its node is down or unreachable) or `heartbeat` (sent while quiet).
    pub kind: String,
    /// Task id (`line`, `end`, and `missing` when one task's part is missing).
    pub task: Option<String>,
    /// Node id (all but `heartbeat`).
    pub node: Option<String>,
    /// `stdout` or `stderr` (`line`).
    pub stream: Option<String>,
    /// The runtime's timestamp, RFC 3339 (`line`, with `timestamps=true`).
    pub time: Option<String>,
    /// The text, without its line break (`line`).
    pub line: Option<String>,
    /// Why a part is missing (`missing`).
    pub reason: Option<String>,
}

fn ndjson(st: ApiState, selector: Selector, query: LogQuery) -> Response {
    let events = fanout::stream(st, selector, query);
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|e| Ok::<_, Infallible>(e.to_ndjson())),
    );
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Streams the output of every task of a service, merged from their nodes' agents.
#[utoipa::path(get, path = "/v1/services/{ns}/{name}/logs",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Service name"), LogParams),
    responses(
        (status = 200, description = "application/x-ndjson: one LogStreamEvent per line, until every task's part is complete (with follow: until the client goes away)", body = LogStreamEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid tail or since", body = crate::types::ErrorBody),
        (status = 404, description = "No such service", body = crate::types::ErrorBody)))]
pub async fn service_logs(
    State(st): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    let query = params.query().map_err(ApiError::BadRequest)?;
    let sref = ServiceRef {
        namespace: ns,
        name,
    };
    if st.store.get(&st.keys.service(&sref)).await?.is_none() {
        return Err(ApiError::NotFound(format!("service {sref}")));
    }
    Ok(ndjson(st, Selector::Service(sref), query))
}

/// Streams the output of one task (a finished one too, while its node keeps it).
#[utoipa::path(get, path = "/v1/tasks/{id}/logs",
    params(("id" = String, Path, description = "Task id"), LogParams),
    responses(
        (status = 200, description = "application/x-ndjson: one LogStreamEvent per line, until the task's part is complete", body = LogStreamEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid tail or since", body = crate::types::ErrorBody),
        (status = 404, description = "No such task", body = crate::types::ErrorBody)))]
pub async fn task_logs(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    let query = params.query().map_err(ApiError::BadRequest)?;
    let tasks = st.store.list(&st.keys.tasks_prefix()).await?;
    let known = tasks
        .kvs
        .iter()
        .any(|kv| matches!(st.keys.parse(&kv.key), Some(Key::Task { task, .. }) if task == id));
    if !known {
        return Err(ApiError::NotFound(format!("task {id}")));
    }
    Ok(ndjson(st, Selector::Task(id), query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_become_a_query_and_back() {
        let p = LogParams {
            follow: Some(true),
            tail: Some("5".into()),
            since: Some("10m".into()),
            timestamps: None,
        };
        let q = p.query().unwrap();
        assert!(q.follow);
        assert_eq!(q.tail, Some(5));
        let back = LogParams::of(&q);
        assert_eq!(back.query().unwrap().since, q.since);
        let bad = LogParams {
            tail: Some("lots".into()),
            ..LogParams::default()
        };
        assert!(bad.query().unwrap_err().contains("\"lots\""));
        let all = LogParams {
            tail: Some("all".into()),
            ..LogParams::default()
        };
        assert_eq!(all.query().unwrap().tail, None);
    }
}
