//! Reading manifests from files, directories (recursively) and standard input, checked
//! locally so errors name the file, line and column: the same reading and checking as
//! `shoal validate` (`shoal_core::files`).

use std::io::Read;

use shoal_api::manifest::place_in_namespace;
use shoal_core::ParsedService;
use shoal_core::files::{collect_inputs, parse_inputs};

use super::Failure;

/// One manifest document and the file it came from.
#[derive(Debug, Clone)]
pub struct SourceDoc {
    /// File name (`<stdin>` for `-`).
    pub source: String,
    /// The document.
    pub doc: ParsedService,
}

/// Reads and validates every manifest named by `paths` (as `shoal validate` does); with
/// `namespace` (`-n`), documents that name none go into it and one naming another is refused
/// (as `kubectl apply -n`).
pub fn read_manifests(
    paths: &[String],
    namespace: Option<&str>,
) -> Result<Vec<SourceDoc>, Failure> {
    let inputs = collect_inputs(paths, || {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    });
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for file in parse_inputs(&inputs) {
        let services = match file.result {
            Ok(services) => services,
            Err(errs) => {
                errors.extend(errs.iter().map(ToString::to_string));
                continue;
            }
        };
        for mut doc in services {
            if let Some(ns) = namespace
                && let Err(e) = place_in_namespace(&mut doc, ns, &file.source)
            {
                errors.push(e.to_string());
                continue;
            }
            docs.push(SourceDoc {
                source: file.source.clone(),
                doc,
            });
        }
    }
    if !errors.is_empty() {
        return Err(Failure::invalid(format!(
            "invalid manifests:\n{}",
            errors.join("\n")
        )));
    }
    if docs.is_empty() {
        return Err(Failure::invalid("no manifests found"));
    }
    Ok(docs)
}

/// Joins documents into one multi-document YAML body.
pub fn join(docs: &[SourceDoc]) -> String {
    let mut body = String::new();
    for d in docs {
        body.push_str("---\n");
        body.push_str(&d.doc.text);
        if !d.doc.text.ends_with('\n') {
            body.push('\n');
        }
    }
    body
}
