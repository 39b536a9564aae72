//! The server's own faults are `5xx`, never `400` (which the CLI reports as invalid input):
//! the store becoming unreachable under a running API, and a stored manifest the server
//! cannot read back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use shoal_api::ApiState;
use shoal_core::ServiceRef;
use shoal_core::model::{ServiceStatus, encode};
use shoal_store::StoreError;
use shoal_tests::api::{Api, manifest};
use shoal_tests::intercept::{Intercept, Intercepted};

/// A real embedded store behind a switch: while `down`, every call fails as an unreachable
/// etcd does.
struct Outage {
    down: Arc<AtomicBool>,
}

impl Intercept for Outage {
    fn admit(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "etcd http://127.0.0.1:1: connection refused".into(),
            ));
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_unreachable_store_is_503_on_every_route_never_400() {
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let api = Api::with(move |s| ApiState {
        store: Arc::new(Intercepted::new(s.store.clone(), Outage { down: switch })),
        ..s
    })
    .await;
    let web = manifest("web", "app: web", 2);
    let (s, v) = api.json("PUT", "/v1/services/default/web", &web).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    down.store(true, Ordering::SeqCst);
    let requests: [(&str, &str, String); 8] = [
        (
            "PUT",
            "/v1/services/default/web",
            web.replace("replicas: 2", "replicas: 3"),
        ),
        ("POST", "/v1/apply", web.clone()),
        ("POST", "/v1/services/default/web/rollback", String::new()),
        ("DELETE", "/v1/services/default/web", String::new()),
        (
            "PATCH",
            "/v1/nodes/n1",
            r#"{"availability":"drain"}"#.into(),
        ),
        ("GET", "/v1/services", String::new()),
        ("GET", "/v1/tasks", String::new()),
        ("GET", "/v1/nodes", String::new()),
    ];
    for (method, uri, body) in requests {
        let (s, v) = api.json(method, uri, &body).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains("store unavailable"), "{method} {uri}: {v}");
    }
    let (s, _, body) = api.call("GET", "/metrics", "", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // Back up: everything answers again, nothing was written meanwhile.
    down.store(false, Ordering::SeqCst);
    let (s, v) = api.json("GET", "/v1/services/default/web", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["service"]["spec"]["replicas"], 2, "{v}");
}

#[tokio::test]
async fn a_stored_manifest_the_server_cannot_read_back_is_500_not_400() {
    let api = Api::new().await;
    let web: ServiceRef = "default/web".parse().unwrap();
    // Written behind the API's back: the manifest names another service than its key.
    api.store
        .put(
            &api.keys.service(&web),
            manifest("api", "app: api", 1).into_bytes(),
            None,
        )
        .await
        .unwrap();
    let previous = shoal_core::parse(&manifest("web", "app: web", 1), "prev.yaml")
        .unwrap()
        .remove(0);
    let status = ServiceStatus {
        previous_spec: Some(previous.service.spec),
        ..Default::default()
    };
    api.store
        .put(&api.keys.service_status(&web), encode(&status), None)
        .await
        .unwrap();
    let (s, v) = api
        .json("POST", "/v1/services/default/web/rollback", "")
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("manifest names service default/api but is stored under default/web"),
        "{v}"
    );
    // `GET` shows the same judgement next to the text, as the controller writes it.
    let (s, v) = api.json("GET", "/v1/services/default/web", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("is stored under default/web"),
        "{v}"
    );
}
