//! Opening a store from a URL: `file:///PATH` (embedded, PATH is a data directory),
//! `etcd://HOST:PORT[,HOST:PORT...]`, and `consul://HOST:PORT`.
//!
//! Each scheme maps to one opener in [`open_store`]; a new backend adds one arm there.

use std::sync::Arc;

use crate::{EmbeddedStore, EtcdStore, Store, StoreError};

/// The URL schemes Shoal understands, for messages.
pub const SCHEMES: &str = "file:///PATH, etcd://HOST:PORT[,HOST:PORT...], consul://HOST:PORT";

/// Opens the store named by `url`.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(format!("expected a URL with a scheme ({SCHEMES})")));
    };
    match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "a file URL needs an absolute path: file:///var/lib/shoal".to_string(),
                ));
            }
            Ok(Arc::new(EmbeddedStore::open(rest).await?))
        }
        "etcd" => {
            let endpoints = parse_endpoints(rest).map_err(invalid)?;
            Ok(Arc::new(EtcdStore::connect(&endpoints).await?))
        }
        "consul" => Ok(Arc::new(crate::consul::ConsulStore::connect(url).await?)),
        other => Err(invalid(format!(
            "unknown store scheme {other:?}; expected one of {SCHEMES}"
        ))),
    }
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
