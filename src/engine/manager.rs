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

use super::RuleState;
use super::group::{self, Context};
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
        let interval = super::schedule_interval(&group.schedule);
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
    running.handle.await.unwrap_or_default()
}
