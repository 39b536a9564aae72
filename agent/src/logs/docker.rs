//! A task's output through Docker's logs API: the container labelled with the task and this
//! node, its stdout and stderr demultiplexed, each line with Docker's own timestamp.

use std::collections::HashMap;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use futures::StreamExt;
use shoal_core::logs::{LogQuery, OutputStream, parse_time, unix_seconds};

use super::{Lines, RawLine};
use crate::runtime::{LABEL_NODE, LABEL_TASK, RuntimeError};

fn docker_error(e: DockerError) -> RuntimeError {
    RuntimeError::Temporary(format!("cannot read the container's logs from Docker: {e}"))
}

/// The container of `task` started for `node`, if Docker still has it.
async fn container_of(
    docker: &Docker,
    node: &str,
    task: &str,
) -> Result<Option<String>, RuntimeError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_TASK}={task}"),
            format!("{LABEL_NODE}={node}"),
        ],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(docker_error)?;
    Ok(list.into_iter().find_map(|c| c.id))
}

/// Splits one of Docker's log messages (`TIME TEXT\n`, timestamps on) into a line.
fn raw_line(out: LogOutput) -> Option<RawLine> {
    let (stream, message) = match out {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (OutputStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (OutputStream::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    let text = String::from_utf8_lossy(&message);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let (time, rest) = text.split_once(' ').unwrap_or((text, ""));
    Some(RawLine {
        stream,
        time: parse_time(time)?,
        text: rest.to_string(),
    })
}

/// Streams what `query` asks of the output of `task`'s container on `node`; `None` when
/// Docker has no such container. With `follow` the stream ends when the container stops.
pub async fn read(
    docker: &Docker,
    node: &str,
    task: &str,
    query: &LogQuery,
) -> Result<Option<Lines>, RuntimeError> {
    let Some(id) = container_of(docker, node, task).await? else {
        return Ok(None);
    };
    let mut opts = LogsOptionsBuilder::default()
        .follow(query.follow)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .tail(
            &query
                .tail
                .map_or_else(|| "all".to_string(), |t| t.to_string()),
        );
    if let Some(since) = query.since {
        // Docker takes whole seconds; the exact bound is applied to each line below.
        opts = opts.since(i32::try_from(unix_seconds(since)).unwrap_or(i32::MAX));
    }
    let since = query.since;
    let lines = docker
        .logs(&id, Some(opts.build()))
        .filter_map(move |item| async move {
            match item {
                Ok(out) => raw_line(out)
                    .filter(|l| since.is_none_or(|s| l.time >= s))
                    .map(Ok),
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => None,
                Err(e) => Some(Err(docker_error(e))),
            }
        });
    Ok(Some(Box::pin(lines)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_messages_become_lines_with_their_time() {
        let l = raw_line(LogOutput::StdErr {
            message: "2026-01-02T03:04:05.123456789Z disk full\n".into(),
        })
        .unwrap();
        assert_eq!(l.stream, OutputStream::Stderr);
        assert_eq!(l.text, "disk full");
        assert_eq!(
            shoal_core::logs::format_time(l.time),
            "2026-01-02T03:04:05.123456789Z"
        );
        assert!(
            raw_line(LogOutput::StdIn {
                message: "x".into()
            })
            .is_none()
        );
    }
}
