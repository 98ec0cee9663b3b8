//! Watching the config and rule files' directories, debounced, to trigger reloads.
//!
//! Directories are watched, not files: an editor's atomic rename or a Kubernetes ConfigMap
//! symlink swap replaces the file and would end a watch on it. One save makes several events;
//! the debouncer folds them into one reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

/// How long events are collected before one reload is asked for.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// A running watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
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

/// Watches `dirs` and sends on `tx` after each debounced burst of changes.
///
/// # Errors
/// A directory could not be watched.
pub fn start(dirs: &BTreeSet<PathBuf>, tx: mpsc::Sender<()>) -> notify::Result<Watch> {
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let changed = result.map(|events| events.iter().any(|e| !e.kind.is_access())).unwrap_or(false);
        if changed {
            // A full channel already holds a pending reload; one is enough.
            let _ = tx.try_send(());
        }
    })?;
    // A directory that cannot be watched (not there yet, say) must not cost the others theirs.
    for dir in dirs {
        if let Err(err) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory; changes in it need SIGHUP or /-/reload");
        }
    }
    Ok(Watch { _debouncer: debouncer })
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

    #[tokio::test]
    async fn one_reload_per_burst_of_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let _watch = start(&BTreeSet::from([dir.path().to_path_buf()]), tx).unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join("r.yaml"), format!("{i}")).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a reload within 10s").unwrap();
        // the burst was folded: nothing more arrives once it settled
        assert!(tokio::time::timeout(DEBOUNCE * 3, rx.recv()).await.is_err());
    }
}
