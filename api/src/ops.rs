//! The operations endpoint of Shoal's long-running components besides the API server
//! (`shoal controller --listen`, `shoal agent --listen`): `GET /metrics` in Prometheus text
//! format and `GET /healthz`; on an agent also the routes that serve its tasks' output to the
//! API ([`OpsOptions::guarded`]), which require the cluster's agent token
//! (`--agent-token-file`) as a bearer token.
//!
//! Beyond loopback an agent's listener needs the token (anyone who reaches it could read the
//! tasks' output otherwise) and TLS (the token would cross the network in cleartext).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq as _;

use crate::server::{self, ServeError, TlsFiles};

/// Why an operations endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Guarded routes beyond loopback without a token.
    #[error(
        "refusing to listen on {addr} without --agent-token-file: it is not a loopback address, \
         so anyone who can reach it could read the tasks' output"
    )]
    NoToken {
        /// Address asked for.
        addr: SocketAddr,
    },
    /// Guarded routes beyond loopback in cleartext.
    #[error(
        "refusing to listen on {addr} without TLS: it is not a loopback address, so the agent \
         token would cross the network in cleartext; pass --tls-cert FILE --tls-key FILE"
    )]
    Cleartext {
        /// Address asked for.
        addr: SocketAddr,
    },
    /// The token file cannot be used.
    #[error("cannot read the agent token file {path}: {message}")]
    TokenFile {
        /// The file.
        path: String,
        /// What is wrong (never the token).
        message: String,
    },
    /// The TLS certificate or key could not be loaded, or serving failed
    /// ([`ServeError::Tls`], [`ServeError::Io`]).
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The cluster credential the API presents to agents (`--agent-token-file`: one line, the
/// token). Never printed: its `Debug` shows `***`.
#[derive(Clone)]
pub struct AgentToken(Arc<zeroize::Zeroizing<String>>);

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentToken(***)")
    }
}

impl AgentToken {
    /// A token from its text.
    pub fn new(token: &str) -> Result<Self, String> {
        let t = token.trim();
        if t.is_empty() || t.chars().any(char::is_whitespace) {
            return Err("the token must be one word on one line".to_string());
        }
        Ok(AgentToken(Arc::new(zeroize::Zeroizing::new(t.to_string()))))
    }

    /// Reads the first non-empty line of `path`.
    pub fn load(path: &Path) -> Result<Self, OpsError> {
        let err = |message: String| OpsError::TokenFile {
            path: path.display().to_string(),
            message,
        };
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| err("it holds no token".to_string()))?;
        AgentToken::new(line).map_err(err)
    }

    /// The token, for an `Authorization: Bearer` header.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token (in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// What an operations endpoint serves besides `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct OpsOptions {
    /// Routes that require `token` (an agent's logs routes).
    pub guarded: Option<Router>,
    /// The token the guarded routes require; without one they are open (loopback only).
    pub token: Option<AgentToken>,
    /// Serve HTTPS with this certificate.
    pub tls: Option<TlsFiles>,
}

/// Checks that `addr` may be served with `options`.
pub fn check_listen(addr: SocketAddr, options: &OpsOptions) -> Result<(), OpsError> {
    if addr.ip().is_loopback() || options.guarded.is_none() {
        return Ok(());
    }
    if options.token.is_none() {
        return Err(OpsError::NoToken { addr });
    }
    if options.tls.is_none() {
        return Err(OpsError::Cleartext { addr });
    }
    Ok(())
}

/// Refuses a request without the agent token (401, nothing else said).
async fn require_token(State(token): State<AgentToken>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match presented {
        Some(p) if token.matches(p.trim()) => next.run(req).await,
        Some(_) => (StatusCode::UNAUTHORIZED, "the agent token is not valid\n").into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            "this agent requires the cluster's agent token (Authorization: Bearer)\n",
        )
            .into_response(),
    }
}

/// The router: `/metrics` renders `registry`, `/healthz` answers `ok` while the process serves.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut out = String::new();
                    match prometheus_client::encoding::text::encode(&mut out, &registry) {
                        Ok(()) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            out,
                        )
                            .into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// [`router`] with the guarded routes of `options` behind the token.
pub fn router_with(registry: Arc<Registry>, options: &OpsOptions) -> Router {
    let mut r = router(registry);
    if let Some(guarded) = options.guarded.clone() {
        let guarded = match options.token.clone() {
            Some(token) => {
                guarded.route_layer(axum::middleware::from_fn_with_state(token, require_token))
            }
            None => guarded,
        };
        r = r.merge(guarded);
    }
    r
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves [`router_with`] on `listener`, over TLS when `options.tls` is set, until `shutdown`
/// completes (open streams are cut then).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    options: OpsOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OpsError> {
    let addr = server::local_addr(&listener)?;
    check_listen(addr, &options)?;
    let app = router_with(registry, &options);
    let Some(tls) = options.tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| {
                ServeError::Io {
                    addr: addr.to_string(),
                    source,
                }
                .into()
            });
    };
    let config = server::load_tls(&tls).await?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.shutdown();
    });
    Ok(server::serve_tls(listener, addr, config, handle, app).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_and_matches_exactly() {
        let t = AgentToken::new("s3cret-value\n").unwrap();
        assert_eq!(format!("{t:?}"), "AgentToken(***)");
        assert!(t.matches("s3cret-value"));
        assert!(!t.matches("s3cret-valu"));
        assert!(AgentToken::new("two words").is_err());
    }

    #[test]
    fn guarded_routes_beyond_loopback_need_a_token_and_tls() {
        let addr: SocketAddr = "10.1.2.3:9465".parse().unwrap();
        let mut o = OpsOptions {
            guarded: Some(Router::new()),
            ..OpsOptions::default()
        };
        assert!(matches!(
            check_listen(addr, &o),
            Err(OpsError::NoToken { .. })
        ));
        assert!(check_listen("127.0.0.1:9465".parse().unwrap(), &o).is_ok());
        o.token = Some(AgentToken::new("t").unwrap());
        assert!(matches!(
            check_listen(addr, &o),
            Err(OpsError::Cleartext { .. })
        ));
    }
}
