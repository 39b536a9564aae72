//! The API's error type: one variant per way a request fails, each mapped to a status code and
//! a JSON body `{error, details?, currentRevision?}` that names what failed and why.
//!
//! `4xx` means the request can be fixed by whoever sent it (the CLI exits 2 on `400`, "invalid
//! input"); the server's own faults (the store unavailable or failing, a stored record it
//! cannot read, an answer it cannot encode) are `5xx`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shoal_core::ManifestError;
use shoal_store::{Revision, StoreError};

use crate::types::{ErrorBody, ErrorDetail};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The manifest does not parse or validate.
    #[error("invalid manifest: {}", summary(.0))]
    InvalidManifest(Vec<ManifestError>),
    /// The request itself is malformed (bad query, path/manifest mismatch, ...).
    #[error("{0}")]
    BadRequest(String),
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A compare-and-swap failed: the object changed since the given revision.
    #[error("{what} was modified: expected revision {expected}, current revision is {current}")]
    Conflict {
        /// What was being written.
        what: String,
        /// Revision the caller expected.
        expected: Revision,
        /// Revision the store holds (0 = absent).
        current: Revision,
    },
    /// No or unknown bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role does not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// The object exists and cannot be replaced (secrets and configs are immutable).
    #[error("{0}")]
    Exists(String),
    /// The object is still used (a secret or config named by services).
    #[error("{0}")]
    InUse(String),
    /// The request body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The API was started without a secret key, so it can neither seal nor open secrets.
    #[error(
        "this API server has no secret key, so it cannot create or deliver secrets: start \
         `shoal api` with --secret-key-file FILE (lines `KEY-ID BASE64-32-BYTES`)"
    )]
    NoSecretKey,
    /// A secret could not be sealed or opened (the message never holds a value).
    #[error("secret: {0}")]
    Crypto(#[from] crate::secrets::crypto::CryptoError),
    /// A record in the store could not be decoded.
    #[error("stored record {key} is invalid: {message}")]
    Corrupt {
        /// Key of the record.
        key: String,
        /// Decoder message.
        message: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The server failed on its own (it could not write what it read back, or encode an
    /// answer): nothing the request could change.
    #[error("internal error: {0}")]
    Internal(String),
}

fn summary(errors: &[ManifestError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidManifest(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } | ApiError::Exists(_) | ApiError::InUse(_) => {
                StatusCode::CONFLICT
            }
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoSecretKey => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Corrupt { .. } | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::InvalidManifest(errs) => errs
                .iter()
                .map(|e| ErrorDetail {
                    line: e.line,
                    column: e.column,
                    message: e.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let current_revision = match self {
            ApiError::Conflict { current, .. } => Some(*current),
            _ => None,
        };
        ErrorBody {
            error: self.to_string(),
            details,
            current_revision,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"shoal\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_faults_are_5xx() {
        let faults = [
            ApiError::Store(StoreError::Unavailable("etcd: connection refused".into())),
            ApiError::Store(StoreError::TooManyOps {
                ops: 200,
                max: 128,
                backend: "etcd",
            }),
            ApiError::Store(StoreError::PermissionDenied("read /shoal/services".into())),
            ApiError::Corrupt {
                key: "/shoal/nodes/n1".into(),
                message: "expected value".into(),
            },
            ApiError::Internal("cannot encode metrics".into()),
            ApiError::NoSecretKey,
        ];
        for e in faults {
            assert!(e.status().is_server_error(), "{e}: {}", e.status());
        }
        assert_eq!(
            ApiError::Store(StoreError::Unavailable("x".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        for e in [
            ApiError::BadRequest("bad selector".into()),
            ApiError::InvalidManifest(Vec::new()),
        ] {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
        }
    }
}
