//! The service proxy benchmark: the same load sent directly to a task's port and through the
//! agent's proxy (the routing-mesh code path, run as a child process so its CPU can be read
//! from `/proc`), in one run. Load: 1 KiB request, 1 KiB response, over persistent connections
//! and over a new connection per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use shoal_agent::network::NetMetrics;
use shoal_agent::network::proxy::{self, Target};
use shoal_agent::network::table::Table;
use shoal_core::endpoints::{Endpoint, Endpoints};
use shoal_core::manifest::{PortMode, PortSpec, Protocol, ServiceRef};
use shoal_core::model::PortBinding;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Request and response size.
pub const MESSAGE: usize = 1024;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum ProxyBenchError {
    /// A socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Serves 1 KiB answers to 1 KiB requests on `listener`, forever.
pub async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; MESSAGE];
            let reply = vec![b'r'; MESSAGE];
            while s.read_exact(&mut buf).await.is_ok() {
                if s.write_all(&reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Runs the proxy on `listen` in front of `backend`, as an agent's ingress listener does.
pub async fn serve_proxy(listen: SocketAddr, backend: SocketAddr) -> Result<(), ProxyBenchError> {
    let record = Endpoints {
        service: ServiceRef {
            namespace: "bench".into(),
            name: "echo".into(),
        },
        address: "127.64.0.1".parse().expect("address"),
        ports: vec![PortSpec {
            target: 80,
            published: Some(listen.port()),
            protocol: Protocol::Tcp,
            mode: PortMode::Ingress,
        }],
        tasks: vec![Endpoint {
            task_id: "echo.1".into(),
            node_id: "n1".into(),
            address: backend.ip().to_string(),
            ports: vec![PortBinding {
                target: 80,
                published: backend.port(),
                protocol: Protocol::Tcp,
            }],
        }],
    };
    let table = Arc::new(RwLock::new(Arc::new(Table::build(
        [&record],
        &Table::default(),
    ))));
    let l = proxy::bind_host(listen)?;
    proxy::serve(
        l,
        Target::Ingress(listen.port()),
        table,
        NetMetrics::default(),
    )
    .await;
    Ok(())
}

/// How the load opens connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connections {
    /// One connection per worker, many requests each.
    Persistent,
    /// A new connection per request.
    New,
}

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
}

async fn one_request(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    let req = [b'q'; MESSAGE];
    s.write_all(&req).await?;
    s.read_exact(buf).await?;
    Ok(())
}

/// Sends requests to `target` from `workers` tasks for `duration`.
pub async fn load(
    target: SocketAddr,
    mode: Connections,
    workers: usize,
    duration: Duration,
) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let mut joins = Vec::new();
    for _ in 0..workers {
        let stop = stop.clone();
        joins.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut buf = vec![0u8; MESSAGE];
            let mut conn: Option<TcpStream> = None;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if conn.is_none() || mode == Connections::New {
                    conn = match TcpStream::connect(target).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            Some(s)
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    };
                }
                let Some(s) = conn.as_mut() else { continue };
                match one_request(s, &mut buf).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for j in joins {
        if let Ok((l, e)) = j.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    LoadResult {
        requests: all.len() as u64,
        errors,
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}
