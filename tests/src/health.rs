//! A health endpoint a test switches between healthy and not: `GET /health` on a loopback port
//! answers 200, or 503 once set unhealthy (what an HTTP check of Consul or of a task probes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;

/// `GET /health` on `127.0.0.1:<port>`, served until the test ends.
pub struct HealthEndpoint {
    /// The port it listens on.
    pub port: u16,
    healthy: Arc<AtomicBool>,
}

impl HealthEndpoint {
    /// Starts it, healthy, on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the health endpoint");
        let port = listener.local_addr().expect("address").port();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                let ok = flag.load(Ordering::SeqCst);
                async move {
                    if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HealthEndpoint { port, healthy }
    }

    /// Makes it answer healthy (200) or not (503).
    pub fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}
