//! `POST /v1/services/{ns}/{name}/rollback` against a real embedded store: the previous spec
//! from the status becomes the manifest again, with its metadata, under a revision check.

use axum::http::StatusCode;
use shoal_core::model::encode;
use shoal_core::{ServiceRef, ServiceStatus};
use shoal_tests::api::{Api, manifest};

fn web() -> ServiceRef {
    ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
    }
}

/// Writes a status whose previous spec is the one of `previous_manifest`.
async fn status_with_previous(api: &Api, previous_manifest: &str) {
    let prev = shoal_core::parse(previous_manifest, "prev.yaml")
        .unwrap()
        .remove(0);
    let status = ServiceStatus {
        observed_generation: 1,
        previous_spec: Some(prev.service.spec),
        ..Default::default()
    };
    api.put_stored(&api.keys.service_status(&web()), encode(&status))
        .await;
}

#[tokio::test]
async fn rollback_writes_the_previous_spec_back_with_the_metadata() {
    let api = Api::new().await;
    let v1 = manifest("web", "app: web", 3);
    let v2 = v1.replace("nginx:1.27", "nginx:1.28");
    let (s, v) = api.json("PUT", "/v1/services/default/web", &v2).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rev = v["revision"].as_i64().unwrap();

    // No status yet: nothing to roll back to.
    let (s, v) = api
        .json("POST", "/v1/services/default/web/rollback", "")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no previous spec"),
        "{v}"
    );

    status_with_previous(&api, &v1).await;
    // A stale revision is refused.
    let (s, _, body) = api
        .call(
            "POST",
            "/v1/services/default/web/rollback",
            "",
            &[("if-match", &format!("\"{}\"", rev - 1))],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    let (s, v) = api
        .json("POST", "/v1/services/default/web/rollback", "")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["action"], "configured");
    assert!(v["revision"].as_i64().unwrap() > rev);

    let (s, v) = api.json("GET", "/v1/services/default/web", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["service"]["spec"]["image"], "nginx:1.27", "{v}");
    assert_eq!(v["service"]["spec"]["replicas"], 3);
    assert_eq!(v["service"]["metadata"]["labels"]["app"], "web", "{v}");

    // Rolling back to what the manifest already says changes nothing.
    let (s, v) = api
        .json("POST", "/v1/services/default/web/rollback", "")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["action"], "unchanged");
}

#[tokio::test]
async fn rollback_of_a_missing_service_is_404() {
    let api = Api::new().await;
    let (s, v) = api
        .json("POST", "/v1/services/default/nope/rollback", "")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}
