//! `shoal validate` and `shoal schema`.
//!
//! `validate` checks manifests offline, exactly as the API would before storing them: every
//! error goes to stderr as `FILE:LINE:COL: message` with the offending line and a caret under
//! the column; every good file gets one line on stdout. Exit code 0 when everything is valid,
//! 2 (invalid input, as for every command) otherwise.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use shoal_core::{ManifestError, ParsedService};

/// Flags of `shoal validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories to check (`-` reads standard input). A directory is searched
    /// recursively for *.yaml, *.yml and *.json files.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

/// Flags of `shoal schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {}

/// Source name used for standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// One manifest to check: its display name and its text, or why it could not be read.
#[derive(Debug)]
pub enum Input {
    /// Read successfully.
    Text {
        /// Path as given (or `<stdin>`).
        source: String,
        /// Contents.
        text: String,
    },
    /// Could not be read (missing, unreadable, not UTF-8, an empty directory).
    Unreadable {
        /// Path as given.
        source: String,
        /// Why.
        reason: String,
    },
}

/// Runs `shoal validate`.
pub async fn run_validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let inputs = collect_inputs(&args.files, || {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    });
    let report = check(&inputs);
    let mut out = std::io::stdout().lock();
    for line in &report.valid {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let mut err = std::io::stderr().lock();
    for e in &report.errors {
        writeln!(err, "{e}\n")?;
    }
    if report.failed_files > 0 {
        writeln!(
            err,
            "{} error{} in {} of {} file{}",
            report.errors.len(),
            plural(report.errors.len()),
            report.failed_files,
            inputs.len(),
            plural(inputs.len()),
        )?;
        return Ok(ExitCode::from(super::client::EXIT_INVALID));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shoal schema`: the Service manifest's JSON Schema, pretty-printed.
pub async fn run_schema(_args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", shoal_core::schema::service_schema_pretty())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What `validate` prints.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per valid file (stdout).
    pub valid: Vec<String>,
    /// Rendered errors, each possibly several lines (stderr).
    pub errors: Vec<String>,
    /// Files with at least one error.
    pub failed_files: usize,
}

/// Parses and validates every input, and checks that no service is defined twice across them.
pub fn check(inputs: &[Input]) -> Report {
    let mut report = Report::default();
    let mut defined: BTreeMap<(String, String), String> = BTreeMap::new();
    for input in inputs {
        let (source, text) = match input {
            Input::Text { source, text } => (source, text),
            Input::Unreadable { source, reason } => {
                report
                    .errors
                    .push(format!("{source}: cannot read: {reason}"));
                report.failed_files += 1;
                continue;
            }
        };
        match shoal_core::parse(text, source) {
            Ok(services) => {
                let dups = duplicates_across_files(source, text, &services, &mut defined);
                if dups.is_empty() {
                    report.valid.push(summary(source, &services));
                } else {
                    report.failed_files += 1;
                    report.errors.extend(dups.iter().map(ManifestError::render));
                }
            }
            Err(errors) => {
                report.failed_files += 1;
                report
                    .errors
                    .extend(errors.iter().map(ManifestError::render));
            }
        }
    }
    report
}

fn summary(source: &str, services: &[ParsedService]) -> String {
    let ids: Vec<String> = services
        .iter()
        .map(|p| p.service.id().to_string())
        .collect();
    let n = services.len();
    if n == 0 {
        format!("{source}: no services (empty)")
    } else {
        format!(
            "{source}: {n} service{} valid ({})",
            plural(n),
            ids.join(", ")
        )
    }
}

/// A service already defined in an earlier file is an error: applying both would make one
/// silently replace the other.
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
        let here = format!("{source}:{}", p.line);
        match defined.get(&id) {
            Some(first) => {
                // Point at the name: its line in the document's own text, offset to the file.
                let line = shoal_core::parse::locate(&p.text, "metadata.name")
                    .map_or(p.line, |(l, _)| p.line + l - 1);
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
            None => {
                defined.insert(id, here);
            }
        }
    }
    errors
}

/// Expands the command line's paths: `-` is standard input (read once, with `read_stdin`),
/// a directory is every *.yaml, *.yml and *.json file below it (sorted, hidden entries
/// skipped), anything else is read as a file whatever its extension.
pub fn collect_inputs(
    args: &[String],
    read_stdin: impl FnOnce() -> std::io::Result<String>,
) -> Vec<Input> {
    let mut inputs = Vec::new();
    let mut read_stdin = Some(read_stdin);
    for arg in args {
        if arg == "-" {
            match read_stdin.take() {
                Some(read) => inputs.push(match read() {
                    Ok(text) => Input::Text {
                        source: STDIN_NAME.to_string(),
                        text,
                    },
                    Err(e) => Input::Unreadable {
                        source: STDIN_NAME.to_string(),
                        reason: e.to_string(),
                    },
                }),
                None => inputs.push(Input::Unreadable {
                    source: STDIN_NAME.to_string(),
                    reason: "standard input can be read only once".to_string(),
                }),
            }
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

/// Collects manifest files below `dir`. Symbolic links to files are followed; links to
/// directories are not (no cycles).
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

    fn text(source: &str, text: &str) -> Input {
        Input::Text {
            source: source.into(),
            text: text.into(),
        }
    }

    const WEB: &str =
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n";

    #[test]
    fn good_files_get_a_summary_line() {
        let r = check(&[text("a.yaml", WEB), text("b.yaml", "# nothing\n")]);
        assert_eq!(
            r.valid,
            vec![
                "a.yaml: 1 service valid (default/web)",
                "b.yaml: no services (empty)"
            ]
        );
        assert!(r.errors.is_empty());
        assert_eq!(r.failed_files, 0);
    }

    #[test]
    fn errors_are_rendered_with_file_line_and_column() {
        let r = check(&[
            text("bad.yaml", &format!("{WEB}  replica: 3\n")),
            text("ok.yaml", WEB),
        ]);
        assert_eq!(r.failed_files, 1);
        assert_eq!(r.errors.len(), 1);
        assert!(
            r.errors[0].starts_with("bad.yaml:7:3: spec: unknown field `replica`"),
            "{}",
            r.errors[0]
        );
        assert!(
            r.errors[0].ends_with("7 |   replica: 3\n  |   ^"),
            "{}",
            r.errors[0]
        );
        assert_eq!(r.valid, vec!["ok.yaml: 1 service valid (default/web)"]);
    }

    #[test]
    fn a_service_in_two_files_is_an_error() {
        let r = check(&[
            text("a.yaml", WEB),
            text("b.yaml", &format!("# again\n{WEB}")),
        ]);
        assert_eq!(r.failed_files, 1);
        assert!(
            r.errors[0].starts_with(
                "b.yaml:5:9: metadata.name: service default/web is already defined at a.yaml:1"
            ),
            "{}",
            r.errors[0]
        );
    }

    #[test]
    fn unreadable_inputs_name_the_path_and_the_reason() {
        let inputs = collect_inputs(&["/nonexistent/shoal.yaml".to_string()], || {
            Ok(String::new())
        });
        let r = check(&inputs);
        assert_eq!(r.failed_files, 1);
        assert!(
            r.errors[0]
                .starts_with("/nonexistent/shoal.yaml: cannot read: No such file or directory"),
            "{}",
            r.errors[0]
        );
    }

    #[test]
    fn stdin_is_read_once() {
        let inputs = collect_inputs(&["-".to_string(), "-".to_string()], || Ok(WEB.to_string()));
        assert!(matches!(&inputs[0], Input::Text { source, .. } if source == STDIN_NAME));
        assert!(matches!(&inputs[1], Input::Unreadable { .. }));
    }

    #[test]
    fn directories_are_walked_recursively_and_sorted() {
        let dir = std::env::temp_dir().join(format!("shoal-validate-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        for f in ["b.yaml", "a.yml", "sub/c.json", "notes.txt", ".git/x.yaml"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let inputs = collect_inputs(&[dir.display().to_string()], || Ok(String::new()));
        let names: Vec<String> = inputs
            .iter()
            .map(|i| match i {
                Input::Text { source, .. } | Input::Unreadable { source, .. } => source
                    .strip_prefix(&dir.display().to_string())
                    .unwrap_or(source)
                    .to_string(),
            })
            .collect();
        assert_eq!(names, vec!["/a.yml", "/b.yaml", "/sub/c.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
