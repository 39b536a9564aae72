//! Running the API server on a socket, refusing to expose an unauthenticated API beyond
//! loopback.

use std::future::Future;
use std::net::SocketAddr;

use crate::{ApiState, router};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listening beyond loopback without tokens would let anyone change the cluster.
    #[error(
        "refusing to listen on {addr} without authentication: it is not a loopback address, so \
         anyone who can reach it could change the cluster; pass --token-file FILE (lines \
         made with `shoal token create`) or listen on 127.0.0.1"
    )]
    Insecure {
        /// Address asked for.
        addr: SocketAddr,
    },
    /// Binding or serving failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// Address.
        addr: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `addr` may be served with the state's authentication settings.
pub fn check_listen(state: &ApiState, addr: SocketAddr) -> Result<(), ServeError> {
    if !addr.ip().is_loopback() && state.tokens.as_ref().is_none_or(|t| t.table().is_empty()) {
        return Err(ServeError::Insecure { addr });
    }
    Ok(())
}

/// Binds `addr` and serves the API until `shutdown` resolves.
pub async fn serve(
    state: ApiState,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    check_listen(&state, addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io {
            addr: addr.to_string(),
            source,
        })?;
    serve_listener(state, listener, shutdown).await
}

/// Serves the API on an already bound listener until `shutdown` resolves.
pub async fn serve_listener(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        addr: "listener".into(),
        source,
    })?;
    check_listen(&state, addr)?;
    tracing::info!(%addr, backend = state.store.backend(), auth = state.tokens.is_some(), "API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io {
            addr: addr.to_string(),
            source,
        })
}
