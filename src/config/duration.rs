//! Durations as Prometheus users write them: `90s`, `5m`, `1h30m`, `14d`, `1w`.
//!
//! Parsing is humantime's; the original text is kept so that a horizon label reads exactly as the
//! user wrote it (`horizon="1h"`).

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{de, Deserialize, Deserializer};

/// A positive duration parsed from a Prometheus/humantime string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    value: StdDuration,
    text: String,
}

/// A duration that does not parse, or is zero.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    /// Not a duration.
    #[error("invalid duration {text:?}: {cause}")]
    Invalid {
        /// What was given.
        text: String,
        /// humantime's reason.
        cause: humantime::DurationError,
    },
    /// Zero.
    #[error("duration {text:?} must be greater than zero")]
    Zero {
        /// What was given.
        text: String,
    },
    /// Longer than any schedule, history or horizon can use.
    #[error("duration {text:?} is longer than 10 years")]
    TooLong {
        /// What was given.
        text: String,
    },
}

/// The longest duration accepted: far beyond any useful interval, history or horizon, and small
/// enough that seconds, nanoseconds and instants computed from it never overflow.
const MAX_SECS: u64 = 10 * 365 * 86_400;

impl Duration {
    /// Parses `text`; zero and negative durations are rejected.
    ///
    /// # Errors
    /// What is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let trimmed = text.trim();
        let value = humantime::parse_duration(trimmed).map_err(|cause| DurationError::Invalid { text: trimmed.to_string(), cause })?;
        if value.is_zero() {
            return Err(DurationError::Zero { text: trimmed.to_string() });
        }
        if value.as_secs() > MAX_SECS {
            return Err(DurationError::TooLong { text: trimmed.to_string() });
        }
        Ok(Self { value, text: trimmed.to_string() })
    }

    /// A duration from a number of seconds, shown in Prometheus's compact form.
    pub fn from_secs(secs: u64) -> Self {
        let value = StdDuration::from_secs(secs);
        Self { text: humantime::format_duration(value).to_string().replace(' ', ""), value }
    }

    /// The duration as a std `Duration`.
    pub fn get(&self) -> StdDuration {
        self.value
    }

    /// Whole seconds (sub-second parts are ignored: steps and windows are second-aligned).
    pub fn secs(&self) -> i64 {
        self.value.as_secs() as i64
    }

    /// The text as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_prometheus_forms() {
        struct Case {
            input: &'static str,
            secs: u64,
        }
        let cases = [
            Case { input: "90s", secs: 90 },
            Case { input: "5m", secs: 300 },
            Case { input: "1h30m", secs: 5400 },
            Case { input: "14d", secs: 14 * 86400 },
            Case { input: "1w", secs: 7 * 86400 },
        ];
        for case in cases {
            let d = Duration::parse(case.input).unwrap();
            assert_eq!(d.get().as_secs(), case.secs, "{}", case.input);
            assert_eq!(d.as_str(), case.input);
        }
    }

    #[test]
    fn rejects_zero_and_garbage() {
        assert!(matches!(Duration::parse("0s"), Err(DurationError::Zero { .. })));
        // refit: 9223372036854775807s overflowed the seconds arithmetic
        assert!(matches!(Duration::parse("9223372036854775807s"), Err(DurationError::TooLong { .. })));
        assert!(matches!(Duration::parse("11y"), Err(DurationError::TooLong { .. })));
        assert_eq!(Duration::parse("3650d").unwrap().secs(), 10 * 365 * 86_400);
        assert!(Duration::parse("0s").unwrap_err().to_string().contains("greater than zero"));
        assert!(Duration::parse("5 parsecs").unwrap_err().to_string().contains("invalid duration \"5 parsecs\""));
        assert!(Duration::parse("").is_err());
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(secs in 1u64..100_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(Duration::parse(d.as_str()).unwrap().get().as_secs(), secs);
        }
    }
}
