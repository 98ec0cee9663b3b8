//! Wall-clock time as the engine and the exporter read it: the system's, or one that tests set,
//! so that they control both when runs happen and what time they see.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// Where the engine reads the time of day.
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Always reads this time (Unix seconds).
    Fixed(f64),
    /// Reads `wall` (Unix seconds) when tokio's clock reads `at`, and advances with tokio's
    /// clock, which tests pause and advance.
    Tokio {
        /// Unix seconds at `at`.
        wall: f64,
        /// The tokio instant at which the clock read `wall`.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `wall` now and follows tokio's clock from here.
    pub fn following_tokio(wall: f64) -> Self {
        Self::Tokio { wall, at: tokio::time::Instant::now() }
    }

    /// Unix seconds.
    pub fn now(&self) -> f64 {
        match self {
            Self::System => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            Self::Fixed(now) => *now,
            Self::Tokio { wall, at } => wall + at.elapsed().as_secs_f64(),
        }
    }

    /// The time as a UTC date, for cron schedules.
    pub fn utc(&self) -> DateTime<Utc> {
        let now = self.now();
        DateTime::from_timestamp(now.floor() as i64, ((now - now.floor()) * 1e9) as u32).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time() {
        let clock = Clock::following_tokio(1_700_000_000.0);
        assert_eq!(clock.now(), 1_700_000_000.0);
        tokio::time::advance(std::time::Duration::from_millis(90_500)).await;
        assert_eq!(clock.now(), 1_700_000_090.5);
        assert_eq!(clock.utc().to_rfc3339(), "2023-11-14T22:14:50.500+00:00");
    }
}
