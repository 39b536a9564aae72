//! Merging the output of many tasks from their nodes' agents into one stream.
//!
//! One reader per task asks the task's agent (`GET {agentUrl}/v1/tasks/{id}/logs`, with the
//! agent token) and forwards its events as they arrive, so lines of one task stay in order and
//! tasks interleave. A task is read once it has started (its status has a start time or a
//! container). With `follow`, the task list is read again every [`POLL`] so tasks that start
//! later join (with all their lines since `since`, not only the tail); the stream lasts until
//! the client goes away, when every reader (and so every agent's stream) is dropped. Without
//! it, the stream ends when every reader is done.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use shoal_core::logs::{HEARTBEAT, LogEvent, LogQuery};
use shoal_core::{Key, NodeInfo, ServiceRef, Task, TaskStatus};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::LogParams;
use crate::ApiState;
use crate::ops::AgentToken;

/// How often a followed service's tasks are read again.
pub const POLL: Duration = Duration::from_millis(500);

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an agent's stream may stay silent (it sends a heartbeat every 10 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(35);

/// Whose output to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every task of a service.
    Service(ServiceRef),
    /// One task.
    Task(String),
}

/// How the API reaches agents: an HTTP client (trusting `--agent-ca` for `https://` agents)
/// and the cluster's agent token.
#[derive(Debug, Clone)]
pub struct Agents {
    http: reqwest::Client,
    token: Option<AgentToken>,
}

impl Default for Agents {
    fn default() -> Self {
        Agents::new(None, Vec::new()).unwrap_or_else(|_| Agents {
            http: reqwest::Client::new(),
            token: None,
        })
    }
}

impl Agents {
    /// A client presenting `token`, trusting `ca` (when not empty) alone for `https://`
    /// agents.
    pub fn new(token: Option<AgentToken>, ca: Vec<reqwest::Certificate>) -> Result<Self, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(IDLE_TIMEOUT);
        if !ca.is_empty() {
            b = b.tls_certs_only(ca);
        }
        let http = b
            .build()
            .map_err(|e| format!("cannot set up the agent client: {e}"))?;
        Ok(Agents { http, token })
    }
}

/// The tasks of `selector` with their status, and the live node records.
struct Snapshot {
    tasks: Vec<(Task, Option<TaskStatus>)>,
    nodes: BTreeMap<String, NodeInfo>,
}

async fn snapshot(st: &ApiState, selector: &Selector) -> Result<Snapshot, crate::ApiError> {
    let tasks = st.store.list(&st.keys.tasks_prefix()).await?;
    let statuses = st.store.list(&st.keys.task_status_prefix()).await?;
    let infos = st.store.list(&st.keys.nodes_prefix()).await?;
    let mut status_of: BTreeMap<String, TaskStatus> = BTreeMap::new();
    for kv in &statuses.kvs {
        if let Some(Key::TaskStatus { task, .. }) = st.keys.parse(&kv.key)
            && let Ok(s) = serde_json::from_slice::<TaskStatus>(&kv.value)
        {
            status_of.insert(task, s);
        }
    }
    let mut out = Vec::new();
    for kv in &tasks.kvs {
        let Ok(task) = serde_json::from_slice::<Task>(&kv.value) else {
            continue;
        };
        let wanted = match selector {
            Selector::Service(s) => &task.service == s,
            Selector::Task(id) => &task.id == id,
        };
        if wanted {
            let status = status_of.remove(&task.id);
            out.push((task, status));
        }
    }
    out.sort_by_key(|(t, _)| (t.created_at, t.id.clone()));
    let nodes = infos
        .kvs
        .iter()
        .filter_map(|kv| match st.keys.parse(&kv.key) {
            Some(Key::Node(_)) => serde_json::from_slice::<NodeInfo>(&kv.value).ok(),
            _ => None,
        })
        .map(|n| (n.id.clone(), n))
        .collect();
    Ok(Snapshot { tasks: out, nodes })
}

/// Whether a task has produced output somewhere: it started.
fn started(status: Option<&TaskStatus>) -> bool {
    status.is_some_and(|s| s.started_at.is_some() || s.container_id.is_some())
}

/// What the supervisor knows so far.
#[derive(Default)]
struct Progress {
    opened: BTreeSet<String>,
    reported_nodes: BTreeSet<String>,
}

/// Streams the events of `selector`'s output; the stream closes when it is complete (never,
/// for a followed service) and stops every reader when the receiver is dropped.
pub fn stream(st: ApiState, selector: Selector, query: LogQuery) -> mpsc::Receiver<LogEvent> {
    let (tx, rx) = mpsc::channel(256);
    let span = tracing::info_span!("logs", selector = ?selector, follow = query.follow);
    tokio::spawn(tracing::Instrument::instrument(
        supervise(st, selector, query, tx),
        span,
    ));
    rx
}

async fn supervise(st: ApiState, selector: Selector, query: LogQuery, tx: mpsc::Sender<LogEvent>) {
    let mut readers = JoinSet::new();
    let mut progress = Progress::default();
    let mut first = true;
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        match snapshot(&st, &selector).await {
            Ok(snap) => {
                open_new(&st, &snap, &query, first, &mut progress, &mut readers, &tx).await;
                first = false;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the tasks whose output is asked for"),
        }
        let one_task_open = matches!(selector, Selector::Task(_)) && !progress.opened.is_empty();
        if !query.follow || one_task_open {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = beat.tick() => {
                if tx.send(LogEvent::Heartbeat).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
    loop {
        tokio::select! {
            done = readers.join_next() => if done.is_none() { return },
            _ = beat.tick() => {
                if tx.send(LogEvent::Heartbeat).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// Starts a reader for each task of `snap` that started and has none yet; reports each node
/// that cannot be asked once.
async fn open_new(
    st: &ApiState,
    snap: &Snapshot,
    query: &LogQuery,
    first: bool,
    progress: &mut Progress,
    readers: &mut JoinSet<()>,
    tx: &mpsc::Sender<LogEvent>,
) {
    for (task, status) in &snap.tasks {
        if progress.opened.contains(&task.id) || !started(status.as_ref()) {
            continue;
        }
        progress.opened.insert(task.id.clone());
        let node = task.node_id.clone();
        let url = match snap.nodes.get(&node) {
            None => Err("the node is down (no live agent)".to_string()),
            Some(info) => info.agent_url.clone().ok_or_else(|| {
                "its agent serves no task output (start it with --listen)".to_string()
            }),
        };
        let url = match url {
            Ok(u) => u,
            Err(why) => {
                if progress.reported_nodes.insert(node.clone()) {
                    let _ = tx
                        .send(LogEvent::Missing {
                            node,
                            task: None,
                            reason: format!("unreachable: {why}"),
                        })
                        .await;
                }
                continue;
            }
        };
        // A task that joins a followed stream later shows all its lines, not only the tail.
        let mut q = query.clone();
        if !first {
            q.tail = None;
        }
        readers.spawn(read_task(
            st.agents.clone(),
            url,
            node,
            task.id.clone(),
            q,
            tx.clone(),
        ));
    }
}

/// Forwards one task's events from its agent; anything that stops it early is reported as a
/// missing part.
async fn read_task(
    agents: std::sync::Arc<Agents>,
    url: String,
    node: String,
    task: String,
    query: LogQuery,
    tx: mpsc::Sender<LogEvent>,
) {
    let missing = |reason: String| LogEvent::Missing {
        node: node.clone(),
        task: Some(task.clone()),
        reason,
    };
    let target = format!("{}/v1/tasks/{task}/logs", url.trim_end_matches('/'));
    let mut req = agents.http.get(&target).query(&LogParams::of(&query));
    if let Some(t) = &agents.token {
        req = req.bearer_auth(t.secret());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let _ = tx
                .send(missing(format!("unreachable: {}", error_chain(&e))))
                .await;
            return;
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let reason = match status.as_u16() {
            401 => "the agent refused the API's agent token (check --agent-token-file on the API and the agent)".to_string(),
            404 => format!("no output kept: {}", text.trim()),
            _ => format!("unreachable: the agent answered {status}: {}", text.trim()),
        };
        let _ = tx.send(missing(reason)).await;
        return;
    }
    let mut body = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tx
                    .send(missing(format!(
                        "unreachable: the stream was cut: {}",
                        error_chain(&e)
                    )))
                    .await;
                return;
            }
        };
        pending.extend_from_slice(&chunk);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let event = match serde_json::from_slice::<LogEvent>(&line) {
                Ok(LogEvent::Heartbeat) => continue,
                Ok(e) => e,
                Err(e) => missing(format!("the agent sent an unreadable line: {e}")),
            };
            let last = matches!(event, LogEvent::End { .. } | LogEvent::Missing { .. });
            if tx.send(event).await.is_err() || last {
                return;
            }
        }
    }
    let _ = tx
        .send(missing("unreachable: the stream ended early".to_string()))
        .await;
}

/// An error with its causes (`error sending request: … : Connection refused`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The last `tail` lines of each started task of `service`, gathered for at most `wait`
/// (the dashboard's service page): lines per task, and the parts that are missing.
pub async fn recent(
    st: &ApiState,
    service: &ServiceRef,
    tail: u64,
    wait: Duration,
) -> (
    BTreeMap<String, Vec<shoal_core::logs::LogLine>>,
    Vec<String>,
) {
    let query = LogQuery {
        tail: Some(tail),
        ..LogQuery::default()
    };
    let mut rx = stream(st.clone(), Selector::Service(service.clone()), query);
    let mut lines: BTreeMap<String, Vec<shoal_core::logs::LogLine>> = BTreeMap::new();
    let mut missing = Vec::new();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            () = &mut deadline => {
                missing.push("some output did not arrive in time".to_string());
                break;
            }
        };
        match event {
            None => break,
            Some(LogEvent::Line(l)) => lines.entry(l.task.clone()).or_default().push(l),
            Some(LogEvent::Missing { node, task, reason }) => missing.push(match task {
                Some(t) => format!("node {node} {reason} (task {t})"),
                None => format!("node {node} {reason}"),
            }),
            Some(_) => {}
        }
    }
    (lines, missing)
}
