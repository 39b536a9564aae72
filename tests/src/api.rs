//! The API in-process for tests over a real embedded store in a temporary directory: its
//! router called without a network ([`Api`]), or served on a loopback port with a typed
//! client of it ([`Served`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use shoal_api::{ApiState, Client, ServeError, router};
use shoal_core::Keys;
use shoal_store::{EmbeddedStore, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A fresh embedded store in a temporary directory (it lives as long as the directory).
pub async fn embedded_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path())
        .await
        .expect("the embedded store opens");
    (Arc::new(store), dir)
}

/// A router over a fresh embedded store.
pub struct Api {
    /// The store behind the router.
    pub store: Arc<dyn Store>,
    /// Key layout.
    pub keys: Keys,
    /// The router.
    pub router: Router,
    _dir: tempfile::TempDir,
}

impl Api {
    /// A fresh store with the default state.
    pub async fn new() -> Self {
        Self::with(|s| s).await
    }

    /// A fresh store with a customised state.
    pub async fn with(f: impl FnOnce(ApiState) -> ApiState) -> Self {
        let (store, dir) = embedded_store().await;
        let keys = Keys::default();
        let state = f(ApiState::new(store.clone(), keys.clone()));
        Api {
            store,
            keys,
            router: router(state),
            _dir: dir,
        }
    }

    /// The value stored at `key`, read past the API.
    pub async fn stored(&self, key: &str) -> Option<Vec<u8>> {
        let kv = self.store.get(key).await.expect("store read");
        kv.map(|kv| kv.value)
    }

    /// Writes `value` at `key` past the API (as an agent or the controller would).
    pub async fn put_stored(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.store
            .put(key, value.into(), None)
            .await
            .expect("store write");
    }

    /// Sends one request; returns the status, headers and body text.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(b.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// Sends a request and decodes a JSON answer.
    pub async fn json(
        &self,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let (s, _, text) = self.call(method, uri, body, &[]).await;
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {text}"));
        (s, v)
    }
}

/// The API served on a loopback port (`127.0.0.1:0`) until `stop` is cancelled, with a
/// typed client of it.
pub struct Served {
    /// The store behind the API.
    pub store: Arc<dyn Store>,
    /// Key layout.
    pub keys: Keys,
    /// A client of the served API, without a token.
    pub client: Client,
    /// Cancelling it shuts the server down.
    pub stop: CancellationToken,
    /// The server task: ends once it shut down.
    pub server: JoinHandle<Result<(), ServeError>>,
    _dir: Option<tempfile::TempDir>,
}

impl Served {
    /// Serves the API over a fresh embedded store.
    pub async fn start() -> Served {
        let (store, dir) = embedded_store().await;
        Served {
            _dir: Some(dir),
            ..Served::over(store, Keys::default()).await
        }
    }

    /// Serves the API over `store` (kept open by the caller), with key layout `keys`.
    pub async fn over(store: Arc<dyn Store>, keys: Keys) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(shoal_api::serve_listener(
            ApiState::new(store.clone(), keys.clone()),
            listener,
            async move { stopped.cancelled().await },
        ));
        Served {
            store,
            keys,
            client: Client::new(&format!("http://{addr}"), None),
            stop,
            server,
            _dir: None,
        }
    }
}

/// A manifest for `name` with the given labels and replicas.
pub fn manifest(name: &str, labels: &str, replicas: u64) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  replicas: {replicas}\n  image: nginx:1.27\n"
    )
}
