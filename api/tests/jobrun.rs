//! `POST /v1/services/{ns}/{name}/run` against a real embedded store: a request is written for
//! the controller, refused while a run is active unless forced, and only for jobs.

use axum::http::StatusCode;
use shoal_core::job::{JobRun, JobStatus, RunRequest, RunState, RunTrigger};
use shoal_core::model::{Timestamp, decode, encode};
use shoal_core::{ServiceRef, ServiceStatus};
use shoal_tests::api::{Api, manifest};

fn sref(name: &str) -> ServiceRef {
    ServiceRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

const JOB: &str = "apiVersion: shoal/v1\nkind: Service\nmetadata: {name: convert}\nspec:\n  image: busybox\n  mode: replicated-job\n  job: {completions: 2}\n";

async fn set_last_run(api: &Api, state: RunState) {
    let run = JobRun {
        number: 1,
        generation: 1,
        template_hash: "h".into(),
        trigger: RunTrigger::Template,
        state,
        reason: None,
        message: None,
        started_at: Timestamp(1),
        scheduled_for: None,
        finished_at: None,
        completions: 2,
        succeeded: 0,
        failed: 0,
        succeeded_tasks: vec![],
        failed_tasks: vec![],
        done_nodes: vec![],
        cleaned: false,
    };
    let status = ServiceStatus {
        observed_generation: 1,
        job: Some(JobStatus {
            runs: vec![run],
            ..JobStatus::default()
        }),
        ..Default::default()
    };
    api.store
        .put(
            &api.keys.service_status(&sref("convert")),
            encode(&status),
            None,
        )
        .await
        .unwrap();
}

async fn request(api: &Api) -> Option<RunRequest> {
    let kv = api
        .store
        .get(&api.keys.job_run(&sref("convert")))
        .await
        .unwrap()?;
    Some(decode("job run request", &kv.value).unwrap())
}

#[tokio::test]
async fn a_run_request_is_written_refused_while_active_unless_forced() {
    let api = Api::new().await;
    let (s, v) = api.json("PUT", "/v1/services/default/convert", JOB).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    set_last_run(&api, RunState::Running).await;
    let (s, v) = api
        .json("POST", "/v1/services/default/convert/run", "")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--force"), "{v}");
    assert!(
        request(&api).await.is_none(),
        "nothing written when refused"
    );

    let (s, v) = api
        .json("POST", "/v1/services/default/convert/run?force=true", "")
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["nextRun"], 2, "{v}");
    assert!(request(&api).await.is_some_and(|r| r.force));

    set_last_run(&api, RunState::Complete).await;
    let (s, v) = api
        .json("POST", "/v1/services/default/convert/run", "")
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(request(&api).await.is_some_and(|r| !r.force));

    // Deleting the job deletes its request.
    let (s, _) = api.json("DELETE", "/v1/services/default/convert", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(request(&api).await.is_none());
}

#[tokio::test]
async fn only_jobs_have_runs() {
    let api = Api::new().await;
    let (s, v) = api
        .json(
            "PUT",
            "/v1/services/default/web",
            &manifest("web", "app: web", 2),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api.json("POST", "/v1/services/default/web/run", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a job"), "{v}");
    let (s, _) = api.json("POST", "/v1/services/default/nope/run", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pruning_a_job_deletes_its_run_request() {
    let api = Api::new().await;
    let labelled = JOB.replace(
        "metadata: {name: convert}",
        "metadata: {name: convert, labels: {app: shop}}",
    );
    let (s, v) = api
        .json(
            "POST",
            "/v1/apply?prune=true&selector=app%3Dshop",
            &labelled,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .json("POST", "/v1/services/default/convert/run", "")
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(request(&api).await.is_some());

    // The next apply no longer holds the job: it is pruned, and its request with it.
    let other = manifest("web", "app: shop", 1);
    let (s, v) = api
        .json("POST", "/v1/apply?prune=true&selector=app%3Dshop", &other)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][1]["action"], "pruned", "{v}");
    assert!(
        request(&api).await.is_none(),
        "the job's run request is gone"
    );
}
