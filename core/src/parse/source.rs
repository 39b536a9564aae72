//! The input as lines: splitting it into documents, isolating one document for the parser
//! (keeping the file's line numbers), each document's own text, and errors with snippets.

use super::ManifestError;
use super::probe::{Seg, Terminal, Want, run_probe};

/// The whole input, split into lines, with the helpers that turn positions into errors.
pub(super) struct SourceText<'a> {
    text: &'a str,
    source: &'a str,
    /// Lines without their `\n` (a trailing `\r` is kept; it is stripped for display).
    pub(super) lines: Vec<&'a str>,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
    /// The input looks like JSON (starts with `{` or `[`).
    pub(super) json: bool,
}

/// A range of lines `[start, end)` (0-based) holding one YAML document.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    pub(super) start: usize,
    pub(super) end: usize,
}

impl<'a> SourceText<'a> {
    pub(super) fn new(text: &'a str, source: &'a str) -> Self {
        let lines: Vec<&str> = text.split('\n').collect();
        let mut starts = Vec::with_capacity(lines.len());
        let mut at = 0;
        for l in &lines {
            starts.push(at);
            at += l.len() + 1;
        }
        let json = text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with(['{', '[']);
        SourceText {
            text,
            source,
            lines,
            starts,
            json,
        }
    }

    fn line(&self, n: usize) -> Option<&'a str> {
        n.checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .map(|l| l.trim_end_matches('\r'))
    }

    pub(super) fn error(&self, line: usize, column: usize, message: String) -> ManifestError {
        ManifestError {
            source: self.source.to_string(),
            line,
            column,
            message,
            snippet: self.line(line).map(str::to_string),
        }
    }

    /// The input up to the end of `seg`, with every line before `seg` emptied (and directives
    /// dropped): a single-document text whose lines and columns are those of the file, and
    /// which ends where the document ends (so "unexpected end" errors point there).
    pub(super) fn isolate(&self, seg: Segment) -> String {
        let mut out =
            String::with_capacity(self.starts.get(seg.end).copied().unwrap_or(self.text.len()));
        for (i, l) in self.lines[..seg.end].iter().enumerate() {
            if i >= seg.start && !l.starts_with('%') {
                out.push_str(l);
            }
            if i + 1 < self.lines.len() {
                out.push('\n');
            }
        }
        out
    }

    /// The lines of `seg` that hold the document itself: without a bare `---` or `...` marker,
    /// directives and surrounding blank lines. Returns `[start, end)`, 0-based.
    fn content_lines(&self, seg: Segment) -> (usize, usize) {
        let (mut start, mut end) = (seg.start, seg.end);
        if start < end
            && let Some(rest) = marker_rest(self.lines[start], "---")
            && (rest.trim().is_empty() || rest.trim_start().starts_with('#'))
        {
            start += 1;
        }
        if end > start && marker_rest(self.lines[end - 1], "...").is_some() {
            end -= 1;
        }
        while start < end
            && (self.lines[start].trim().is_empty() || self.lines[start].starts_with('%'))
        {
            start += 1;
        }
        while end > start && self.lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        (start, end)
    }

    /// An "unexpected end" error is found past the document's last line: point at the end of
    /// that line instead.
    pub(super) fn clamp_to_document(
        &self,
        seg: Segment,
        (line, column): (usize, usize),
    ) -> (usize, usize) {
        let (start, end) = self.content_lines(seg);
        if end > start && line > end {
            let last = self.lines[end - 1].trim_end_matches('\r');
            return (end, last.chars().count() + 1);
        }
        (line, column)
    }

    pub(super) fn first_content_line(&self, seg: Segment) -> usize {
        self.content_lines(seg).0 + 1
    }

    /// A whole document's own text and its first line.
    pub(super) fn document_text(&self, seg: Segment) -> (usize, String) {
        let (start, end) = self.content_lines(seg);
        let mut text: String = self.lines[start..end]
            .iter()
            .map(|l| l.trim_end_matches('\r'))
            .collect::<Vec<_>>()
            .join("\n");
        text.push('\n');
        (start + 1, text)
    }

    /// The text and first line of each of the `n` elements of a top-level list.
    pub(super) fn element_texts(&self, seg: Segment, doc: &str, n: usize) -> Vec<(usize, String)> {
        let (cstart, cend) = self.content_lines(seg);
        let content_end = if cend < self.starts.len() {
            self.starts[cend]
        } else {
            self.text.len()
        };
        let flow = self.lines[cstart..cend]
            .iter()
            .map(|l| l.trim_start())
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.starts_with('['));
        let positions: Vec<Option<(usize, usize)>> = (0..n)
            .map(|i| {
                run_probe(doc, &[Seg::Index(i)], Want::Value, &Terminal::Hit)
                    .map(|h| (h.line, h.column))
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let Some((line, column)) = positions[i] else {
                out.push((cstart + 1, String::new()));
                continue;
            };
            let start = self.offset(line, column);
            let last = i + 1 == n;
            let end = match positions.get(i + 1).copied().flatten() {
                Some((l, c)) => self.offset(l, c),
                None => content_end,
            };
            let mut s = self
                .text
                .get(start..end.max(start))
                .unwrap_or("")
                .trim_end();
            let sep = if !last {
                Some(if flow { ',' } else { '-' })
            } else if flow {
                Some(']')
            } else {
                None
            };
            if let Some(sep) = sep {
                s = s.strip_suffix(sep).unwrap_or(s).trim_end();
            }
            // Continuation lines are indented as in the file; the first one starts at the
            // element's column. Dedent them so the text stands on its own.
            let indent = column - 1;
            let mut text = String::new();
            for (k, l) in s.split('\n').enumerate() {
                let l = l.trim_end_matches('\r');
                if k > 0 {
                    text.push('\n');
                    let strip = l.len() - l.trim_start_matches(' ').len();
                    text.push_str(&l[strip.min(indent)..]);
                } else {
                    text.push_str(l);
                }
            }
            text.push('\n');
            out.push((line, text));
        }
        out
    }

    /// Byte offset of a 1-based line and (character) column.
    fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = line.checked_sub(1).and_then(|i| self.starts.get(i)) else {
            return self.text.len();
        };
        let l = self.lines[line - 1];
        let within: usize = l
            .chars()
            .take(column.saturating_sub(1))
            .map(char::len_utf8)
            .sum();
        start + within
    }
}

/// What follows a document marker (`---`, `...`) at the start of `line`, if the line is one.
fn marker_rest<'l>(line: &'l str, marker: &str) -> Option<&'l str> {
    let l = line.trim_end_matches('\r');
    l.strip_prefix(marker)
        .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Splits the input into documents at `---` (a new document starts on that line) and `...`
/// (the document ends with that line). Markers only count at the start of a line, where the YAML
/// spec reserves them even inside block scalars, so no YAML parsing is needed.
pub(super) fn split_documents(lines: &[&str]) -> Vec<Segment> {
    let mut segs = Vec::new();
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        if marker_rest(l, "---").is_some() {
            if i > start {
                segs.push(Segment { start, end: i });
            }
            start = i;
        } else if marker_rest(l, "...").is_some() {
            segs.push(Segment { start, end: i + 1 });
            start = i + 1;
        }
    }
    if start < lines.len() {
        segs.push(Segment {
            start,
            end: lines.len(),
        });
    }
    segs
}
