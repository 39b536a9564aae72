//! Running the API server on a socket, over TLS (rustls) or in cleartext, refusing to expose
//! an unauthenticated or cleartext API beyond loopback.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use crate::{ApiState, router};

/// How long open connections may finish their requests once shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listening beyond loopback without tokens would let anyone change the cluster.
    #[error(
        "refusing to listen on {addr} without authentication: it is not a loopback address, so \
         anyone who can reach it could change the cluster; pass --token-file FILE (made with \
         `shoal token create`) or listen on 127.0.0.1"
    )]
    Insecure {
        /// Address asked for.
        addr: SocketAddr,
    },
    /// Listening beyond loopback without TLS would send bearer tokens in cleartext.
    #[error(
        "refusing to listen on {addr} without TLS: it is not a loopback address, so bearer \
         tokens would cross the network in cleartext; pass --tls-cert FILE --tls-key FILE, or \
         --insecure-listen if a TLS proxy in front of it terminates the connections"
    )]
    Cleartext {
        /// Address asked for.
        addr: SocketAddr,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load the TLS certificate {cert} and key {key}: {source}")]
    Tls {
        /// Certificate file.
        cert: String,
        /// Key file.
        key: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
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

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), the server's certificate first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How to serve: TLS or not, and whether cleartext beyond loopback is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Serve HTTPS with this certificate; cleartext HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Allow cleartext HTTP beyond loopback (behind a TLS-terminating proxy); logged loudly.
    pub insecure_listen: bool,
}

/// Checks that `addr` may be served with the state's tokens and these options.
pub fn check_listen(
    state: &ApiState,
    addr: SocketAddr,
    options: &ServeOptions,
) -> Result<(), ServeError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if state.tokens.as_ref().is_none_or(|t| t.table().is_empty()) {
        return Err(ServeError::Insecure { addr });
    }
    if options.tls.is_none() && !options.insecure_listen {
        return Err(ServeError::Cleartext { addr });
    }
    Ok(())
}

/// Binds `addr` and serves the API in cleartext until `shutdown` resolves.
pub async fn serve(
    state: ApiState,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    check_listen(&state, addr, &ServeOptions::default())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io {
            addr: addr.to_string(),
            source,
        })?;
    serve_listener(state, listener, shutdown).await
}

/// Serves the API in cleartext on an already bound listener until `shutdown` resolves.
pub async fn serve_listener(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(state, listener, ServeOptions::default(), shutdown).await
}

/// Serves the API on an already bound listener, over TLS when `options.tls` is set, until
/// `shutdown` resolves.
pub async fn serve_with(
    state: ApiState,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = local_addr(&listener)?;
    check_listen(&state, addr, &options)?;
    if options.tls.is_none() && !addr.ip().is_loopback() {
        tracing::error!(
            %addr,
            "INSECURE: serving the API in cleartext beyond loopback (--insecure-listen); bearer \
             tokens are readable by anyone on the network path unless a TLS proxy terminates \
             every connection before it"
        );
    }
    let io = |source| ServeError::Io {
        addr: addr.to_string(),
        source,
    };
    let Some(tls) = options.tls else {
        tracing::info!(%addr, backend = state.store.backend(), auth = state.tokens.is_some(), tls = false, "API listening");
        return serve_cleartext(state, listener, shutdown).await.map_err(io);
    };
    let config = load_tls(&tls).await?;
    let state = ApiState { tls: true, ..state };
    tracing::info!(%addr, backend = state.store.backend(), auth = state.tokens.is_some(), tls = true, "API listening");
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let hub = Arc::clone(&state.watch_hub);
    tokio::spawn(async move {
        shutdown.await;
        // Watch streams never finish on their own: end them so the shutdown is prompt.
        hub.stop();
        stopper.graceful_shutdown(Some(GRACE));
    });
    serve_tls(listener, addr, config, handle, router(state)).await
}

/// The address `listener` is bound to.
pub(crate) fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Io {
        addr: "listener".into(),
        source,
    })
}

/// Loads the certificate chain and key of `tls`.
pub(crate) async fn load_tls(tls: &TlsFiles) -> Result<RustlsConfig, ServeError> {
    RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .map_err(|source| ServeError::Tls {
            cert: tls.cert.display().to_string(),
            key: tls.key.display().to_string(),
            source,
        })
}

/// Serves `app` over TLS on `listener` (bound to `addr`) until `handle` shuts it down.
pub(crate) async fn serve_tls(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    config: RustlsConfig,
    handle: axum_server::Handle<SocketAddr>,
    app: axum::Router,
) -> Result<(), ServeError> {
    let io = |source| ServeError::Io {
        addr: addr.to_string(),
        source,
    };
    let std_listener = listener.into_std().map_err(io)?;
    axum_server::from_tcp_rustls(std_listener, config)
        .map_err(io)?
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .map_err(io)
}

/// Serves cleartext HTTP until `shutdown`, ends the watch streams (`shoal get -w`, the
/// dashboard), then lets open requests finish for [`GRACE`] at most.
async fn serve_cleartext(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = tokio_util::sync::CancellationToken::new();
    let stopped = stopping.clone();
    let hub = Arc::clone(&state.watch_hub);
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        // Watch streams never finish on their own: end them so the shutdown is prompt.
        hub.stop();
        stopping.cancel();
    });
    let grace = async {
        stopped.cancelled().await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        done = server.into_future() => done,
        () = grace => {
            tracing::info!(grace = ?GRACE, "closing the connections still open (watch streams) after the grace period");
            Ok(())
        }
    }
}
