//! Reading manifests from files, directories (recursively) and standard input, checked
//! locally so errors name the file, line and column.

use std::io::Read;
use std::path::{Path, PathBuf};

use shoal_api::manifest::{Document, parse_body, place_in_namespace};

use super::Failure;

/// One manifest document and the file it came from.
#[derive(Debug, Clone)]
pub struct SourceDoc {
    /// File name (`<stdin>` for `-`).
    pub source: String,
    /// The document.
    pub doc: Document,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| {
                Failure::invalid(format!("cannot read directory {}: {e}", path.display()))
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                collect(&p, out)?;
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "{}: no such file or directory",
            path.display()
        )))
    }
}

/// Reads and validates every manifest named by `paths`; with `namespace` (`-n`), documents
/// that name none go into it and one naming another is refused (as `kubectl apply -n`).
pub fn read_manifests(
    paths: &[String],
    namespace: Option<&str>,
) -> Result<Vec<SourceDoc>, Failure> {
    let mut sources: Vec<(String, String)> = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::invalid(format!("cannot read standard input: {e}")))?;
            sources.push(("<stdin>".to_string(), text));
            continue;
        }
        let mut files = Vec::new();
        collect(Path::new(p), &mut files)?;
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Failure::invalid(format!("cannot read {}: {e}", f.display())))?;
            sources.push((f.display().to_string(), text));
        }
    }
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (source, text) in sources {
        let json = source.ends_with(".json");
        match parse_body(&text, json, &source) {
            Ok(d) => {
                for mut doc in d {
                    if let Some(ns) = namespace
                        && let Err(e) = place_in_namespace(&mut doc, ns, &source)
                    {
                        errors.push(e.to_string());
                        continue;
                    }
                    docs.push(SourceDoc {
                        source: source.clone(),
                        doc,
                    });
                }
            }
            Err(errs) => errors.extend(errs.iter().map(ToString::to_string)),
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
