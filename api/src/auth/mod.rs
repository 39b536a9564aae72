//! Who a request acts as, and what it may do.
//!
//! Every request but the health probes and the schema documents carries
//! `Authorization: Bearer ID.SECRET` when the API has a token file ([`token`] has the format).
//! The [`authenticate`] middleware turns it into a [`Principal`] — the token's ID, its
//! [`Role`], the namespaces a write token is limited to and the node a node token speaks for —
//! and puts it in the request's extensions, where handlers take it as an extractor and ask it
//! (`principal.require_write(ns)?`, `principal.require_admin()?`).
//!
//! Roles:
//! - `read`: `GET` requests.
//! - `write`: also changes services (and secrets and configs) in its namespaces, all of them
//!   when none are listed.
//! - `admin`: everything, including nodes (drain, label, remove) and cluster-wide settings.
//! - `node`: only the routes an agent needs for its own node, listed in [`NODE_ROUTES`].
//!
//! The middleware enforces the coarse rule (read tokens only read, node tokens only call
//! [`NODE_ROUTES`]); handlers of mutating routes check namespaces and admin rights. Every
//! mutating request is logged as an audit line (target `shoal_api::audit`) with the token's ID,
//! never its secret. Without a token file (loopback only) requests act as
//! [`Principal::local`], which may do everything.

pub mod token;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use token::{NewToken, Token, TokenEntry, TokenError, TokenTable};

use crate::ApiState;
use crate::error::ApiError;

/// Routes a `node` token may call, as `(method, route pattern)`; the handler of each must
/// check [`Principal::require_node`] against the node the request is about.
pub const NODE_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/nodes/{id}/secrets/{ns}/{name}"),
    ("GET", "/v1/nodes/{id}/configs/{ns}/{name}"),
];

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `GET` requests only.
    Read,
    /// Reads, and changes to services, secrets and configs in its namespaces.
    Write,
    /// Everything.
    Admin,
    /// What an agent needs for its own node.
    Node,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Node => "node",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            "node" => Ok(Role::Node),
            other => Err(format!(
                "unknown role {other:?} (expected read, write, admin or node:<NODE-ID>)"
            )),
        }
    }
}

/// Who a request acts as: a token's ID and what the token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    token_id: String,
    role: Role,
    namespaces: BTreeSet<String>,
    node: Option<String>,
}

/// The token ID shown for requests of an API without a token file.
pub const LOCAL_ID: &str = "-";

impl Principal {
    /// A principal; refuses namespaces on roles other than `write`, and a `node` role without
    /// a node (or a node on another role).
    pub fn new(
        token_id: &str,
        role: Role,
        namespaces: BTreeSet<String>,
        node: Option<String>,
    ) -> Result<Self, TokenError> {
        let invalid = |m: String| Err(TokenError::Invalid(m));
        if !namespaces.is_empty() && role != Role::Write {
            return invalid(format!(
                "namespaces limit what a write token changes; a {role} token takes none"
            ));
        }
        match (&node, role) {
            (None, Role::Node) => {
                return invalid("a node token needs the node it speaks for (--node ID)".into());
            }
            (Some(n), Role::Node) if n.is_empty() || n.contains(['/', ',']) => {
                return invalid(format!("{n:?} is not a node ID"));
            }
            (Some(_), r) if r != Role::Node => {
                return invalid(format!("only node tokens name a node, not {role} tokens"));
            }
            _ => {}
        }
        Ok(Principal {
            token_id: token_id.to_string(),
            role,
            namespaces,
            node,
        })
    }

    /// The principal of an API without a token file (loopback only): everything is allowed.
    pub fn local() -> Self {
        Principal {
            token_id: LOCAL_ID.to_string(),
            role: Role::Admin,
            namespaces: BTreeSet::new(),
            node: None,
        }
    }

    /// The token's ID ([`LOCAL_ID`] without a token file).
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// The token's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Namespaces a write token is limited to; empty means all.
    pub fn namespaces(&self) -> &BTreeSet<String> {
        &self.namespaces
    }

    /// The node a node token speaks for.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Whether it may read cluster state (services, tasks, nodes, events).
    pub fn can_read(&self) -> bool {
        self.role != Role::Node
    }

    /// Whether it may change services, secrets and configs in namespace `ns`.
    pub fn can_write(&self, ns: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Write => self.namespaces.is_empty() || self.namespaces.contains(ns),
            Role::Read | Role::Node => false,
        }
    }

    /// Whether it may change nodes and cluster-wide settings.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether it is the node token of node `id`.
    pub fn is_node(&self, id: &str) -> bool {
        self.role == Role::Node && self.node.as_deref() == Some(id)
    }

    /// `Forbidden` unless [`Principal::can_write`] in `ns`.
    pub fn require_write(&self, ns: &str) -> Result<(), ApiError> {
        if self.can_write(ns) {
            return Ok(());
        }
        let why = match self.role {
            Role::Write => format!(
                "it may change only the namespaces {}",
                self.namespaces
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            role => format!("it has the {role} role"),
        };
        Err(self.forbidden(&format!("change namespace {ns:?}"), &why))
    }

    /// `Forbidden` unless [`Principal::is_admin`].
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            return Ok(());
        }
        Err(self.forbidden(
            what,
            &format!("it has the {} role; this needs admin", self.role),
        ))
    }

    /// `Forbidden` unless it is an admin or the node token of node `id`.
    pub fn require_node(&self, id: &str) -> Result<(), ApiError> {
        if self.is_admin() || self.is_node(id) {
            return Ok(());
        }
        Err(self.forbidden(
            &format!("act for node {id:?}"),
            "only that node's token (or an admin) may",
        ))
    }

    fn forbidden(&self, what: &str, why: &str) -> ApiError {
        ApiError::Forbidden(format!("token {} may not {what}: {why}", self.token_id))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The middleware puts it there on every authenticated route; its absence means the
        // route was added after the middleware, so refuse rather than guess.
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::Unauthorized("this route is not behind authentication".to_string())
        })
    }
}

/// The accepted tokens: a fixed table, or a file re-read whenever it changes (so `shoal token
/// create` and `revoke` take effect on the next request).
#[derive(Debug)]
pub struct Tokens {
    file: Option<PathBuf>,
    loaded: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<Stamp>,
    table: Arc<TokenTable>,
}

/// What tells a changed file apart: modification time, size and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

impl Tokens {
    /// A fixed table.
    pub fn fixed(table: TokenTable) -> Self {
        Tokens {
            file: None,
            loaded: RwLock::new(Loaded {
                stamp: None,
                table: Arc::new(table),
            }),
        }
    }

    /// The tokens of the file at `path`; it must load now, and is re-read when it changes.
    pub fn watch_file(path: &Path) -> Result<Self, TokenError> {
        let stamp = stamp(path).map_err(|source| TokenError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let table = TokenTable::load(path)?;
        Ok(Tokens {
            file: Some(path.to_path_buf()),
            loaded: RwLock::new(Loaded {
                stamp: Some(stamp),
                table: Arc::new(table),
            }),
        })
    }

    /// The current table, re-reading the file first when it changed. A file that no longer
    /// loads is reported and its previous content kept; a file that is gone accepts nothing.
    pub fn table(&self) -> Arc<TokenTable> {
        let Some(path) = &self.file else {
            return self.current();
        };
        let now = match stamp(path) {
            Ok(s) => Some(s),
            Err(e) => {
                let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
                if loaded.stamp.is_some() {
                    tracing::error!(path = %path.display(), error = %e, "token file is gone; no token is accepted until it is back");
                    loaded.stamp = None;
                    loaded.table = Arc::new(TokenTable::new());
                }
                return loaded.table.clone();
            }
        };
        {
            let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            if loaded.stamp == now {
                return loaded.table.clone();
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        if loaded.stamp != now {
            match TokenTable::load(path) {
                Ok(table) => {
                    tracing::info!(path = %path.display(), tokens = table.len(), "token file re-read");
                    loaded.table = Arc::new(table);
                }
                Err(e) => {
                    tracing::error!(error = %e, "token file changed but does not load; keeping the tokens read before");
                }
            }
            loaded.stamp = now;
        }
        loaded.table.clone()
    }

    fn current(&self) -> Arc<TokenTable> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .table
            .clone()
    }
}

/// Paths anyone may call: liveness, readiness, and the documents editors fetch.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/v1/openapi.json" | "/v1/schema/service"
    )
}

fn is_read_only(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware (installed with `route_layer`, so the matched route is known): authenticates
/// the bearer token, applies the coarse role rule, puts the [`Principal`] in the request's
/// extensions, and writes the audit line of mutating requests.
pub async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if is_public(&path) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_string());
    let principal = match &state.tokens {
        None => Ok(Principal::local()),
        Some(tokens) => principal_of(&req, &tokens.table()),
    };
    let principal = match principal {
        Ok(p) => p,
        Err((claimed, e)) => {
            if !is_read_only(&method) {
                audit(
                    claimed.as_deref().unwrap_or(LOCAL_ID),
                    None,
                    &method,
                    &path,
                    401,
                );
            }
            return e.into_response();
        }
    };
    if let Err(e) = coarse_rule(&principal, &method, &route) {
        if !is_read_only(&method) {
            audit(
                principal.token_id(),
                Some(principal.role),
                &method,
                &path,
                403,
            );
        }
        return e.into_response();
    }
    let audited = (!is_read_only(&method)).then(|| (principal.token_id.clone(), principal.role));
    req.extensions_mut().insert(principal);
    let resp = next.run(req).await;
    if let Some((id, role)) = audited {
        audit(&id, Some(role), &method, &path, resp.status().as_u16());
    }
    resp
}

/// The principal of a request's bearer token; on failure, the error and the ID of a known
/// token whose secret was wrong (never any part of an unknown token).
fn principal_of(
    req: &Request,
    table: &TokenTable,
) -> Result<Principal, (Option<String>, ApiError)> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err((
            None,
            ApiError::Unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>` (shoal --token or \
                 SHOAL_TOKEN)"
                    .to_string(),
            ),
        ));
    };
    if let Some(p) = table.authenticate(presented) {
        return Ok(p.clone());
    }
    let known = Token::parse(presented)
        .filter(|t| table.get(t.id()).is_some())
        .map(|t| t.id().to_string());
    let message = match &known {
        Some(id) => format!("token {id} was not accepted (wrong secret)"),
        None => "unknown bearer token".to_string(),
    };
    Err((known, ApiError::Unauthorized(message)))
}

/// Read tokens only read; node tokens only call [`NODE_ROUTES`].
fn coarse_rule(p: &Principal, method: &Method, route: &str) -> Result<(), ApiError> {
    match p.role {
        Role::Node => {
            if NODE_ROUTES
                .iter()
                .any(|(m, r)| *m == method.as_str() && *r == route)
            {
                return Ok(());
            }
            Err(ApiError::Forbidden(format!(
                "token {} has the node role, which may not call {method} {route}",
                p.token_id
            )))
        }
        Role::Read if !is_read_only(method) => Err(ApiError::Forbidden(format!(
            "token {} has the read role; {method} {route} needs the write role",
            p.token_id
        ))),
        _ => Ok(()),
    }
}

/// One audit line: who (token ID), what (method, path) and the answer's status.
fn audit(token: &str, role: Option<Role>, method: &Method, path: &str, status: u16) {
    let role = role.map_or_else(|| "-".to_string(), |r| r.to_string());
    tracing::info!(target: "shoal_api::audit", token = %token, role = %role, %method, path = %path, status, "audit");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(ns: &[&str]) -> Principal {
        Principal::new(
            "w",
            Role::Write,
            ns.iter().map(|s| s.to_string()).collect(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn roles_answer_what_they_may_do() {
        let read = Principal::new("r", Role::Read, BTreeSet::new(), None).unwrap();
        let admin = Principal::new("a", Role::Admin, BTreeSet::new(), None).unwrap();
        let node = Principal::new("n", Role::Node, BTreeSet::new(), Some("n1".into())).unwrap();
        assert!(read.can_read() && !read.can_write("default") && !read.is_admin());
        assert!(write(&[]).can_write("any") && !write(&[]).is_admin());
        assert!(write(&["a"]).can_write("a") && !write(&["a"]).can_write("b"));
        assert!(admin.can_write("x") && admin.is_admin());
        assert!(!node.can_read() && !node.can_write("default"));
        assert!(node.is_node("n1") && !node.is_node("n2"));
        assert!(node.require_node("n1").is_ok() && node.require_node("n2").is_err());
        assert!(admin.require_node("n2").is_ok());
        let e = write(&["a", "b"])
            .require_write("c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only the namespaces a,b"), "{e}");
        let e = read.require_admin("drain node n1").unwrap_err().to_string();
        assert!(e.contains("read role") && e.contains("admin"), "{e}");
        assert!(Principal::local().is_admin());
    }

    #[test]
    fn the_coarse_rule_keeps_read_and_node_tokens_in_their_lanes() {
        let read = Principal::new("r", Role::Read, BTreeSet::new(), None).unwrap();
        let node = Principal::new("n", Role::Node, BTreeSet::new(), Some("n1".into())).unwrap();
        assert!(coarse_rule(&read, &Method::GET, "/v1/services").is_ok());
        assert!(coarse_rule(&read, &Method::PUT, "/v1/services/{ns}/{name}").is_err());
        assert!(coarse_rule(&node, &Method::GET, "/v1/services").is_err());
        assert!(coarse_rule(&write(&[]), &Method::DELETE, "/v1/services/{ns}/{name}").is_ok());
    }

    #[test]
    fn a_token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let new = NewToken {
            id: None,
            role: Role::Read,
            namespaces: BTreeSet::new(),
            node: None,
        };
        let first = token::create(&path, &new).unwrap();
        let tokens = Tokens::watch_file(&path).unwrap();
        assert!(tokens.table().authenticate(&first.reveal()).is_some());
        let second = token::create(&path, &new).unwrap();
        assert!(tokens.table().authenticate(&second.reveal()).is_some());
        token::revoke(&path, first.id()).unwrap();
        assert!(tokens.table().authenticate(&first.reveal()).is_none());
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(
            tokens.table().authenticate(&second.reveal()).is_some(),
            "a broken file keeps the previous tokens"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(tokens.table().is_empty(), "a missing file accepts nothing");
    }
}
