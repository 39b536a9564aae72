//! `shoal validate` and `shoal schema`.
//!
//! `validate` checks manifests offline, exactly as the API would before storing them: every
//! error goes to stderr as `FILE:LINE:COL: message` with the offending line and a caret under
//! the column; every good file gets one line on stdout. Exit code 0 when everything is valid,
//! 2 (invalid input, as for every command) otherwise.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Args;
use shoal_core::ParsedService;
use shoal_core::files::{Input, collect_inputs, parse_inputs};

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
    for file in parse_inputs(inputs) {
        match file.result {
            Ok(services) => report.valid.push(summary(&file.source, &services)),
            Err(errors) => {
                report.failed_files += 1;
                report.errors.extend(errors.iter().map(|e| e.render()));
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
}
