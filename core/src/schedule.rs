//! Job schedules: standard 5-field cron (`*/5 * * * *`), the `@hourly`-style names, and
//! `@every 30s`, read in an IANA time zone (UTC by default).
//!
//! Cron patterns are parsed by the `croner` crate and zones come from `chrono-tz`. `@every D`
//! ticks at the multiples of `D` since the Unix epoch, so every controller computes the same
//! ticks. A schedule only answers "which ticks fall in this interval"; what to do with them
//! (start a run, skip it, catch up on at most one) is the job reconcile's business.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::model::Timestamp;
use crate::units::Dur;

/// Why a schedule or time zone is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule does not parse.
    #[error("invalid schedule {expr:?}: {why}")]
    Invalid {
        /// The schedule as written.
        expr: String,
        /// What is wrong.
        why: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone {0:?}: expected an IANA name such as Europe/Paris or UTC")]
    Zone(String),
}

/// The `@` names accepted besides `@every`, and the cron pattern each stands for.
const NAMES: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `@every D`: the multiples of `D` since the epoch.
    Every(Duration),
    /// A cron pattern in a zone.
    Cron {
        /// The pattern.
        cron: Box<Cron>,
        /// The zone it is read in.
        zone: Tz,
    },
}

impl Schedule {
    /// Parses `expr` in `zone` (UTC when `None`).
    pub fn parse(expr: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = parse_zone(zone)?;
        let invalid = |why: String| ScheduleError::Invalid {
            expr: expr.to_string(),
            why,
        };
        let text = expr.trim();
        if let Some(rest) = text.strip_prefix("@every") {
            let d: Dur = rest
                .trim()
                .parse()
                .map_err(|e| invalid(format!("@every takes a duration such as 30s or 5m: {e}")))?;
            if d.get() < Duration::from_secs(1) {
                return Err(invalid("@every needs at least 1s".into()));
            }
            return Ok(Schedule::Every(d.get()));
        }
        let pattern = if text.starts_with('@') {
            NAMES
                .iter()
                .find(|(n, _)| *n == text)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    invalid(
                        "expected @yearly, @monthly, @weekly, @daily, @hourly or @every DURATION"
                            .into(),
                    )
                })?
        } else {
            let fields = text.split_whitespace().count();
            if fields != 5 {
                return Err(invalid(format!(
                    "a cron schedule has 5 fields (minute hour day-of-month month day-of-week), not {fields}"
                )));
            }
            text
        };
        let cron = Cron::from_str(pattern).map_err(|e| invalid(e.to_string()))?;
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            zone,
        })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => {
                let step = (d.as_millis() as u64).max(1);
                Some(Timestamp((t.millis() / step + 1) * step))
            }
            Schedule::Cron { cron, zone } => {
                let at = to_zoned(t, zone)?;
                let next = cron.find_next_occurrence(&at, false).ok()?;
                from_zoned(&next)
            }
        }
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => {
                let step = (d.as_millis() as u64).max(1);
                Some(Timestamp(t.millis() / step * step))
            }
            Schedule::Cron { cron, zone } => {
                let at = to_zoned(t, zone)?;
                let prev = cron.find_previous_occurrence(&at, true).ok()?;
                from_zoned(&prev)
            }
        }
    }
}

/// Parses an IANA zone name (UTC when `None`).
pub fn parse_zone(zone: Option<&str>) -> Result<Tz, ScheduleError> {
    match zone {
        None => Ok(Tz::UTC),
        Some(z) => z
            .parse::<Tz>()
            .map_err(|_| ScheduleError::Zone(z.to_string())),
    }
}

fn to_zoned(t: Timestamp, zone: &Tz) -> Option<DateTime<Tz>> {
    let utc = Utc
        .timestamp_millis_opt(i64::try_from(t.millis()).ok()?)
        .single()?;
    Some(utc.with_timezone(zone))
}

fn from_zoned(t: &DateTime<Tz>) -> Option<Timestamp> {
    u64::try_from(t.timestamp_millis()).ok().map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: u64 = 1_767_225_600_000;

    #[test]
    fn every_ticks_on_multiples_of_its_period() {
        let s = Schedule::parse("@every 30s", None).unwrap();
        let t = Timestamp(NEW_YEAR + 10_000);
        assert_eq!(s.next_after(t), Some(Timestamp(NEW_YEAR + 30_000)));
        assert_eq!(s.last_at_or_before(t), Some(Timestamp(NEW_YEAR)));
        assert!(Schedule::parse("@every 0s", None).is_err());
        assert!(Schedule::parse("@every soon", None).is_err());
    }

    #[test]
    fn cron_and_names_tick_in_their_zone() {
        let s = Schedule::parse("*/5 * * * *", None).unwrap();
        let t = Timestamp(NEW_YEAR + 61_000);
        assert_eq!(s.next_after(t), Some(Timestamp(NEW_YEAR + 300_000)));
        assert_eq!(s.last_at_or_before(t), Some(Timestamp(NEW_YEAR)));
        let h = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            h.next_after(Timestamp(NEW_YEAR)),
            Some(Timestamp(NEW_YEAR + 3_600_000))
        );
        // Midnight in Paris is 23:00 UTC in winter.
        let d = Schedule::parse("@daily", Some("Europe/Paris")).unwrap();
        assert_eq!(
            d.next_after(Timestamp(NEW_YEAR)),
            Some(Timestamp(NEW_YEAR + 23 * 3_600_000))
        );
    }

    #[test]
    fn bad_schedules_and_zones_say_why() {
        let e = Schedule::parse("* * * *", None).unwrap_err().to_string();
        assert!(e.contains("5 fields"), "{e}");
        let e = Schedule::parse("61 * * * *", None).unwrap_err().to_string();
        assert!(e.contains("invalid schedule"), "{e}");
        let e = Schedule::parse("@often", None).unwrap_err().to_string();
        assert!(e.contains("@hourly"), "{e}");
        let e = Schedule::parse("@daily", Some("Mars/Olympus"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }
}
