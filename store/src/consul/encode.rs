//! Wire encodings Consul uses: base64 values in JSON, percent-encoded keys in URLs and Go
//! duration strings (`10s`, `1m30s`, `250ms`).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Serde adapter for `Option<Vec<u8>>` carried as base64 text or `null`.
pub(crate) mod b64 {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        match text {
            None => Ok(None),
            Some(t) => STANDARD
                .decode(t.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Whether a byte may appear unescaped in a URL path segment or query value.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes `s`, leaving `/` as is when `keep_slash` (KV keys map onto the path).
pub(crate) fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Formats a duration the way Go's `time.ParseDuration` reads it (whole milliseconds when
/// it is not a whole number of seconds).
pub(crate) fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Parses a Go duration string (`10s`, `1m0s`, `1h2m3.5s`, `150ms`, `0s`): the same grammar
/// as a manifest duration, so [`shoal_core::Dur`] reads it.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    s.parse::<shoal_core::Dur>().ok().map(shoal_core::Dur::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("150ms"), Some(Duration::from_millis(150)));
        assert_eq!(parse_go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("abc"), None);
    }

    #[test]
    fn keys_are_escaped_but_keep_slashes() {
        assert_eq!(percent_encode("a b/c?d", true), "a%20b/c%3Fd");
        assert_eq!(percent_encode("a/b", false), "a%2Fb");
    }
}
