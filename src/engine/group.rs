//! The run loop of one group: wait for the schedule, evaluate each rule in order, record.
//!
//! Interval groups start at a slot derived from the group key (as Prometheus staggers its
//! groups) and run at that phase; a run that overruns skips the slots it covered, which are
//! counted, so runs never overlap and never bunch up.
//! An evaluation in flight is not cancelled: cancellation is checked between rules, and queries
//! are bounded by the source timeout.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::eval::FitPool;
use super::RuleState;
use crate::config::{RuleGroup, RuleKind, Schedule};
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
    load_models(&group, &mut states, &ctx, stale_after).await;
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
            let mut slot = tokio::time::Instant::now() + Duration::from_secs_f64(next - now);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep_until(slot) => {}
                }
                evaluate_group(&group, &mut states, &ctx, &token, stale_after).await;
                // Slots that passed while this run went on are skipped, not run late or twice
                // (tokio's MissedTickBehavior::Skip would fire one late tick at once).
                let skipped = ((tokio::time::Instant::now() - slot).as_secs_f64() / p).floor() as u32;
                if skipped > 0 {
                    ctx.exporter.count_missed(&group.key, u64::from(skipped));
                }
                slot += period * (skipped + 1);
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

/// Loads the model of every detector rule as the group starts, that is when its rules load, so
/// that a broken model shows in `/api/v1/rules` and the failure counter at once, not at the
/// rule's first run (hours away for some cron groups). A rule kept over a reload keeps its model
/// unless the file changed.
async fn load_models(group: &RuleGroup, states: &mut HashMap<String, RuleState>, ctx: &Context, stale_after: f64) {
    for rule in &group.rules {
        let RuleKind::Anomaly(anomaly) = &rule.kind else { continue };
        let RuleState::Detector(state) = states.entry(rule.name.clone()).or_insert_with(|| RuleState::for_rule(rule)) else { continue };
        let started = unix_now();
        if let Err(err) = state.load_model(rule, anomaly).await {
            let id = RuleId { group: group.key.clone(), rule: rule.name.clone() };
            ctx.exporter.record(&id, started, unix_now() - started, Err(err.to_string()), stale_after);
        }
    }
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
        let state = states.entry(rule.name.clone()).or_insert_with(|| RuleState::for_rule(rule));
        let started = unix_now();
        let began = Instant::now();
        let result = state.evaluate(rule, source.as_ref(), &ctx.metrics, &ctx.pool, started as i64, stale_after as i64).await;
        let took = began.elapsed();
        ctx.metrics.observe_evaluation(took);
        let result = match result {
            Ok(outcome) => {
                for warning in &outcome.warnings {
                    tracing::warn!(group = %group.key.name, rule = %rule.name, problem = %warning, "series skipped or not refitted");
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
    use crate::config::{Duration as PwDuration, GroupKey, Rule};
    use crate::source::{self, Series};
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    /// Answers every query after 2.5 s: each run overruns two and a half 1 s ticks.
    struct Slow;

    impl Source for Slow {
        fn query_range<'a>(&'a self, _: &'a str, _: i64, _: i64, _: i64) -> BoxFuture<'a, Result<Vec<Series>, source::Error>> {
            async { tokio::time::sleep(Duration::from_millis(2500)).await; Ok(vec![]) }.boxed()
        }
    }

    /// A context over the `Slow` source that records into `exporter`.
    fn context(exporter: &Exporter) -> Arc<Context> {
        Arc::new(Context {
            source: RwLock::new(Arc::new(Slow)),
            metrics: Metrics::register(&mut Registry::default()),
            exporter: exporter.clone(),
            pool: FitPool::new(1),
            staleness: 300.0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn overrunning_runs_skip_ticks_and_count_them() {
        let exporter = Exporter::default();
        let ctx = context(&exporter);
        let rule: Rule = crate::config::rules::parse(std::path::Path::new("r.yaml"), "groups: [{ name: g, rules: [{ forecast: r, expr: up, model: { type: linear } }] }]", &Default::default())
            .unwrap()
            .remove(0)
            .rules
            .remove(0);
        let group = RuleGroup { key: GroupKey { file: "r.yaml".into(), name: "g".into() }, schedule: Schedule::Interval(PwDuration::from_secs(1)), rules: vec![rule] };
        exporter.set_group(&group, 1.0, &[]);
        let token = CancellationToken::new();
        let handle = tokio::spawn(run(group.clone(), HashMap::new(), ctx, token.clone()));
        tokio::time::sleep(Duration::from_secs(20)).await;
        token.cancel();
        handle.await.unwrap();
        let snapshot = exporter.load();
        let evaluations = snapshot.rules.values().next().unwrap().status.evaluations;
        let missed = snapshot.groups[&group.key].missed;
        assert!((6..=7).contains(&evaluations), "{evaluations} runs in 20 s of 3 s each");
        assert_eq!(missed, 2 * evaluations, "each run covered two more slots, which were skipped");
    }

    #[tokio::test]
    async fn a_broken_model_shows_when_the_rule_loads_not_at_its_first_run() {
        let exporter = Exporter::default();
        let ctx = context(&exporter);
        // a yearly cron: its first run is months away
        let text = "groups: [{ name: g, cron: '0 0 1 1 *', rules: [{ anomaly: ae, expr: up, detector: { type: autoencoder, model_file: missing.onnx } }] }]";
        let group = crate::config::rules::parse(std::path::Path::new("r.yaml"), text, &Default::default()).unwrap().remove(0);
        exporter.set_group(&group, 1.0, &[]);
        let token = CancellationToken::new();
        let handle = tokio::spawn(run(group.clone(), HashMap::new(), ctx, token.clone()));
        let id = RuleId { group: group.key.clone(), rule: "ae".into() };
        let status = async {
            loop {
                let status = exporter.load().rules[&id].status.clone();
                if status.evaluations > 0 {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let status = tokio::time::timeout(Duration::from_secs(10), status).await.expect("the load failure is recorded at once");
        assert_eq!((status.health, status.failures), (crate::exporter::Health::Err, 1));
        assert!(status.last_error.as_deref().is_some_and(|e| e.contains("model file missing.onnx")), "{status:?}");
        token.cancel();
        let states = handle.await.unwrap();
        assert!(matches!(states["ae"], RuleState::Detector(_)));
    }

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
