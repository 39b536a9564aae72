//! Opening a store from a URL: `file:///PATH` (embedded, PATH is a data directory),
//! `etcd://HOST:PORT[,HOST:PORT...]`, and `consul://HOST:PORT`, with the TLS and credential
//! settings of [`StoreOptions`]; and [`redact_url`], the form of a URL fit for logs.
//!
//! Each scheme maps to one opener in [`open_store_with`]; a new backend adds one arm there.

use std::path::PathBuf;
use std::sync::Arc;

use crate::etcd::{Credentials, EtcdOptions, EtcdTls};
use crate::{EmbeddedStore, EtcdStore, Store, StoreError};

/// TLS and credentials for the store (`--store-ca`, `--store-cert`, `--store-key`,
/// `--store-user`, `--store-password-file`). Only paths: files are read when the store opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// CA certificate (PEM) the store's certificate must chain to; turns TLS on.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), with `key`; etcd takes the user from its common name when no
    /// user is given.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// User name for etcd's authentication, with `password_file`.
    pub user: Option<String>,
    /// File holding the user's password.
    pub password_file: Option<PathBuf>,
}

impl StoreOptions {
    /// Whether any setting is given.
    pub fn is_empty(&self) -> bool {
        *self == StoreOptions::default()
    }

    /// Checks that settings which go together are given together.
    fn check(&self) -> Result<(), StoreError> {
        let config = |m: &str| Err(StoreError::Config(m.to_string()));
        if self.cert.is_some() != self.key.is_some() {
            return config(
                "a store client certificate and its key go together (--store-cert with --store-key)",
            );
        }
        if self.cert.is_some() && self.ca.is_none() {
            return config(
                "a store client certificate needs the CA that signed the store's certificate (--store-ca)",
            );
        }
        if self.user.is_some() != self.password_file.is_some() {
            return config(
                "a store user and its password file go together (--store-user with --store-password-file)",
            );
        }
        Ok(())
    }

    /// The etcd settings these options describe.
    fn etcd(&self) -> Result<EtcdOptions, StoreError> {
        let tls = match &self.ca {
            Some(ca) => Some(EtcdTls::from_files(
                ca,
                self.cert.as_ref().zip(self.key.as_ref()),
            )?),
            None => None,
        };
        let credentials = match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => Some(Credentials::from_file(user, file)?),
            _ => None,
        };
        if credentials.is_some() && tls.is_none() {
            tracing::warn!(
                "the store password is sent to etcd in cleartext: give --store-ca to use TLS"
            );
        }
        Ok(EtcdOptions {
            tls,
            credentials,
            ..EtcdOptions::default()
        })
    }
}

/// The URL schemes Shoal understands, for messages.
pub const SCHEMES: &str = "file:///PATH, etcd://HOST:PORT[,HOST:PORT...], consul://HOST:PORT";

/// Opens the store named by `url`, in cleartext and without credentials.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_store_with(url, &StoreOptions::default()).await
}

/// Opens the store named by `url` with TLS and credentials.
pub async fn open_store_with(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    options.check()?;
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(format!("expected a URL with a scheme ({SCHEMES})")));
    };
    match scheme {
        "file" => {
            if !options.is_empty() {
                return Err(StoreError::Config(
                    "the embedded store takes no TLS or credential settings".into(),
                ));
            }
            if !rest.starts_with('/') {
                return Err(invalid(
                    "a file URL needs an absolute path: file:///var/lib/shoal".to_string(),
                ));
            }
            Ok(Arc::new(EmbeddedStore::open(rest).await?))
        }
        "etcd" => {
            let endpoints = parse_endpoints(rest).map_err(invalid)?;
            Ok(Arc::new(
                EtcdStore::connect_with(&endpoints, options.etcd()?).await?,
            ))
        }
        "consul" => {
            if options.cert.is_some() || options.user.is_some() {
                return Err(StoreError::Config(
                    "Consul takes an ACL token (consul://HOST:PORT?token=… or CONSUL_HTTP_TOKEN), \
                     not a client certificate or a user and password"
                        .into(),
                ));
            }
            Ok(Arc::new(
                crate::consul::ConsulStore::connect_with_ca(url, options.ca.clone()).await?,
            ))
        }
        other => Err(invalid(format!(
            "unknown store scheme {other:?}; expected one of {SCHEMES}"
        ))),
    }
}

/// Opens an `etcd://` store as an [`EtcdStore`] (for what only etcd has: users and roles).
pub async fn open_etcd(url: &str, options: &StoreOptions) -> Result<EtcdStore, StoreError> {
    options.check()?;
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        invalid("users and roles are etcd's: expected etcd://HOST:PORT[,HOST:PORT...]".into())
    })?;
    let endpoints = parse_endpoints(rest).map_err(invalid)?;
    EtcdStore::connect_with(&endpoints, options.etcd()?).await
}

/// `url` with every credential in it replaced by `***`: the password of `user:password@`,
/// and the values of `token`, `password` and `secret` query parameters. Use it wherever a
/// store or agent URL is printed.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "password", "secret"]
        .iter()
        .any(|s| name.contains(s))
}

/// Splits `HOST:PORT[,HOST:PORT...]` (a trailing `/` is allowed), checking each part.
fn parse_endpoints(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err("no HOST:PORT given".to_string());
    }
    rest.split(',')
        .map(|part| {
            let part = part.trim();
            let (host, port) = part
                .rsplit_once(':')
                .ok_or_else(|| format!("{part:?} is not HOST:PORT"))?;
            if host.is_empty() || host.contains('/') {
                return Err(format!("{part:?} has no valid host"));
            }
            port.parse::<u16>()
                .map_err(|_| format!("{part:?} has no valid port"))?;
            Ok(part.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match rt.map(|rt| rt.block_on(open_store(url))) {
            Ok(Err(StoreError::InvalidUrl { reason, .. })) => reason,
            Ok(Err(other)) => format!("other error: {other}"),
            Ok(Ok(_)) => "opened".to_string(),
            Err(e) => format!("runtime: {e}"),
        }
    }

    #[test]
    fn refuses_bad_urls_with_reasons() {
        assert!(reason("/var/lib/shoal").contains("scheme"));
        assert!(reason("redis://h:1").contains("unknown store scheme"));
        assert!(reason("file://relative").contains("absolute path"));
        assert!(reason("etcd://").contains("no HOST:PORT"));
        assert!(reason("etcd://h:x").contains("valid port"));
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("consul://127.0.0.1:8500?token=abc-123&ca_file=/x"),
            "consul://127.0.0.1:8500?token=***&ca_file=/x"
        );
        assert_eq!(
            redact_url("etcd://root:hunter2@10.0.0.5:2379"),
            "etcd://root:***@10.0.0.5:2379"
        );
        assert_eq!(
            redact_url("http://h:1/p?X-Consul-Token=t"),
            "http://h:1/p?X-Consul-Token=***"
        );
        assert_eq!(redact_url("file:///var/lib/shoal"), "file:///var/lib/shoal");
        let e = reason("consul://h:1?token=abc-123&bogus=1");
        assert!(!e.contains("abc-123"), "{e}");
    }

    #[tokio::test]
    async fn settings_that_go_together_are_checked() {
        let err = |o: StoreOptions| async move {
            open_store_with("etcd://127.0.0.1:1", &o)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err(StoreOptions {
            cert: Some("c".into()),
            ..Default::default()
        })
        .await;
        assert!(e.contains("--store-key"), "{e}");
        let e = err(StoreOptions {
            cert: Some("c".into()),
            key: Some("k".into()),
            ..Default::default()
        })
        .await;
        assert!(e.contains("--store-ca"), "{e}");
        let e = err(StoreOptions {
            user: Some("u".into()),
            ..Default::default()
        })
        .await;
        assert!(e.contains("--store-password-file"), "{e}");
        let e = err(StoreOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .await;
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let o = StoreOptions {
            user: Some("u".into()),
            password_file: Some("p".into()),
            ..Default::default()
        };
        let e = open_store_with(&url, &o).await.err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("embedded"));
    }

    #[test]
    fn parses_endpoint_lists() {
        assert_eq!(
            parse_endpoints("a:1,b:2/"),
            Ok(vec!["a:1".to_string(), "b:2".to_string()])
        );
    }

    #[tokio::test]
    async fn opens_file_and_etcd_urls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let store = open_store(&url).await.expect("file URL");
        assert_eq!(store.backend(), "embedded");
        // The etcd client connects lazily, so this needs no server.
        let store = open_store("etcd://127.0.0.1:1,127.0.0.1:2")
            .await
            .expect("etcd URL");
        assert_eq!(store.backend(), "etcd");
    }
}
