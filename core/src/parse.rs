//! Parsing manifests: one or many YAML documents (or JSON) into [`Service`]s, with errors that
//! carry the source name, line, column and a snippet of the offending line.
//!
//! A file holds one or more YAML documents separated by `---` lines, or a JSON object, or a
//! JSON (or YAML) array of services. Every document is parsed on its own, so a broken document
//! does not hide the errors of the next one, and every line and column is counted from the start
//! of the whole file.
//!
//! Positions come from the YAML parser itself: to find where a field is, the document is walked
//! with a serde visitor that fails on purpose when it reaches the field, and the parser stamps
//! that failure with the field's line and column. The same trick finds duplicate keys (which the
//! typed deserializer reports at the start of their mapping) and the exact value behind an
//! `invalid duration` error.

mod messages;
mod probe;
mod source;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeSeed;

use self::messages::{
    display_path, leading_string_literal, location, split_error_path, strip_positions,
    with_suggestion,
};
use self::probe::{
    ElementSeed, Root, Seg, Terminal, Want, join_segs, locate_key, locate_segs, parse_path,
    run_probe, scan_document,
};
use self::source::{SourceText, split_documents};
use crate::manifest::Service;
use crate::validate::{self, key_path};

/// One problem in a manifest, located in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// File name (or `<stdin>`, or the store key).
    pub source: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The offending line, for display under the message.
    pub snippet: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    /// The error as a compiler prints it: `FILE:LINE:COL: message`, then the offending line with
    /// a caret under the column. No trailing newline.
    ///
    /// ```text
    /// web.yaml:7:3: spec: unknown field `replica` (did you mean `replicas`?), expected one of ...
    ///   |
    /// 7 |   replica: 3
    ///   |   ^
    /// ```
    pub fn render(&self) -> String {
        let mut out = self.to_string();
        if let Some(snippet) = &self.snippet {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            out.push_str(&format!("\n{pad} |\n{num} | {snippet}"));
            if self.column > 0 {
                // Keep tabs so the caret lines up however the terminal expands them.
                let lead: String = snippet
                    .chars()
                    .take(self.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("\n{pad} | {lead}^"));
            }
        }
        out
    }
}

/// A service read from a manifest, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedService {
    /// The service (defaults filled in).
    pub service: Service,
    /// 1-based line where its document starts.
    pub line: usize,
    /// The document's own text, as written.
    pub text: String,
}

/// Parses and validates every document in `text`. Returns all services, or every error found
/// (in every document), sorted by position.
pub fn parse(text: &str, source: &str) -> Result<Vec<ParsedService>, Vec<ManifestError>> {
    let file = SourceText::new(text, source);
    let mut services = Vec::new();
    let mut errors = Vec::new();
    let mut seen_ids: BTreeMap<(String, String), usize> = BTreeMap::new();

    for seg in split_documents(&file.lines) {
        let doc = file.isolate(seg);
        let (root, dups, syntax) = scan_document(&doc);
        for d in &dups {
            let here = if d.path.is_empty() {
                String::new()
            } else {
                format!(" in {}", display_path(&d.path))
            };
            let first = locate_key(&doc, &join_segs(&parse_path(&d.path), &d.key))
                .map(|(l, _)| format!(" (first defined at line {l})"))
                .unwrap_or_default();
            errors.push(file.error(
                d.line,
                d.column,
                format!("duplicate key {:?}{here}{first}", d.key),
            ));
        }
        if let Some(e) = syntax {
            let (line, column) =
                file.clamp_to_document(seg, location(&e).unwrap_or((seg.start + 1, 1)));
            let what = if file.json {
                "invalid JSON"
            } else {
                "invalid YAML"
            };
            errors.push(file.error(
                line,
                column,
                format!("{what}: {}", strip_positions(&e.to_string())),
            ));
            continue;
        }
        let units: Vec<Option<usize>> = match root {
            Some(Root::Null) | None => continue,
            Some(Root::Map) => vec![None],
            Some(Root::Seq(n)) => (0..n).map(Some).collect(),
            Some(Root::Scalar) => {
                let line = file.first_content_line(seg);
                errors.push(file.error(line, 1, "expected a Service (a mapping with apiVersion, kind, metadata and spec), found a scalar".to_string()));
                continue;
            }
        };
        let texts = match root {
            Some(Root::Seq(n)) => file.element_texts(seg, &doc, n),
            _ => vec![file.document_text(seg)],
        };
        for (unit, (line, unit_text)) in units.into_iter().zip(texts) {
            let prefix: Vec<Seg> = unit.map(Seg::Index).into_iter().collect();
            let before = errors.len();
            if let Some(service) =
                parse_unit(&file, &doc, &prefix, line, !dups.is_empty(), &mut errors)
            {
                if errors.len() > before {
                    continue;
                }
                let id = (
                    service.metadata.namespace.clone(),
                    service.metadata.name.clone(),
                );
                if let Some(first) = seen_ids.get(&id) {
                    let path = [prefix.clone(), parse_path("metadata.name")].concat();
                    let (l, c) = locate_segs(&doc, &path).unwrap_or((line, 1));
                    errors.push(file.error(
                        l,
                        c,
                        format!(
                            "metadata.name: service {}/{} is already defined at line {first}",
                            id.0, id.1
                        ),
                    ));
                    continue;
                }
                seen_ids.insert(id, line);
                services.push(ParsedService {
                    service,
                    line,
                    text: unit_text,
                });
            }
        }
    }

    if errors.is_empty() {
        Ok(services)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

/// Line and column (1-based) of the field at `path` (`spec.placement.constraints[1]`,
/// `metadata.labels["com.example/team"]`) in a single-document `text`: the value when it is a
/// scalar, the key when the value is a mapping or a list. When the field is absent, the position
/// of its closest present ancestor. `None` when not even the root can be read.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    locate_segs(text, &parse_path(path))
}

/// Checks one service (a whole document, or one element of a top-level list): apiVersion and
/// kind first (a foreign kind is not worth listing unknown fields for), then the typed
/// deserialization, then [`validate::validate`]. Pushes every error; returns the service when it
/// deserialized.
fn parse_unit(
    file: &SourceText<'_>,
    doc: &str,
    prefix: &[Seg],
    line: usize,
    had_duplicates: bool,
    errors: &mut Vec<ManifestError>,
) -> Option<Service> {
    let mut header_ok = true;
    for (field, check) in [
        (
            "apiVersion",
            validate::api_version_problem as fn(&str) -> Option<String>,
        ),
        ("kind", validate::kind_problem),
    ] {
        let path = [prefix.to_vec(), vec![Seg::Key(field.to_string())]].concat();
        if let Some(hit) = run_probe(doc, &path, Want::Value, &Terminal::Hit)
            && let Some(problem) = match hit.kind.as_str() {
                "scalar" => check(&hit.payload),
                _ => Some(format!("{field} must be a string")),
            }
        {
            errors.push(file.error(hit.line, hit.column, format!("{field}: {problem}")));
            header_ok = false;
        }
    }
    if !header_ok {
        return None;
    }

    let result = match prefix.first() {
        Some(Seg::Index(i)) => ElementSeed(*i).deserialize(yaml_serde::Deserializer::from_str(doc)),
        _ => Service::deserialize(yaml_serde::Deserializer::from_str(doc)),
    };
    let service = match result {
        Ok(s) => s,
        Err(e) => {
            let (l, c, message) = describe_serde_error(&e, doc, line);
            if !(had_duplicates && message.contains("duplicate field `")) {
                errors.push(file.error(l, c, message));
            }
            return None;
        }
    };

    for v in validate::validate(&service) {
        let path = [prefix.to_vec(), parse_path(&v.path)].concat();
        let key_pos = if names_a_user_key(&v.path) {
            locate_key(doc, &path)
        } else {
            None
        };
        let (l, c) = key_pos
            .or_else(|| locate_segs(doc, &path))
            .unwrap_or((line, 1));
        errors.push(file.error(l, c, format!("{}: {}", v.path, v.message)));
    }
    Some(service)
}

/// Whether `path` is an entry of a map whose keys users choose (labels, env, meta): the rules
/// about those entries are about the key, so the error points at the key.
fn names_a_user_key(path: &str) -> bool {
    let segs = parse_path(path);
    let Some((Seg::Key(_), parent)) = segs.split_last() else {
        return false;
    };
    let parent: Vec<&str> = parent
        .iter()
        .map(|s| {
            if let Seg::Key(k) = s {
                k.as_str()
            } else {
                "[]"
            }
        })
        .collect();
    matches!(
        parent.as_slice(),
        ["metadata", "labels"] | ["spec", "env"] | ["spec", "discovery", "consul", "meta"]
    )
}

/// Line, column and message of a serde error from the typed deserialization: positions made
/// precise where the deserializer only knows the enclosing mapping, the message stripped of the
/// parser's own `at line L column C` and given a "did you mean" where a known name is close.
fn describe_serde_error(
    e: &yaml_serde::Error,
    doc: &str,
    fallback_line: usize,
) -> (usize, usize, String) {
    let (mut line, mut column) = location(e).unwrap_or((fallback_line, 1));
    let raw = strip_positions(&e.to_string());
    let (mut path, body) = split_error_path(&raw);

    // A Dur or ByteSize rejects its string after the parser has moved on, so the error carries
    // the enclosing mapping's position and path: find the field holding the rejected value.
    for prefix in ["invalid duration ", "invalid size ", "invalid mode "] {
        if let Some(rest) = body.strip_prefix(prefix)
            && let Some(value) = leading_string_literal(rest)
        {
            let segs = parse_path(path.as_deref().unwrap_or(""));
            if let Some(hit) =
                run_probe(doc, &segs, Want::Value, &Terminal::ChildWithScalar(&value))
            {
                line = hit.line;
                column = hit.column;
                path = Some(key_path(
                    &display_path(path.as_deref().unwrap_or("")),
                    &hit.payload,
                ));
            }
        }
    }

    let body = with_suggestion(&body);
    let message = match path.as_deref().map(display_path) {
        Some(p) if !p.is_empty() => format!("{p}: {body}"),
        _ => body,
    };
    (line, column, message)
}
