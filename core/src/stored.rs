//! Reading a manifest back from the store: the one rule the controller and the API share for
//! whether a stored manifest is valid.
//!
//! A stored manifest is valid when it is UTF-8, parses and validates (see [`crate::parse()`]),
//! holds exactly one service, and that service is the one its key names. Anything else is an
//! [`StoredManifestError`] whose text the controller writes into the service status and the
//! API shows next to the manifest.

use crate::manifest::{Service, ServiceRef};
use crate::parse::ManifestError;

/// Why a stored manifest is not a valid service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredManifestError {
    /// The bytes are not UTF-8.
    #[error("{key}: manifest is not UTF-8: {message}")]
    NotUtf8 {
        /// Store key.
        key: String,
        /// Decoder message.
        message: String,
    },
    /// The text does not parse or validate.
    #[error("{}", join(.0))]
    Invalid(Vec<ManifestError>),
    /// The text holds no service, or several.
    #[error("{key}: expected exactly one Service document, found {found}")]
    NotOne {
        /// Store key.
        key: String,
        /// Services found.
        found: usize,
    },
    /// The manifest is for another service than its key names.
    #[error("{key}: manifest names service {found} but is stored under {stored}")]
    Misplaced {
        /// Store key.
        key: String,
        /// The service the manifest names.
        found: ServiceRef,
        /// The service the key names.
        stored: ServiceRef,
    },
}

fn join(errors: &[ManifestError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses the manifest stored at `key` for service `stored_as`.
pub fn parse_stored(
    key: &str,
    stored_as: &ServiceRef,
    bytes: &[u8],
) -> Result<Service, StoredManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|e| StoredManifestError::NotUtf8 {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    let mut services = crate::parse(text, key).map_err(StoredManifestError::Invalid)?;
    if services.len() != 1 {
        return Err(StoredManifestError::NotOne {
            key: key.to_string(),
            found: services.len(),
        });
    }
    let service = services.remove(0).service;
    if service.id() != *stored_as {
        return Err(StoredManifestError::Misplaced {
            key: key.to_string(),
            found: service.id(),
            stored: stored_as.clone(),
        });
    }
    Ok(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str =
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n";

    fn web() -> ServiceRef {
        "default/web".parse().unwrap()
    }

    #[test]
    fn one_service_under_its_own_key_is_valid() {
        let s = parse_stored("/s/services/default/web", &web(), WEB.as_bytes()).unwrap();
        assert_eq!(s.id(), web());
    }

    #[test]
    fn every_other_stored_text_says_what_is_wrong() {
        let key = "/s/services/default/web";
        let api = WEB.replace("name: web", "name: api");
        let two = format!("{WEB}---\n{api}");
        let cases: [(&[u8], &str); 5] = [
            (b"\xff", "manifest is not UTF-8"),
            (b"", "expected exactly one Service document, found 0"),
            (
                two.as_bytes(),
                "expected exactly one Service document, found 2",
            ),
            (b"kind: Service\n", "apiVersion"),
            (
                api.as_bytes(),
                "manifest names service default/api but is stored under default/web",
            ),
        ];
        for (bytes, want) in cases {
            let e = parse_stored(key, &web(), bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
            assert!(e.starts_with(key), "{e} should name the key");
        }
    }
}
