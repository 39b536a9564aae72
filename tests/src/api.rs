//! The API in-process for tests: its router over a real embedded store in a temporary
//! directory, called without a network.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use shoal_api::{ApiState, router};
use shoal_core::Keys;
use shoal_store::{EmbeddedStore, Store};
use tower::ServiceExt;

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
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
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

/// A manifest for `name` with the given labels and replicas.
pub fn manifest(name: &str, labels: &str, replicas: u64) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  replicas: {replicas}\n  image: nginx:1.27\n"
    )
}
