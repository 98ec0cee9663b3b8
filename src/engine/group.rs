//! The run loop of one group: wait for the schedule, evaluate each rule in order, record.
//!
//! Interval groups start at a slot derived from the group key (as Prometheus staggers its
//! groups), tick with `MissedTickBehavior::Skip` so runs never overlap, and count skipped ticks.
//! An evaluation in flight is not cancelled: cancellation is checked between rules, and queries
//! are bounded by the source timeout.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::eval::{FitPool, RuleState};
use crate::config::{RuleGroup, Schedule};
use crate::exporter::{Exporter, Metrics, RuleId};
use crate::source::Source;

/// What every group shares.
pub struct Context {
    /// The data source; replaced on reload when its config changes.
    pub source: RwLock<Arc<dyn Source>>,
    /// Self-monitoring.
    pub metrics: Metrics,
    /// Where outputs go.
    pub exporter: Exporter,
    /// Bounds concurrent fits.
    pub pool: FitPool,
    /// Minimum staleness period, seconds.
    pub staleness: f64,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("staleness", &self.staleness).finish_non_exhaustive()
    }
}

/// Offset of a group's runs within its interval, stable for a given key.
pub fn slot_offset(key: &impl Hash, interval: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(hasher.finish() % nanos)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Runs `group` until `token` is cancelled, then hands back the rules' model state.
pub(crate) async fn run(
    group: RuleGroup,
    mut states: HashMap<String, RuleState>,
    ctx: Arc<Context>,
    token: CancellationToken,
) -> HashMap<String, RuleState> {
    let interval = super::schedule_interval(&group.schedule);
    let stale_after = ctx.staleness.max(2.0 * interval);
    match &group.schedule {
        Schedule::Interval(every) => {
            let period = every.get();
            let offset = slot_offset(&group.key, period).as_secs_f64();
            let now = unix_now();
            let p = period.as_secs_f64();
            let mut next = now - now.rem_euclid(p) + offset;
            if next < now {
                next += p;
            }
            let start = tokio::time::Instant::now() + Duration::from_secs_f64(next - now);
            let mut ticker = tokio::time::interval_at(start, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut last: Option<tokio::time::Instant> = None;
            loop {
                let tick = tokio::select! {
                    _ = token.cancelled() => break,
                    tick = ticker.tick() => tick,
                };
                if let Some(prev) = last {
                    let missed = ((tick - prev).as_secs_f64() / p).round() as u64;
                    if missed > 1 {
                        ctx.exporter.count_missed(&group.key, missed - 1);
                    }
                }
                last = Some(tick);
                evaluate_group(&group, &mut states, &ctx, &token, stale_after).await;
            }
        }
        Schedule::Cron(expr) => {
            // Validated when the rule file was loaded.
            let Ok(cron) = super::parse_cron(expr) else { return states };
            loop {
                let now = chrono::Utc::now();
                let Some(next) = super::next_run(&cron, &now) else { break };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                evaluate_group(&group, &mut states, &ctx, &token, stale_after).await;
                let mut skipped = 0;
                let mut at = next;
                while let Some(t) = super::next_run(&cron, &at).filter(|t| *t <= chrono::Utc::now()) {
                    skipped += 1;
                    at = t;
                }
                if skipped > 0 {
                    ctx.exporter.count_missed(&group.key, skipped);
                }
            }
        }
    }
    states
}

async fn evaluate_group(
    group: &RuleGroup,
    states: &mut HashMap<String, RuleState>,
    ctx: &Context,
    token: &CancellationToken,
    stale_after: f64,
) {
    // Read once per run: a reload may swap the source, never mid-run.
    let source = ctx.source.read().unwrap_or_else(|p| p.into_inner()).clone();
    for rule in &group.rules {
        if token.is_cancelled() {
            return;
        }
        let id = RuleId { group: group.key.clone(), rule: rule.name.clone() };
        let state = states.entry(rule.name.clone()).or_default();
        let started = unix_now();
        let began = Instant::now();
        let result = state.evaluate(rule, source.as_ref(), &ctx.metrics, &ctx.pool, started as i64, stale_after as i64).await;
        let took = began.elapsed();
        ctx.metrics.observe_evaluation(took);
        let result = match result {
            Ok(outcome) => {
                for warning in &outcome.warnings {
                    tracing::warn!(group = %group.key.name, rule = %rule.name, problem = %warning, "series not fitted");
                }
                tracing::debug!(group = %group.key.name, rule = %rule.name, series = outcome.series.len(), fits = outcome.fits, "rule evaluated");
                Ok((outcome.series, outcome.fits, state.series_count()))
            }
            Err(err) => {
                tracing::warn!(group = %group.key.name, rule = %rule.name, error = %err, "rule evaluation failed");
                Err(err.to_string())
            }
        };
        ctx.exporter.record(&id, started, took.as_secs_f64(), result, stale_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn slot_offset_is_within_interval(name in ".*", secs in 1u64..100_000) {
            let interval = Duration::from_secs(secs);
            let offset = slot_offset(&name, interval);
            prop_assert!(offset < interval);
            prop_assert_eq!(offset, slot_offset(&name, interval));
        }
    }
}
