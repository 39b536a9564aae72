//! The dashboard benchmark: a sample cluster (500 services, 5,000 tasks, 50 nodes) written
//! into a real etcd, the API served in-process on loopback, and every dashboard page
//! requested in turn, timing the full answer (server-side rendering included). Goal: each
//! page in ≤ 300 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_api::sample::{SampleSize, write_sample};
use shoal_api::{ApiState, serve_listener};
use shoal_core::Keys;

use crate::report::Report;

/// Why the dashboard benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum UiBenchError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] shoal_store::StoreError),
    /// A socket or file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A page could not be fetched or did not answer 200.
    #[error("{page}: {message}")]
    Page {
        /// Path of the page.
        page: String,
        /// What went wrong.
        message: String,
    },
}

/// The pages measured, by name and path.
pub const PAGES: &[(&str, &str)] = &[
    ("overview", "/ui/"),
    ("services", "/ui/services"),
    ("services_page_10", "/ui/services?page=10"),
    (
        "services_filtered",
        "/ui/services?namespace=shop&selector=tier%3Dweb",
    ),
    ("service", "/ui/services/default/svc-0000"),
    ("nodes", "/ui/nodes"),
    ("node", "/ui/nodes/node-000"),
];

/// Timing of one page over `rounds` requests.
#[derive(Debug, Clone, Copy)]
pub struct PageTiming {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Slowest.
    pub max: Duration,
    /// Bytes of HTML.
    pub bytes: usize,
}

async fn time_page(
    http: &reqwest::Client,
    url: &str,
    rounds: usize,
) -> Result<PageTiming, UiBenchError> {
    let fail = |m: String| UiBenchError::Page {
        page: url.to_string(),
        message: m,
    };
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for i in 0..rounds + 2 {
        let start = Instant::now();
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("answered {}", resp.status())));
        }
        let body = resp.text().await.map_err(|e| fail(e.to_string()))?;
        let took = start.elapsed();
        bytes = body.len();
        if i >= 2 {
            times.push(took);
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    Ok(PageTiming {
        p50: at(0.5),
        p95: at(0.95),
        max: *times.last().unwrap_or(&Duration::ZERO),
        bytes,
    })
}

/// Seeds the sample cluster into the etcd at `store_url`, serves the API and times every page
/// of [`PAGES`] over `rounds` requests each, recording the figures in `report`.
pub async fn run(
    store_url: &str,
    size: SampleSize,
    rounds: usize,
    report: &mut Report,
) -> Result<Vec<(String, PageTiming)>, UiBenchError> {
    let store: Arc<dyn shoal_store::Store> = shoal_store::open_store(store_url).await?;
    let keys = Keys::default();
    let seeded = Instant::now();
    let sample = write_sample(store.as_ref(), &keys, size).await?;
    println!(
        "dashboard: {} services, {} tasks on {} nodes written in {:?}",
        sample.services.len(),
        sample.tasks,
        size.nodes,
        seeded.elapsed()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = ApiState::new(store, keys);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_listener(state, listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for (name, path) in PAGES {
        let t = time_page(&http, &format!("http://{addr}{path}"), rounds).await?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let extra = json!({"path": path, "services": sample.services.len(), "tasks": sample.tasks,
            "nodes": size.nodes, "rounds": rounds, "p95Ms": ms(t.p95), "maxMs": ms(t.max),
            "htmlBytes": t.bytes, "goalMs": 300,
            "profile": if cfg!(debug_assertions) { "dev" } else { "release" }});
        report.figure("ui", &format!("{name}_p50"), ms(t.p50), "ms", extra);
        out.push((name.to_string(), t));
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(out)
}
