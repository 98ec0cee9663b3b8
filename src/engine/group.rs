//! The run loop of one group: wait for the schedule, evaluate each rule in order, record.
//!
//! Interval groups start at a slot derived from the group key (as Prometheus staggers its
//! groups) and run at that phase; a run that overruns skips the slots it covered, which are
//! counted, so runs never overlap and never bunch up.
//! An evaluation in flight is not cancelled: cancellation is checked between rules, and queries
//! are bounded by the source timeout.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{EvalContext, FitPool, RuleState};
use crate::config::{GroupKey, RuleGroup, RuleKind, Schedule};
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
    /// The time of day that schedules and evaluations read.
    pub clock: crate::clock::Clock,
    /// The series this replica scores.
    pub shard: super::Shard,
    /// Where every evaluation's outputs are sent besides `/metrics`.
    pub remote_write: Vec<crate::remote_write::RemoteWriter>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("staleness", &self.staleness).finish_non_exhaustive()
    }
}

/// Offset of a group's runs within its interval: FNV-1a (64 bit) of the file and group name,
/// so that it is the same across restarts, builds and platforms (std's hasher promises none).
pub fn slot_offset(key: &GroupKey, interval: Duration) -> Duration {
    let text = format!("{}\u{0}{}", key.file.display(), key.name);
    let nanos = interval.as_nanos().clamp(1, u128::from(u64::MAX)) as u64;
    Duration::from_nanos(fnv1a64(text.as_bytes()) % nanos)
}

/// The 64-bit FNV-1a hash.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Runs `group` until `token` is cancelled, then hands back the rules' model state.
pub(crate) async fn run(
    group: RuleGroup,
    mut states: HashMap<String, RuleState>,
    ctx: Arc<Context>,
    token: CancellationToken,
) -> HashMap<String, RuleState> {
    let stale_after = group.schedule.stale_after(ctx.staleness);
    load_models(&group, &mut states, &ctx, stale_after).await;
    match &group.schedule {
        Schedule::Interval(every) => {
            let period = every.get();
            let offset = slot_offset(&group.key, period).as_secs_f64();
            let now = ctx.clock.now();
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
        Schedule::Cron(cron) => loop {
            let now = ctx.clock.utc();
            let Some(next) = cron.next_after(&now) else { break };
            let wait = (next - now).to_std().unwrap_or_default();
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            evaluate_group(&group, &mut states, &ctx, &token, stale_after).await;
            let mut skipped = 0;
            let mut at = next;
            while let Some(t) = cron.next_after(&at).filter(|t| *t <= ctx.clock.utc()) {
                skipped += 1;
                at = t;
            }
            if skipped > 0 {
                ctx.exporter.count_missed(&group.key, skipped);
            }
        },
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
        let started = ctx.clock.now();
        if let Err(err) = state.load_model(rule, anomaly).await {
            let id = RuleId { group: group.key.clone(), rule: rule.name.clone() };
            ctx.exporter.record(&id, started, ctx.clock.now() - started, Err(err.to_string()), stale_after);
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
        let started = ctx.clock.now();
        let began = Instant::now();
        let eval = EvalContext {
            source: source.as_ref(),
            metrics: Some(&ctx.metrics),
            pool: &ctx.pool,
            now: started as i64,
            stale_secs: stale_after as i64,
            shard: ctx.shard,
        };
        let result = state.evaluate(rule, &eval).await;
        let took = began.elapsed();
        ctx.metrics.observe_evaluation(took);
        let result = match result {
            Ok(outcome) => {
                if !ctx.remote_write.is_empty() {
                    let samples = crate::exporter::output_samples(&outcome.series);
                    for writer in &ctx.remote_write {
                        writer.enqueue(&samples, (started * 1000.0) as i64);
                    }
                }
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
    use crate::clock::Clock;
    use crate::config::{Duration as PwDuration, GroupKey, Rule};
    use crate::engine::testing::FakeSource;
    use proptest::prelude::*;

    /// Answers every query after 2.5 s: each run of a 1 s group overruns two and a half ticks.
    fn slow() -> FakeSource {
        FakeSource { delay: Duration::from_millis(2500), ..Default::default() }
    }

    /// A context over `source` that records into `exporter`.
    fn context(exporter: &Exporter) -> Arc<Context> {
        crate::engine::testing::context(slow(), exporter, Clock::default())
    }

    fn group(text: &str) -> RuleGroup {
        crate::config::rules::parse(std::path::Path::new("r.yaml"), text, &Default::default()).unwrap().remove(0)
    }

    /// Runs `group` for `how_long` of (paused) time, then stops it and returns what it exported.
    async fn run_for(group: &RuleGroup, ctx: Arc<Context>, how_long: Duration) -> Arc<crate::exporter::Snapshot> {
        let interval = group.schedule.period_secs();
        ctx.exporter.set_group(group, interval, &[]);
        let token = CancellationToken::new();
        let handle = tokio::spawn(run(group.clone(), HashMap::new(), ctx.clone(), token.clone()));
        tokio::time::sleep(how_long).await;
        token.cancel();
        handle.await.unwrap();
        ctx.exporter.load()
    }

    /// A cron group runs at its cron times and nowhere else, on the clock the context reads.
    #[tokio::test(start_paused = true)]
    async fn cron_groups_run_at_their_times() {
        let exporter = Exporter::default();
        let source = FakeSource::default();
        // 2026-01-01T00:00:07Z
        let start = 1_767_225_607;
        let ctx = crate::engine::testing::context(source.clone(), &exporter, Clock::following_tokio(start as f64));
        let group = group("groups: [{ name: g, cron: '*/10 * * * * *', rules: [{ forecast: r, expr: up, step: 1s, history: 20s, model: { type: linear } }] }]");
        let snapshot = run_for(&group, ctx, Duration::from_secs(55)).await;
        // runs at :10, :20, ..., :60 (each query ends at its run, aligned to the 1 s step)
        let ends: Vec<i64> = source.queries_of("up").iter().map(|q| q.end - start).collect();
        assert_eq!(ends, vec![3, 13, 23, 33, 43, 53]);
        let status = &snapshot.rules.values().next().unwrap().status;
        assert_eq!(status.evaluations, 6);
        assert_eq!(status.last_evaluation, Some((start + 53) as f64));
        assert_eq!(snapshot.groups[&group.key].missed, 0);
    }

    /// The longest interval a rule file can hold schedules without overflowing: the group waits.
    #[tokio::test(start_paused = true)]
    async fn a_ten_year_interval_waits_without_panicking() {
        let exporter = Exporter::default();
        let ctx = crate::engine::testing::context(FakeSource::default(), &exporter, Clock::following_tokio(1_767_225_600.0));
        let group = group("groups: [{ name: g, interval: 3650d, rules: [{ forecast: r, expr: up, model: { type: linear } }] }]");
        let snapshot = run_for(&group, ctx, Duration::from_secs(86_400)).await;
        assert_eq!(snapshot.rules.values().next().unwrap().status.evaluations, 0);
    }

    /// A cron run that overruns the next cron times skips them and counts them.
    #[tokio::test(start_paused = true)]
    async fn overrunning_cron_runs_skip_and_count() {
        let exporter = Exporter::default();
        let ctx = crate::engine::testing::context(slow(), &exporter, Clock::following_tokio(1_767_225_600.0));
        let group = group("groups: [{ name: g, cron: '* * * * * *', rules: [{ forecast: r, expr: up, step: 1s, history: 20s, model: { type: linear } }] }]");
        let snapshot = run_for(&group, ctx, Duration::from_millis(20_500)).await;
        let evaluations = snapshot.rules.values().next().unwrap().status.evaluations;
        // runs start at 1 s, 4 s, 7 s, ...: each takes 2.5 s and covers two more cron times
        assert_eq!(evaluations, 7, "runs in 20.5 s");
        assert_eq!(snapshot.groups[&group.key].missed, 2 * evaluations);
    }

    #[tokio::test(start_paused = true)]
    async fn overrunning_runs_skip_ticks_and_count_them() {
        let exporter = Exporter::default();
        let ctx = context(&exporter);
        let rule: Rule = group("groups: [{ name: g, rules: [{ forecast: r, expr: up, model: { type: linear } }] }]").rules.remove(0);
        let group = RuleGroup {
            key: GroupKey { file: "r.yaml".into(), name: "g".into() },
            schedule: Schedule::Interval(PwDuration::from_secs(1)),
            rules: vec![rule],
        };
        let snapshot = run_for(&group, ctx, Duration::from_secs(20)).await;
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
        let group = group(text);
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

    #[test]
    fn fnv1a64_reference_values() {
        // from the FNV reference implementation's test vectors
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn slot_offsets_are_fixed_by_the_key() {
        let key = GroupKey { file: "rules/node.yaml".into(), name: "node".into() };
        // fnv1a64("rules/node.yaml\0node") modulo the interval, the same on every build
        let hash = fnv1a64(b"rules/node.yaml\0node");
        assert_eq!(slot_offset(&key, Duration::from_secs(60)), Duration::from_nanos(hash % 60_000_000_000));
        let other = GroupKey { name: "node2".into(), ..key.clone() };
        assert_ne!(slot_offset(&key, Duration::from_secs(60)), slot_offset(&other, Duration::from_secs(60)));
    }

    proptest! {
        #[test]
        fn slot_offset_is_within_interval(name in ".*", secs in 1u64..100_000) {
            let interval = Duration::from_secs(secs);
            let key = GroupKey { file: "r.yaml".into(), name };
            let offset = slot_offset(&key, interval);
            prop_assert!(offset < interval);
            prop_assert_eq!(offset, slot_offset(&key, interval));
        }
    }
}
