//! Job manifests: defaults, and each bad value reported at its line and column.

use shoal_core::job::{ConcurrencyPolicy, DEFAULT_BACKOFF_LIMIT};
use shoal_core::manifest::Mode;
use shoal_core::{ManifestError, parse};

const BASE: &str = "\
apiVersion: shoal/v1
kind: Service
metadata:
  name: report
spec:
  image: busybox
";

fn errors(text: &str) -> Vec<ManifestError> {
    match parse(text, "job.yaml") {
        Ok(_) => panic!("expected an error in:\n{text}"),
        Err(e) => e,
    }
}

/// The single error of `text` as `(line, column, message)`.
fn one(text: &str) -> (usize, usize, String) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    let e = e.into_iter().next().unwrap();
    assert_eq!(e.source, "job.yaml");
    (e.line, e.column, e.message)
}

#[test]
fn a_job_parses_with_its_defaults() {
    let text = format!(
        "{BASE}  mode: replicated-job\n  job:\n    completions: 6\n    parallelism: 2\n    schedule: \"*/5 * * * *\"\n    timeZone: Europe/Paris\n"
    );
    let parsed = parse(&text, "job.yaml").unwrap_or_else(|e| panic!("{e:?}"));
    let spec = &parsed[0].service.spec;
    assert_eq!(spec.mode, Mode::ReplicatedJob);
    let job = spec.job.as_ref().unwrap();
    assert_eq!((job.completions, job.parallelism), (Some(6), Some(2)));
    assert_eq!(job.backoff_limit, DEFAULT_BACKOFF_LIMIT);
    assert_eq!(job.concurrency_policy, ConcurrencyPolicy::Forbid);
    let global = format!("{BASE}  mode: global-job\n");
    assert!(parse(&global, "job.yaml").is_ok());
}

#[test]
fn bad_job_values_are_located() {
    let job = |body: &str| format!("{BASE}  mode: replicated-job\n  job:\n{body}");
    let (line, col, msg) = one(&job("    completions: 0\n"));
    assert_eq!((line, col), (9, 18), "{msg}");
    assert!(msg.contains("completions must be at least 1"), "{msg}");

    let (line, col, msg) = one(&job("    schedule: \"* * *\"\n"));
    assert_eq!((line, col), (9, 15), "{msg}");
    assert!(msg.contains("5 fields"), "{msg}");

    let (line, _, msg) = one(&job(
        "    schedule: \"@daily\"\n    timeZone: Mars/Olympus\n",
    ));
    assert_eq!(line, 10, "{msg}");
    assert!(msg.contains("unknown time zone"), "{msg}");

    let (line, _, msg) = one(&job("    concurrencyPolicy: Sometimes\n"));
    assert_eq!(line, 9, "{msg}");
    assert!(msg.contains("Forbid"), "{msg}");

    let (line, _, msg) = one(&job("    concurrencyPolicy: Replace\n"));
    assert_eq!(line, 9, "{msg}");
    assert!(msg.contains("needs a schedule"), "{msg}");

    let (line, _, msg) = one(&job("    activeDeadline: 0s\n"));
    assert_eq!(line, 9, "{msg}");
    assert!(msg.contains("more than 0"), "{msg}");
}

#[test]
fn service_only_settings_are_refused_on_jobs_and_job_settings_on_services() {
    let (line, _, msg) = one(&format!(
        "{BASE}  mode: replicated-job\n  update:\n    parallelism: 2\n"
    ));
    assert_eq!(line, 8, "{msg}");
    assert!(msg.contains("next run"), "{msg}");

    let (line, _, msg) = one(&format!("{BASE}  mode: replicated-job\n  replicas: 3\n"));
    assert_eq!(line, 8, "{msg}");
    assert!(msg.contains("job.completions"), "{msg}");

    let (line, _, msg) = one(&format!(
        "{BASE}  mode: global-job\n  job:\n    completions: 2\n"
    ));
    assert_eq!(line, 9, "{msg}");
    assert!(msg.contains("every eligible node"), "{msg}");

    let (line, _, msg) = one(&format!("{BASE}  job:\n    completions: 2\n"));
    assert_eq!(line, 7, "{msg}");
    assert!(msg.contains("replicated-job"), "{msg}");
}
