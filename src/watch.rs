//! Watching the config and rule files' directories, debounced, to trigger reloads.
//!
//! Directories are watched, not files: an editor's atomic rename or a Kubernetes ConfigMap
//! symlink swap replaces the file and would end a watch on it. One save makes several events;
//! the debouncer folds them into one reload.

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

/// Watches `dirs` and sends on `tx` once changes in them have settled for [`DEBOUNCE`].
///
/// # Errors
/// The watcher could not be created.
pub fn start(dirs: &BTreeSet<PathBuf>, tx: mpsc::Sender<()>) -> notify::Result<Watch> {
    // Capacity 1: a change already queued stands for any that come before it is taken.
    let (changes_tx, changes_rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
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
        let _watch = start(&dirs, tx).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a reload for the watched directory");
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
