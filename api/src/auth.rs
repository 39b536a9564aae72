//! Static bearer tokens: a file of `token role` lines (role `read` or `write`). Read tokens may
//! only `GET`; write tokens may do everything.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiState;
use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `GET` requests only.
    Read,
    /// Every request.
    Write,
}

/// Why a token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `token role`.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// File path.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The accepted tokens and their roles.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenTable {
    tokens: BTreeMap<String, Role>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl TokenTable {
    /// An empty table (add tokens with [`TokenTable::insert`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token.
    pub fn insert(&mut self, token: impl Into<String>, role: Role) {
        self.tokens.insert(token.into(), role);
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the table has no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Role of a token.
    pub fn role(&self, token: &str) -> Option<Role> {
        self.tokens.get(token).copied()
    }

    /// Parses `token role` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str, path: &str) -> Result<Self, TokenFileError> {
        let mut table = TokenTable::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |message: String| TokenFileError::Syntax {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [token, role] = parts.as_slice() else {
                return Err(syntax(
                    "expected `token role` (role is read or write)".to_string(),
                ));
            };
            let role = match *role {
                "read" => Role::Read,
                "write" => Role::Write,
                other => {
                    return Err(syntax(format!(
                        "unknown role {other:?} (expected read or write)"
                    )));
                }
            };
            table.insert(*token, role);
        }
        Ok(table)
    }

    /// Loads a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }
}

/// Paths anyone may call: liveness, readiness, and the documents editors fetch.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/v1/openapi.json" | "/v1/schema/service"
    )
}

/// Middleware: checks the bearer token against the table when one is configured.
pub async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(tokens) = state.tokens.as_ref() else {
        return next.run(req).await;
    };
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return ApiError::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>` (shoal --token or SHOAL_TOKEN)"
                .to_string(),
        )
        .into_response();
    };
    let Some(role) = tokens.role(token) else {
        return ApiError::Unauthorized("unknown bearer token".to_string()).into_response();
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if role == Role::Read && !read_only {
        return ApiError::Forbidden(format!(
            "token has the read role; {} {} needs the write role",
            req.method(),
            req.uri().path()
        ))
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let t = TokenTable::parse("# ops\nabc read\n\ndef write\n", "t").unwrap();
        assert_eq!(t.role("abc"), Some(Role::Read));
        assert_eq!(t.role("def"), Some(Role::Write));
        let e = TokenTable::parse("abc admin\n", "t").unwrap_err();
        assert!(e.to_string().contains("t:1: unknown role"), "{e}");
    }
}
