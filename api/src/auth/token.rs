//! API tokens and the token file.
//!
//! A token is `ID.SECRET`: ID a short name (letters, digits, `-`, `_`), SECRET 32 random bytes
//! in unpadded base64url. The token is printed once, when it is created; the token file keeps
//! one line per token, `ID SHA256-HEX-OF-SECRET ROLE [NAMESPACE,…]`, never the token itself.
//! ROLE is `read`, `write`, `admin` or `node:<NODE-ID>`; namespaces are only for `write`.
//!
//! A slow password hash would be the wrong tool here: the secrets are 256 random bits, not
//! passwords, so a plain SHA-256 cannot be brute-forced and lets the API check a token with one
//! hash. The ID (which is not secret) finds the line; the hashes are compared in constant time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Principal, Role};

/// Random bytes in a token's secret.
pub const SECRET_BYTES: usize = 32;

/// Longest token ID.
const MAX_ID_LEN: usize = 64;

/// Why a token or token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is malformed (the message never repeats the line's hash).
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// File path.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A new token's settings are not valid.
    #[error("{0}")]
    Invalid(String),
    /// No token has this ID.
    #[error("no token with ID {id:?} in {path}")]
    NotFound {
        /// ID asked for.
        id: String,
        /// File path.
        path: String,
    },
    /// The operating system's random source failed.
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// A token as handed to a person or pipeline. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// A new token with ID `id` and a fresh random secret.
    pub fn generate(id: &str) -> Result<Token, TokenError> {
        if let Some(problem) = id_problem(id) {
            return Err(TokenError::Invalid(format!("token ID {id:?}: {problem}")));
        }
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| TokenError::Random(e.to_string()))?;
        Ok(Token {
            id: id.to_string(),
            secret: URL_SAFE_NO_PAD.encode(bytes),
        })
    }

    /// Splits a presented `ID.SECRET`; `None` when it has no valid ID part.
    pub fn parse(presented: &str) -> Option<Token> {
        let (id, secret) = presented.trim().split_once('.')?;
        if id_problem(id).is_some() || secret.is_empty() {
            return None;
        }
        Some(Token {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The token's ID (not secret: it names the token in the file and in audit lines).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole token, `ID.SECRET`, to show once or to send as a bearer token.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// SHA-256 of the secret, as stored in the token file.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret.as_bytes()).into()
    }
}

/// Why `id` cannot be a token ID, or `None` when it can.
pub fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Some("must be 1 to 64 characters");
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("must start with a letter or digit");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Some("may hold only letters, digits, `-` and `_`");
    }
    None
}

/// One line of the token file: a token's hash and what it may do.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    hash: [u8; 32],
    principal: Principal,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl TokenEntry {
    /// The entry of `token`, acting as `principal` (whose token ID must be the token's).
    fn new(token: &Token, principal: Principal) -> Self {
        TokenEntry {
            hash: token.hash(),
            principal,
        }
    }

    /// Who requests with this token act as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The file line: `ID SHA256-HEX ROLE [NS,…]`.
    pub fn line(&self) -> String {
        let p = &self.principal;
        let role = match (p.role(), p.node()) {
            (Role::Node, Some(node)) => format!("node:{node}"),
            (role, _) => role.to_string(),
        };
        let mut line = format!("{} {} {role}", p.token_id(), hex::encode(self.hash));
        if !p.namespaces().is_empty() {
            line.push(' ');
            line.push_str(&p.namespaces().iter().cloned().collect::<Vec<_>>().join(","));
        }
        line
    }

    fn parse(line: &str) -> Result<TokenEntry, String> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (id, hash, role, namespaces) = match parts.as_slice() {
            [id, hash, role] => (*id, *hash, *role, None),
            [id, hash, role, ns] => (*id, *hash, *role, Some(*ns)),
            [_, _] => {
                return Err(
                    "expected `ID SHA256-HEX ROLE [NAMESPACE,…]`; this looks like the \
                     older `token role` format, which kept tokens in clear: create new tokens \
                     with `shoal token create`"
                        .to_string(),
                );
            }
            _ => return Err("expected `ID SHA256-HEX ROLE [NAMESPACE,…]`".to_string()),
        };
        if let Some(problem) = id_problem(id) {
            return Err(format!("token ID {id:?} {problem}"));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash, &mut digest)
            .map_err(|_| "the second field must be 64 hex digits (SHA-256)".to_string())?;
        let (role, node) = parse_role(role)?;
        let namespaces = match namespaces {
            Some(list) => parse_namespaces(list)?,
            None => BTreeSet::new(),
        };
        let principal = Principal::new(id, role, namespaces, node).map_err(|e| e.to_string())?;
        Ok(TokenEntry {
            hash: digest,
            principal,
        })
    }
}

/// Parses `read`, `write`, `admin` or `node:<ID>`.
fn parse_role(text: &str) -> Result<(Role, Option<String>), String> {
    match text.split_once(':') {
        Some(("node", node)) => Ok((Role::Node, Some(node.to_string()))),
        Some(_) => Err(format!(
            "unknown role {text:?} (expected read, write, admin or node:<NODE-ID>)"
        )),
        None => text.parse::<Role>().map(|r| (r, None)),
    }
}

/// Parses `a,b,c` into namespaces.
pub fn parse_namespaces(list: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for ns in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(problem) = shoal_core::validate::dns_label_problem(ns) {
            return Err(format!("namespace {ns:?}: {problem}"));
        }
        out.insert(ns.to_string());
    }
    Ok(out)
}

/// The tokens of one file, by ID.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenTable {
    entries: BTreeMap<String, TokenEntry>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable")
            .field("tokens", &self.entries.len())
            .finish()
    }
}

impl TokenTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `token`, acting as `principal`; the principal's token ID must be the token's.
    pub fn insert(&mut self, token: &Token, principal: Principal) -> Result<(), TokenError> {
        if principal.token_id() != token.id() {
            return Err(TokenError::Invalid(format!(
                "token {} cannot carry the grant of token {}",
                token.id(),
                principal.token_id()
            )));
        }
        self.entries
            .insert(token.id().to_string(), TokenEntry::new(token, principal));
        Ok(())
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by ID.
    pub fn entries(&self) -> impl Iterator<Item = &TokenEntry> {
        self.entries.values()
    }

    /// The entry of a token ID.
    pub fn get(&self, id: &str) -> Option<&TokenEntry> {
        self.entries.get(id)
    }

    /// Who a presented bearer token acts as; `None` for an unknown ID or a wrong secret.
    pub fn authenticate(&self, presented: &str) -> Option<&Principal> {
        let token = Token::parse(presented)?;
        let entry = self.entries.get(token.id())?;
        bool::from(entry.hash.ct_eq(&token.hash())).then_some(&entry.principal)
    }

    /// Parses a token file; blank lines and `#` comments are skipped.
    pub fn parse(text: &str, path: &str) -> Result<Self, TokenError> {
        let mut table = TokenTable::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |message: String| TokenError::Syntax {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            let entry = TokenEntry::parse(line).map_err(syntax)?;
            let id = entry.principal.token_id().to_string();
            if table.entries.insert(id.clone(), entry).is_some() {
                return Err(syntax(format!("token ID {id:?} appears twice")));
            }
        }
        Ok(table)
    }

    /// Loads a token file.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| io(path, source))?;
        Self::parse(&text, &path.display().to_string())
    }
}

fn io(path: &Path, source: std::io::Error) -> TokenError {
    TokenError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What `shoal token create` asks for.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// ID to use; a fresh `<role>-<random>` ID when `None`.
    pub id: Option<String>,
    /// Role.
    pub role: Role,
    /// Namespaces a write token is limited to (empty = all).
    pub namespaces: BTreeSet<String>,
    /// Node a node token speaks for.
    pub node: Option<String>,
}

/// Creates a token, appends its line to the file at `path` (created with mode 0600 when
/// missing) and returns the token: the only time its secret exists outside the holder.
pub fn create(path: &Path, new: &NewToken) -> Result<Token, TokenError> {
    let existing = match std::fs::metadata(path) {
        Ok(_) => TokenTable::load(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenTable::new(),
        Err(e) => return Err(io(path, e)),
    };
    let id = match &new.id {
        Some(id) => id.clone(),
        None => random_id(new.role)?,
    };
    if existing.get(&id).is_some() {
        return Err(TokenError::Invalid(format!(
            "a token with ID {id:?} already exists in {}",
            path.display()
        )));
    }
    let principal = Principal::new(&id, new.role, new.namespaces.clone(), new.node.clone())?;
    let token = Token::generate(&id)?;
    let line = TokenEntry::new(&token, principal).line();
    let mut file = open_private(path, false)?;
    let needs_newline = std::fs::read(path)
        .map_err(|e| io(path, e))?
        .last()
        .is_some_and(|b| *b != b'\n');
    let text = if needs_newline {
        format!("\n{line}\n")
    } else {
        format!("{line}\n")
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(path, e))?;
    Ok(token)
}

/// Removes the token `id` from the file at `path` (rewritten atomically; comments and the
/// other lines are kept). A running API stops accepting it at its next request.
pub fn revoke(path: &Path, id: &str) -> Result<(), TokenError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    TokenTable::parse(&text, &path.display().to_string())?;
    let mut found = false;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let first = line.split_whitespace().next();
        if !line.trim_start().starts_with('#') && first == Some(id) {
            found = true;
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if !found {
        return Err(TokenError::NotFound {
            id: id.to_string(),
            path: path.display().to_string(),
        });
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = open_private(&tmp, true)?;
        file.write_all(kept.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Opens `path` for appending (or truncating), creating it with mode 0600.
fn open_private(path: &Path, truncate: bool) -> Result<std::fs::File, TokenError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).mode(0o600);
    if truncate {
        opts.write(true).truncate(true);
    } else {
        opts.append(true);
    }
    opts.open(path).map_err(|e| io(path, e))
}

/// `<role>-<8 random lowercase letters and digits>`.
fn random_id(role: Role) -> Result<String, TokenError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| TokenError::Random(e.to_string()))?;
    let suffix: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    Ok(format!("{role}-{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str, role: Role, ns: &[&str], node: Option<&str>) -> Principal {
        Principal::new(
            id,
            role,
            ns.iter().map(|s| s.to_string()).collect(),
            node.map(str::to_string),
        )
        .unwrap()
    }

    #[test]
    fn tokens_are_id_dot_43_base64url_characters() {
        let t = Token::generate("ci").unwrap();
        let shown = t.reveal();
        let (id, secret) = shown.split_once('.').unwrap();
        assert_eq!(id, "ci");
        assert_eq!(secret.len(), 43, "32 bytes in unpadded base64url");
        assert!(
            secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(Token::generate("ci").unwrap(), t, "secrets are random");
        assert!(!format!("{t:?}").contains(secret), "Debug hides the secret");
        assert!(Token::generate("bad id").is_err());
        assert!(Token::generate("-x").is_err());
    }

    #[test]
    fn lines_round_trip_and_authenticate_by_hash() {
        let t = Token::generate("deploy").unwrap();
        let mut table = TokenTable::new();
        table
            .insert(&t, principal("deploy", Role::Write, &["a", "b"], None))
            .unwrap();
        let line = table.get("deploy").unwrap().line();
        assert!(line.starts_with("deploy "), "{line}");
        assert!(line.ends_with(" write a,b"), "{line}");
        assert!(
            !line.contains(&t.reveal()[7..]),
            "the secret is not in the line"
        );
        let parsed = TokenTable::parse(&format!("# ci\n{line}\n"), "f").unwrap();
        assert_eq!(parsed, table);
        let p = parsed
            .authenticate(&t.reveal())
            .expect("the token is accepted");
        assert_eq!(p.token_id(), "deploy");
        assert!(p.can_write("a") && !p.can_write("c"));
        let wrong = format!("deploy.{}", "A".repeat(43));
        assert!(
            parsed.authenticate(&wrong).is_none(),
            "a wrong secret fails"
        );
        assert!(parsed.authenticate("deploy").is_none(), "an ID alone fails");
        assert!(parsed.authenticate("other.xyz").is_none());
    }

    #[test]
    fn node_lines_carry_the_node() {
        let t = Token::generate("n1").unwrap();
        let entry = TokenEntry::new(&t, principal("n1", Role::Node, &[], Some("core-01")));
        let line = entry.line();
        assert!(line.ends_with(" node:core-01"), "{line}");
        let table = TokenTable::parse(&line, "f").unwrap();
        let p = table.authenticate(&t.reveal()).unwrap();
        assert_eq!(p.node(), Some("core-01"));
        assert_eq!(p.role(), Role::Node);
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        let hash = "0".repeat(64);
        let cases = [
            ("abc read\n", "older `token role` format"),
            (&*format!("x {hash} boss\n"), "unknown role"),
            ("x 12 read\n", "64 hex digits"),
            (&*format!("x {hash} read a\n"), "namespaces"),
            (&*format!("x {hash} node\n"), "node"),
            (&*format!("x {hash} write Bad_NS\n"), "namespace"),
            (
                &*format!("x {hash} read\nx {hash} admin\n"),
                "appears twice",
            ),
        ];
        for (text, want) in cases {
            let e = TokenTable::parse(text, "t").unwrap_err().to_string();
            assert!(e.starts_with("t:"), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains(&hash), "errors do not repeat hashes: {e}");
        }
    }

    #[test]
    fn create_appends_and_revoke_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let new = |role, ns: &[&str], node: Option<&str>| NewToken {
            id: None,
            role,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            node: node.map(str::to_string),
        };
        let a = create(&path, &new(Role::Read, &[], None)).unwrap();
        let b = create(&path, &new(Role::Write, &["team-a"], None)).unwrap();
        let c = create(&path, &new(Role::Node, &[], Some("n1"))).unwrap();
        assert!(a.id().starts_with("read-") && c.id().starts_with("node-"));
        let text = std::fs::read_to_string(&path).unwrap();
        for t in [&a, &b, &c] {
            assert!(!text.contains(&t.reveal()), "the file holds no token");
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let table = TokenTable::load(&path).unwrap();
        assert_eq!(table.len(), 3);
        assert!(table.authenticate(&b.reveal()).is_some());

        let dup = NewToken {
            id: Some(a.id().to_string()),
            ..new(Role::Read, &[], None)
        };
        assert!(
            create(&path, &dup)
                .unwrap_err()
                .to_string()
                .contains("already exists")
        );
        assert!(
            create(&path, &new(Role::Node, &[], None)).is_err(),
            "node needs --node"
        );
        assert!(create(&path, &new(Role::Admin, &["x"], None)).is_err());

        revoke(&path, b.id()).unwrap();
        let table = TokenTable::load(&path).unwrap();
        assert_eq!(table.len(), 2);
        assert!(table.authenticate(&b.reveal()).is_none());
        assert!(table.authenticate(&a.reveal()).is_some());
        let e = revoke(&path, b.id()).unwrap_err();
        assert!(matches!(e, TokenError::NotFound { .. }), "{e}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the rewritten file stays private");
    }
}
