//! Jobs on the command line: `shoal get jobs`, `shoal describe job NAME` and
//! `shoal job run NAME [--force]`.

use std::time::Duration;

use clap::{Args, Subcommand};
use shoal_api::Client;
use shoal_api::types::ServiceResource;
use shoal_core::job::{JobRun, JobStatus};
use shoal_core::model::Timestamp;

use super::table::render;
use super::wait::{Target, wait_for};
use super::{CmdResult, ConnArgs, EXIT_OK, Failure};

fn job_status(s: &ServiceResource) -> Option<&JobStatus> {
    s.status.as_ref().and_then(|st| st.job.as_ref())
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// `3/6`, or `-` before the first run.
fn completions(run: Option<&JobRun>) -> String {
    run.map_or("-".into(), |r| format!("{}/{}", r.succeeded, r.completions))
}

/// The rows of `shoal get jobs`: the last run of every job.
pub fn job_rows(list: &[ServiceResource], now: Timestamp) -> String {
    let header = ["NAME", "COMPLETIONS", "DURATION", "STATUS", "LAST SCHEDULE"];
    let rows: Vec<Vec<String>> = list
        .iter()
        .filter(|s| s.service.as_ref().is_some_and(|x| x.spec.mode.is_job()))
        .map(|s| {
            let js = job_status(s);
            let run = js.and_then(JobStatus::last);
            let status = match (run, &s.error) {
                (_, Some(_)) => "Invalid".to_string(),
                (Some(r), _) => match &r.reason {
                    Some(why) => format!("{} ({why})", r.state),
                    None => r.state.to_string(),
                },
                (None, _) if s.status.is_none() => "Pending".into(),
                (None, _) => "Scheduled".into(),
            };
            let last = js
                .and_then(|j| j.runs.iter().rev().find_map(|r| r.scheduled_for))
                .map_or("-".into(), |t| format!("{} ago", short(now.since(t))));
            vec![
                s.name.clone(),
                completions(run),
                run.map_or("-".into(), |r| short(r.duration(now))),
                status,
                last,
            ]
        })
        .collect();
    render(&header, &rows)
}

/// The job part of `describe`: settings, schedule and the runs kept.
pub fn job_lines(s: &ServiceResource, now: Timestamp) -> String {
    let mut out = String::new();
    if let Some(job) = s.service.as_ref().and_then(|x| x.spec.job.as_ref()) {
        if let Some(c) = job.completions {
            out.push_str(&format!("Completions:   {c}\n"));
        }
        if let Some(p) = job.parallelism {
            out.push_str(&format!("Parallelism:   {p}\n"));
        }
        out.push_str(&format!("Backoff limit: {}\n", job.backoff_limit));
        if let Some(d) = job.active_deadline {
            out.push_str(&format!("Deadline:      {d}\n"));
        }
        if let Some(t) = job.ttl_after_finished {
            out.push_str(&format!("TTL:           {t} after a run finishes\n"));
        }
        if let Some(sch) = &job.schedule {
            let zone = job.time_zone.as_deref().unwrap_or("UTC");
            out.push_str(&format!(
                "Schedule:      {sch} ({zone}, concurrency {:?})\n",
                job.concurrency_policy
            ));
        }
    }
    let Some(js) = job_status(s) else {
        return out;
    };
    if let Some(next) = js.next_schedule {
        out.push_str(&format!("Next run:      {next}\n"));
    }
    if js.runs.is_empty() {
        return out;
    }
    out.push_str("\nRuns:\n");
    let rows: Vec<Vec<String>> = js
        .runs
        .iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                r.state.to_string(),
                completions(Some(r)),
                r.failed.to_string(),
                r.started_at.to_string(),
                short(r.duration(now)),
                r.template_hash.chars().take(12).collect(),
                [r.reason.clone(), r.message.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            ]
        })
        .collect();
    let header = [
        "RUN",
        "STATE",
        "COMPLETIONS",
        "FAILED",
        "STARTED",
        "DURATION",
        "TEMPLATE",
        "REASON",
    ];
    for line in render(&header, &rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// `shoal job ...`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Start a run of a job now (a scheduled job outside its schedule, or an unchanged job
    /// again).
    Run {
        /// Job name.
        name: String,
        /// Stop the active run, if any, and start a new one.
        #[arg(long)]
        force: bool,
        /// Wait for the run to finish: exit 0 when it completes, 1 when it fails.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits (exit 3 after).
        #[arg(long, default_value = "10m")]
        timeout: shoal_core::units::Dur,
    },
}

/// Runs `shoal job`.
pub async fn job(a: JobArgs) -> CmdResult {
    let client: Client = a.conn.client();
    let ns = a.conn.ns();
    match a.command {
        JobCommand::Run {
            name,
            force,
            wait,
            timeout,
        } => {
            let accepted = client.run_job(ns, &name, force).await?;
            println!("job {ns}/{name}: run {} requested", accepted.next_run);
            if !wait {
                return Ok(EXIT_OK);
            }
            wait_for_run(&client, ns, &name, accepted.next_run, timeout.get()).await
        }
    }
}

/// Waits until run `number` (or a later one) is the job's last, then for it to finish.
async fn wait_for_run(
    client: &Client,
    ns: &str,
    name: &str,
    number: u64,
    timeout: Duration,
) -> CmdResult {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let st = client.service_status(ns, name).await?;
        let started = st
            .as_ref()
            .and_then(|s| s.job.as_ref())
            .and_then(JobStatus::last)
            .is_some_and(|r| r.number >= number);
        if started {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure {
                code: super::EXIT_TIMEOUT,
                message: format!("run {number} of {ns}/{name} did not start within {timeout:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let target = Target {
        namespace: ns.to_string(),
        name: name.to_string(),
        revision: 0,
    };
    wait_for(client, vec![target], left).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::job::{RunState, RunTrigger};
    use shoal_core::model::ServiceStatus;

    fn run(number: u64, state: RunState, succeeded: u64) -> JobRun {
        JobRun {
            number,
            generation: 1,
            template_hash: "abc".into(),
            trigger: RunTrigger::Schedule,
            state,
            reason: (state == RunState::Failed).then(|| "BackoffLimitExceeded".into()),
            message: None,
            started_at: Timestamp(1_000_000),
            scheduled_for: Some(Timestamp(1_000_000)),
            finished_at: None,
            completions: 6,
            succeeded,
            failed: 0,
            succeeded_tasks: vec![],
            failed_tasks: vec![],
            done_nodes: vec![],
            cleaned: false,
        }
    }

    #[test]
    fn get_jobs_shows_the_last_run() {
        let text = "apiVersion: shoal/v1\nkind: Service\nmetadata: {name: convert}\nspec:\n  image: busybox\n  mode: replicated-job\n  job: {completions: 6}\n";
        let svc = shoal_core::parse(text, "t.yaml").unwrap().remove(0).service;
        let status = ServiceStatus {
            job: Some(JobStatus {
                runs: vec![run(1, RunState::Failed, 1), run(2, RunState::Running, 3)],
                ..JobStatus::default()
            }),
            ..ServiceStatus::default()
        };
        let res = ServiceResource {
            namespace: "default".into(),
            name: "convert".into(),
            revision: 1,
            manifest: text.into(),
            service: Some(svc),
            error: None,
            status: Some(status),
            endpoints: None,
            names_unavailable: Default::default(),
        };
        let out = job_rows(&[res], Timestamp(1_090_000));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{out}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            ["convert", "3/6", "1m30s", "Running", "1m30s", "ago"],
            "{out}"
        );
    }
}
