//! The cluster key and the envelope secrets are stored in.
//!
//! The key file (`shoal api --secret-key-file`) holds one or more lines `KEY-ID BASE64-KEY`,
//! each key 32 random bytes (`echo "k1 $(head -c32 /dev/urandom | base64)"`); blank lines and
//! `#` comments are skipped. The first key is the active one: new values are sealed under it.
//! The others still open what was sealed under them, until `shoal secret rotate-key` has
//! re-sealed everything under the active key.
//!
//! A sealed value is `shoal:enc:v1:<key-id>:<base64(nonce ‖ ciphertext ‖ tag)>`:
//! XChaCha20-Poly1305 with a random 24-byte nonce, and the secret's `namespace/name` as
//! associated data, so a ciphertext moved to another secret's record does not open. Keys are
//! wiped from memory when the ring is dropped; opened values come back in [`Zeroizing`]
//! buffers. No error of this module carries any part of a key or a value.
//!
//! Secrets are shown with a keyed digest (`hmac-sha256:<key-id>:<hex>`): equal values under
//! the same key have equal digests, but a digest reveals nothing about a short value to
//! someone who can only read metadata (a plain SHA-256 of a weak password can be reversed by
//! guessing).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// What every sealed value starts with.
pub const ENVELOPE_PREFIX: &str = "shoal:enc:v1:";
/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Longest key ID.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Why a key file could not be used or a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file could not be read.
    #[error("cannot read the secret key file {path}: {source}")]
    Io {
        /// Path of the file.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Other users may read the key file.
    #[error(
        "the secret key file {path} may be read by other users (mode {mode:04o}): `chmod 600 {path}`"
    )]
    Permissions {
        /// Path of the file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A line of the key file is malformed (the line's key material is never repeated).
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// Path of the file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The key file holds no key.
    #[error(
        "the secret key file {path} holds no key: add a line `KEY-ID BASE64-KEY`, e.g. `echo \"k1 $(head -c32 /dev/urandom | base64)\" > {path}`"
    )]
    Empty {
        /// Path of the file.
        path: String,
    },
    /// A stored value is not an envelope this version reads.
    #[error("the stored value is not a {ENVELOPE_PREFIX}<key-id>:… envelope: {0}")]
    Malformed(String),
    /// A stored value was sealed under a key the key file no longer has.
    #[error(
        "the stored value was sealed under key {0:?}, which is not in the secret key file: put that key's line back (any line after the first still opens values)"
    )]
    UnknownKey(String),
    /// A stored value does not open: wrong key material, or the record was altered or
    /// moved to another name.
    #[error(
        "the stored value does not open under key {0:?}: the key's material differs from the one it was sealed with, or the record was altered or moved"
    )]
    Open(String),
    /// The system's random source failed.
    #[error("cannot draw a random nonce: {0}")]
    Random(String),
    /// Sealing failed.
    #[error("cannot seal the value")]
    Seal,
}

/// One key of the ring.
struct RingKey {
    id: String,
    cipher: XChaCha20Poly1305,
    /// Key of the secrets' digests, derived from this key (HMAC-SHA256 of a fixed label).
    digest_key: Zeroizing<[u8; 32]>,
}

/// The keys of a key file: the first seals, all open.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// Why `id` is not a key ID, if it is not one.
fn key_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
        return Some(format!(
            "a key ID has 1 to {MAX_KEY_ID_LEN} characters, not {}",
            id.len()
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some(format!(
            "key ID {id:?} may contain only letters, digits, '-', '_' and '.'"
        ));
    }
    None
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length (longer ones are hashed)");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

impl RingKey {
    fn new(id: &str, raw: &[u8]) -> Result<Self, String> {
        if raw.len() != KEY_LEN {
            return Err(format!(
                "key {id:?} is {} bytes; a key is {KEY_LEN} random bytes",
                raw.len()
            ));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(raw)
            .map_err(|_| format!("key {id:?} is not a valid key"))?;
        let digest_key = Zeroizing::new(hmac_sha256(raw, b"shoal secret digest v1"));
        Ok(RingKey {
            id: id.to_string(),
            cipher,
            digest_key,
        })
    }
}

impl KeyRing {
    /// Parses the text of a key file; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, CryptoError> {
        let mut keys: Vec<RingKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |message: String| CryptoError::Syntax {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            let mut fields = line.split_whitespace();
            let (Some(id), Some(b64), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(syntax("expected `KEY-ID BASE64-KEY`".to_string()));
            };
            if let Some(p) = key_id_problem(id) {
                return Err(syntax(p));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(syntax(format!("key ID {id:?} appears twice")));
            }
            let raw = Zeroizing::new(
                STANDARD
                    .decode(b64)
                    .map_err(|_| syntax(format!("the key of {id:?} is not base64")))?,
            );
            keys.push(RingKey::new(id, &raw).map_err(syntax)?);
        }
        if keys.is_empty() {
            return Err(CryptoError::Empty {
                path: path.to_string(),
            });
        }
        Ok(KeyRing { keys })
    }

    /// Loads a key file, refusing one that other users may read.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        use std::os::unix::fs::PermissionsExt as _;
        let shown = path.display().to_string();
        let io = |source| CryptoError::Io {
            path: shown.clone(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(CryptoError::Permissions {
                path: shown,
                mode: mode & 0o7777,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        Self::parse(&text, &shown)
    }

    /// Writes a new key file with one fresh key `id` (mode 0600); refuses to overwrite.
    pub fn create_file(path: &Path, id: &str) -> Result<(), CryptoError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let shown = path.display().to_string();
        if let Some(p) = key_id_problem(id) {
            return Err(CryptoError::Syntax {
                path: shown,
                line: 1,
                message: p,
            });
        }
        let raw = Zeroizing::new(
            <[u8; KEY_LEN]>::try_generate().map_err(|e| CryptoError::Random(e.to_string()))?,
        );
        let line = Zeroizing::new(format!("{id} {}\n", STANDARD.encode(raw.as_ref())));
        let io = |source| CryptoError::Io {
            path: shown.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)
    }

    fn active(&self) -> &RingKey {
        &self.keys[0]
    }

    /// ID of the key new values are sealed under.
    pub fn active_id(&self) -> &str {
        &self.active().id
    }

    /// IDs of every key, the active one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Seals `value` under the active key, bound to `aad` (the secret's `namespace/name`).
    pub fn seal(&self, aad: &str, value: &[u8]) -> Result<String, CryptoError> {
        let key = self.active();
        let nonce = XNonce::try_generate().map_err(|e| CryptoError::Random(e.to_string()))?;
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{ENVELOPE_PREFIX}{}:{}",
            key.id,
            STANDARD.encode(blob)
        ))
    }

    /// The key ID an envelope was sealed under.
    pub fn key_id_of(envelope: &str) -> Result<&str, CryptoError> {
        let rest = envelope.strip_prefix(ENVELOPE_PREFIX).ok_or_else(|| {
            CryptoError::Malformed("it does not start with the version prefix".into())
        })?;
        let (id, _) = rest
            .split_once(':')
            .ok_or_else(|| CryptoError::Malformed("it has no key ID".into()))?;
        Ok(id)
    }

    /// Opens an envelope sealed for `aad`.
    pub fn open(&self, aad: &str, envelope: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let id = Self::key_id_of(envelope)?;
        let b64 = &envelope[ENVELOPE_PREFIX.len() + id.len() + 1..];
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_string()))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| CryptoError::Malformed("the sealed part is not base64".into()))?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed(
                "the sealed part is too short".into(),
            ));
        }
        let nonce = XNonce::try_from(&blob[..NONCE_LEN])
            .map_err(|_| CryptoError::Malformed("bad nonce".into()))?;
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &blob[NONCE_LEN..],
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open(id.to_string()))
    }

    /// The keyed digest of a secret's value under the active key:
    /// `hmac-sha256:<key-id>:<hex>`.
    pub fn digest(&self, value: &[u8]) -> String {
        let key = self.active();
        let mac = hmac_sha256(key.digest_key.as_ref(), value);
        format!("hmac-sha256:{}:{}", key.id, hex::encode(mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(id: &str, byte: u8) -> String {
        format!("{id} {}\n", STANDARD.encode([byte; KEY_LEN]))
    }

    #[test]
    fn values_round_trip_and_are_bound_to_their_name() {
        let ring = KeyRing::parse(&key_line("k1", 7), "keys").unwrap();
        let value = b"correct horse battery staple";
        let sealed = ring.seal("default/db-password", value).unwrap();
        assert!(sealed.starts_with("shoal:enc:v1:k1:"), "{sealed}");
        assert!(
            !sealed.contains("horse") && !sealed.contains(&STANDARD.encode(value)),
            "the envelope carries no plaintext"
        );
        assert_eq!(&*ring.open("default/db-password", &sealed).unwrap(), value);
        assert_ne!(
            ring.seal("default/db-password", value).unwrap(),
            sealed,
            "a fresh nonce every time"
        );
        let moved = ring.open("default/other", &sealed).unwrap_err();
        assert!(matches!(moved, CryptoError::Open(_)), "{moved}");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(ring.open("default/db-password", &tampered).is_err());
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = KeyRing::parse(&key_line("k1", 1), "keys").unwrap();
        let sealed_old = old.seal("ns/a", b"v1").unwrap();
        let both = KeyRing::parse(
            &format!("# rotated\n{}\n{}", key_line("k2", 2), key_line("k1", 1)),
            "keys",
        )
        .unwrap();
        assert_eq!(both.active_id(), "k2");
        assert_eq!(both.ids().collect::<Vec<_>>(), ["k2", "k1"]);
        assert_eq!(&*both.open("ns/a", &sealed_old).unwrap(), b"v1");
        let sealed_new = both.seal("ns/a", b"v1").unwrap();
        assert_eq!(KeyRing::key_id_of(&sealed_new).unwrap(), "k2");
        let e = old.open("ns/a", &sealed_new).unwrap_err();
        assert!(
            matches!(e, CryptoError::UnknownKey(ref id) if id == "k2"),
            "{e}"
        );
        let wrong = KeyRing::parse(&key_line("k2", 9), "keys").unwrap();
        assert!(matches!(
            wrong.open("ns/a", &sealed_new),
            Err(CryptoError::Open(_))
        ));
        assert!(matches!(
            both.open("ns/a", "plain"),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn digests_are_keyed_and_stable() {
        let ring = KeyRing::parse(&key_line("k1", 3), "keys").unwrap();
        let d = ring.digest(b"hunter2");
        assert!(d.starts_with("hmac-sha256:k1:") && d.len() == "hmac-sha256:k1:".len() + 64);
        assert_eq!(d, ring.digest(b"hunter2"));
        assert_ne!(d, ring.digest(b"hunter3"));
        use sha2::Digest as _;
        let plain = hex::encode(Sha256::digest(b"hunter2"));
        assert!(!d.contains(&plain), "not the plain SHA-256");
        let other = KeyRing::parse(&key_line("k1", 4), "keys").unwrap();
        assert_ne!(other.digest(b"hunter2"), d);
    }

    #[test]
    fn the_key_file_parser_names_the_line_and_never_the_key() {
        let short = STANDARD.encode([5u8; 16]);
        let good = key_line("k1", 1);
        let cases = [
            ("k1\n".to_string(), 1, "expected `KEY-ID BASE64-KEY`"),
            (format!("k1 {short}\n"), 1, "16 bytes"),
            ("k1 !!notbase64!!\n".to_string(), 1, "not base64"),
            (format!("# c\n\nk:1 {short}\n"), 3, "may contain only"),
            (format!("{good}{good}"), 2, "appears twice"),
            (format!("{} extra\n", good.trim()), 1, "expected"),
        ];
        for (text, line, want) in cases {
            let e = KeyRing::parse(&text, "keys").unwrap_err();
            let shown = e.to_string();
            assert!(
                matches!(e, CryptoError::Syntax { line: l, .. } if l == line),
                "{text:?}: {shown}"
            );
            assert!(shown.starts_with(&format!("keys:{line}: ")), "{shown}");
            assert!(shown.contains(want), "{text:?}: {shown}");
            assert!(
                !shown.contains(&short),
                "no key material in errors: {shown}"
            );
        }
        let e = KeyRing::parse("# nothing\n", "keys").unwrap_err();
        assert!(matches!(e, CryptoError::Empty { .. }), "{e}");
    }

    #[test]
    fn key_files_are_created_private_and_refused_when_readable_by_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        KeyRing::create_file(&path, "dev-1").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.active_id(), "dev-1");
        assert!(
            KeyRing::create_file(&path, "dev-2").is_err(),
            "never overwrites a key file"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyRing::load(&path).unwrap_err();
        assert!(
            matches!(e, CryptoError::Permissions { mode: 0o644, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"));
        assert!(format!("{ring:?}").contains("dev-1"));
    }
}
