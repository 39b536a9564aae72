//! Task output as Shoal streams it (`shoal logs`, `GET /v1/services/{ns}/{name}/logs`,
//! `GET /v1/tasks/{id}/logs` and the agents' own `/v1/tasks/{id}/logs`): the query, and the
//! events of a stream, one JSON object per line (NDJSON).
//!
//! A stream carries [`LogEvent::Line`]s (one line of output of one task, stdout or stderr,
//! with the runtime's timestamp), [`LogEvent::End`] when a task's part is complete (the task
//! ended, or, without `follow`, everything asked for was sent), [`LogEvent::Missing`] when a
//! part could not be read (its node is down or unreachable), and [`LogEvent::Heartbeat`]s
//! that keep a quiet stream open through idle timeouts. Lines of one task are in order; lines
//! of different tasks are interleaved as they arrive.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which output stream of a task a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// Task id.
    pub task: String,
    /// Node the task runs (or ran) on.
    pub node: String,
    /// stdout or stderr.
    pub stream: OutputStream,
    /// When the runtime received the line (RFC 3339, nanoseconds, UTC); absent unless the
    /// query asked for timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The line, without its line break (invalid UTF-8 replaced).
    pub line: String,
}

/// One event of a log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LogEvent {
    /// A line of output.
    Line(LogLine),
    /// A task's part is complete: the task ended (with `follow`) or every line asked for
    /// was sent.
    End {
        /// Task id.
        task: String,
        /// Its node.
        node: String,
    },
    /// A part could not be read: a node down or unreachable, a task whose output is gone.
    Missing {
        /// The node that could not be read.
        node: String,
        /// The task, when one task's part is missing (absent: every task on the node).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        /// Why (`unreachable: connection refused`, `down`).
        reason: String,
    },
    /// Nothing happened for a while; the stream is alive.
    Heartbeat,
}

impl LogEvent {
    /// The event as one NDJSON line (with its `\n`).
    pub fn to_ndjson(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        s.push('\n');
        s
    }
}

/// What part of the output to stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Keep streaming as lines are written, until the task ends (or, for a service, until
    /// the client goes away).
    pub follow: bool,
    /// Only the last `tail` lines of each task (before following).
    pub tail: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Include each line's timestamp.
    pub timestamps: bool,
}

/// Why a log query parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogQueryError {
    /// `since` is neither a duration nor an RFC 3339 time.
    #[error(
        "since {0:?} is neither a duration (10m, 1h30m) nor an RFC 3339 time (2026-01-02T15:04:05Z)"
    )]
    Since(String),
}

/// Parses `since`: a duration before `now` (`10m`, `90s`) or an RFC 3339 time.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, LogQueryError> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now.checked_sub(d).unwrap_or(UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| LogQueryError::Since(s.to_string()))
}

/// Formats a time as RFC 3339 with nanoseconds (UTC), as log lines carry it.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Parses a line's RFC 3339 time (Docker's and Shoal's own).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Seconds since the epoch, as a `since` value Docker accepts (whole seconds, rounded down).
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long a stream may stay silent before a [`LogEvent::Heartbeat`] is sent.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_since("10m", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(9_400)
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:05Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(5)
        );
        let e = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(e.contains("\"yesterday\""), "{e}");
    }

    #[test]
    fn times_round_trip_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let s = format_time(t);
        assert_eq!(s, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_time(&s), Some(t));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z"),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000))
        );
    }

    #[test]
    fn events_are_tagged_json_lines() {
        let e = LogEvent::Line(LogLine {
            task: "t1".into(),
            node: "n1".into(),
            stream: OutputStream::Stderr,
            time: None,
            line: "boom".into(),
        });
        let s = e.to_ndjson();
        assert_eq!(
            s,
            "{\"kind\":\"line\",\"task\":\"t1\",\"node\":\"n1\",\"stream\":\"stderr\",\"line\":\"boom\"}\n"
        );
        assert_eq!(serde_json::from_str::<LogEvent>(s.trim()).unwrap(), e);
        let m = LogEvent::Missing {
            node: "n2".into(),
            task: None,
            reason: "unreachable: connection refused".into(),
        };
        assert_eq!(
            serde_json::from_str::<LogEvent>(m.to_ndjson().trim()).unwrap(),
            m
        );
    }
}
