//! `shoal logs SERVICE|TASK-ID`: the output of every task of a service (or of one task),
//! merged from the nodes that run them.
//!
//! A line is printed as `TASK@NODE | TEXT` (`--no-prefix`: `TEXT`), the runtime's time first
//! with `--timestamps`. Lines a task wrote to stderr go to stderr, and their separator is `!`
//! instead of `|`. A part that cannot be read (its node down or unreachable) is reported on
//! stderr, `node n2 unreachable: …`, and the command then exits 4; otherwise 0.

use std::io::Write as _;

use clap::Args;
use futures::StreamExt;
use shoal_api::logs::{LogParams, Selector};
use shoal_core::ServiceRef;
use shoal_core::logs::{LogEvent, LogLine, OutputStream};

use super::{CmdResult, ConnArgs, EXIT_OK, EXIT_UNREACHABLE, Failure};

/// Flags of `shoal logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A service name, or a task id (ids hold dots: `web.1.k3v9x0`).
    pub target: String,
    /// Keep printing new lines, and the lines of tasks that start later, until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Only lines written since then: a duration (`10m`, `1h`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Print each line's time (the runtime's, RFC 3339) first.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Print the lines alone, without `TASK@NODE |`.
    #[arg(long)]
    pub no_prefix: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// How one line is printed.
fn render(l: &LogLine, prefix: bool) -> String {
    let mut out = String::new();
    if let Some(t) = &l.time {
        out.push_str(t);
        out.push(' ');
    }
    if prefix {
        let sep = match l.stream {
            OutputStream::Stdout => '|',
            OutputStream::Stderr => '!',
        };
        out.push_str(&format!("{}@{} {sep} ", l.task, l.node));
    }
    out.push_str(&l.line);
    out
}

/// Runs `shoal logs`.
pub async fn logs(a: LogsArgs) -> CmdResult {
    let selector = if a.target.contains('.') {
        Selector::Task(a.target.clone())
    } else {
        Selector::Service(ServiceRef {
            namespace: a.conn.ns().to_string(),
            name: a.target.clone(),
        })
    };
    let params = LogParams {
        follow: a.follow.then_some(true),
        tail: a.tail.map(|t| t.to_string()),
        since: a.since.clone(),
        timestamps: a.timestamps.then_some(true),
    };
    // Refused here, with the flag's name, rather than by the server.
    params
        .query()
        .map_err(|e| Failure::invalid(format!("--{e}")))?;
    let client = a.conn.client();
    let mut events = client.logs(&selector, &params).await.map_err(|e| {
        if e.status() == Some(404) {
            Failure::failed(e.to_string())
        } else {
            Failure::from(e)
        }
    })?;
    let interrupted = crate::cli::shutdown_signal();
    let mut missing = false;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = interrupted.cancelled() => break,
        };
        match event {
            None => break,
            Some(Ok(LogEvent::Line(l))) => {
                let text = render(&l, !a.no_prefix);
                let written = match l.stream {
                    OutputStream::Stdout => writeln!(stdout.lock(), "{text}"),
                    OutputStream::Stderr => writeln!(stderr.lock(), "{text}"),
                };
                if written.is_err() {
                    // stdout closed (`| head`): nothing more to show.
                    break;
                }
            }
            Some(Ok(LogEvent::Missing { node, task, reason })) => {
                missing = true;
                match task {
                    Some(t) => eprintln!("node {node} {reason} (task {t})"),
                    None => eprintln!("node {node} {reason}"),
                }
            }
            Some(Ok(LogEvent::End { .. } | LogEvent::Heartbeat)) => {}
            Some(Err(e)) => {
                eprintln!("error: {e}");
                missing = true;
                break;
            }
        }
    }
    Ok(if missing { EXIT_UNREACHABLE } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_task_node_and_stream() {
        let mut l = LogLine {
            task: "web.1.abc".into(),
            node: "n1".into(),
            stream: OutputStream::Stdout,
            time: None,
            line: "hello".into(),
        };
        assert_eq!(render(&l, true), "web.1.abc@n1 | hello");
        assert_eq!(render(&l, false), "hello");
        l.stream = OutputStream::Stderr;
        l.time = Some("2026-01-02T03:04:05.000000001Z".into());
        assert_eq!(
            render(&l, true),
            "2026-01-02T03:04:05.000000001Z web.1.abc@n1 ! hello"
        );
    }
}
