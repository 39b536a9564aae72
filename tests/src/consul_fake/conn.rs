//! Connections to the fake, counted per client IP as Consul does
//! (`limits.http_max_conns_per_client`, 200 by default, `agent/agent.go`): a connection over
//! the limit is answered `429 Too Many Requests` and closed before any request is read. Idle
//! keep-alive connections count like busy ones. The fake also counts the blocking queries in
//! flight, so tests can see how many watches a client holds.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Open connections per client IP, and what the limit turned away.
#[derive(Debug, Default)]
pub(crate) struct ConnCounts {
    open: HashMap<IpAddr, usize>,
    /// Connections refused with 429.
    pub refused: usize,
    /// Blocking queries in flight now.
    pub blocking: usize,
    /// Most blocking queries in flight at once.
    pub blocking_peak: usize,
}

/// Shared counters (one per fake, across all its agents' listeners).
pub(crate) type Counts = Arc<Mutex<ConnCounts>>;

fn lock(c: &Counts) -> std::sync::MutexGuard<'_, ConnCounts> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// A listener that enforces the per-client connection limit.
pub(crate) struct LimitedListener {
    pub inner: TcpListener,
    pub counts: Counts,
    pub limit: usize,
}

/// A counted connection: its slot is given back when it closes.
pub(crate) struct Counted {
    stream: TcpStream,
    ip: IpAddr,
    counts: Counts,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        if let Some(n) = c.open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.open.remove(&self.ip);
            }
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "fake consul accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let ip = addr.ip();
            let admitted = {
                let mut c = lock(&self.counts);
                let n = c.open.entry(ip).or_insert(0);
                if *n >= self.limit {
                    c.refused += 1;
                    false
                } else {
                    *n += 1;
                    true
                }
            };
            if !admitted {
                tokio::spawn(refuse(stream));
                continue;
            }
            let counted = Counted {
                stream,
                ip,
                counts: Arc::clone(&self.counts),
            };
            return (counted, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Answers a connection over the limit with 429 and closes it. The request is read first
/// (and whatever follows until the client closes, for a second at most), so closing does not
/// reset the connection before the client read the answer.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt;
    let wait = std::time::Duration::from_secs(1);
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(wait, stream.read(&mut buf)).await;
    let _ = stream
        .write_all(
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(wait, async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Holds one blocking query's place in the count while it waits.
pub(crate) struct BlockingGuard(Counts);

impl BlockingGuard {
    /// Counts a blocking query in.
    pub(crate) fn enter(counts: &Counts) -> Self {
        let mut c = lock(counts);
        c.blocking += 1;
        c.blocking_peak = c.blocking_peak.max(c.blocking);
        BlockingGuard(Arc::clone(counts))
    }
}

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        let mut c = lock(&self.0);
        c.blocking = c.blocking.saturating_sub(1);
    }
}

/// Open connections from `ip` now.
pub(crate) fn open_from(counts: &Counts, ip: IpAddr) -> usize {
    lock(counts).open.get(&ip).copied().unwrap_or(0)
}

/// Snapshot: (refused, blocking now, blocking peak).
pub(crate) fn snapshot(counts: &Counts) -> (usize, usize, usize) {
    let c = lock(counts);
    (c.refused, c.blocking, c.blocking_peak)
}

/// Forgets the peak of blocking queries (it restarts from those in flight).
pub(crate) fn reset_peak(counts: &Counts) {
    let mut c = lock(counts);
    c.blocking_peak = c.blocking;
}
