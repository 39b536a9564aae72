//! The log files of the `process` runtime: how a task's output is written (one line per
//! output line, `TIME STREAM TEXT`, the time in RFC 3339 with nanoseconds and the stream `o`
//! or `e`), rotated by size (the previous file kept as `<task>.log.1`), and read back: the
//! last lines, the lines since a time, and new lines as they are written until the task's
//! output closes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shoal_core::logs::{LogQuery, OutputStream, format_time, parse_time};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};

use super::{Lines, RawLine};
use crate::runtime::RuntimeError;

/// Longest line kept whole; longer output without a line break is cut into lines this long.
pub const MAX_LINE: usize = 16 * 1024;

/// How often a follower looks for new output in a file.
const POLL: Duration = Duration::from_millis(100);

/// The rotated log of a task (`<task>.log.1`).
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// A task's log file, rotated when it would pass `max` bytes.
pub struct LogWriter {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max: u64,
}

impl LogWriter {
    /// Opens (appends to) the log at `path`.
    pub fn open(path: PathBuf, max: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            max,
        })
    }

    /// Appends one line of `stream` (without its line break), stamped with the current time.
    pub fn write_line(&mut self, stream: OutputStream, text: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let tag = match stream {
            OutputStream::Stdout => "o",
            OutputStream::Stderr => "e",
        };
        let mut buf = format!("{} {tag} ", format_time(SystemTime::now())).into_bytes();
        buf.extend_from_slice(text);
        buf.push(b'\n');
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            std::fs::rename(&self.path, rotated_path(&self.path))?;
            *self = LogWriter::open(self.path.clone(), self.max)?;
        }
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Marks a task's output closed once every stream copying into its log is done (dropped).
#[derive(Debug)]
pub struct OutputOpen(pub watch::Sender<bool>);

impl Drop for OutputOpen {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Copies one output stream of a process into its log, line by line, until it ends.
pub async fn copy_lines(
    mut from: impl tokio::io::AsyncRead + Unpin,
    stream: OutputStream,
    log: Arc<Mutex<LogWriter>>,
    _open: Arc<OutputOpen>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let write = |line: &[u8]| {
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = log.write_line(stream, line) {
            tracing::warn!(log = %log.path().display(), error = %e, "cannot write a task's log");
        }
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            write(&pending[start..start + i]);
            start += i + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            write(&pending[..MAX_LINE]);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        write(&pending);
    }
}

/// Parses one line of a log file.
pub fn parse_line(line: &str) -> Option<RawLine> {
    let (time, rest) = line.split_once(' ')?;
    let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let stream = match tag {
        "o" => OutputStream::Stdout,
        "e" => OutputStream::Stderr,
        _ => return None,
    };
    Some(RawLine {
        stream,
        time: parse_time(time)?,
        text: text.to_string(),
    })
}

fn wanted(line: &RawLine, query: &LogQuery) -> bool {
    query.since.is_none_or(|s| line.time >= s)
}

/// Reads the complete lines of `bytes`, returning how many bytes they span.
fn complete_lines(bytes: &[u8], query: &LogQuery, out: &mut impl FnMut(RawLine)) -> usize {
    let mut used = 0;
    while let Some(i) = bytes[used..].iter().position(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(&bytes[used..used + i]);
        if let Some(l) = parse_line(&text)
            && wanted(&l, query)
        {
            out(l);
        }
        used += i + 1;
    }
    used
}

/// The inode of a file, to notice a rotation.
fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

/// Streams the lines of the log at `path` that `query` asks for: the rotated file and the
/// current one, the last `tail` of them, then (with `follow`) new lines until `closed`
/// turns true. `None` when the task has no log here.
pub async fn read(
    path: PathBuf,
    query: LogQuery,
    closed: Option<watch::Receiver<bool>>,
) -> Result<Option<Lines>, RuntimeError> {
    let io =
        |e: std::io::Error| RuntimeError::Temporary(format!("cannot read the task's log: {e}"));
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let ino = inode(&file.metadata().await.map_err(io)?);
    let mut first: VecDeque<RawLine> = VecDeque::new();
    let tail = query.tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX));
    let mut keep = |l: RawLine| {
        first.push_back(l);
        if tail.is_some_and(|t| first.len() > t) {
            first.pop_front();
        }
    };
    if let Ok(old) = tokio::fs::read(rotated_path(&path)).await {
        complete_lines(&old, &query, &mut keep);
    }
    let mut current = Vec::new();
    file.read_to_end(&mut current).await.map_err(io)?;
    let used = complete_lines(&current, &query, &mut keep);
    let offset = used as u64;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let (tx, rx) = mpsc::channel(256);
    let follow = query.follow.then_some(closed).flatten();
    tokio::spawn(async move {
        for l in first {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        if let Some(closed) = follow {
            follow_file(path, file, ino, query, closed, tx).await;
        }
    });
    Ok(Some(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
        rx,
    ))))
}

/// Sends the lines written to `file` (and to the files that replace it at `path` when it
/// rotates) until `closed` turns true and everything is read, or the receiver goes.
async fn follow_file(
    path: PathBuf,
    mut file: tokio::fs::File,
    mut ino: u64,
    query: LogQuery,
    mut closed: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<RawLine, RuntimeError>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let done = *closed.borrow_and_update();
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx
                    .send(Err(RuntimeError::Temporary(format!(
                        "cannot read the task's log: {e}"
                    ))))
                    .await;
                return;
            }
        };
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            let mut lines = Vec::new();
            let used = complete_lines(&pending, &query, &mut |l| lines.push(l));
            pending.drain(..used);
            for l in lines {
                if tx.send(Ok(l)).await.is_err() {
                    return;
                }
            }
            continue;
        }
        // At the end of this file: a rotation starts a new one at `path`; after two
        // rotations, the file in between is the rotated one.
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && inode(&meta) != ino
        {
            let rotated = rotated_path(&path);
            let between = tokio::fs::metadata(&rotated)
                .await
                .ok()
                .filter(|m| inode(m) != ino && inode(m) != inode(&meta));
            let (next_path, next_meta) = match between {
                Some(m) => (rotated, m),
                None => (path.clone(), meta),
            };
            if let Ok(next) = tokio::fs::File::open(&next_path).await {
                file = next;
                ino = inode(&next_meta);
                pending.clear();
                continue;
            }
        }
        if done {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = closed.changed() => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn lines_parse_back_with_their_stream() {
        let l = parse_line("2026-01-02T03:04:05.000000001Z e oh no: it broke").unwrap();
        assert_eq!(l.stream, OutputStream::Stderr);
        assert_eq!(l.text, "oh no: it broke");
        assert!(parse_line("garbage").is_none());
        assert_eq!(
            parse_line("2026-01-02T03:04:05Z o ").map(|l| l.text),
            Some(String::new())
        );
    }

    #[tokio::test]
    async fn tail_spans_the_rotated_file_and_follow_sees_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let mut w = LogWriter::open(path.clone(), 200).unwrap();
        for i in 0..6 {
            w.write_line(OutputStream::Stdout, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert!(rotated_path(&path).exists(), "the log rotated");
        let query = LogQuery {
            tail: Some(3),
            follow: true,
            ..LogQuery::default()
        };
        let (open_tx, open_rx) = watch::channel(false);
        let mut lines = read(path.clone(), query, Some(open_rx))
            .await
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(lines.next().await.unwrap().unwrap().text);
        }
        assert_eq!(got, ["line 3", "line 4", "line 5"]);
        // One line at a time: the follower reads each before the next rotation (a follower
        // that falls two rotations behind loses the lines of the file rotated away).
        for i in 6..12 {
            w.write_line(OutputStream::Stderr, format!("line {i}").as_bytes())
                .unwrap();
            let l = lines.next().await.unwrap().unwrap();
            assert_eq!(l.text, format!("line {i}"));
            assert_eq!(l.stream, OutputStream::Stderr);
        }
        open_tx.send_replace(true);
        assert!(
            lines.next().await.is_none(),
            "the stream ends with the output"
        );
    }
}
