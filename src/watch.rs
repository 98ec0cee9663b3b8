//! Watching the config and rule files' directories, debounced, to trigger reloads.
//!
//! Directories are watched, not files: an editor's atomic rename or a Kubernetes ConfigMap
//! symlink swap replaces the file and would end a watch on it. Only events for the files the
//! configuration reads count (a log file written beside the config must not reload it), and one
//! save makes several events, folded into one reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the watched directories must be quiet before one reload is asked for.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// A running watch; dropping it stops watching.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    debounce: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.debounce.abort();
    }
}

/// The directories to watch for a config file and its rule-file patterns: the config file's
/// directory and, for each pattern, the deepest directory without glob characters.
pub fn directories(config_file: &Path, patterns: &[String]) -> BTreeSet<PathBuf> {
    let base = config_file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut dirs = BTreeSet::from([base.to_path_buf()]);
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
        let fixed: PathBuf = full.components().take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '['])).collect();
        let dir = if fixed == full { fixed.parent().map(Path::to_path_buf).unwrap_or(fixed) } else { fixed };
        dirs.insert(dir);
    }
    dirs
}

/// Which paths are the configuration's: the config file, and what the rule-file patterns match.
#[derive(Clone, Debug)]
pub struct Relevant {
    config_file: PathBuf,
    patterns: Vec<glob::Pattern>,
}

impl Relevant {
    /// The files of a config at `config_file` with these `rule_files` patterns (relative to its
    /// directory, as when loading).
    pub fn new(config_file: &Path, patterns: &[String]) -> Self {
        let base = config_file.parent().unwrap_or(Path::new(""));
        let patterns = patterns.iter().filter_map(|p| glob::Pattern::new(&base.join(p).to_string_lossy()).ok()).collect();
        Self { config_file: config_file.to_path_buf(), patterns }
    }

    /// Whether a change at `path` can change the configuration. A Kubernetes ConfigMap
    /// update swaps the `..data` link of the volume, so that counts too.
    pub fn matches(&self, path: &Path) -> bool {
        // As globbing the files walks them: `*` stays within a directory, hidden entries need a
        // literal dot.
        let options = glob::MatchOptions { require_literal_leading_dot: true, require_literal_separator: true, ..Default::default() };
        path == self.config_file
            || self.patterns.iter().any(|p| p.matches_path_with(path, options))
            || path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("..data"))
    }

    /// Whether `event` can have changed the configuration.
    fn changed_by(&self, event: &notify::Event) -> bool {
        !event.kind.is_access() && event.paths.iter().any(|p| self.matches(p))
    }
}

/// Watches `dirs` and sends on `tx` once changes to `relevant` files have settled for
/// [`DEBOUNCE`].
///
/// # Errors
/// The watcher could not be created.
pub fn start(dirs: &BTreeSet<PathBuf>, relevant: Relevant, tx: mpsc::Sender<()>) -> notify::Result<Watch> {
    // Capacity 1: a change already queued stands for any that come before it is taken.
    let (changes_tx, changes_rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| relevant.changed_by(&e)) {
            let _ = changes_tx.try_send(());
        }
    })?;
    // A directory that cannot be watched (not there yet, say) must not cost the others theirs.
    for dir in dirs {
        if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory; changes in it need SIGHUP or /-/reload");
        }
    }
    Ok(Watch { _watcher: watcher, debounce: tokio::spawn(debounce(changes_rx, tx, DEBOUNCE)) })
}

/// Sends one reload on `reload` for each burst of `changes`: once no change has come for
/// `quiet`. One save makes several events, spread over time (write, chmod, rename, a
/// ConfigMap's symlink swap), so a timer per event would reload more than once.
async fn debounce(mut changes: mpsc::Receiver<()>, reload: mpsc::Sender<()>, quiet: Duration) {
    while changes.recv().await.is_some() {
        loop {
            match tokio::time::timeout(quiet, changes.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        // A full channel already holds a pending reload; one is enough.
        let _ = reload.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_pattern_bases() {
        let dirs = directories(Path::new("/etc/pw/pulsewatch.yml"), &["rules/*.yaml".into(), "/abs/x.yaml".into(), "a/*/b.yaml".into()]);
        let got: Vec<&str> = dirs.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(got, vec!["/abs", "/etc/pw", "/etc/pw/a", "/etc/pw/rules"]);
    }

    #[tokio::test]
    async fn a_missing_directory_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let dirs = BTreeSet::from([dir.path().join("missing"), dir.path().to_path_buf()]);
        let relevant = Relevant::new(&dir.path().join("pulsewatch.yml"), &["*.yaml".into()]);
        let _watch = start(&dirs, relevant, tx).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a reload for the watched directory");
    }

    #[test]
    fn only_the_configurations_files_are_relevant() {
        let relevant = Relevant::new(Path::new("/etc/pw/pulsewatch.yml"), &["rules/*.yaml".into(), "/abs/x.yaml".into()]);
        for path in ["/etc/pw/pulsewatch.yml", "/etc/pw/rules/a.yaml", "/abs/x.yaml", "/etc/pw/rules/..data", "/etc/pw/rules/..data_tmp"] {
            assert!(relevant.matches(Path::new(path)), "{path}");
        }
        for path in [
            "/etc/pw/pulsewatch.log",
            "/etc/pw/rules/a.yaml.swp",
            "/etc/pw/rules/.a.yaml",
            "/etc/pw/rules/sub/a.yaml",
            "/abs/y.yaml",
            "/etc/pw/other.yml",
        ] {
            assert!(!relevant.matches(Path::new(path)), "{path}");
        }
    }

    /// A log file written beside the config reloaded it twice a second for as long as it ran.
    #[test]
    fn writes_to_other_files_in_a_watched_directory_are_ignored() {
        use notify::event::{AccessKind, CreateKind, DataChange, EventKind, ModifyKind, RenameMode};
        let relevant = Relevant::new(Path::new("/etc/pw/pulsewatch.yml"), &["rules/*.yaml".into()]);
        let event =
            |kind, paths: &[&str]| notify::Event { kind, paths: paths.iter().map(PathBuf::from).collect(), attrs: Default::default() };
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(!relevant.changed_by(&event(write, &["/etc/pw/pulsewatch.log"])));
        assert!(relevant.changed_by(&event(write, &["/etc/pw/pulsewatch.yml"])));
        assert!(!relevant.changed_by(&event(EventKind::Access(AccessKind::Any), &["/etc/pw/pulsewatch.yml"])), "reading is no change");
        // an editor's save: write a temporary file, rename it over the rule file
        assert!(!relevant.changed_by(&event(EventKind::Create(CreateKind::File), &["/etc/pw/rules/.a.yaml.swp"])));
        assert!(relevant.changed_by(&event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["/etc/pw/rules/.a.yaml.swp", "/etc/pw/rules/a.yaml"]
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn one_reload_per_burst_once_it_settles() {
        let (changes, rx) = mpsc::channel(1);
        let (tx, mut reloads) = mpsc::channel(8);
        tokio::spawn(debounce(rx, tx, DEBOUNCE));
        let began = tokio::time::Instant::now();
        // five changes 300 ms apart, each within the quiet period after the one before
        for _ in 0..5 {
            changes.send(()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        reloads.recv().await.unwrap();
        assert_eq!(began.elapsed(), Duration::from_millis(4 * 300) + DEBOUNCE, "one quiet period after the last change");
        // nothing more for that burst (paused time: this waits a virtual hour, at once)
        assert!(tokio::time::timeout(Duration::from_secs(3600), reloads.recv()).await.is_err());
        // a later change is a new burst, and a new reload
        changes.send(()).await.unwrap();
        reloads.recv().await.unwrap();
        assert!(reloads.try_recv().is_err());
    }
}
