//! The SSE watch and the typed client against a served API over a real embedded store.

use std::time::Duration;

use futures::StreamExt;
use shoal_api::client::EventStream;
use shoal_api::types::{WatchEvent, WatchKind};
use shoal_core::{Keys, ServiceRef, ServiceStatus};
use shoal_tests::api::{Served, embedded_store};

/// How long an event is waited for.
const DEADLINE: Duration = Duration::from_secs(30);

/// The next event of the stream; fails the test when none comes or it is an error.
async fn next_event(events: &mut EventStream) -> WatchEvent {
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("an event")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

fn status(running: u64) -> Vec<u8> {
    serde_json::to_vec(&ServiceStatus {
        observed_generation: 1,
        desired: 3,
        running,
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn watch_delivers_status_changes_and_resumes_from_a_revision() {
    let api = Served::start().await;
    let (store, keys, client) = (&api.store, &api.keys, &api.client);
    let web = ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
    };

    let mut events = client.watch(Some("default/web"), None).await.unwrap();
    let r1 = store
        .put(&keys.service_status(&web), status(1), None)
        .await
        .unwrap();
    let other = ServiceRef {
        namespace: "default".into(),
        name: "db".into(),
    };
    store
        .put(&keys.service_status(&other), status(0), None)
        .await
        .unwrap();
    let r2 = store
        .put(&keys.service_status(&web), status(2), None)
        .await
        .unwrap();

    let ev = next_event(&mut events).await;
    assert_eq!(ev.kind, WatchKind::ServiceStatus);
    assert_eq!(ev.revision, r1);
    assert_eq!(ev.value.as_ref().unwrap()["running"], 1);
    let ev = next_event(&mut events).await;
    assert_eq!(
        ev.revision, r2,
        "the other service's status is filtered out"
    );
    drop(events);

    // Resume after r1: only the later change comes again.
    let mut resumed = client.watch(Some("default/web"), Some(r1)).await.unwrap();
    let ev = next_event(&mut resumed).await;
    assert_eq!(ev.revision, r2);
    assert_eq!(ev.value.as_ref().unwrap()["running"], 2);

    // A fresh watch starts with the current state.
    let mut fresh = client.watch(Some("default/web"), None).await.unwrap();
    let ev = next_event(&mut fresh).await;
    assert_eq!(ev.value.as_ref().unwrap()["running"], 2);
}

#[tokio::test]
async fn client_keeps_the_server_message() {
    let api = Served::start().await;
    let client = &api.client;
    let err = client
        .apply("apiVersion: shoal/v1\nkind: Nope\n", &Default::default())
        .await
        .unwrap_err();
    match err {
        shoal_api::ClientError::Api {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert!(message.contains("invalid manifest"), "{message}");
        }
        other => panic!("expected an API error, got {other}"),
    }
    assert!(
        client
            .get_service("default", "web")
            .await
            .unwrap()
            .is_none()
    );
}

/// A watch of one service gets its tasks' statuses and deletions — and nothing of a service
/// with the same name in another namespace.
#[tokio::test]
async fn a_service_watch_keeps_its_task_statuses_and_deletions_only() {
    let api = Served::start().await;
    let (store, keys, client) = (&api.store, &api.keys, &api.client);
    let mut events = client.watch(Some("a/web"), None).await.unwrap();
    let task =
        |ns: &str| format!(r#"{{"service":{{"namespace":"{ns}","name":"web"}}}}"#).into_bytes();
    store
        .put(&keys.task("n1", "web.1.a"), task("a"), None)
        .await
        .unwrap();
    store
        .put(&keys.task("n1", "web.1.b"), task("b"), None)
        .await
        .unwrap();
    store
        .put(&keys.task_status("n1", "web.1.b"), b"{}".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&keys.task_status("n1", "web.1.a"), b"{}".to_vec(), None)
        .await
        .unwrap();
    store.delete(&keys.task("n1", "web.1.b")).await.unwrap();
    store.delete(&keys.task("n1", "web.1.a")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = next_event(&mut events).await;
        assert_eq!(ev.namespace.as_deref(), Some("a"), "{ev:?}");
        seen.push((ev.kind, ev.task.unwrap(), ev.deleted));
    }
    assert_eq!(
        seen,
        [
            (WatchKind::Task, "web.1.a".to_string(), false),
            (WatchKind::TaskStatus, "web.1.a".to_string(), false),
            (WatchKind::Task, "web.1.a".to_string(), true),
        ]
    );
}

/// Node records and node settings are on the stream: a node coming up, being drained and
/// going down each arrive as an event, to every client of the one shared watch.
#[tokio::test]
async fn node_changes_reach_every_client_of_the_shared_watch() {
    let api = Served::start().await;
    let (store, keys, client) = (&api.store, &api.keys, &api.client);
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(client.watch(None, None).await.unwrap());
    }
    let up = store
        .put(&keys.node("n1"), br#"{"id":"n1"}"#.to_vec(), None)
        .await
        .unwrap();
    let drained = store
        .put(
            &keys.node_config("n1"),
            br#"{"availability":"drain"}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    store.delete(&keys.node("n1")).await.unwrap();
    for events in &mut streams {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let ev = next_event(events).await;
            assert_eq!(ev.node.as_deref(), Some("n1"), "{ev:?}");
            seen.push((ev.kind, ev.deleted, ev.revision));
        }
        assert_eq!(seen[0], (WatchKind::Node, false, up));
        assert_eq!(seen[1], (WatchKind::NodeConfig, false, drained));
        assert_eq!((seen[2].0, seen[2].1), (WatchKind::Node, true));
    }
}

/// A client resuming from a revision older than the API's watch history is told so on the
/// stream (it then starts over from the current state) instead of missing changes.
#[tokio::test]
async fn resuming_before_the_apis_history_is_an_error_event() {
    let (store, _dir) = embedded_store().await;
    let keys = Keys::default();
    let old = store
        .put(&keys.node("n1"), br#"{"id":"n1"}"#.to_vec(), None)
        .await
        .unwrap();
    store.delete(&keys.node("n1")).await.unwrap();
    // The API starts after those changes: its history begins now.
    let api = Served::over(store, keys).await;
    let client = &api.client;
    let mut events = client.watch(None, Some(old - 1)).await.unwrap();
    let first = tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("an answer")
        .expect("an item");
    match first {
        Err(shoal_api::ClientError::Api { message, .. }) => {
            assert!(
                message.contains("older than the API's watch history"),
                "{message}"
            );
        }
        other => panic!("expected an error event, got {other:?}"),
    }
}

/// When the API shuts down, an open watch stream (a dashboard, `shoal get -w`) ends at once
/// instead of holding the shutdown for the graceful period.
#[tokio::test]
async fn an_open_watch_ends_when_the_server_shuts_down() {
    let mut api = Served::start().await;
    let (store, keys, client) = (api.store.clone(), api.keys.clone(), api.client.clone());
    let mut events = client.watch(None, None).await.unwrap();
    let up = store
        .put(&keys.node("n1"), br#"{"id":"n1"}"#.to_vec(), None)
        .await
        .unwrap();
    let ev = next_event(&mut events).await;
    assert_eq!(ev.revision, up, "the stream is open and following");

    let began = std::time::Instant::now();
    api.stop.cancel();
    let end = tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("the stream ends");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no event after shutdown: {end:?}"
    );
    tokio::time::timeout(DEADLINE, &mut api.server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    let took = began.elapsed();
    println!("shutdown with an open watch took {took:?} (goal: well under the 10 s grace)");
    assert!(
        took < Duration::from_secs(10),
        "the server waited for the graceful period ({took:?}) instead of ending the stream"
    );
}
