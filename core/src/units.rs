//! Human-friendly units used in manifests: durations (`500ms`, `5s`, `1m30s`) and byte sizes
//! (`64Mi`, `1Gi`, `512M`, or a plain number of bytes).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a unit string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration such as `500ms`, `5s`, `1m`, `1h30m`.
    #[error("invalid duration {0:?}: expected a number with a unit, e.g. 500ms, 5s, 1m, 1h30m")]
    Duration(String),
    /// Longer than any duration Shoal accepts ([`Dur::MAX`]).
    #[error("duration {0:?} is too long: at most 87600h (ten years)")]
    TooLong(String),
    /// Not a size such as `64Mi`, `1Gi`, `512M`, `1024`.
    #[error(
        "invalid size {0:?}: expected bytes or a number with a unit (K, M, G, Ki, Mi, Gi, ...)"
    )]
    Size(String),
}

/// A duration written as `500ms`, `5s`, `1m`, `1h30m` (Go/Docker style). `0` and `0s` are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    /// The longest duration a manifest may give (ten years): every sum and product the
    /// controller and agent make of a few of them stays far from overflowing.
    pub const MAX: Dur = Dur(Duration::from_secs(10 * 365 * 24 * 3600));

    /// Builds a duration from whole seconds.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    /// Builds a duration from milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    /// The wrapped [`Duration`].
    pub const fn get(self) -> Duration {
        self.0
    }
    /// Whether the duration is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
    /// Whole milliseconds.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        let err = || UnitError::Duration(s.to_string());
        if t.is_empty() {
            return Err(err());
        }
        let mut total = 0f64;
        let mut rest = t;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(err)?;
            if num_end == 0 {
                return Err(err());
            }
            let n: f64 = rest[..num_end].parse().map_err(|_| err())?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let mult = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(err()),
            };
            total += n * mult;
            rest = &rest[unit_end..];
        }
        if !total.is_finite() || total < 0.0 {
            return Err(err());
        }
        if total > Dur::MAX.0.as_secs_f64() {
            return Err(UnitError::TooLong(s.to_string()));
        }
        Ok(Dur(Duration::from_secs_f64(total)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let mut s = (ms / 1000) as u64;
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$",
            "description": "A duration such as 500ms, 5s, 1m, 1h30m",
            "examples": ["5s", "500ms", "1m"]
        })
    }
}

/// A size in bytes, written `64Mi`, `1Gi`, `512M`, `1.5G` or a plain byte count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let err = || UnitError::Size(s.to_string());
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        if split == 0 {
            return Err(err());
        }
        let n: f64 = t[..split].parse().map_err(|_| err())?;
        let mult: u64 = match t[split..].trim() {
            "" | "b" | "B" => 1,
            "k" | "K" | "kB" | "KB" => 1_000,
            "M" | "MB" => 1_000_000,
            "G" | "GB" => 1_000_000_000,
            "T" | "TB" => 1_000_000_000_000,
            "Ki" | "KiB" => 1 << 10,
            "Mi" | "MiB" => 1 << 20,
            "Gi" | "GiB" => 1 << 30,
            "Ti" | "TiB" => 1 << 40,
            _ => return Err(err()),
        };
        let v = n * mult as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(v.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?\\s*(b|B|k|K|kB|KB|M|MB|G|GB|T|TB|Ki|KiB|Mi|MiB|Gi|GiB|Ti|TiB)?$"}
            ],
            "description": "A size in bytes: 64Mi, 1Gi, 512M or a number of bytes",
            "examples": ["64Mi", "1Gi"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A huge duration is refused with a reason instead of panicking in `Duration`.
    #[test]
    fn huge_durations_are_refused_not_panicked_on() {
        for s in [
            "99999999999999999999s",
            "5000000000000000000s",
            "87601h",
            "1000000000m",
        ] {
            assert_eq!(
                s.parse::<Dur>(),
                Err(UnitError::TooLong(s.to_string())),
                "{s}"
            );
        }
        assert_eq!("87600h".parse::<Dur>(), Ok(Dur::MAX));
        let err: Result<crate::manifest::Healthcheck, _> =
            yaml_serde::from_str("test: [CMD, x]\ninterval: 99999999999999999999s\n");
        assert!(err.unwrap_err().to_string().contains("too long"));
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!("5s".parse::<Dur>().unwrap(), Dur::secs(5));
        assert_eq!("500ms".parse::<Dur>().unwrap(), Dur::millis(500));
        assert_eq!("1m30s".parse::<Dur>().unwrap(), Dur::secs(90));
        assert_eq!("0".parse::<Dur>().unwrap(), Dur::default());
        assert_eq!(Dur::secs(90).to_string(), "1m30s");
        assert_eq!(Dur::millis(1500).to_string(), "1500ms");
        assert!("5".parse::<Dur>().is_err());
        assert!("5 sec".parse::<Dur>().is_err());
        assert!("fast".parse::<Dur>().is_err());
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("64Mi".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("1Gi".parse::<ByteSize>().unwrap().to_string(), "1Gi");
        assert_eq!("512M".parse::<ByteSize>().unwrap(), ByteSize(512_000_000));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }
}
