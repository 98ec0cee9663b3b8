//! `RuleManager`: the running groups, and reload as Prometheus's `rules/manager.go` `Update` does it.
//!
//! A group equal to its running version keeps running untouched. A changed group is stopped,
//! hands back its models, and the new version starts with the models of every rule whose
//! definition did not change. A removed group is stopped and its outputs removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::group::{self, Context};
use super::RuleState;
use crate::config::{GroupKey, RuleGroup};

struct Running {
    group: RuleGroup,
    token: CancellationToken,
    handle: JoinHandle<HashMap<String, RuleState>>,
}

/// Owns the group tasks.
pub struct RuleManager {
    ctx: Arc<Context>,
    root: CancellationToken,
    tracker: TaskTracker,
    groups: HashMap<GroupKey, Running>,
}

impl RuleManager {
    /// A manager with no groups; group tasks are children of `root`.
    pub fn new(ctx: Arc<Context>, root: CancellationToken) -> Self {
        Self { ctx, root, tracker: TaskTracker::new(), groups: HashMap::new() }
    }

    /// The shared context (to swap the source on reload).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Replaces the running groups with `groups`.
    pub async fn update(&mut self, groups: Vec<RuleGroup>) {
        let mut old = std::mem::take(&mut self.groups);
        for group in groups {
            match old.remove(&group.key) {
                Some(running) if running.group == group => {
                    self.groups.insert(group.key.clone(), running);
                }
                Some(running) => {
                    let previous = running.group.clone();
                    let states = stop(running).await;
                    let kept: HashMap<String, RuleState> = states
                        .into_iter()
                        .filter(|(name, _)| {
                            let find = |g: &RuleGroup| g.rules.iter().find(|r| &r.name == name).cloned();
                            find(&previous).is_some() && find(&previous) == find(&group)
                        })
                        .collect();
                    tracing::info!(group = %group.key.name, kept = kept.len(), "group changed, restarting");
                    self.start(group, kept);
                }
                None => self.start(group, HashMap::new()),
            }
        }
        for (key, running) in old {
            tracing::info!(group = %key.name, "group removed");
            stop(running).await;
            self.ctx.exporter.remove_group(&key);
        }
    }

    fn start(&mut self, group: RuleGroup, states: HashMap<String, RuleState>) {
        let interval = group.schedule.period_secs();
        let kept: Vec<String> = states.keys().cloned().collect();
        self.ctx.exporter.set_group(&group, interval, &kept);
        let token = self.root.child_token();
        let handle = self.tracker.spawn(group::run(group.clone(), states, self.ctx.clone(), token.clone()));
        self.groups.insert(group.key.clone(), Running { group, token, handle });
    }

    /// Stops every group and waits up to `grace` for in-flight evaluations.
    /// Returns false if the grace period ran out.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.root.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

async fn stop(running: Running) -> HashMap<String, RuleState> {
    running.token.cancel();
    match running.handle.await {
        Ok(states) => states,
        // The panic itself was logged by the panic hook; say what it cost.
        Err(err) => {
            tracing::error!(group = %running.group.key.name, file = %running.group.key.file.display(), error = %err, "group task ended abnormally; its rules start without their models");
            HashMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::clock::Clock;
    use crate::engine::testing::{context, FakeSource};
    use crate::exporter::Exporter;

    /// Groups `g` (rules `a`, and `b` with band `b_band`) and, if `with_h`, `h` (rule `c`): each
    /// rule's expression is its name, so the fake source counts queries per rule.
    fn groups(b_band: &str, with_h: bool) -> Vec<RuleGroup> {
        let rule = |name: &str, extra: &str| {
            format!("      - {{ forecast: {name}, expr: {name}, step: 1m, history: 1h, refit: 1d, model: {{ type: linear }}{extra} }}\n")
        };
        let mut text =
            format!("groups:\n  - name: g\n    interval: 1m\n    rules:\n{}{}", rule("a", ""), rule("b", &format!(", band: {b_band}")));
        if with_h {
            text.push_str(&format!("  - name: h\n    interval: 1m\n    rules:\n{}", rule("c", "")));
        }
        crate::config::rules::parse(Path::new("r.yaml"), &text, &Default::default()).unwrap()
    }

    /// Waits (in paused time, so at once) until `done`, at most a virtual hour.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(3600), wait).await.unwrap_or_else(|_| panic!("waited an hour for {what}"));
    }

    fn manager(source: &FakeSource, exporter: &Exporter) -> RuleManager {
        RuleManager::new(context(source.clone(), exporter, Clock::following_tokio(1_767_225_600.0)), CancellationToken::new())
    }

    #[tokio::test(start_paused = true)]
    async fn update_keeps_unchanged_rules_refits_changed_ones_and_removes_groups() {
        let (source, exporter) = (FakeSource::default(), Exporter::default());
        let mut manager = manager(&source, &exporter);
        let downloads = |source: &FakeSource| ["a", "b", "c"].map(|r| source.history_downloads(r));
        manager.update(groups("0.9", true)).await;
        until("every rule scored", || exporter.load().rules.len() == 3 && exporter.load().rules.values().all(|e| e.series.len() == 1))
            .await;
        assert_eq!(downloads(&source), [1, 1, 1]);

        // the same groups again: nothing restarts, nothing is downloaded again
        manager.update(groups("0.9", true)).await;
        let updates = source.queries_of("a").len();
        until("later evaluations", || source.queries_of("a").len() >= updates + 3).await;
        assert_eq!(downloads(&source), [1, 1, 1], "an unchanged group keeps its models");

        // `b` changes, so group `g` restarts; group `h` is removed
        manager.update(groups("0.8", false)).await;
        let snapshot = exporter.load();
        assert!(snapshot.rules.keys().all(|id| id.group.name == "g") && snapshot.groups.len() == 1, "h's outputs are gone at once");
        assert_eq!(snapshot.rules.values().map(|e| e.series.len()).collect::<Vec<_>>(), [1, 0], "a keeps its outputs, b starts empty");
        let c_queries = source.queries_of("c").len();
        until("b refitted", || source.history_downloads("b") == 2).await;
        let updates = source.queries_of("a").len();
        until("a evaluated again", || source.queries_of("a").len() >= updates + 3).await;
        assert_eq!(downloads(&source), [1, 2, 1], "a kept its model in the changed group, b was refitted");
        assert_eq!(source.queries_of("c").len(), c_queries, "the removed group stopped");
        assert!(exporter.load().rules.values().all(|e| e.series.len() == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_waits_for_the_evaluation_in_flight() {
        let gate = Arc::new(Semaphore::new(0));
        let source = FakeSource { gate: Some(("a".into(), gate.clone())), ..Default::default() };
        let exporter = Exporter::default();
        let mut manager = manager(&source, &exporter);
        manager.update(groups("0.9", false)).await;
        // the first run of the 1 m group has begun and waits at the gate in `a`'s query
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(source.queries_of("a").is_empty());
        let update = manager.update(groups("0.8", false));
        tokio::pin!(update);
        assert!(
            tokio::time::timeout(Duration::from_secs(600), &mut update).await.is_err(),
            "the reload did not wait for the evaluation in flight"
        );
        gate.add_permits(1000);
        update.await;
        assert_eq!(source.queries_of("a").len(), 1, "the query in flight completed before the group was replaced");
        // and the new group runs
        until("b refitted", || source.history_downloads("b") == 1).await;
    }
}
