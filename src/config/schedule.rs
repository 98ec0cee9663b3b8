//! When a group runs: every `interval`, at a phase of its own, or on a cron expression in UTC.
//!
//! A cron expression is parsed once, when its rule file loads; the engine only asks for the
//! next run.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use super::Duration;

/// How a group is scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every `interval`, at a phase derived from the group key.
    Interval(Duration),
    /// On a cron expression (5 fields, or 6 with seconds), in UTC.
    Cron(Box<CronSchedule>),
}

impl Schedule {
    /// Seconds between runs (for cron: the longest gap between runs over the next eight days).
    pub fn period_secs(&self) -> f64 {
        match self {
            Self::Interval(d) => d.get().as_secs_f64(),
            Self::Cron(cron) => cron.longest_gap(Utc::now()).unwrap_or(60.0),
        }
    }

    /// How long outputs stay exported without a refresh: `staleness`, and at least two periods,
    /// so that one late run never makes them blink.
    pub fn stale_after(&self, staleness: f64) -> f64 {
        staleness.max(2.0 * self.period_secs())
    }
}

/// A cron expression that cannot schedule a group.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// croner refused it.
    #[error("invalid cron {text:?}: {cause}")]
    Invalid {
        /// The expression.
        text: String,
        /// croner's reason.
        cause: croner::errors::CronError,
    },
    /// More than 6 fields (croner would read a seventh as a year).
    #[error("invalid cron {0:?}: 5 fields, or 6 with seconds first")]
    Fields(String),
    /// No date matches it (`0 0 30 2 *`).
    #[error("cron {0:?} never fires")]
    Never(String),
}

/// A parsed cron expression; two are equal when their text is.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    text: String,
    cron: Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronSchedule {}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl CronSchedule {
    /// Parses a cron expression of 5 fields, or 6 with seconds first.
    ///
    /// # Errors
    /// croner's description of what is wrong.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        if text.split_whitespace().count() > 6 {
            return Err(CronError::Fields(text.to_string()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|cause| CronError::Invalid { text: text.to_string(), cause })?;
        let schedule = Self { text: text.to_string(), cron };
        // croner gives up after searching some years ahead: a date that never comes.
        if schedule.next_after(&Utc::now()).is_none() {
            return Err(CronError::Never(text.to_string()));
        }
        Ok(schedule)
    }

    /// The next run strictly after `after`.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(after, false).ok()
    }

    /// The longest gap between runs over the eight days after `from` (at most 20,000 runs), in
    /// seconds: the period that staleness must cover (a weekday-only or office-hours schedule
    /// has night and weekend gaps, whenever it is loaded).
    pub fn longest_gap(&self, from: DateTime<Utc>) -> Option<f64> {
        let mut at = self.next_after(&from)?;
        let horizon = at + chrono::Duration::days(8);
        let mut longest: Option<f64> = None;
        for _ in 0..20_000 {
            if at > horizon {
                break;
            }
            let Some(next) = self.next_after(&at) else { break };
            let gap = (next - at).num_milliseconds() as f64 / 1000.0;
            longest = Some(longest.map_or(gap, |l: f64| l.max(gap)));
            at = next;
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str) -> CronSchedule {
        CronSchedule::parse(text).unwrap()
    }

    #[test]
    fn cron_with_five_or_six_fields() {
        let now = Utc::now();
        assert_eq!(cron("*/5 * * * *").longest_gap(now), Some(300.0));
        assert_eq!(cron("*/10 * * * * *").longest_gap(now), Some(10.0));
        assert_eq!(Schedule::Cron(Box::new(cron("0 * * * *"))).period_secs(), 3600.0);
        assert_eq!(cron("0 9 * * 1-5").longest_gap(now), Some(3.0 * 86400.0), "the weekend gap");
        // frequent runs in office hours: the gap is the weekend, not five minutes
        let gap = cron("*/5 9-17 * * 1-5").longest_gap(now).unwrap();
        assert!(gap > 2.0 * 86400.0, "{gap}");
        let err = CronSchedule::parse("61 * * * *").unwrap_err().to_string();
        assert!(err.starts_with("invalid cron \"61 * * * *\": "), "{err}");
        assert!(matches!(CronSchedule::parse("0 0 30 2 *"), Err(CronError::Never(_))));
        assert!(matches!(CronSchedule::parse("0 0 31 4 *"), Err(CronError::Never(_))));
        assert!(CronSchedule::parse("0 0 29 2 *").is_ok(), "leap days come");
        assert!(matches!(CronSchedule::parse("* * * * * * *"), Err(CronError::Fields(_))));
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:02:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(cron("*/5 * * * *").next_after(&at).unwrap().to_rfc3339(), "2026-01-01T00:05:00+00:00");
        assert_eq!(cron("*/5 * * * *"), cron("*/5 * * * *"));
        assert_ne!(cron("*/5 * * * *"), cron("*/5 * * * * *"));
    }

    #[test]
    fn staleness_is_the_longer_of_the_setting_and_two_periods() {
        let every = |secs| Schedule::Interval(Duration::from_secs(secs));
        let cases = [
            (300.0, every(15), 300.0),
            (300.0, every(150), 300.0),
            (300.0, every(151), 302.0),
            (300.0, every(3600), 7200.0),
            (300.0, Schedule::Cron(Box::new(cron("*/5 * * * *"))), 600.0),
            (60.0, Schedule::Cron(Box::new(cron("*/10 * * * * *"))), 60.0),
            (300.0, Schedule::Cron(Box::new(cron("0 * * * *"))), 7200.0),
            // weekdays at 9: the weekend gap, three days, twice
            (300.0, Schedule::Cron(Box::new(cron("0 9 * * 1-5"))), 6.0 * 86400.0),
        ];
        for (staleness, schedule, expected) in cases {
            assert_eq!(schedule.stale_after(staleness), expected, "{staleness} s, {schedule:?}");
        }
    }
}
