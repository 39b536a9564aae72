//! `shoal api`: serves the API in front of the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use shoal_api::secrets::crypto::KeyRing;
use shoal_api::server::{ServeOptions, TlsFiles};
use shoal_api::{ApiState, Tokens};

use crate::cli::StoreArgs;

/// Flags of `shoal api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (port 0 picks a free port; the chosen address is logged).
    #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Token file (`shoal token create`); required beyond loopback, re-read when it changes.
    #[arg(long, env = "SHOAL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificate chain to serve HTTPS with (with --tls-key).
    #[arg(
        long,
        env = "SHOAL_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "SHOAL_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    tls_key: Option<PathBuf>,
    /// Serve cleartext HTTP beyond loopback (only behind a TLS-terminating proxy).
    #[arg(long)]
    insecure_listen: bool,
    /// Cluster key file sealing secrets: lines `KEY-ID BASE64-32-BYTES`, the first one
    /// active, the others still opening older values; mode 0600. Without it secrets can be
    /// neither created nor delivered (everything else works).
    #[arg(long, env = "SHOAL_SECRET_KEY_FILE", value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
    /// File holding the cluster's agent token (one line), presented to agents when asking
    /// them for task output (`shoal logs`); the agents take the same file.
    #[arg(long, env = "SHOAL_AGENT_TOKEN_FILE", value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the agents' --tls-cert (trusted alone for `https://`
    /// agents).
    #[arg(long, env = "SHOAL_AGENT_CA", value_name = "FILE")]
    agent_ca: Option<PathBuf>,
}

/// Runs `shoal api` until interrupted.
pub async fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let stop = crate::cli::shutdown_signal();
    let store = args.store.open().await?;
    let mut state = ApiState::new(store, shoal_core::Keys::new(&args.store.prefix));
    if let Some(path) = &args.token_file {
        state = state.with_tokens(Tokens::watch_file(path)?);
    }
    let agent_token = match &args.agent_token_file {
        Some(path) => Some(shoal_api::ops::AgentToken::load(path)?),
        None => None,
    };
    let agent_ca = match &args.agent_ca {
        Some(path) => shoal_api::client::CaBundle::load(path)?.certificates(),
        None => Vec::new(),
    };
    state = state.with_agents(
        shoal_api::logs::Agents::new(agent_token, agent_ca).map_err(anyhow::Error::msg)?,
    );
    let options = ServeOptions {
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        insecure_listen: args.insecure_listen,
    };
    shoal_api::server::check_listen(&state, args.listen, &options)?;
    match &args.secret_key_file {
        Some(path) => {
            let keys = KeyRing::load(path)?;
            tracing::info!(
                active_key = keys.active_id(),
                keys = keys.ids().count(),
                "secret keys loaded"
            );
            state = state.with_secret_keys(keys);
        }
        None => tracing::warn!(
            "no --secret-key-file: creating or delivering secrets fails until the API is restarted with one"
        ),
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("shoal api listening on {scheme}://{addr}");
    shoal_api::server::serve_with(state, listener, options, stop.cancelled_owned()).await?;
    Ok(ExitCode::SUCCESS)
}
