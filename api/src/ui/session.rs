//! Dashboard sessions: a browser signs in once with an API token and then carries only an
//! opaque session cookie (HttpOnly, SameSite=Strict, `Path=/ui`). The server keeps, per
//! session, the token's ID (never the token), a per-session CSRF token and an expiry; the
//! principal is looked up in the token table on every request, so a revoked token ends its
//! sessions at once. Sessions live in the API process's memory: a restarted API asks the
//! browser to sign in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const COOKIE: &str = "shoal_session";

/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept at once; the oldest goes when a new one would exceed it.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// ID of the token it signed in with.
    pub token_id: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// The sessions of one API process, keyed by the SHA-256 of their cookie value.
#[derive(Debug)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    local_csrf: String,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn hash(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    /// No sessions yet, and a fresh CSRF token for an API without tokens.
    pub fn new() -> Self {
        Sessions {
            by_hash: Mutex::new(HashMap::new()),
            local_csrf: random_hex(),
        }
    }

    /// The CSRF token forms carry when the API has no tokens (one per process).
    pub fn local_csrf(&self) -> &str {
        &self.local_csrf
    }

    /// Opens a session for `token_id`; returns the cookie value (shown only to the browser).
    pub fn open(&self, token_id: &str) -> String {
        let cookie = random_hex();
        let now = Instant::now();
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            hash(&cookie),
            Session {
                token_id: token_id.to_string(),
                csrf: random_hex(),
                expires: now + LIFETIME,
            },
        );
        cookie
    }

    /// The live session of a cookie value.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&hash(cookie))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends the session of a cookie value.
    pub fn close(&self, cookie: &str) {
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&hash(cookie));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_its_own_csrf_token_and_ends_on_close() {
        let s = Sessions::default();
        let a = s.open("t1");
        let b = s.open("t1");
        let (sa, sb) = (s.get(&a).unwrap(), s.get(&b).unwrap());
        assert_eq!(sa.token_id, "t1");
        assert_ne!(sa.csrf, sb.csrf);
        assert!(sa.csrf_matches(&sa.csrf.clone()) && !sa.csrf_matches(&sb.csrf));
        assert!(s.get("not-a-session").is_none());
        s.close(&a);
        assert!(s.get(&a).is_none() && s.get(&b).is_some());
    }
}
