//! The TCP proxy behind service addresses and ingress ports: each accepted connection goes to
//! the service's next eligible task (round robin). Until the task has sent its first byte,
//! the connection can still move: a backend that refuses, times out, or closes before
//! answering (Docker's port proxy accepts and then closes when nothing listens in the
//! container yet) is replaced by the next one, and what the client sent so far is replayed.
//! After the first byte, data flows both ways with half-close kept (`copy_bidirectional`).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::metrics::NetMetrics;
use super::table::{Route, Table};

/// How long a connection attempt to one task may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Most client bytes kept for replay while no task has answered yet.
const REPLAY_LIMIT: usize = 64 * 1024;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Connections a container made to service addresses, redirected here by its NAT rule:
    /// the service is the connection's original destination.
    Redirected,
    /// An ingress port on the node.
    Ingress(u16),
}

/// The destination a redirected connection was made to.
fn original_destination(s: &TcpStream) -> Option<(Ipv4Addr, u16)> {
    let a = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::OriginalDst).ok()?;
    Some((
        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
        u16::from_be(a.sin_port),
    ))
}

/// Accepts on `listener` until aborted, proxying each connection.
pub async fn serve(
    listener: TcpListener,
    target: Target,
    table: Arc<RwLock<Arc<Table>>>,
    metrics: NetMetrics,
) {
    loop {
        let client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::debug!(error = %e, ?target, "accept failed");
                metrics.error("accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let route = {
            let t = table.read().unwrap_or_else(|p| p.into_inner());
            match target {
                Target::Redirected => original_destination(&client)
                    .and_then(|(ip, port)| t.by_address(ip, port).map(|r| (r.clone(), port))),
                Target::Ingress(port) => t.ingress(port).cloned(),
            }
        };
        let Some((route, port)) = route else {
            metrics.error("no_service");
            continue;
        };
        tokio::spawn(proxy(client, route, port, metrics.clone()));
    }
}

/// One connection: pick, connect (moving on while nothing was answered), then splice.
async fn proxy(mut client: TcpStream, route: Arc<Route>, port: u16, metrics: NetMetrics) {
    let _ = client.set_nodelay(true);
    let order = route.pick(port);
    if order.is_empty() {
        metrics.error("no_backend");
        return;
    }
    let mut sent = Vec::new();
    let mut client_done = false;
    for addr in order {
        let mut up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                metrics.error("connect_refused");
                continue;
            }
            Ok(Err(_)) => {
                metrics.error("connect_error");
                continue;
            }
            Err(_) => {
                metrics.error("connect_timeout");
                continue;
            }
        };
        let _ = up.set_nodelay(true);
        match first_answer(&mut client, &mut up, &mut sent, &mut client_done).await {
            First::Answered(n) => {
                let bytes = splice(client, up, client_done).await;
                metrics.proxied(&route.service, n + sent.len() as u64 + bytes);
                return;
            }
            First::BackendGone => {
                tracing::debug!(backend = %addr, service = %route.service, "task closed before answering; trying the next");
                metrics.error("closed_before_answer");
            }
            First::ClientGone => return,
        }
    }
    metrics.error("all_backends_failed");
}

enum First {
    /// The task answered; its first bytes (this many) reached the client.
    Answered(u64),
    /// The task closed or reset before answering: try another.
    BackendGone,
    /// The client went away.
    ClientGone,
}

/// Replays `sent` to a fresh backend and relays client bytes until the backend answers.
async fn first_answer(
    client: &mut TcpStream,
    up: &mut TcpStream,
    sent: &mut Vec<u8>,
    client_done: &mut bool,
) -> First {
    if (!sent.is_empty() && up.write_all(sent).await.is_err())
        || (*client_done && up.shutdown().await.is_err())
    {
        return First::BackendGone;
    }
    let mut ub = vec![0u8; 16 * 1024];
    let mut cb = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = up.read(&mut ub) => match r {
                Ok(0) | Err(_) => return First::BackendGone,
                Ok(n) => {
                    if client.write_all(&ub[..n]).await.is_err() {
                        return First::ClientGone;
                    }
                    return First::Answered(n as u64);
                }
            },
            r = client.read(&mut cb), if !*client_done && sent.len() < REPLAY_LIMIT => match r {
                Ok(0) => {
                    *client_done = true;
                    if up.shutdown().await.is_err() {
                        return First::BackendGone;
                    }
                }
                Ok(n) => {
                    sent.extend_from_slice(&cb[..n]);
                    if up.write_all(&cb[..n]).await.is_err() {
                        return First::BackendGone;
                    }
                }
                Err(_) => return First::ClientGone,
            },
        }
    }
}

/// Copies both ways until both sides are done; returns the bytes copied.
async fn splice(mut client: TcpStream, mut up: TcpStream, client_done: bool) -> u64 {
    if client_done {
        let n = tokio::io::copy(&mut up, &mut client).await.unwrap_or(0);
        let _ = client.shutdown().await;
        return n;
    }
    match tokio::io::copy_bidirectional(&mut client, &mut up).await {
        Ok((a, b)) => a + b,
        Err(_) => 0,
    }
}

/// Binds a listener on the host (for ingress ports) with `SO_REUSEADDR`.
pub fn bind_host(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}
