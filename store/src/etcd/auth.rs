//! TLS and user/password authentication to etcd, and keeping the auth token valid.
//!
//! etcd-client re-authenticates by itself only when a unary call is refused as
//! `Unauthenticated` (an expired token). Two more cases need a new token, and this module
//! handles them for every call of [`super::EtcdStore`] and for its watches:
//! - with JWT tokens, any change of users or roles (`shoal rbac apply`) makes every token
//!   issued before it fail with `InvalidArgument: revision of auth store is old`;
//! - a watch opened with an expired token is created and at once cancelled with an
//!   `Unauthenticated` reason, which no unary retry sees.
//!
//! Authentication is lazy (at the first call, like the connection itself), so a component
//! started while etcd is down waits for it as it would without credentials. Concurrent calls
//! that hit a stale token share one re-authentication.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::Client;

use super::map_err;
use crate::StoreError;

/// etcd's answer when a JWT predates the latest change of users or roles.
const OLD_REVISION: &str = "revision of auth store is old";
/// etcd's answer to a request without a token while authentication is on.
const USER_EMPTY: &str = "user name is empty";
/// etcd's answer to an expired or unknown token.
const INVALID_TOKEN: &str = "invalid auth token";
/// etcd's answer to `Authenticate` while authentication is off.
const AUTH_NOT_ENABLED: &str = "authentication is not enabled";

/// A user name and password for etcd. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Credentials of `user`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Credentials of `user` with the password in `file` (one line; surrounding whitespace,
    /// such as the final newline, is not part of it).
    pub fn from_file(user: &str, file: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            StoreError::Config(format!(
                "cannot read the store password file {}: {e}",
                file.display()
            ))
        })?;
        let password = text.trim();
        if password.is_empty() {
            return Err(StoreError::Config(format!(
                "the store password file {} is empty",
                file.display()
            )));
        }
        Ok(Self::new(user, password))
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn pair(&self) -> (String, String) {
        (self.user.clone(), self.password.clone())
    }
}

/// TLS settings: the CA etcd's certificate must chain to, and an optional client
/// certificate (etcd then takes the user from its common name when no password is given).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// TLS verified against the CA certificates in `ca_pem`.
    pub fn new(ca_pem: Vec<u8>) -> Result<Self, StoreError> {
        if !pem_has(&ca_pem, "CERTIFICATE") {
            return Err(StoreError::Config(
                "the store CA holds no PEM certificate".into(),
            ));
        }
        Ok(EtcdTls {
            ca_pem,
            identity: None,
        })
    }

    /// Also presents a client certificate and its private key (PEM).
    pub fn with_identity(
        mut self,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    ) -> Result<Self, StoreError> {
        if !pem_has(&cert_pem, "CERTIFICATE") {
            return Err(StoreError::Config(
                "the store client certificate holds no PEM certificate".into(),
            ));
        }
        if !pem_has(&key_pem, "PRIVATE KEY") {
            return Err(StoreError::Config(
                "the store client key holds no PEM private key".into(),
            ));
        }
        self.identity = Some((cert_pem, key_pem));
        Ok(self)
    }

    /// Reads the CA and, when both are given, the client certificate and key.
    pub fn from_files(
        ca: &Path,
        identity: Option<(&PathBuf, &PathBuf)>,
    ) -> Result<Self, StoreError> {
        let tls = Self::new(read(ca, "CA")?)?;
        match identity {
            Some((cert, key)) => {
                tls.with_identity(read(cert, "client certificate")?, read(key, "client key")?)
            }
            None => Ok(tls),
        }
    }

    pub(crate) fn options(&self) -> etcd_client::TlsOptions {
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(self.ca_pem.clone()));
        match &self.identity {
            Some((cert, key)) => {
                tls.identity(etcd_client::Identity::from_pem(cert.clone(), key.clone()))
            }
            None => tls,
        }
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| {
        StoreError::Config(format!(
            "cannot read the store {what} {}: {e}",
            path.display()
        ))
    })
}

/// Whether `pem` holds a block whose label ends with `label` (`PRIVATE KEY` also matches
/// `EC PRIVATE KEY` and `RSA PRIVATE KEY`).
fn pem_has(pem: &[u8], label: &str) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.lines().any(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    })
}

/// The authentication state shared by a store's calls and watches.
#[derive(Debug)]
pub(crate) struct Auth {
    credentials: Option<Credentials>,
    /// Serializes (re-)authentications.
    lock: tokio::sync::Mutex<()>,
    /// How many times it authenticated; 0 = not yet.
    generation: AtomicU64,
}

impl Auth {
    pub(crate) fn new(credentials: Option<Credentials>) -> Self {
        Auth {
            credentials,
            lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// Whether calls carry a token.
    pub(crate) fn enabled(&self) -> bool {
        self.credentials.is_some()
    }

    /// Authenticates if it never did; returns the generation a call is made under.
    pub(crate) async fn ensure(&self, client: &Client) -> Result<u64, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation > 0 || self.credentials.is_none() {
            return Ok(generation);
        }
        self.renew(client, 0).await
    }

    /// Gets a new token unless another call already did since `seen`; returns the new
    /// generation.
    pub(crate) async fn renew(&self, client: &Client, seen: u64) -> Result<u64, StoreError> {
        let Some(credentials) = &self.credentials else {
            return Ok(0);
        };
        let _guard = self.lock.lock().await;
        let current = self.generation.load(Ordering::Acquire);
        if current != seen {
            return Ok(current);
        }
        match client.clone().update_user(Some(credentials.pair())).await {
            Ok(()) => {
                tracing::debug!(user = %credentials.user, "authenticated to etcd");
            }
            Err(e) if e.to_string().contains(AUTH_NOT_ENABLED) => {
                tracing::warn!(
                    user = %credentials.user,
                    "etcd authentication is not enabled: the store credentials are not used yet"
                );
            }
            Err(e) => return Err(auth_err(&credentials.user, e)),
        }
        let next = current + 1;
        self.generation.store(next, Ordering::Release);
        Ok(next)
    }
}

/// Maps an authentication failure: a refused password is [`StoreError::AuthFailed`].
fn auth_err(user: &str, e: etcd_client::Error) -> StoreError {
    match map_err(e) {
        StoreError::Backend { message, .. } if message.contains("authentication failed") => {
            StoreError::AuthFailed(format!("etcd refused the password of user {user:?}"))
        }
        other => other,
    }
}

/// Whether a failed call should be retried once with a new token.
pub(crate) fn needs_new_token(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            i32::from(status.code()) == super::grpc_code::UNAUTHENTICATED
                || is_token_problem(status.message())
        }
        _ => false,
    }
}

/// Whether etcd's message (an error or a watch's cancel reason) says the token is stale,
/// missing or expired.
pub(crate) fn is_token_problem(message: &str) -> bool {
    [OLD_REVISION, USER_EMPTY, INVALID_TOKEN]
        .iter()
        .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials::new("shoal-agent-n1", "hunter2-secret");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(format!("{c:?}").contains("shoal-agent-n1"));
    }

    #[test]
    fn password_files_lose_their_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let c = Credentials::from_file("u", &f).unwrap();
        assert_eq!(c.pair().1, "s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert!(Credentials::from_file("u", &f).is_err());
        let e = Credentials::from_file("u", &dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn pem_checks_name_what_is_missing() {
        assert!(EtcdTls::new(b"not pem".to_vec()).is_err());
        let cert = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".to_vec();
        let key = b"-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n".to_vec();
        let tls = EtcdTls::new(cert.clone()).unwrap();
        assert!(
            tls.clone()
                .with_identity(cert.clone(), cert.clone())
                .is_err()
        );
        assert!(tls.with_identity(cert, key).is_ok());
    }

    #[test]
    fn stale_token_messages_are_recognised() {
        assert!(is_token_problem(
            "etcdserver: revision of auth store is old"
        ));
        assert!(is_token_problem(
            "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
        ));
        assert!(is_token_problem("etcdserver: user name is empty"));
        assert!(!is_token_problem("etcdserver: permission denied"));
    }
}
