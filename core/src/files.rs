//! Manifests named on a command line: files, directories (walked recursively) and standard
//! input, read and parsed the one way `shoal validate` and `shoal apply` both use.
//!
//! A directory stands for every `*.yaml`, `*.yml` and `*.json` file below it, sorted, hidden
//! entries (`.git`) skipped, symbolic links to files followed and links to directories not
//! (no cycles). A file named explicitly is read whatever its extension. `-` is standard input,
//! read once.
//!
//! Every file is parsed with [`crate::parse()`], so errors carry `FILE:LINE:COL`; a service
//! defined in two files is an error at the second definition (applying both would make one
//! silently replace the other).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::parse::{ManifestError, ParsedService, locate};

/// Source name used for standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// One manifest file to parse: its display name and its text, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Read successfully.
    Text {
        /// Path as given (or `<stdin>`).
        source: String,
        /// Contents.
        text: String,
    },
    /// Could not be read (missing, unreadable, not UTF-8, a directory without manifests).
    Unreadable {
        /// Path as given.
        source: String,
        /// Why.
        reason: String,
    },
}

impl Input {
    /// The input's display name.
    pub fn source(&self) -> &str {
        match self {
            Input::Text { source, .. } | Input::Unreadable { source, .. } => source,
        }
    }
}

/// Why a file contributes no services.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: cannot read: {reason}")]
    Unreadable {
        /// Path as given (or `<stdin>`).
        path: String,
        /// Why.
        reason: String,
    },
    /// A manifest in it is invalid (or defines a service an earlier file defines).
    #[error("{0}")]
    Manifest(ManifestError),
}

impl FileError {
    /// The error as a compiler prints it: see [`ManifestError::render`].
    pub fn render(&self) -> String {
        match self {
            FileError::Manifest(e) => e.render(),
            other => other.to_string(),
        }
    }
}

/// One input, parsed: its services, or every error found in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    /// Path as given (or `<stdin>`).
    pub source: String,
    /// The services it defines (in order), or its errors (sorted by position).
    pub result: Result<Vec<ParsedService>, Vec<FileError>>,
}

/// Expands command-line paths into inputs: `-` is standard input (read once, with
/// `read_stdin`), a directory is every manifest file below it, anything else is read as a
/// file whatever its extension. Nothing is skipped silently: what cannot be read is an
/// [`Input::Unreadable`].
pub fn collect_inputs(
    args: &[String],
    read_stdin: impl FnOnce() -> std::io::Result<String>,
) -> Vec<Input> {
    let mut inputs = Vec::new();
    let mut read_stdin = Some(read_stdin);
    for arg in args {
        if arg == "-" {
            let input = match read_stdin.take() {
                Some(read) => match read() {
                    Ok(text) => Input::Text {
                        source: STDIN_NAME.to_string(),
                        text,
                    },
                    Err(e) => Input::Unreadable {
                        source: STDIN_NAME.to_string(),
                        reason: e.to_string(),
                    },
                },
                None => Input::Unreadable {
                    source: STDIN_NAME.to_string(),
                    reason: "standard input can be read only once".to_string(),
                },
            };
            inputs.push(input);
            continue;
        }
        let path = Path::new(arg);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let mut files = Vec::new();
                if let Err(e) = walk(path, &mut files) {
                    inputs.push(Input::Unreadable {
                        source: arg.clone(),
                        reason: e.to_string(),
                    });
                    continue;
                }
                if files.is_empty() {
                    inputs.push(Input::Unreadable {
                        source: arg.clone(),
                        reason: "no *.yaml, *.yml or *.json files in this directory".to_string(),
                    });
                }
                files.sort();
                inputs.extend(files.iter().map(|f| read_file(f)));
            }
            Ok(_) => inputs.push(read_file(path)),
            Err(e) => inputs.push(Input::Unreadable {
                source: arg.clone(),
                reason: e.to_string(),
            }),
        }
    }
    inputs
}

/// Parses every input, and checks that no service is defined in two of them.
pub fn parse_inputs(inputs: &[Input]) -> Vec<ParsedFile> {
    let mut defined: BTreeMap<(String, String), String> = BTreeMap::new();
    inputs
        .iter()
        .map(|input| {
            let result = match input {
                Input::Unreadable { source, reason } => Err(vec![FileError::Unreadable {
                    path: source.clone(),
                    reason: reason.clone(),
                }]),
                Input::Text { source, text } => match crate::parse(text, source) {
                    Ok(services) => {
                        let dups = duplicates_across_files(source, text, &services, &mut defined);
                        if dups.is_empty() {
                            Ok(services)
                        } else {
                            Err(dups.into_iter().map(FileError::Manifest).collect())
                        }
                    }
                    Err(errors) => Err(errors.into_iter().map(FileError::Manifest).collect()),
                },
            };
            ParsedFile {
                source: input.source().to_string(),
                result,
            }
        })
        .collect()
}

/// The services of `services` that an earlier file already defined, as errors pointing at
/// their names; records the others in `defined`.
fn duplicates_across_files(
    source: &str,
    text: &str,
    services: &[ParsedService],
    defined: &mut BTreeMap<(String, String), String>,
) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    for p in services {
        let id = (
            p.service.metadata.namespace.clone(),
            p.service.metadata.name.clone(),
        );
        let Some(first) = defined.get(&id) else {
            defined.insert(id, format!("{source}:{}", p.line));
            continue;
        };
        // Point at the name: its line in the document's own text, offset to the file.
        let line = locate(&p.text, "metadata.name").map_or(p.line, |(l, _)| p.line + l - 1);
        let snippet = text.lines().nth(line.saturating_sub(1)).map(str::to_string);
        let column = snippet
            .as_deref()
            .and_then(|s| s.find(id.1.as_str()).map(|i| s[..i].chars().count() + 1))
            .unwrap_or(1);
        errors.push(ManifestError {
            source: source.to_string(),
            line,
            column,
            message: format!(
                "metadata.name: service {}/{} is already defined at {first}",
                id.0, id.1
            ),
            snippet,
        });
    }
    errors
}

fn read_file(path: &Path) -> Input {
    let source = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Input::Text { source, text },
        Err(e) => Input::Unreadable {
            source,
            reason: e.to_string(),
        },
    }
}

/// Collects manifest files below `dir`. Hidden entries are skipped; symbolic links to files
/// are followed, links to directories are not (no cycles).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if is_manifest_name(&path) && (ft.is_file() || (ft.is_symlink() && path.is_file())) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_manifest_name(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str =
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n";

    fn text(source: &str, text: &str) -> Input {
        Input::Text {
            source: source.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_service_in_two_files_is_an_error_at_the_second_name() {
        let files = parse_inputs(&[
            text("a.yaml", WEB),
            text("b.yaml", &format!("# again\n{WEB}")),
        ]);
        assert!(files[0].result.is_ok());
        let errs = files[1].result.as_ref().unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "b.yaml:5:9: metadata.name: service default/web is already defined at a.yaml:1"
        );
    }

    #[test]
    fn unreadable_inputs_name_the_path_and_the_reason() {
        let inputs = collect_inputs(&["/nonexistent/shoal.yaml".to_string()], || {
            Ok(String::new())
        });
        let files = parse_inputs(&inputs);
        let errs = files[0].result.as_ref().unwrap_err();
        assert!(
            errs[0]
                .render()
                .starts_with("/nonexistent/shoal.yaml: cannot read: No such file or directory"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn stdin_is_read_once() {
        let inputs = collect_inputs(&["-".to_string(), "-".to_string()], || Ok(WEB.to_string()));
        assert!(matches!(&inputs[0], Input::Text { source, .. } if source == STDIN_NAME));
        assert!(matches!(&inputs[1], Input::Unreadable { .. }));
    }

    #[test]
    fn directories_are_walked_recursively_sorted_and_without_hidden_entries() {
        let dir = std::env::temp_dir().join(format!("shoal-core-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        for f in [
            "b.yaml",
            "a.yml",
            "sub/c.json",
            "notes.txt",
            ".git/x.yaml",
            ".h.yaml",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let inputs = collect_inputs(&[dir.display().to_string()], || Ok(String::new()));
        let names: Vec<String> = inputs
            .iter()
            .map(|i| {
                i.source()
                    .strip_prefix(&dir.display().to_string())
                    .unwrap_or(i.source())
                    .to_string()
            })
            .collect();
        assert_eq!(names, vec!["/a.yml", "/b.yaml", "/sub/c.json"]);
        let empty = collect_inputs(&[dir.join("empty").display().to_string()], || {
            Ok(String::new())
        });
        assert!(
            matches!(&empty[0], Input::Unreadable { reason, .. } if reason.starts_with("no *.yaml")),
            "{empty:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
